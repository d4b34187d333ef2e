"""transformer: masks (no peeking at the future, padding inert), the embedding scale, post-/pre-LN,
cached decoding equal to the full forward, greedy and beam search, label smoothing against torch, MarianMT
checkpoints both ways against `transformers`, and (slow) the copy-reverse recipe reaching 100% exact match
on unseen strings and a smoke run of the Tatoeba en->zh pipeline."""

import math

import pytest
import torch
import torch.nn.functional as F
from reference import need

import zupu
from zupu.errors import SettingError
from zupu.models.transformer import PRESETS, Transformer, TransformerConfig, label_smoothed_nll
from zupu.recipes import transformer as recipe
from zupu.train import launch

SRC = torch.tensor([[5, 6, 7, 8, 9], [4, 7, 11, 0, 0], [13, 0, 0, 0, 0]])  # right-padded with 0
TGT_IN = torch.tensor([[1, 5, 6, 7, 9, 3], [1, 8, 8, 4, 20, 5], [1, 3, 4, 5, 6, 7]])


def _model(pre_ln: bool = False, **kw) -> Transformer:
    torch.manual_seed(0)
    cfg = PRESETS["tiny"]
    return Transformer(TransformerConfig(**{**cfg.__dict__, "pre_ln": pre_ln, "dropout": 0.0,
                                            "decoder_layers": 2, **kw})).eval()


@pytest.mark.parametrize("pre_ln", [False, True])
def test_a_future_target_token_cannot_change_earlier_outputs(pre_ln):
    m = _model(pre_ln)
    a = m(SRC, TGT_IN)
    for t in range(1, TGT_IN.shape[1]):
        changed = TGT_IN.clone()
        changed[:, t] = (changed[:, t] + 3) % m.config.tgt_vocab_size
        b = m(SRC, changed)
        assert torch.allclose(a[:, :t], b[:, :t], atol=1e-6)
        assert not torch.allclose(a[:, t:], b[:, t:], atol=1e-4)  # ...and later ones do see it


@pytest.mark.parametrize("pre_ln", [False, True])
def test_source_padding_does_not_change_the_outputs(pre_ln):
    m = _model(pre_ln)
    short = m(SRC[1:2, :3], TGT_IN[1:2])
    padded = m(torch.cat([SRC[1:2], torch.zeros(1, 4, dtype=torch.long)], dim=1), TGT_IN[1:2])
    assert torch.allclose(short, padded, atol=1e-6)
    memory, _ = m.encode(SRC[1:2, :3])
    changed = SRC[1:2, :3].clone()
    changed[0, 0] = 9  # a real source token does reach every output
    assert not torch.allclose(m(changed, TGT_IN[1:2]), short, atol=1e-4)


def test_input_is_scaled_embedding_plus_sinusoids():
    m = _model()
    ids = torch.tensor([[3, 4, 5]])
    d = m.config.d_model
    x = m.embed(m.tgt_embed, ids, past=2)
    pos = torch.arange(2, 5, dtype=torch.float64)[:, None]
    i = torch.arange(0, d, 2, dtype=torch.float64)
    pe = torch.zeros(3, d, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(pos / 10000 ** (i / d))
    pe[:, 1::2] = torch.cos(pos / 10000 ** (i / d))
    assert torch.allclose(x[0], m.tgt_embed.weight[ids[0]] * math.sqrt(d) + pe.float(), atol=1e-6)
    assert m.lm_head.weight is m.tgt_embed.weight  # the output layer is the target embedding (sec. 3.4)


def test_post_ln_normalises_each_layer_output_and_pre_ln_ends_with_a_norm():
    post = _model(pre_ln=False)
    memory, _ = post.encode(SRC[:1])
    # the last thing a post-LN layer does is LayerNorm (weight 1, bias 0 at init): zero mean, unit variance
    assert torch.allclose(memory.mean(-1), torch.zeros(1, 5), atol=1e-5)
    assert torch.allclose(memory.var(-1, unbiased=False), torch.ones(1, 5), atol=1e-3)
    assert isinstance(post.encoder_ln, torch.nn.Identity)
    pre = _model(pre_ln=True)
    assert isinstance(pre.encoder_ln, torch.nn.LayerNorm) and isinstance(pre.decoder_ln, torch.nn.LayerNorm)
    assert pre.encoder[0].pre_ln and not post.encoder[0].pre_ln


@pytest.mark.parametrize("pre_ln", [False, True])
def test_cached_incremental_decoding_equals_the_full_forward(pre_ln):
    m = _model(pre_ln)
    full = m(SRC, TGT_IN)
    memory, mask = m.encode(SRC)
    caches = m.new_caches(TGT_IN.shape[1], SRC.shape[1])
    steps = [m.decode(TGT_IN[:, :2], memory, mask, caches)]  # a two-token prefix, then one at a time
    steps += [m.decode(TGT_IN[:, t : t + 1], memory, mask, caches) for t in range(2, TGT_IN.shape[1])]
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)


def test_greedy_decoding_agrees_with_teacher_forcing():
    m = _model()
    with torch.no_grad():  # keep eos from ending every sentence at once
        m.tgt_embed.weight[m.config.eos_token_id] *= -1
    seqs = m.generate(SRC, max_new_tokens=6)
    assert any(seqs)
    for b, seq in enumerate(seqs):
        tgt_in = torch.tensor([[m.config.bos_token_id, *seq]])
        logits = m(SRC[b : b + 1, : int((SRC[b] != 0).sum())], tgt_in)
        assert logits.argmax(-1)[0, : len(seq)].tolist() == seq


def test_beam_of_one_is_greedy():
    m = _model()
    assert m.generate(SRC, max_new_tokens=6, beam_size=1) == m.generate(SRC, max_new_tokens=6)
    # beam_size 1 through the beam-search code path (the public call short-cuts to greedy)
    from zupu.sampling import beam_search

    memory, mask = m.encode(SRC)
    caches = m.new_caches(6, SRC.shape[1])
    c = m.config
    out = beam_search(lambda y: m.decode(y[:, None], memory, mask, caches)[:, -1].log_softmax(-1),
                      lambda rows: [k.reorder(rows) for k, _ in caches], 3, 1, c.bos_token_id, c.eos_token_id,
                      c.pad_token_id, 6)
    assert out == m.generate(SRC, max_new_tokens=6)


def test_a_beam_as_wide_as_every_sequence_finds_the_best_one():
    """With k = V^2 hypotheses and 2 steps, beam search is exhaustive: it must return the sequence with
    the best length-normalised log-probability among all of them (and reorder the KV caches right)."""
    m = _model()
    eos, V, bos = m.config.eos_token_id, m.config.tgt_vocab_size, m.config.bos_token_id
    with torch.no_grad():
        m.lm_head.weight = torch.nn.Parameter(m.lm_head.weight.clone())  # untie, so padding can be banned
        m.lm_head.weight[m.config.pad_token_id] = 0.0
        src = SRC[1:2, :3]
        memory, mask = m.encode(src)
        best, best_score = None, float("-inf")
        first = m.decode(torch.tensor([[bos]]), memory, mask)[0, 0].log_softmax(-1)  # (V,)
        for a in range(V):
            if a == m.config.pad_token_id:
                continue
            if a == eos:
                cand, score = [], first[a].item()
            else:
                second = m.decode(torch.tensor([[bos, a]]), memory, mask)[0, 1].log_softmax(-1)
                second[m.config.pad_token_id] = float("-inf")
                b = int(second.argmax())
                cand, score = ([a] if b == eos else [a, b]), (first[a] + second[b]).item() / 2
            if score > best_score:
                best, best_score = cand, score
        m.lm_head.weight[m.config.pad_token_id] = -1e4  # never a real output
        assert m.generate(src, max_new_tokens=2, beam_size=V * V) == [best]


def test_label_smoothed_loss_equals_torch_cross_entropy():
    torch.manual_seed(1)
    logits = torch.randn(3, 5, 11)
    targets = torch.randint(1, 11, (3, 5))
    targets[1, 3:] = 0  # padding
    ours = label_smoothed_nll(logits, targets, 0.1, ignore_index=0)
    ref = F.cross_entropy(logits.reshape(-1, 11), targets.reshape(-1), ignore_index=0, label_smoothing=0.1)
    assert torch.allclose(ours, ref, atol=1e-6)
    assert torch.allclose(label_smoothed_nll(logits, targets, 0.0, 0),
                          F.cross_entropy(logits.reshape(-1, 11), targets.reshape(-1), ignore_index=0), atol=1e-6)
    m = _model()
    tgt = torch.cat([TGT_IN, torch.full((3, 1), 2)], dim=1)
    logits = m(SRC, tgt[:, :-1])
    assert torch.allclose(m.loss(SRC, tgt), F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                          tgt[:, 1:].reshape(-1), ignore_index=0, label_smoothing=0.1), atol=1e-6)


def test_too_long_a_sequence_is_a_clear_error():
    m = _model()
    with pytest.raises(SettingError, match="max_position_embeddings 64"):
        m(torch.ones(1, 65, dtype=torch.long), TGT_IN[:1])


def test_reverse_task_holds_out_its_test_strings():
    rec = recipe.CopyReverse()
    s = rec.settings(overrides={"n_train": 3000, "n_test": 200, "max_len": 5, "n_symbols": 6})
    (src, tgt, train), (_, _, test) = rec.data(s)
    assert not set(train) & set(test) and len(set(train)) == 3000 and len(set(test)) == 200
    # the short strings are too few to hold out (6 of length 1): the test set starts at test_min_len
    assert min(map(len, test)) == s.test_min_len == 4 and {len(t) for t in train} == {1, 2, 3, 4, 5}
    row = train.index(next(t for t in train if len(t) == 3))
    assert src[row].tolist() == [*train[row], 0, 0] and tgt[row].tolist() == [1, *reversed(train[row]), 2, 0, 0]
    with pytest.raises(SettingError, match="only 30 exist"):
        recipe.reverse_task(31, 5, 2, seed=0)


def test_copy_reverse_validation_strings_are_held_out_of_training_and_test():
    rec = recipe.CopyReverse()
    s = rec.settings(overrides={"n_train": 3000, "n_test": 200, "n_val": 200})
    (_, _, train), (_, _, test) = rec.data(s)
    val = rec.val(s)[2]
    assert len(val) == 200 and min(map(len, val)) >= s.test_min_len
    assert not set(val) & set(test) and not set(val) & set(train) and not set(test) & set(train)
    assert rec.val(rec.settings())[2] == []


@pytest.mark.slow
def test_copy_reverse_is_solved_on_unseen_strings(tmp_path):
    result = launch.train("transformer", quick=True, out=tmp_path, seed=0)
    m = result["metrics"]
    # every one of the 1,000 held-out strings, greedy and beam, in the quick 500 steps (1.0 / 1.0 at seeds 0-2)
    assert m["test_exact_match"] == 1.0 and m["test_exact_match_beam"] == 1.0, m
    assert result["milestone"]["passed"] and result["milestone"]["target"] == 1.0


# -- MarianMT (transformers) both ways -----------------------------------------------------------------
MARIAN = dict(d_model=16, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
              encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=64, pad_token_id=0, eos_token_id=2,
              decoder_start_token_id=1, scale_embedding=True)


def _jitter_norms(model: torch.nn.Module) -> None:
    """Random LayerNorm weights/biases, so a wrongly permuted model dimension cannot hide behind 1s and 0s."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or ".ln" in name:
                p.add_(torch.randn(p.shape, generator=g) * 0.3)


def _marian_logits(ref, src, tgt_in):
    with torch.no_grad():
        return ref(input_ids=src, attention_mask=(src != 0).long(), decoder_input_ids=tgt_in).logits


@pytest.mark.parametrize("shared, act", [(True, "swish"), (False, "relu")])
def test_marian_checkpoints_both_ways(shared, act, tmp_path):
    transformers = need("transformers")
    from zupu.checkpoint import save_model

    torch.manual_seed(0)
    cfg = transformers.MarianConfig(vocab_size=24, decoder_vocab_size=None if shared else 30, activation_function=act,
                                    share_encoder_decoder_embeddings=shared, **MARIAN)
    ref = transformers.MarianMTModel(cfg).eval()
    _jitter_norms(ref)
    ref.save_pretrained(tmp_path / "hf")
    model = zupu.from_pretrained(tmp_path / "hf")
    assert type(model) is Transformer and model.config.activation_function == act
    src = torch.tensor([[5, 6, 7, 8, 9, 10], [4, 7, 11, 0, 0, 0]])  # the second one padded
    want = _marian_logits(ref, src, TGT_IN[:2])
    with torch.no_grad():
        torch.testing.assert_close(model(src, TGT_IN[:2]), want, atol=1e-5, rtol=0)

    save_model(model, tmp_path / "zupu", {"recipe": "test"})
    back, info = transformers.MarianMTModel.from_pretrained(tmp_path / "zupu", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    torch.testing.assert_close(_marian_logits(back.eval(), src, TGT_IN[:2]), want, atol=1e-5, rtol=0)
    assert back.config.share_encoder_decoder_embeddings == shared


def test_a_zupu_model_runs_unchanged_in_marian(tmp_path):
    """zupu's paper layout (interleaved sinusoids, separate vocabularies) -> MarianMTModel: same logits and the
    same greedy translation."""
    transformers = need("transformers")
    from zupu.checkpoint import load_model, save_model

    m = _model()
    _jitter_norms(m)
    save_model(m, tmp_path, {"recipe": "test"})
    ref = transformers.MarianMTModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(_marian_logits(ref, SRC, TGT_IN), m(SRC, TGT_IN), atol=1e-5, rtol=0)
        m.tgt_embed.weight[m.config.eos_token_id] *= -1  # no early stops, so there is a sequence to compare
        save_model(m, tmp_path, {"recipe": "test"})
        ref = transformers.MarianMTModel.from_pretrained(tmp_path).eval()
        hf = ref.generate(input_ids=SRC, attention_mask=(SRC != 0).long(), max_new_tokens=6, num_beams=1,
                          do_sample=False, forced_eos_token_id=None)
    ours = m.generate(SRC, max_new_tokens=6)
    assert [row[1 : 1 + len(seq)] for row, seq in zip(hf.tolist(), ours, strict=True)] == ours and any(ours)
    again = load_model(tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), m.state_dict().values(), strict=True))


def test_pre_ln_keeps_zupus_layout_and_an_output_bias_is_refused(tmp_path):
    transformers = need("transformers")
    import json

    from zupu.checkpoint import load_model, save_model
    from zupu.errors import CheckpointError

    pre = _model(pre_ln=True)
    save_model(pre, tmp_path / "pre", {"recipe": "test"})
    assert "model_type" not in json.loads((tmp_path / "pre" / "config.json").read_text())
    assert load_model(tmp_path / "pre").config.pre_ln
    ref = transformers.MarianMTModel(transformers.MarianConfig(vocab_size=24, **MARIAN))
    with torch.no_grad():
        ref.final_logits_bias.fill_(0.5)
    ref.save_pretrained(tmp_path / "bias")
    with pytest.raises(CheckpointError, match="final_logits_bias"):
        load_model(tmp_path / "bias")


@pytest.mark.slow
def test_tatoeba_pipeline_smoke(tmp_path):
    """One epoch of a small model through the shared en->zh pipeline (split, BPE, sacrebleu): it learns something,
    decodes greedy and beam, and its run directory is a MarianMT checkpoint that `transformers` loads."""
    transformers = need("transformers")
    from zupu.recipes import translation

    small = {"epochs": 1, "d_model": 64, "layers": 1, "heads": 2, "ffn_dim": 128, "warmup": 100, "test_limit": 60,
             "beam_size": 2}
    m = launch.train("transformer", recipe="tatoeba-en-zh", out=tmp_path, seed=0, overrides=small)["metrics"]
    assert m["val_loss"] < math.log(4000) - 2.0, m  # well below the uniform guess over the 4000 pieces
    assert m["chrf"] > 0 and m["chrf_greedy"] > 0 and 0 < m["test_sentences"] <= 60, m
    ref = transformers.MarianMTModel.from_pretrained(tmp_path).eval()
    model = zupu.from_pretrained(tmp_path)
    src, tgt = translation.trim(*translation.tatoeba_tensors("test", 4000, 4000, 16, 20, limit=4)[:2])
    with torch.no_grad():
        want = ref(input_ids=src, attention_mask=(src != 0).long(), decoder_input_ids=tgt[:, :-1]).logits
        torch.testing.assert_close(model(src, tgt[:, :-1]), want, atol=1e-4, rtol=0)
