"""The ``muvera`` command: encode, index, search, bench, export and import."""

from __future__ import annotations

import argparse
import json
import os
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


def resolve_model(spec: str):
    """The model, or one clear line saying why it could not be loaded (no 80-line traceback)."""
    try:
        return _model(spec)
    except (ValueError, ImportError) as exc:
        raise ValueError(f"--model {spec!r}: {_first_line(exc)}") from None
    except Exception as exc:  # noqa: BLE001 (hub/IO errors of many kinds: all mean "cannot load")
        raise ValueError(f"--model {spec!r}: cannot load it ({type(exc).__name__}: {_first_line(exc)}); "
                         "give a local path, or a hub name on a machine with network access") from None


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _positive(text: str) -> int:
    """argparse type: a positive integer (argparse names the option in its error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _positive_list(text: str) -> List[int]:
    """argparse type: comma-separated positive integers."""
    return [_positive(part.strip()) for part in text.split(",") if part.strip()] or [_positive(text)]


def _preset(text: str) -> str:
    from .config import PRESETS

    if text not in PRESETS:
        raise argparse.ArgumentTypeError(f"expected one of {sorted(PRESETS, key=int)}, got {text!r}")
    return text


def _codec(text: str) -> str:
    from .codecs import make_codec

    try:
        make_codec(text, 8)
    except (ValueError, TypeError) as exc:
        raise argparse.ArgumentTypeError(_first_line(exc)) from None
    return text


def _backend(text: str) -> str:
    from .backends import make_backend

    try:
        make_backend(text)
    except (ValueError, TypeError, ImportError) as exc:
        raise argparse.ArgumentTypeError(_first_line(exc)) from None
    return text


def cmd_encode(args) -> int:
    from .eval.embed import embed_beir

    emb = embed_beir(_dataset(args.dataset), resolve_model(args.model), cache_root=args.cache)
    print(f"{emb.data.name}: {len(emb.doc_offsets) - 1} documents ({emb.doc_tokens.shape[0]} tokens), "
          f"{len(emb.query_offsets) - 1} queries, {emb.dim}-d; cached")
    return 0


def _encode_documents(docs, model, cache, *, beir: bool, progress: bool):
    """Packed token vectors of ``docs`` through ``model``, in the embedding cache (a BEIR folder
    shares the entry `muvera encode` / `muvera bench` use)."""
    from .documents import texts_digest
    from .eval.cache import default_cache_root, encode_cached

    name = docs.name if beir else f"{docs.name}-{texts_digest(docs.texts)}"
    root = Path(cache or default_cache_root()) / name / f"{type(model).__name__}-{model.fingerprint()}"
    return encode_cached(root / "docs", docs.texts, model.encode_documents, fingerprint=model.fingerprint(),
                         progress=progress, description=f"{name} documents")


def _check_index_args(args) -> None:
    """What `muvera index` can refuse before minutes of encoding: the backend at the FDE size of
    the preset, --keep-exact without a compressed codec, an output folder that is not an index."""
    from .backends import make_backend
    from .config import FDEConfig
    from .index_format import FORMAT_NAME, is_index_dir

    fde_dim = FDEConfig.preset(args.preset, dimension=8).output_dimension  # independent of the token size
    try:
        make_backend(args.backend, fde_dim)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"--backend: {_first_line(exc)}") from None
    if args.keep_exact and args.token_codec in ("float16", "float32"):
        raise ValueError(f"--keep-exact: the {args.token_codec} store is exact already; use it with a compressed "
                         "--token-codec (int8, residual:4, residual:2)")
    out = Path(args.output)
    if out.exists() and not (out.is_dir() and (is_index_dir(out, FORMAT_NAME) or not any(out.iterdir()))):
        raise ValueError(f"--output: {out} exists and is not a muvera index (nor an empty folder); "
                         "choose another path")


def cmd_index(args) -> int:
    from ._progress import progress
    from .config import FDEConfig
    from .documents import load_documents
    from .index import MuveraIndex

    started = time.perf_counter()
    source = _dataset(args.dataset)
    _check_index_args(args)  # before the model loads and the corpus is encoded
    docs = load_documents(source)  # documents alone: queries and judgements are not needed
    model = resolve_model(args.model)
    tokens, offsets = _encode_documents(docs, model, args.cache, beir=(source / "corpus.jsonl").is_file(),
                                        progress=not args.quiet)
    index = MuveraIndex(FDEConfig.preset(args.preset, dimension=int(tokens.shape[1])), backend=args.backend,
                        token_codec=args.token_codec, model=args.model,  # recorded, so `muvera search` encodes queries the same way
                        keep_exact=args.keep_exact)
    t0 = time.perf_counter()
    # Titles and snippets travel with the index (metadata), so `muvera search` can show them.
    meta = [{"title": t, "snippet": body[:200]} for t, body in zip(docs.titles, docs.bodies)]
    chunk = 4096
    with progress(len(docs), "adding", enabled=not args.quiet) as bar:
        for s in range(0, len(docs), chunk):
            e = min(len(docs), s + chunk)
            index.add(tokens[offsets[s]:offsets[e]], ids=docs.ids[s:e], lengths=offsets[s + 1:e + 1] - offsets[s:e],
                      metadata=meta[s:e])
            bar.update(e - s)
    index.save(args.output)
    print(f"indexed {len(index)} documents in {time.perf_counter() - started:.1f} s (added in "
          f"{time.perf_counter() - t0:.1f} s after encoding) -> {args.output}")
    return 0


def cmd_export(args) -> int:
    from .index import MuveraIndex
    from .integrations.arrow import write_parquet

    if not str(args.output).endswith(".parquet"):
        raise ValueError(f"output: expected a .parquet file path, got {args.output!r}")
    index = MuveraIndex.load(args.index)
    t0 = time.perf_counter()
    rows = write_parquet(index, args.output, batch_size=args.batch_size)
    print(f"exported {rows} documents in {time.perf_counter() - t0:.1f} s -> {args.output}")
    return 0


def cmd_import(args) -> int:
    from .integrations.arrow import read_parquet

    t0 = time.perf_counter()
    index = read_parquet(args.parquet, backend=args.backend)
    index.save(args.output)
    print(f"imported {len(index)} documents in {time.perf_counter() - t0:.1f} s -> {args.output}")
    return 0


def cmd_search(args) -> int:
    from .index import MuveraIndex

    if args.candidates is not None and args.candidates < args.k:
        raise ValueError(f"--candidates: expected >= -k ({args.k}), got {args.candidates}")
    if args.rescore is not None and args.rescore < args.k:
        raise ValueError(f"--rescore: expected >= -k ({args.k}), got {args.rescore}")
    index = MuveraIndex.load(args.index)
    if args.rescore is not None and index.exact_tier is None:
        raise ValueError("--rescore: the index has no exact tier; build it with `muvera index --keep-exact` "
                         "and a compressed --token-codec")
    spec = args.model or index.model or "default"
    _warn_model(args.model, index)
    model = resolve_model(spec)
    if model.dim != index.config.dimension:
        raise ValueError(f"--model: {spec!r} gives {model.dim}-d tokens but the index holds "
                         f"{index.config.dimension}-d ones; pass the model the index was built with")
    if not args.query and sys.stdin.isatty():  # a terminal: answer each query as it is typed
        print("muvera search: type a query and press Enter (Ctrl-D to end)", file=sys.stderr)
        while True:
            print("query> ", end="", file=sys.stderr, flush=True)
            line = sys.stdin.readline()
            if not line:
                return 0
            if line.strip():
                _answer(args, index, model, [line.strip()])
    queries = args.query or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not queries:
        print("no queries given (use --query or stdin)", file=sys.stderr)
        return 2
    _answer(args, index, model, queries)
    return 0


def _answer(args, index, model, queries: List[str]) -> None:
    """Search ``queries`` and print their hits (text or JSON lines)."""
    toks = model.encode_queries(queries)
    ids, scores = index.search(toks, k=args.k, candidates=args.candidates, rescore=args.rescore)
    for q, row, sc in zip(queries, ids, scores):
        hits = [(i.item() if hasattr(i, "item") else i, float(s)) for i, s in zip(row, sc) if i is not None and i != -1]
        metas = index.metadata([i for i, _ in hits]) if hits else []
        results = []
        for (i, s), m in zip(hits, metas):
            hit = {"id": i, "score": s}
            if m:
                hit.update({k: m[k] for k in ("title", "snippet") if m.get(k)})
            results.append(hit)
        if args.format == "text":
            print(f"query: {q}")
            for rank, hit in enumerate(results, 1):
                label = hit.get("title") or hit.get("snippet", "")[:80]
                print(f"{rank:>4}  {hit['id']}  {hit['score']:.4f}  {label}".rstrip())
        else:
            print(json.dumps({"query": q, "results": results}), flush=True)


def cmd_serve(args) -> int:
    from .serve import run

    api_key = args.api_key or os.environ.get("MUVERA_API_KEY") or None
    if args.host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        print("muvera serve: warning: listening beyond this machine without --api-key", file=sys.stderr)
    print(f"muvera serve: {args.index} on http://{args.host}:{args.port} (OpenAPI at /docs)", file=sys.stderr,
          flush=True)
    run(args.index, host=args.host, port=args.port, api_key=api_key, wal=not args.no_wal,
        max_body=args.max_body_mb << 20, model=args.model, group_commit=args.group_commit)
    return 0


def _target(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
    return value


def cmd_tune(args) -> int:
    from .index import MuveraIndex

    if not 0 < args.target_recall <= 1:
        raise ValueError(f"--target-recall: expected a number in (0, 1], got {args.target_recall}")
    index = MuveraIndex.load(args.index)
    queries = None
    if args.queries:
        path = Path(args.queries)
        try:
            texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"--queries: cannot read {path}: {exc}") from None
        if not texts:
            raise ValueError(f"--queries: {path} holds no queries (one per line)")
        spec = args.model or index.model or "default"
        _warn_model(args.model, index)
        model = resolve_model(spec)
        if model.dim != index.config.dimension:
            raise ValueError(f"--model: {spec!r} gives {model.dim}-d tokens but the index holds "
                             f"{index.config.dimension}-d ones")
        queries = model.encode_queries(texts)
    index.tune(queries, target_recall=args.target_recall, k=args.k, num_queries=args.num_queries,
               plot=args.plot, verbose=True)
    index.save(args.index)
    print(f"saved the tuned setting in {args.index}: `muvera search` and MuveraIndex.search use it by default")
    return 0


def cmd_bench(args) -> int:
    from .eval.bench import format_report, plot_report, run_bench, write_json

    cands = args.candidates
    if args.rescore is not None and (args.rescore < 100 or args.token_codec in ("float16", "float32")):
        raise ValueError("--rescore: needs a compressed --token-codec (int8, residual:4, residual:2) and a value >= 100")
    small = [c for c in cands if c < 100]
    if small:  # checked before the model loads (Recall@100 needs 100 results)
        raise ValueError(f"--candidates: each count must be >= 100, got {small[0]}")
    rep = run_bench(_dataset(args.dataset), model=resolve_model(args.model), preset=args.preset, backend=args.backend,
                    candidates=cands, pca=args.pca, max_queries=args.max_queries, cache_root=args.cache,
                    progress=not args.quiet, ignore_identical_ids=not args.keep_identical_ids,
                    token_codec=args.token_codec, rescore=args.rescore, tune=not args.no_tune)
    print(format_report(rep))
    if args.json:
        write_json(rep, args.json)
    if args.plot:
        plot_report(rep, args.plot)
    return 0


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults shown once, only where there is one: not on required options, not after a help
    text that already says its default, lists as comma-separated values."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        d = action.default
        if (not action.option_strings or action.required or d is None or d is False or d is argparse.SUPPRESS
                or "default" in text):
            return text
        if isinstance(d, (list, tuple)):
            d = ",".join(map(str, d))
        return f"{text} (default: {d})"


_BACKEND_HELP = ("MIPS backend: auto (by corpus size: the exact scan, then 4-bit PQ fast-scan refined by SQ8 codes, "
                 "then IVF), exact, or a faiss factory string such as HNSW32 or IVF1024,PQ1280x8")


def _warn_model(spec: Optional[str], index) -> None:
    """A model other than the one the index was built with makes tokens the index cannot compare."""
    if spec and index.model and spec != index.model:
        print(f"muvera: warning: --model {spec!r} is not the model the index was built with ({index.model!r}); "
              "its query tokens may not be comparable with the stored ones", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    fmt = _Help
    p = argparse.ArgumentParser(prog="muvera", description="MUVERA multi-vector retrieval: encode texts, "
                                "index and search them, benchmark on BEIR datasets", formatter_class=fmt)
    p.add_argument("--version", action="version", version=f"muvera {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp, dataset=True):
        if dataset:
            also = "; for index also a documents file or folder (no queries needed)" if sp.prog.endswith(" index") else ""
            sp.add_argument("dataset", help="BEIR-layout folder, or 'sample' for the SciFact sample shipped with muvera"
                            + also)
        sp.add_argument("--model", default="default" if dataset else None,
                        help="default (embedded MiniLM), onnx:minilm, hf:PATH, colbert:PATH, pylate:PATH"
                             + ("" if dataset else " (default: the model recorded in the index)"))
        sp.add_argument("--cache", default=None, help="embedding cache root (default: $MUVERA_CACHE or ~/.cache/muvera)")

    sp = sub.add_parser("encode", help="encode a dataset's corpus and queries into the embedding cache",
                        formatter_class=fmt)
    common(sp)
    sp.set_defaults(fn=cmd_encode)

    sp = sub.add_parser("index", help="build and save a MuveraIndex of documents (a BEIR folder, corpus.jsonl, "
                        "JSONL/TSV/Parquet with id/text/title, or a folder of .txt/.md files)", formatter_class=fmt)
    common(sp)
    sp.add_argument("--quiet", action="store_true", help="no progress bars")
    sp.add_argument("--output", "-o", required=True, help="index directory to write")
    sp.add_argument("--preset", type=_preset, default="10240", help="FDE size preset (1280, 2560, 5120, 10240)")
    sp.add_argument("--backend", type=_backend, default="auto",
                    help=_BACKEND_HELP)
    sp.add_argument("--token-codec", type=_codec, default="float16",
                    help="how the token store keeps tokens: float16, float32, int8 (d + 4 bytes per token), "
                         "residual:4 or residual:2 (centroid id + 4 or 2 bits per dimension: 2 + d/2 or "
                         "2 + d/4 bytes per token)")
    sp.add_argument("--keep-exact", action="store_true",
                    help="with a compressed --token-codec: also keep float16 tokens on an exact tier (memory-"
                         "mapped on load) for `muvera search --rescore N`")
    sp.set_defaults(fn=cmd_index)

    sp = sub.add_parser("search", help="search a saved index with text queries (--query or stdin lines)",
                        formatter_class=fmt)
    sp.add_argument("index", help="index directory written by `muvera index`")
    common(sp, dataset=False)
    sp.add_argument("--query", "-q", action="append", help="a query (repeatable); default: one per stdin line")
    sp.add_argument("-k", type=_positive, default=10, help="results per query")
    sp.add_argument("--candidates", type=_positive, default=None,
                    help="FDE candidates reranked with exact Chamfer (>= k; default: the setting `muvera tune` "
                         "saved, else max(200, k))")
    sp.add_argument("--rescore", type=_positive, default=None,
                    help="rerank on the codes, then rescore the best N from the exact tier (an index built "
                         "with --keep-exact)")
    sp.add_argument("--format", choices=("json", "text"), default="json",
                    help="json: one JSON line per query; text: ranked ids, scores and titles")
    sp.set_defaults(fn=cmd_search)

    sp = sub.add_parser("tune", help="find the fastest search setting meeting a recall target against exact "
                        "Chamfer and save it in the index (search uses it by default)", formatter_class=fmt)
    sp.add_argument("index", help="index directory")
    sp.add_argument("--target-recall", type=_target, default=0.95, help="recall@k against exact Chamfer to meet")
    sp.add_argument("-k", type=_positive, default=10, help="the k of recall@k")
    sp.add_argument("--queries", help="a text file of queries, one per line, encoded with the index's model "
                    "(default: pseudo-queries drawn from the indexed documents, usually optimistic)")
    sp.add_argument("--model", default=None, help="the model for --queries (default: the one recorded in the index)")
    sp.add_argument("--num-queries", type=_positive, default=64, help="queries sampled")
    sp.add_argument("--plot", help="draw the recall-latency curve (log-scaled latency) to this PNG")
    sp.set_defaults(fn=cmd_tune)

    sp = sub.add_parser("serve", help="serve a saved index over HTTP (FastAPI; durable writes through a "
                        "write-ahead log)", formatter_class=fmt)
    sp.add_argument("index", help="index directory")
    sp.add_argument("--host", default="127.0.0.1", help="address to listen on")
    sp.add_argument("--port", type=_positive, default=8000, help="port")
    sp.add_argument("--api-key", default=None,
                    help="require 'Authorization: Bearer KEY' (default: $MUVERA_API_KEY, else no key)")
    sp.add_argument("--model", default=None, help="text model for texts in requests (default: the index's)")
    sp.add_argument("--no-wal", action="store_true", help="serve without the write-ahead log (writes in memory only)")
    sp.add_argument("--group-commit", action="store_true",
                    help="concurrent writes share log flushes (a write may be seen before it is durable; "
                         "it is acknowledged after)")
    sp.add_argument("--max-body-mb", type=_positive, default=64, help="largest request body in MiB")
    sp.set_defaults(fn=cmd_serve)

    sp = sub.add_parser("export", help="write a saved index to Parquet (id, fde, tokens, metadata; the FDE config "
                        "in the schema metadata)", formatter_class=fmt)
    sp.add_argument("index", help="index directory")
    sp.add_argument("output", help="the .parquet file to write")
    sp.add_argument("--batch-size", type=_positive, default=4096, help="documents per row group")
    sp.set_defaults(fn=cmd_export)

    sp = sub.add_parser("import", help="build an index from a Parquet file written by `muvera export`",
                        formatter_class=fmt)
    sp.add_argument("parquet", help="the .parquet file")
    sp.add_argument("--output", "-o", required=True, help="index directory to write")
    sp.add_argument("--backend", type=_backend, default="auto",
                    help=_BACKEND_HELP)
    sp.set_defaults(fn=cmd_import)

    sp = sub.add_parser("bench", help="quality and latency of FDE, FDE+rerank and exact Chamfer on a BEIR dataset",
                        formatter_class=fmt)
    common(sp)
    sp.add_argument("--preset", type=_preset, default="10240", help="FDE size preset (1280, 2560, 5120, 10240)")
    sp.add_argument("--backend", type=_backend, default="auto",
                    help=_BACKEND_HELP)
    sp.add_argument("--token-codec", type=_codec, default="float16",
                    help="how the token store keeps tokens: float16, float32, int8 (d + 4 bytes per token), "
                         "residual:4 or residual:2 (centroid id + 4 or 2 bits per dimension: 2 + d/2 or "
                         "2 + d/4 bytes per token)")
    sp.add_argument("--rescore", type=_positive, default=None,
                    help="keep float16 tokens on an exact tier and rescore the best N candidates from it "
                         "(with a compressed --token-codec)")
    sp.add_argument("--candidates", type=_positive_list, default=[100, 200, 500, 1000],
                    help="comma-separated candidate counts (each >= 100)")
    sp.add_argument("--pca", type=_positive, default=None, help="project tokens to this many dimensions first")
    sp.add_argument("--max-queries", type=_positive, default=None, help="evaluate only the first N judged queries")
    sp.add_argument("--json", help="write the report as JSON")
    sp.add_argument("--plot", help="draw recall vs latency to this PNG")
    sp.add_argument("--no-tune", action="store_true",
                    help="skip tuning the index (recall@10 >= 0.95 on pseudo-queries) and its tuned run")
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
    except KeyboardInterrupt:  # one line, not a torch traceback
        kept = {"index": "the embedding cache keeps every document batch encoded so far; run the same command "
                         "again to resume (--output is unchanged)",
                "encode": "the embedding cache keeps every batch encoded so far; run it again to resume",
                "bench": "the embedding cache keeps every batch encoded so far; run it again to resume"}
        print(f"muvera {args.command}: interrupted; {kept.get(args.command, 'nothing was changed')}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
