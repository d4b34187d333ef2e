"""seq2seq-attention: the bidirectional encoder, masks, attention weights, greedy and beam decoding, the
deterministic leak-free split, and (slow) attention beating no-attention on Tatoeba en->zh."""

import unicodedata
from types import SimpleNamespace

import pytest
import torch

from zupu.models.seq2seq_attention import PRESETS, Seq2Seq, reverse_padded
from zupu.recipes import seq2seq_attention as recipe
from zupu.recipes import translation
from zupu.train import launch


def _model(attention: bool = True) -> Seq2Seq:
    torch.manual_seed(0)
    cfg = PRESETS["tiny"]
    return Seq2Seq(type(cfg)(**{**cfg.__dict__, "attention": attention, "dropout": 0.0})).eval()


SRC = torch.tensor([[5, 6, 7, 8, 9], [4, 7, 11, 0, 0], [13, 0, 0, 0, 0]])  # right-padded with 0


def test_reverse_within_length_leaves_padding():
    x = torch.arange(10.0).view(2, 5, 1)
    out = reverse_padded(x, torch.tensor([5, 3]))
    assert out[:, :, 0].tolist() == [[4, 3, 2, 1, 0], [7, 6, 5, 8, 9]]
    assert torch.equal(reverse_padded(out, torch.tensor([5, 3])), x)


def test_backward_encoder_reads_right_to_left():
    """<-h_j depends on x_j..x_T only: changing the first token leaves <-h_j, j >= 1, unchanged."""
    m = _model()
    a = m.encode(SRC[:1]).annotations
    src = SRC[:1].clone()
    src[0, 0] = 3
    b = m.encode(src).annotations
    H = m.config.hidden_size
    assert torch.allclose(a[0, 1:, H:], b[0, 1:, H:]) and not torch.allclose(a[0, :, :H], b[0, :, :H])


def test_attention_weights_sum_to_one_and_skip_padding():
    m = _model()
    logits, att = m(SRC, torch.tensor([[1, 5, 6], [1, 7, 8], [1, 9, 9]]), return_attention=True)
    assert att.shape == (3, 3, 5) and logits.shape == (3, 3, m.config.tgt_vocab_size)
    assert torch.allclose(att.sum(-1), torch.ones(3, 3))
    assert (att[1, :, 3:] == 0).all() and (att[2, :, 1:] == 0).all()  # no weight on padded positions
    assert (att[0] > 0).all()


def test_padding_does_not_change_the_translation():
    m = _model()
    tgt = torch.tensor([[1, 5, 6, 7]])
    short = m(SRC[1:2, :3], tgt)
    padded = m(torch.cat([SRC[1:2], torch.zeros(1, 4, dtype=torch.long)], dim=1), tgt)
    assert torch.allclose(short, padded, atol=1e-6)


def test_without_attention_the_context_is_the_fixed_summary():
    m = _model(attention=False)
    enc = m.encode(SRC)
    context, weights = m.attend(torch.randn(3, m.config.hidden_size), enc)
    assert weights is None and torch.equal(context, enc.summary)
    H = m.config.hidden_size
    assert torch.equal(enc.summary[1, :H], enc.annotations[1, 2, :H])  # ->h at the last real token
    assert torch.equal(enc.summary[1, H:], enc.annotations[1, 0, H:])  # <-h_1
    assert not hasattr(m, "query")


@pytest.mark.parametrize("attention", [True, False])
def test_greedy_decoding_agrees_with_teacher_forcing(attention):
    """Feeding the greedy output back under teacher forcing reproduces it token by token (argmax)."""
    m = _model(attention)
    with torch.no_grad():  # a larger output bias for eos would end every sentence at once; push it away
        m.lm_head.bias[m.config.eos_token_id] = -5.0
    seqs = m.generate(SRC, max_new_tokens=6)
    for b, seq in enumerate(seqs):
        tgt_in = torch.tensor([[m.config.bos_token_id, *seq]])
        logits = m(SRC[b : b + 1, : int((SRC[b] != 0).sum())], tgt_in)
        assert logits.argmax(-1)[0, : len(seq)].tolist() == seq


def test_beam_of_one_is_greedy():
    m = _model()
    greedy = m.generate(SRC, max_new_tokens=6)
    assert m._beam(SRC, 6, 1) == greedy


def test_a_beam_as_wide_as_every_sequence_finds_the_best_one():
    """With k = V^2 hypotheses and 2 steps, beam search is exhaustive: it must return the sequence with
    the best length-normalised log-probability among all of them."""
    m = _model()
    eos, V = m.config.eos_token_id, m.config.tgt_vocab_size
    with torch.no_grad():
        m.lm_head.bias[m.config.pad_token_id] = -1e4  # padding is never a real output
        src = SRC[1:2, :3]
        first = m(src, torch.tensor([[m.config.bos_token_id]])).log_softmax(-1)[0, 0]  # (V,)
        best, best_score = None, float("-inf")
        for a in range(V):
            if a == eos:
                cand, score = [], first[a].item()
            else:
                second = m(src, torch.tensor([[m.config.bos_token_id, a]])).log_softmax(-1)[0, 1]  # (V,)
                b = int(second.argmax())  # the best continuation of a, both with length 2
                cand, score = ([a] if b == eos else [a, b]), (first[a] + second[b]).item() / 2
            if score > best_score:
                best, best_score = cand, score
        assert m.generate(src, max_new_tokens=2, beam_size=V * V) == [best]


def test_greedy_attention_maps_cover_each_output_and_the_real_source():
    seqs, weights = _model().generate(SRC, max_new_tokens=4, return_attention=True)
    for b, (seq, a) in enumerate(zip(seqs, weights, strict=True)):
        assert a.shape[1] == int((SRC[b] != 0).sum()) and a.shape[0] >= len(seq)
        assert torch.allclose(a.sum(1), torch.ones(len(a)))
    with pytest.raises(ValueError, match="greedy"):
        _model().generate(SRC, beam_size=2, return_attention=True)


def test_split_is_deterministic_and_leak_free():
    splits = translation.tatoeba_splits()
    train_en = {en for en, _ in splits["train"]}
    train_zh = {zh for _, zh in splits["train"]}
    for name in ("val", "test"):
        assert splits[name] and not {en for en, _ in splits[name]} & train_en
        assert not {zh for _, zh in splits[name]} & train_zh
        assert len({en for en, _ in splits[name]}) == len(splits[name])  # one reference each
    assert len(splits["test"]) > 800 and len(splits["train"]) > 18000
    assert all(translation.split_of(en) == "test" for en, _ in splits["test"])


def test_tokenizers_round_trip_and_stay_on_the_training_split():
    src_tok, tgt_tok = translation.tokenizers_for(4000, 4000)
    assert [src_tok.token_to_id(t) for t in translation.SPECIALS] == [0, 1, 2, 3]
    assert [tgt_tok.token_to_id(t) for t in translation.SPECIALS] == [0, 1, 2, 3]
    test = [zh for _, zh in translation.tatoeba_splits()["test"]]
    ids = [tgt_tok.encode(zh).ids for zh in test]
    unknown = [row.count(translation.SPECIALS.index("[UNK]")) for row in ids]
    # the tokenizer normalises with NFKC ("！" -> "!"): every sentence without an unknown piece comes back
    # as exactly its NFKC form; measured: 32 unknown pieces in 27 of 963 sentences (9,660 characters)
    for zh, row, n in zip(test, ids, unknown, strict=True):
        if n == 0:
            assert tgt_tok.decode(row) == unicodedata.normalize("NFKC", zh)
    assert sum(unknown) <= 0.01 * sum(map(len, test)) and sum(n > 0 for n in unknown) <= 0.05 * len(test)
    assert tgt_tok.decode(tgt_tok.encode("我们明天去学校。").ids) == "我们明天去学校。"


def test_wrong_vocab_is_a_clear_error():
    from zupu.errors import ZupuError

    src_tok, tgt_tok = translation.tokenizers_for(4000, 4000)
    with pytest.raises(ZupuError, match="do not match the tokenizers"):
        translation.check_vocab(_model(), src_tok, tgt_tok)


def test_alignment_heat_map_is_drawn(tmp_path):
    rec = recipe.Tatoeba()
    s = rec.settings(overrides={"embed_size": 8, "hidden_size": 8, "attention_size": 8})
    model = rec.build(s)
    rec.figures(model, s, SimpleNamespace(path=lambda name: tmp_path / name))
    assert (tmp_path / "alignment.png").read_bytes()[:4] == b"\x89PNG"


def test_paired_comparison_tells_a_lead_from_chance():
    refs = [f"我们明天去学校{i % 10}次。" for i in range(120)]
    wrong = ["他们昨天在家。"] * 120
    lengths = list(range(120))
    same = translation.paired_comparison(wrong, wrong, refs, lengths)
    assert same["bleu_gain_p"] == 1.0 and same["bleu_gain_short"] == same["bleu_gain_long"] == 0.0
    better_on_long = [r if i >= 60 else w for i, (r, w) in enumerate(zip(refs, wrong, strict=True))]
    out = translation.paired_comparison(wrong, better_on_long, refs, lengths, trials=200)
    assert out["bleu_gain_p"] <= 1 / 201 + 1e-9  # no random swap does as well as the real split
    assert out["bleu_gain_long"] > 90 and out["bleu_gain_short"] == 0.0
    assert translation.paired_comparison(better_on_long, wrong, refs, lengths)["bleu_gain_p"] == 1.0  # a loss


@pytest.mark.slow
def test_quick_run_learns_to_translate(tmp_path):
    # the quick milestone (3 epochs on length-bucketed batches): BLEU >= 2 on the first 300 test sentences; attention's
    # lead over its twin (the full milestone, p <= 0.05) needs the full run and is not claimed here
    result = launch.train("seq2seq-attention", quick=True, out=tmp_path, seed=0)
    m = result["metrics"]
    judged = recipe.Tatoeba().milestone_for(quick=True).judge(m)
    assert judged["name"] == "bleu" and judged["passed"], judged
    assert m["baseline_bleu"] > 1.0, m  # its no-attention twin learned too: the comparison is between two models
    assert (tmp_path / "alignment.png").stat().st_size > 0
