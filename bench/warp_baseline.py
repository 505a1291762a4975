"""WARP baseline (``xtr-warp-rs``) on our token vectors, run from its own virtual environment.

xtr-warp-rs pins torch 2.11 (ours is 2.13), so it never runs in our interpreter: ``run_warp``
writes the arrays to a work folder and runs ``bench/warp_runner.py`` with the WARP venv's python
(made by ``bash bench/setup_warp_env.sh``; default ``~/.cache/muvera/warp-venv``, or
``$MUVERA_WARP_VENV``). This module imports only NumPy and the standard library.

    from warp_baseline import run_warp
    res = run_warp(doc_tokens, doc_offsets, query_tokens, query_offsets, k=100, nbits=4, threads=1)
    res["ids"]          # (n_queries, k) int64 doc rows (positions in doc_offsets order), -1 padded
    res["scores"]       # (n_queries, k) float32 WARP scores, NaN padded
    res["p50_ms"], res["p95_ms"], res["build_s"], res["index_bytes"], res["bytes_per_token"],
    res["search_bytes"], res["search_bytes_per_token"], res["warp_version"], res["torch_version"]

Self-check (synthetic clustered corpus; WARP top-10 vs brute-force MaxSim)::

    bash bench/setup_warp_env.sh
    python bench/warp_baseline.py [--docs 2000] [--queries 50] [--nbits 4] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Optional, Sequence

import numpy as np

__all__ = ["run_warp", "warp_python", "warp_available", "exact_maxsim_topk", "synthetic_corpus"]

RUNNER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "warp_runner.py")
SETUP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "setup_warp_env.sh")

# Options forwarded to warp_runner.py (see its DEFAULTS); None means WARP's own choice.
_RUNNER_OPTIONS = ("nprobe", "t_prime", "bound", "max_candidates", "centroid_score_threshold",
                   "batch_size", "kmeans_niters", "max_points_per_centroid", "n_samples_kmeans",
                   "num_partitions", "seed", "warmup", "repeats", "build_threads", "mmap",
                   "keep_index", "index_dir", "reuse_index")


def _default_venv() -> str:
    return os.environ.get("MUVERA_WARP_VENV") or os.path.join(
        os.path.expanduser("~"), ".cache", "muvera", "warp-venv")


def warp_python(venv: Optional[str] = None) -> str:
    """Path of the WARP venv's python; FileNotFoundError (saying how to make it) if it is missing."""
    venv = venv or _default_venv()
    py = os.path.join(venv, "bin", "python")
    if not os.path.exists(py):
        raise FileNotFoundError(
            f"WARP virtual environment not found at {venv!r} (no {py}). Create it with "
            f"`bash bench/setup_warp_env.sh` (it installs xtr-warp-rs and the torch it pins into "
            f"its own venv; set MUVERA_WARP_VENV to put it elsewhere), or pass venv=.")
    return py


def warp_available(venv: Optional[str] = None) -> bool:
    """True when the WARP venv exists and imports xtr_warp."""
    try:
        py = warp_python(venv)
    except FileNotFoundError:
        return False
    r = subprocess.run([py, "-c", "import xtr_warp"], capture_output=True)
    return r.returncode == 0


def _check_packed(tokens, offsets, what: str):
    tokens = np.asarray(tokens)
    offsets = np.asarray(offsets, dtype=np.int64)
    if tokens.ndim != 2:
        raise ValueError(f"{what}_tokens must be 2-D (T, d), got shape {tokens.shape}")
    if offsets.ndim != 1 or len(offsets) < 2 or offsets[0] != 0 or offsets[-1] != len(tokens) \
            or np.any(np.diff(offsets) < 0):
        raise ValueError(f"{what}_offsets must be non-decreasing int64 from 0 to {len(tokens)} "
                         f"(length n+1), got {offsets[:3]}...{offsets[-3:]} of length {len(offsets)}")
    if tokens.dtype not in (np.float16, np.float32):
        tokens = tokens.astype(np.float32)
    return np.ascontiguousarray(tokens), offsets


def run_warp(doc_tokens: np.ndarray, doc_offsets: np.ndarray, query_tokens: np.ndarray,
             query_offsets: np.ndarray, *, k: int = 100, nbits: int = 4, threads: int = 1,
             workdir: Optional[str] = None, venv: Optional[str] = None,
             timeout: Optional[float] = None, verbose: bool = False, **options) -> dict:
    """Build a WARP index on ``doc_tokens`` and search every query one at a time.

    Parameters
    ----------
    doc_tokens, doc_offsets: packed document tokens ``(T, d)`` (float16/float32) and ``n_docs + 1``
        offsets. WARP's passage ids are the document rows 0..n_docs-1.
    query_tokens, query_offsets: packed query tokens and offsets.
    k: results per query. nbits: residual bits per dimension (WARP's default 4; also 2).
    threads: search threads (WARP's ``num_threads`` and torch's); the build uses the same unless
        ``build_threads=`` is given.
    workdir: folder for the arrays, the index (``workdir/warp_index``) and results.json; kept.
        None: a temporary folder, removed afterwards (index bytes are measured before that).
    venv: the WARP venv (default ``$MUVERA_WARP_VENV`` or ``~/.cache/muvera/warp-venv``).
    timeout: seconds for the subprocess (None: no limit).
    **options: forwarded to the runner: ``nprobe``, ``t_prime``, ``bound``, ``max_candidates``,
        ``centroid_score_threshold`` (None = WARP's per-query choice), ``batch_size``,
        ``kmeans_niters``, ``max_points_per_centroid``, ``n_samples_kmeans``, ``num_partitions``,
        ``seed``, ``warmup`` (default 5), ``repeats`` (default 1), ``build_threads``, ``mmap``,
        ``keep_index``, ``index_dir``, ``reuse_index`` (search the index already in ``index_dir``).

    Returns the runner's results dict with ``ids`` as an ``(n_queries, k)`` int64 array (-1 where
    WARP returned fewer than k), ``scores`` as float32 (NaN padded), ``latency_ms`` as float64, and
    ``wall_s`` (the whole subprocess) added.
    """
    unknown = sorted(set(options) - set(_RUNNER_OPTIONS))
    if unknown:
        raise TypeError(f"run_warp: unknown options {unknown}; known: {sorted(_RUNNER_OPTIONS)}")
    if int(nbits) not in (1, 2, 4, 8):
        raise ValueError(f"nbits must be 1, 2, 4 or 8, got {nbits}")
    if int(k) < 1 or int(threads) < 1:
        raise ValueError(f"k and threads must be >= 1, got k={k}, threads={threads}")
    py = warp_python(venv)
    doc_tokens, doc_offsets = _check_packed(doc_tokens, doc_offsets, "doc")
    query_tokens, query_offsets = _check_packed(query_tokens, query_offsets, "query")
    if doc_tokens.shape[1] != query_tokens.shape[1]:
        raise ValueError(f"documents have d={doc_tokens.shape[1]}, queries d={query_tokens.shape[1]}")

    temp = workdir is None
    work = tempfile.mkdtemp(prefix="muvera-warp-") if temp else os.path.abspath(workdir)
    os.makedirs(work, exist_ok=True)
    try:
        np.save(os.path.join(work, "doc_tokens.npy"), doc_tokens)
        np.save(os.path.join(work, "doc_offsets.npy"), doc_offsets)
        np.save(os.path.join(work, "query_tokens.npy"), query_tokens)
        np.save(os.path.join(work, "query_offsets.npy"), query_offsets)
        opts = {"k": int(k), "nbits": int(nbits), "threads": int(threads), **options}
        with open(os.path.join(work, "options.json"), "w") as f:
            json.dump(opts, f, indent=1)
        res_path = os.path.join(work, "results.json")
        if os.path.exists(res_path):
            os.remove(res_path)

        env = dict(os.environ)
        for var in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):   # nothing of ours leaks in
            env.pop(var, None)
        nthr = str(int(options.get("build_threads") or threads))
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS"):
            env[var] = nthr
        env.setdefault("CUDA_VISIBLE_DEVICES", "")   # CPU only, also on a machine with a GPU
        t0 = time.perf_counter()
        try:
            proc = subprocess.run([py, RUNNER, work], env=env, timeout=timeout,
                                  stdout=None if verbose else subprocess.PIPE,
                                  stderr=None if verbose else subprocess.PIPE, text=True)
        except subprocess.TimeoutExpired as e:
            raise RuntimeError(f"WARP runner timed out after {timeout} s (work folder {work})") from e
        wall = time.perf_counter() - t0
        if proc.returncode != 0 or not os.path.exists(res_path):
            tail = "" if verbose else ((proc.stdout or "") + (proc.stderr or ""))[-4000:]
            raise RuntimeError(f"WARP runner failed (exit {proc.returncode}; {py} {RUNNER} {work}):\n"
                               f"{tail}")
        with open(res_path) as f:
            res = json.load(f)
    finally:
        if temp:
            shutil.rmtree(work, ignore_errors=True)

    nq = len(query_offsets) - 1
    ids = np.full((nq, int(k)), -1, dtype=np.int64)
    scores = np.full((nq, int(k)), np.nan, dtype=np.float32)
    for i, (row_ids, row_scores) in enumerate(zip(res["ids"], res["scores"])):
        n = min(len(row_ids), int(k))
        ids[i, :n] = row_ids[:n]
        scores[i, :n] = row_scores[:n]
    res["ids"], res["scores"] = ids, scores
    res["latency_ms"] = np.asarray(res["latency_ms"], dtype=np.float64)
    res["wall_s"] = wall
    res["workdir"] = None if temp else work
    if not proc.returncode and not verbose and proc.stderr:
        res["runner_log"] = proc.stderr[-4000:]
    return res


# ----------------------------------------------------------------------------------------------
# Self-check
# ----------------------------------------------------------------------------------------------

def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def exact_maxsim_topk(query_tokens, query_offsets, doc_tokens, doc_offsets, k: int):
    """Brute-force MaxSim (Chamfer) top-k in NumPy: (ids (nq, k) int64, scores (nq, k) float32)."""
    d = np.asarray(doc_tokens, dtype=np.float32)
    starts = np.asarray(doc_offsets[:-1], dtype=np.int64)
    nq = len(query_offsets) - 1
    k = min(k, len(starts))
    ids = np.empty((nq, k), dtype=np.int64)
    scores = np.empty((nq, k), dtype=np.float32)
    for i in range(nq):
        q = np.asarray(query_tokens[query_offsets[i]:query_offsets[i + 1]], dtype=np.float32)
        per_doc = np.maximum.reduceat(d @ q.T, starts, axis=0).sum(axis=1)
        top = np.argpartition(-per_doc, k - 1)[:k]
        top = top[np.argsort(-per_doc[top], kind="stable")]
        ids[i], scores[i] = top, per_doc[top]
    return ids, scores


def synthetic_corpus(n_docs: int = 2000, n_queries: int = 50, dim: int = 128, seed: int = 0,
                     min_len: int = 30, max_len: int = 60, q_len: int = 32,
                     n_topics: int = 64, n_words: int = 3000):
    """Clustered unit-norm tokens: topic -> word centres -> noisy tokens; each query takes
    ``q_len`` noisy tokens from one source document (sampled with replacement if it is shorter).

    Returns ``(doc_tokens f32, doc_offsets, query_tokens f32, query_offsets, source_docs)``.
    """
    rng = np.random.default_rng(seed)
    topics = _unit(rng.standard_normal((n_topics, dim)))
    word_topic = rng.integers(0, n_topics, n_words)
    words = _unit(topics[word_topic] + 0.9 * _unit(rng.standard_normal((n_words, dim))))
    by_topic = [np.flatnonzero(word_topic == t) for t in range(n_topics)]
    lens = rng.integers(min_len, max_len + 1, n_docs)
    offsets = np.zeros(n_docs + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    tokens = np.empty((int(offsets[-1]), dim), dtype=np.float32)
    for i in range(n_docs):
        n = int(lens[i])
        pool = np.concatenate([by_topic[t] for t in rng.integers(0, n_topics, 3)])
        own = rng.random(n) < 0.7        # 70% words of the doc's 3 topics, 30% any word
        w = np.where(own, pool[rng.integers(0, len(pool), n)], rng.integers(0, n_words, n))
        tokens[offsets[i]:offsets[i + 1]] = words[w] + 0.06 * rng.standard_normal((n, dim))
    tokens = _unit(tokens)
    src = rng.choice(n_docs, n_queries, replace=False)
    parts = []
    for s in src:
        doc = tokens[offsets[s]:offsets[s + 1]]
        pick = rng.choice(len(doc), q_len, replace=len(doc) < q_len)
        parts.append(_unit(doc[pick] + 0.08 * rng.standard_normal((q_len, dim))))
    q_off = np.arange(n_queries + 1, dtype=np.int64) * q_len
    return tokens, offsets, np.concatenate(parts), q_off, src


def _recall(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    return float(np.mean([len(set(f[:k].tolist()) & set(t[:k].tolist())) / k
                          for f, t in zip(found, truth)]))


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="WARP (xtr-warp-rs) self-check: synthetic corpus, "
                                             "recall@k vs brute-force MaxSim, latency, bytes/token")
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--nbits", type=int, nargs="+", default=[4])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--float16", action="store_true", help="pass the tokens as float16")
    ap.add_argument("--workdir", default=None, help="keep inputs, index and results.json here")
    ap.add_argument("--venv", default=None)
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = ap.parse_args(argv)

    dt, do, qt, qo, _src = synthetic_corpus(args.docs, args.queries, args.dim)
    if args.float16:
        dt, qt = dt.astype(np.float16), qt.astype(np.float16)
    t0 = time.perf_counter()
    truth, _ = exact_maxsim_topk(qt, qo, dt, do, args.k)
    exact_s = time.perf_counter() - t0
    try:
        py = warp_python(args.venv)
    except FileNotFoundError as e:
        print(e, file=sys.stderr)
        return 1
    print(f"synthetic corpus: {args.docs} docs, {len(dt)} tokens, d={args.dim}, "
          f"{args.queries} queries x {qo[1]} tokens; exact MaxSim top-{args.k} in {exact_s:.1f} s; "
          f"WARP venv python {py}", file=sys.stderr)
    rows = []
    for nbits in args.nbits:
        wd = None if args.workdir is None else os.path.join(args.workdir, f"nbits{nbits}")
        res = run_warp(dt, do, qt, qo, k=args.k, nbits=nbits, threads=args.threads, workdir=wd,
                       venv=args.venv)
        row = {
            "nbits": nbits, "threads": res["threads"], "k": args.k,
            f"recall@{args.k}": _recall(res["ids"], truth, args.k),
            "top1_match": float(np.mean(res["ids"][:, 0] == truth[:, 0])),
            "p50_ms": res["p50_ms"], "p95_ms": res["p95_ms"], "build_s": res["build_s"],
            "index_bytes": res["index_bytes"], "bytes_per_token": res["bytes_per_token"],
            "search_bytes": res["search_bytes"], "search_bytes_per_token": res["search_bytes_per_token"],
            "num_partitions": res["num_partitions"], "knobs_used": res["knobs_used"],
            "warp_version": res["warp_version"], "torch_version": res["torch_version"],
            "wall_s": res["wall_s"],
        }
        rows.append(row)
        if not args.json:
            print(f"WARP nbits={nbits}: recall@{args.k} vs exact MaxSim {row[f'recall@{args.k}']:.3f} "
                  f"(top-1 match {row['top1_match']:.2f}); p50 {row['p50_ms']:.2f} ms, "
                  f"p95 {row['p95_ms']:.2f} ms on {row['threads']} thread(s); build {row['build_s']:.2f} s; "
                  f"index {row['index_bytes']:,} B = {row['bytes_per_token']:.1f} B/token "
                  f"(search files {row['search_bytes_per_token']:.1f} B/token); "
                  f"{row['num_partitions']} centroids; knobs {row['knobs_used']}; "
                  f"xtr-warp-rs {row['warp_version']}, torch {row['torch_version']}")
    if args.json:
        print(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
