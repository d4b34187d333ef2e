"""Does a tiny BERT pre-trained on 全唐诗 beat one trained from scratch at telling poem topics apart from few labels?

    ZUPU_DATA_MIRROR=../shared/data OMP_NUM_THREADS=1 python benchmarks/bert_tang_topics.py \
        [--pretrain-steps 2000] [--labels-per-topic 50] [--seeds 3]

Labelled task: a poem's topic from its body, the label read off its title (never shown to the model):
farewell (送/別/餞), Buddhist temple or monk (寺/僧/禪), frontier and war (塞/邊/征/軍/戍), palace or
boudoir (宮/閨/怨/妾); poems whose title names two topics are left out. 250 poems per topic (chosen at
random, seed 0) are the test set; they and any poem with the same body are removed from the
pre-training corpus and from the vocabulary's text. `--labels-per-topic` of the rest are the labels.

Pre-training: the recipe's MLM (15%, 80/10/10) + NSP on the remaining ~56,600 poems, a document
being a poem and a sentence one couplet; one character per token (BERT's CJK rule), characters seen
fewer than 5 times are [UNK]. Both arms are then fine-tuned identically (same steps, batches, learning
rate and seeds); a bag-of-characters logistic regression on the same labels is the non-neural
reference. Writes a section of benchmarks/RESULTS-bert.md and benchmarks/bert_tang_topics_STEPS.png.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from zupu import data  # noqa: E402
from zupu.models.bert import BertConfig, BertForPreTraining, BertForSequenceClassification  # noqa: E402
from zupu.recipes.bert import PretrainBatches, accuracy, arms_figure  # noqa: E402
from zupu.tokenizers import WordPiece  # noqa: E402
from zupu.train.batches import TensorBatches  # noqa: E402
from zupu.train.optim import make_schedule  # noqa: E402
from zupu.train.trainer import Trainer  # noqa: E402

TOPICS = {"farewell": "送別餞", "temple": "寺僧禪", "frontier": "塞邊征軍戍", "palace": "宮閨怨妾"}
TEST_PER_TOPIC = 250
RESULTS = Path(__file__).with_name("RESULTS-bert.md")


def task(labels_per_topic: int, min_count: int = 5):
    poems = data.load("tang-poems")
    body = ["".join(p["paragraphs"]) for p in poems]
    labelled = []
    for k, p in enumerate(poems):
        hits = [i for i, keys in enumerate(TOPICS.values()) if any(c in p["title"] for c in keys)]
        if len(hits) == 1 and body[k]:
            labelled.append((k, hits[0]))
    order = torch.randperm(len(labelled), generator=torch.Generator().manual_seed(0)).tolist()
    train, test, n_train, n_test = [], [], Counter(), Counter()
    for i in order:
        k, y = labelled[i]
        if n_test[y] < TEST_PER_TOPIC:
            test.append((body[k], y))
            n_test[y] += 1
        elif n_train[y] < labels_per_topic:
            train.append((body[k], y))
            n_train[y] += 1
    held = {text for text, _ in test}
    pre = [p["paragraphs"] for k, p in enumerate(poems) if body[k] not in held]
    chars = Counter(c for lines in pre for line in lines for c in line)
    alphabet = "".join(sorted(c for c, n in chars.items() if n >= min_count))
    tok = WordPiece.train(alphabet, len(alphabet) + 16)  # every kept character, no merges (CJK words are 1 char)
    docs = [d for d in ([tok.tokenize_ids(line) for line in lines] for lines in pre) if d]
    return tok, docs, train, test


def config(tok: WordPiece, a) -> BertConfig:
    return BertConfig(vocab_size=tok.vocab_size, hidden_size=a.hidden, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=4 * a.hidden, max_position_embeddings=a.max_length, num_labels=len(TOPICS))


def pretrain(tok, docs, a) -> tuple[BertForPreTraining, dict[str, float]]:
    torch.manual_seed(0)
    model = BertForPreTraining(config(tok, a))
    batches = PretrainBatches(tok, docs, 32, a.max_length, seed=0)

    def step(b):
        return model.loss(b["input_ids"], b["attention_mask"], b["token_type_ids"], b["mlm_labels"], b["nsp_labels"])

    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    Trainer(model, step, batches, opt, a.pretrain_steps, grad_clip=1.0, log_every=100, desc="bert pre-train",
            scheduler=make_schedule(opt, "linear", a.pretrain_steps, max(1, a.pretrain_steps // 10), 0.0)).fit()
    b = PretrainBatches(tok, docs, 2048, a.max_length, seed=10**6)(0)
    model.eval()
    with torch.no_grad():
        out = model.loss(b["input_ids"], b["attention_mask"], b["token_type_ids"], b["mlm_labels"], b["nsp_labels"])
    return model, {"mlm_acc": out["mlm_acc"].item(), "nsp_acc": out["nsp_acc"].item()}


def encode(tok, examples, max_length):
    enc = tok([text for text, _ in examples], max_length=max_length)
    return enc["input_ids"], enc["attention_mask"], torch.tensor([y for _, y in examples])


def finetune(model, tok, train, test, a, seed) -> float:
    ids, mask, y = encode(tok, train, a.max_length)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    Trainer(model, lambda b: {"loss": F.cross_entropy(model(b[0], b[1]), b[2])},
            TensorBatches(ids, mask, y, batch_size=32, seed=seed), opt, a.finetune_steps, grad_clip=1.0,
            scheduler=make_schedule(opt, "linear", a.finetune_steps, max(1, a.finetune_steps // 10), 0.0),
            desc="bert fine-tune").fit()
    return accuracy(model, *encode(tok, test, a.max_length))


def bag_of_chars(tok, train, test, a) -> float:
    def counts(examples):
        x = np.zeros((len(examples), tok.vocab_size))
        for i, (text, _) in enumerate(examples):
            np.add.at(x[i], tok.tokenize_ids(text), 1)
        return x, np.array([y for _, y in examples])

    return LogisticRegression(max_iter=2000).fit(*counts(train)).score(*counts(test))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pretrain-steps", type=int, default=2000)
    p.add_argument("--finetune-steps", type=int, default=150)
    p.add_argument("--labels-per-topic", type=int, default=50)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--max-length", type=int, default=36)
    a = p.parse_args()
    torch.set_num_threads(1)
    tok, docs, train, test = task(a.labels_per_topic)
    t = time.perf_counter()
    pre, pre_acc = pretrain(tok, docs, a)
    pretrain_s = time.perf_counter() - t
    print(f"pre-trained {a.pretrain_steps} steps in {pretrain_s:.0f} s: {pre_acc}", flush=True)
    accs: dict[str, list[float]] = {"pre-trained": [], "from scratch": []}
    for seed in range(a.seeds):
        torch.manual_seed(seed)
        tuned = BertForSequenceClassification(config(tok, a))
        tuned.bert.load_state_dict(pre.bert.state_dict())
        torch.manual_seed(seed)
        scratch = BertForSequenceClassification(config(tok, a))
        accs["pre-trained"].append(finetune(tuned, tok, train, test, a, seed))
        accs["from scratch"].append(finetune(scratch, tok, train, test, a, seed))
        print(seed, accs["pre-trained"][-1], accs["from scratch"][-1], flush=True)
    bow = bag_of_chars(tok, train, test, a)
    mean = {arm: sum(v) / len(v) for arm, v in accs.items()}
    arms_figure(accs, 1 / len(TOPICS), Path(__file__).with_name(f"bert_tang_topics_{a.pretrain_steps}.png"),
                f"Tang poem topics (farewell/temple/frontier/palace): {len(train)} labels, {len(test)} test poems")
    row = " | ".join(f"{mean[arm]:.3f} ({', '.join(f'{x:.3f}' for x in v)})" for arm, v in accs.items())
    body = (f"## BERT on 全唐诗 topics: pre-trained ({a.pretrain_steps} steps) vs from scratch\n\n"
            f"`python benchmarks/bert_tang_topics.py --pretrain-steps {a.pretrain_steps} --labels-per-topic "
            f"{a.labels_per_topic} --seeds {a.seeds}`: hidden {a.hidden}, 2 layers, {a.max_length} tokens, "
            f"vocabulary {tok.vocab_size} characters, {len(docs):,} pre-training poems; {a.finetune_steps} "
            f"fine-tuning steps of batch 32 at lr 1e-3 for both arms. "
            f"Figure: bert_tang_topics_{a.pretrain_steps}.png.\n\n"
            "| pre-training | MLM acc | NSP acc | labels | test | pre-trained acc (per seed) | "
            "from-scratch acc (per seed) | gain | bag-of-chars logistic regression |\n"
            "|---|---|---|---|---|---|---|---|---|\n"
            f"| {a.pretrain_steps} steps x 32 pairs, {pretrain_s:.0f} s | {pre_acc['mlm_acc']:.3f} | "
            f"{pre_acc['nsp_acc']:.3f} | {len(train)} | {len(test)} | {row} | "
            f"{mean['pre-trained'] - mean['from scratch']:+.3f} | {bow:.3f} |")
    print(body)
    text = RESULTS.read_text() if RESULTS.exists() else "# BERT benchmarks\n"
    begin, end = f"<!-- tang-topics-{a.pretrain_steps}:begin -->", f"<!-- tang-topics-{a.pretrain_steps}:end -->"
    if begin in text:  # one section per pre-training length, replaced when that length is rerun
        text = text[:text.index(begin)] + text[text.index(end) + len(end):].lstrip("\n")
    RESULTS.write_text(text.rstrip("\n") + f"\n\n{begin}\n{body}\n{end}\n")


if __name__ == "__main__":
    main()
