"""Concurrent searches on one index vs the same searches one after another, in one run.

Each of ``--threads`` Python threads runs its share of the queries on one shared MuveraIndex;
the baseline runs all queries sequentially. Reports searches/s for both and their ratio, per
backend. BLAS/OpenMP thread pools spin-wait: without care, 8 concurrent searches each asking for
every core run slower in total than sequential ones (issue 12 measured 31/s against 91-118/s).

    python bench/bench_concurrency.py --docs 20000 --threads 8
"""

from __future__ import annotations

import argparse
import json
import threading
import time

import numpy as np

import muvera


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=20_000)
    ap.add_argument("--queries", type=int, default=400)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--backends", default="exact;HNSW32")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    d = 64
    lens = rng.integers(16, 48, size=args.docs)
    tokens = rng.standard_normal((int(lens.sum()), d)).astype(np.float32)
    qs = [rng.standard_normal((16, d)).astype(np.float32) for _ in range(args.queries)]
    cfg = muvera.FDEConfig.preset("2560", dimension=d)
    out = {}
    for spec in args.backends.split(";"):
        index = muvera.MuveraIndex(cfg, backend=spec)
        index.add(tokens, lengths=lens)
        for q in qs[:20]:
            index.search([q], k=10, candidates=100)  # warm up
        t0 = time.perf_counter()
        for q in qs:
            index.search([q], k=10, candidates=100)
        seq = len(qs) / (time.perf_counter() - t0)

        def worker(part):
            for q in part:
                index.search([q], k=10, candidates=100)

        parts = [qs[i:: args.threads] for i in range(args.threads)]
        threads = [threading.Thread(target=worker, args=(p,)) for p in parts]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        conc = len(qs) / (time.perf_counter() - t0)
        out[spec] = {"sequential_qps": round(seq, 1), f"{args.threads}_threads_qps": round(conc, 1),
                     "ratio": round(conc / seq, 2)}
        print(spec, json.dumps(out[spec]), flush=True)


if __name__ == "__main__":
    main()
