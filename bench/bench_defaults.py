"""Do the defaults keep MUVERA's promise? Candidate recall and end-to-end quality of ``auto``
(4-bit PQ fast-scan, refined with SQ8 FDE codes) against the exact FDE scan and against 0.4.0's
``auto`` without a refine stage, on real and synthetic corpora, in one run.

Per corpus and backend, at each candidate count:

* ``cand/exactFDE`` -- the share of the exact FDE scan's top-C candidates the backend returns
  (the issue's "candidate recall ... of the exact FDE scan's");
* ``R@10`` -- recall@10 of the final (Chamfer-reranked) results against exact Chamfer over the
  same vectors, and its ratio to the exact FDE scan's R@10;
* ``nDCG@10`` -- on BEIR corpora (judged queries), next to exact Chamfer's;
* ``p50`` -- per-query search latency on one thread (each query alone), ``build`` seconds and the
  backend's bytes per document.

Corpora: BEIR folders (``../shared/data/<name>``, the embedded MiniLM's 384-d tokens from the
embedding cache), ``scale:N`` (bench/scale_corpus.py: topics, near-duplicate families) and
``mixture:N`` (a second generator written here: Gaussian-mixture tokens, lognormal lengths,
queries are noisy token subsets of a document).

    python bench/bench_defaults.py --corpora scifact,nfcorpus,scale:30000,mixture:30000 \\
        [--candidates 100,200] [--queries 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from threadpoolctl import threadpool_limits

import muvera
from muvera import FDEConfig, MuveraIndex, _core

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
DATA = HERE.parent.parent / "shared" / "data"


def _offsets(lens: np.ndarray) -> np.ndarray:
    out = np.zeros(len(lens) + 1, dtype=np.int64)
    np.cumsum(lens, out=out[1:])
    return out


def mixture_corpus(n: int, dim: int = 128, seed: int = 5, n_queries: int = 200):
    """Gaussian-mixture tokens (512 centres, spreads 0.3-0.9), lognormal lengths (median 80),
    queries: 24 noisy tokens of a random document."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((512, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    spread = rng.uniform(0.3, 0.9, size=512).astype(np.float32)
    lens = np.clip(rng.lognormal(np.log(80), 0.5, size=n), 8, 300).astype(np.int64)
    off = _offsets(lens)
    toks = np.empty((int(off[-1]), dim), dtype=np.float16)
    for s in range(0, n, 2000):
        e = min(n, s + 2000)
        m = int(off[e] - off[s])
        doc_topic = rng.integers(0, 512, size=e - s)
        # each document mixes 3 centres: its own topic for half its tokens, two random ones
        own = np.repeat(doc_topic, lens[s:e])
        other = rng.integers(0, 512, size=m)
        pick = np.where(rng.random(m) < 0.5, own, other)
        t = centres[pick] + rng.standard_normal((m, dim)).astype(np.float32) * spread[pick, None] / np.sqrt(dim)
        t /= np.linalg.norm(t, axis=1, keepdims=True)
        toks[off[s]: off[e]] = t.astype(np.float16)
    q_parts = []
    for d in rng.choice(n, size=n_queries, replace=False):
        src = toks[off[d]: off[d + 1]].astype(np.float32)
        take = src[rng.choice(len(src), size=min(24, len(src)), replace=False)]
        q = take + rng.standard_normal(take.shape).astype(np.float32) * 0.3 / np.sqrt(dim) * 3
        q_parts.append(q / np.linalg.norm(q, axis=1, keepdims=True))
    qtok = np.concatenate(q_parts).astype(np.float32)
    qoff = _offsets(np.array([len(q) for q in q_parts]))
    return toks, off, qtok, qoff


def scale_corpus(n: int, n_queries: int = 200):
    from scale_corpus import SyntheticCorpus  # noqa: PLC0415

    corpus = SyntheticCorpus(n, dim=128, seed=0)
    parts, lens = [], []
    for tokens, ln in corpus.batches():
        parts.append(np.asarray(tokens, dtype=np.float16))
        lens.append(ln)
    toks = np.concatenate(parts)
    off = _offsets(np.concatenate(lens))
    qtok, qoff, _ = corpus.queries(n_queries)
    return toks, off, np.ascontiguousarray(qtok, np.float32), np.asarray(qoff, np.int64)


def beir_corpus(name: str, n_queries: Optional[int]):
    from muvera.eval.embed import embed_beir  # noqa: PLC0415

    emb = embed_beir(DATA / name, max_queries=n_queries, progress=False)
    return (np.ascontiguousarray(emb.doc_tokens, np.float16), np.asarray(emb.doc_offsets, np.int64),
            np.ascontiguousarray(emb.query_tokens, np.float32), np.asarray(emb.query_offsets, np.int64), emb.data)


def ndcg(data, rows: np.ndarray, scores: np.ndarray) -> float:
    from muvera.eval.metrics import evaluate, make_run  # noqa: PLC0415

    ids = np.asarray(data.doc_ids, dtype=object)
    named = np.where(rows >= 0, ids[np.maximum(rows, 0)], None)
    return float(evaluate(data.qrels, make_run(data.query_ids, named, scores))["ndcg@10"])


def recall(rows: np.ndarray, truth: np.ndarray, k: int = 10) -> float:
    return float(np.mean([len(set(a[:k].tolist()) & set(b[:k].tolist())) / k for a, b in zip(rows, truth)]))


def p50_ms(index: MuveraIndex, qtok, qoff, c: int, n: int = 100) -> float:
    index.num_threads = 1
    lat = []
    with threadpool_limits(1):
        for i in range(min(n, len(qoff) - 1)):
            q = qtok[qoff[i]: qoff[i + 1]]
            index.search([q], k=10, candidates=c)  # warm
            t = time.perf_counter()
            index.search([q], k=10, candidates=c)
            lat.append(time.perf_counter() - t)
    index.num_threads = None
    return float(np.median(lat) * 1e3)


def run_corpus(label: str, toks, off, qtok, qoff, data, args) -> List[Dict[str, Any]]:
    n = len(off) - 1
    cfg = FDEConfig.preset("10240", dimension=toks.shape[1])
    print(f"\n== {label}: {n} documents, {len(qoff) - 1} queries, {toks.shape[1]}-d tokens", flush=True)
    truth, tscore = _core.chamfer_topk(qtok, qoff, toks, off, None, None, 100, 0, "")
    out: List[Dict[str, Any]] = []
    exact_nd = ndcg(data, truth, tscore) if data is not None else None
    if exact_nd is not None:
        print(f"   exact Chamfer nDCG@10 {exact_nd:.4f}", flush=True)
    ref_cands: Dict[int, np.ndarray] = {}
    ref_recall: Dict[int, float] = {}
    for backend in args.backends:
        index = MuveraIndex(cfg, backend=backend)
        t = time.perf_counter()
        index.add(toks, offsets=off)
        index.wait_for_backend()  # a background crossing counts in the build
        build = time.perf_counter() - t
        qfde = index.encoder.encode_queries(qtok, offsets=qoff)
        active = getattr(index.backend, "active", index.backend.name)
        for c in args.candidates:
            cand, _ = index.backend.search(qfde, c)
            if backend == "exact":
                ref_cands[c] = cand
            overlap = float(np.mean([len(set(a.tolist()) & set(b.tolist())) / c
                                     for a, b in zip(cand, ref_cands[c])])) if c in ref_cands else float("nan")
            width = 100 if data is not None else 10  # a BEIR run keeps 100 for its metrics
            rows, scores = index.search(qtok, k=width, candidates=max(c, width), offsets=qoff)
            rows = np.asarray(rows, dtype=np.int64)
            r10 = recall(rows, truth)
            if backend == "exact":
                ref_recall[c] = r10
            row = {"corpus": label, "backend": backend, "active": active, "candidates": c, "documents": n,
                   "cand_vs_exact_fde": overlap, "recall@10": r10,
                   "recall_ratio": r10 / ref_recall[c] if ref_recall.get(c) else float("nan"),
                   "ndcg@10": ndcg(data, rows, scores) if data is not None else None, "exact_ndcg@10": exact_nd,
                   "p50_ms": p50_ms(index, qtok, qoff, c, args.latency_queries), "build_s": build,
                   "backend_bytes_per_doc": index.backend.nbytes / n}
            out.append(row)
            nd = f"nDCG@10 {row['ndcg@10']:.4f}  " if row["ndcg@10"] is not None else ""
            print(f"   {backend:<18} {active:<34} C={c:<5} cand/exactFDE {overlap:.3f}  R@10 {r10:.3f} "
                  f"(x{row['recall_ratio']:.3f})  {nd}p50 {row['p50_ms']:.2f} ms  build {build:.1f} s  "
                  f"{row['backend_bytes_per_doc']:.0f} B/doc", flush=True)
        del index
    return out


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpora", default="scifact,nfcorpus,scale:30000,mixture:30000")
    ap.add_argument("--backends", default="exact,auto,auto:refine=none")
    ap.add_argument("--candidates", default="100,200")
    ap.add_argument("--queries", type=int, default=200, help="queries per synthetic corpus")
    ap.add_argument("--max-queries", type=int, default=None, help="judged queries per BEIR corpus")
    ap.add_argument("--latency-queries", type=int, default=100)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    args.backends = [b for b in args.backends.split(",") if b]
    args.candidates = [int(x) for x in args.candidates.split(",")]
    if args.backends[0] != "exact":
        args.backends.insert(0, "exact")
    rows: List[Dict[str, Any]] = []
    print(f"muvera {muvera.__version__}, isa {_core.active_isa()}", flush=True)
    for spec in args.corpora.split(","):
        kind, _, size = spec.partition(":")
        if kind == "scale":
            rows += run_corpus(spec, *scale_corpus(int(size), args.queries), None, args)
        elif kind == "mixture":
            rows += run_corpus(spec, *mixture_corpus(int(size), n_queries=args.queries), None, args)
        else:
            toks, off, qtok, qoff, data = beir_corpus(kind, args.max_queries)
            rows += run_corpus(kind, toks, off, qtok, qoff, data, args)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
