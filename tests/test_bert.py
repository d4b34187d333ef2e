"""BERT: checkpoints both ways with `transformers`, real all-MiniLM-L6-v2 weights, bad checkpoints, `zupu embed`."""

import json

import pytest
import torch
import torch.nn.functional as F
from reference import need

import zupu
from zupu import create
from zupu.checkpoint import load_model, save_model
from zupu.cli import main
from zupu.errors import CheckpointError
from zupu.hf import bert as hf_bert
from zupu.models.bert import Bert, BertForMaskedLM, BertForPreTraining, BertForSequenceClassification, mean_pool

transformers = need("transformers")

TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64)


def batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 99, (3, 11), generator=g)
    mask = torch.ones(3, 11, dtype=torch.long)
    mask[1, 7:] = 0  # a padded row
    return ids, mask, torch.randint(0, 2, (3, 11), generator=g)


def hf_outputs(out) -> list[torch.Tensor]:
    if hasattr(out, "prediction_logits"):
        return [out.prediction_logits, out.seq_relationship_logits]
    if hasattr(out, "last_hidden_state"):
        return [out.last_hidden_state, out.pooler_output]
    return [out.logits]


def zupu_outputs(model, out) -> list[torch.Tensor]:
    if isinstance(model, Bert):
        return [out, model.pool(out)]
    return list(out) if isinstance(out, tuple) else [out]


ARCHS = [("BertModel", Bert), ("BertForMaskedLM", BertForMaskedLM), ("BertForPreTraining", BertForPreTraining),
         ("BertForSequenceClassification", BertForSequenceClassification)]


@pytest.mark.parametrize(("hf_name", "cls"), ARCHS, ids=[a for a, _ in ARCHS])
def test_transformers_checkpoints_both_ways(hf_name, cls, tmp_path):
    torch.manual_seed(0)
    ref = getattr(transformers, hf_name)(transformers.BertConfig(**TINY, num_labels=3)).eval()
    ref.save_pretrained(tmp_path / "hf")
    model = zupu.from_pretrained(tmp_path / "hf")
    assert type(model) is cls
    ids, mask, types = batch()
    with torch.no_grad():
        want = hf_outputs(ref(input_ids=ids, attention_mask=mask, token_type_ids=types))
        got = zupu_outputs(model, model(ids, mask, types))
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=0)

    save_model(model, tmp_path / "zupu", {"recipe": "test"})
    back, info = getattr(transformers, hf_name).from_pretrained(tmp_path / "zupu", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    with torch.no_grad():
        again = hf_outputs(back.eval()(input_ids=ids, attention_mask=mask, token_type_ids=types))
    for a, w in zip(again, want, strict=True):
        torch.testing.assert_close(a, w, atol=1e-5, rtol=0)
    assert type(load_model(tmp_path / "zupu")) is cls


def test_padding_does_not_change_the_real_tokens():
    torch.manual_seed(0)
    model = create("bert", "tiny").eval()
    ids = torch.randint(1, 99, (1, 6))
    padded = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], 1)
    mask = torch.tensor([[1] * 6 + [0] * 4])
    with torch.no_grad():
        torch.testing.assert_close(model(padded, mask)[:, :6], model(ids), atol=1e-6, rtol=0)
        assert not torch.allclose(model(padded)[:, :6], model(ids), atol=1e-3)  # without the mask it leaks


def test_malformed_checkpoints_name_the_keys(tmp_path):
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    transformers.BertModel(transformers.BertConfig(**TINY)).save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    state = load_file(weights)
    good = dict(state)
    del state["encoder.layer.1.attention.self.key.weight"]
    state["encoder.layer.0.output.dense.weight"] = torch.zeros(32, 5)
    state["encoder.layer.9.extra.weight"] = torch.zeros(1)
    save_file(state, weights)
    with pytest.raises(CheckpointError) as e:
        zupu.from_pretrained(tmp_path)
    msg = str(e.value)
    assert "missing keys ['encoder.layer.1.attention.self.key.weight']" in msg
    assert "unexpected keys ['encoder.layer.9.extra.weight']" in msg
    assert "encoder.layer.0.output.dense.weight: checkpoint (32, 5) vs model (32, 37)" in msg

    save_file(good, weights)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "architectures": ["BertForQuestionAnswering"]}))
    with pytest.raises(CheckpointError, match="'BertForQuestionAnswering' is not one zupu's BERT loads"):
        zupu.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "position_embedding_type": "relative_key"}))
    with pytest.raises(CheckpointError, match="relative_key"):
        zupu.from_pretrained(tmp_path)


def test_untied_decoder_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    model = create("bert", "tiny", model="BertForMaskedLM")
    save_model(model, tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state["cls.predictions.decoder.weight"] = torch.randn(99, 32)
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="cls.predictions.decoder.weight differs"):
        hf_bert.from_pretrained(tmp_path)


# -- real weights: all-MiniLM-L6-v2 ------------------------------------------------------------------------

SENTENCES = ["A man is eating food.", "A man is eating a piece of bread.", "The new movie is awesome.",
             "Über den Wolken muss die Freiheit wohl grenzenlos sein — 42 times!"]


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    from zupu.apps.embed import load_tokenizer

    return minilm_dir, zupu.from_pretrained(minilm_dir), load_tokenizer(minilm_dir)


def test_minilm_matches_transformers(minilm):
    from zupu.apps.embed import embed

    d, model, encode = minilm
    assert isinstance(model, Bert) and model.config.num_hidden_layers == 6
    ref = transformers.BertModel.from_pretrained(d).eval()
    tok = transformers.AutoTokenizer.from_pretrained(d)
    b = tok(SENTENCES, padding=True, truncation=True, max_length=256, return_tensors="pt")
    ids, mask = encode(SENTENCES)
    assert torch.equal(ids, b["input_ids"]) and torch.equal(mask, b["attention_mask"])
    with torch.no_grad():
        want = ref(**b).last_hidden_state
        got = model(ids, mask)
    real = mask.bool()
    torch.testing.assert_close(got[real], want[real], atol=1e-5, rtol=0)
    want_emb = F.normalize(mean_pool(want, b["attention_mask"]), dim=-1)
    torch.testing.assert_close(embed(model, encode, SENTENCES), want_emb, atol=1e-5, rtol=0)


def test_minilm_matches_sentence_transformers(minilm):
    st = need("sentence_transformers")
    from zupu.apps.embed import embed

    d, model, encode = minilm
    want = st.SentenceTransformer(str(d), device="cpu").encode(SENTENCES, convert_to_tensor=True)
    torch.testing.assert_close(embed(model, encode, SENTENCES), want, atol=1e-5, rtol=0)


def test_zupu_embed_command(minilm, capsys):
    assert main(["embed", "A man is eating food.", "A man is eating a piece of bread.",
                 "The new movie is awesome."]) == 0
    rows = [line.split()[:3] for line in capsys.readouterr().out.splitlines()[2:]]
    sims = torch.tensor([[float(x) for x in r] for r in rows])
    assert sims[0, 1] > 0.6 and sims[0, 2] < 0.2  # paraphrases close, unrelated far
    assert main(["embed", "--json", "hello world"]) == 0
    vec = json.loads(capsys.readouterr().out)["embedding"]
    assert len(vec) == 384 and abs(sum(v * v for v in vec) - 1) < 1e-4
