"""Does a tiny BERT pre-trained on 全唐诗 beat one trained from scratch at telling poem topics apart from few labels?

    ZUPU_DATA_MIRROR=../shared/data python benchmarks/bert_tang_topics.py \
        [--pretrain-steps 30000] [--labels-per-topic 20] [--pooling mean] [--draws 5] [--scored-on test]
        [--save ckpt.pt [--pretrain-dir DIR [--resume]] | --load ckpt.pt] [--validation SUMMARY.json ...]

The `tang-topics` recipe of the BERT member (`zupu train bert --recipe tang-topics`; its docstrings say
what the task, the pre-training and the fine-tuning protocol are), run here with its settings as flags
and its pre-trained model optionally saved or loaded, so that one pre-training can be fine-tuned again.
Protocol: design choices (labels per topic, pooling, pre-training length) are compared with
`--scored-on validation` (each draw scored on the labelled-pool poems it did not draw), and only the
chosen design is run once with `--scored-on test` on the 1,000 test poems; `--validation` names the
comparisons' summaries so that the test run's file shows what was chosen, and from what.
Writes benchmarks/RESULTS-bert.md (or --out; stamped by benchmarks/results.py), a JSON summary and
a figure beside it. `--pretrain-dir` keeps the pre-training's curve and a resume checkpoint every
1,000 steps there; `--resume` continues an interrupted pre-training from it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import torch  # noqa: E402
from results import Run  # noqa: E402

from zupu.atomic import write_json  # noqa: E402
from zupu.errors import ZupuError  # noqa: E402
from zupu.models.bert import BertForPreTraining  # noqa: E402
from zupu.recipes.bert import (  # noqa: E402
    FINETUNE_LRS,
    TOPICS,
    TangTopics,
    arms_figure,
    held_out_docs,
    pretraining_accuracy,
    tang_corpus,
)
from zupu.train.run import Run as RunDir  # noqa: E402

CHECKPOINT_EVERY = 1000
ON_VALIDATION = " on validation; the milestone is judged on the test run"


def design(s: TangTopics.Settings) -> str:
    return f"{s.pretrain_steps:,} pre-training steps, {s.pooling} pooling, {s.labels_per_topic} labels per topic"


def validation_table(paths: list[Path], chosen: str) -> str:
    """The validation comparisons (their JSON summaries) as a table, the design this run scores marked."""
    rows = []
    for path in paths:
        v = json.loads(path.read_text())
        if v["scored_on"] != "validation":
            raise SystemExit(f"{path}: scored on {v['scored_on']}, not validation; name validation runs only")
        mark = " **(chosen)**" if v["design"] == chosen else ""
        rows.append(f"| {v['design']}{mark} | {v['pretrained']:.3f} | {v['scratch']:.3f} | {v['gain']:+.3f} | "
                    f"{v['wins']} of {v['draws']} | {v['scored']} | {v['mlm_held_out']:.3f} / {v['nsp_held_out']:.3f} "
                    f"| {path.name} |")
    return ("| design (on validation) | pre-trained | from scratch | gain | pre-trained ahead | poems scored "
            "per draw | held-out MLM / NSP acc | summary |\n" + "|---" * 8 + "|\n" + "\n".join(rows) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    defaults = TangTopics.Settings()
    for field in dataclasses.fields(defaults):
        p.add_argument("--" + field.name.replace("_", "-"), type=type(field.default), default=field.default)
    p.add_argument("--save", type=Path, help="save the pre-trained model here")
    p.add_argument("--pretrain-dir", type=Path, help="the pre-training's run directory: curve and resume checkpoint")
    p.add_argument("--resume", action="store_true", help="continue the pre-training in --pretrain-dir")
    p.add_argument("--validation", type=Path, nargs="*", default=[],
                   help="JSON summaries of the validation runs the design of this run was chosen from")
    p.add_argument("--load", type=Path, help="fine-tune a model saved by --save instead of pre-training")
    p.add_argument("--out", type=Path, default=Path(__file__).with_name("RESULTS-bert.md"),
                   help="the RESULTS file to write")
    a = p.parse_args()
    run = Run(__file__)
    s = TangTopics.Settings(**{f.name: getattr(a, f.name) for f in dataclasses.fields(defaults)})
    recipe = TangTopics()
    try:
        recipe.check(s)
    except ZupuError as e:
        p.error(str(e))
    if a.resume and not a.pretrain_dir:
        p.error("--resume continues the pre-training in --pretrain-dir: name that directory")
    torch.set_num_threads(s.threads)
    tok, docs, _, _ = tang_corpus()
    t = time.perf_counter()
    if a.load:
        pre = BertForPreTraining(recipe.config(s, tok.vocab_size))
        pre.load_state_dict(torch.load(a.load))
        made = a.load.with_suffix(".json")  # how --save's run made it
        source = f"{json.loads(made.read_text())['source']}, loaded from {a.load.name}" if made.exists() \
            else f"loaded from {a.load.name}"
    else:
        run_dir = RunDir(a.pretrain_dir, "bert", "tang-topics", s, seed=0, resume=a.resume) if a.pretrain_dir else None
        pre = recipe.pretrain(s, run_dir, checkpoint_every=CHECKPOINT_EVERY if run_dir else 0)
        source = f"{s.pretrain_steps} steps x {s.pretrain_batch} pairs at lr {s.pretrain_lr:g}, " \
                 f"{time.perf_counter() - t:.0f} s on {s.threads} thread(s)" + \
                 (" (resumed: the time since the resume only)" if a.resume else "")
        if a.save:
            torch.save(pre.state_dict(), a.save)
            write_json(a.save.with_suffix(".json"), {"source": source})
    pre_acc = pretraining_accuracy(pre, tok, docs, s.max_length)
    held = held_out_docs()
    held_acc = pretraining_accuracy(pre, tok, held, s.max_length)
    print(f"pre-training: {source}: {pre_acc} on pre-training poems, {held_acc} on held-out poems", flush=True)
    draws = recipe.compare(pre, s)
    arms = ("pre-trained", "from scratch")
    accs = {arm: [d["arms"][arm]["acc"] for d in draws] for arm in arms}
    rows = []
    for i, d in enumerate(draws):
        cells = [f"{r['acc']:.3f} (lr {r['lr']:g}; " + " / ".join(f"{x:.3f}" for x in r["test_by_lr"].values()) + ")"
                 for r in (d["arms"][arm] for arm in arms)]
        rows.append(f"| {i} | {cells[0]} | {cells[1]} | {accs[arms[0]][i] - accs[arms[1]][i]:+.3f} | "
                    f"{d['bag_of_chars']:.3f} |")
    mean = {arm: float(np.mean(v)) for arm, v in accs.items()}
    wins = sum(x > y for x, y in zip(*accs.values(), strict=True))
    n_labels = s.labels_per_topic * len(TOPICS)
    fig = a.out.with_name(a.out.stem.removeprefix("RESULTS-").replace("bert", "bert_tang_topics") + ".png")
    scored = f"{draws[0]['scored']} {'validation' if s.scored_on == 'validation' else 'test'} poems"
    arms_figure(accs, 1 / len(TOPICS), fig, f"Tang poem topics (farewell/temple/frontier/palace): {n_labels} labels "
                f"per draw, {s.draws} draws, {scored}", over="label draws")
    lrs = " / ".join(f"{lr:g}" for lr in FINETUNE_LRS)
    gain = mean[arms[0]] - mean[arms[1]]
    summary = {"design": design(s), "scored_on": s.scored_on, "pretrained": mean[arms[0]],
               "scratch": mean[arms[1]], "gain": gain, "wins": wins, "draws": s.draws, "scored": draws[0]["scored"],
               "mlm_pretraining_text": pre_acc["mlm_acc"], "nsp_pretraining_text": pre_acc["nsp_acc"],
               "mlm_held_out": held_acc["mlm_acc"], "nsp_held_out": held_acc["nsp_acc"]}
    if s.scored_on == "validation":
        protocol = (f"**Scored on validation**: each draw is scored on the {draws[0]['scored']} labelled-pool poems it "
                    "did not draw as labels, never on the test poems. This run is one of the design comparisons "
                    "(labels per topic, pooling, pre-training length) from which the design run once on the test "
                    "set is chosen.")
    else:
        protocol = (f"**Scored on the {draws[0]['scored']} test poems, once**, with a design ({design(s)}) chosen "
                    "beforehand on validation: each draw scored on the labelled-pool poems it did not draw."
                    + (" The comparisons, each run of this script with `--scored-on validation` (chosen: the design "
                       "with the largest mean gain on validation):\n\n" + validation_table(a.validation, design(s))
                       if a.validation else " (no validation summaries named with `--validation`)"))
    body = (f"# BERT on 全唐诗 topics, scored on {s.scored_on}: {design(s)}: gain {gain:+.3f}\n\n"
            f"{protocol}\n\n"
            f"The `tang-topics` recipe's settings: hidden {s.hidden_size}, "
            f"{s.num_hidden_layers} layers, {s.max_length} tokens, vocabulary {tok.vocab_size} characters, "
            f"{len(docs):,} pre-training poems (two halves each). Pre-training: {source}. Masked-character (MLM) "
            f"and next-half (NSP) accuracy on 2,048 pairs from the {len(held):,} held-out test poems, which "
            f"pre-training never saw: {held_acc['mlm_acc']:.3f} and {held_acc['nsp_acc']:.3f}; on fresh pairs of "
            f"pre-training poems: {pre_acc['mlm_acc']:.3f} and {pre_acc['nsp_acc']:.3f}. Each draw: {n_labels} "
            f"labels, {s.finetune_steps} fine-tuning steps, {s.pooling} pooling, lr chosen per arm by 3-fold CV on "
            f"the draw's labels from {lrs}; accuracies on {scored}. Milestone: gain >= 0.10 "
            f"({'met' if gain >= 0.10 else 'missed'}{ON_VALIDATION if s.scored_on == 'validation' else ''}). "
            f"Figure: {fig.name}.\n\n"
            f"| draw | pre-trained acc (chosen lr; acc at {lrs}) | from-scratch acc (same) | gain | "
            "bag-of-chars logistic regression |\n|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
            f"| **mean** | **{mean[arms[0]]:.3f}** | **{mean[arms[1]]:.3f}** | "
            f"**{mean[arms[0]] - mean[arms[1]]:+.3f}** (pre-trained ahead in {wins} of {s.draws} draws) | "
            f"{np.mean([d['bag_of_chars'] for d in draws]):.3f} |")
    print(body)
    write_json(a.out.with_suffix(".json"), summary)
    run.write(a.out, body, threads=s.threads)


if __name__ == "__main__":
    main()
