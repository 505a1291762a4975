"""Block jobs on Ray: packed token arrays, or texts with the model in the workers, encoded into
the checksummed shards of :func:`muvera.distributed.encode_dataset` -- resumable, and safe
against a worker killed mid-job.

The input is cut into blocks of ``shard_rows`` documents; block ``i`` becomes shard ``i``.
A worker receives a block as packed arrays (tokens ``(T, d)`` + lengths: one object, never one
per document), encodes it and writes the shard's files under their final names (each written
to a temporary and renamed), then ``entry-<i>.json``: the block is done once that file exists.
So a task that Ray retries after its actor died rewrites the same files (no loss, no
duplicate), and a driver that is killed can be run again with ``resume=True``: the blocks
whose entries are there, with the same input digest, are kept, only the others are encoded.
The driver writes ``manifest.json`` last and removes the entries.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from .._optional import require
from .._validate import MAX_THREADS, positive_int
from ..config import FDEConfig
from ..durable import TMP_MARK, fsync_dir, loads_json, write_atomic
from ..encoder import FDEEncoder
from ..index_format import write_manifest
from ..store import pack_tokens
from .encode import (WORKER_ERRORS, SHARD_FILE, ENCODED_FORMAT, ENCODED_FORMAT_VERSION, write_named,
                     write_shard)

__all__ = ["encode_packed", "index_texts"]

PathLike = Union[str, "os.PathLike[str]"]
JOB_FILE = "muvera-job.json"  # named so that it cannot be a file of the user's
_ENTRY = re.compile(r"^entry-(\d{5,})\.json$")


def _entry_name(i: int) -> str:
    return f"entry-{i:05d}.json"


def _digest(ids: Sequence[Any], lengths: np.ndarray, sample: bytes = b"", texts: Optional[Sequence[str]] = None,
            metadata: Optional[Sequence[Any]] = None) -> str:
    """What a block's input is, so that a resumed job keeps only blocks of the same input: its ids
    and lengths, a sample of its tokens (both ends: hashing them all would cost a tenth of the
    encoding), or all of its texts and metadata."""
    h = hashlib.sha256()
    h.update(json.dumps(list(ids)).encode("utf-8"))
    h.update(np.ascontiguousarray(lengths, dtype=np.int64).tobytes())
    h.update(sample)
    if texts is not None:
        h.update(json.dumps(list(texts)).encode("utf-8"))
    if metadata is not None:
        h.update(json.dumps(list(metadata), sort_keys=True, default=str).encode("utf-8"))
    return h.hexdigest()


# -- the workers (plain classes, made Ray actors when a job runs) -----------------------------
class _ShardWorker:
    """Encodes a block's packed tokens into FDEs and writes its shard (one FDEEncoder per actor)."""

    def __init__(self, config: Dict[str, Any], output_dir: str, num_threads: int) -> None:
        self._config = FDEConfig.from_dict(config)
        self._encoder = FDEEncoder(self._config, num_threads=num_threads)
        self._root = Path(output_dir)

    def pid(self) -> int:
        return os.getpid()

    def write_encoded(self, i: int, digest: str, ids: List[Any], encoded: Any,
                      metadata: Optional[List[Dict[str, Any]]] = None,
                      texts: Optional[List[str]] = None) -> Tuple[Any, ...]:
        """:meth:`write` of the model stage's output ``(tokens, lengths)`` (or its error)."""
        if isinstance(encoded, tuple) and len(encoded) == 3 and isinstance(encoded[0], str):
            return encoded
        tokens, lengths = encoded
        return self.write(i, digest, ids, tokens, lengths, metadata, texts)

    def write(self, i: int, digest: str, ids: List[Any], tokens: Any, lengths: np.ndarray,
              metadata: Optional[List[Dict[str, Any]]] = None, texts: Optional[List[str]] = None) -> Tuple[Any, ...]:
        """Shard ``i`` from packed ``tokens`` (any float dtype; rounded to float16 first, as
        ``MuveraIndex.add`` does, and the FDEs encoded from the rounded tokens). Returns
        ``("ok", entry)`` or, for bad input, ``("error", type name, message)``: a deterministic
        failure is data, not something for Ray to retry."""
        try:
            try:
                tok16, lens = pack_tokens(tokens, self._config.dimension, np.float16, lengths=lengths, name="documents")
            except ValueError as exc:  # "documents[j]: ..." -> name the document by its id
                msg = re.sub(r"^documents\[(\d+)\]", lambda m: f"document {ids[int(m.group(1))]!r}", str(exc))
                raise ValueError(msg) from None
            fdes = self._encoder.encode_documents(tok16, lengths=lens)
            entry = write_shard(self._root, i, ids, fdes, tok16, lens)
            if metadata is not None:
                entry["files"]["metadata"] = write_named(
                    self._root / f"metadata-{i:05d}.json", lambda f: f.write(json.dumps(metadata).encode("utf-8")))
            if texts is not None:
                entry["files"]["texts"] = write_named(
                    self._root / f"texts-{i:05d}.json", lambda f: f.write(json.dumps(texts).encode("utf-8")))
            entry = {"index": i, "digest": digest, **entry}
            write_atomic(self._root / _entry_name(i), lambda f: f.write(json.dumps(entry).encode("utf-8")))
            return ("ok", entry)
        except (ValueError, TypeError, KeyError, OSError) as exc:
            msg = exc.args[0] if len(exc.args) == 1 and isinstance(exc.args[0], str) else str(exc)
            return ("error", type(exc).__name__, msg)


class _ModelWorker:
    """Runs the text model on a block (loaded once per actor): texts in, packed float16 tokens out."""

    def __init__(self, model: Any, batch_size: int, model_threads: Optional[int]) -> None:
        if model_threads:
            try:
                import torch  # noqa: PLC0415

                torch.set_num_threads(int(model_threads))
            except ImportError:
                pass
        from ..retriever import resolve_model  # noqa: PLC0415

        self._model = resolve_model(model)
        self._batch = batch_size

    def pid(self) -> int:
        return os.getpid()

    def dim(self) -> int:
        return int(self._model.dim)

    def encode(self, ids: List[Any], texts: List[str]) -> Any:
        """``(tokens (T, dim) float16, lengths)`` of the texts, or an error tuple."""
        try:
            parts: List[np.ndarray] = []
            for s in range(0, len(texts), self._batch):
                vecs = self._model.encode_documents(texts[s: s + self._batch])
                for j, v in enumerate(vecs):
                    if len(v) == 0:
                        raise ValueError(f"document {ids[s + j]!r}: the model gives no tokens for it")
                parts += [np.asarray(v) for v in vecs]
            lengths = np.fromiter((len(p) for p in parts), dtype=np.int64, count=len(parts))
            with np.errstate(over="ignore", invalid="ignore"):
                tokens = np.concatenate(parts).astype(np.float16)
            return tokens, lengths
        except (ValueError, TypeError, KeyError, OSError) as exc:
            msg = exc.args[0] if len(exc.args) == 1 and isinstance(exc.args[0], str) else str(exc)
            return ("error", type(exc).__name__, msg)


# -- the driver -------------------------------------------------------------------------------
def _job_spec(kind: str, config: FDEConfig, shard_rows: int, **extra: Any) -> Dict[str, Any]:
    return {"kind": kind, "config": config.to_dict(), "shard_rows": shard_rows, **extra}


def _prepare(root: Path, spec: Dict[str, Any], resume: bool, overwrite: bool) -> Dict[int, Dict[str, Any]]:
    """Make ``root`` ready; returns the done blocks' entries (resume) by block number."""
    root.mkdir(parents=True, exist_ok=True)
    job = root / JOB_FILE
    ours = [p for p in root.iterdir()
            if SHARD_FILE.match(p.name) or _ENTRY.match(p.name) or TMP_MARK in p.name
            or re.match(r"^(metadata|texts)-\d{5,}\.json$", p.name)]
    done: Dict[int, Dict[str, Any]] = {}
    if resume and job.is_file():
        try:
            saved = loads_json(job.read_text(encoding="utf-8"), JOB_FILE)
        except ValueError:
            saved = None
        if saved != spec:
            raise ValueError(f"resume: {root} holds a job with other settings ({JOB_FILE} differs: config, "
                             "shard_rows, model or kind); pass overwrite=True to start again")
        for p in ours:
            m = _ENTRY.match(p.name)
            if m:
                try:
                    entry = loads_json(p.read_text(encoding="utf-8"), p.name)
                    done[int(m.group(1))] = entry
                except (ValueError, OSError):
                    pass  # a damaged entry: that block is encoded again
        return done
    if (root / "manifest.json").exists() or ours:
        if not overwrite:
            hint = ("it holds a finished job (manifest.json), nothing to resume" if resume
                    else "or resume=True to finish an interrupted job")
            raise FileExistsError(f"output_dir: {root} already holds encoded shards; pass overwrite=True "
                                  f"to replace them ({hint})")
        if (root / "manifest.json").exists():
            (root / "manifest.json").unlink()  # first: no manifest ever describes a mix
            fsync_dir(root)
        for p in ours:
            p.unlink()
    write_atomic(job, lambda f: f.write(json.dumps(spec).encode("utf-8")))
    return {}


def _pool(cls: Any, n: int, options: Dict[str, Any], *args: Any) -> List[Any]:
    import ray  # noqa: PLC0415

    # An actor whose process dies is restarted and its unfinished tasks run again: the block
    # files are idempotent (same names, atomic renames), so a retry neither loses nor doubles.
    remote = ray.remote(cls).options(max_restarts=-1, max_task_retries=-1, **options)
    return [remote.remote(*args) for _ in range(n)]


def _run(blocks: Iterable[Tuple[int, str, Dict[str, Any]]], submit: Callable[[int, int, str, Dict[str, Any]], Any],
         done: Dict[int, Dict[str, Any]], workers: int, in_flight: int) -> Dict[int, Dict[str, Any]]:
    """Submit every block not already done (round-robin over ``workers``), at most ``in_flight``
    per worker at a time; returns every block's entry."""
    import ray  # noqa: PLC0415

    entries = dict(done)
    pending: Dict[Any, int] = {}
    load = [0] * workers

    def collect(block: bool) -> None:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=None if block else 0)
        for ref in ready:
            w = pending.pop(ref)
            load[w] -= 1
            out = ray.get(ref)
            if out[0] == "error":
                raise WORKER_ERRORS.get(out[1], ValueError)(out[2])
            entries[out[1]["index"]] = out[1]

    for i, digest, block in blocks:
        old = done.get(i)
        if old is not None and old.get("digest") == digest:
            continue
        entries.pop(i, None)
        while min(load) >= in_flight:
            collect(True)
        w = load.index(min(load))
        pending[submit(w, i, digest, block)] = w
        load[w] += 1
    while pending:
        collect(True)
    return entries


def _finish(root: Path, config: FDEConfig, entries: Dict[int, Dict[str, Any]], n_blocks: int,
            extra: Dict[str, Any]) -> Path:
    if sorted(entries) != list(range(n_blocks)):
        stale = sorted(set(entries) - set(range(n_blocks)))
        raise ValueError(f"output_dir: blocks {stale[:5]} are not part of this input (resume of a longer input?); "
                         "pass overwrite=True")
    shards = []
    for i in range(n_blocks):
        e = dict(entries[i])
        e.pop("digest", None)
        shards.append(e)
    # The ids were checked unique for the whole input before any block ran (a resumed block
    # is kept only when its digest, ids included, matches): no second pass over them here.
    manifest = {
        "format": ENCODED_FORMAT, "format_version": ENCODED_FORMAT_VERSION,
        "config": config.to_dict(), "dimension": config.dimension,
        "fde_dimension": config.output_dimension, "token_dtype": "float16",
        "num_rows": sum(s["rows"] for s in shards), "num_tokens": sum(s["tokens"] for s in shards),
        "shards": shards, **extra,
    }
    write_manifest(root, manifest)
    for p in list(root.iterdir()):  # the manifest says it all now
        if _ENTRY.match(p.name) or p.name == JOB_FILE:
            p.unlink()
    fsync_dir(root)
    return root


def _ray_ready() -> Any:
    require("ray", "ray", "muvera.distributed")
    import ray  # noqa: PLC0415

    if not ray.is_initialized():
        ray.init()
    return ray


def _fits(ray: Any, actors: int, cpus: float, gpus: float, what: str) -> None:
    """Refuse a pool this cluster cannot place whole: actors that never start would hold their
    blocks' tasks forever (a hang, not an error)."""
    have = ray.cluster_resources()
    if actors * cpus > have.get("CPU", 0) + 1e-9 or actors * gpus > have.get("GPU", 0) + 1e-9:
        raise ValueError(f"{what}: {actors} actors of {cpus:g} CPUs and {gpus:g} GPUs need more than this Ray "
                         f"cluster has ({have.get('CPU', 0):g} CPUs, {have.get('GPU', 0):g} GPUs)")


def _workers_for(ray: Any, num_workers: Optional[int], threads: int) -> int:
    n = (positive_int(num_workers, "num_workers") if num_workers is not None
         else max(1, int(ray.cluster_resources().get("CPU", 1)) // threads))
    _fits(ray, n, threads, 0, "num_workers, worker_threads")
    return n


def encode_packed(tokens: Any, lengths: Any, config: FDEConfig, output_dir: PathLike, *,
                  ids: Optional[Sequence[Any]] = None, shard_rows: int = 10_000,
                  num_workers: Optional[int] = None, worker_threads: int = 1, resume: bool = False,
                  overwrite: bool = False) -> Path:
    """Encode packed token arrays on a pool of Ray actors into :func:`encode_dataset`'s shards.

    The documents travel as blocks of ``shard_rows`` (one packed array per block, through Ray's
    shared-memory object store); each worker encodes a block and writes its shard itself.

    Parameters
    ----------
    tokens : (T, d) array
        All documents' tokens, packed row-major (NumPy array or memory map, any float dtype;
        rounded to float16 as :meth:`muvera.MuveraIndex.add` does).
    lengths : (n,) ints
        Tokens per document (each at least 1; they sum to T).
    config : FDEConfig
    output_dir : path
        Shared by every worker (local disk on one machine, shared storage on a cluster).
    ids : sequence of int or str, optional
        Default ``0..n-1``.
    shard_rows : int, default 10000
        Documents per block and shard.
    num_workers : int, optional
        Actors (default: the cluster's CPUs / ``worker_threads``).
    worker_threads : int, default 1
        CPUs reserved by, and encoding threads of, each actor.
    resume : bool, default False
        Finish a job this directory holds (same input, config and ``shard_rows``): blocks
        already written are kept, only the missing ones are encoded.
    overwrite : bool, default False
        Replace what ``output_dir`` holds.

    Returns
    -------
    Path
        ``output_dir``, read by :func:`load_encoded` / :func:`index_from_encoded`.

    Raises
    ------
    ValueError, TypeError
        Bad arrays or ids (checked on the driver before anything runs), bad token values (named
        by document id, from the worker), or a resume of a different job.
    FileExistsError
        ``output_dir`` holds shards and neither ``resume`` nor ``overwrite`` is given.
    """
    from ..batch import as_token_batch  # noqa: PLC0415

    if not isinstance(config, FDEConfig):
        raise TypeError(f"config: expected an FDEConfig, got {type(config).__name__}")
    tb = as_token_batch(tokens, config.dimension, lengths=lengths, name="tokens")
    if tb.arrays is not None:
        raise TypeError("tokens: expected one packed (T, d) array with lengths= (for a list of arrays, "
                        "use encode_dataset or np.concatenate them)")
    lens = np.asarray(tb.lengths, dtype=np.int64)
    n = len(lens)
    if n == 0:
        raise ValueError("lengths: expected at least one document")
    if (lens <= 0).any():
        raise ValueError(f"lengths[{int(np.argmin(lens))}]: expected at least one token per document")
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    if int(offsets[-1]) != len(tb.tokens) or not np.array_equal(tb.starts, offsets[:-1]):
        raise ValueError(f"lengths: they sum to {int(offsets[-1])}, tokens has {len(tb.tokens)} rows")
    doc_ids = _checked_ids(ids, n)
    shard_rows = positive_int(shard_rows, "shard_rows")
    threads = positive_int(worker_threads, "worker_threads", MAX_THREADS)
    root = Path(os.fspath(output_dir)).absolute()
    ray = _ray_ready()
    workers = _workers_for(ray, num_workers, threads)
    spec = _job_spec("packed", config, shard_rows, num_rows=n, num_tokens=int(offsets[-1]))
    done = _prepare(root, spec, bool(resume), bool(overwrite))
    src = tb.tokens
    actors = _pool(_ShardWorker, workers, {"num_cpus": threads}, config.to_dict(), str(root), threads)

    def blocks() -> Iterator[Tuple[int, str, Dict[str, Any]]]:
        for i, a in enumerate(range(0, n, shard_rows)):
            b = min(n, a + shard_rows)
            t0, t1 = int(offsets[a]), int(offsets[b])
            sample = src[t0: min(t1, t0 + 4)].tobytes() + src[max(t0, t1 - 4): t1].tobytes()
            block = {"ids": doc_ids[a:b], "t0": t0, "t1": t1, "lengths": lens[a:b]}
            yield i, _digest(block["ids"], block["lengths"], sample), block

    def submit(w: int, i: int, digest: str, block: Dict[str, Any]) -> Any:
        # One packed array per block: put once in the object store, read zero-copy by the worker.
        tok_ref = ray.put(np.ascontiguousarray(src[block["t0"]: block["t1"]]))
        return actors[w].write.remote(i, digest, block["ids"], tok_ref, block["lengths"])

    try:
        entries = _run(blocks(), submit, done, workers, in_flight=2)
    finally:
        for a in actors:
            ray.kill(a)
    return _finish(root, config, entries, -(-n // shard_rows), {})


def _checked_ids(ids: Optional[Sequence[Any]], n: int) -> List[Any]:
    from ..idmap import IdMap  # noqa: PLC0415

    return list(IdMap().check_new(None if ids is None else list(ids), n))


def _text_source(source: Any, ids: Optional[Sequence[Any]], metadata: Optional[Sequence[Any]]
                 ) -> Tuple[List[str], List[Any], Optional[List[Dict[str, Any]]]]:
    """texts, ids, metadata from a list of strings, a Ray Dataset of id/text(/title/metadata) rows,
    or files :func:`muvera.documents.load_documents` reads (JSONL, BEIR corpus, Parquet, TSV)."""
    from ..documents import load_documents  # noqa: PLC0415
    from ..metadata import MetadataStore  # noqa: PLC0415
    from ..retriever import check_texts  # noqa: PLC0415

    if isinstance(source, (str, os.PathLike)):
        if ids is not None or metadata is not None:
            raise ValueError("ids, metadata: files carry their own ids; give them only with a list of texts")
        docs = load_documents(source)
        meta = [{"title": t, "snippet": b[:200]} for t, b in zip(docs.titles, docs.bodies)]
        return docs.texts, _checked_ids(list(docs.ids), len(docs.texts)), meta
    mod = type(source).__module__
    if mod.startswith("ray.data"):
        if ids is not None or metadata is not None:
            raise ValueError("ids, metadata: a Dataset carries its own (columns id, text, title, metadata)")
        texts, out_ids, meta = [], [], []
        has_meta = False
        for row in source.iter_rows():
            if "text" not in row:
                raise KeyError(f"dataset: expected a 'text' column, got {sorted(row)}")
            title = str(row.get("title") or "")
            texts.append((title + " " + str(row["text"])).strip())
            out_ids.append(row["id"] if "id" in row else len(out_ids))
            m = row.get("metadata")
            has_meta = has_meta or m is not None
            meta.append(dict(m) if m is not None else ({"title": title} if title else {}))
        out_ids = _checked_ids([x.item() if isinstance(x, np.generic) else x for x in out_ids], len(out_ids))
        return check_texts(texts, "dataset"), out_ids, meta if (has_meta or any(meta)) else None
    texts = check_texts(source, "texts")
    items = None if metadata is None else MetadataStore.check(metadata, len(texts))
    return texts, _checked_ids(ids, len(texts)), items


def index_texts(dataset: Any, output_dir: PathLike, *, model: Any = "default", config: Any = None,
                ids: Optional[Sequence[Any]] = None, metadata: Optional[Sequence[Dict[str, Any]]] = None,
                keep_text: bool = True, shard_rows: int = 2_000, model_workers: Optional[int] = None,
                model_threads: int = 1, num_gpus: float = 0.0, fde_workers: int = 1, batch_size: int = 256,
                resume: bool = False, overwrite: bool = False) -> Path:
    """Index texts with Ray: the model runs in a pool of actors (stage 1, on GPUs when
    ``num_gpus``), FDE encoding and shard writing in another (stage 2); the output is
    :func:`encode_dataset`'s shard format with the texts and metadata, which
    :func:`index_from_encoded` turns into an index equal to a single-process
    :class:`muvera.Retriever` build of the same corpus.

    Parameters
    ----------
    dataset : list of str, ray.data.Dataset, or path
        Texts (ids default ``0..n-1``); a Dataset with ``text`` (and ``id``, ``title``,
        ``metadata``) columns; or files :func:`muvera.documents.load_documents` reads (a BEIR
        ``corpus.jsonl`` or its folder, JSONL, Parquet, TSV), with ids from the files and
        ``title``/``snippet`` metadata, as ``muvera index`` does.
    output_dir : path
        Shared by every worker.
    model : str or TokenEncoder, default "default"
        A model spec (loaded in each stage-1 actor) or an encoder object (shipped to them).
    config : FDEConfig or preset name, optional
        Default: preset "10240" at the model's dimension.
    ids, metadata : optional
        With a list of texts: one id / JSON-able dict per text.
    keep_text : bool, default True
        Keep each text with its document (metadata ``text`` and the BM25 index), as
        :class:`muvera.Retriever` does.
    shard_rows : int, default 2000
        Documents per block (a task of each stage) and shard.
    model_workers : int, optional
        Stage-1 actors (default: the cluster's CPUs / ``model_threads``, or its GPUs /
        ``num_gpus``).
    model_threads : int, default 1
        CPUs of (and torch threads in) each stage-1 actor.
    num_gpus : float, default 0
        GPUs per stage-1 actor.
    fde_workers : int, default 1
        Stage-2 actors (one CPU each): the FDEs cost about a thousandth of the model.
    batch_size : int, default 256
        Texts per model call.
    resume, overwrite : bool
        As for :func:`encode_packed`.

    Returns
    -------
    Path
    """
    from ..retriever import TEXT_KEY, config_for, resolve_model  # noqa: PLC0415

    shard_rows = positive_int(shard_rows, "shard_rows")
    model_threads = positive_int(model_threads, "model_threads", MAX_THREADS)
    fde_workers = positive_int(fde_workers, "fde_workers")
    batch_size = positive_int(batch_size, "batch_size")
    if not isinstance(num_gpus, (int, float)) or isinstance(num_gpus, bool) or num_gpus < 0:
        raise ValueError(f"num_gpus: expected a number >= 0, got {num_gpus!r}")
    texts, doc_ids, items = _text_source(dataset, ids, metadata)
    n = len(texts)
    if keep_text:
        items = [{} for _ in range(n)] if items is None else items
        for i, m in enumerate(items):
            if TEXT_KEY in m:
                raise ValueError(f"metadata[{i}]: the key {TEXT_KEY!r} is reserved for the kept text")
        items = [{**m, TEXT_KEY: t} for m, t in zip(items, texts)]
    ray = _ray_ready()
    spec_name = model if isinstance(model, str) else None
    if spec_name is None:
        resolve_model(model)  # a TypeError for what is not a TokenEncoder, before any actor starts
    if model_workers is None:
        if num_gpus:
            model_workers = max(1, int(ray.cluster_resources().get("GPU", 0) // num_gpus))
        else:
            model_workers = max(1, int(ray.cluster_resources().get("CPU", 1)) // model_threads)
    model_workers = positive_int(model_workers, "model_workers")
    _fits(ray, model_workers, model_threads, float(num_gpus), "model_workers, model_threads, num_gpus")
    root = Path(os.fspath(output_dir)).absolute()
    models = _pool(_ModelWorker, model_workers, {"num_cpus": model_threads, "num_gpus": num_gpus},
                   model, batch_size, model_threads)
    try:
        dim = ray.get(models[0].dim.remote())
        cfg = config_for(config, dim)
        spec = _job_spec("texts", cfg, shard_rows, model=spec_name, keep_text=bool(keep_text), num_rows=n)
        done = _prepare(root, spec, bool(resume), bool(overwrite))
        # Stage 2 reserves no CPU: it costs about a thousandth of the model and shares its cores
        # (reserving any could leave it unschedulable behind a model pool that holds them all).
        writers = _pool(_ShardWorker, fde_workers, {"num_cpus": 0}, cfg.to_dict(), str(root), 1)
        try:
            def blocks() -> Iterator[Tuple[int, str, Dict[str, Any]]]:
                for i, a in enumerate(range(0, n, shard_rows)):
                    b = min(n, a + shard_rows)
                    block = {"ids": doc_ids[a:b], "texts": texts[a:b],
                             "metadata": None if items is None else items[a:b]}
                    yield i, _digest(block["ids"], np.zeros(0, np.int64), texts=block["texts"],
                                     metadata=block["metadata"]), block

            def submit(w: int, i: int, digest: str, block: Dict[str, Any]) -> Any:
                m = models[i % len(models)]
                encoded = m.encode.options(num_returns=1).remote(block["ids"], block["texts"])
                return writers[w].write_encoded.remote(i, digest, block["ids"], encoded, block["metadata"],
                                                       block["texts"] if keep_text else None)

            # Blocks go out as model actors can take them; each writer's queue follows its model.
            entries = _run(blocks(), submit, done, fde_workers, in_flight=2 * model_workers)
        finally:
            for a in writers:
                ray.kill(a)
    finally:
        for a in models:
            ray.kill(a)
    extra = {"model": spec_name, "keep_text": bool(keep_text)}
    return _finish(root, cfg, entries, -(-n // shard_rows), extra)
