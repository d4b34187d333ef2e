import copy
import json
import platform
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from zupu.errors import CheckpointError
from zupu.train import launch
from zupu.train.batches import RandomWindows, TensorBatches
from zupu.train.optim import Muon, MuonAdamW, lr_factor, make_schedule
from zupu.train.run import Run
from zupu.train.trainer import Trainer

SETTINGS = {"epochs": 2, "hidden": 16}  # backprop-mlp on MNIST: 312 steps, a checkpoint every 156


def curve(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def interrupt_at(step, exc, monkeypatch):
    """Make the next Trainer raise `exc` right after `step`, as a kill or Ctrl-C would."""
    original = Trainer.__init__

    def patched(self, *args, **kwargs):
        def stop(s, trainer):
            if s == step:
                raise exc

        kwargs["callbacks"] = (*kwargs.get("callbacks", ()), stop)
        original(self, *args, **kwargs)
        monkeypatch.setattr(Trainer, "__init__", original)

    monkeypatch.setattr(Trainer, "__init__", patched)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    result = launch.train("backprop-mlp", "mnist", out, seed=3, overrides=SETTINGS)
    return out, result


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), RuntimeError("power cut")], ids=["ctrl-c", "crash"])
def test_resume_is_bit_exact(uninterrupted, tmp_path, monkeypatch, exc):
    full_dir, full = uninterrupted
    interrupt_at(200, exc, monkeypatch)
    with pytest.raises(type(exc)):
        launch.train("backprop-mlp", "mnist", tmp_path, seed=3, overrides=SETTINGS)
    assert (tmp_path / "resume.safetensors").exists()
    resumed = launch.train("backprop-mlp", "mnist", tmp_path, resume=True)
    assert curve(tmp_path) == curve(full_dir)  # every logged loss, lr and accuracy identical
    assert resumed["metrics"] == full["metrics"]
    sa, sb = load_file(full_dir / "model.safetensors"), load_file(tmp_path / "model.safetensors")
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not (tmp_path / "resume.safetensors").exists()


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no interrupted run"):
        launch.train("backprop-mlp", "mnist", tmp_path, resume=True)


def test_batches_are_a_function_of_the_step():
    x = torch.arange(10)
    a, b = TensorBatches(x, batch_size=4, seed=1), TensorBatches(x, batch_size=4, seed=1)
    seq = [a(s)[0].tolist() for s in range(6)]
    assert [b(s)[0].tolist() for s in reversed(range(6))][::-1] == seq
    epoch = sum((a(s)[0].tolist() for s in range(a.steps_per_epoch)), [])
    assert len(set(epoch)) == len(epoch) == 8  # no repeats within an epoch (drop_last)
    w = RandomWindows(torch.arange(100), block_size=8, batch_size=3, seed=0)
    xb, yb = w(5)
    assert torch.equal(yb, xb + 1) and torch.equal(w(5)[0], xb)


def test_length_buckets_hold_rows_of_one_length_in_a_random_order():
    lengths = (torch.arange(1000) // 50)[torch.randperm(1000, generator=torch.Generator().manual_seed(0))]
    x = torch.arange(1000)
    a = TensorBatches(x, batch_size=50, seed=3, lengths=lengths, bucket_batches=20)  # one window: a global sort
    epoch = [a(s)[0] for s in range(a.steps_per_epoch)]
    assert sorted(torch.cat(epoch).tolist()) == list(range(1000))  # every row once
    spread = [int(lengths[b].max() - lengths[b].min()) for b in epoch]
    assert max(spread) == 0, spread  # sorted: 50 rows of each of 20 lengths, so one length a batch
    firsts = [int(lengths[b].min()) for b in epoch]
    assert firsts != sorted(firsts)  # ...but the batches come in a shuffled order
    b = TensorBatches(x, batch_size=50, seed=3, lengths=lengths, bucket_batches=20)
    assert torch.equal(b(17)[0], a(17)[0])  # still a function of (seed, step)
    assert not torch.equal(a(a.steps_per_epoch)[0], a(0)[0])  # a new order each epoch
    with pytest.raises(ValueError, match="lengths"):
        TensorBatches(x, batch_size=50, lengths=lengths[:10])


def test_schedules():
    assert lr_factor("constant", 5, 100) == 1.0
    assert lr_factor("cosine", 0, 100) == 1.0 and lr_factor("cosine", 100, 100) == pytest.approx(0.0)
    assert lr_factor("linear", 50, 100) == pytest.approx(0.5)
    assert lr_factor("cosine", 4, 100, warmup=10) == pytest.approx(0.5)
    peak = 4000
    assert lr_factor("noam", peak - 1, 0, warmup=peak) == pytest.approx(max(
        lr_factor("noam", s, 0, warmup=peak) for s in range(0, 20000, 500)), rel=1e-3)


def test_early_stopping_keeps_the_best_weights(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(1, 1)
    x = torch.linspace(-1, 1, 32)[:, None]
    y = 3 * x
    scores = iter([5.0, 1.0, 2.0, 3.0, 4.0, 6.0, 7.0])  # best at the second evaluation, then worse

    def evaluate():
        return {"val_loss": next(scores), "w": model.weight.item()}

    run = Run(tmp_path, "perceptron", "test", type("S", (), {})(), 0)
    trainer = Trainer(model, lambda b: {"loss": ((model(b[0]) - b[1]) ** 2).mean()},
                      TensorBatches(x, y, batch_size=8, seed=0), torch.optim.SGD(model.parameters(), lr=0.1),
                      max_steps=100, run=run, evaluate=evaluate, eval_every=4, monitor="val_loss", patience=3)
    final = trainer.fit()
    assert trainer.stopped_early and final["steps"] == 16
    w_at_best = [r for r in run.history() if r.get("val_loss") == 1.0][0]["w"]
    assert model.weight.item() == pytest.approx(w_at_best)


def test_gradient_clipping_bounds_the_update():
    model = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        model.weight.zero_()
    trainer = Trainer(model, lambda b: {"loss": 1000 * model(b[0]).sum()}, TensorBatches(torch.ones(4, 4),
                      batch_size=4), torch.optim.SGD(model.parameters(), lr=1.0), max_steps=1, grad_clip=1.0)
    trainer.fit()
    assert model.weight.norm().item() == pytest.approx(1.0, rel=1e-5)


def test_muon_adamw_is_one_optimizer_for_schedules_and_checkpoints():
    def make():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
        opt = MuonAdamW([{"params": [model[0].weight]}], [{"params": [model[0].bias, *model[2].parameters()]}],
                        lr=0.02)
        return model, opt, make_schedule(opt, "linear", 10, warmup=2)

    x, y = torch.randn(32, 8), torch.randn(32, 1)

    def train(model, opt, sched, steps):
        for _ in range(steps):
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()
            sched.step()

    model, opt, sched = make()
    w0 = model[0].weight.detach().clone()
    train(model, opt, sched, 1)
    update = model[0].weight.detach() - w0 * (1 - 0.02 * 0.5 * 0.1)  # undo the decoupled weight decay
    s = torch.linalg.svdvals(update)
    assert s.max() / s.min() < 2  # Muon's step is nearly orthogonal: all directions move alike
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.02] * 2)  # warm-up step 2 of 2 on both parts
    train(model, opt, sched, 2)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    state, sched_state = copy.deepcopy(opt.state_dict()), sched.state_dict()  # the live tensors move on
    train(model, opt, sched, 3)

    model2, opt2, sched2 = make()
    model2.load_state_dict(saved)
    opt2.load_state_dict(state)
    sched2.load_state_dict(sched_state)
    train(model2, opt2, sched2, 3)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), model2.parameters(), strict=True))


@pytest.mark.parametrize("adjust", [None, "match_rms_adamw"])
def test_batched_muon_steps_as_torchs_muon(adjust):
    """Same-shaped matrices share one batched Newton-Schulz; the parameters follow torch.optim.Muon's exactly
    (tall and wide matrices, a lone shape, a matrix without a gradient, weight decay, nesterov and not)."""
    torch.manual_seed(0)
    shapes = [(48, 16), (16, 48), (48, 16), (16, 16), (24, 40), (16, 48)]
    ours = [nn.Parameter(torch.randn(s) * 0.1) for s in shapes]
    theirs = [nn.Parameter(p.detach().clone()) for p in ours]
    for nesterov in (True, False):
        kw = dict(lr=0.02, weight_decay=0.1, momentum=0.9, nesterov=nesterov, adjust_lr_fn=adjust)
        opts = Muon(ours, **kw), torch.optim.Muon(theirs, **kw)
        for step in range(4):
            for ps in (ours, theirs):
                for i, p in enumerate(ps):
                    torch.manual_seed(10 * step + i)
                    p.grad = None if (i == 3 and step == 1) else torch.randn(p.shape)
            for opt in opts:
                opt.step()
            for a, b in zip(ours, theirs, strict=True):
                torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


FAULTS = """
import resource, torch
from zupu.models.gpt import GPT, GPTConfig
from zupu.train.threads import keep_freed_memory
torch.manual_seed(0)
model = GPT(GPTConfig(vocab_size=65, n_positions=64, n_embd=128, n_layer=2, n_head=4))
x = torch.randint(65, (32, 64))
def faults_per_step():
    for _ in range(6):
        model.loss(x, x).backward()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        model.loss(x, x).backward()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10
print(faults_per_step())
keep_freed_memory()
print(faults_per_step())
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="tunes glibc's malloc")
def test_training_steps_reuse_freed_memory_without_page_faults():
    """A fresh process: steps page-fault their activations back in until the Trainer's malloc settings."""
    out = subprocess.run([sys.executable, "-c", FAULTS], capture_output=True, text=True, check=True).stdout
    before, after = map(float, out.split())
    assert after * 4 < before, (before, after)


def test_workers_split_the_batch_but_not_the_gradient():
    """Shards' gradients, weighted by their rows, add up to the whole batch's; deterministically."""
    from zupu.models.gpt import GPT, PRESETS

    torch.manual_seed(0)
    model = GPT(PRESETS["tiny"])
    batch = RandomWindows(torch.randint(0, 96, (2000,)), 16, 7, seed=0)(0)  # 7 rows: shards of 4 and 3
    model.loss(*batch).backward()
    whole = [p.grad.clone() for p in model.parameters()]
    sharded = []
    for _ in range(2):
        model.zero_grad(set_to_none=True)
        Trainer(model, lambda b: {"loss": model.loss(*b)}, lambda step: batch,
                torch.optim.SGD(model.parameters(), lr=0.0), 1, workers=2).fit()
        sharded.append([p.grad.clone() for p in model.parameters()])
    for w, g in zip(whole, sharded[0], strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-7)  # equal up to summation order
    assert all(torch.equal(a, b) for a, b in zip(*sharded, strict=True))


def test_workers_log_the_whole_batch_mean():
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    x = torch.arange(5.0)[:, None]  # shards [0, 1, 2] and [3, 4]: means 1.0 and 3.5, whole batch 2.0
    trainer = Trainer(model, lambda b: {"loss": model(b[0]).mean()}, TensorBatches(x, batch_size=5, shuffle=False),
                      torch.optim.SGD(model.parameters(), lr=0.0), 1, workers=2)
    assert trainer._sharded_step((x,))["loss"].item() == pytest.approx(2.0)
    assert model.weight.grad.item() == pytest.approx(2.0)  # d mean(w x) / dw = mean(x)


def test_workers_must_be_positive():
    with pytest.raises(ValueError, match="workers"):
        Trainer(nn.Linear(1, 1), lambda b: {}, lambda s: None, torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=1),
                1, workers=0)
