"""Does a tiny BERT pre-trained on 全唐诗 beat one trained from scratch at telling poem topics apart from few labels?

    ZUPU_DATA_MIRROR=../shared/data python benchmarks/bert_tang_topics.py \
        [--pretrain-steps 30000] [--labels-per-topic 20] [--draws 5] [--save ckpt.pt | --load ckpt.pt]

The `tang-topics` recipe of the BERT member (`zupu train bert --recipe tang-topics`; its docstrings say
what the task, the pre-training and the fine-tuning protocol are), run here with its settings as flags
and its pre-trained model optionally saved or loaded, so that one pre-training can be fine-tuned again.
Protocol: design choices (labels per topic, pooling, pre-training length) are compared with
`--scored-on validation` (each draw scored on the labelled-pool poems it did not draw), and only the
chosen design is run once with `--scored-on test` on the 1,000 test poems.
Writes benchmarks/RESULTS-bert.md (or --out; stamped by benchmarks/results.py) and
bert_tang_topics_STEPS.png beside it.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import torch  # noqa: E402
from results import Run  # noqa: E402

from zupu.errors import ZupuError  # noqa: E402
from zupu.models.bert import BertForPreTraining  # noqa: E402
from zupu.recipes.bert import (  # noqa: E402
    FINETUNE_LRS,
    TOPICS,
    TangTopics,
    arms_figure,
    pretraining_accuracy,
    tang_corpus,
)

VALIDATION_NOTE = " (the labelled-pool poems each draw left: where design choices are made)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    defaults = TangTopics.Settings()
    for field in dataclasses.fields(defaults):
        p.add_argument("--" + field.name.replace("_", "-"), type=type(field.default), default=field.default)
    p.add_argument("--save", type=Path, help="save the pre-trained model here")
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
    torch.set_num_threads(s.threads)
    tok, docs, _, _ = tang_corpus()
    t = time.perf_counter()
    if a.load:
        pre = BertForPreTraining(recipe.config(s, tok.vocab_size))
        pre.load_state_dict(torch.load(a.load))
        source = f"loaded from {a.load.name}"
    else:
        pre = recipe.pretrain(s)
        source = f"{s.pretrain_steps} steps x {s.pretrain_batch} pairs at lr {s.pretrain_lr:g}, " \
                 f"{time.perf_counter() - t:.0f} s on {s.threads} thread(s)"
        if a.save:
            torch.save(pre.state_dict(), a.save)
    pre_acc = pretraining_accuracy(pre, tok, docs, s.max_length)
    print(f"pre-training: {source}: {pre_acc}", flush=True)
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
    fig = a.out.with_name(f"bert_tang_topics_{s.pretrain_steps}.png")  # beside the RESULTS file
    scored = f"{draws[0]['scored']} {'validation' if s.scored_on == 'validation' else 'test'} poems"
    arms_figure(accs, 1 / len(TOPICS), fig, f"Tang poem topics (farewell/temple/frontier/palace): {n_labels} labels "
                f"per draw, {s.draws} draws, {scored}", over="label draws")
    lrs = " / ".join(f"{lr:g}" for lr in FINETUNE_LRS)
    body = (f"# BERT on 全唐诗 topics: pre-trained ({s.pretrain_steps} steps) vs from scratch, {n_labels} labels\n\n"
            f"The `tang-topics` recipe's settings: hidden {s.hidden_size}, "
            f"{s.num_hidden_layers} layers, {s.max_length} tokens, vocabulary {tok.vocab_size} characters, "
            f"{len(docs):,} pre-training poems (two halves each). Pre-training: {source}; MLM accuracy "
            f"{pre_acc['mlm_acc']:.3f}, NSP accuracy {pre_acc['nsp_acc']:.3f}. Each draw: {n_labels} labels, "
            f"{s.finetune_steps} fine-tuning steps, lr chosen per arm by 3-fold CV from {lrs}; accuracies on {scored}"
            f"{VALIDATION_NOTE if s.scored_on == 'validation' else ''}"
            f". MLM and NSP accuracies are on pre-training text, not held-out documents. Figure: {fig.name}.\n\n"
            f"| draw | pre-trained acc (chosen lr; acc at {lrs}) | from-scratch acc (same) | gain | "
            "bag-of-chars logistic regression |\n|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
            f"| **mean** | **{mean[arms[0]]:.3f}** | **{mean[arms[1]]:.3f}** | "
            f"**{mean[arms[0]] - mean[arms[1]]:+.3f}** (pre-trained ahead in {wins} of {s.draws} draws) | "
            f"{np.mean([d['bag_of_chars'] for d in draws]):.3f} |")
    print(body)
    run.write(a.out, body, threads=s.threads)


if __name__ == "__main__":
    main()
