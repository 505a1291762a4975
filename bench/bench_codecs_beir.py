"""Token codecs on real collections, side by side with PLAID (colbert-ai) and WARP (xtr-warp-rs).

For each BEIR dataset (SciFact, NFCorpus from ../shared/data, embedded with the offline MiniLM
model and cached; a fixed PCA to 128 d by default, the dimension ColBERT/PLAID/WARP use) and each
token codec, with and without the exact-tier rescore:

* bytes per token (codes, offsets, codec tables amortised over the tokens) and per document
  (plus the FDE), and the exact tier's bytes on disk;
* nDCG@10, and Recall@10 against exact float32 Chamfer over the same vectors;
* the rerank of 1,000 FDE candidates on one thread (median over queries), end-to-end p50/p95 on
  one thread, and the codec's training time.

PLAID (2 bits) and WARP (4 and 2 bits, its own virtual environment: bench/setup_warp_env.sh) index
the same PCA'd token vectors in the same run: index bytes per token, nDCG@10, Recall@10, p50.

    python bench/bench_codecs_beir.py [--datasets scifact,nfcorpus] [--json out.json]
        [--codecs float32,float16,int8,residual:4,residual:2] [--rescore 100] [--candidates 200]
        [--no-plaid] [--no-warp] [--max-queries N] [--latency-queries 100] [--latency-repeats 3] [--rounds 1]
        [--prune-factors 4,8]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
from threadpoolctl import threadpool_limits

import muvera
from muvera import FDEConfig, MuveraIndex
from muvera.eval.bench import per_query_latency_ms, recall_against
from muvera.eval.embed import embed_beir, fit_pca, project
from muvera.eval.metrics import evaluate, make_run

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
DATA = HERE.parent.parent / "shared" / "data"


def load(name: str, dim: int, max_queries: Optional[int]):
    emb = embed_beir(DATA / name, max_queries=max_queries, progress=False)
    dtok, qtok = emb.doc_tokens, emb.query_tokens
    if dim and dim != dtok.shape[1]:
        proj = fit_pca(dtok, dim)
        dtok, qtok = project(dtok, proj), project(qtok, proj)
    return emb.data, np.ascontiguousarray(dtok, np.float32), emb.doc_offsets, \
        np.ascontiguousarray(qtok, np.float32), emb.query_offsets


def quality(data, ids, scores, truth_rows, rows) -> Dict[str, float]:
    m = evaluate(data.qrels, make_run(data.query_ids, ids, scores))
    return {"ndcg@10": m["ndcg@10"], "recall@100": m["recall@100"], "recall@10_vs_exact": recall_against(rows, truth_rows, 10)}


def bench_codec(spec: str, data, dtok, doff, qtok, qoff, truth_rows, args) -> List[Dict[str, Any]]:
    config = FDEConfig.preset(args.preset, dimension=dtok.shape[1])
    compressed = spec not in ("float16", "float32")
    index = MuveraIndex(config, token_codec=spec, keep_exact=compressed and args.rescore > 0)
    t0 = time.perf_counter()
    index.add(dtok, offsets=doff)
    index.wait_for_backend()
    build_s = time.perf_counter() - t0
    store, codec = index.store, index.store.codec
    n_tok, n_docs = store.num_tokens, len(doff) - 1
    code_b = store.tokens.nbytes / n_tok
    off_b = store.offsets.nbytes / n_tok
    bag_b = (store.nbytes - store.tokens.nbytes - store.offsets.nbytes) / n_tok  # residual: the prune's bags
    table_b = codec.state_nbytes / n_tok
    per_token = code_b + off_b + bag_b + table_b
    fde_per_doc = index.backend.nbytes / n_docs
    exact_tier = 2 * dtok.shape[1] + 8 * (n_docs + 1) / n_tok if index.exact_tier is not None else 0.0
    base = {"codec": codec.name, "bytes_per_token": per_token, "code_bytes_per_token": code_b,
            "offset_bytes_per_token": off_b, "bag_bytes_per_token": bag_b, "table_bytes_per_token": table_b,
            "num_centroids": getattr(codec, "num_centroids", 0),
            "token_bytes_per_doc": per_token * n_tok / n_docs, "fde_bytes_per_doc": fde_per_doc,
            "exact_tier_disk_bytes_per_token": exact_tier,
            "train_s": getattr(codec, "train_seconds", 0.0), "build_s": build_s}
    # rerank of 1,000 FDE candidates on one thread, per query (the kernel workload)
    nq = len(qoff) - 1
    lat_n = min(args.latency_queries, nq)
    qfde = index.encoder.encode_queries(qtok, offsets=qoff)
    cand, _ = index.backend.search(qfde[:lat_n], min(1000, n_docs))
    rerank_ms = []
    for i in range(lat_n):
        q = qtok[qoff[i]:qoff[i + 1]]
        o = np.array([0, len(q)], np.int64)
        store.rerank(q, o, 10, cand[i:i + 1], None, 1)
        t = time.perf_counter()
        store.rerank(q, o, 10, cand[i:i + 1], None, 1)
        rerank_ms.append((time.perf_counter() - t) * 1e3)
    base["rerank_1000_ms_p50"] = float(np.median(rerank_ms))
    out = []
    factors = [None]
    if index.store.can_prune and args.prune_factors:  # residual codes: each prune width asked for
        factors = [int(f) for f in args.prune_factors.split(",") if f]
    settings = [(r, f) for r in ([None, args.rescore] if index.exact_tier is not None else [None]) for f in factors]
    for rescore, factor in settings:
        params = None if factor is None else {"prune_factor": factor}
        ids, scores = index.search(qtok, k=100, candidates=args.candidates, offsets=qoff, rescore=rescore,
                                   params=params)
        rows = np.asarray(ids, dtype=np.int64)  # int ids = rows (added without ids)
        row = dict(base, rescore=rescore, candidates=args.candidates, prune_factor=factor)
        doc_ids = np.asarray(data.doc_ids, dtype=object)
        named = np.where(rows >= 0, doc_ids[np.maximum(rows, 0)], None)
        row.update(quality(data, named, scores, truth_rows, rows))
        def timed(index=index, rescore=rescore, params=params) -> np.ndarray:
            index.num_threads = 1
            with threadpool_limits(1):  # one thread for the FDE search's BLAS too
                lat = per_query_latency_ms(lambda q: index.search([q], k=10, candidates=args.candidates,
                                                                  rescore=rescore, params=params),
                                           qtok, qoff[: lat_n + 1],
                                           repeats=args.latency_repeats)
            index.num_threads = None
            return lat

        lat = timed()
        row.update(p50_ms=float(np.median(lat)), p95_ms=float(np.percentile(lat, 95)))
        TIMERS[id(row)] = timed  # for the interleaved rounds (--rounds)
        out.append(row)
        print(f"  {row['codec']:<12} rescore={str(rescore):<5} prune={str(factor):<4} {row['bytes_per_token']:7.1f} B/tok  "
              f"nDCG@10 {row['ndcg@10']:.4f}  R@10 vs exact {row['recall@10_vs_exact']:.3f}  "
              f"rerank 1000 {row['rerank_1000_ms_p50']:6.2f} ms  p50 {row['p50_ms']:6.2f} ms  "
              f"train {row['train_s']:.1f} s", flush=True)
    return out


WARP_DIRS: List[str] = []
TIMERS: Dict[int, Any] = {}  # id(row) -> a function timing that row's system again (ms per query)


def bench_plaid(data, dtok, doff, qtok, qoff, truth_rows, args) -> Optional[Dict[str, Any]]:
    from plaid_baseline import PlaidBaseline, plaid_available

    if not plaid_available():
        print("  PLAID: colbert-ai not installed, skipped")
        return None
    nq = len(qoff) - 1
    with PlaidBaseline(dtok, doff, nbits=2, threads=2) as plaid:
        build_s = plaid.build_seconds
        plaid_threads = plaid.threads
        rows = np.full((nq, 100), -1, np.int64)
        scores = np.full((nq, 100), -np.inf, np.float32)
        for i in range(nq):
            r, s = plaid.search(qtok[qoff[i]:qoff[i + 1]], k=100)
            rows[i, :len(r)], scores[i, :len(s)] = r, s
        plaid.threads = 1
        lat = per_query_latency_ms(lambda q: plaid.search(q, k=10), qtok, qoff[: min(args.latency_queries, nq) + 1],
                                   repeats=args.latency_repeats)
        plaid.threads = plaid_threads
        index_bytes = plaid.index_bytes
    doc_ids = np.asarray(data.doc_ids, dtype=object)
    named = np.where(rows >= 0, doc_ids[np.maximum(rows, 0)], None)
    row = {"engine": "PLAID (colbert-ai)", "nbits": 2, "bytes_per_token": index_bytes / len(dtok),
           "build_s": build_s, "p50_ms": float(np.median(lat)), "p95_ms": float(np.percentile(lat, 95))}
    row.update(quality(data, named, scores, truth_rows, rows))
    print(f"  PLAID 2-bit  {row['bytes_per_token']:7.1f} B/tok  nDCG@10 {row['ndcg@10']:.4f}  "
          f"R@10 vs exact {row['recall@10_vs_exact']:.3f}  p50 {row['p50_ms']:.2f} ms", flush=True)
    return row


def bench_warp(data, dtok, doff, qtok, qoff, truth_rows, args, nbits: int) -> Optional[Dict[str, Any]]:
    try:
        from warp_baseline import run_warp
    except ImportError:
        print("  WARP: bench/warp_baseline.py missing, skipped")
        return None
    try:
        index_dir = None
        if args.rounds > 1:  # kept for the later rounds, which search it again without building
            index_dir = tempfile.mkdtemp(prefix=f"muvera-warp{nbits}-")
            WARP_DIRS.append(index_dir)
        res = run_warp(dtok, doff, qtok, qoff, k=100, nbits=nbits, threads=1, build_threads=args.build_threads,
                       repeats=args.latency_repeats, index_dir=index_dir)
    except (RuntimeError, FileNotFoundError, OSError) as exc:
        print(f"  WARP: {exc}")
        return None
    rows = np.asarray(res["ids"], dtype=np.int64)
    scores = np.asarray(res["scores"], dtype=np.float32)
    doc_ids = np.asarray(data.doc_ids, dtype=object)
    named = np.where(rows >= 0, doc_ids[np.maximum(rows, 0)], None)
    row = {"engine": f"WARP (xtr-warp-rs {res.get('warp_version', '?')})", "nbits": nbits,
           # what its search loads (centroids, bucket weights, doc ids, residuals); the folder also
           # keeps a second, per-chunk copy for updates, reported beside it
           "bytes_per_token": res["search_bytes_per_token"], "folder_bytes_per_token": res["bytes_per_token"],
           "build_s": res.get("build_s"), "knobs": res.get("knobs"),
           "p50_ms": res["p50_ms"], "p95_ms": res["p95_ms"]}
    row.update(quality(data, named, scores, truth_rows, rows))
    if index_dir is not None:
        def timed() -> np.ndarray:
            again = run_warp(dtok, doff, qtok, qoff, k=100, nbits=nbits, threads=1, repeats=args.latency_repeats,
                             index_dir=index_dir, reuse_index=True)
            return np.asarray(again["latency_ms"])
        TIMERS[id(row)] = timed
    print(f"  WARP {nbits}-bit  {row['bytes_per_token']:7.1f} B/tok  nDCG@10 {row['ndcg@10']:.4f}  "
          f"R@10 vs exact {row['recall@10_vs_exact']:.3f}  p50 {row['p50_ms']:.2f} ms", flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", default="scifact,nfcorpus")
    ap.add_argument("--dim", type=int, default=128, help="PCA dimension (0: the model's own)")
    ap.add_argument("--codecs", default="float32,float16,int8,residual:4,residual:2")
    ap.add_argument("--rescore", type=int, default=100, help="exact-tier rescore depth (0: none)")
    ap.add_argument("--candidates", type=int, default=200)
    ap.add_argument("--prune-factors", default="",
                    help="residual codecs: one row per prune_factor (comma list; default: the index's default)")
    ap.add_argument("--preset", default="10240")
    ap.add_argument("--latency-queries", type=int, default=100)
    ap.add_argument("--latency-repeats", type=int, default=3,
                    help="timed passes over the latency queries, every system alike (per-query median)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="time every system this many times in turn (WARP reusing its index); p50 = median round")
    ap.add_argument("--max-queries", type=int, default=None)
    ap.add_argument("--no-plaid", action="store_true")
    ap.add_argument("--no-warp", action="store_true")
    ap.add_argument("--warp-nbits", default="4,2", help="WARP residual bits to run (comma list)")
    ap.add_argument("--build-threads", type=int, default=2, help="threads for WARP's index build (search: 1)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    report: Dict[str, Any] = {"isa": muvera.active_isa(),
                              "muvera": muvera.__version__, "args": vars(args), "datasets": {}}
    for name in args.datasets.split(","):
        data, dtok, doff, qtok, qoff = load(name, args.dim, args.max_queries)
        print(f"{name}: {len(doff) - 1} docs, {len(dtok)} tokens, {len(qoff) - 1} queries, d={dtok.shape[1]}", flush=True)
        exact = MuveraIndex(FDEConfig.preset("1280", dimension=dtok.shape[1]), token_codec="float32")
        exact.add(dtok, offsets=doff)
        truth_rows, truth_scores = exact.search_exact(qtok, k=100, offsets=qoff)
        doc_ids = np.asarray(data.doc_ids, dtype=object)
        ex = evaluate(data.qrels, make_run(data.query_ids, doc_ids[truth_rows], truth_scores))
        print(f"  exact float32 Chamfer: nDCG@10 {ex['ndcg@10']:.4f}", flush=True)
        del exact
        entry: Dict[str, Any] = {"n_docs": len(doff) - 1, "n_tokens": len(dtok), "n_queries": len(qoff) - 1,
                                 "dim": int(dtok.shape[1]), "exact_float32": ex, "codecs": [], "baselines": []}
        for spec in filter(None, args.codecs.split(",")):
            entry["codecs"].extend(bench_codec(spec, data, dtok, doff, qtok, qoff, truth_rows, args))
            save(report, name, entry, args)
        if not args.no_plaid:
            r = bench_plaid(data, dtok, doff, qtok, qoff, truth_rows, args)
            if r:
                entry["baselines"].append(r)
                save(report, name, entry, args)
        if not args.no_warp:
            for nbits in (int(b) for b in args.warp_nbits.split(",") if b):
                r = bench_warp(data, dtok, doff, qtok, qoff, truth_rows, args, nbits)
                if r:
                    entry["baselines"].append(r)
                    save(report, name, entry, args)
        if args.rounds > 1:
            interleaved_rounds(entry["codecs"] + entry["baselines"], args.rounds)
        for d in WARP_DIRS:
            shutil.rmtree(d, ignore_errors=True)
        WARP_DIRS.clear()
        TIMERS.clear()
        save(report, name, entry, args)


def _label(r: Dict[str, Any]) -> str:
    f = r.get("prune_factor")
    return str(r.get("codec", r.get("engine"))) + (f" prune x{f}" if f else "")


def interleaved_rounds(rows: List[Dict[str, Any]], rounds: int) -> None:
    """Time every system again, in turn, rounds - 1 more times (WARP searching the index it built,
    in its own process): on a shared machine one system's single pass can land in a slow minute.
    Each row gets ``p50_ms_rounds`` and ``p50_ms`` / ``p95_ms`` from the median round."""
    timed = [r for r in rows if id(r) in TIMERS]
    p50s = {id(r): [r["p50_ms"]] for r in timed}
    p95s = {id(r): [r["p95_ms"]] for r in timed}
    for k in range(1, rounds):
        for r in timed:
            lat = TIMERS[id(r)]()
            p50s[id(r)].append(float(np.median(lat)))
            p95s[id(r)].append(float(np.percentile(lat, 95)))
        print(f"  round {k + 1}: " + ", ".join(f"{_label(r)} {p50s[id(r)][-1]:.2f}"
                                                for r in timed), flush=True)
    for r in timed:
        r["p50_ms_rounds"] = p50s[id(r)]
        r["p50_ms"] = float(np.median(p50s[id(r)]))
        r["p95_ms"] = float(np.median(p95s[id(r)]))
        print(f"  {_label(r)} rescore={r.get('rescore')}: p50 over {rounds} rounds "
              f"{r['p50_ms']:.2f} ms ({', '.join(f'{x:.2f}' for x in p50s[id(r)])})", flush=True)


def save(report: Dict[str, Any], name: str, entry: Dict[str, Any], args) -> None:
    """Write the report after every measurement: a long run keeps what it measured."""
    report["datasets"][name] = entry
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
