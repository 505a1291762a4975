"""Ingest throughput (documents/s) from a MuveraIndex into other stores, on one synthetic corpus.

Rows: building the index itself (FDE encoding + token store, for scale), Parquet
(``write_parquet``) and back (``read_parquet``: a new index, FDEs re-encoded), Qdrant's embedded
local mode (in memory and on disk) through ``to_qdrant``, and LanceDB through ``to_lancedb``.
Every export writes the FDE (float32) and the tokens of each document; the Qdrant and LanceDB
rows hold the tokens as float32 (what those engines score), Parquet keeps the store's float16.

    python bench/bench_ingest.py --docs 2000 --tokens 64 --dim 128 --preset 10240

Qdrant's local mode is qdrant-client's pure-Python engine (for tests and prototypes); a server
ingests at another rate, bounded by the network and its own indexing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

import muvera


def corpus(n_docs: int, mean_tokens: int, dim: int, seed: int = 0):
    """Unit token vectors around 256 topic centres; lengths uniform in [mean/2, 3*mean/2]."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((256, dim)).astype(np.float32)
    lengths = rng.integers(max(1, mean_tokens // 2), mean_tokens + mean_tokens // 2 + 1, size=n_docs)
    offsets = np.zeros(n_docs + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    topic = np.repeat(rng.integers(0, 256, size=n_docs), lengths)
    x = centres[topic] + 0.5 * rng.standard_normal((int(offsets[-1]), dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, lengths


def du(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--tokens", type=int, default=64, help="mean tokens per document")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--preset", default="10240")
    ap.add_argument("--batch-size", type=int, default=256, help="documents per write (Qdrant: per upsert)")
    ap.add_argument("--skip", default="", help="comma-separated targets to skip: parquet,qdrant,qdrant-disk,lancedb")
    ap.add_argument("--json", help="write the rows as JSON")
    args = ap.parse_args()
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}

    # Libraries imported before any clock starts: the rows time the writes, not the imports.
    import pyarrow.parquet  # noqa: F401
    if not {"qdrant", "qdrant-disk"} <= skip:
        import qdrant_client  # noqa: F401
    if "lancedb" not in skip:
        import lancedb  # noqa: F401

    tokens, lengths = corpus(args.docs, args.tokens, args.dim)
    config = muvera.FDEConfig.preset(args.preset, dimension=args.dim)
    index = muvera.MuveraIndex(config)
    ids = [f"doc-{i}" for i in range(args.docs)]
    meta = [{"year": 2000 + i % 25, "lang": ("en", "fr", "de")[i % 3]} for i in range(args.docs)]
    rows = []

    def row(target, seconds, size=None):
        rows.append({"target": target, "docs": args.docs, "seconds": round(seconds, 3),
                     "docs_per_s": round(args.docs / seconds, 1), "mb": None if size is None else round(size / 2**20, 1)})
        print(f"  {target}: {seconds:.2f} s", flush=True)

    row("MuveraIndex.add (FDE + float16 store)", timed(lambda: index.add(tokens, ids=ids, lengths=lengths,
                                                                           metadata=meta))[0])
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        if "parquet" not in skip:
            from muvera.integrations.arrow import read_parquet, write_parquet

            path = work / "docs.parquet"
            row("Parquet write (zstd)", timed(lambda: write_parquet(index, path, batch_size=args.batch_size))[0], du(path))
            row("Parquet read -> MuveraIndex", timed(lambda: read_parquet(path))[0])
        if "qdrant" not in skip or "qdrant-disk" not in skip:
            from qdrant_client import QdrantClient

            from muvera.integrations.qdrant import to_qdrant

            if "qdrant" not in skip:
                client = QdrantClient(":memory:")
                row("Qdrant local mode (:memory:)",
                    timed(lambda: to_qdrant(index, client, "docs", batch_size=args.batch_size))[0])
                client.close()
            if "qdrant-disk" not in skip:
                client = QdrantClient(path=str(work / "qdrant"))
                row("Qdrant local mode (path=)",
                    timed(lambda: to_qdrant(index, client, "docs", batch_size=args.batch_size))[0], du(work / "qdrant"))
                client.close()
        if "lancedb" not in skip:
            import lancedb

            from muvera.integrations.lancedb import to_lancedb

            db = lancedb.connect(str(work / "lance"))
            row("LanceDB (float32 tokens)", timed(lambda: to_lancedb(index, db, "docs", batch_size=args.batch_size))[0],
                du(work / "lance"))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    n_tok = int(lengths.sum())
    print(f"\n{args.docs} documents, {n_tok / args.docs:.0f} tokens each on average, d = {args.dim}, "
          f"FDE {config.output_dimension}-d, {os.cpu_count()} cores\n")
    print("| target | seconds | docs/s | MB on disk |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['target']} | {r['seconds']:.2f} | {r['docs_per_s']:.0f} | {'' if r['mb'] is None else r['mb']} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"docs": args.docs, "mean_tokens": args.tokens, "dim": args.dim, "preset": args.preset,
                       "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
