"""Cold rescoring with and without read-ahead of the exact tier, side by side.

An index with compressed codes (``residual:2``) and a float16 exact tier (``keep_exact=True``) is
built, saved and loaded memory-mapped; every search rescores its best ``--rescore`` candidates
from the exact tier, which a cold page cache holds nowhere. With ``MuveraIndex.PREFETCH_EXACT``
the rescored rows are hinted to the OS all at once (``posix_fadvise(WILLNEED)``) before the
rerank reads them; without, they are faulted in one page run after another. The page cache is
dropped before each cold pass (``/proc/sys/vm/drop_caches``: run as root), modes alternate.

    python bench/bench_prefetch.py [--docs 40000] [--queries 100] [--rescore 30] [--rounds 2]
    python bench/bench_prefetch.py --index DIR --candidates 200    # a saved index (kept by bench_scale --keep)
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

import muvera
from muvera import MuveraIndex


def drop_caches() -> None:
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("1\n")


def timed(index: MuveraIndex, queries, rescore: int, candidates=None) -> np.ndarray:
    out = []
    for q in queries:
        t = time.perf_counter()
        index.search([q], k=10, candidates=candidates, rescore=rescore)
        out.append(time.perf_counter() - t)
    return np.array(out) * 1e3


def build(path: Path, n_docs: int, rng: np.random.Generator) -> Path:
    """A residual:2 index with a float16 exact tier over random unit-norm 128-d tokens, saved."""
    index = MuveraIndex(muvera.FDEConfig.preset("10240", dimension=128), token_codec="residual:2:k=1024",
                        keep_exact=True)
    t0 = time.perf_counter()
    for s in range(0, n_docs, 5000):
        n = min(5000, n_docs - s)
        lens = rng.integers(64, 257, n)
        tok = rng.standard_normal((int(lens.sum()), 128)).astype(np.float32)
        tok /= np.linalg.norm(tok, axis=1, keepdims=True)
        index.add(tok, lengths=lens, progress=False)
        index.wait_for_backend()
    index.save(path)
    print(f"{n_docs} documents built and saved in {time.perf_counter() - t0:.0f} s")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=40_000)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--rescore", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--index", default=None, help="use this saved index (with an exact tier) instead of building one")
    ap.add_argument("--candidates", type=int, default=None)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    root = Path(tempfile.mkdtemp(prefix="muvera-prefetch-", dir=os.environ.get("TMPDIR")))
    try:
        path = Path(args.index) if args.index else build(root / "idx", args.docs, rng)
        exact_gb = sum(p.stat().st_size for p in path.glob("exact_*")) / 1e9
        index = MuveraIndex.load(path, mmap=True)
        print(f"{len(index)} documents, exact tier {exact_gb:.2f} GB, backend {index.backend.name}")
        dim = index.config.dimension
        queries = [rng.standard_normal((32, dim)).astype(np.float32) for _ in range(args.queries)]
        res = {True: {"cold": [], "warm": []}, False: {"cold": [], "warm": []}}
        for _ in range(args.rounds):
            for mode in (False, True):
                MuveraIndex.PREFETCH_EXACT = mode
                drop_caches()
                res[mode]["cold"].append(timed(index, queries, args.rescore, args.candidates))
                res[mode]["warm"].append(timed(index, queries, args.rescore, args.candidates))
        print(f"rescore {args.rescore}, {args.queries} one-query searches per pass, {args.rounds} rounds (ms)")
        print(f"{'':<22}{'p50 cold':>10}{'p90 cold':>10}{'p50 warm':>10}")
        for mode, name in ((False, "no read-ahead"), (True, "read-ahead (default)")):
            cold = np.concatenate(res[mode]["cold"])
            warm = np.concatenate(res[mode]["warm"])
            print(f"{name:<22}{np.median(cold):>10.2f}{np.percentile(cold, 90):>10.2f}{np.median(warm):>10.2f}")
        a = np.median(np.concatenate(res[False]["cold"]))
        b = np.median(np.concatenate(res[True]["cold"]))
        print(f"cold p50 ratio (read-ahead / none): {b / a:.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
