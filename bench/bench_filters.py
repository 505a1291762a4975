"""Filtered and tombstoned search vs unfiltered search, per backend, in one run.

Since 0.2.0 filters (``filter_ids``) and deletions reach the backend as one allowed-rows bitmap
instead of re-encoding the allowed documents or asking the backend for ever more results. This
measures, on the same synthetic corpus and queries, per-query latency on one thread (p50) of:

* an unfiltered search (the baseline);
* a filter of 10 documents (reranked whole: the backend is skipped);
* a filter of 1% and of 25% of the documents (the bitmap goes to the backend);
* an index with 10% of its documents removed (tombstones, no filter);

and reports each as a ratio to the unfiltered search, plus whether every result qualifies and, for
the 10-document filter, whether the results equal brute-force Chamfer over those 10.

    python bench/bench_filters.py --docs 100000 --backends "exact;HNSW32"
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import muvera


def corpus(n_docs: int, dim: int, seed: int = 0):
    """Token sets of 8-24 tokens around 1,024 topic centres (generated in chunks, float16)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((1024, dim)).astype(np.float32)
    lengths = rng.integers(8, 25, size=n_docs)
    offsets = np.zeros(n_docs + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    tokens = np.empty((int(offsets[-1]), dim), dtype=np.float16)
    for s in range(0, n_docs, 8192):
        e = min(n_docs, s + 8192)
        n = int(offsets[e] - offsets[s])
        topic = np.repeat(rng.integers(0, 1024, size=e - s), lengths[s:e])
        x = centres[topic] + 0.5 * rng.standard_normal((n, dim)).astype(np.float32)
        tokens[offsets[s]:offsets[e]] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return tokens, offsets


def queries(tokens, offsets, n: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    out = []
    for d in rng.integers(0, len(offsets) - 1, size=n):
        t = tokens[offsets[d]:offsets[d + 1]].astype(np.float32)
        q = t[: min(8, len(t))] + 0.1 * rng.standard_normal((min(8, len(t)), t.shape[1])).astype(np.float32)
        out.append(q / np.linalg.norm(q, axis=1, keepdims=True))
    return out


def p50_ms(index, qs, **kw) -> float:
    times = []
    for q in qs:
        t0 = time.perf_counter()
        index.search([q], **kw)
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--backends", default="exact;HNSW32")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    tokens, offsets = corpus(args.docs, args.dim)
    qs = queries(tokens, offsets, args.queries)
    cfg = muvera.FDEConfig(dimension=args.dim, num_repetitions=10, num_simhash_projections=4,
                           fill_empty_partitions=True, projection_type="ams_sketch", projection_dimension=8)
    rng = np.random.default_rng(2)
    ten = rng.choice(args.docs, 10, replace=False).tolist()
    one_pct = rng.choice(args.docs, args.docs // 100, replace=False).tolist()
    quarter = rng.choice(args.docs, args.docs // 4, replace=False).tolist()
    report = {"docs": args.docs, "dim": args.dim, "fde_dim": cfg.output_dimension,
              "candidates": args.candidates, "muvera_version": muvera.__version__, "backends": {}}
    for spec in args.backends.split(";"):
        index = muvera.MuveraIndex(cfg, backend=spec, num_threads=1)
        t0 = time.perf_counter()
        index.add(tokens, offsets=offsets)
        build = time.perf_counter() - t0
        kw = dict(k=10, candidates=args.candidates)
        base = p50_ms(index, qs, **kw)
        row = {"build_s": round(build, 1), "unfiltered_ms": round(base, 3)}
        for name, allowed in (("filter_10", ten), ("filter_1pct", one_pct), ("filter_25pct", quarter)):
            ms = p50_ms(index, qs, filter_ids=allowed, **kw)
            ids, _ = index.search(qs[:20], filter_ids=allowed, **kw)
            ok = bool(set(ids[ids >= 0].tolist()) <= set(allowed))
            row[name] = {"ms": round(ms, 3), "ratio": round(ms / base, 3), "only_allowed": ok}
            if name == "filter_10":
                exact, _ = index.search_exact(qs[:20], k=10, filter_ids=allowed)
                row[name]["equals_exact"] = bool(np.array_equal(ids, exact))
        index.remove(rng.choice(args.docs, args.docs // 10, replace=False).tolist())
        ms = p50_ms(index, qs, **kw)
        row["tombstones_10pct"] = {"ms": round(ms, 3), "ratio": round(ms / base, 3)}
        report["backends"][spec] = row
        print(spec, json.dumps(row), flush=True)
        del index
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
