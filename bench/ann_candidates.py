"""Candidate stage alone: faiss IVF-PQ fast-scan vs HNSW over a count-sketched FDE vs ScaNN vs
DiskANN, on the same FDEs.

ScaNN and DiskANN run in their own virtual environments (``bench/setup_ann_env.sh``; they are
evaluation baselines, not dependencies of muvera, and their numpy pins conflict). Input is
what ``bench/bench_scale.py --dump-fdes DIR`` writes: ``doc_fdes.npy`` (N, D) float32,
``query_fdes.npy``, ``gt.npy`` (the exact-Chamfer top-10 rows of each query). For each library and
setting it reports build seconds, bytes per document, single-thread latency per query (p50) and
candidate recall: the fraction of the true top-10 among the first C candidates (C = 100, 200,
400), which bounds what the Chamfer rerank can recover.

    python bench/ann_candidates.py /tmp/fdes --libs faiss faiss-hnsw
    ~/.cache/muvera/ann-venv-scann/bin/python bench/ann_candidates.py /tmp/fdes --libs scann
    ~/.cache/muvera/ann-venv-diskann/bin/python bench/ann_candidates.py /tmp/fdes --libs diskann
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

import numpy as np

CANDS = (100, 200, 400)


def recall(ids: np.ndarray, gt: np.ndarray) -> Dict[str, float]:
    return {f"cand_recall@{c}": float(np.mean([len(set(ids[i, :c]) & set(gt[i])) / gt.shape[1]
                                                for i in range(len(gt))])) for c in CANDS}


def timed(search: Callable[[np.ndarray], np.ndarray], q: np.ndarray) -> Dict[str, Any]:
    search(q[:1])  # warm-up
    lat, ids = [], []
    for i in range(len(q)):
        t = time.perf_counter()
        ids.append(search(q[i: i + 1])[0])
        lat.append((time.perf_counter() - t) * 1000)
    width = max(len(x) for x in ids)
    out = np.full((len(q), width), -1, dtype=np.int64)
    for i, x in enumerate(ids):
        out[i, : len(x)] = x
    return {"p50_ms": float(np.median(lat)), "p95_ms": float(np.percentile(lat, 95)), "ids": out}


def run_faiss(x, q, gt, factory: str, nprobes: List[int]) -> List[Dict[str, Any]]:
    import faiss

    faiss.omp_set_num_threads(2)
    t = time.perf_counter()
    index = faiss.index_factory(x.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(0)
    index.train(x[np.sort(rng.choice(len(x), min(len(x), 40_000), replace=False))])
    index.add(x)
    build = time.perf_counter() - t
    size = index.sa_code_size() * len(x)
    faiss.omp_set_num_threads(1)
    rows = []
    for npb in nprobes:
        faiss.extract_index_ivf(index).nprobe = npb
        r = timed(lambda v: index.search(v, max(CANDS))[1], q)
        rows.append({"lib": "faiss", "setting": f"{factory} nprobe={npb}", "build_s": build,
                     "bytes_per_doc": size / len(x), "p50_ms": r["p50_ms"], "p95_ms": r["p95_ms"],
                     **recall(r["ids"], gt)})
    return rows


def count_sketch(v: np.ndarray, dim: int, seed: int = 7) -> np.ndarray:
    """The FDE's optional final projection (a count sketch: each input dimension added with a
    random sign into one random output dimension), applied here to finished FDEs."""
    rng = np.random.default_rng(seed)
    bucket = rng.integers(0, dim, size=v.shape[1])
    sign = rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=v.shape[1])
    out = np.zeros((len(v), dim), dtype=np.float32)
    for s in range(0, len(v), 8192):
        blk = v[s: s + 8192] * sign
        for j in range(0, v.shape[1], 1024):  # sum columns into buckets, in slabs
            cols = slice(j, j + 1024)
            m = np.zeros((min(1024, v.shape[1] - j), dim), dtype=np.float32)
            m[np.arange(m.shape[0]), bucket[cols]] = 1.0
            out[s: s + 8192] += blk[:, cols] @ m
    return out


def run_hnsw(x, q, gt, dim: int, efs: List[int]) -> List[Dict[str, Any]]:
    import faiss

    faiss.omp_set_num_threads(2)
    t = time.perf_counter()
    xs, qs = count_sketch(x, dim), count_sketch(q, dim)
    index = faiss.index_factory(dim, "HNSW32", faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 80
    index.add(xs)
    build = time.perf_counter() - t
    faiss.omp_set_num_threads(1)
    rows = []
    for ef in efs:
        index.hnsw.efSearch = ef
        r = timed(lambda v: index.search(v, max(CANDS))[1], qs)
        rows.append({"lib": "faiss-hnsw", "setting": f"count-sketch {dim} d, HNSW32 efSearch={ef}",
                     "build_s": build, "bytes_per_doc": dim * 4 + 32 * 2 * 4, "p50_ms": r["p50_ms"],
                     "p95_ms": r["p95_ms"], **recall(r["ids"], gt)})
    return rows


def run_scann(x, q, gt, leaves: int, searched: List[int]) -> List[Dict[str, Any]]:
    import scann

    t = time.perf_counter()
    builder = scann.scann_ops_pybind.builder(x, max(CANDS), "dot_product")
    searcher = (builder.tree(num_leaves=leaves, num_leaves_to_search=searched[0], training_sample_size=40_000)
                .score_ah(8, anisotropic_quantization_threshold=0.2)
                .build())
    build = time.perf_counter() - t
    rows = []
    for s in searched:
        r = timed(lambda v: searcher.search_batched(v, final_num_neighbors=max(CANDS),
                                                    leaves_to_search=s)[0], q)
        rows.append({"lib": "scann", "setting": f"tree {leaves} leaves, search {s}, AH 8 dims/4-bit",
                     "build_s": build, "bytes_per_doc": x.shape[1] / 8 / 2, "p50_ms": r["p50_ms"],
                     "p95_ms": r["p95_ms"], **recall(r["ids"], gt)})
    return rows


def run_diskann(x, q, gt, degree: int, complexities: List[int], pq_bytes: int) -> List[Dict[str, Any]]:
    import diskannpy as dap

    work = Path(tempfile.mkdtemp(prefix="diskann-"))
    try:
        t = time.perf_counter()
        dap.build_disk_index(data=x, distance_metric="mips", index_directory=str(work),
                             complexity=64, graph_degree=degree, search_memory_maximum=4.0,
                             build_memory_maximum=16.0, num_threads=2, pq_disk_bytes=0)
        build = time.perf_counter() - t
        index = dap.StaticDiskIndex(index_directory=str(work), num_threads=1, num_nodes_to_cache=10_000)
        disk = sum(p.stat().st_size for p in work.iterdir())
        rows = []
        for L in complexities:
            r = timed(lambda v: index.search(v[0], k_neighbors=max(CANDS), complexity=max(L, max(CANDS)),
                                             beam_width=2)[0][None, :], q)
            rows.append({"lib": "diskann", "setting": f"R={degree} L={max(L, max(CANDS))} (disk index)",
                         "build_s": build, "bytes_per_doc": disk / len(x), "p50_ms": r["p50_ms"],
                         "p95_ms": r["p95_ms"], **recall(r["ids"], gt)})
        return rows
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("--libs", nargs="+", default=["faiss", "faiss-hnsw"],
                    help="faiss, faiss-hnsw (count sketch to 2048 d + HNSW32), scann, diskann")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    d = Path(args.dir)
    x = np.load(d / "doc_fdes.npy", mmap_mode="r")
    x = np.ascontiguousarray(x, dtype=np.float32)
    q = np.ascontiguousarray(np.load(d / "query_fdes.npy"), dtype=np.float32)
    gt = np.load(d / "gt.npy")[:, :10]
    rows: List[Dict[str, Any]] = []
    for lib in args.libs:
        t = time.perf_counter()
        try:
            if lib == "faiss":
                rows += run_faiss(x, q, gt, f"IVF1024,PQ{x.shape[1] // 8}x4fs", [16, 32, 64])
            elif lib == "faiss-hnsw":
                rows += run_hnsw(x, q, gt, 2048, [400, 800])
            elif lib == "scann":
                rows += run_scann(x, q, gt, 1000, [30, 60])
            elif lib == "diskann":
                rows += run_diskann(x, q, gt, 64, [200, 400], 0)
        except Exception as exc:  # report and go on: one library failing must not hide the others
            rows.append({"lib": lib, "error": f"{type(exc).__name__}: {exc}"})
        print(f"{lib}: {time.perf_counter() - t:.0f} s", flush=True)
        for r in rows:
            if r["lib"] == lib:
                print(json.dumps(r), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
