"""End-to-end search latency with the defaults on BEIR collections, every query, several passes.

The same vectors as ``bench/bench_codecs_beir.py`` (the embedded MiniLM's tokens, cached, a fixed
PCA to 128 d), the default index (``auto`` backend, float16 store, 200 candidates), one thread;
every query searched one at a time, ``--passes`` times over the whole query set. Reports each
pass's p50 and their minimum and median. Only public API that earlier versions also have, so it
runs under ``bench/bench_before_after.py`` against an older package:

    python bench/bench_beir_p50.py [--datasets nfcorpus,scifact] [--passes 3]
    python bench/bench_before_after.py --baseline <package> --rounds 3 -- bench/bench_beir_p50.py

Prints a line per dataset and, last, a JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from muvera import FDEConfig, MuveraIndex

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_codecs_beir import load  # noqa: E402  (the same vectors)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", default="nfcorpus,scifact")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=30, help="queries searched once, untimed, first")
    args = ap.parse_args()
    out = {}
    for name in args.datasets.split(","):
        _data, dtok, doff, qtok, qoff = load(name, args.dim, None)
        index = MuveraIndex(FDEConfig.preset("10240", dimension=dtok.shape[1]), num_threads=1)
        index.add(dtok, offsets=doff)
        queries = [qtok[qoff[i]:qoff[i + 1]] for i in range(len(qoff) - 1)]
        with threadpool_limits(1):
            for q in queries[:args.warmup]:
                index.search([q], k=10)
            p50s = []
            for _ in range(args.passes):
                lat = []
                for q in queries:
                    t = time.perf_counter()
                    index.search([q], k=10)
                    lat.append((time.perf_counter() - t) * 1e3)
                p50s.append(float(np.median(lat)))
        out[name] = {"p50_ms_min": min(p50s), "p50_ms_median": float(np.median(p50s)), "p50_ms_passes": p50s}
        print(f"{name}: {len(queries)} queries x {args.passes} passes, p50 per pass "
              + ", ".join(f"{x:.2f}" for x in p50s) + " ms", flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
