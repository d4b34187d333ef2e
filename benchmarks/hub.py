"""The hub under load, on loopback: download MB/s against a plain static file server, and concurrent traffic.

    python benchmarks/hub.py [--mb 128] [--rounds 5] [--repeats 5] [--clients 8] [--commits 40]

1. Download: one LFS file of --mb MiB through the hub's resolve URL (`zupu hub serve`, a separate
   process, as deployed) and the same file from `python -m http.server` (the peer), alternately (who
   goes first alternates too), --repeats times each in each of --rounds rounds; every round starts both
   servers afresh, because where the scheduler puts them moves a whole run's numbers on a shared machine.
   The client is `curl -o /dev/null` for both (C, so it is not what limits either server; Python's
   http.client when curl is missing). The table reports median MB/s, the hub/peer ratio (the median of the
   rounds' ratios; target >= 0.8), the median time to the first byte, and each server's CPU seconds per
   GiB sent (from /proc; it varies less with the other workers of a shared machine than the wall clock),
   with the load average before and after.
2. Load: --clients threads read small files, a 1 MiB LFS file, repo info and trees concurrently for a fixed
   number of requests, then commit concurrently (--commits in all, each on top of the branch, no parent
   pinned); reports requests/s and latency percentiles, and checks every commit landed; then a 5,000-file
   commit with a 1-file commit sent while it runs (the big one must not hold the small one up).
3. Oversized requests (issue 22), against a freshly started hub before anything else: bodies announcing
   400 MiB (anonymous and signed-in, each streaming up to 64 MiB while the hub lets it), a chunked body
   over its endpoint's limit, a 100 MiB header, 10,000 headers; the hub process's RSS before and after
   and its peak (VmHWM), from /proc, and what each request was answered.

Writes benchmarks/RESULTS-hub.md (or --out), stamped by benchmarks/results.py. Absolute numbers on a shared
2-core machine are noise; ratios less so.
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

from results import Run


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


def curl(url: str, token: str | None = None) -> tuple[int, int, float, float]:
    """GET with curl into /dev/null; (status, bytes, seconds to the first byte, seconds in all)."""
    auth = ["-H", f"Authorization: Bearer {token}"] if token else []
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download} "
                          "%{time_starttransfer} %{time_total}", *auth, url], capture_output=True, text=True).stdout
    status, n, first, total = out.split()
    return int(status), int(n), float(first), float(total)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of process `pid` and its waited-for children (the hub's git calls), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def download(port: int, path: str, token: str | None, pid: int) -> tuple[float, float, float]:
    """One download of the big file; (MB/s, seconds to the first byte, server CPU seconds)."""
    cpu = cpu_seconds(pid)
    if shutil.which("curl"):
        status, n, first, total = curl(f"http://127.0.0.1:{port}{path}", token)
    else:
        (status, n, total), first = get(port, path, token), float("nan")
    assert status == 200, status
    return n / total / 1e6, first, cpu_seconds(pid) - cpu


def commit(port: int, token: str, repo: str, path: str, data: bytes, n: int = 1) -> tuple[int, float]:
    """Commit `data` as `path` (as `path.0` ... `path.{n-1}` when n > 1); (status, seconds)."""
    files = [path] if n == 1 else [f"{path}.{i}" for i in range(n)]
    lines = [{"key": "header", "value": {"summary": f"add {path}"}},
             *({"key": "file", "value": {"path": p, "content": base64.b64encode(data).decode(), "encoding": "base64"}}
               for p in files)]
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
    return f"p50 {pick(0.5):.1f} ms, p95 {pick(0.95):.1f} ms, p99 {pick(0.99):.1f} ms, max {xs[-1] * 1000:.1f} ms"


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


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of process `pid`, in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


def send_oversized(port: int, head: bytes, body_bytes: int, chunked: bool = False) -> str:
    """Send `head` then up to `body_bytes` of body (stopping once the hub answers or closes); its status line."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        block = b"x" * (1 << 20)
        if chunked:
            block = b"%x\r\n%s\r\n" % (len(block), block)
        sent = 0
        sock.settimeout(0.5)
        try:
            while sent < body_bytes:
                sock.sendall(block)
                sent += 1 << 20
                try:
                    if sock.recv(1, socket.MSG_PEEK):
                        break
                except (TimeoutError, BlockingIOError):
                    pass
        except OSError:
            pass
        sock.settimeout(30)
        try:
            answer = sock.recv(4096)
        except OSError:
            answer = b""
    return answer.split(b"\r\n", 1)[0].decode(errors="replace") or "connection closed"


def oversized(port: int, pid: int, token: str) -> str:
    """Section 3: the oversized requests and the hub's memory around them."""
    mib, before = 1 << 20, memory(pid)
    auth = f"Authorization: Bearer {token}\r\n"
    cases = []
    for who, path, hdr in (("anonymous", "/api/repos/create", ""), ("anonymous", "/login", ""),
                           ("anonymous", "/api/models/bench/big/commit/main", ""),
                           ("signed in", "/api/repos/create", auth)):
        head = f"POST {path} HTTP/1.1\r\nHost: x\r\n{hdr}Content-Length: {400 * mib}\r\n\r\n".encode()
        cases.append((f"{who} POST {path}, Content-Length 400 MiB", send_oversized(port, head, 64 * mib)))
    head = f"POST /api/repos/create HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding: chunked\r\n\r\n".encode()
    cases.append(("signed in POST /api/repos/create, chunked, 16 MiB (limit 8 MiB)",
                  send_oversized(port, head, 16 * mib, chunked=True)))
    cases.append(("GET with one 100 MiB header", send_oversized(
        port, b"GET /api/models HTTP/1.1\r\nHost: x\r\nX-Huge: ", 100 * mib)))
    many = "".join(f"X-H{i}: v\r\n" for i in range(10_000))
    cases.append(("GET with 10,000 headers",
                  send_oversized(port, f"GET /api/models HTTP/1.1\r\nHost: x\r\n{many}\r\n".encode(), 0)))
    after = memory(pid)
    rows = "\n".join(f"| {what} | {answer} |" for what, answer in cases)
    return (f"| request | answer |\n|---|---|\n{rows}\n\nHub process RSS {before['VmRSS'] / mib:.0f} MiB before, "
            f"{after['VmRSS'] / mib:.0f} MiB after (peak {after['VmHWM'] / mib:.0f} MiB), for about "
            f"{4 * 64 + 16 + 100} MiB sent at it")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--downloads", type=int, default=400)
    ap.add_argument("--commits", type=int, default=40)
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("RESULTS-hub.md"),
                    help="the RESULTS file to write")
    args = ap.parse_args()
    run = Run(__file__)

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
        hub_cmd = [*zupu, "hub", "serve", "--data", str(data), "--port"]
        peer_cmd = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(static)]

        def start_servers() -> tuple[int, int]:
            for p in procs:
                p.terminate()
                p.wait(timeout=30)
            procs.clear()
            hub_port, peer_port = free_port(), free_port()
            procs.append(subprocess.Popen([*hub_cmd, str(hub_port)]))
            procs.append(subprocess.Popen([*peer_cmd, str(peer_port)], stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
            wait_up(hub_port, procs[0])
            wait_up(peer_port, procs[1])
            return hub_port, peer_port

        hub_port, peer_port = start_servers()
        oversized_lines = oversized(hub_port, procs[0].pid, token)

        blob = static / "weights.bin"
        with open(blob, "wb") as f:
            for _ in range(args.mb):
                f.write(os.urandom(1 << 20))
        api = HfApi(endpoint=f"http://127.0.0.1:{hub_port}", token=token)
        api.create_repo("bench/big")
        api.upload_file(path_or_fileobj=str(blob), path_in_repo="weights.bin", repo_id="bench/big")
        small = os.urandom(4096)
        api.upload_file(path_or_fileobj=small, path_in_repo="small.txt", repo_id="bench/big")

        medium = os.urandom(1 << 20)  # random bytes hold a NUL: preupload makes it an LFS file
        api.upload_file(path_or_fileobj=medium, path_in_repo="medium.bin", repo_id="bench/big")
        assert all(f.lfs for f in api.get_paths_info("bench/big", ["weights.bin", "medium.bin"]))

        # Rounds with fresh server processes: how the scheduler places them on a shared machine moves a whole
        # run's numbers, so one set of processes is one sample of that, not several.
        size, load_before = args.mb << 20, os.getloadavg()
        runs, round_ratios = {"hub": [], "peer": []}, []
        for r in range(args.rounds):
            if r:
                hub_port, peer_port = start_servers()
            servers = {"hub": (hub_port, "/bench/big/resolve/main/weights.bin", token, procs[0].pid),
                       "peer": (peer_port, "/weights.bin", None, procs[1].pid)}
            this = {"hub": [], "peer": []}
            for i in range(args.repeats):
                for name in (("hub", "peer") if i % 2 == 0 else ("peer", "hub")):
                    this[name].append(download(*servers[name]))
            round_ratios.append(statistics.median(x[0] for x in this["hub"])
                                / statistics.median(x[0] for x in this["peer"]))
            for name in runs:
                runs[name] += this[name]
        load_after = os.getloadavg()
        med = {name: [statistics.median(col) for col in zip(*r, strict=True)] for name, r in runs.items()}
        cpu_gib = {name: sum(r[2] for r in runs[name]) / (len(runs[name]) * size / (1 << 30)) for name in runs}
        ratio = statistics.median(round_ratios)
        api = HfApi(endpoint=f"http://127.0.0.1:{hub_port}", token=token)  # the last round's hub

        paths = ["/bench/big/resolve/main/small.txt", "/bench/big/resolve/main/medium.bin", "/api/models/bench/big",
                 "/api/models/bench/big/tree/main"]
        jobs = [paths[i % len(paths)] for i in range(args.downloads)]
        results, secs = run_concurrently(args.clients, jobs, lambda p: get(hub_port, p, token))
        assert all(r[0] == 200 for r in results)
        read_line = (f"{args.downloads} reads (4 kB file, 1 MiB LFS file, repo info, tree) by {args.clients} clients: "
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

        # A 5,000-file commit and, 0.1 s after it starts, a 1-file commit to the same branch.
        timing: dict[str, tuple[int, float]] = {}
        big = threading.Thread(target=lambda: timing.update(big=commit(hub_port, token, "bench/big", "many/f",
                                                                           b"x" * 100, n=5000)))
        big.start()
        time.sleep(0.1)
        timing["small"] = commit(hub_port, token, "bench/big", "one.txt", b"one")
        big.join()
        assert timing["big"][0] == timing["small"][0] == 200
        big_line = (f"a 5,000-file commit took {timing['big'][1]:.2f} s; a 1-file commit sent 0.1 s after it "
                    f"began took {timing['small'][1]:.2f} s")
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)

    client = "`curl -s -o /dev/null`" if shutil.which("curl") else "Python's http.client"
    table = "\n".join([
        "# Hub benchmark (loopback, shared 2-core machine)",
        "",
        f"Download of one {args.mb} MiB LFS file from each server, alternating, {args.repeats} times in each of "
        f"{args.rounds} rounds with freshly started servers; client {client} for both; load average (1 min) "
        f"{load_before[0]:.1f} before, {load_after[0]:.1f} after:",
        "",
        "| server | MB/s (median) | first byte (median) | server CPU per GiB |",
        "|---|---|---|---|",
        f"| zupu hub (`/resolve/main/...`) | {med['hub'][0]:.0f} | {med['hub'][1] * 1000:.1f} ms "
        f"| {cpu_gib['hub']:.2f} s |",
        f"| peer: `python -m http.server` | {med['peer'][0]:.0f} | {med['peer'][1] * 1000:.1f} ms "
        f"| {cpu_gib['peer']:.2f} s |",
        "",
        f"Ratio hub/peer: **{ratio:.2f}**, the median of the rounds' "
        f"{', '.join(f'{x:.2f}' for x in sorted(round_ratios))} (target >= 0.8).",
        "",
        f"Load: {read_line}.",
        "",
        f"Commits: {commit_line}; {big_line}.",
        "",
        "Oversized requests to a freshly started hub (issue 22):",
        "",
        f"{oversized_lines}.",
        "",
    ])
    print(table)
    run.write(args.out, table)


if __name__ == "__main__":
    main()
