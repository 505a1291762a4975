"""The Chamfer rerank by query length, on every ISA this CPU runs: the kernel alone.

200 candidate documents of 240 float16 tokens (d = 128), drawn at random from 4,000 so that most
are not in cache, as in a search; queries of 1-32 tokens. For each ISA and query length: the
median over repeats of one rerank (``_core.chamfer_scores``, one thread). Run it under
``bench/bench_before_after.py`` to compare two builds side by side:

    python bench/bench_short_queries.py [--repeats 30] [--isas avx512,avx2]
    python bench/bench_before_after.py --baseline <package> --rounds 3 -- bench/bench_short_queries.py

Prints a table and, last, a JSON line ``{"<isa>": {"q<n>_ms": ...}}``.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import muvera
from muvera import _core

LENGTHS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 14, 16, 20, 24, 32)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=4000)
    ap.add_argument("--doc-tokens", type=int, default=240)
    ap.add_argument("--candidates", type=int, default=200)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--isas", default=None, help="comma-separated; default every ISA this CPU runs")
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    n, m, d = args.docs, args.doc_tokens, args.dim
    store = np.empty((n * m, d), dtype=np.float16)
    for i in range(0, n * m, 1 << 16):  # in slices: no float32 copy of the whole store
        store[i:i + (1 << 16)] = rng.standard_normal((min(1 << 16, n * m - i), d), dtype=np.float32)
    offsets = np.arange(0, n * m + 1, m, dtype=np.int64)
    queries = rng.standard_normal((max(LENGTHS), d)).astype(np.float32)
    isas = args.isas.split(",") if args.isas else muvera.supported_isas()
    out = {}
    for isa in isas:
        row = {}
        for nq in LENGTHS:
            q = np.ascontiguousarray(queries[:nq])
            qo = np.array([0, nq], dtype=np.int64)
            times = []
            for _ in range(args.repeats):
                cand = rng.choice(n, size=(1, args.candidates), replace=False).astype(np.int64)
                t = time.perf_counter()
                _core.chamfer_scores(q, qo, store, offsets, cand, 1, isa)
                times.append((time.perf_counter() - t) * 1e3)
            row[f"q{nq}_ms"] = float(np.median(times))
        out[isa] = row
        print(f"{isa:<12}" + "  ".join(f"{k[1:-3]:>2}:{v:5.2f}" for k, v in row.items()), flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
