"""Scale benchmark: a streamed synthetic corpus of 100k-1M documents, indexed in bounded memory.

For each corpus size (a fresh subprocess each, so peak RSS is per size):

* the corpus (bench/scale_corpus.py: topics, sub-topics, near-duplicate families; 64-160 tokens,
  d = 128) is generated block by block and streamed into ``MuveraIndex.add`` -- never whole in RAM;
* the same pass computes the ground truth: brute-force Chamfer of every sample query against every
  block (our float16 kernel, both cores), merged into a top-100;
* the index (default ``backend="auto"``, ``residual:2`` codes, float16 exact tier spilled to disk)
  is saved, reloaded with its codes in RAM, and searched:
  - p50/p95 latency one query at a time on one thread, QPS on two threads (one batch),
  - Recall@1 / Recall@10 against the exact top-10, and the score ratio: exact Chamfer of our top-10
    over that of the true top-10;
  for several candidate counts and nprobe values, and optionally other backends (rebuilt from the
  saved codes) at the smaller sizes;
* build time (generation and ground truth excluded), peak RSS, RSS after loading, bytes per
  document (candidate index + codes + codec tables in RAM; exact tier on disk).

Baselines in the same run: brute force (the ground truth pass) and, with ``--warp-docs N``, WARP
(xtr-warp-rs, its own venv via bench/warp_runner.py) against our index on the first N documents.

    python bench/bench_scale.py                                  # 100k and 300k
    python bench/bench_scale.py --sizes 1000000 --queries 50     # the million
    python bench/bench_scale.py --sizes 100000 --backends exact "IVF1024,PQ2560x4fs" --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from scale_corpus import SyntheticCorpus  # noqa: E402


def _rss_mb() -> Dict[str, float]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            for key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                if line.startswith(key + ":"):
                    out[key] = int(line.split()[1]) / 1024
    return out


def _merge_topk(best_rows, best_scores, rows, scores, k):
    r = np.concatenate([best_rows, rows], axis=1)
    s = np.concatenate([best_scores, scores], axis=1)
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(r, order, axis=1), np.take_along_axis(s, order, axis=1)


def _dir_bytes(path: Path, prefix: str = "") -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file() and p.name.startswith(prefix))


def evaluate(index, qtok, qoff, gt_rows, gt_scores, *, candidates, params, rescore=None, repeats=1):
    """Latency (1 thread, one query at a time), QPS (2 threads, one batch), recall, score ratio."""
    import faiss

    nq = len(qoff) - 1
    index.num_threads = 1
    faiss.omp_set_num_threads(1)
    lat, ids = [], np.empty((nq, 10), dtype=np.int64)
    for _ in range(repeats):
        for i in range(nq):
            q = qtok[qoff[i]: qoff[i + 1]]
            t = time.perf_counter()
            r, _ = index.search([q], k=10, candidates=candidates, params=params, rescore=rescore)
            lat.append(time.perf_counter() - t)
            ids[i] = r[0]
    index.num_threads = 2
    faiss.omp_set_num_threads(2)
    t = time.perf_counter()
    index.search(qtok, k=10, candidates=candidates, params=params, rescore=rescore, offsets=qoff)
    qps = nq / (time.perf_counter() - t)
    r1 = float(np.mean(ids[:, 0] == gt_rows[:, 0]))
    r10 = float(np.mean([len(set(ids[i]) & set(gt_rows[i, :10])) / 10 for i in range(nq)]))
    # Exact (float16 exact tier) Chamfer of our top-10, over the true top-10's.
    _, ours = index.exact_tier.rerank(qtok, qoff, 10, ids, None, 2)
    ours = np.where(np.isfinite(ours), ours, 0.0)
    ratio = float(np.mean(ours.sum(axis=1) / gt_scores[:, :10].sum(axis=1)))
    lat_ms = np.array(lat) * 1000
    return {"candidates": candidates, "params": params, "rescore": rescore,
            "p50_ms": float(np.percentile(lat_ms, 50)), "p95_ms": float(np.percentile(lat_ms, 95)),
            "qps_2threads": qps, "recall@1": r1, "recall@10": r10, "score_ratio": ratio}


def run_size(args: argparse.Namespace, n_docs: int) -> Dict[str, Any]:
    import faiss

    import muvera
    from muvera.store import TokenStore

    work = Path(args.workdir) / f"n{n_docs}"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    corpus = SyntheticCorpus(n_docs, dim=args.dim, seed=args.seed)
    qtok, qoff, targets = corpus.queries(args.queries, args.q_tokens)
    cfg = muvera.FDEConfig.preset(args.preset, dimension=args.dim)
    index = muvera.MuveraIndex(cfg, backend=args.backend, token_codec=args.codec, keep_exact=True,
                               exact_spill_dir=work, num_threads=2)
    mean_len = (corpus.min_len + corpus.max_len) / 2
    index.store.reserve(int(n_docs * mean_len * 1.02), n_docs)
    gt_rows = np.full((len(targets), 100), -1, dtype=np.int64)
    gt_scores = np.full((len(targets), 100), -np.inf, dtype=np.float32)
    times = {"generate": 0.0, "ground_truth": 0.0}
    faiss.omp_set_num_threads(2)

    def stream():
        nonlocal gt_rows, gt_scores
        start = 0
        for b in range(corpus.num_blocks):
            t = time.perf_counter()
            tokens, lengths = corpus.block_docs(b)
            tok16 = tokens.astype(np.float16)
            times["generate"] += time.perf_counter() - t
            t = time.perf_counter()
            store = TokenStore.from_arrays(tok16, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), "float16")
            rows, scores = store.rerank(qtok, qoff, 100, None, None, 2)
            rows = np.where(rows >= 0, rows + start, -1)
            gt_rows, gt_scores = _merge_topk(gt_rows, gt_scores, rows, scores, 100)
            times["ground_truth"] += time.perf_counter() - t
            start += len(lengths)
            yield tok16, lengths

    t0 = time.perf_counter()
    index.add(stream(), progress=args.progress)
    index.wait_for_backend()  # a background crossing counts in the build
    wall = time.perf_counter() - t0
    build_s = wall - times["generate"] - times["ground_truth"]
    peak_build = _rss_mb()
    t = time.perf_counter()
    index.save(work / "index")
    save_s = time.perf_counter() - t
    active = getattr(index.backend, "active", index.backend.name)
    del index
    t = time.perf_counter()
    index = muvera.MuveraIndex.load(work / "index", mmap=False, num_threads=2)
    load_s = time.perf_counter() - t
    rss_loaded = _rss_mb()
    idx_dir = work / "index"
    exact_bytes = _dir_bytes(idx_dir, "exact_")
    ram_bytes = index.nbytes
    hit1 = float(np.mean(gt_rows[:, 0] == targets))
    report: Dict[str, Any] = {
        "n_docs": n_docs, "n_tokens": int(index.store.num_tokens), "queries": len(targets),
        "config": {"preset": args.preset, "dim": args.dim, "codec": args.codec, "backend": args.backend},
        "active_backend": active, "build_s": build_s, "generate_s": times["generate"],
        "ground_truth_s": times["ground_truth"], "save_s": save_s, "load_s": load_s,
        "brute_force_s_per_query_2threads": times["ground_truth"] / len(targets),
        "peak_rss_mb_build": peak_build.get("VmHWM"), "rss_mb_after_load": rss_loaded,
        "bytes_per_doc_ram": ram_bytes / n_docs,
        "bytes_per_doc_backend": index.backend.nbytes / n_docs,
        "bytes_per_doc_codes": (index.store.nbytes + index.store.codec.state_nbytes) / n_docs,
        "bytes_per_doc_exact_tier_disk": exact_bytes / n_docs,
        "index_dir_bytes": _dir_bytes(idx_dir),
        "target_is_exact_top1": hit1, "settings": []}
    print(json.dumps({k: v for k, v in report.items() if k != "settings"}, indent=1), flush=True)
    is_ivf = active.startswith("faiss:IVF")
    for c in args.candidates:
        for npb in (args.nprobe if is_ivf else [None]):
            params = {"nprobe": npb} if npb else None
            row = evaluate(index, qtok, qoff, gt_rows, gt_scores, candidates=c, params=params)
            row["backend"] = active
            report["settings"].append(row)
            print(json.dumps(row), flush=True)
    # Two tiers: rerank on the codes, then rescore the best `rescore` from the float16 exact tier.
    for c in args.candidates:
        for rs in args.rescore:
            params = {"nprobe": args.nprobe[0]} if is_ivf else None
            row = evaluate(index, qtok, qoff, gt_rows, gt_scores, candidates=c, params=params, rescore=rs)
            row["backend"] = active
            report["settings"].append(row)
            print(json.dumps(row), flush=True)
    for spec in args.backends:
        if n_docs > args.backends_max_docs:
            continue
        del index
        t = time.perf_counter()
        index = muvera.MuveraIndex.load(work / "index", mmap=False, backend=spec, num_threads=2)
        rebuild = time.perf_counter() - t
        if spec == "exact" and args.dump_fdes:  # inputs of bench/ann_candidates.py
            dump = Path(args.dump_fdes)
            dump.mkdir(parents=True, exist_ok=True)
            np.save(dump / "doc_fdes.npy", index.backend.inner.vectors if hasattr(index.backend, "inner")
                    else index.backend.vectors)
            np.save(dump / "query_fdes.npy", index.encode_packed_queries(qtok, qoff))
            np.save(dump / "gt.npy", gt_rows[:, :10])
        for c in args.candidates:
            nprobes = args.nprobe if "IVF" in spec else [None]
            for npb in nprobes:
                params = {"nprobe": npb} if npb else None
                row = evaluate(index, qtok, qoff, gt_rows, gt_scores, candidates=c, params=params)
                row.update(backend=spec, rebuild_s=rebuild, bytes_per_doc_backend=index.backend.nbytes / n_docs)
                report["settings"].append(row)
                print(json.dumps(row), flush=True)
    if args.warp_docs:
        report["warp"] = run_warp_subset(args, corpus, qtok, qoff, min(args.warp_docs, n_docs), cfg, work)
    report["peak_rss_mb"] = _rss_mb().get("VmHWM")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return report


def run_warp_subset(args, corpus, qtok, qoff, n, cfg, work) -> Dict[str, Any]:
    """WARP and our index on the first ``n`` documents (same tokens), ground truth on them."""
    import muvera
    from muvera.store import TokenStore
    from warp_baseline import run_warp

    toks, lens = [], []
    for b in range(-(-n // corpus.block)):
        t, ln = corpus.block_docs(b)
        toks.append(t.astype(np.float16))
        lens.append(ln)
    tok = np.concatenate(toks)
    lens = np.concatenate(lens)[:n]
    tok = tok[: int(lens.sum())]
    off = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    gt_rows, gt_scores = TokenStore.from_arrays(tok, off, "float16").rerank(qtok, qoff, 10, None, None, 2)
    t = time.perf_counter()
    index = muvera.MuveraIndex(cfg, backend=args.backend, token_codec=args.codec, keep_exact=True,
                               exact_spill_dir=work, num_threads=2)
    index.add(tok, lengths=lens)
    ours_build = time.perf_counter() - t
    ours = evaluate(index, qtok, qoff, gt_rows, gt_scores, candidates=args.candidates[0], params=None)
    ours.update(build_s=ours_build, bytes_per_doc_ram=index.nbytes / n)
    res = run_warp(tok, off, qtok, qoff, k=10, nbits=args.warp_nbits, threads=1,
                   build_threads=2, timeout=args.warp_timeout)
    ids = res["ids"]
    r1 = float(np.mean(ids[:, 0] == gt_rows[:, 0]))
    r10 = float(np.mean([len(set(ids[i]) & set(gt_rows[i])) / 10 for i in range(len(ids))]))
    lat = np.asarray(res["latency_ms"])
    warp = {"p50_ms": float(np.percentile(lat, 50)), "p95_ms": float(np.percentile(lat, 95)),
            "recall@1": r1, "recall@10": r10, "build_s": res.get("build_s"), "wall_s": res.get("wall_s"),
            "index_bytes": res.get("index_bytes")}
    return {"n_docs": n, "ours": ours, "warp": warp}


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000])
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--q-tokens", type=int, default=32)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--preset", default="10240")
    ap.add_argument("--codec", default="residual:2:k=1024",
                    help="token codec (PLAID's centroid count would take hours of k-means here)")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--candidates", type=int, nargs="+", default=[100, 200, 400])
    ap.add_argument("--nprobe", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--rescore", type=int, nargs="*", default=[30],
                    help="two-tier settings: rescore this many from the exact tier (at the first nprobe)")
    ap.add_argument("--backends", nargs="*", default=[], help="other backends, rebuilt from the saved codes")
    ap.add_argument("--backends-max-docs", type=int, default=100_000)
    ap.add_argument("--warp-docs", type=int, default=0, help="run WARP vs ours on the first N documents")
    ap.add_argument("--warp-nbits", type=int, default=4)
    ap.add_argument("--warp-timeout", type=float, default=3600)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--keep", action="store_true", help="keep the index directories")
    ap.add_argument("--dump-fdes", default=None,
                    help="with --backends exact: write doc/query FDEs and ground truth for ann_candidates.py")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--json", default=None)
    ap.add_argument("--one-size", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.workdir is None:
        args.workdir = tempfile.mkdtemp(prefix="muvera-scale-")
    if args.one_size is not None:
        rep = run_size(args, args.one_size)
        Path(args.out).write_text(json.dumps(rep, indent=1))
        return 0
    reports = []
    for n in args.sizes:
        out = Path(args.workdir) / f"report-{n}.json"
        cmd = [sys.executable, __file__, "--one-size", str(n), "--out", str(out)] + [
            a for a in (argv if argv is not None else sys.argv[1:])]
        if "--workdir" not in cmd:
            cmd += ["--workdir", args.workdir]
        t = time.perf_counter()
        rc = subprocess.call(cmd)
        if rc != 0:
            print(f"size {n}: failed (rc {rc})", file=sys.stderr)
            continue
        rep = json.loads(out.read_text())
        rep["process_wall_s"] = time.perf_counter() - t
        reports.append(rep)
        if args.json:
            Path(args.json).write_text(json.dumps(reports, indent=1))
    print()
    print("| docs | backend | candidates | nprobe | rescore | p50 ms | p95 ms | QPS (2 thr) | R@1 | R@10 | score ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for rep in reports:
        for s in rep["settings"]:
            npb = (s["params"] or {}).get("nprobe", "")
            print(f"| {rep['n_docs']:,} | {s['backend']} | {s['candidates']} | {npb} | {s['rescore'] or ''} | "
                  f"{s['p50_ms']:.2f} | {s['p95_ms']:.2f} | {s['qps_2threads']:.0f} | {s['recall@1']:.3f} | "
                  f"{s['recall@10']:.3f} | {s['score_ratio']:.4f} |")
    print()
    print("| docs | tokens | build s | peak RSS MB | RAM B/doc (backend + codes) | exact tier B/doc (disk) | "
          "brute force s/query (2 thr) |")
    print("|---|---|---|---|---|---|---|")
    for rep in reports:
        print(f"| {rep['n_docs']:,} | {rep['n_tokens']:,} | {rep['build_s']:.0f} | {rep['peak_rss_mb']:.0f} | "
              f"{rep['bytes_per_doc_ram']:.0f} ({rep['bytes_per_doc_backend']:.0f} + {rep['bytes_per_doc_codes']:.0f}) | "
              f"{rep['bytes_per_doc_exact_tier_disk']:.0f} | {rep['brute_force_s_per_query_2threads']:.2f} |")
        if "warp" in rep:
            w = rep["warp"]
            print(f"WARP vs ours on {w['n_docs']:,} docs: {json.dumps(w)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
