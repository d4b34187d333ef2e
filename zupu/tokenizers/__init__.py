"""Tokenizers: text <-> token ids, with one small API shared by every kind.

    tok = CharTokenizer.from_text(text)     # or ByteBPE.train(text, 4096), ByteBPE.gpt2(), WordPiece.train(...),
                                            # CLIPTokenizer.openai()
    ids = tok.encode("..."); text = tok.decode(ids); tok.vocab_size
    tok.save(directory)                     # directory/tokenizer.json (Hugging Face format)
    tok = load(directory_or_file)           # anything zupu saved, an HF tokenizer.json, or GPT-2 files
"""

from __future__ import annotations

from zupu.tokenizers.bpe import ByteBPE
from zupu.tokenizers.char import CharTokenizer, TokenizerError
from zupu.tokenizers.clip import CLIPTokenizer
from zupu.tokenizers.load import load
from zupu.tokenizers.wordpiece import WordPiece

__all__ = ["ByteBPE", "CLIPTokenizer", "CharTokenizer", "TokenizerError", "WordPiece", "load"]
