"""The cost of ``auto``'s size crossings: how long the one ``add`` that crosses a threshold takes.

``auto`` trains its next backend inside the ``add`` that crosses ``PQ_AT`` (2,000 documents:
PQ codebooks + SQ8 ranges); the ``IVF_AT`` crossing (50,000: 1,024 IVF lists too) is built on a
background thread (``MuveraIndex.BACKGROUND_CROSSING_ROWS``). For each crossing this adds
``threshold - 1`` documents, then one more (the crossing add), then ``--after`` more in adds of
100 while the new backend builds, and reports: the crossing add, the slowest of the adds after
it, and the time until the new backend is in (``wait_for_backend``), next to the exact backend's
time for the same adds, in one run. ``--inline`` builds the IVF crossing inside the add as before
(the baseline).

    python bench/bench_crossing.py [--ivf] [--inline] [--after 2000] [--tokens 64] [--dim 128] [--preset 10240]

Documents are random unit tokens streamed from a seed (never all in memory for the IVF case).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import muvera
from muvera.backends.auto import IVF_AT, PQ_AT


def batches(n: int, tokens: int, dim: int, seed: int, step: int = 2000):
    rng = np.random.default_rng(seed)
    for s in range(0, n, step):
        m = min(step, n - s)
        x = rng.standard_normal((m * tokens, dim)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        yield x, np.full(m, tokens, dtype=np.int64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ivf", action="store_true", help="also the 50,000-document IVF crossing")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--preset", default="10240")
    ap.add_argument("--inline", action="store_true", help="the IVF crossing inside the add, as before 0.7.0")
    ap.add_argument("--after", type=int, default=2000, help="documents added (100 at a time) after the crossing")
    args = ap.parse_args()
    if args.inline:
        muvera.MuveraIndex.BACKGROUND_CROSSING_ROWS = None
    cfg = muvera.FDEConfig.preset(args.preset, dimension=args.dim)
    out = []
    for threshold in [PQ_AT] + ([IVF_AT] if args.ivf else []):
        for backend in ("exact", "auto"):
            index = muvera.MuveraIndex(cfg, backend=backend)
            t0 = time.perf_counter()
            for tok, lens in batches(threshold - 1, args.tokens, args.dim, seed=threshold):
                index.add(tok, lengths=lens)
            before = time.perf_counter() - t0
            tok, lens = next(batches(1, args.tokens, args.dim, seed=7))
            t0 = time.perf_counter()
            index.add(tok, lengths=lens)
            crossing = time.perf_counter() - t0
            slowest = 0.0
            for tok, lens in batches(args.after, args.tokens, args.dim, seed=threshold + 1, step=100):
                t1 = time.perf_counter()
                index.add(tok, lengths=lens)
                slowest = max(slowest, time.perf_counter() - t1)
            index.wait_for_backend()
            ready = time.perf_counter() - t0
            row = {"threshold": threshold, "backend": backend, "active": getattr(index.backend, "active", backend),
                   "first_adds_s": round(before, 2), "crossing_add_s": round(crossing, 2),
                   "slowest_add_after_s": round(slowest, 2), "crossing_to_ready_s": round(ready, 2)}
            out.append(row)
            print(f"{threshold:>6,} docs  {backend:5s} -> {row['active']:34s} the first {threshold - 1:,}: "
                  f"{before:6.2f} s   the crossing add (1 document): {crossing:6.2f} s   slowest of the next "
                  f"{args.after:,} in adds of 100: {slowest:6.2f} s   crossing to the new backend in: {ready:6.2f} s",
                  flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
