"""Tokenizers: round trips, saved files, typed errors, and ids equal to libraries nobody here wrote."""

from __future__ import annotations

import json

import pytest

from zupu.errors import ZupuError
from zupu.tokenizers import CharTokenizer, TokenizerError, load

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
    with pytest.raises(TokenizerError, match="no tokenizer.json"):
        load(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="not a readable"):
        load(tmp_path)
    (tmp_path / "tokenizer.json").write_text(json.dumps({"vocab": {}}))
    with pytest.raises(TokenizerError, match="no 'model'"):
        load(tmp_path)
