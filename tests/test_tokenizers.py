"""Tokenizers: round trips, saved files, typed errors, and ids equal to libraries nobody here wrote."""

from __future__ import annotations

import json
import random

import pytest

from zupu.errors import ZupuError
from zupu.tokenizers import ByteBPE, CharTokenizer, TokenizerError, load

# --- character tokenizer ----------------------------------------------------------------------------


def test_char_vocab_is_sorted_distinct_characters_english_and_chinese():
    tok = CharTokenizer.from_text("hello world")
    assert tok.chars == sorted(set("hello world")) and tok.vocab_size == 8
    assert tok.encode("hello") == [tok.chars.index(c) for c in "hello"]
    assert tok.decode(tok.encode("world hello")) == "world hello"
    zh = CharTokenizer.from_text(["床前明月光", "疑是地上霜"])
    assert zh.vocab_size == 10 and zh.decode(zh.encode("明月光")) == "明月光"
    assert zh.encode_batch(["床前", "地上"]) == [zh.encode("床前"), zh.encode("地上")]


def test_char_unknown_character_is_a_clear_error_or_unk():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(ZupuError, match=r"'z' \(U\+007A\) at position 2"):
        tok.encode("abz")
    with pytest.raises(ZupuError, match="outside"):
        tok.decode([3])
    unk = CharTokenizer.from_text("abc", unk="<unk>")
    assert unk.vocab_size == 4 and unk.encode("azb") == [0, 3, 1] and unk.decode([0, 3]) == "a<unk>"
    with pytest.raises(ZupuError, match="empty"):
        CharTokenizer.from_text("")


def test_char_save_load_round_trip(tmp_path):
    text = "First Citizen:\nBefore we proceed 床前明月光 🙂"
    tok = CharTokenizer.from_text(text)
    path = tok.save(tmp_path / "tok")
    assert path == tmp_path / "tok" / "tokenizer.json" and not list(path.parent.glob(".*tmp"))
    for where in (tmp_path / "tok", path):
        back = load(where)
        assert isinstance(back, CharTokenizer) and back.chars == tok.chars
        assert back.encode(text) == tok.encode(text)
    unk = CharTokenizer.from_text("ab", unk="?")
    assert load(unk.save(tmp_path / "unk")).encode("axb") == unk.encode("axb")


def test_char_tokenizer_json_is_read_by_hf_tokenizers(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    text = "To be, or not to be: that is the question.\n春眠不觉晓，处处闻啼鸟。"
    tok = CharTokenizer.from_text(text)
    hf = tokenizers.Tokenizer.from_file(str(tok.save(tmp_path)))
    assert hf.encode(text).ids == tok.encode(text)
    assert hf.decode(tok.encode(text)) == text


def test_load_reports_bad_paths_and_files(tmp_path):
    with pytest.raises(TokenizerError, match="no such"):
        load(tmp_path / "missing")
    with pytest.raises(TokenizerError, match="no tokenizer.json, encoder.json"):
        load(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="not a readable"):
        load(tmp_path)
    (tmp_path / "tokenizer.json").write_text(json.dumps({"vocab": {}}))
    with pytest.raises(TokenizerError, match="no 'model'"):
        load(tmp_path)


# --- byte-level BPE ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpt2_files():
    from zupu.data import fetch

    return fetch("gpt2-tokenizer")


@pytest.fixture(scope="module")
def gpt2(gpt2_files):
    return ByteBPE.from_gpt2_files(gpt2_files["encoder.json"], gpt2_files["vocab.bpe"])


@pytest.fixture(scope="module")
def tiktoken_gpt2(gpt2_files):
    """tiktoken's own gpt2 Encoding, built offline from the same two files it would download."""
    tiktoken = pytest.importorskip("tiktoken")
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    from tiktoken_ext.openai_public import r50k_pat_str

    ranks = data_gym_to_mergeable_bpe_ranks(str(gpt2_files["vocab.bpe"]), str(gpt2_files["encoder.json"]))
    return tiktoken.Encoding("gpt2", pat_str=r50k_pat_str, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": 50256})


@pytest.fixture(scope="module")
def parity_texts():
    """The whole of tiny shakespeare and one whole file of 全唐诗 (JSON, traditional script)."""
    from zupu.data import fetch

    tang = fetch("tang-poems")["quantangshi/poet.tang.0.json"]
    return {"tinyshakespeare": fetch("tinyshakespeare")["input.txt"].read_text(encoding="utf-8"),
            "poet.tang.0.json": tang.read_text(encoding="utf-8")}


def random_unicode(rng: random.Random, n: int) -> str:
    """Characters from every plane (no lone surrogates), with emoji, combining marks, CJK, spaces, digits."""
    pools = [
        lambda: chr(rng.randrange(0x20, 0x7F)),            # ASCII
        lambda: rng.choice(" \n\t\r\u00a0\u3000"),         # assorted whitespace
        lambda: chr(rng.randrange(0x4E00, 0x9FFF)),        # CJK ideographs
        lambda: chr(rng.randrange(0x1F300, 0x1FAFF)),      # emoji
        lambda: chr(rng.randrange(0x0300, 0x036F)),        # combining marks
        lambda: rng.choice("'s 're ll 12 ½ ²"),            # contraction and number edge cases
        lambda: chr(rng.choice([rng.randrange(0x80, 0xD800), rng.randrange(0xE000, 0x110000)])),  # anything
    ]
    return "".join(rng.choice(pools)() for _ in range(n))


def test_gpt2_known_ids_and_special_token(gpt2):
    assert gpt2.vocab_size == 50257 and len(gpt2.merges) == 50000
    assert gpt2.encode("Hello world") == [15496, 995]
    assert gpt2.encode("a<|endoftext|>b") == [64, 50256, 65]
    assert gpt2.decode([64, 50256, 65]) == "a<|endoftext|>b"
    assert 50256 not in gpt2.encode("<|endoftext|>", special=False)
    with pytest.raises(TokenizerError, match="not in this tokenizer's vocabulary"):
        gpt2.decode([50257])
    with pytest.raises(TokenizerError, match="lone surrogate"):
        gpt2.encode("a\ud800")


def test_gpt2_ids_equal_tiktoken_and_hf_tokenizers_on_whole_corpora(gpt2, tiktoken_gpt2, parity_texts, tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    hf = tokenizers.Tokenizer.from_file(str(gpt2.save(tmp_path)))
    for name, text in parity_texts.items():
        ids = gpt2.encode(text)
        assert ids == tiktoken_gpt2.encode_ordinary(text), name
        assert ids == hf.encode(text).ids, name
        assert gpt2.decode(ids) == text == tiktoken_gpt2.decode(ids)
    assert len(gpt2.encode(parity_texts["tinyshakespeare"])) == 338025


def test_gpt2_random_unicode_round_trips_and_matches_tiktoken(gpt2, tiktoken_gpt2):
    rng = random.Random(0)
    for _ in range(200):
        text = random_unicode(rng, rng.randrange(1, 60))
        ids = gpt2.encode(text, special=False)
        assert gpt2.decode(ids) == text
        assert ids == tiktoken_gpt2.encode_ordinary(text), repr(text)


def test_load_gpt2_directories(gpt2, gpt2_files, tmp_path):
    for vocab, merges in (("encoder.json", "vocab.bpe"), ("vocab.json", "merges.txt")):
        d = tmp_path / vocab
        d.mkdir()
        (d / vocab).write_bytes(gpt2_files["encoder.json"].read_bytes())
        (d / merges).write_bytes(gpt2_files["vocab.bpe"].read_bytes())
        assert load(d).encode("Hello world, 你好!") == gpt2.encode("Hello world, 你好!")


def naive_bpe_merges(text: str, n: int) -> list[bytes]:
    """Training written the slow obvious way: recount every pair after every merge."""
    from collections import Counter
    from itertools import pairwise

    import regex

    from zupu.tokenizers.bpe import GPT2_PATTERN

    words = Counter(tuple(bytes([b]) for b in w.encode()) for w in regex.findall(GPT2_PATTERN, text))
    merges = []
    for _ in range(n):
        pairs = Counter()
        for w, f in words.items():
            for p in pairwise(w):
                pairs[p] += f
        if not pairs:
            break
        # most frequent; ties to the pair of lower ids (a byte's id is its value, a merge's 256 + its rank)
        rank = {t: i for i, t in enumerate([bytes([b]) for b in range(256)] + merges)}
        best = min(pairs, key=lambda p: (-pairs[p], rank[p[0]], rank[p[1]]))
        if pairs[best] < 2:
            break
        merges.append(best[0] + best[1])
        new_words = Counter()
        for w, f in words.items():
            out, i = [], 0
            while i < len(w):
                if i < len(w) - 1 and (w[i], w[i + 1]) == best:
                    out.append(best[0] + best[1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new_words[tuple(out)] += f
        words = new_words
    return merges


def test_bpe_training_equals_naive_recount(parity_texts):
    from zupu.tokenizers.bpe import unicode_to_bytes

    text = parity_texts["tinyshakespeare"][:20_000] + parity_texts["poet.tang.0.json"][:5_000]
    tok = ByteBPE.train(text, vocab_size=256 + 150 + 1)
    assert [unicode_to_bytes(a + b) for a, b in tok.merges] == naive_bpe_merges(text, 150)


def test_bpe_trained_on_shakespeare_compresses_round_trips_and_hf_agrees(parity_texts, tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    text = parity_texts["tinyshakespeare"]
    train, held_out = text[:1_000_000], text[1_000_000:]
    tok = ByteBPE.train(train, vocab_size=1024)
    assert tok.vocab_size == 1024 and tok.special_tokens == {"<|endoftext|>": 1023}
    ids = tok.encode(held_out)
    assert tok.decode(ids) == held_out
    assert len(held_out.encode()) / len(ids) > 2.2  # bytes per token on text it never saw (measured 2.26)
    # HF's BpeTrainer learns the same merges from the same text (it orders equal-count ties its own way)
    ref = tokenizers.Tokenizer(tokenizers.models.BPE())
    ref.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    ref.train_from_iterator([train], tokenizers.trainers.BpeTrainer(
        vocab_size=1024, special_tokens=["<|endoftext|>"], show_progress=False,
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet()))
    ref_merges = json.loads(ref.to_str())["model"]["merges"]
    assert {tuple(m.split(" ") if isinstance(m, str) else m) for m in ref_merges} == set(tok.merges)
    assert len(ref.encode(held_out).ids) == pytest.approx(len(ids), rel=0.005)
    hf = tokenizers.Tokenizer.from_file(str(tok.save(tmp_path)))
    assert hf.encode(held_out).ids == ids
    back = load(tmp_path)
    assert isinstance(back, ByteBPE) and back.merges == tok.merges and back.encode(held_out) == ids
    rng = random.Random(1)
    for _ in range(50):
        s = random_unicode(rng, 40)
        assert tok.decode(tok.encode(s)) == s and hf.encode(s).ids == tok.encode(s)
    with pytest.raises(TokenizerError, match="smaller than the 256 byte tokens"):
        ByteBPE.train("abc", vocab_size=100)


def test_zupu_loads_what_hf_tokenizers_trains(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    hf = tokenizers.Tokenizer(tokenizers.models.BPE())
    hf.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                             initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    corpus = ["the quick brown fox jumps over the lazy dog " * 20, "床前明月光，疑是地上霜。" * 20]
    hf.train_from_iterator(corpus, trainer)
    hf.save(str(tmp_path / "tokenizer.json"))
    tok = load(tmp_path)
    assert isinstance(tok, ByteBPE)
    for s in ["the lazy fox<|endoftext|>明月", "unseen words, 🙂 ünïcödé"]:
        assert tok.encode(s) == hf.encode(s).ids and tok.decode(tok.encode(s)) == s
