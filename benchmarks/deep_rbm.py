"""RBM and DBN recipes vs scikit-learn's BernoulliRBM pipelines, side by side on the same data.

    ZUPU_DATA_MIRROR=../shared/data python benchmarks/deep_rbm.py [--repeats 3]

- rbm digits: zupu's RBM (PCD-1) + LogisticRegression vs Pipeline(BernoulliRBM, LogisticRegression),
  the same split, augmentation, size, learning rate, batch and epochs.
- dbn mnist-500-labels: zupu's greedy pre-training on 5k unlabelled images + back-prop fine-tuning on
  500 labels vs scikit-learn's nearest equivalent, two stacked BernoulliRBMs pre-trained the same way
  with LogisticRegression on the top features of the 500 labelled images (scikit-learn cannot
  fine-tune the stack).

Each pair runs alternately `repeats` times in this process, both on one thread; the table reports
medians and the zupu/peer time ratio. The zupu recipes run with their own comparisons switched off
(`peers=false`, `baseline=false`) so that only the pipeline itself is timed.
Writes benchmarks/RESULTS-rbm-dbn.md (or --out), stamped by benchmarks/results.py.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from results import Run

from zupu.recipes import dbn, rbm
from zupu.train import launch
from zupu.train.threads import threads


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def sklearn_digits() -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import BernoulliRBM
    from sklearn.pipeline import Pipeline

    s = rbm.DigitsSettings()
    xtr, ytr, xte, yte = (t.numpy() for t in rbm.digits_split(s.test_fraction, s.split_seed))
    pipe = Pipeline([("rbm", BernoulliRBM(n_components=s.n_hidden, learning_rate=s.lr, batch_size=s.batch_size,
                                          n_iter=s.epochs, random_state=0)),
                     ("logistic", LogisticRegression(C=s.logistic_c, max_iter=1000))])
    return float(pipe.fit(xtr, ytr).score(xte, yte))


def sklearn_dbn() -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import BernoulliRBM

    s = dbn.FewLabelsSettings()
    xtr, ytr, xte, yte = (t.numpy() for t in dbn.mnist_tensors())
    labelled = dbn.labelled_subset(dbn.mnist_tensors()[1], s.labels_per_class, s.label_seed).numpy()
    rbms = [BernoulliRBM(n_components=h, learning_rate=s.pretrain_lr, batch_size=s.pretrain_batch,
                         n_iter=s.pretrain_epochs, random_state=0) for h in s.sizes[1:]]
    up_tr, up_te = xtr, xte
    for r in rbms:  # greedy: each RBM fits the hidden probabilities of the one below
        up_tr = r.fit_transform(up_tr)
        up_te = r.transform(up_te)
    clf = LogisticRegression(max_iter=1000).fit(up_tr[labelled], ytr[labelled])
    return float(clf.score(up_te, yte))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("RESULTS-rbm-dbn.md"),
                    help="the RESULTS file to write")
    args = ap.parse_args()
    run = Run(__file__)
    pairs = [
        ("rbm digits", "rbm", "digits", {"peers": "false"}, "test_acc", sklearn_digits,
         "BernoulliRBM + LogisticRegression"),
        ("dbn mnist-500-labels", "dbn", "mnist-500-labels", {"baseline": "false"}, "test_acc", sklearn_dbn,
         "2 stacked BernoulliRBMs + LogisticRegression (no fine-tuning)"),
    ]
    rows = []
    for label, member, recipe, overrides, metric, peer, peer_name in pairs:
        ours, theirs = [], []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as d:
                result, t = timed(lambda d=d: launch.train(member, recipe, d, overrides=overrides))  # noqa: B023
            ours.append((result["metrics"][metric], t))
            with threads(1):
                theirs.append(timed(peer))
        acc, t = statistics.median(a for a, _ in ours), statistics.median(t for _, t in ours)
        pacc, pt = statistics.median(a for a, _ in theirs), statistics.median(t for _, t in theirs)
        rows.append(f"| {label} | {acc:.4f} | {t:.1f} s | {peer_name} | {pacc:.4f} | {pt:.1f} s | {t / pt:.2f} |")
        print(rows[-1], flush=True)
    table = ("| zupu recipe | test acc | time | peer (scikit-learn) | peer acc | peer time | time ratio zupu/peer |\n"
             "|---|---|---|---|---|---|---|\n" + "\n".join(rows))
    runs = "one run each" if args.repeats == 1 else f"median of {args.repeats} alternating runs"
    note = (f"# RBM and DBN vs scikit-learn's BernoulliRBM\n\nSame data and hyper-parameters, {runs} "
            "on this shared 2-core machine, both sides on one thread. zupu's time "
            "includes its per-epoch monitoring, the run directory and figures; the peers only fit and score. "
            "The dbn peer has no fine-tuning (scikit-learn cannot back-propagate through a stack of RBMs).\n\n")
    run.write(args.out, note + table, threads=1)


if __name__ == "__main__":
    main()
