"""Per-query cost against corpus size: does a search cost O(candidates + allowed rows)?

Indexes of 10k, 100k and 1M small documents (4 tokens of 16 dims: the per-document arrays --
offsets, ids, the live bitmap -- are as long as at any token count, the token work is tiny), with
1% of the documents removed (tombstones), searched on one thread:

* ``filter50``: ``filter_ids`` of 50 documents, 100 candidates (the issue's case);
* ``where50``: a metadata condition matching 50 documents;
* ``tombstones``: no filter, 100 candidates from the backend, the live bitmap in play.

For each case, p50 per query at each size and the ratio to the 10k time (goal: the filtered
search at 1M within 2x of 10k). Backend ``exact`` (the default below 2,000 documents, and the
case the issue measured) and, for the tombstone case, ``faiss:Flat``'s selector path too.

    python bench/bench_query_cost.py [--sizes 10000,100000,1000000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
from threadpoolctl import threadpool_limits

import muvera

CFG = muvera.FDEConfig(dimension=16, num_repetitions=2, num_simhash_projections=3)
TOK = 4


def build(n: int, backend: str, with_meta: bool) -> muvera.MuveraIndex:
    rng = np.random.default_rng(0)
    index = muvera.MuveraIndex(CFG, backend=backend)
    step = 200_000
    for s in range(0, n, step):
        m = min(step, n - s)
        toks = rng.standard_normal((m * TOK, 16)).astype(np.float32)
        meta = [{"bucket": int(i % (n // 50))} for i in range(s, s + m)] if with_meta else None
        index.add(toks, lengths=np.full(m, TOK), metadata=meta)
        index.wait_for_backend()
    index.remove(list(range(0, n, 100)))
    return index


def p50(fn, reps: int = 200) -> float:
    fn()
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return float(np.median(out) * 1e3)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",")]
    rng = np.random.default_rng(1)
    q = [rng.standard_normal((8, 16)).astype(np.float32)]
    rows: List[Dict[str, Any]] = []
    with threadpool_limits(1):
        for backend in ("exact", "faiss:Flat"):
            for n in sizes:
                t = time.perf_counter()
                index = build(n, backend, with_meta=backend == "exact")
                index.num_threads = 1
                built = time.perf_counter() - t
                allowed = list(range(1, n, n // 50))[:50]
                cases = {"tombstones": lambda: index.search(q, k=10, candidates=100)}
                if backend == "exact":
                    cases["filter50"] = lambda: index.search(q, k=10, candidates=100, filter_ids=allowed)
                    cases["where50"] = lambda: index.search(q, k=10, candidates=100, where="bucket = ?",
                                                            where_params=(7,))
                for case, fn in cases.items():
                    ms = p50(fn, 50 if case == "tombstones" and backend == "exact" and n >= 10**6 else 200)
                    rows.append({"backend": backend, "documents": n, "case": case, "p50_ms": ms, "build_s": built})
                del index
    base = {(r["backend"], r["case"]): r["p50_ms"] for r in rows if r["documents"] == sizes[0]}
    print(f"{'backend':<12} {'case':<11} " + " ".join(f"{n:>12,}" for n in sizes) + "   ratio largest/smallest")
    for backend, case in dict.fromkeys((r["backend"], r["case"]) for r in rows):
        ms = [r["p50_ms"] for r in rows if r["backend"] == backend and r["case"] == case]
        print(f"{backend:<12} {case:<11} " + " ".join(f"{m:>9.3f} ms" for m in ms)
              + f"   {ms[-1] / base[(backend, case)]:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
