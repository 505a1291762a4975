"""The write-ahead log: what durability costs, and whether it holds under kill -9.

1. Throughput: the same adds (batches of B documents of 64 tokens, d = 128, 10240-d FDEs, the exact
   backend) from W writer threads into an index opened without a log, with ``MuveraIndex.open(path)``
   (fsync per add), with ``group_commit=True`` (concurrent adds share flushes) and with
   ``sync=False``, in one run, interleaved three times (medians); documents/s and the ratio to
   no log.
2. Crash trials: a writer process adds batches to an opened index and prints the count of
   acknowledged documents after each add; it is killed with SIGKILL at a random moment, then the
   index is loaded and checked: every acknowledged document present and whole, at most the add
   in flight beyond them. Repeated ``--trials`` times over the same index. ``--group-trials``:
   the same with group commit and four writer threads (every acknowledged id present and whole,
   at most one add in flight per thread beyond them).

    python bench/bench_wal.py [--batches 1,10,100] [--writers 1,8] [--docs 2000] [--repeats 3]
                              [--trials 100] [--group-trials 100]
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
import threading
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


GROUP_WRITER = textwrap.dedent("""
    import sys, threading
    import numpy as np
    from muvera import FDEConfig, MuveraIndex
    cfg = FDEConfig(dimension=16, num_repetitions=4, num_simhash_projections=3)
    index = MuveraIndex.open(sys.argv[1], cfg, backend="exact", group_commit=True)
    W = int(sys.argv[2])
    start = max(index.ids, default=-1) + 1
    out = threading.Lock()

    def writer(t):
        k = 0
        while True:
            x = start + k * W + t
            doc = np.random.default_rng(x).standard_normal((4, 16)).astype(np.float32)
            index.add([doc], ids=[x], metadata=[{"id": x}])
            with out:
                print(x, flush=True)
            k += 1

    for t in range(W):
        threading.Thread(target=writer, args=(t,), daemon=True).start()
    threading.Event().wait()
""")

MODES = {"none": {"wal": False}, "wal": {}, "wal-group": {"group_commit": True}, "wal-nosync": {"sync": False}}


def throughput(batch: int, n_docs: int, root: Path, writers: int = 1, repeats: int = 3) -> dict:
    cfg = muvera.FDEConfig.preset("10240", dimension=128)
    rng = np.random.default_rng(0)
    docs = [rng.standard_normal((64, 128)).astype(np.float32) for _ in range(n_docs)]
    out = {"batch": batch, "writers": writers}
    rates: dict = {mode: [] for mode in MODES}
    for rep in range(repeats):  # interleaved, the median of each: the machine's drift hits all alike
        for mode, options in MODES.items():
            path = root / f"{mode}-{batch}-{writers}-{rep}"
            shutil.rmtree(path, ignore_errors=True)
            # the baseline is the same opened index, without its log
            index = MuveraIndex.open(path, cfg, backend="exact", **options)
            share = [range(t * batch, n_docs, writers * batch) for t in range(writers)]

            def write(starts):
                for s in starts:
                    index.add(docs[s: s + batch])

            threads = [threading.Thread(target=write, args=(share[t],)) for t in range(writers)]
            t0 = time.perf_counter()
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            rates[mode].append(n_docs / (time.perf_counter() - t0))
            assert len(index) == n_docs
            index.close()
            shutil.rmtree(path, ignore_errors=True)
    for mode, values in rates.items():
        out[mode] = float(np.median(values))
    for mode in MODES:
        if mode != "none":
            out[f"{mode} / none"] = out[mode] / out["none"]
    return out


def _kill_after(args: list, want: int, rng: np.random.Generator, root: Path) -> list:
    """Start a writer process, let it acknowledge ``want`` writes (one printed number each), kill
    it with SIGKILL a random moment later; every number it printed."""
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, text=True,
                            cwd=root)  # outside any checkout: its muvera/ has no built extension
    seen = []
    while len(seen) < want:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(int(line))
    time.sleep(float(rng.uniform(0, 0.01)))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return seen + [int(x) for x in proc.stdout.read().split()]


def crash_trials(trials: int, root: Path, seed: int = 0) -> dict:
    path = root / "crash"
    shutil.rmtree(path, ignore_errors=True)
    rng = np.random.default_rng(seed)
    acked, failures, landed_unacked = 0, [], 0
    for trial in range(trials):
        seen = _kill_after(["-c", WRITER, str(path)], int(rng.integers(1, 8)), rng, root)
        acked = max([acked] + seen)
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


def crash_trials_group(trials: int, root: Path, writers: int = 4, seed: int = 0) -> dict:
    """Crash trials with group commit and ``writers`` threads adding one document each time."""
    path = root / "crash-group"
    shutil.rmtree(path, ignore_errors=True)
    rng = np.random.default_rng(seed)
    acked: set = set()
    failures, landed_unacked, kept = [], 0, set()
    for trial in range(trials):
        seen = _kill_after(["-c", GROUP_WRITER, str(path), str(writers)], int(rng.integers(1, 40)), rng, root)
        acked |= set(seen)
        index = MuveraIndex.load(path)
        have = set(index.ids)
        new = have - kept
        ok = bool(seen) and acked <= have and len(new - acked) <= writers
        for x in sorted(seen)[:2] + sorted(seen)[-2:] if ok else ():
            doc = np.random.default_rng(x).standard_normal((4, 16)).astype(np.float32)
            ok &= bool(np.allclose(index.get_tokens(x).astype(np.float32), doc, atol=1e-2))
            ok &= index.metadata([x]) == [{"id": x}]
        if not ok:
            failures.append(trial)
        landed_unacked += len(new - acked)
        kept = acked = have
    return {"trials": trials, "writers": writers, "failures": failures, "documents": len(kept),
            "unacknowledged_landed": landed_unacked}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", default="1,10,100")
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--writers", default="1,8", help="writer threads (each its share of the adds)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats per row (medians)")
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--group-trials", type=int, default=100)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        root = Path(tmp)
        print(f"{'batch':>6} {'writers':>7} {'no log docs/s':>14} {'log (fsync)':>12} {'ratio':>6} "
              f"{'group commit':>13} {'ratio':>6} {'log, no fsync':>14} {'ratio':>6}")
        rows = []
        for b in args.batches.split(","):
            for w in args.writers.split(","):
                r = throughput(int(b), args.docs, root, writers=int(w), repeats=args.repeats)
                rows.append(r)
                print(f"{r['batch']:>6} {r['writers']:>7} {r['none']:>14.0f} {r['wal']:>12.0f} {r['wal / none']:>6.2f} "
                      f"{r['wal-group']:>13.0f} {r['wal-group / none']:>6.2f} "
                      f"{r['wal-nosync']:>14.0f} {r['wal-nosync / none']:>6.2f}", flush=True)
        crash = crash_trials(args.trials, root) if args.trials else None
        if crash:
            print(f"kill -9 trials: {crash['trials']}, failures: {len(crash['failures'])} {crash['failures'][:10]}, "
                  f"documents at the end: {crash['documents']}, unacknowledged adds that landed: "
                  f"{crash['unacknowledged_landed']} documents")
        group = crash_trials_group(args.group_trials, root) if args.group_trials else None
        if group:
            print(f"kill -9 trials, group commit, {group['writers']} writer threads: {group['trials']}, failures: "
                  f"{len(group['failures'])} {group['failures'][:10]}, documents at the end: {group['documents']}, "
                  f"unacknowledged adds that landed: {group['unacknowledged_landed']} documents")
    if args.json:
        Path(args.json).write_text(json.dumps({"throughput": rows, "crash": crash, "group_crash": group}, indent=1))


if __name__ == "__main__":
    main()
