"""The hub under load, on loopback: download MB/s against a plain static file server, and concurrent traffic.

    python benchmarks/hub.py [--mb 128] [--repeats 5] [--clients 8] [--commits 40]

1. Download: one LFS file of --mb MiB through the hub's resolve URL (`zupu hub serve`, a separate
   process, as deployed) and the same file from `python -m http.server` (the peer), alternately,
   --repeats times each; the table reports median MB/s and the hub/peer ratio (target >= 0.8).
2. Load: --clients threads download small and LFS files concurrently for a fixed number of requests,
   then commit concurrently (--commits in all, each on top of the branch, no parent pinned); reports
   requests/s and latency percentiles, and checks every commit landed.

Writes benchmarks/RESULTS-hub.md. Absolute numbers on a shared 2-core machine are noise; ratios less so.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(port: int, proc: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("server did not start")


def get(port: int, path: str, token: str | None = None) -> tuple[int, int, float]:
    """GET and drain; (status, bytes, seconds)."""
    t = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
    resp = conn.getresponse()
    n = 0
    while block := resp.read(1 << 20):
        n += len(block)
    conn.close()
    return resp.status, n, time.perf_counter() - t


def commit(port: int, token: str, repo: str, path: str, data: bytes) -> tuple[int, float]:
    lines = [{"key": "header", "value": {"summary": f"add {path}"}},
             {"key": "file", "value": {"path": path, "content": base64.b64encode(data).decode(), "encoding": "base64"}}]
    t = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    body = b"".join(json.dumps(x).encode() + b"\n" for x in lines)
    conn.request("POST", f"/api/models/{repo}/commit/main", body=body,
                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/x-ndjson"})
    status = conn.getresponse().status
    conn.close()
    return status, time.perf_counter() - t


def percentiles(xs: list[float]) -> str:
    xs = sorted(xs)
    pick = lambda q: xs[min(len(xs) - 1, int(q * len(xs)))] * 1000  # noqa: E731
    return f"p50 {pick(0.5):.1f} ms, p95 {pick(0.95):.1f} ms, max {xs[-1] * 1000:.1f} ms"


def run_concurrently(n_threads: int, jobs: list, fn) -> tuple[list, float]:
    out, lock, it = [], threading.Lock(), iter(jobs)

    def worker():
        while True:
            with lock:
                job = next(it, None)
            if job is None:
                return
            r = fn(job)
            with lock:
                out.append(r)

    t = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--downloads", type=int, default=400)
    ap.add_argument("--commits", type=int, default=40)
    args = ap.parse_args()

    os.environ["HF_HUB_DISABLE_XET"] = "1"
    from huggingface_hub import HfApi

    work = Path(tempfile.mkdtemp(prefix="zupu-hub-bench-"))
    procs = []
    try:
        data, static = work / "hub", work / "static"
        static.mkdir()
        zupu = [sys.executable, "-m", "zupu"]
        token = subprocess.run([*zupu, "hub", "token", "create", "--data", str(data), "--user", "bench"],
                               capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        hub_port, peer_port = free_port(), free_port()
        procs.append(subprocess.Popen([*zupu, "hub", "serve", "--data", str(data), "--port", str(hub_port)]))
        procs.append(subprocess.Popen([sys.executable, "-m", "http.server", str(peer_port), "--bind", "127.0.0.1",
                                       "--directory", str(static)], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        wait_up(hub_port, procs[0])
        wait_up(peer_port, procs[1])

        blob = static / "weights.bin"
        with open(blob, "wb") as f:
            for _ in range(args.mb):
                f.write(os.urandom(1 << 20))
        api = HfApi(endpoint=f"http://127.0.0.1:{hub_port}", token=token)
        api.create_repo("bench/big")
        api.upload_file(path_or_fileobj=str(blob), path_in_repo="weights.bin", repo_id="bench/big")
        small = os.urandom(4096)
        api.upload_file(path_or_fileobj=small, path_in_repo="small.txt", repo_id="bench/big")

        hub_rates, peer_rates = [], []
        size = args.mb << 20
        for _ in range(args.repeats):
            status, n, s = get(hub_port, "/bench/big/resolve/main/weights.bin", token)
            assert status == 200 and n == size, (status, n)
            hub_rates.append(n / s / 1e6)
            status, n, s = get(peer_port, "/weights.bin")
            assert status == 200 and n == size, (status, n)
            peer_rates.append(n / s / 1e6)
        hub_mb, peer_mb = statistics.median(hub_rates), statistics.median(peer_rates)
        ratio = hub_mb / peer_mb

        paths = ["/bench/big/resolve/main/small.txt", "/api/models/bench/big", "/api/models/bench/big/tree/main"]
        jobs = [paths[i % len(paths)] for i in range(args.downloads)]
        results, secs = run_concurrently(args.clients, jobs, lambda p: get(hub_port, p, token))
        assert all(r[0] == 200 for r in results)
        read_line = (f"{args.downloads} reads (file, repo info, tree) by {args.clients} clients: "
                     f"{args.downloads / secs:.0f} req/s; {percentiles([r[2] for r in results])}")

        before = len(api.list_repo_commits("bench/big"))
        jobs = [f"c/{i:04d}.txt" for i in range(args.commits)]
        results, secs = run_concurrently(args.clients, jobs,
                                         lambda p: commit(hub_port, token, "bench/big", p, p.encode()))
        landed = len(api.list_repo_commits("bench/big")) - before
        files = {p for p in api.list_repo_files("bench/big") if p.startswith("c/")}
        assert all(r[0] == 200 for r in results) and landed == args.commits and files == set(jobs)
        commit_line = (f"{args.commits} commits by {args.clients} clients on one branch: "
                       f"{args.commits / secs:.1f} commits/s; {percentiles([r[1] for r in results])}; "
                       f"{landed}/{args.commits} landed")
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)

    table = "\n".join([
        "# Hub benchmark (loopback, shared 2-core machine)",
        "",
        f"Download of one {args.mb} MiB LFS file, median of {args.repeats}, alternating:",
        "",
        "| server | MB/s |",
        "|---|---|",
        f"| zupu hub (`/resolve/main/...`) | {hub_mb:.0f} |",
        f"| peer: `python -m http.server` | {peer_mb:.0f} |",
        f"| ratio hub/peer | {ratio:.2f} (target >= 0.8) |",
        "",
        f"Load: {read_line}.",
        "",
        f"Commits: {commit_line}.",
        "",
    ])
    out = Path(__file__).with_name("RESULTS-hub.md")
    out.write_text(table)
    print(table)


if __name__ == "__main__":
    main()
