"""Hybrid search: BM25 alone (SQLite FTS5 over the same texts), MUVERA alone, and their fusion,
on BEIR corpora, in one run.

The index holds the embedded MiniLM's token vectors (from the embedding cache) and the corpus
texts (title + text) for BM25; the judged queries are searched as token vectors and as texts.
Rows: BM25 (``lexical_weight=1``: the multi-vector side weighs nothing), MUVERA (defaults),
reciprocal rank fusion and weighted score fusion at a few BM25 weights. nDCG@10 on the qrels and
p50 per query on one thread.

    python bench/bench_hybrid.py --corpora scifact,nfcorpus
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_defaults import beir_corpus, ndcg  # noqa: E402

from muvera import FDEConfig, MuveraIndex  # noqa: E402

SETTINGS = [("MUVERA (defaults)", None, 0.0), ("BM25 (FTS5)", "rrf", 1.0),
            ("hybrid RRF, BM25 weight 0.3", "rrf", 0.3), ("hybrid RRF, BM25 weight 0.5", "rrf", 0.5),
            ("hybrid weighted, BM25 weight 0.2", "weighted", 0.2), ("hybrid weighted, BM25 weight 0.3", "weighted", 0.3)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpora", default="scifact,nfcorpus")
    ap.add_argument("--latency-queries", type=int, default=100)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    report = []
    for name in args.corpora.split(","):
        toks, off, qtok, qoff, data = beir_corpus(name, None)
        index = MuveraIndex(FDEConfig.preset("10240", dimension=toks.shape[1]))
        index.add(toks, offsets=off, texts=list(data.doc_texts))
        qtexts = list(data.query_texts)
        nq = len(qoff) - 1
        print(f"== {name}: {len(off) - 1} documents, {nq} queries ({index.backend.active})", flush=True)
        for label, fusion, weight in SETTINGS:
            kw = {} if fusion is None else {"lexical": qtexts, "fusion": fusion, "lexical_weight": weight}
            ids, scores = index.search(qtok, k=10, offsets=qoff, **kw)
            quality = ndcg(data, ids, scores)  # default int ids are the rows
            index.num_threads = 1
            lat = []
            with threadpool_limits(1):
                for i in range(min(args.latency_queries, nq)):
                    q = [qtok[qoff[i]: qoff[i + 1]]]
                    one = {} if fusion is None else {"lexical": [qtexts[i]], "fusion": fusion, "lexical_weight": weight}
                    t = time.perf_counter()
                    index.search(q, k=10, **one)
                    lat.append(time.perf_counter() - t)
            index.num_threads = None
            row = {"corpus": name, "setting": label, "ndcg@10": round(quality, 4),
                   "p50_ms": round(float(np.median(lat)) * 1e3, 2)}
            report.append(row)
            print(f"   {label:34s} nDCG@10 {row['ndcg@10']:.4f}  p50 {row['p50_ms']:6.2f} ms", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
