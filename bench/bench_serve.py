"""`muvera serve` under load: a real HTTP client against a real server process on localhost,
against in-process search, in one run.

A BEIR corpus (default SciFact, the embedded MiniLM's tokens from the embedding cache) is indexed
with the defaults and saved; a server process is started on it; then for 1, 8 and 32 concurrent
clients (threads, each with its own connection-per-request :class:`muvera.client.Client`), the
judged queries are sent as token vectors for ``--seconds`` each, and the same queries are run
in-process by the same number of threads. Reports QPS, p50 and p99 latency and the ratio of
served to in-process QPS (goal: >= 0.8 at 8 clients).

    python bench/bench_serve.py [--dataset scifact] [--seconds 10] [--clients 1,8,32]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_defaults import beir_corpus  # noqa: E402

from muvera import FDEConfig, MuveraIndex  # noqa: E402
from muvera.client import Client  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load(fn, queries, clients: int, seconds: float) -> dict:
    lat: list = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def worker(w: int) -> None:
        i, mine = w, []
        while time.monotonic() < stop:
            t = time.perf_counter()
            fn(queries[i % len(queries)])
            mine.append(time.perf_counter() - t)
            i += clients
        with lock:
            lat.extend(mine)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    ms = np.array(lat) * 1e3
    return {"qps": len(lat) / wall, "p50_ms": float(np.median(ms)), "p99_ms": float(np.percentile(ms, 99)),
            "requests": len(lat)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="scifact")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    toks, off, qtok, qoff, _ = beir_corpus(args.dataset, None)
    queries = [qtok[qoff[i]: qoff[i + 1]] for i in range(len(qoff) - 1)]
    tmp = Path(tempfile.mkdtemp())
    try:
        index = MuveraIndex(FDEConfig.preset("10240", dimension=toks.shape[1]))
        index.add(toks, offsets=off)
        index.save(tmp / "idx")
        index = MuveraIndex.load(tmp / "idx")
        port = _free_port()
        server = subprocess.Popen([sys.executable, "-m", "muvera.cli", "serve", str(tmp / "idx"), "--port",
                                   str(port)], stderr=subprocess.DEVNULL, cwd=tmp)
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                urllib.request.urlopen(url + "/health", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        client = Client(url)
        rows = []
        print(f"{args.dataset}: {len(off) - 1} documents, {len(queries)} queries, backend "
              f"{index.backend.active}, k = 10, default candidates; {os.cpu_count()} cores", flush=True)
        for n in (int(x) for x in args.clients.split(",")):
            local = load(lambda q: index.search([q], k=10), queries, n, args.seconds)
            served = load(lambda q: client.search([q], k=10), queries, n, args.seconds)
            row = {"clients": n, "in_process": local, "served": served, "ratio": served["qps"] / local["qps"]}
            rows.append(row)
            print(f"{n:>3} clients  in-process {local['qps']:7.1f} QPS p50 {local['p50_ms']:6.2f} p99 "
                  f"{local['p99_ms']:6.2f} ms | served {served['qps']:7.1f} QPS p50 {served['p50_ms']:6.2f} p99 "
                  f"{served['p99_ms']:6.2f} ms | served/in-process {row['ratio']:.2f}", flush=True)
        server.terminate()
        server.wait(timeout=30)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
