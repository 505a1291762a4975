"""Ray benchmark: distributed encoding and sharded search next to single-process muvera, in one run.

* tokens in: documents/s of :func:`muvera.distributed.encode_packed` with 1 and 2 workers
  (packed blocks through the object store, workers encode and write checksummed shards)
  against the same job in this process (encode + write shards, one thread) and against
  ``FDEEncoder.encode_documents`` alone; also :func:`encode_dataset` over a per-row Ray Dataset
  (unless ``--skip-dataset``);
* text in (``--text-docs N``): :func:`muvera.distributed.index_texts` with 1 and 2 model actors
  against an in-process :class:`muvera.Retriever` on the first N documents of ``--corpus``;
* search: QPS (batches) and one-query p50 latency of a :class:`muvera.distributed.ShardedIndex`
  with 1 and 2 shards against one in-process ``MuveraIndex``.

Synthetic tokens: normalised random token sets of 64-256 tokens, d = 128, FDE preset "10240".

    python bench/bench_distributed.py                       # 20k documents, local Ray
    python bench/bench_distributed.py --skip-dataset --text-docs 400 --nodes 2   # two Ray nodes here
    RAY_ADDRESS=auto python bench/bench_distributed.py      # an existing cluster
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

HERE = Path(__file__).resolve().parent

import muvera  # noqa: E402  (the installed package: the checkout's muvera/ has no built extension)


def make_data(n_docs: int, n_queries: int, dim: int, q_tokens: int, seed: int = 0):
    """Packed float16 documents (64-256 unit tokens each) and float32 queries, each made of noisy
    tokens of one source document (returned, for a hit@1 sanity check)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(64, 257, size=n_docs).astype(np.int64)
    offsets = np.zeros(n_docs + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    tokens = np.empty((int(offsets[-1]), dim), dtype=np.float16)
    for s in range(0, len(tokens), 1 << 18):  # chunks bound the float32 temporaries
        x = rng.standard_normal((min(1 << 18, len(tokens) - s), dim)).astype(np.float32)
        tokens[s: s + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    q = []
    sources = rng.integers(0, n_docs, size=n_queries)
    for d in sources:
        doc = tokens[offsets[d]: offsets[d + 1]].astype(np.float32)
        pick = doc[rng.choice(len(doc), size=q_tokens, replace=False)]
        pick = pick + 0.1 * rng.standard_normal(pick.shape).astype(np.float32)
        q.append(pick / np.linalg.norm(pick, axis=1, keepdims=True))
    return tokens, lengths, offsets, np.concatenate(q).astype(np.float32), sources


def qps(search: Any, queries: np.ndarray, q_tokens: int, batch: int, repeats: int) -> float:
    """Queries per second over ``repeats`` passes of all queries in batches (after one warm-up)."""
    nq = len(queries) // q_tokens
    lens = np.full(min(batch, nq), q_tokens, dtype=np.int64)
    search(queries[: len(lens) * q_tokens], lens)  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        for s in range(0, nq, batch):
            e = min(nq, s + batch)
            search(queries[s * q_tokens: e * q_tokens], np.full(e - s, q_tokens, dtype=np.int64))
    return repeats * nq / (time.perf_counter() - t0)


def p50_ms(search: Any, queries: np.ndarray, q_tokens: int, n: int = 100) -> float:
    """Median latency (ms) of one-query searches (after a warm-up): the per-query overhead."""
    lens = np.array([q_tokens], dtype=np.int64)
    nq = len(queries) // q_tokens
    search(queries[:q_tokens], lens)
    times = []
    for i in range(n):
        j = i % nq
        t = time.perf_counter()
        search(queries[j * q_tokens: (j + 1) * q_tokens], lens)
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e3)


def text_rates(n_docs: int, workers: List[int], corpus: Path) -> Dict[str, float]:
    """Documents/s from text: an in-process Retriever (the model on every core) against
    index_texts with 1 and 2 model actors (one core each), on the first ``n_docs`` of a corpus."""
    from muvera import Retriever  # noqa: PLC0415
    from muvera.distributed import index_texts  # noqa: PLC0415
    from muvera.documents import load_documents  # noqa: PLC0415

    docs = load_documents(corpus)
    texts, ids = docs.texts[:n_docs], list(docs.ids[:n_docs])
    out: Dict[str, float] = {}
    t = time.perf_counter()
    r = Retriever("default", config="10240", backend="exact", progress=False, batch_size=64)
    r.add(texts, ids=ids)
    out["in-process Retriever.add (model on all cores)"] = n_docs / (time.perf_counter() - t)
    for w in workers:
        tmp = Path(tempfile.mkdtemp(prefix="muvera-bench-text-"))
        try:
            t = time.perf_counter()
            index_texts(texts, tmp / "out", ids=ids, config="10240", model_workers=w, shard_rows=100,
                        batch_size=64)
            out[f"index_texts, {w} model actor(s) of 1 thread"] = n_docs / (time.perf_counter() - t)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def main(argv: List[str] = None) -> Dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=20_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--preset", default="10240")
    ap.add_argument("--queries", type=int, default=256)
    ap.add_argument("--query-tokens", type=int, default=32)
    ap.add_argument("--batch", type=int, default=64, help="queries per search call")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--workers", default="1,2", help="encode_dataset pool sizes to time")
    ap.add_argument("--shards", default="1,2", help="ShardedIndex shard counts to time")
    ap.add_argument("--shard-rows", type=int, default=2000, help="documents per block/shard of encode_packed")
    ap.add_argument("--skip-dataset", action="store_true", help="skip the per-row Ray Dataset runs")
    ap.add_argument("--text-docs", type=int, default=0,
                    help="also time text in (the model in the workers) on this many documents of --corpus")
    ap.add_argument("--corpus", type=Path, default=HERE.parent.parent / "shared" / "data" / "scifact")
    ap.add_argument("--cpus", type=int, default=None, help="CPUs of the local Ray (default: all)")
    ap.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS or local)")
    ap.add_argument("--nodes", type=int, default=1, help="start a local cluster of this many Ray nodes (CPUs split)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)

    import ray  # noqa: PLC0415

    from muvera.distributed import ShardedIndex, encode_dataset, encode_packed  # noqa: PLC0415

    address = args.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
    elif args.nodes <= 1:
        ray.init(num_cpus=args.cpus or os.cpu_count(), include_dashboard=False, log_to_driver=False)
    elif args.nodes > 1:  # a multi-node cluster on this machine: one raylet per node, CPUs split
        from ray.cluster_utils import Cluster  # noqa: PLC0415

        per = max(1, (args.cpus or os.cpu_count() or 1) // args.nodes)
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": per, "include_dashboard": False})
        for _ in range(args.nodes - 1):
            cluster.add_node(num_cpus=per)
        ray.init(address=cluster.address, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    cpus = int(ray.cluster_resources().get("CPU", 1))
    config = muvera.FDEConfig.preset(args.preset, dimension=args.dim)
    workers = [int(x) for x in args.workers.split(",") if x]
    shards = [int(x) for x in args.shards.split(",") if x]

    t0 = time.perf_counter()
    tokens, lengths, offsets, queries, sources = make_data(args.docs, args.queries, args.dim, args.query_tokens)
    print(f"data: {args.docs} docs, {len(tokens)} tokens (d={args.dim}), {args.queries} queries of "
          f"{args.query_tokens} tokens, preset {args.preset} ({config.output_dimension} dims); "
          f"Ray CPUs: {cpus} on {len(ray.nodes())} node(s); built in {time.perf_counter() - t0:.1f}s", flush=True)
    out: Dict[str, Any] = {"nodes": len(ray.nodes()), "docs": args.docs, "tokens": int(len(tokens)),
                           "preset": args.preset,
                           "ray_cpus": cpus, "encode_docs_per_s": {}, "search_qps": {}}

    # ---- encoding -----------------------------------------------------------------------------
    for threads in sorted({1, os.cpu_count() or 1}):
        enc = muvera.FDEEncoder(config, num_threads=threads)
        t = time.perf_counter()
        enc.encode_documents(tokens, lengths=lengths)
        rate = args.docs / (time.perf_counter() - t)
        out["encode_docs_per_s"][f"in-process, {threads} thread(s)"] = rate

    # The same job in this process, no Ray: blocks encoded and written as shards one after another.
    from muvera.distributed.jobs import _ShardWorker  # noqa: PLC0415

    tmp = Path(tempfile.mkdtemp(prefix="muvera-bench-enc-"))
    try:
        worker = _ShardWorker(config.to_dict(), str(tmp), 1)
        t = time.perf_counter()
        for i, a in enumerate(range(0, args.docs, args.shard_rows)):
            b = min(args.docs, a + args.shard_rows)
            out_i = worker.write(i, "", list(range(a, b)), tokens[offsets[a]: offsets[b]], lengths[a:b])
            assert out_i[0] == "ok", out_i
        out["encode_docs_per_s"]["in-process job (encode + write shards), 1 thread"] = (
            args.docs / (time.perf_counter() - t))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for w in workers:  # packed blocks through the object store; workers write the shards
        tmp = Path(tempfile.mkdtemp(prefix="muvera-bench-enc-"))
        try:
            t = time.perf_counter()
            encode_packed(tokens, lengths, config, tmp / "out", shard_rows=args.shard_rows, num_workers=w)
            out["encode_docs_per_s"][f"encode_packed, {w} worker(s)"] = args.docs / (time.perf_counter() - t)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    ds_workers = [] if args.skip_dataset else workers
    ds = None if not ds_workers else ray.data.from_items(
        [{"id": i, "tokens": tokens[offsets[i]: offsets[i + 1]]} for i in range(args.docs)],
        override_num_blocks=max(8, 4 * cpus)).materialize()  # timed runs read from the object store
    for w in ds_workers:
        for in_workers in (True, False):
            tmp = Path(tempfile.mkdtemp(prefix="muvera-bench-enc-"))
            try:
                t = time.perf_counter()
                encode_dataset(ds, config, tmp, shard_rows=5000, batch_size=256, num_workers=w,
                               write_in_workers=in_workers)
                who = "workers write shards" if in_workers else "driver writes shards"
                out["encode_docs_per_s"][f"encode_dataset, {w} worker(s), {who}"] = (
                    args.docs / (time.perf_counter() - t))
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    del ds

    # ---- search -------------------------------------------------------------------------------
    single = muvera.MuveraIndex(config)
    single.add(tokens, ids=list(range(args.docs)), lengths=lengths)
    out["search_qps"]["in-process MuveraIndex"] = qps(
        lambda q, ln: single.search(q, args.k, args.candidates, lengths=ln),
        queries, args.query_tokens, args.batch, args.repeats)
    got = single.search(queries, args.k, args.candidates, lengths=np.full(args.queries, args.query_tokens))[0]
    out["hit@1"] = {"in-process MuveraIndex": float(np.mean(got[:, 0] == sources))}
    out["p50_ms"] = {"in-process MuveraIndex": p50_ms(
        lambda q, ln: single.search(q, args.k, args.candidates, lengths=ln), queries, args.query_tokens)}
    del single
    for s in shards:
        # Shards on one node split its cores; on a cluster, give each shard its own node's.
        threads = max(1, (os.cpu_count() or 1) // s) if not address else None
        index = ShardedIndex(config, s, num_threads=threads, actor_options={"num_cpus": 0})
        try:
            for a in range(0, args.docs, 2000):
                b = min(args.docs, a + 2000)
                index.add(tokens[offsets[a]: offsets[b]], ids=list(range(a, b)), lengths=lengths[a:b])
            got = index.search(queries, args.k, args.candidates,
                               lengths=np.full(args.queries, args.query_tokens))[0]
            out["search_qps"][f"ShardedIndex, {s} shard(s)"] = qps(
                lambda q, ln: index.search(q, args.k, args.candidates, lengths=ln),
                queries, args.query_tokens, args.batch, args.repeats)
            out["hit@1"][f"ShardedIndex, {s} shard(s)"] = float(np.mean(got[:, 0] == sources))
            out["p50_ms"][f"ShardedIndex, {s} shard(s)"] = p50_ms(
                lambda q, ln: index.search(q, args.k, args.candidates, lengths=ln), queries, args.query_tokens)
        finally:
            index.close()

    print(f"\nencoding ({args.docs} docs)                docs/s")
    for name, v in out["encode_docs_per_s"].items():
        print(f"  {name:<38s} {v:>10.0f}")
    print(f"search (k={args.k}, candidates={args.candidates} per shard, batches of {args.batch})   QPS")
    for name, v in out["search_qps"].items():
        print(f"  {name:<38s} {v:>10.1f}")
    if out.get("p50_ms"):
        print("one-query latency, p50 ms: " + ", ".join(f"{name}: {v:.2f}" for name, v in out["p50_ms"].items()))
    if args.text_docs:
        out["text_docs_per_s"] = text_rates(args.text_docs, workers, args.corpus)
        print(f"from text ({args.text_docs} documents of {args.corpus.name})   docs/s")
        for name, v in out["text_docs_per_s"].items():
            print(f"  {name:<50s} {v:>8.1f}")
    print("hit@1 (top result is the query's source document): " +
          ", ".join(f"{name}: {v:.3f}" for name, v in out["hit@1"].items()))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    ray.shutdown()
    return out


if __name__ == "__main__":
    main()
