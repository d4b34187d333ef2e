"""`zupu generate`: the streamed text is the model's greedy continuation, decoded; stop strings that span
tokens cut it; a BPE token that ends mid-character is never shown half; <|endoftext|> ends it."""

import torch

from zupu import create
from zupu.checkpoint import save_model
from zupu.cli import main
from zupu.sampling.text import _held_back, stream_text
from zupu.tokenizers import ByteBPE, CharTokenizer

TEXT = "the quick brown fox jumps over the lazy dog; THE QUICK BROWN FOX!\n"


def tiny_run(tmp_path):
    tok = CharTokenizer.from_text(TEXT)
    torch.manual_seed(0)
    model = create("gpt", "tiny", vocab_size=tok.vocab_size, n_positions=32).eval()
    save_model(model, tmp_path, {"recipe": "test"})
    tok.save(tmp_path)
    return model, tok


def test_cli_streams_the_greedy_continuation(tmp_path, capsys):
    model, tok = tiny_run(tmp_path)
    prompt = "the quick "
    ids = torch.tensor([tok.encode(prompt)])
    expected = tok.decode(torch.stack(list(model.generate(ids, 50, temperature=0)), 1)[0].tolist())
    assert main(["generate", str(tmp_path), "--prompt", prompt, "--max-new-tokens", "50", "--temperature", "0"]) == 0
    assert capsys.readouterr().out == prompt + expected + "\n"
    pieces = list(stream_text(model, tok, prompt, 50, temperature=0))
    assert len(pieces) > 10 and "".join(pieces) == expected  # it streams, and the pieces add up

    stop = expected[20:23]  # three tokens long: it can only be seen across steps
    cut = "".join(stream_text(model, tok, prompt, 50, temperature=0, stop=["never there", stop]))
    assert cut == expected[:expected.find(stop)]


def test_sampling_is_seeded(tmp_path):
    model, tok = tiny_run(tmp_path)
    a = "".join(stream_text(model, tok, "the", 40, temperature=1.0, top_k=10, top_p=0.9, seed=5))
    b = "".join(stream_text(model, tok, "the", 40, temperature=1.0, top_k=10, top_p=0.9, seed=5))
    c = "".join(stream_text(model, tok, "the", 40, temperature=1.0, top_k=10, top_p=0.9, seed=6))
    assert a == b and len(a) == 40 and a != c


class Scripted:
    """A stand-in language model that emits a fixed token sequence, to test the text stream alone."""

    def __init__(self, ids):
        self.ids = ids

    def generate(self, input_ids, max_new_tokens, **kw):
        for i in self.ids[:max_new_tokens]:
            yield torch.tensor([i])


def test_bpe_stream_holds_back_split_characters_and_stops_at_endoftext():
    tok = ByteBPE.gpt2()
    ids = tok.encode("鹅鹅鹅，曲项向天歌 and more<|endoftext|> after the end")
    assert len(tok.decode_bytes(ids[:1])) < 3  # the first 汉字 is split across tokens
    pieces = list(stream_text(Scripted(ids), tok, "x", 100))
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) == "鹅鹅鹅，曲项向天歌 and more"
    assert "".join(stream_text(Scripted(ids), tok, "x", 100, stop=[" and m"])) == "鹅鹅鹅，曲项向天歌"


def test_held_back_suffix():
    assert _held_back("abc\n", ["\n\n"]) == 1
    assert _held_back("abcEN", ["END", "ENDING"]) == 2
    assert _held_back("abc", ["xyz"]) == 0
