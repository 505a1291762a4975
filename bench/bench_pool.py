"""Small-call latency of the C++ core against another build of it, side by side: one-query
encoding, an 8-document encode and a 200-candidate rerank on 2 threads (where starting threads
per call, before the shared pool, would show).

    pip wheel --no-deps . -w /tmp/base   # from the baseline's checkout, then unpack it:
    python -m zipfile -e /tmp/base/*.whl /tmp/base/pkg && mv /tmp/base/pkg/muvera /tmp/base/pkg/muvera_base
    python bench/bench_pool.py --baseline /tmp/base/pkg [--rounds 3]

The baseline package is imported as ``muvera_base`` (its modules import each other relatively),
each side in its own process, alternating, medians of 2,000 calls.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, sys, time, numpy as np
if sys.argv[1]:
    sys.path.insert(0, sys.argv[1])
    import muvera_base as muvera
    from muvera_base import _core
else:
    import muvera
    from muvera import _core
enc = muvera.FDEEncoder(muvera.FDEConfig.preset("10240", dimension=128), num_threads=2)
rng = np.random.default_rng(0)
q = rng.standard_normal((32, 128)).astype(np.float32)
docs = rng.standard_normal((800, 128)).astype(np.float32)
lens = np.full(8, 100)
dt = rng.standard_normal((2000 * 64, 128)).astype(np.float16)
doff = np.arange(0, 2000 * 64 + 1, 64, dtype=np.int64)
cand = rng.choice(2000, (1, 200), replace=False).astype(np.int64)
qoff = np.array([0, 32], dtype=np.int64)
def p50(fn, n=2000):
    for _ in range(50):
        fn()
    ts = []
    for _ in range(n):
        t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
    return float(np.median(ts) * 1e6)
print(json.dumps({
    "encode 1 query": p50(lambda: enc.encode_queries([q])),
    "encode 8 documents": p50(lambda: enc.encode_documents(docs, lengths=lens)),
    "rerank 200 candidates": p50(lambda: _core.chamfer_topk(q, qoff, dt, doff, cand, None, 10, 2, "")),
}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", required=True, help="a folder holding the baseline as muvera_base/")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    runs = {"baseline": [], "this build": []}
    for _ in range(args.rounds):
        for name, path in (("baseline", args.baseline), ("this build", "")):
            out = subprocess.run([sys.executable, "-c", CHILD, path], capture_output=True, text=True, check=True)
            runs[name].append(json.loads(out.stdout))
    print(f"{'p50 us (median of rounds)':<26}{'baseline':>10}{'this build':>12}{'ratio':>8}")
    for key in runs["baseline"][0]:
        a = sorted(r[key] for r in runs["baseline"])[len(runs["baseline"]) // 2]
        b = sorted(r[key] for r in runs["this build"])[len(runs["this build"]) // 2]
        print(f"{key:<26}{a:>10.1f}{b:>12.1f}{b / a:>8.2f}")


if __name__ == "__main__":
    main()
