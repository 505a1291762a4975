"""The ``muvera`` command: encode, index, search and bench."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import List, Optional


SAMPLE = Path(__file__).resolve().parent / "data" / "scifact-sample"


def _dataset(path: str) -> Path:
    return SAMPLE if path == "sample" else Path(path)


def _model(spec: str):
    from .models import load_model

    return load_model(spec)


def cmd_encode(args) -> int:
    from .eval.embed import embed_beir

    emb = embed_beir(_dataset(args.dataset), _model(args.model), cache_root=args.cache)
    print(f"{emb.data.name}: {len(emb.doc_offsets) - 1} documents ({emb.doc_tokens.shape[0]} tokens), "
          f"{len(emb.query_offsets) - 1} queries, {emb.dim}-d; cached")
    return 0


def cmd_index(args) -> int:
    from .config import FDEConfig
    from .eval.embed import embed_beir
    from .index import MuveraIndex

    emb = embed_beir(_dataset(args.dataset), _model(args.model), cache_root=args.cache)
    index = MuveraIndex(FDEConfig.preset(args.preset, dimension=emb.dim), backend=args.backend,
                        model=args.model)  # recorded, so `muvera search` encodes queries the same way
    t0 = time.perf_counter()
    index.add(emb.doc_tokens, ids=emb.data.doc_ids, offsets=emb.doc_offsets)
    index.save(args.output)
    print(f"indexed {len(index)} documents in {time.perf_counter() - t0:.1f} s -> {args.output}")
    return 0


def cmd_search(args) -> int:
    from .index import MuveraIndex

    index = MuveraIndex.load(args.index)
    spec = args.model or index.model or "default"
    model = _model(spec)
    if model.dim != index.config.dimension:
        raise ValueError(f"--model: {spec!r} gives {model.dim}-d tokens but the index holds "
                         f"{index.config.dimension}-d ones; pass the model the index was built with")
    queries = args.query or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not queries:
        print("no queries given (use --query or stdin)", file=sys.stderr)
        return 2
    toks = model.encode_queries(queries)
    ids, scores = index.search(toks, k=args.k, candidates=max(args.candidates, args.k))
    for q, row, sc in zip(queries, ids, scores):
        print(json.dumps({"query": q, "results": [{"id": (i.item() if hasattr(i, "item") else i), "score": float(s)}
                                                   for i, s in zip(row, sc) if i is not None and i != -1]}))
    return 0


def cmd_bench(args) -> int:
    from .eval.bench import format_report, plot_report, run_bench, write_json

    cands = [int(c) for c in args.candidates.split(",")]
    rep = run_bench(_dataset(args.dataset), model=_model(args.model), preset=args.preset, backend=args.backend,
                    candidates=cands, pca=args.pca, max_queries=args.max_queries, cache_root=args.cache,
                    progress=not args.quiet, ignore_identical_ids=not args.keep_identical_ids)
    print(format_report(rep))
    if args.json:
        write_json(rep, args.json)
    if args.plot:
        plot_report(rep, args.plot)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="muvera", description="MUVERA multi-vector retrieval")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp, dataset=True):
        if dataset:
            sp.add_argument("dataset", help="BEIR-layout folder, or 'sample' for the SciFact sample shipped with muvera")
        sp.add_argument("--model", default="default" if dataset else None,
                        help="default (embedded MiniLM), onnx:minilm, hf:PATH, colbert:PATH, pylate:PATH"
                             + ("" if dataset else " (default: the model recorded in the index)"))
        sp.add_argument("--cache", default=None, help="embedding cache root (default $MUVERA_CACHE or ~/.cache/muvera)")

    sp = sub.add_parser("encode", help="encode a dataset's corpus and queries into the embedding cache")
    common(sp)
    sp.set_defaults(fn=cmd_encode)

    sp = sub.add_parser("index", help="build and save a MuveraIndex of a dataset's corpus")
    common(sp)
    sp.add_argument("--output", "-o", required=True)
    sp.add_argument("--preset", default="10240")
    sp.add_argument("--backend", default="exact")
    sp.set_defaults(fn=cmd_index)

    sp = sub.add_parser("search", help="search a saved index with text queries (--query or stdin lines)")
    sp.add_argument("index")
    common(sp, dataset=False)
    sp.add_argument("--query", "-q", action="append")
    sp.add_argument("-k", type=int, default=10)
    sp.add_argument("--candidates", type=int, default=200)
    sp.set_defaults(fn=cmd_search)

    sp = sub.add_parser("bench", help="quality and latency of FDE, FDE+rerank and exact Chamfer on a BEIR dataset")
    common(sp)
    sp.add_argument("--preset", default="10240")
    sp.add_argument("--backend", default="exact")
    sp.add_argument("--candidates", default="100,200,500,1000")
    sp.add_argument("--pca", type=int, default=None, help="project tokens to this many dimensions first")
    sp.add_argument("--max-queries", type=int, default=None)
    sp.add_argument("--json", help="write the report as JSON")
    sp.add_argument("--plot", help="draw recall vs latency to this PNG")
    sp.add_argument("--quiet", action="store_true", help="no progress bars")
    sp.add_argument("--keep-identical-ids", action="store_true",
                    help="count hits whose id equals the query's id (BEIR drops them by default: on ArguAna "
                         "and Quora the queries are documents of the corpus)")
    sp.set_defaults(fn=cmd_bench)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (ValueError, FileNotFoundError, ConnectionError, ImportError) as exc:
        print(f"muvera {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
