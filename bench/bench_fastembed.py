"""fastembed's Muvera postprocessor vs muvera's FDEConfig(variant="fastembed") encoder, side by side.

Same inputs for both: documents of ~180 tokens (lengths uniform in [120, 240]) and 32-token
queries, d = 128, unit-norm float32 tokens (ColBERT-like), fastembed's default configuration
(k_sim=5, dim_proj=16, r_reps=20, random_seed=42 -> 10240-d FDEs). Documents are
``process_document`` (average + fill), queries ``process_query`` (sums).

fastembed encodes one item per Python call (NumPy, float64); it has no threads of its own, so its
"all threads" rows run it in a process pool of one worker per core (items pickled to the workers,
included in the time). muvera runs its C++ kernel on 1 thread and on every core, per SIMD kernel
set. The outputs are checked to agree (max error relative to one float32 ulp) before timing. The
last row gives muvera's reference-variant encoder (FDEConfig.preset("10240"), same inputs) for
comparison.

    python bench/bench_fastembed.py [--docs 2000] [--queries 2000] [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time
from typing import Any, Callable, Dict, List, Optional

import numpy as np

import muvera

_WORKER: Any = None


def _init_worker(params: Dict[str, int]) -> None:
    global _WORKER
    from fastembed.postprocess import Muvera

    _WORKER = Muvera(**params)


def _encode_chunk(args: "tuple[List[np.ndarray], bool]") -> np.ndarray:
    items, is_document = args
    fn = _WORKER.process_document if is_document else _WORKER.process_query
    return np.stack([fn(x) for x in items])


def unit_tokens(rng: np.random.Generator, lengths: np.ndarray, d: int) -> List[np.ndarray]:
    out = []
    for n in lengths:
        x = rng.standard_normal((int(n), d)).astype(np.float32)
        out.append(x / np.linalg.norm(x, axis=1, keepdims=True))
    return out


def best_time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def max_ulps(ours: np.ndarray, theirs: np.ndarray) -> float:
    """Largest |ours - theirs| in units of theirs' float32 ulp (1 = one float32 ulp)."""
    theirs = np.asarray(theirs, np.float64)
    ulp = np.spacing(np.abs(theirs).astype(np.float32)).astype(np.float64)
    ulp = np.maximum(ulp, np.spacing(np.float32(np.abs(theirs).max())) * 2.0**-30)
    return float(np.max(np.abs(ours.astype(np.float64) - theirs) / ulp))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3, help="muvera timings: best of this many")
    ap.add_argument("--fastembed-repeats", type=int, default=1, help="fastembed timings: best of this many")
    ap.add_argument("--json", help="write the rows as JSON here")
    args = ap.parse_args()

    from fastembed.postprocess import Muvera  # pip install "muvera-toolkit[fastembed]"
    import fastembed

    d = 128
    config = muvera.FDEConfig.from_fastembed(dim=d)  # k_sim=5, dim_proj=16, r_reps=20, random_seed=42
    params = config.fastembed_params
    rng = np.random.default_rng(0)
    doc_lengths = rng.integers(120, 241, size=args.docs)
    workloads = {
        "document": (unit_tokens(rng, doc_lengths, d), True),
        "query": (unit_tokens(rng, np.full(args.queries, 32), d), False),
    }
    cores = os.cpu_count() or 1
    print(f"muvera {muvera.__version__} (active ISA {muvera.active_isa()}), fastembed {fastembed.__version__}, "
          f"numpy {np.__version__}, {cores} cores (load average {os.getloadavg()[0]:.1f} at start); config {params}")
    print(f"documents: {args.docs} x {doc_lengths.min()}-{doc_lengths.max()} tokens "
          f"(mean {doc_lengths.mean():.0f}); queries: {args.queries} x 32 tokens; d = {d}\n")

    reference = Muvera(**params)
    rows: List[Dict[str, Any]] = []
    ctx = mp.get_context("spawn")
    with ctx.Pool(cores, initializer=_init_worker, initargs=(params,)) as pool:
        for kind, (items, is_document) in workloads.items():
            n = len(items)
            tokens = int(sum(len(x) for x in items))
            fe_fn = reference.process_document if is_document else reference.process_query

            # Agreement first (fastembed float64 vs ours float32), on a sample of items.
            enc = muvera.FDEEncoder(config)
            sample = items[:: max(1, n // 50)]
            ours = enc.encode_documents(sample) if is_document else enc.encode_queries(sample)
            ulps = max(max_ulps(ours[i], fe_fn(x)) for i, x in enumerate(sample))

            def row(impl: str, threads: int, seconds: float, base: Optional[float]) -> Dict[str, Any]:
                r = {"workload": kind, "implementation": impl, "threads": threads, "items": n,
                     "seconds": seconds, "items_per_s": n / seconds, "us_per_item": 1e6 * seconds / n,
                     "tokens_per_s": tokens / seconds,
                     "x_fastembed_1": (base / seconds) if base else 1.0}
                rows.append(r)
                return r

            def fe_serial() -> None:
                for x in items:
                    fe_fn(x)

            chunks = [items[i:i + 25] for i in range(0, n, 25)]

            def fe_pool() -> None:
                pool.map(_encode_chunk, [(c, is_document) for c in chunks])

            base = best_time(fe_serial, args.fastembed_repeats)
            table = [row("fastembed Muvera", 1, base, None),
                     row(f"fastembed Muvera, {cores} processes", cores, best_time(fe_pool, args.fastembed_repeats),
                         base)]
            for isa in muvera.supported_isas():
                for threads in sorted({1, cores}):
                    e = muvera.FDEEncoder(config, num_threads=threads, isa=isa)
                    fn = (lambda e=e: e.encode_documents(items)) if is_document else (lambda e=e: e.encode_queries(items))
                    table.append(row(f"muvera variant=fastembed [{isa}]", threads, best_time(fn, args.repeats), base))
            ref_cfg = muvera.FDEConfig.preset("10240", dimension=d, seed=42)
            for threads in sorted({1, cores}):
                e = muvera.FDEEncoder(ref_cfg, num_threads=threads)
                fn = (lambda e=e: e.encode_documents(items)) if is_document else (lambda e=e: e.encode_queries(items))
                table.append(row(f"muvera variant=reference (10240 preset) [{muvera.active_isa()}]", threads,
                                 best_time(fn, args.repeats), base))

            print(f"{kind.replace('query', 'querie')}s ({n} items; muvera vs fastembed: max error {ulps:.2f} float32 ulp on {len(sample)} items):\n")
            print("| implementation | threads | items/s | µs/item | tokens/s | × fastembed (1 thread) |")
            print("|---|---|---|---|---|---|")
            for r in table:
                print(f"| {r['implementation']} | {r['threads']} | {r['items_per_s']:.0f} | {r['us_per_item']:.1f} | "
                      f"{r['tokens_per_s']:.3g} | {r['x_fastembed_1']:.1f} |")
            print()
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cores": cores, "config": params, "muvera": muvera.__version__,
                       "fastembed": fastembed.__version__, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
