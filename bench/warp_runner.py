"""WARP (``xtr-warp-rs``) baseline runner: build an index from precomputed token vectors, search it.

Runs INSIDE the WARP virtual environment made by ``bench/setup_warp_env.sh`` (xtr-warp-rs pins its
own torch); never imports muvera. Our side (``bench/warp_baseline.py``) writes the inputs and calls::

    <warp-venv>/bin/python bench/warp_runner.py WORKDIR

WORKDIR holds
    doc_tokens.npy     (T, d) float16/float32, all documents' tokens packed
    doc_offsets.npy    (n_docs + 1,) int64; document i is rows [off[i], off[i+1])
    query_tokens.npy   (Tq, d) float16/float32
    query_offsets.npy  (n_queries + 1,) int64
    options.json       see DEFAULTS below (all keys optional)
and receives ``results.json`` (written atomically; see ``main`` for the keys) and the index in
``WORKDIR/warp_index`` (or ``options["index_dir"]``), rebuilt from scratch on every run.

How xtr-warp-rs is driven (its public Python API, ``xtr_warp.XTRWarp``)
-----------------------------------------------------------------------
* ``XTRWarp(index=DIR).create(embeddings_source=[tensor (n_i, d) per doc], device="cpu",
  nbits=..., kmeans_niters=4, seed=42, ...)``: k-means centroids over a token sample (torch,
  CPU), then the Rust encoder writes per-chunk files (``{i}.codes.npy``, ``{i}.residuals.npy``,
  ``doclens.{i}.npy``, ``{i}.passage_ids.npy``, kept for add/update/compact) and the centroid-major
  files the searcher reads (``codes.compacted.npy`` = int64 passage id per token,
  ``residuals[.repacked].compacted.npy`` = nbits*d/8 bytes per token, ``sizes.compacted.npy``,
  ``centroids.npy``, ``bucket_weights.npy``, ``metadata.json``, ...). Passage ids are the positions
  in the list, so WARP's ids are our doc rows.
* ``load(device="cpu", dtype=torch.float32, mmap=True)``, then per query
  ``search(queries_embeddings=(1, n_q, d) tensor, top_k=k, num_threads=threads, bound=,
  nprobe=, t_prime=, max_candidates=, centroid_score_threshold=, show_progress=False)``; a knob
  left ``None`` takes WARP's own per-query choice (``xtr_warp.hyperparams.optimize``, from the
  index density, k and the number of query tokens). The choices actually used are recorded in
  results.json (``knobs_used``, per query-token count).

Bytes on disk: ``index_bytes`` is everything WARP leaves in the index folder (the chunk files it
keeps for mutation included); ``search_bytes`` counts only the files the searcher loads
(``rust/search/loader.rs``: centroids, bucket_weights, sizes/codes/residuals compacted,
metadata.json) -- the fair figure to set against a store that is searched as is. Both are also
given per token and per file.

Threads: ``threads`` goes to WARP's per-search rayon pool (``num_threads``) and to torch
(``torch.set_num_threads``), and ``OMP/MKL/OPENBLAS/RAYON_NUM_THREADS`` are set before torch is
imported (the caller sets them too). The build uses ``build_threads`` (default: ``threads``).
"""

from __future__ import annotations

import json
import os
import sys
import time

DEFAULTS = {
    "k": 100,
    "nbits": 4,               # WARP's default; 2 also supported
    "threads": 1,             # search threads (WARP num_threads, torch threads)
    "build_threads": None,    # threads for index creation; None -> threads
    "warmup": 5,              # queries searched once, untimed, before the timed pass
    "repeats": 1,             # timed passes over all queries (latency = per-query median over passes)
    "index_dir": None,        # None -> WORKDIR/warp_index
    "keep_index": True,       # False: delete the index folder after measuring it
    "reuse_index": False,     # True: search the index already in index_dir (build_s is then None)
    # search knobs; None = WARP's own choice per query (xtr_warp.hyperparams.optimize)
    "nprobe": None,
    "t_prime": None,
    "bound": None,
    "max_candidates": None,
    "centroid_score_threshold": None,
    "batch_size": 8192,       # WARP's default (query x centroid matmul batch)
    # build knobs (WARP's defaults)
    "kmeans_niters": 4,
    "max_points_per_centroid": 256,
    "n_samples_kmeans": None,
    "num_partitions": None,   # None -> WARP's heuristic from the corpus size
    "seed": 42,
    "mmap": True,             # load the index memory-mapped (WARP's default on CPU)
}

SEARCH_FILES = ("centroids.npy", "bucket_weights.npy", "sizes.compacted.npy",
                "codes.compacted.npy", "metadata.json")


def _set_thread_env(n: int) -> None:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS"):
        os.environ[var] = str(n)


def _dir_sizes(path: str) -> dict:
    out = {}
    for root, _dirs, files in os.walk(path):
        for f in files:
            p = os.path.join(root, f)
            out[os.path.relpath(p, path)] = os.path.getsize(p)
    return dict(sorted(out.items()))


def _search_files(files: dict) -> list:
    names = [f for f in SEARCH_FILES if f in files]
    res = ("residuals.repacked.compacted.npy" if "residuals.repacked.compacted.npy" in files
           else "residuals.compacted.npy")
    if res in files:
        names.append(res)
    return names


def _percentile(xs, q):
    import numpy as np
    return float(np.percentile(np.asarray(xs, dtype=np.float64), q)) if len(xs) else float("nan")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__.split("\n\n")[0] + "\nusage: warp_runner.py WORKDIR", file=sys.stderr)
        return 2
    work = os.path.abspath(argv[0])
    opts = dict(DEFAULTS)
    opt_path = os.path.join(work, "options.json")
    if os.path.exists(opt_path):
        with open(opt_path) as f:
            given = json.load(f)
        unknown = sorted(set(given) - set(DEFAULTS))
        if unknown:
            print(f"warp_runner: unknown options {unknown}; known: {sorted(DEFAULTS)}", file=sys.stderr)
            return 2
        opts.update(given)
    k = int(opts["k"])
    nbits = int(opts["nbits"])
    threads = max(1, int(opts["threads"]))
    build_threads = max(1, int(opts["build_threads"] or threads))
    if nbits not in (1, 2, 4, 8):
        print(f"warp_runner: nbits must be 1, 2, 4 or 8, got {nbits}", file=sys.stderr)
        return 2

    _set_thread_env(build_threads)
    import numpy as np
    import torch
    import xtr_warp
    from xtr_warp import XTRWarp

    torch.set_num_threads(build_threads)

    doc_tokens = np.load(os.path.join(work, "doc_tokens.npy"), mmap_mode="r")
    doc_offsets = np.load(os.path.join(work, "doc_offsets.npy")).astype(np.int64)
    query_tokens = np.load(os.path.join(work, "query_tokens.npy"), mmap_mode="r")
    query_offsets = np.load(os.path.join(work, "query_offsets.npy")).astype(np.int64)
    if doc_tokens.ndim != 2 or query_tokens.ndim != 2 or doc_tokens.shape[1] != query_tokens.shape[1]:
        print(f"warp_runner: token arrays must be (T, d) with equal d: docs {doc_tokens.shape}, "
              f"queries {query_tokens.shape}", file=sys.stderr)
        return 2
    n_docs, nq, dim = len(doc_offsets) - 1, len(query_offsets) - 1, int(doc_tokens.shape[1])
    n_tokens = int(doc_offsets[-1] - doc_offsets[0])
    if doc_offsets[-1] != len(doc_tokens) or query_offsets[-1] != len(query_tokens):
        print("warp_runner: offsets do not end at the number of token rows", file=sys.stderr)
        return 2

    # Documents as float32 tensors, one per doc (WARP's in-memory source). A document without
    # tokens gets one zero token (WARP cannot store an empty passage; a zero token adds nothing).
    all_docs = torch.from_numpy(np.ascontiguousarray(doc_tokens, dtype=np.float32))
    docs, n_empty = [], 0
    for i in range(n_docs):
        a, b = int(doc_offsets[i]), int(doc_offsets[i + 1])
        if b > a:
            docs.append(all_docs[a:b])
        else:
            docs.append(torch.zeros((1, dim), dtype=torch.float32))
            n_empty += 1
    queries = [torch.from_numpy(np.ascontiguousarray(query_tokens[query_offsets[i]:query_offsets[i + 1]],
                                                     dtype=np.float32)).unsqueeze(0)
               for i in range(nq)]

    index_dir = os.path.abspath(opts["index_dir"] or os.path.join(work, "warp_index"))
    reuse = bool(opts["reuse_index"]) and os.path.exists(os.path.join(index_dir, "metadata.json"))
    if os.path.isdir(index_dir) and not reuse:
        import shutil
        shutil.rmtree(index_dir)

    idx = XTRWarp(index=index_dir)
    create_kw = dict(device="cpu", nbits=nbits, kmeans_niters=int(opts["kmeans_niters"]),
                     max_points_per_centroid=int(opts["max_points_per_centroid"]),
                     n_samples_kmeans=opts["n_samples_kmeans"], seed=int(opts["seed"]),
                     num_partitions=opts["num_partitions"], show_progress=False)
    build_s = None
    if not reuse:
        t0 = time.perf_counter()
        idx.create(embeddings_source=docs, **create_kw)
        build_s = time.perf_counter() - t0
    del docs, all_docs

    files = _dir_sizes(index_dir)
    search_files = _search_files(files)
    index_bytes = int(sum(files.values()))
    search_bytes = int(sum(files[f] for f in search_files))
    with open(os.path.join(index_dir, "metadata.json")) as f:
        warp_meta = json.load(f)

    # Search: the requested threads from here on.
    _set_thread_env(threads)
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    idx.load(device="cpu", dtype=torch.float32, mmap=bool(opts["mmap"]))
    load_s = time.perf_counter() - t0
    try:
        memory = {str(a): int(b) for a, b in idx.estimate_index_memory().items()}
    except Exception as e:  # informative only
        memory = {"error": repr(e)}

    knobs = {name: opts[name] for name in ("bound", "nprobe", "t_prime", "max_candidates",
                                           "centroid_score_threshold")}

    def search(q):
        return idx.search(queries_embeddings=q, top_k=k, num_threads=threads,
                          batch_size=int(opts["batch_size"]), show_progress=False, **knobs)[0]

    # Knobs WARP actually uses (its choice depends on the number of query tokens).
    knobs_used = {}
    for q in queries:
        n = int(q.shape[1])
        if str(n) not in knobs_used:
            auto = idx.optimize_hyperparams(k, q)
            names = ("bound", "nprobe", "centroid_score_threshold", "max_candidates", "t_prime")
            knobs_used[str(n)] = {m: (knobs[m] if knobs[m] is not None else v)
                                  for m, v in zip(names, auto)}

    with torch.inference_mode():
        for q in queries[:max(0, int(opts["warmup"]))]:
            search(q)
        reps = max(1, int(opts["repeats"]))
        lat = np.empty((reps, nq), dtype=np.float64)
        ids, scores = [None] * nq, [None] * nq
        for r in range(reps):
            for i, q in enumerate(queries):
                t = time.perf_counter()
                res = search(q)
                lat[r, i] = (time.perf_counter() - t) * 1e3
                if r == 0:
                    ids[i] = [int(p) for p, _s in res]
                    scores[i] = [float(s) for _p, s in res]
    per_query_ms = np.median(lat, axis=0)

    try:
        import resource
        peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    except Exception:
        peak_rss_mb = None

    from importlib.metadata import version
    results = {
        "ids": ids,
        "scores": scores,
        "latency_ms": [float(x) for x in per_query_ms],
        "p50_ms": _percentile(per_query_ms, 50),
        "p95_ms": _percentile(per_query_ms, 95),
        "mean_ms": float(np.mean(per_query_ms)) if nq else float("nan"),
        "build_s": build_s,
        "load_s": load_s,
        "index_dir": index_dir,
        "index_bytes": index_bytes,
        "bytes_per_token": index_bytes / max(1, n_tokens),
        "search_bytes": search_bytes,
        "search_bytes_per_token": search_bytes / max(1, n_tokens),
        "search_files": search_files,
        "files": files,
        "estimate_index_memory": memory,
        "n_docs": n_docs,
        "n_tokens": n_tokens,
        "n_queries": nq,
        "dim": dim,
        "empty_docs_padded": n_empty,
        "k": k,
        "nbits": nbits,
        "threads": threads,
        "build_threads": build_threads,
        "torch_threads": torch.get_num_threads(),
        "knobs": knobs,
        "knobs_used": knobs_used,
        "build_options": {key: v for key, v in create_kw.items() if key != "show_progress"},
        "num_partitions": warp_meta.get("num_centroids", warp_meta.get("num_partitions")),
        "warp_metadata": warp_meta,
        "peak_rss_mb": peak_rss_mb,
        "warp_version": version("xtr-warp-rs"),
        "xtr_warp_module_version": getattr(xtr_warp, "__version__", None),
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "python": sys.version.split()[0],
    }
    idx.free()
    if not opts["keep_index"]:
        import shutil
        shutil.rmtree(index_dir, ignore_errors=True)
    tmp = os.path.join(work, "results.json.tmp")
    with open(tmp, "w") as f:
        json.dump(results, f)
    os.replace(tmp, os.path.join(work, "results.json"))
    built = "reused index" if build_s is None else f"build {build_s:.2f} s"
    print(f"warp_runner: {n_docs} docs, {n_tokens} tokens, {nq} queries; {built}; "
          f"index {index_bytes} B ({results['bytes_per_token']:.1f} B/token; search files "
          f"{results['search_bytes_per_token']:.1f} B/token); p50 {results['p50_ms']:.2f} ms "
          f"p95 {results['p95_ms']:.2f} ms on {threads} thread(s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
