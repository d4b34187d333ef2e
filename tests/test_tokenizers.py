"""Tokenizers: round trips, saved files, typed errors, and ids equal to libraries nobody here wrote."""

from __future__ import annotations

import json
import random

import pytest
from reference import need

from zupu.errors import ZupuError
from zupu.tokenizers import ByteBPE, CharTokenizer, TokenizerError, WordPiece, load

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
    tokenizers = need("tokenizers")
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
    tiktoken = need("tiktoken")
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


def random_unicode(rng: random.Random, n: int, stable: bool = False) -> str:
    """Characters from every plane (no lone surrogates), with emoji, combining marks, CJK, spaces, digits.

    `stable=True` keeps only characters whose Unicode category is the same in Unicode 3.2 as in
    Python's tables (or that are unassigned in both), for rules that depend on character classes
    where libraries carry different Unicode versions."""
    pools = [
        lambda: chr(rng.randrange(0x20, 0x7F)),            # ASCII
        lambda: rng.choice(" \n\t\r\u00a0\u3000"),         # assorted whitespace
        lambda: chr(rng.randrange(0x4E00, 0x9FFF)),        # CJK ideographs
        lambda: chr(rng.randrange(0x1F300, 0x1FAFF)),      # emoji
        lambda: chr(rng.randrange(0x0300, 0x036F)),        # combining marks
        lambda: rng.choice("'s 're ll 12 ½ ²"),            # contraction and number edge cases
        lambda: chr(rng.choice([rng.randrange(0x80, 0xD800), rng.randrange(0xE000, 0x110000)])),  # anything
    ]
    if not stable:
        return "".join(rng.choice(pools)() for _ in range(n))
    import unicodedata

    out = []
    while len(out) < n:
        c = rng.choice(pools)()
        if unicodedata.ucd_3_2_0.category(c) == unicodedata.category(c):
            out.append(c)
    return "".join(out)


def test_gpt2_known_ids_and_special_token(gpt2):
    assert gpt2.vocab_size == 50257 and len(gpt2.merges) == 50000
    assert gpt2.encode("Hello world") == [15496, 995]
    assert gpt2.encode("a<|endoftext|>b") == [64, 50256, 65]
    assert gpt2.decode([64, 50256, 65]) == "a<|endoftext|>b"
    assert 50256 not in gpt2.encode("<|endoftext|>", special=False)
    with pytest.raises(TokenizerError, match="not in this tokenizer's vocabulary"):
        gpt2.decode([50257])
    with pytest.raises(TokenizerError, match="at position 15, a lone surrogate"):
        gpt2.encode("a<|endoftext|>b\ud800")


def test_gpt2_ids_equal_tiktoken_and_hf_tokenizers_on_whole_corpora(gpt2, tiktoken_gpt2, parity_texts, tmp_path):
    tokenizers = need("tokenizers")
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
    tokenizers = need("tokenizers")
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
    tokenizers = need("tokenizers")
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


# --- WordPiece ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm_hf(minilm_dir):
    tokenizers = need("tokenizers")
    hf = tokenizers.Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))
    hf.no_padding()
    hf.no_truncation()
    return hf


def test_wordpiece_minilm_ids_equal_hf_on_whole_corpora(minilm_dir, minilm_hf, parity_texts):
    tokenizers = need("tokenizers")
    from_json, from_vocab = load(minilm_dir), WordPiece.from_vocab_txt(minilm_dir / "vocab.txt")
    assert isinstance(from_json, WordPiece) and from_json.vocab_size == 30522 == from_vocab.vocab_size
    for name, text in parity_texts.items():
        ids = from_json.encode(text)
        assert ids == minilm_hf.encode(text).ids, name
        assert from_vocab.encode(text[:100_000]) == from_json.encode(text[:100_000]), name  # vocab.txt alone
    bert = tokenizers.BertWordPieceTokenizer(str(minilm_dir / "vocab.txt"), lowercase=True)
    sample = parity_texts["tinyshakespeare"][:50_000] + parity_texts["poet.tang.0.json"][:20_000]
    assert from_vocab.encode(sample) == bert.encode(sample).ids


def test_wordpiece_basic_tokenisation_rules(minilm_dir, minilm_hf):
    tok = load(minilm_dir)
    assert tok.normalize("Héllo\tWÖRLD\x00\u200b") == "hello world"
    assert tok.pre_tokenize(tok.normalize("don't 床前明月光!")) == ["don", "'", "t", "床", "前", "明", "月", "光", "!"]
    pieces = [tok.id_to_token[i] for i in tok.encode("unaffable tokenization", special=False)]
    assert pieces == ["una", "##ffa", "##ble", "token", "##ization"]
    assert tok.encode("a" * 101, special=False) == [tok.unk_id]  # longer than max_input_chars_per_word
    assert tok.encode("a" * 100, special=False) == minilm_hf.encode("a" * 100, add_special_tokens=False).ids
    assert tok.encode("the [MASK] sat", special=False) == [1996, 103, 2938]
    rng = random.Random(2)
    for _ in range(200):
        text = random_unicode(rng, rng.randrange(1, 60), stable=True)
        assert tok.encode(text) == minilm_hf.encode(text).ids, repr(text)
        ids = minilm_hf.encode(text).ids
        assert tok.decode(ids) == minilm_hf.decode(ids), repr(text)
    with pytest.raises(TokenizerError, match="not in this tokenizer's vocabulary"):
        tok.decode([30522])


def test_wordpiece_pairs_padding_truncation_match_hf(minilm_dir, minilm_hf):
    tok = load(minilm_dir)
    a = ["The cat sat on the mat.", "Hi", "床前明月光，疑是地上霜。 A long long long long second sentence here"]
    b = ["Where did it sit?", "a much longer second text than the first one", "short"]
    for max_length in (None, 12, 9):
        batch = tok(a, b, max_length=max_length)
        ref = minilm_hf
        if max_length is None:
            ref.no_truncation()
        else:
            ref.enable_truncation(max_length)
        ref.enable_padding(pad_id=0, pad_token="[PAD]")
        try:
            enc = ref.encode_batch(list(zip(a, b, strict=True)))
        finally:
            ref.no_padding()
            ref.no_truncation()
        assert batch["input_ids"].tolist() == [e.ids for e in enc], max_length
        assert batch["token_type_ids"].tolist() == [e.type_ids for e in enc]
        assert batch["attention_mask"].tolist() == [e.attention_mask for e in enc]
    single = tok(a)
    assert single["input_ids"][1].tolist()[:3] == [101, 7632, 102] and single["token_type_ids"].sum() == 0
    assert tok.encode(a[0], b[0]) == minilm_hf.encode(a[0], b[0]).ids
    with pytest.raises(TokenizerError, match="one pair per text"):
        tok(a, b[:2])


def test_wordpiece_training_scores_by_likelihood_and_round_trips_through_hf(parity_texts, tmp_path):
    tokenizers = need("tokenizers")
    # "ab" is the most frequent pair, but x and ##q only ever occur together: WordPiece merges "xq" first
    corpus = " ".join(["ab"] * 10 + ["a"] * 90 + ["b"] * 90 + ["xq"] * 3)
    tiny = WordPiece.train(corpus, vocab_size=11, min_frequency=1)
    assert list(tiny.vocab)[-1] == "xq"
    text = parity_texts["tinyshakespeare"]
    tok = WordPiece.train(text[:300_000], vocab_size=800)
    assert tok.vocab_size == 800
    held_out = text[1_000_000:]
    ids = tok.encode(held_out, special=False)
    assert tok.unk_id not in tok.encode(text[:300_000], special=False)
    n_chars = sum(map(len, tok.pre_tokenize(tok.normalize(held_out))))  # one token a character before training
    assert len(ids) < 0.9 * n_chars, len(ids) / n_chars
    hf = tokenizers.Tokenizer.from_file(str(tok.save(tmp_path)))
    assert hf.encode(held_out).ids == tok.encode(held_out)
    assert hf.decode(ids[:500]) == tok.decode(ids[:500])
    back = load(tmp_path)
    assert isinstance(back, WordPiece) and back.vocab == tok.vocab and back.encode(held_out) == tok.encode(held_out)
    (tmp_path / "tokenizer.json").unlink()  # vocab.txt alone loads too
    assert load(tmp_path).encode(held_out[:5000]) == tok.encode(held_out[:5000])


def test_zupu_loads_what_hf_bert_wordpiece_trains_and_refuses_unknown_shapes(tmp_path):
    tokenizers = need("tokenizers")
    hf = tokenizers.BertWordPieceTokenizer(lowercase=True)
    hf.train_from_iterator(["The quick brown fox jumps over the lazy dog. 床前明月光，疑是地上霜。"] * 20,
                           vocab_size=120, min_frequency=1)
    hf.save(str(tmp_path / "tokenizer.json"))
    tok = load(tmp_path / "tokenizer.json")
    for a, b in [("The lazy dog jumps!", "月光"), ("Unseen WORDS, Ünïcödé", "x y z")]:
        assert tok.encode(a, b) == hf.encode(a, b).ids
    spec = json.loads((tmp_path / "tokenizer.json").read_text())
    spec["pre_tokenizer"] = {"type": "Whitespace"}
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(TokenizerError, match="pre-tokenizer Whitespace .* is not supported"):
        load(tmp_path)
