"""Token codecs side by side: bytes per token and the rerank of 1,000 candidates on one thread.

The issue-9 workload: 1,000 candidate documents of 180 tokens, a query of 32 tokens, d = 128
(1.47 GFLOP of multiply-adds). Each codec stores the same tokens; the rerank runs through the
index's own path (``TokenStore.rerank``, C++, GIL released). Reports the median of repeats and the
ratio to float16, plus the largest score difference from float32 Chamfer. Residual codecs train
on the same tokens first (PLAID's centroid count: 4096 for these 180,000 tokens); their bytes per
token include the centroid and level tables.

    python bench/bench_codecs.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import muvera
from muvera.store import TokenStore


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=1000)
    ap.add_argument("--doc-tokens", type=int, default=180)
    ap.add_argument("--query-tokens", type=int, default=32)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--codecs", default="float32,float16,int8,residual:4,residual:2")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.docs * args.doc_tokens, args.dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    lens = np.full(args.docs, args.doc_tokens, dtype=np.int64)
    q = rng.standard_normal((args.query_tokens, args.dim)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    qoff = np.array([0, args.query_tokens], dtype=np.int64)
    cand = np.arange(args.docs, dtype=np.int64)[None, :]
    exact = muvera.chamfer_matrix([q], x, doc_lengths=lens)[0]
    out = {"isa": muvera.active_isa(), "codecs": {}}
    base = None
    for name in args.codecs.split(","):
        store = TokenStore(args.dim, name)
        if store.codec.needs_training:
            store.codec.train(x)
        store.append(x, lengths=lens)
        store.rerank(q, qoff, 10, cand, None, 1)  # warm up
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            store.rerank(q, qoff, 10, cand, None, 1)
            times.append((time.perf_counter() - t0) * 1e3)
        ms = float(np.median(times))
        rows, top = store.rerank(q, qoff, args.docs, cand, None, 1)  # the codec's own scores
        scores = np.empty(args.docs, np.float32)
        scores[rows[0]] = top[0]
        per_token = (store.tokens.nbytes + store.offsets.nbytes + store.codec.state_nbytes) / store.num_tokens
        base = base or (ms if name == "float16" else None)
        out["codecs"][name] = {"rerank_ms": round(ms, 2), "bytes_per_token": round(per_token, 2), "isa": muvera.active_isa(),
                               "max_abs_score_error": float(np.abs(scores - exact).max())}
    f16 = out["codecs"].get("float16", {}).get("rerank_ms")
    for name, row in out["codecs"].items():
        if f16:
            row["ratio_to_float16"] = round(row["rerank_ms"] / f16, 2)
        print(name, json.dumps(row))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
