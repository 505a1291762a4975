"""The centroid-interaction prune (muvera.prune) against the SQ8 FDE refine it replaces for
residual codes, on real collections, in one run.

For each BEIR dataset (the embedded MiniLM's tokens, cached, PCA'd to 128 d as in
bench_codecs_beir.py) and the same `residual:4` codes:

* ``residual:4`` as 0.9.0 built it: ``auto`` with its SQ8 refine (k_factor 4 x 200 fast-scan
  candidates re-scored on 1-byte FDE codes down to 200), no prune;
* ``residual:4`` as 0.10.0 builds it (``auto:refine=none``): the fast-scan top ``f x 200`` cut to
  200 by bag score, for ``f`` in ``--factors`` (1: the fast-scan top 200 alone);
* the float16 default, for reference.

Rows: nDCG@10, Recall@10 against exact float32 Chamfer, bytes per document (codes, bags, codec
tables and candidate index, amortised), build seconds, and p50 / p95 on one thread (every query
``--latency-repeats`` times, each query's median; all rows timed again in turn ``--rounds`` times,
p50 the median round: this VM's speed moves minute to minute).

    python bench/bench_prune.py [--datasets nfcorpus,scifact] [--factors 1,2,4,8] [--rounds 3]
        [--json prune.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

import numpy as np
from threadpoolctl import threadpool_limits

import muvera
from muvera import FDEConfig, MuveraIndex
from muvera.eval.bench import per_query_latency_ms

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_codecs_beir import load, quality  # noqa: E402  (the same data, PCA and metrics)


def build(codec: str, backend: str, dtok, doff, preset: str) -> tuple:
    index = MuveraIndex(FDEConfig.preset(preset, dimension=dtok.shape[1]), backend=backend, token_codec=codec)
    t0 = time.perf_counter()
    index.add(dtok, offsets=doff)
    index.wait_for_backend()
    return index, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", default="nfcorpus,scifact")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--preset", default="10240")
    ap.add_argument("--candidates", type=int, default=200)
    ap.add_argument("--factors", default="1,2,4,8")
    ap.add_argument("--latency-repeats", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    report: Dict[str, Any] = {"isa": muvera.active_isa(), "muvera": muvera.__version__, "args": vars(args),
                              "datasets": {}}
    c = args.candidates
    for name in args.datasets.split(","):
        data, dtok, doff, qtok, qoff = load(name, args.dim, None)
        n_docs = len(doff) - 1
        print(f"{name}: {n_docs} docs, {len(dtok)} tokens, {len(qoff) - 1} queries, d={dtok.shape[1]}", flush=True)
        exact = MuveraIndex(FDEConfig.preset("1280", dimension=dtok.shape[1]), token_codec="float32")
        exact.add(dtok, offsets=doff)
        truth_rows, truth_scores = exact.search_exact(qtok, k=100, offsets=qoff)
        del exact
        doc_ids = np.asarray(data.doc_ids, dtype=object)
        systems = []  # (label, index, params, build_s)
        f16, f16_s = build("float16", "auto", dtok, doff, args.preset)
        systems.append(("float16 default (SQ8 refine)", f16, None, f16_s))
        old, old_s = build("residual:4", "auto:refine=SQ8", dtok, doff, args.preset)
        systems.append(("residual:4, SQ8 refine (0.9.0)", old, None, old_s))
        new, new_s = build("residual:4", "auto", dtok, doff, args.preset)
        for f in (int(x) for x in args.factors.split(",") if x):
            label = f"residual:4, prune x{f}" + (" (0.10.0 default)" if f == new.default_prune_factor else "")
            systems.append((label, new, {"prune_factor": f}, new_s))
        rows: List[Dict[str, Any]] = []
        timers: List[Callable[[], np.ndarray]] = []
        for label, index, params, build_s in systems:
            ids, scores = index.search(qtok, k=100, candidates=c, offsets=qoff, params=params)
            r = np.asarray(ids, dtype=np.int64)
            q = quality(data, np.where(r >= 0, doc_ids[np.maximum(r, 0)], None), scores, truth_rows, r)
            row = {"system": label, "params": params, "build_s": build_s,
                   "bytes_per_doc": (index.nbytes - index.id_map.nbytes) / n_docs, **q}

            def timed(index=index, params=params) -> np.ndarray:
                index.num_threads = 1
                with threadpool_limits(1):
                    lat = per_query_latency_ms(lambda x: index.search([x], k=10, candidates=c, params=params),
                                               qtok, qoff, repeats=args.latency_repeats)
                index.num_threads = None
                return lat

            rows.append(row)
            timers.append(timed)
        p50s: List[List[float]] = [[] for _ in rows]
        p95s: List[List[float]] = [[] for _ in rows]
        for k in range(args.rounds):
            for i, timed in enumerate(timers):
                lat = timed()
                p50s[i].append(float(np.median(lat)))
                p95s[i].append(float(np.percentile(lat, 95)))
            print(f"  round {k + 1}: " + ", ".join(f"{r['system']} {p[-1]:.2f}" for r, p in zip(rows, p50s)), flush=True)
        for row, p50, p95 in zip(rows, p50s, p95s):
            row.update(p50_ms=float(np.median(p50)), p95_ms=float(np.median(p95)), p50_ms_rounds=p50)
            print(f"  {row['system']:<36} nDCG@10 {row['ndcg@10']:.4f}  R@10 vs exact {row['recall@10_vs_exact']:.3f}  "
                  f"{row['bytes_per_doc']:8.0f} B/doc  build {row['build_s']:6.1f} s  p50 {row['p50_ms']:.2f} ms "
                  f"({', '.join(f'{x:.2f}' for x in p50)})  p95 {row['p95_ms']:.2f}", flush=True)
        report["datasets"][name] = {"n_docs": n_docs, "rows": rows}
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
