"""Search benchmark: MuveraIndex (per backend and candidate count) vs brute force vs PLAID.

Everything runs in one process on the same token vectors, and every figure is measured here:

* ``scifact``: the BEIR SciFact corpus through the embedded MiniLM model ([CLS]/[SEP] dropped,
  L2-normalised, a fixed PCA to 128 d, re-normalised), cached outside the repository;
* ``synthetic``: clustered random token sets (64-256 tokens, d = 128) at scale.

For each backend and candidate count: Recall@1/@10/@100 against exact Chamfer (``search_exact``),
latency per query on one thread (p50, p95), QPS on all threads, build time, bytes per document.
Baselines: brute-force exact Chamfer (our C++ kernel; plain NumPy; torch) and colbert-ai's PLAID
engine on the same vectors (when colbert-ai is installed).

    python bench/bench_search.py scifact [--backends "exact;HNSW32;PQ1280x8"] [--json out.json]
    python bench/bench_search.py synthetic --docs 100000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Dict, Optional

import numpy as np

import muvera
from muvera.eval.bench import per_query_latency_ms, recall_against

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


# ---- data -----------------------------------------------------------------------------------

def scifact_tokens(data_dir: Path, dim: int, max_queries: Optional[int]):
    from muvera.eval.embed import embed_beir, fit_pca, project

    emb = embed_beir(data_dir / "scifact", max_queries=max_queries)
    pca = fit_pca(emb.doc_tokens, dim)
    return (project(emb.doc_tokens, pca), emb.doc_offsets, project(emb.query_tokens, pca), emb.query_offsets)


def synthetic_tokens(n_docs: int, n_queries: int, dim: int, seed: int = 0):
    """Clustered token sets: each document draws its tokens around a few of 4096 topic centres;
    a query is 32 noisy tokens taken from one random document (so top-1 is well defined while
    ranks 2-10 hold near-ties, as in real collections)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((4096, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    lengths = rng.integers(64, 257, size=n_docs)
    offsets = np.zeros(n_docs + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    tokens = np.empty((offsets[-1], dim), dtype=np.float16)
    chunk = 2048
    for s in range(0, n_docs, chunk):
        e = min(n_docs, s + chunk)
        n_tok = int(offsets[e] - offsets[s])
        doc_of_token = np.repeat(np.arange(e - s), lengths[s:e])
        topics = rng.integers(0, len(centres), size=(e - s, 4))
        pick = topics[doc_of_token, rng.integers(0, 4, size=n_tok)]
        x = centres[pick] + 0.6 * rng.standard_normal((n_tok, dim)).astype(np.float32) / np.sqrt(dim) * 4
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        tokens[offsets[s]:offsets[e]] = x
    src = rng.integers(0, n_docs, size=n_queries)
    q = []
    for d in src:
        doc = tokens[offsets[d]:offsets[d + 1]].astype(np.float32)
        pick = doc[rng.choice(len(doc), size=32, replace=False)]
        pick = pick + 0.3 * rng.standard_normal(pick.shape).astype(np.float32) / np.sqrt(dim) * 4
        q.append(pick / np.linalg.norm(pick, axis=1, keepdims=True))
    qtok = np.concatenate(q).astype(np.float32)
    qoff = np.arange(n_queries + 1, dtype=np.int64) * 32
    return tokens, offsets, qtok, qoff


# ---- measurement helpers --------------------------------------------------------------------

@contextlib.contextmanager
def single_thread():
    """BLAS and faiss (OpenMP) limited to one thread inside the block."""
    from threadpoolctl import threadpool_limits

    faiss_threads = None
    try:
        import faiss

        faiss_threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
    except ImportError:
        pass
    with threadpool_limits(1):
        yield
    if faiss_threads is not None:
        import faiss

        faiss.omp_set_num_threads(faiss_threads)


def per_query_latency(fn, qtok: np.ndarray, qoff: np.ndarray, n: int) -> np.ndarray:
    n = min(n, len(qoff) - 1)
    return per_query_latency_ms(fn, qtok, qoff[: n + 1])


def numpy_chamfer_topk(q: np.ndarray, tokens32: np.ndarray, starts: np.ndarray, k: int):
    sims = q @ tokens32.T                                   # (nq_tok, total_tokens)
    per_doc = np.maximum.reduceat(sims, starts, axis=1)     # (nq_tok, n_docs)
    scores = per_doc.sum(axis=0)
    top = np.argpartition(-scores, k)[:k]
    return top[np.argsort(-scores[top])]


def torch_chamfer_topk(q, tokens_t, lengths_t, k: int):
    import torch

    sims = torch.from_numpy(q) @ tokens_t.T
    per_doc = torch.segment_reduce(sims.T, "max", lengths=lengths_t, axis=0)  # (n_docs, nq_tok)
    return torch.topk(per_doc.sum(dim=1), k).indices.numpy()


# ---- main -----------------------------------------------------------------------------------

def run(args) -> Dict:
    d = 128
    if args.dataset == "scifact":
        tokens, offsets, qtok, qoff = scifact_tokens(Path(args.data), d, args.queries)
    else:
        tokens, offsets, qtok, qoff = synthetic_tokens(args.docs, args.queries or 100, d)
    n_docs, nq = len(offsets) - 1, len(qoff) - 1
    lengths = np.diff(offsets)
    print(f"{args.dataset}: {n_docs} docs ({lengths.mean():.0f} tokens avg), {nq} queries "
          f"({np.diff(qoff).mean():.0f} tokens avg), d={d}; ISA {muvera.active_isa()}, {os.cpu_count()} cores")
    cfg = muvera.FDEConfig.preset(args.preset, dimension=d, seed=42)
    report: Dict = {"dataset": args.dataset, "n_docs": n_docs, "n_queries": nq, "preset": args.preset,
                    "baselines": {}, "runs": []}
    k_truth = 100

    # Ground truth and our brute force (any index gives the same search_exact).
    base = muvera.MuveraIndex(cfg, backend="exact")
    t0 = time.perf_counter()
    base.add(tokens, lengths=lengths)
    exact_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    truth, _ = base.search_exact(qtok, k=k_truth, offsets=qoff)
    exact_all = time.perf_counter() - t0
    base.num_threads = 1
    with single_thread():
        lat = per_query_latency(lambda q: base.search_exact([q], k=10), qtok, qoff, args.latency_queries)
    base.num_threads = None
    report["baselines"]["exact_chamfer_muvera"] = {"p50_ms": float(np.median(lat)),
                                                   "p95_ms": float(np.percentile(lat, 95)),
                                                   "qps_all_threads": nq / exact_all}
    print(f"\nbrute-force exact Chamfer (muvera C++): p50 {np.median(lat):.1f} ms, p95 "
          f"{np.percentile(lat, 95):.1f} ms (1 thread); {nq / exact_all:.1f} QPS (all threads)")
    n_base = min(args.latency_queries, 10)
    if tokens.nbytes * 2 * 64 <= 24e9 * 0.3 or args.dataset == "scifact":
        tok32 = np.asarray(tokens, dtype=np.float32)
        starts = offsets[:-1]
        with single_thread():
            lat_np = per_query_latency(lambda q: numpy_chamfer_topk(q, tok32, starts, 10), qtok, qoff, n_base)
        report["baselines"]["exact_chamfer_numpy"] = {"p50_ms": float(np.median(lat_np))}
        print(f"brute-force exact Chamfer (NumPy):      p50 {np.median(lat_np):.1f} ms (1 thread, {n_base} queries)")
        try:
            import torch

            torch.set_num_threads(1)
            tt, lt = torch.from_numpy(tok32), torch.from_numpy(lengths)
            lat_t = per_query_latency(lambda q: torch_chamfer_topk(q, tt, lt, 10), qtok, qoff, n_base)
            torch.set_num_threads(os.cpu_count() or 1)
            report["baselines"]["exact_chamfer_torch"] = {"p50_ms": float(np.median(lat_t))}
            print(f"brute-force exact Chamfer (torch):      p50 {np.median(lat_t):.1f} ms (1 thread, {n_base} queries)")
        except ImportError:
            pass
        del tok32

    if args.plaid:
        plaid_report(report, tokens, offsets, qtok, qoff, truth, args)

    print(f"\n{'backend':18s} {'cand':>5s} {'R@1':>6s} {'R@10':>6s} {'R@100':>6s} {'p50 ms':>8s} {'p95 ms':>8s} "
          f"{'QPS':>7s} {'build s':>8s} {'FDE B/doc':>10s} {'tok B/doc':>10s}")
    specs = args.backends.split(";")
    specs = [x for x in specs if x == "exact"] + [x for x in specs if x != "exact"]  # exact first, then free it
    for spec in specs:
        if spec == "exact":
            index, build = base, exact_build
        else:
            base = None  # the exact index (tokens + float32 FDEs) is no longer needed: free it
            index = muvera.MuveraIndex(cfg, backend=spec)
            t0 = time.perf_counter()
            index.add(tokens, lengths=lengths)
            build = time.perf_counter() - t0
        fde_bytes = index.backend.nbytes / n_docs
        tok_bytes = index.store.nbytes / n_docs
        params = {"efSearch": args.ef_search} if "HNSW" in spec else ({"nprobe": args.nprobe} if "IVF" in spec else None)
        for c in [int(x) for x in args.candidates.split(",")]:
            k = min(100, c)
            t0 = time.perf_counter()
            found, _ = index.search(qtok, k=k, candidates=c, offsets=qoff, params=params)
            qps = nq / (time.perf_counter() - t0)
            index.num_threads = 1
            with single_thread():
                lat = per_query_latency(lambda q: index.search([q], k=10, candidates=c, params=params), qtok, qoff,
                                        args.latency_queries)
            index.num_threads = None
            row = {"backend": spec, "candidates": c, "recall@1": recall_against(found, truth, 1),
                   "recall@10": recall_against(found, truth, 10),
                   "recall@100": recall_against(found, truth, 100) if k >= 100 else None,
                   "latency_ms_p50": float(np.median(lat)), "latency_ms_p95": float(np.percentile(lat, 95)),
                   "qps": qps, "build_s": build, "fde_bytes_per_doc": fde_bytes, "token_bytes_per_doc": tok_bytes}
            report["runs"].append(row)
            r100 = f"{row['recall@100']:.3f}" if row["recall@100"] is not None else "   -  "
            print(f"{spec:18s} {c:5d} {row['recall@1']:6.3f} {row['recall@10']:6.3f} {r100:>6s} "
                  f"{row['latency_ms_p50']:8.2f} {row['latency_ms_p95']:8.2f} {qps:7.1f} {build:8.1f} "
                  f"{fde_bytes:10.0f} {tok_bytes:10.0f}")
        del index
    return report


def plaid_report(report, tokens, offsets, qtok, qoff, truth, args) -> None:
    try:
        from plaid_baseline import PlaidBaseline, plaid_available
    except ImportError:
        print("PLAID: bench/plaid_baseline.py unavailable")
        return
    if not plaid_available():
        print("PLAID: colbert-ai not installed (pip install colbert-ai); skipped")
        return
    plaid = PlaidBaseline(tokens, offsets, nbits=args.plaid_nbits)
    plaid.threads = 1  # latency on one thread, like ours
    nq = len(qoff) - 1
    # colbert-ai's own search settings for k = 10, 100 and 1000 (Searcher.dense_search).
    for ncells, threshold, ndocs in ((1, 0.5, 256), (2, 0.45, 1024), (4, 0.4, 4096)):
        found = []
        lat = []
        for i in range(nq):
            q = qtok[qoff[i]:qoff[i + 1]]
            t0 = time.perf_counter()
            rows, _ = plaid.search(q, k=100, ncells=ncells, centroid_score_threshold=threshold, ndocs=ndocs)
            lat.append((time.perf_counter() - t0) * 1e3)
            found.append(np.pad(rows, (0, max(0, 100 - len(rows))), constant_values=-1)[:100])
        found = np.array(found)
        row = {"ncells": ncells, "centroid_score_threshold": threshold, "ndocs": ndocs, "recall@1": recall_against(found, truth, 1), "recall@10": recall_against(found, truth, 10),
               "recall@100": recall_against(found, truth, 100), "latency_ms_p50": float(np.median(lat)),
               "latency_ms_p95": float(np.percentile(lat, 95)), "build_s": plaid.build_seconds,
               "index_bytes_per_doc": plaid.index_bytes / (len(offsets) - 1)}
        report["baselines"].setdefault("plaid", []).append(row)
        print(f"PLAID (colbert-ai, nbits={args.plaid_nbits}, ncells={ncells}, ndocs={ndocs}): R@1 {row['recall@1']:.3f} R@10 {row['recall@10']:.3f} "
              f"R@100 {row['recall@100']:.3f}; p50 {row['latency_ms_p50']:.1f} ms p95 {row['latency_ms_p95']:.1f} ms "
              f"(1 thread); build {plaid.build_seconds:.0f} s; {row['index_bytes_per_doc']:.0f} B/doc")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", choices=["scifact", "synthetic"])
    ap.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data"))
    ap.add_argument("--docs", type=int, default=100_000, help="synthetic corpus size")
    ap.add_argument("--queries", type=int, default=None, help="queries (default: all / 100 synthetic)")
    ap.add_argument("--latency-queries", type=int, default=100)
    ap.add_argument("--preset", default="10240")
    ap.add_argument("--backends", default="exact;HNSW32;PQ1280x8", help="faiss factory strings separated by ;")
    ap.add_argument("--candidates", default="50,100,200,250,500,1000")
    ap.add_argument("--ef-search", type=int, default=256)
    ap.add_argument("--nprobe", type=int, default=32)
    ap.add_argument("--plaid", action="store_true", help="also run colbert-ai's PLAID")
    ap.add_argument("--plaid-nbits", type=int, default=2)
    ap.add_argument("--json", help="write the report here")
    args = ap.parse_args()
    report = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
