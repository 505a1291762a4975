"""End-to-end benchmark on a BEIR dataset: text -> tokens -> FDE index -> search -> metrics.

For each candidate count it reports, against the qrels: nDCG@10 / Recall@100 / MRR@10 of the
FDE-only ranking, of FDE + exact Chamfer rerank, and of exact Chamfer over the whole corpus;
Recall@10 of the reranked results against exact Chamfer; per-query latency (p50/p95, one
thread), QPS (all threads) and index bytes per document.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..config import FDEConfig
from ..index import MuveraIndex
from ..store import TokenStore
from .embed import EmbeddedDataset, embed_beir, fit_pca, project
from .metrics import evaluate, make_run
from .._optional import require
from .._progress import progress as _progress_bar


def per_query_latency_ms(fn, qtok: np.ndarray, qoff: np.ndarray, repeats: int = 1) -> np.ndarray:
    """Milliseconds of fn(query_tokens) for each query of a packed batch, one at a time; with
    ``repeats`` > 1, that many passes over all the queries and each query's median over them (a
    pass is a stream of different queries, as in service; the median drops a pass that another
    process interrupted)."""
    if isinstance(repeats, bool) or not isinstance(repeats, (int, np.integer)) or repeats < 1:
        raise ValueError(f"repeats: expected an int >= 1, got {repeats!r}")
    n = len(qoff) - 1
    out = np.empty((int(repeats), n))
    for r in range(int(repeats)):
        for i in range(n):
            q = qtok[qoff[i]:qoff[i + 1]]
            t0 = time.perf_counter()
            fn(q)
            out[r, i] = time.perf_counter() - t0
    return np.median(out, axis=0) * 1e3


def recall_against(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean |top-k(found) & top-k(truth)| / k over queries (ids or rows, any padding)."""
    return float(np.mean([len(set(f[:k].tolist()) & set(t[:k].tolist())) / k for f, t in zip(found, truth)]))


def run_bench(dataset_dir: os.PathLike, *, model: Any = None, preset: str = "10240", backend: str = "auto",
              candidates: Sequence[int] = (100, 200, 500, 1000), pca: Optional[int] = None,
              max_queries: Optional[int] = None, cache_root: Optional[os.PathLike] = None,
              latency_queries: int = 100, progress: bool = True, ignore_identical_ids: bool = True,
              token_codec: str = "float16", rescore: Optional[int] = None, tune: bool = True,
              target_recall: float = 0.95, log=print) -> Dict[str, Any]:
    """Run the benchmark and return the report (see module docstring); ``log`` prints progress.

    ``ignore_identical_ids`` follows BEIR: a hit whose id equals the query's id is not counted
    (ArguAna's and Quora's queries are documents of their corpus). With ``tune`` the index is
    tuned (:meth:`~muvera.MuveraIndex.tune`, ``target_recall`` at k = 10) on pseudo-queries drawn
    from the corpus -- never on the judged queries -- and a run with the tuned defaults is added.
    """
    threadpool_limits = require("threadpoolctl", "eval", "run_bench").threadpool_limits

    k_eval = 100
    bad = [c for c in candidates if c < k_eval]
    if bad:  # checked before the (possibly long) encoding
        raise ValueError(f"candidates: each count must be >= {k_eval} (Recall@100 needs 100 results), got {bad[0]}")
    t0 = time.perf_counter()
    emb: EmbeddedDataset = embed_beir(dataset_dir, model, cache_root=cache_root, max_queries=max_queries,
                                      progress=progress)
    embed_s = time.perf_counter() - t0
    dtok, qtok = emb.doc_tokens, emb.query_tokens
    if pca:
        proj = fit_pca(dtok, pca)
        dtok, qtok = project(dtok, proj), project(qtok, proj)
    else:
        qtok = qtok.astype(np.float32)
    dim = int(dtok.shape[1])
    data = emb.data
    n_docs, nq = len(emb.doc_offsets) - 1, len(emb.query_offsets) - 1
    log(f"{data.name}: {n_docs} documents, {nq} queries, {dim}-d tokens "
        f"({np.diff(emb.doc_offsets).mean():.0f} per document); embeddings ready in {embed_s:.1f} s")

    config = FDEConfig.preset(preset, dimension=dim)
    if rescore is not None and rescore < k_eval:
        raise ValueError(f"rescore: must be >= {k_eval} (Recall@100 needs 100 results), got {rescore}")
    index = MuveraIndex(config, backend=backend, token_codec=token_codec, keep_exact=rescore is not None)
    t0 = time.perf_counter()
    doff = np.asarray(emb.doc_offsets, dtype=np.int64)
    step = 1024

    def doc_batches(bar):  # a stream: the same index as one add, with a progress bar and an ETA
        for s in range(0, n_docs, step):
            e = min(n_docs, s + step)
            yield {"tokens": dtok[doff[s]:doff[e]], "lengths": np.diff(doff[s:e + 1]), "ids": data.doc_ids[s:e]}
            bar.update(e - s)

    index.store.reserve(int(doff[-1]), n_docs)  # sized once: no doubling copies, bytes/doc as stored
    with _progress_bar(n_docs, "indexing", enabled=progress, unit="doc") as bar:
        index.add(doc_batches(bar), progress=False)
    index.wait_for_backend()  # a background crossing counts in the build
    build_s = time.perf_counter() - t0
    codec_bytes = index.store.codec_nbytes
    bytes_per_doc = (index.backend.nbytes + index.store.nbytes + codec_bytes) / n_docs
    # Everything the token store keeps per token: the codes and the offsets, as stored, and the
    # codec's tables (residual centroids and levels) spread over the tokens.
    token_bytes = (index.store.tokens.nbytes + index.store.offsets.nbytes + codec_bytes) / max(
        1, index.store.num_tokens)
    train_s = index.store.train_seconds
    log(f"index ({backend}, {config.output_dimension}-d FDE): built in {build_s:.1f} s, "
        f"{bytes_per_doc:.0f} bytes/document")

    def run_of(found_ids: np.ndarray, found_scores: np.ndarray) -> Dict[str, Dict[str, float]]:
        return make_run(data.query_ids, found_ids, found_scores, ignore_identical_ids=ignore_identical_ids)

    qoff = emb.query_offsets
    lat_n = min(latency_queries, nq)
    if progress:
        log(f"exact Chamfer over {nq} queries x {n_docs} documents (the ground truth)...")
    t0 = time.perf_counter()
    parts_ids, parts_scores = [], []
    with _progress_bar(nq, "exact Chamfer", enabled=progress, unit="query") as bar:
        for s in range(0, nq, 16):  # in slices, so the bar moves
            e = min(nq, s + 16)
            a, b = index.search_exact(qtok[qoff[s]:qoff[e]], k=k_eval, offsets=qoff[s:e + 1] - qoff[s])
            parts_ids.append(a)
            parts_scores.append(b)
            bar.update(e - s)
    exact_ids, exact_scores = np.concatenate(parts_ids), np.concatenate(parts_scores)
    exact_qps = nq / (time.perf_counter() - t0)
    if not index.store.stores_tokens:
        # A compressed store's brute force ranks its codes; the ground truth is Chamfer over the
        # tokens themselves (as embedded: float16 or float32).
        truth = TokenStore.from_arrays(np.ascontiguousarray(dtok), np.asarray(emb.doc_offsets, dtype=np.int64))
        rows, exact_scores = truth.rerank(np.ascontiguousarray(qtok, dtype=np.float32), qoff, k_eval, None, None)
        all_ids = np.asarray(data.doc_ids, dtype=object)
        exact_ids = np.where(rows >= 0, all_ids[np.maximum(rows, 0)], None)
        del truth
    exact_metrics = evaluate(data.qrels, run_of(exact_ids, exact_scores))
    index.num_threads = 1
    with threadpool_limits(1):
        exact_lat = per_query_latency_ms(lambda q: index.search_exact([q], k=10), qtok, qoff[: lat_n + 1])
    index.num_threads = None

    qfde = index.encoder.encode_queries(qtok, offsets=qoff)
    fde_rows, fde_scores = index.backend.search(qfde, k_eval)
    ids = np.asarray(index.ids, dtype=object)
    fde_ids = np.where(fde_rows >= 0, ids[np.maximum(fde_rows, 0)], None)
    fde_metrics = evaluate(data.qrels, run_of(fde_ids, fde_scores))

    runs: List[Dict[str, Any]] = []
    for c in candidates:
        if c < k_eval:
            raise ValueError(f"candidates: each count must be >= {k_eval} (Recall@100 needs 100 results), got {c}")
        if progress:
            log(f"FDE + rerank with {c} candidates: quality over {nq} queries, latency over {lat_n}...")
        t0 = time.perf_counter()
        found, scores = index.search(qtok, k=k_eval, candidates=c, offsets=qoff, rescore=rescore)
        qps = nq / (time.perf_counter() - t0)
        metrics = evaluate(data.qrels, run_of(found, scores))
        index.num_threads = 1
        with threadpool_limits(1):
            lat = per_query_latency_ms(lambda q: index.search([q], k=10, candidates=c, rescore=rescore), qtok,
                                       qoff[: lat_n + 1])
        index.num_threads = None
        runs.append({
            "candidates": int(c),
            "ndcg@10": metrics["ndcg@10"], "recall@100": metrics["recall@100"], "mrr@10": metrics["mrr@10"],
            "fde_ndcg@10": fde_metrics["ndcg@10"], "fde_recall@100": fde_metrics["recall@100"],
            "exact_ndcg@10": exact_metrics["ndcg@10"], "exact_recall@100": exact_metrics["recall@100"],
            "recall@10_vs_exact": recall_against(found, exact_ids, 10),
            "latency_ms_p50": float(np.median(lat)), "latency_ms_p95": float(np.percentile(lat, 95)),
            "qps": qps, "bytes_per_doc": bytes_per_doc, "token_codec": index.store.codec_name,
            "token_bytes_per_token": token_bytes, "rescore": rescore,
        })
    tuned, tuned_run = None, None
    if tune:
        if progress:
            log(f"tuning for recall@10 >= {target_recall} on pseudo-queries drawn from the corpus...")
        result = index.tune(target_recall=target_recall, k=10, verbose=False)
        tuned = index.tuned
        tuned["tune_s"] = result.seconds
        found, scores = index.search(qtok, k=k_eval, offsets=qoff)  # the tuned defaults (candidates >= k)
        metrics = evaluate(data.qrels, run_of(found, scores))
        index.num_threads = 1
        with threadpool_limits(1):
            lat = per_query_latency_ms(lambda q: index.search([q], k=10), qtok, qoff[: lat_n + 1])
        index.num_threads = None
        tuned_run = {
            "candidates": int(max(tuned["candidates"], k_eval)), "params": dict(tuned["params"]),
            "ndcg@10": metrics["ndcg@10"], "recall@100": metrics["recall@100"], "mrr@10": metrics["mrr@10"],
            "fde_ndcg@10": fde_metrics["ndcg@10"], "fde_recall@100": fde_metrics["recall@100"],
            "exact_ndcg@10": exact_metrics["ndcg@10"], "exact_recall@100": exact_metrics["recall@100"],
            "recall@10_vs_exact": recall_against(found, exact_ids, 10),
            "latency_ms_p50": float(np.median(lat)), "latency_ms_p95": float(np.percentile(lat, 95)),
            "qps": float("nan"), "bytes_per_doc": bytes_per_doc, "token_codec": index.store.codec_name,
            "token_bytes_per_token": token_bytes, "rescore": tuned["rescore"],
        }
    return {
        "tuned": tuned, "tuned_run": tuned_run, "active_backend": getattr(index.backend, "active", index.backend.name),
        "dataset": data.name, "n_docs": n_docs, "n_queries": nq, "latency_queries": lat_n, "dim": dim, "pca": pca, "preset": preset,
        "backend": backend, "fde_dimension": config.output_dimension, "build_s": build_s, "embed_s": embed_s,
        "ignore_identical_ids": bool(ignore_identical_ids), "token_codec": index.store.codec_name,
        "token_bytes_per_token": token_bytes, "codec_train_s": train_s,
        "fde_only": fde_metrics, "exact": dict(exact_metrics, latency_ms_p50=float(np.median(exact_lat)),
                                               latency_ms_p95=float(np.percentile(exact_lat, 95)), qps=exact_qps),
        "runs": runs,
    }


def format_report(rep: Dict[str, Any]) -> str:
    """The report as a fixed-width table."""
    ex, fde = rep["exact"], rep["fde_only"]
    lines = [
        f"{rep['dataset']}: {rep['n_docs']} docs, {rep['n_queries']} queries, {rep['dim']}-d tokens, "
        f"FDE {rep['fde_dimension']}-d ({rep['preset']} preset), backend {rep['backend']}, tokens "
        f"{rep.get('token_codec', 'float16')} ({rep.get('token_bytes_per_token', 0):.1f} bytes/token)",
        f"exact Chamfer:  nDCG@10 {ex['ndcg@10']:.4f}  R@100 {ex['recall@100']:.4f}  MRR@10 {ex['mrr@10']:.4f}  "
        f"p50 {ex['latency_ms_p50']:.1f} ms  p95 {ex['latency_ms_p95']:.1f} ms  {ex['qps']:.1f} QPS",
        f"FDE only:       nDCG@10 {fde['ndcg@10']:.4f}  R@100 {fde['recall@100']:.4f}  MRR@10 {fde['mrr@10']:.4f}",
        "",
        f"(quality over all {rep['n_queries']} queries; p50/p95/QPS over the first "
        f"{rep.get('latency_queries', rep['n_queries'])}, one query at a time on one thread)",
        f"{'candidates':>10s} {'nDCG@10':>8s} {'R@100':>7s} {'MRR@10':>7s} {'R@10 vs exact':>13s} "
        f"{'p50 ms':>8s} {'p95 ms':>8s} {'QPS':>8s} {'bytes/doc':>10s}",
    ]
    for r in rep["runs"]:
        lines.append(f"{r['candidates']:10d} {r['ndcg@10']:8.4f} {r['recall@100']:7.4f} {r['mrr@10']:7.4f} "
                     f"{r['recall@10_vs_exact']:13.3f} {r['latency_ms_p50']:8.2f} {r['latency_ms_p95']:8.2f} "
                     f"{r['qps']:8.1f} {r['bytes_per_doc']:10.0f}")
    t, r = rep.get("tuned"), rep.get("tuned_run")
    if t and r:
        params = "".join(f", {a}={b}" for a, b in sorted(t["params"].items()))
        params += f", rescore={t['rescore']}" if t["rescore"] else ""
        verdict = "met" if t["met"] else "NOT met"
        lines += ["", f"tuned setting ({rep.get('active_backend', rep['backend'])}): candidates={t['candidates']}"
                  f"{params} -- recall@10 {t['recall']:.3f} vs target {t['target_recall']} on {t['queries']} "
                  f"queries ({verdict}, {t.get('tune_s', 0):.1f} s); searched with it (candidates >= k = 100):",
                  f"{'tuned':>10s} {r['ndcg@10']:8.4f} {r['recall@100']:7.4f} {r['mrr@10']:7.4f} "
                  f"{r['recall@10_vs_exact']:13.3f} {r['latency_ms_p50']:8.2f} {r['latency_ms_p95']:8.2f} "
                  f"{'':>8s} {r['bytes_per_doc']:10.0f}"]
    return "\n".join(lines)


def plot_report(rep: Dict[str, Any], path: os.PathLike) -> None:
    """Recall@10 vs exact against p50 latency, one point per candidate count (matplotlib)."""
    matplotlib = require("matplotlib", "eval", "plot_report / muvera bench --plot")

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    xs = [r["latency_ms_p50"] for r in rep["runs"]]
    ys = [r["recall@10_vs_exact"] for r in rep["runs"]]
    ax.plot(xs, ys, "o-", label=f"MUVERA ({rep['backend']})")
    for r, x, y in zip(rep["runs"], xs, ys):
        ax.annotate(str(r["candidates"]), (x, y), textcoords="offset points", xytext=(4, -10), fontsize=8)
    ax.axvline(rep["exact"]["latency_ms_p50"], color="grey", ls="--", label="exact Chamfer")
    ax.set_xlabel("p50 latency per query, 1 thread (ms)")
    ax.set_ylabel("Recall@10 vs exact Chamfer")
    ax.set_title(f"{rep['dataset']} ({rep['n_docs']} docs)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_json(rep: Dict[str, Any], path: os.PathLike) -> None:
    tmp = f"{path}.tmp"
    Path(tmp).write_text(json.dumps(rep, indent=1))
    os.replace(tmp, path)
