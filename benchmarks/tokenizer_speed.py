"""zupu's tokenizers vs tiktoken and Hugging Face `tokenizers`: encode throughput, side by side.

    ZUPU_DATA_MIRROR=../shared/data python benchmarks/tokenizer_speed.py [--repeats 5]

zupu's encoder runs in turn with its peers, `repeats` rounds, on the same text in this process, one
thread each (RAYON_NUM_THREADS=1 for `tokenizers`); the table reports median throughput and the
zupu/peer time ratio (absolute times on a shared 2-core machine are noise, ratios less so). zupu's
ids are checked equal to every peer's. "cold" means a fresh tokenizer whose per-word cache
is empty; "warm" the same tokenizer encoding the text again. Writes
benchmarks/RESULTS-tokenizers.md (or --out), stamped by benchmarks/results.py.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from results import Run

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # before `tokenizers` starts its thread pool
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def race(contenders: list, repeats: int) -> tuple[list, list[float]]:
    """Run the contenders in turn, `repeats` rounds; their last outputs and median times.

    A contender is a function, or a (setup, run) pair whose untimed setup() feeds run()."""
    times: list[list[float]] = [[] for _ in contenders]
    outs: list = [None] * len(contenders)
    for _ in range(repeats):
        for k, c in enumerate(contenders):
            setup, run = c if isinstance(c, tuple) else (lambda: None, lambda _, c=c: c())
            state = setup()
            t = time.perf_counter()
            outs[k] = run(state)
            times[k].append(time.perf_counter() - t)
    return outs, [statistics.median(t) for t in times]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("RESULTS-tokenizers.md"),
                    help="the RESULTS file to write")
    args = ap.parse_args()
    run = Run(__file__)
    import tiktoken
    import tokenizers
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    from tiktoken_ext.openai_public import r50k_pat_str

    from zupu.data import fetch
    from zupu.tokenizers import ByteBPE, WordPiece, load
    from zupu.weights import fetch as fetch_weights

    gpt2_files = fetch("gpt2-tokenizer")
    texts = {"tinyshakespeare": fetch("tinyshakespeare")["input.txt"].read_text(encoding="utf-8"),
             "全唐诗 poet.tang.0.json": fetch("tang-poems")["quantangshi/poet.tang.0.json"].read_text(encoding="utf-8")}
    tik = tiktoken.Encoding("gpt2", pat_str=r50k_pat_str, special_tokens={"<|endoftext|>": 50256},
                            mergeable_ranks=data_gym_to_mergeable_bpe_ranks(str(gpt2_files["vocab.bpe"]),
                                                                            str(gpt2_files["encoder.json"])))
    ours_gpt2 = ByteBPE.from_gpt2_files(gpt2_files["encoder.json"], gpt2_files["vocab.bpe"])
    hf_gpt2 = tokenizers.Tokenizer.from_str(json.dumps(ours_gpt2.to_hf_json()))
    minilm = fetch_weights("all-minilm-l6-v2")
    ours_bert: WordPiece = load(minilm)
    hf_bert = tokenizers.Tokenizer.from_file(str(minilm / "tokenizer.json"))
    hf_bert.no_padding()
    hf_bert.no_truncation()

    rows = []

    def row(label: str, text: str, ours, peers: list[tuple[str, object]]) -> None:
        mb = len(text.encode()) / 1e6
        outs, times = race([ours, *(fn for _, fn in peers)], args.repeats)
        for (peer_name, _), ids, pt in zip(peers, outs[1:], times[1:], strict=True):
            assert ids == outs[0], f"{label}: ids differ from {peer_name}"
            rows.append(f"| {label} | {mb / times[0]:.2f} | {peer_name} | {mb / pt:.2f} | {times[0] / pt:.2f} |")
            print(rows[-1], flush=True)

    def fresh_gpt2() -> ByteBPE:  # same tables, empty per-word cache
        return ByteBPE(ours_gpt2.vocab, ours_gpt2.merges, ours_gpt2.special_tokens)

    for name, text in texts.items():
        lines = text.splitlines(keepends=True)
        peers = [("tiktoken encode_ordinary", lambda text=text: tik.encode_ordinary(text)),
                 ("tokenizers encode (one string)", lambda text=text: hf_gpt2.encode(text).ids)]
        row(f"GPT-2 BPE, {name}, cold cache", text, (fresh_gpt2, lambda tok, text=text: tok.encode(text)), peers)
        ours_gpt2.encode(text)
        row(f"GPT-2 BPE, {name}, warm cache", text, lambda text=text: ours_gpt2.encode(text), peers[:1])
        row(f"GPT-2 BPE, {name}, line by line (warm)", text,
            lambda lines=lines: [i for ids in ours_gpt2.encode_batch(lines) for i in ids],
            [("tiktoken encode_ordinary, a call a line",
              lambda lines=lines: [i for line in lines for i in tik.encode_ordinary(line)]),
             ("tokenizers encode_batch", lambda lines=lines: [i for e in hf_gpt2.encode_batch(lines) for i in e.ids])])
        row(f"WordPiece MiniLM, {name}", text, lambda text=text: ours_bert.encode(text),
            [("tokenizers encode (one string)", lambda text=text: hf_bert.encode(text).ids)])
    table = ("| zupu encoder, text | zupu MB/s | peer | peer MB/s | time ratio zupu/peer |\n"
             "|---|---|---|---|---|\n" + "\n".join(rows))
    note = (f"# Tokenizers: encode throughput vs tiktoken and Hugging Face `tokenizers`\n\n"
            f"Median of {args.repeats} alternating rounds, one thread each, same text, ids checked equal. "
            "MB/s counts UTF-8 bytes of input. zupu is pure Python (the `regex` module for "
            "pre-tokenisation); tiktoken and `tokenizers` are Rust. Cold: a fresh tokenizer, every "
            "distinct word merged from bytes; warm: the per-word cache already filled, so only "
            "pre-tokenisation and cache look-ups remain. Line by line: one encode call per line, "
            "`tokenizers` building an Encoding (with offsets) per line.\n\n")
    run.write(args.out, note + table, threads=1)


if __name__ == "__main__":
    main()
