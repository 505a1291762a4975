"""Adversarial pass over the public API: bad inputs a hostile or careless user might give.

Each case is one call that must fail cleanly. It is classified as

* ``handled``   -- ValueError / TypeError / KeyError / FileNotFoundError / ImportError whose message
  names the argument (the case lists the words it must contain);
* ``unclear``   -- one of those exceptions, but the message does not name the argument;
* ``other``     -- any other exception type (IndexError, ZeroDivisionError, RuntimeError, ...);
* ``accepted``  -- no exception: the bad input was silently taken;
* ``crash``     -- the process died, or hung for a minute (each case runs in its own child process).

    python bench/adversarial.py [--json out.json]

Prints a table per area and the totals.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict

CASES = r'''
import numpy as np, muvera, muvera.metadata, os, json, tempfile, pathlib
from muvera import FDEConfig, FDEEncoder, MuveraIndex
D = 8
CFG = FDEConfig.preset("1280", dimension=D)
rng = np.random.default_rng(0)
DOCS = [rng.normal(size=(int(n), D)).astype(np.float32) for n in rng.integers(2, 6, size=30)]
Q = [DOCS[0]]
TMP = pathlib.Path(tempfile.mkdtemp())
def idx(backend="exact", ids=None):
    i = MuveraIndex(CFG, backend=backend); i.add(DOCS, ids=ids); return i
def saved():
    p = TMP / f"i{len(list(TMP.iterdir()))}"; idx().save(p); return p
def edit(p, f):
    m = json.loads((p / "manifest.json").read_text()); f(m); (p / "manifest.json").write_text(json.dumps(m)); return p
CASES = {
 # area, name: (callable, words the message must contain)
 ("config", "dimension 0"): (lambda: FDEConfig(dimension=0), ["dimension"]),
 ("config", "dimension str"): (lambda: FDEConfig(dimension="8"), ["dimension"]),
 ("config", "k 31"): (lambda: FDEConfig(dimension=8, num_simhash_projections=31), ["num_simhash_projections"]),
 ("config", "R 0"): (lambda: FDEConfig(dimension=8, num_repetitions=0), ["num_repetitions"]),
 ("config", "huge final"): (lambda: FDEConfig(dimension=8, final_projection_dimension=2**40), ["final_projection_dimension"]),
 ("config", "huge fde"): (lambda: FDEConfig(dimension=1, num_simhash_projections=30), ["exceeds"]),
 ("config", "ams no proj"): (lambda: FDEConfig(dimension=8, projection_type="ams_sketch"), ["projection_dimension"]),
 ("config", "bad projection type"): (lambda: FDEConfig(dimension=8, projection_type="pca"), ["projection_type"]),
 ("config", "seed float"): (lambda: FDEConfig(dimension=8, seed=1.5), ["seed"]),
 ("config", "preset unknown"): (lambda: FDEConfig.preset("999", dimension=8), ["preset"]),
 ("encoder", "threads 0"): (lambda: FDEEncoder(CFG, num_threads=0), ["num_threads"]),
 ("encoder", "threads huge"): (lambda: FDEEncoder(CFG, num_threads=10**7), ["num_threads"]),
 ("encoder", "isa bogus"): (lambda: FDEEncoder(CFG, isa="sse9"), ["isa"]),
 ("encoder", "wrong dim"): (lambda: FDEEncoder(CFG).encode_documents([np.ones((3, D + 1))]), ["documents"]),
 ("encoder", "nan"): (lambda: FDEEncoder(CFG).encode_documents([np.full((3, D), np.nan)]), ["documents"]),
 ("encoder", "1e30 overflow"): (lambda: FDEEncoder(CFG).encode_queries([np.full((3, D), 1e38, np.float32)]), ["queries"]),
 ("encoder", "int dtype"): (lambda: FDEEncoder(CFG).encode_documents([np.ones((3, D), np.int32)]), ["documents"]),
 ("encoder", "complex"): (lambda: FDEEncoder(CFG).encode_documents([np.ones((3, D), np.complex64)]), ["documents"]),
 ("encoder", "object array"): (lambda: FDEEncoder(CFG).encode_documents(np.array([np.ones((2, D)), np.ones((3, D))], dtype=object)), ["documents"]),
 ("encoder", "lengths wrong sum"): (lambda: FDEEncoder(CFG).encode_documents(np.ones((5, D)), lengths=[2, 2]), ["lengths"]),
 ("encoder", "negative lengths"): (lambda: FDEEncoder(CFG).encode_documents(np.ones((5, D)), lengths=[7, -2]), ["lengths"]),
 ("encoder", "offsets decreasing"): (lambda: FDEEncoder(CFG).encode_documents(np.ones((5, D)), offsets=[0, 4, 2, 5]), ["offsets"]),
 ("encoder", "mask shape"): (lambda: FDEEncoder(CFG).encode_documents(np.ones((2, 3, D)), mask=np.ones((2, 4), bool)), ["mask"]),
 ("encoder", "mask values"): (lambda: FDEEncoder(CFG).encode_documents(np.ones((2, 3, D)), mask=np.full((2, 3), 2)), ["mask"]),
 ("encoder", "masked array"): (lambda: FDEEncoder(CFG).encode_documents([np.ma.masked_array(np.ones((2, D)))]), ["masked"]),
 ("encoder", "float spans"): (lambda: FDEEncoder(CFG).encode_spans(np.ones((5, D), np.float32), [0.5], [2], is_document=True), ["starts"]),
 ("encoder", "spans out of range"): (lambda: FDEEncoder(CFG).encode_spans(np.ones((5, D), np.float32), [4], [9], is_document=True), ["outside"]),
 ("encoder", "3-d single query"): (lambda: FDEEncoder(CFG).encode_query(np.ones((1, 2, D))), ["query"]),
 ("index", "backend int"): (lambda: MuveraIndex(CFG, backend=3), ["backend"]),
 ("index", "backend HNSW0"): (lambda: MuveraIndex(CFG, backend="HNSW0"), ["backend"]),
 ("index", "backend PQ x0"): (lambda: MuveraIndex(CFG, backend="PQ1280x0"), ["backend"]),
 ("index", "backend IVF0"): (lambda: MuveraIndex(CFG, backend="IVF0,Flat"), ["backend"]),
 ("index", "backend unknown kind"): (lambda: MuveraIndex(CFG, backend="nosuch:x"), ["backend"]),
 ("index", "codec int7"): (lambda: MuveraIndex(CFG, token_codec="int7"), ["token_codec"]),
 ("index", "config dict"): (lambda: MuveraIndex({"dimension": 8}), ["config"]),
 ("index", "model int"): (lambda: MuveraIndex(CFG, model=3), ["model"]),
 ("index", "empty add"): (lambda: MuveraIndex(CFG).add([]), ["documents"]),
 ("index", "zero-token doc"): (lambda: MuveraIndex(CFG).add([np.ones((0, D))]), ["documents"]),
 ("index", "duplicate ids"): (lambda: MuveraIndex(CFG).add(DOCS[:2], ids=[1, 1]), ["ids"]),
 ("index", "nan id"): (lambda: MuveraIndex(CFG).add(DOCS[:1], ids=[float("nan")]), ["ids"]),
 ("index", "negative id"): (lambda: MuveraIndex(CFG).add(DOCS[:1], ids=[-1]), ["ids"]),
 ("index", "mixed id kinds"): (lambda: MuveraIndex(CFG).add(DOCS[:2], ids=[1, "a"]), ["ids"]),
 ("index", "tuple id"): (lambda: MuveraIndex(CFG).add(DOCS[:1], ids=[(1, 2)]), ["ids"]),
 ("index", "ids count"): (lambda: MuveraIndex(CFG).add(DOCS[:2], ids=[1]), ["ids"]),
 ("index", "ids str not list"): (lambda: MuveraIndex(CFG).add(DOCS[:1], ids="a"), ["ids"]),
 ("index", "k 0"): (lambda: idx().search(Q, k=0), ["k"]),
 ("index", "k float"): (lambda: idx().search(Q, k=2.5), ["k"]),
 ("index", "candidates < k"): (lambda: idx().search(Q, k=5, candidates=2), ["candidates"]),
 ("index", "candidates str"): (lambda: idx().search(Q, candidates="100"), ["candidates"]),
 ("index", "ball carving nan"): (lambda: idx().search(Q, ball_carving=float("nan")), ["ball_carving"]),
 ("index", "params on exact"): (lambda: idx().search(Q, params={"nprobe": 3}), ["params"]),
 ("index", "efSearch 0"): (lambda: idx("HNSW8").search(Q, params={"efSearch": 0}), ["efSearch"]),
 ("index", "nprobe huge"): (lambda: idx("IVF2,Flat").search(Q, params={"nprobe": 10**9}), ["nprobe"]),
 ("index", "params list"): (lambda: idx("HNSW8").search(Q, params=[1]), ["params"]),
 ("index", "filter_ids int"): (lambda: idx().search(Q, filter_ids=5), ["filter_ids"]),
 ("index", "remove missing"): (lambda: idx().remove([999]), ["not in the index"]),
 ("index", "get_tokens missing"): (lambda: idx().get_tokens("zz"), ["not in the index"]),
 ("index", "queries wrong dim"): (lambda: idx().search([np.ones((2, D + 2))]), ["queries"]),
 ("index", "queries nan"): (lambda: idx().search([np.full((2, D), np.nan)]), ["queries"]),
 ("index", "num_threads setter"): (lambda: setattr(idx(), "num_threads", -1), ["num_threads"]),
 ("persistence", "save over a file"): (lambda: ((TMP / "afile").write_text("x"), idx().save(TMP / "afile")), ["path"]),
 ("persistence", "save with foreign .bak"): (lambda: ((TMP / "u.bak").mkdir(), idx().save(TMP / "u")), ["not written by muvera"]),
 ("persistence", "load nowhere"): (lambda: MuveraIndex.load(TMP / "nowhere"), ["path"]),
 ("persistence", "manifest not json"): (lambda: MuveraIndex.load(((lambda p: ((p / "manifest.json").write_text("{"), p)[1])(saved()))), ["manifest.json"]),
 ("persistence", "manifest edited seed"): (lambda: MuveraIndex.load(edit(saved(), lambda m: m["config"].update(seed=99))), ["manifest.json"]),
 ("persistence", "manifest fifo"): (lambda: MuveraIndex.load(((lambda p: ((p / "manifest.json").unlink(), os.mkfifo(p / "manifest.json"), p)[2])(saved()))), ["manifest.json"]),
 ("persistence", "manifest nested"): (lambda: MuveraIndex.load(((lambda p: ((p / "manifest.json").write_text("[" * 10**5 + "]" * 10**5), p)[1])(saved()))), ["manifest.json"]),
 ("persistence", "truncated tokens"): (lambda: MuveraIndex.load(((lambda p: ((p / "tokens.npy").write_bytes((p / "tokens.npy").read_bytes()[:50]), p)[1])(saved()))), ["tokens.npy"]),
 ("persistence", "load backend HNSW0"): (lambda: MuveraIndex.load(saved(), backend="HNSW0"), ["backend"]),
 ("chamfer", "empty document"): (lambda: muvera.chamfer(np.ones((2, D)), np.ones((0, D))), ["document"]),
 ("chamfer", "1e30 values"): (lambda: muvera.chamfer(np.full((2, D), 1e30), np.full((2, D), 1e30)), ["overflow"]),
 ("chamfer", "1-d query"): (lambda: muvera.chamfer(np.ones(D), np.ones((2, D))), ["query"]),
 ("chamfer", "dims differ"): (lambda: muvera.chamfer(np.ones((2, D)), np.ones((2, D + 1))), ["document"]),
 ("chamfer", "matrix empty list"): (lambda: muvera.chamfer_matrix([], [np.ones((2, D))]), ["queries"]),
 ("chamfer", "ball_carve offsets"): (lambda: muvera.ball_carve(np.ones((4, D), np.float32), np.array([0, 5]), 0.7), ["offsets"]),
 ("store", "codec bogus"): (lambda: muvera.TokenStore(D, "bf8"), ["token_codec"]),
 ("store", "compact keep size"): (lambda: muvera.TokenStore(D).compact(np.ones(3, bool)), ["keep"]),
 ("backend", "factory garbage"): (lambda: muvera.make_backend("\x00\x01", 8), ["backend"]),
 ("backend", "register bad kind"): (lambda: muvera.register_backend("Bad Kind", lambda o, d: None), ["kind"]),
 ("eval", "cache shard_size 0"): (lambda: __import__("muvera.eval.cache", fromlist=["x"]).encode_cached(TMP / "c", ["a"], lambda t: [np.ones((1, 4))] * len(t), shard_size=0, progress=False), ["shard_size"]),
 ("eval", "cache wrong count"): (lambda: __import__("muvera.eval.cache", fromlist=["x"]).encode_cached(TMP / "c2", ["a", "b"], lambda t: [np.ones((1, 4))], shard_size=5, progress=False), ["encode"]),
 # issue 19: every change all or nothing
 ("transaction", "default id past int64"): (lambda: (lambda i: (i.add(DOCS[:1], ids=[2**63 - 1]), i.add(DOCS[1:2])))(MuveraIndex(CFG, backend="exact")), ["ids", "2**63"]),
 ("transaction", "metadata key case clash"): (lambda: (lambda i: (i.add(DOCS[:1], metadata=[{"year": 1}]), i.add(DOCS[1:2], ids=[99], metadata=[{"Year": 2}])))(MuveraIndex(CFG, backend="exact")), ["metadata", "case"]),
 ("transaction", "metadata keys a/A"): (lambda: MuveraIndex(CFG, backend="exact").add(DOCS[:1], metadata=[{"a": 1, "A": 2}]), ["metadata", "case"]),
 ("transaction", "metadata reserved other case"): (lambda: MuveraIndex(CFG, backend="exact").add(DOCS[:1], metadata=[{"_ROW": 1}]), ["metadata"]),
 ("magnitude", "residual codec 1e19"): (lambda: MuveraIndex(CFG, backend="exact", token_codec="residual:2").add([rng.normal(size=(600, D)).astype(np.float32) * 1e19]), ["tokens"]),
 ("magnitude", "auto PQ crossing 1e20"): (lambda: MuveraIndex(CFG, backend="auto", token_codec="float32").add([d * (1e20 if j == 5 else 1) for j, d in enumerate(DOCS * 70)]), ["documents"]),
 ("where", "runaway self-join"): (lambda: (setattr(muvera.metadata.MetadataStore, "WHERE_TIME_LIMIT", 2.0), (lambda i: (i.add([rng.normal(size=(2, D)).astype(np.float32) for _ in range(300)], metadata=[{"y": j} for j in range(300)]), i.search(Q, k=3, where="(SELECT count(*) FROM meta a, meta b, meta c, meta d) > 0")))(MuveraIndex(CFG, backend="exact"))), ["where", "limit"]),
 ("stream", "dict ids as a string"): (lambda: MuveraIndex(CFG, backend="exact").add(iter([{"tokens": np.ones((6, D), np.float32), "lengths": [3, 3], "ids": "ab"}])), ["ids"]),
 ("stream", "metadata in batch and argument"): (lambda: MuveraIndex(CFG, backend="exact").add(iter([{"tokens": np.ones((6, D), np.float32), "lengths": [3, 3], "metadata": [{"a": 1}] * 2}]), metadata=[{"b": 1}] * 2), ["metadata"]),
 ("load", "flipped npy header, verify=False"): (lambda: (lambda p: ((p / "tokens.npy").write_bytes(bytes(b ^ (0x5A if j == 20 else 0) for j, b in enumerate((p / "tokens.npy").read_bytes()))), MuveraIndex.load(p, verify=False)))(saved()), ["tokens.npy"]),
 ("load", "deeply nested metadata"): (lambda: MuveraIndex(CFG, backend="exact").add(DOCS[:1], metadata=[{"x": __import__("functools").reduce(lambda a, _: [a], range(100000), [])}]), ["metadata"]),
 ("build", "zero document length"): (lambda: (lambda r: (np.save(r / "a.tokens.npy", np.ones((4, D), np.float16)), np.save(r / "a.lengths.npy", np.array([4, 0])), __import__("muvera.build", fromlist=["x"]).build_index(r, TMP / "b0", CFG, progress=False)))((TMP / "zsrc").mkdir() or TMP / "zsrc"), ["a.tokens.npy", "length 0"]),
 ("eval", "beir missing"): (lambda: __import__("muvera.eval.beir", fromlist=["x"]).load_beir(TMP / "nobeir"), ["missing"]),
 ("eval", "model spec bogus"): (lambda: __import__("muvera.models", fromlist=["x"]).load_model("nosuch:x"), ["spec"]),
}
'''

RUNNER = r'''
import json, sys, traceback
exec(open(sys.argv[1]).read())
keys = sorted(CASES)
if sys.argv[2] == "count":
    print(len(keys)); sys.exit(0)
for i in [int(sys.argv[2])]:
    area, name = keys[i]
    fn, words = CASES[keys[i]]
    print(json.dumps({"i": i, "start": True}), flush=True)
    try:
        fn()
        verdict, msg = "accepted", ""
    except (ValueError, TypeError, KeyError, FileNotFoundError, ImportError) as exc:
        msg = str(exc)
        verdict = "handled" if all(w.lower() in msg.lower() for w in words) else "unclear"
    except BaseException as exc:  # noqa: BLE001
        verdict, msg = "other", f"{type(exc).__name__}: {exc}"
    print(json.dumps({"i": i, "area": area, "name": name, "verdict": verdict, "message": msg[:300]}), flush=True)
'''


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cases_file = os.path.join(tmp, "cases.py")
        with open(cases_file, "w") as f:
            f.write(CASES)
        n = int(subprocess.run([sys.executable, "-c", RUNNER, cases_file, "count"], capture_output=True,
                               text=True, cwd=tmp, check=True).stdout)
        results = []
        for i in range(n):
            try:
                proc = subprocess.run([sys.executable, "-c", RUNNER, cases_file, str(i)], capture_output=True,
                                      text=True, cwd=tmp, timeout=60)
                done = [json.loads(line) for line in proc.stdout.splitlines() if '"verdict"' in line]
                why = proc.stderr[-300:]
            except subprocess.TimeoutExpired:
                done, why = [], "hung for 60 s"
            results.append(done[0] if done else {"i": i, "area": "?", "name": f"case {i}", "verdict": "crash",
                                                 "message": why})
    by_area = defaultdict(Counter)
    for r in results:
        by_area[r["area"]][r["verdict"]] += 1
    cols = ["handled", "unclear", "other", "accepted", "crash"]
    print(f"{'area':12s} {'tried':>5s} " + " ".join(f"{c:>8s}" for c in cols))
    total = Counter()
    for area in sorted(by_area):
        c = by_area[area]
        total.update(c)
        print(f"{area:12s} {sum(c.values()):5d} " + " ".join(f"{c[k]:8d}" for k in cols))
    print(f"{'total':12s} {sum(total.values()):5d} " + " ".join(f"{total[k]:8d}" for k in cols))
    for r in results:
        if r["verdict"] != "handled":
            print(f"  {r['verdict']:8s} {r['area']}/{r['name']}: {r['message'][:200]}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
