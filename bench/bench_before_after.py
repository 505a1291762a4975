"""Any benchmark script, run against two builds of muvera side by side: a baseline package and
this build, alternating, in one run; every timing it reports, with the ratio.

    git worktree add /tmp/base_src <commit>          # the baseline's tree
    (cd /tmp/base_src && pip wheel --no-deps --no-build-isolation . -w /tmp/basewhl)
    python -m zipfile -e /tmp/basewhl/*.whl /tmp/base_pkg
    python bench/bench_before_after.py --baseline /tmp/base_pkg --rounds 2 \\
        -- bench/bench_codecs.py --repeats 20

The script after ``--`` is this tree's, run in a fresh process per side and round, once with the
baseline package first on ``PYTHONPATH`` (its subprocesses too) and once with this build. Its report is the last line of
its output that parses as a JSON object (or the file given by ``--json-file``, which the script
writes when given ``{json}`` in its arguments). Numeric leaves whose key names a time (``ms``,
``_s``, ``seconds``) are timings: the table gives each side's median over rounds and
``this / baseline`` (below 1 is faster), and the same for each side's best round (on a shared
machine a slow round is noise, a fast one is not) (throughputs, ``qps`` and ``*_per_s``, are inverted to
match). Other numeric leaves (recall, scores, bytes) must agree:
they are listed where they differ.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

import re

TIME_WORDS = {"ms", "us", "s", "sec", "seconds", "latency", "p50", "p90", "p95", "p99"}
RATE_WORDS = {"qps", "per_s", "docs_per_s"}
# Put first on PYTHONPATH for the baseline side (with the baseline package after it): a
# development checkout's editable-install finder sits on sys.meta_path ahead of sys.path and would
# win; this drops it in every process of that side, subprocesses included.
SITECUSTOMIZE = """
import sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__.lower()]
"""


def flatten(obj: Any, prefix: str = "") -> Dict[str, float]:
    out: Dict[str, float] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.update(flatten(v, f"{prefix}[{i}]"))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        out[prefix] = float(obj)
    return out


def words(key: str) -> set:
    return set(re.split(r"[^a-z0-9]+", key.rsplit(".", 1)[-1].lower()))


def is_time(key: str) -> bool:
    w = words(key)
    return bool(w & TIME_WORDS) and "ratio" not in w and "to" not in w


def is_rate(key: str) -> bool:
    leaf = key.rsplit(".", 1)[-1].lower()
    return "qps" in words(key) or leaf.endswith("per_s")


def is_derived(key: str) -> bool:  # a ratio of two timings (e.g. ratio_to_float16): no check
    return "ratio" in words(key) and "to" in words(key)


def run_side(base: str, hook: Path, script: List[str], json_file: Optional[Path]) -> Dict[str, float]:
    argv = [a.replace("{json}", str(json_file)) if json_file else a for a in script]
    env = dict(os.environ)
    if base:
        env["PYTHONPATH"] = os.pathsep.join([str(hook), base] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    where = subprocess.run([sys.executable, "-c", "import muvera; print(muvera.__version__, muvera.__file__)"],
                           env=env, cwd=hook, capture_output=True, text=True, check=True).stdout.strip()
    if base and base not in where:
        raise SystemExit(f"the baseline side imports {where}, not the package under {base}")
    print(f"# {'baseline' if base else 'this build'}: muvera {where}", file=sys.stderr, flush=True)
    # From a neutral folder: a checkout's muvera/ source folder must not shadow either side.
    proc = subprocess.run([sys.executable, *argv], env=env, cwd=hook, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{'baseline' if base else 'this build'} failed:\n{proc.stderr[-4000:]}")
    if json_file is not None:
        return flatten(json.loads(json_file.read_text()))
    for line in reversed(proc.stdout.splitlines()):
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            return flatten(obj)
    raise SystemExit("no JSON object in the script's output")


def main() -> None:
    argv = sys.argv[1:]
    if "--" not in argv:
        raise SystemExit("usage: bench_before_after.py --baseline DIR [--rounds N] -- SCRIPT [ARGS]")
    cut = argv.index("--")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", required=True, help="a folder holding the baseline's muvera/ package")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json-out", help="write both sides' medians and the ratios here")
    args = ap.parse_args(argv[:cut])
    script = argv[cut + 1:]
    if script:
        script[0] = str(Path(script[0]).resolve())
    base = str(Path(args.baseline).resolve())
    if not (Path(base) / "muvera" / "__init__.py").is_file():
        raise SystemExit(f"--baseline: no muvera/__init__.py under {base}")
    runs: Dict[str, List[Dict[str, float]]] = {"baseline": [], "this": []}
    with tempfile.TemporaryDirectory() as tmp:
        hook = Path(tmp) / "hook"
        hook.mkdir()
        (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
        jf = Path(tmp) / "report.json" if any("{json}" in a for a in script) else None
        for r in range(args.rounds):
            order = (("baseline", base), ("this", "")) if r % 2 == 0 else (("this", ""), ("baseline", base))
            for name, path in order:
                runs[name].append(run_side(path, hook, script, jf))
                print(f"round {r + 1}: {name} done", file=sys.stderr, flush=True)
    keys = [k for k in runs["this"][0] if all(k in rr for side in runs.values() for rr in side)]
    med = {side: {k: statistics.median(rr[k] for rr in runs[side]) for k in keys} for side in runs}
    # The best round of each side too: on a shared VM a slow round is noise, a fast one is not.
    best = {side: {k: (max if is_rate(k) else min)(rr[k] for rr in runs[side]) for k in keys} for side in runs}
    print(f"{' '.join(script)}  ({args.rounds} rounds, medians)")
    print(f"{'timing':60s} {'baseline':>12s} {'this':>12s} {'this/base':>9s} {'best/best':>9s}")
    ratios, best_ratios = {}, {}
    for k in keys:
        b, t = med["baseline"][k], med["this"][k]
        bb, bt = best["baseline"][k], best["this"][k]
        if is_time(k):
            ratios[k] = t / b if b > 0 else float("nan")
            best_ratios[k] = bt / bb if bb > 0 else float("nan")
        elif is_rate(k):  # throughput: base / this, so that below 1 is faster here too
            ratios[k] = b / t if t > 0 else float("nan")
            best_ratios[k] = bb / bt if bt > 0 else float("nan")
        else:
            continue
        print(f"{k[:60]:60s} {b:12.4g} {t:12.4g} {ratios[k]:9.3f} {best_ratios[k]:9.3f}")
    if ratios:
        finite = sorted(v for v in ratios.values() if v == v)
        fb = sorted(v for v in best_ratios.values() if v == v)
        print(f"timings: {len(finite)}, median this/base {statistics.median(finite):.3f}, "
              f"range {finite[0]:.3f}-{finite[-1]:.3f}; best rounds: median {statistics.median(fb):.3f}, "
              f"range {fb[0]:.3f}-{fb[-1]:.3f}")
    differ = [k for k in keys if k not in ratios and not is_derived(k) and med["baseline"][k] != med["this"][k]]
    for k in differ:
        print(f"differs: {k} baseline {med['baseline'][k]:.6g} this {med['this'][k]:.6g}")
    if not differ:
        print("every other figure (recall, scores, sizes) is equal")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"script": script, "medians": med, "ratios": ratios, "best": best,
                                                   "best_ratios": best_ratios, "rounds": runs}, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
