"""Load test of `zupu serve`: SmolLM2-135M-Instruct behind the OpenAI API, 1, 4 and 8 clients at once.

A live server on 127.0.0.1 (uvicorn, as `zupu serve smollm2` runs it) and the real `openai` client. Each
client sends `--requests` chat requests one after another, each a different Stanford Alpaca seed instruction,
greedy, `--max-tokens` new tokens; all clients start together. Reported per concurrency: completion tokens per
second over the whole wave, and each request's latency (sent to answered) at the median and the 95th
percentile. The server runs one generation at a time (requests queue, so answers never mix): throughput stays
that of one stream and latency grows with the queue.

    python benchmarks/serve_load.py [--clients 1 4 8] [--requests 2] [--max-tokens 24] [--threads 2]

Writes benchmarks/RESULTS-serve.md (or --out), stamped by benchmarks/results.py.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from results import Run

from zupu import data
from zupu.apps.chat import load_chat_model
from zupu.apps.serve import create_app


def serve(model, tokenizer, name: str):
    """(a running uvicorn server on a free port, its port)."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(model, tokenizer, name), host="127.0.0.1", port=port,
                                           log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server, port


def instructions() -> list[str]:
    path = data.load("alpaca-seed")["seed_tasks.jsonl"]
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r["instruction"] for r in rows if not r["instances"][0]["input"]]


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--requests", type=int, default=2, help="requests per client, one after another")
    p.add_argument("--max-tokens", type=int, default=24)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path(__file__).with_name("RESULTS-serve.md"))
    a = p.parse_args()
    run = Run(__file__)
    torch.set_num_threads(a.threads)
    import openai

    name = "smollm2"
    model, tokenizer = load_chat_model(name)
    server, port = serve(model, tokenizer, name)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=3600)
    asks = instructions()

    def ask(k: int) -> tuple[float, int]:
        t = time.perf_counter()
        r = client.chat.completions.create(model=name, messages=[{"role": "user", "content": asks[k % len(asks)]}],
                                           max_tokens=a.max_tokens, temperature=0)
        return time.perf_counter() - t, r.usage.completion_tokens

    ask(0)  # warm-up
    load0 = os.getloadavg()[0]
    rows = []
    for c in a.clients:
        def client_loop(i: int, c: int = c) -> list[tuple[float, int]]:
            return [ask(i * a.requests + j) for j in range(a.requests)]

        t = time.perf_counter()
        with ThreadPoolExecutor(c) as pool:
            results = [x for xs in pool.map(client_loop, range(c)) for x in xs]
        wall = time.perf_counter() - t
        latencies = [x[0] for x in results]
        tokens = sum(x[1] for x in results)
        rows.append((c, len(results), tokens / wall, statistics.median(latencies), percentile(latencies, 0.95)))
        print(f"{c} clients: {rows[-1][2]:.1f} tokens/s, p50 {rows[-1][3]:.1f} s, p95 {rows[-1][4]:.1f} s",
              flush=True)
    server.should_exit = True
    lines = [
        "# zupu serve under load: SmolLM2-135M-Instruct behind the OpenAI API",
        "",
        f"Live server on 127.0.0.1, the `openai` client; chat requests (Alpaca seed instructions), greedy, "
        f"max_tokens {a.max_tokens}; {a.requests} requests per client in sequence, clients concurrent; "
        f"{a.threads} torch threads; one generation at a time (queued); torch {torch.__version__}; load average "
        f"{load0:.1f} at the start, {os.getloadavg()[0]:.1f} at the end.",
        "",
        "| concurrent clients | requests | completion tokens/s | latency p50 (s) | latency p95 (s) |",
        "|---|---|---|---|---|",
        *[f"| {c} | {n} | {tps:.1f} | {p50:.1f} | {p95:.1f} |" for c, n, tps, p50, p95 in rows],
    ]
    text = "\n".join(lines)
    print(text)
    run.write(a.out, text)


if __name__ == "__main__":
    main()
