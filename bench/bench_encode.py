"""Encoding benchmark: muvera (per ISA, 1 thread and all threads) vs muvfde vs muvera.reference.

All run in one process on the same inputs: 128-token documents and 32-token queries, d = 128,
unit-norm tokens, at the paper's 10240 preset (R=20, k=5, d_proj=16, AMS, fill on documents).
muvfde is the reference C++ behind a binding (it regenerates its random matrices on every call).

    python bench/bench_encode.py [--docs 2000] [--queries 4000] [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Callable, Dict, List

import numpy as np

import muvera


def unit_tokens(rng: np.random.Generator, n_items: int, n_tokens: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n_items, n_tokens, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=2, keepdims=True)
    return x


def best_time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def muvfde_runner(cfg: muvera.FDEConfig, items: np.ndarray, is_document: bool):
    try:
        import muvfde
    except ImportError:
        return None
    ext = muvfde.muvfde_ext
    c = (ext.fixed_dimensional_encoding_config()
         .set_num_repetitions(cfg.num_repetitions)
         .set_num_simhash_projections(cfg.num_simhash_projections)
         .set_seed(cfg.seed)
         .set_projection_type(ext.projection_type.AMS_SKETCH)
         .set_projection_dimension(cfg.projection_dimension)
         .set_encoding_type(ext.encoding_type.AVERAGE if is_document else ext.encoding_type.DEFAULT_SUM))
    if is_document:
        c = c.enable_fill_empty(True)

    def run():
        for x in items:
            ext.generate_fixed_dimensional_encoding(x, c)
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--queries", type=int, default=4000)
    ap.add_argument("--baseline-items", type=int, default=200, help="items given to muvfde")
    ap.add_argument("--reference-items", type=int, default=10, help="items given to muvera.reference")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", help="write the rows as JSON here")
    args = ap.parse_args()

    d = 128
    cfg = muvera.FDEConfig.preset("10240", dimension=d, seed=42)
    rng = np.random.default_rng(0)
    workloads = {
        "document": (unit_tokens(rng, args.docs, 128, d), True),
        "query": (unit_tokens(rng, args.queries, 32, d), False),
    }
    threads_all = os.cpu_count() or 1
    rows: List[Dict[str, object]] = []
    print(f"muvera {muvera.__version__}, active ISA {muvera.active_isa()}, {threads_all} cores; "
          f"config {cfg.output_dimension}-d (R={cfg.num_repetitions}, k={cfg.num_simhash_projections}, "
          f"d_proj={cfg.projection_dimension})")
    for kind, (items, is_doc) in workloads.items():
        n_items, n_tok = items.shape[0], items.shape[1]
        base = muvfde_runner(cfg, items[: args.baseline_items], is_doc)
        base_s = None
        if base is not None:
            base_s = best_time(base, max(1, args.repeats // 2)) / args.baseline_items
        results = []
        for isa in muvera.supported_isas()[::-1]:
            for threads in sorted({1, threads_all}):
                enc = muvera.FDEEncoder(cfg, num_threads=threads, isa=isa)
                encode = enc.encode_documents if is_doc else enc.encode_queries
                sec = best_time(lambda: encode(items), args.repeats) / n_items
                results.append((f"muvera[{isa}]", threads, sec))
        ref_items = items[: args.reference_items]
        ref_fn = muvera.reference.encode_document if is_doc else muvera.reference.encode_query
        ref_s = best_time(lambda: [ref_fn(x, cfg) for x in ref_items], 1) / len(ref_items)
        results.append(("muvera.reference (NumPy)", 1, ref_s))
        if base_s is not None:
            results.append(("muvfde (reference C++)", 1, base_s))

        print(f"\n{kind}s: {n_tok} tokens x d={d}")
        print(f"{'implementation':28s} {'threads':>7s} {'us/item':>10s} {'items/s':>11s} {'tokens/s':>12s} "
              f"{'x muvfde':>9s}")
        for name, threads, sec in results:
            ratio = (base_s / sec) if base_s else float("nan")
            print(f"{name:28s} {threads:7d} {sec * 1e6:10.1f} {1 / sec:11.0f} {n_tok / sec:12.3g} {ratio:9.1f}")
            rows.append({"workload": kind, "tokens": n_tok, "implementation": name, "threads": threads,
                         "us_per_item": sec * 1e6, "items_per_s": 1 / sec, "tokens_per_s": n_tok / sec,
                         "ratio_vs_muvfde": ratio})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
