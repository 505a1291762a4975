"""The write-ahead log: what durability costs, and whether it holds under kill -9.

1. Throughput: the same adds (batches of B documents of 64 tokens, d = 128, 10240-d FDEs, the exact
   backend) into an index opened without a log, with ``MuveraIndex.open(path)`` (fsync per add)
   and with ``sync=False``, in one run, interleaved three times (medians); documents/s and the
   ratio to no log.
2. Crash trials: a writer process adds batches to an opened index and prints the count of
   acknowledged documents after each add; it is killed with SIGKILL at a random moment, then the
   index is loaded and checked: every acknowledged document present and whole, at most the add
   in flight beyond them. Repeated ``--trials`` times over the same index.

    python bench/bench_wal.py [--batches 1,10,100] [--docs 2000] [--trials 100]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

import muvera
from muvera import MuveraIndex

WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from muvera import FDEConfig, MuveraIndex
    cfg = FDEConfig(dimension=16, num_repetitions=4, num_simhash_projections=3)
    index = MuveraIndex.open(sys.argv[1], cfg, backend="exact")
    i = len(index)
    while True:
        n = 1 + i % 3
        docs = [np.random.default_rng(i + j).standard_normal((4, 16)).astype(np.float32) for j in range(n)]
        index.add(docs, ids=list(range(i, i + n)), metadata=[{"id": i + j} for j in range(n)])
        i += n
        print(i, flush=True)
""")


def throughput(batch: int, n_docs: int, root: Path, repeats: int = 3) -> dict:
    cfg = muvera.FDEConfig.preset("10240", dimension=128)
    rng = np.random.default_rng(0)
    docs = [rng.standard_normal((64, 128)).astype(np.float32) for _ in range(n_docs)]
    out = {"batch": batch}
    rates: dict = {"none": [], "wal": [], "wal-nosync": []}
    for rep in range(repeats):  # interleaved, the median of each: the machine's drift hits all alike
        for mode in rates:
            path = root / f"{mode}-{batch}-{rep}"
            shutil.rmtree(path, ignore_errors=True)
            # the baseline is the same opened index, without its log
            index = MuveraIndex.open(path, cfg, backend="exact", wal=mode != "none", sync=mode == "wal")
            t0 = time.perf_counter()
            for s in range(0, n_docs, batch):
                index.add(docs[s: s + batch])
            rates[mode].append(n_docs / (time.perf_counter() - t0))
            index.close()
            shutil.rmtree(path, ignore_errors=True)
    for mode, values in rates.items():
        out[mode] = float(np.median(values))
    out["wal / none"] = out["wal"] / out["none"]
    out["wal-nosync / none"] = out["wal-nosync"] / out["none"]
    return out


def crash_trials(trials: int, root: Path, seed: int = 0) -> dict:
    path = root / "crash"
    shutil.rmtree(path, ignore_errors=True)
    rng = np.random.default_rng(seed)
    acked, failures, landed_unacked = 0, [], 0
    for trial in range(trials):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True,
                                cwd=root)  # outside any checkout: its muvera/ has no built extension
        want = int(rng.integers(1, 8))
        seen = []
        while len(seen) < want:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(int(line))
        time.sleep(float(rng.uniform(0, 0.01)))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        acked = max([acked] + seen + [int(x) for x in proc.stdout.read().split()])
        index = MuveraIndex.load(path)
        have = sorted(index.ids)
        ok = have[:acked] == list(range(acked)) and len(have) <= acked + 3
        for x in (0, acked - 1) if ok and acked else ():
            doc = np.random.default_rng(x).standard_normal((4, 16)).astype(np.float32)
            ok &= bool(np.allclose(index.get_tokens(x).astype(np.float32), doc, atol=1e-2))
            ok &= index.metadata([x]) == [{"id": x}]
        if not ok or not seen:  # a writer that acknowledged nothing proves nothing
            failures.append(trial)
        landed_unacked += len(have) - acked
        acked = len(have)
    return {"trials": trials, "failures": failures, "documents": acked, "unacknowledged_landed": landed_unacked}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", default="1,10,100")
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        root = Path(tmp)
        rows = [throughput(int(b), args.docs, root) for b in args.batches.split(",")]
        print(f"{'batch':>6} {'no log docs/s':>14} {'log (fsync) docs/s':>19} {'ratio':>6} {'log, no fsync':>14} {'ratio':>6}")
        for r in rows:
            print(f"{r['batch']:>6} {r['none']:>14.0f} {r['wal']:>19.0f} {r['wal / none']:>6.2f} "
                  f"{r['wal-nosync']:>14.0f} {r['wal-nosync / none']:>6.2f}", flush=True)
        crash = crash_trials(args.trials, root) if args.trials else None
        if crash:
            print(f"kill -9 trials: {crash['trials']}, failures: {len(crash['failures'])} {crash['failures'][:10]}, "
                  f"documents at the end: {crash['documents']}, unacknowledged adds that landed: "
                  f"{crash['unacknowledged_landed']} documents")
    if args.json:
        Path(args.json).write_text(json.dumps({"throughput": rows, "crash": crash}, indent=1))


if __name__ == "__main__":
    main()
