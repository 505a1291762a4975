"""Distributed document encoding with Ray Data, written as checksummed shards.

Layout of an output directory (format ``muvera-encoded``, version 1)::

    fdes-00000.npy     (rows, fde_dimension) float32   document FDEs
    tokens-00000.npy   (tokens, dimension) float16     the documents' tokens, packed row-major
    lengths-00000.npy  (rows,) int64                   tokens per document
    ids-00000.json     [id, ...]                       one int or str per document
    ...
    manifest.json                                      config, shards (rows, tokens, bytes, sha256)

Every file is written under a temporary name, fsynced and renamed; ``manifest.json`` is written
last, so a directory with a manifest is always complete. The FDEs are encoded from the
float16-rounded tokens, exactly as :meth:`muvera.MuveraIndex.add` encodes them, so an index built
from the shards (:func:`index_from_encoded`) is bit-identical to one built in a single process.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pickle
import re
import secrets
import shutil
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np

from .._validate import MAX_THREADS, positive_int
from ..config import FDEConfig
from ..durable import TMP_MARK, check_file, fsync_dir, loads_json, write_atomic
from ..encoder import FDEEncoder
from ..index_format import read_manifest, write_manifest
from ..store import pack_tokens
from .._optional import require

__all__ = ["encode_dataset", "load_encoded", "index_from_encoded", "ENCODED_FORMAT",
           "ENCODED_FORMAT_VERSION"]

ENCODED_FORMAT = "muvera-encoded"
ENCODED_FORMAT_VERSION = 3  # 2: the manifest is checksummed; 3: shards may carry metadata and texts
PathLike = Union[str, "os.PathLike[str]"]

SHARD_FILE = re.compile(r"^(fdes|tokens|lengths)-\d{5,}\.npy$|^(ids|metadata|texts)-\d{5,}\.json$")
_TMP_MARK = TMP_MARK
_PATH_COLUMN = "__muvera_path__"  # file-list input: one path per row
WORKER_ERRORS = {e.__name__: e for e in (ValueError, TypeError, KeyError, OSError, FileNotFoundError,
                                    PermissionError)}


# -- per-row conversion (runs inside the Ray workers) -------------------------------------------
def _token_matrix(value: Any, dimension: int, name: str) -> np.ndarray:
    """One row's tokens as an ``(n, dimension)`` array.

    Accepts a 2-D array (a Ray tensor column, fixed or variable shape), a flat 1-D array of
    ``n * dimension`` values in row-major order (e.g. a Parquet ``list<float>`` column), or nested
    lists (``list<list<float>>``).
    """
    arr = np.asarray(value)
    if arr.dtype == object:  # nested Arrow lists arrive as arrays of arrays
        try:
            arr = np.asarray(arr.tolist())
        except ValueError:
            raise ValueError(f"{name}: ragged token rows (each token needs {dimension} values)") from None
    if arr.ndim == 1:
        if arr.size % dimension:
            raise ValueError(f"{name}: a flat token list needs a multiple of {dimension} values "
                             f"(the config's dimension), got {arr.size}")
        arr = arr.reshape(-1, dimension)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected (n_tokens, {dimension}) tokens or a flat list of "
                         f"n_tokens * {dimension} values, got shape {arr.shape}")
    return arr


def _plain_ids(values: Any, name: str) -> List[Union[int, str]]:
    raw = values.tolist() if isinstance(values, np.ndarray) else list(values)
    out: List[Union[int, str]] = []
    for x in raw:
        if isinstance(x, np.generic):
            x = x.item()
        if isinstance(x, bytes):
            x = x.decode("utf-8")
        if isinstance(x, bool) or not isinstance(x, (int, str)):
            raise TypeError(f"{name}: ids must be ints or strings (they are stored as JSON), "
                            f"got {type(x).__name__} {x!r}")
        out.append(x)
    return out


def _documents_of_file(path: str, dimension: int) -> Tuple[List[Union[int, str]], List[np.ndarray]]:
    """Documents of one ``.npy`` / ``.npz`` file and their ids (see :func:`encode_dataset`)."""
    p = Path(path)
    stem = p.stem
    if p.suffix == ".npy":
        return [stem], [_token_matrix(np.load(p, allow_pickle=False), dimension, str(p))]
    if p.suffix != ".npz":
        raise ValueError(f"{p}: expected a .npy or .npz file")
    with np.load(p, allow_pickle=False) as z:
        keys = list(z.files)
        if "tokens" in keys and ("lengths" in keys or "offsets" in keys):
            tokens = _token_matrix(z["tokens"], dimension, f"{p}[tokens]")
            raw = np.asarray(z["lengths"] if "lengths" in keys else z["offsets"])
            if raw.ndim != 1 or (raw.size and raw.dtype.kind not in "iu") or (raw < 0).any():
                raise ValueError(f"{p}: lengths/offsets must be a 1-D array of non-negative integers")
            if "lengths" in keys:
                offs = np.concatenate(([0], np.cumsum(raw))).astype(np.int64)
            else:
                offs = raw.astype(np.int64)
            if len(offs) < 1 or offs[0] != 0 or offs[-1] != len(tokens) or (np.diff(offs) < 0).any():
                raise ValueError(f"{p}: lengths/offsets do not match the {len(tokens)} token rows "
                                 "(offsets must rise from 0 to the number of rows)")
            docs = [tokens[offs[i]: offs[i + 1]] for i in range(len(offs) - 1)]
            if "ids" in keys:
                ids = _plain_ids(z["ids"], f"{p}[ids]")
                if len(ids) != len(docs):
                    raise ValueError(f"{p}: {len(ids)} ids for {len(docs)} documents")
            else:
                ids = [f"{stem}:{i}" for i in range(len(docs))]
            return ids, docs
        return ([f"{stem}:{k}" for k in keys],
                [_token_matrix(z[k], dimension, f"{p}[{k}]") for k in keys])


class _EncodeWorker:
    """Ray Data callable class: builds one FDEEncoder per actor, encodes each batch.

    Each output batch is **one row** holding the whole encoded batch as a pickled tuple
    ``("batch", ids, fdes, tokens_f16, lengths)`` in a binary column: a single binary value per
    batch travels through Arrow unchanged, whatever the Ray version's tensor-column support.
    Invalid input becomes ``("error", exception type name, message)``.
    """

    def __init__(self, config: Dict[str, Any], tokens_column: str, id_column: str,
                 num_threads: int, output_dir: Optional[str] = None) -> None:
        self._config = FDEConfig.from_dict(config)
        self._encoder = FDEEncoder(self._config, num_threads=num_threads)  # once per actor
        self._tokens_column = tokens_column
        self._id_column = id_column
        self._root = None if output_dir is None else Path(output_dir)

    def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        payload = np.empty(1, dtype=object)
        try:
            item = self._encode(batch)
            if self._root is not None:  # write the shard here; only its entry goes to the driver
                item = ("written", item[1], write_shard(self._root, _shard_number(), *item[1:]) if item[1] else None)
            payload[0] = pickle.dumps(item, protocol=5)
        except (ValueError, TypeError, KeyError, OSError) as exc:
            # Bad input: hand the error to the driver as data, which re-raises it with its own
            # type (Ray would wrap it in a UserCodeException and retry a deterministic failure).
            msg = exc.args[0] if len(exc.args) == 1 and isinstance(exc.args[0], str) else str(exc)
            payload[0] = pickle.dumps(("error", type(exc).__name__, msg), protocol=5)
        return {"payload": payload}

    def _encode(self, batch: Dict[str, np.ndarray]) -> Tuple[Any, ...]:
        d = self._config.dimension
        if _PATH_COLUMN in batch:
            ids, docs = [], []
            for path in batch[_PATH_COLUMN].tolist():
                file_ids, file_docs = _documents_of_file(path, d)
                ids += file_ids
                docs += file_docs
        else:
            for col in (self._id_column, self._tokens_column):
                if col not in batch:
                    raise KeyError(f"column {col!r} not in the dataset (columns: {sorted(batch)}); "
                                   "pass id_column= / tokens_column=")
            ids = _plain_ids(batch[self._id_column], f"column {self._id_column!r}")
            docs = [_token_matrix(t, d, f"{self._tokens_column}[{ids[i]!r}]")
                    for i, t in enumerate(batch[self._tokens_column])]
        if not docs:
            return ("batch", [], np.zeros((0, self._config.output_dimension), np.float32),
                    np.zeros((0, d), np.float16), np.zeros(0, np.int64))
        # Round to float16 first, exactly as MuveraIndex.add does, and encode the rounded tokens:
        # the FDEs then equal the ones a single-process index computes from its stored tokens.
        try:
            tokens, lengths = pack_tokens(docs, d, np.float16, name="documents")
        except ValueError as exc:  # "documents[i]: ..." -> name the document by its id
            msg = re.sub(r"^documents\[(\d+)\]", lambda mt: f"document {ids[int(mt.group(1))]!r}", str(exc))
            raise ValueError(msg) from None
        fdes = self._encoder.encode_documents(tokens, lengths=lengths)
        return ("batch", ids, fdes, tokens, lengths)


# -- file writing -------------------------------------------------------------------------------
def write_named(path: Path, write: Any) -> Dict[str, Any]:
    """:func:`muvera.durable.write_atomic`, with the file name in the entry."""
    return {"name": path.name, **write_atomic(path, write)}


def _npy_writer(arr: np.ndarray) -> Any:
    return lambda f: np.lib.format.write_array(f, np.ascontiguousarray(arr), allow_pickle=False)


class _ShardWriter:
    """Accumulates encoded batches on the driver and writes them as shards of ``shard_rows``.

    Writing (hashing, fsync) runs on one background thread, overlapping the next shard's
    arrival; at most one shard is being written while the next one fills, which bounds memory
    to about two shards.
    """

    def __init__(self, root: Path, shard_rows: int, fde_dim: int, dimension: int) -> None:
        from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

        self._root, self._shard_rows = root, shard_rows
        self._fde_dim, self._dim = fde_dim, dimension
        self._pending: List[Tuple[List[Any], np.ndarray, np.ndarray, np.ndarray]] = []
        self._pending_rows = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="muvera-shard-writer")
        self._writing: Any = None
        self._count = 0
        self.shards: List[Dict[str, Any]] = []
        self.written: List[Path] = []
        self.seen: set = set()

    def add(self, ids: List[Any], fdes: np.ndarray, tokens: np.ndarray, lengths: np.ndarray) -> None:
        for x in ids:  # a duplicate would only surface when an index is built; fail early
            if x in self.seen:
                raise ValueError(f"ids: duplicate document id {x!r} in the dataset")
            self.seen.add(x)
        self._pending.append((ids, fdes, tokens, lengths))
        self._pending_rows += len(ids)
        while self._pending_rows >= self._shard_rows:
            self._flush(self._shard_rows)

    def _wait(self) -> None:
        if self._writing is not None:
            fut, self._writing = self._writing, None
            fut.result()  # re-raises a write error here

    def close(self) -> None:
        try:
            if self._pending_rows:
                self._flush(self._pending_rows)
            self._wait()
        finally:
            self._pool.shutdown(wait=True)

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            self._wait()
        self._pool.shutdown(wait=True)
        for path in self.written:
            with contextlib.suppress(OSError):
                path.unlink()
        self.shards = []

    def _flush(self, rows: int) -> None:
        ids: List[Any] = []
        parts_f, parts_t, parts_l = [], [], []
        need = rows
        while need:
            b_ids, b_f, b_t, b_l = self._pending[0]
            take = min(need, len(b_ids))
            ntok = int(b_l[:take].sum())
            ids += b_ids[:take]
            parts_f.append(b_f[:take])
            parts_t.append(b_t[:ntok])
            parts_l.append(b_l[:take])
            if take == len(b_ids):
                self._pending.pop(0)
            else:  # keep the rest of this batch for the next shard
                self._pending[0] = (b_ids[take:], b_f[take:], b_t[ntok:], b_l[take:])
            need -= take
        self._pending_rows -= rows
        fdes = np.concatenate(parts_f).astype(np.float32, copy=False)
        tokens = np.concatenate(parts_t).astype(np.float16, copy=False)
        lengths = np.concatenate(parts_l).astype(np.int64, copy=False)
        i = self._count
        self._count += 1
        self._wait()  # one shard in flight at a time
        self._writing = self._pool.submit(self._write, i, ids, fdes, tokens, lengths)

    def _write(self, i: int, ids: List[Any], fdes: np.ndarray, tokens: np.ndarray,
               lengths: np.ndarray) -> None:
        names = [f"fdes-{i:05d}.npy", f"tokens-{i:05d}.npy", f"lengths-{i:05d}.npy", f"ids-{i:05d}.json"]
        self.written += [self._root / n for n in names]  # before writing: discard() must see them
        self.shards.append({"index": i, **write_shard(self._root, i, ids, fdes, tokens, lengths)})

    def add_written(self, ids: List[Any], entry: Optional[Dict[str, Any]]) -> None:
        """Record a shard a worker wrote (in arrival order, which is the input order)."""
        for x in ids:
            if x in self.seen:
                raise ValueError(f"ids: duplicate document id {x!r} in the dataset")
            self.seen.add(x)
        if entry is None:
            return
        self.written += [self._root / f["name"] for f in entry["files"].values()]
        self.shards.append({"index": self._count, **entry})
        self._count += 1


def _shard_number() -> int:
    """A shard file number no other worker picks (workers cannot count globally; the manifest
    gives the order)."""
    return 10**15 + secrets.randbelow(9 * 10**15)


def write_shard(root: Path, i: int, ids: List[Any], fdes: np.ndarray, tokens: np.ndarray,
                 lengths: np.ndarray) -> Dict[str, Any]:
    """Write one shard's four files (each atomically); returns its manifest entry (no index)."""
    files = {
        "fdes": write_named(root / f"fdes-{i:05d}.npy", _npy_writer(fdes)),
        "tokens": write_named(root / f"tokens-{i:05d}.npy", _npy_writer(tokens.astype(np.float16, copy=False))),
        "lengths": write_named(root / f"lengths-{i:05d}.npy", _npy_writer(lengths.astype(np.int64, copy=False))),
        "ids": write_named(root / f"ids-{i:05d}.json", lambda f: f.write(json.dumps(ids).encode("utf-8"))),
    }
    return {"rows": len(ids), "tokens": int(lengths.sum()), "files": files}


def _prepare_dir(root: Path, overwrite: bool) -> None:
    root.mkdir(parents=True, exist_ok=True)
    manifest = root / "manifest.json"
    ours = [p for p in root.iterdir() if SHARD_FILE.match(p.name) or _TMP_MARK in p.name]
    if (manifest.exists() or ours) and not overwrite:
        raise FileExistsError(f"output_dir: {root} already holds encoded shards; pass overwrite=True "
                              "to replace them")
    if manifest.exists():
        manifest.unlink()  # first, so no manifest ever describes a mix of old and new shards
        fsync_dir(root)
    for p in ours:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink()


@contextlib.contextmanager
def _preserve_order(dataset: Any) -> Iterator[None]:
    """Keep input order (deterministic shards) for this run only: the flag lives in a
    DataContext shared with the caller's datasets, so it is restored afterwards."""
    import ray.data  # noqa: PLC0415

    contexts = [ray.data.DataContext.get_current()]
    own = getattr(dataset, "context", None)
    if own is not None and own is not contexts[0]:
        contexts.append(own)
    saved = [c.execution_options.preserve_order for c in contexts]
    try:
        for c in contexts:
            c.execution_options.preserve_order = True
        yield
    finally:
        for c, v in zip(contexts, saved):
            c.execution_options.preserve_order = v


def encode_dataset(dataset: Any, config: FDEConfig, output_dir: PathLike, *, shard_rows: int = 10_000,
                   tokens_column: str = "tokens", id_column: str = "id", batch_size: int = 256,
                   num_workers: Optional[int] = None, worker_threads: int = 1,
                   preserve_order: bool = True, overwrite: bool = False,
                   write_in_workers: bool = True) -> Path:
    """Encode documents on a pool of Ray actors and write them as sharded files.

    Parameters
    ----------
    dataset : ray.data.Dataset or sequence of paths
        A Ray Dataset with one row per document: ``id_column`` (int or str) and ``tokens_column``
        holding the document's token vectors as either

        * an ``(n_i, d)`` tensor (what ``ray.data.from_items([{"id": 7, "tokens": arr}, ...])`` or
          ``from_numpy`` produce; variable ``n_i`` is fine), or
        * a flat list of ``n_i * d`` floats in row-major order (the robust choice for Parquet:
          ``list<float32>``; ``d`` is taken from ``config.dimension``), or nested lists.

        Any float dtype; tokens are rounded to float16 like :meth:`muvera.MuveraIndex.add` does.
        Alternatively a list of ``.npy`` / ``.npz`` files (on storage every worker can read):
        a ``.npy`` file is one ``(n, d)`` document with id = its file stem; an ``.npz`` file is
        either packed (``tokens`` ``(T, d)`` with ``lengths`` or ``offsets``, optional ``ids``,
        default ids ``"<stem>:<i>"``) or one document per array with id ``"<stem>:<key>"``.
    config : FDEConfig
    output_dir : str or path
        Created if missing. Must not already hold shards unless ``overwrite``.
    shard_rows : int, default 10000
        Documents per shard (the last one may hold fewer). The driver buffers one shard.
    tokens_column, id_column : str
        Column names of a Dataset input.
    batch_size : int, default 256
        Documents per ``map_batches`` call (with a file list: files per call, reduced so that
        every worker gets work).
    num_workers : int, optional
        Size of the actor pool (each actor builds its FDEEncoder once). Default: autoscale
        between 1 and the cluster's CPUs / ``worker_threads``.
    worker_threads : int, default 1
        CPUs reserved by, and C++ encoding threads used in, each actor.
    preserve_order : bool, default True
        Shards follow the input order (deterministic output); False lets Ray emit batches as
        they finish, which can be faster when batch costs vary.
    overwrite : bool, default False
        Replace existing shards in ``output_dir`` (the old manifest is removed first).
    write_in_workers : bool, default True
        Each worker writes the shards of the batches it encodes straight into ``output_dir``
        (which must then be on storage every worker can write: local disk on one machine, a
        shared file system on a cluster) and sends the driver only the shard's ids and file
        entries; the driver checks ids and writes the manifest. With a Dataset input a worker's
        batch is ``shard_rows`` documents (``batch_size`` is not used). False: workers send
        FDEs and tokens to the driver, which writes every shard (``output_dir`` need only exist
        on the driver).

    Returns
    -------
    Path
        ``output_dir``; read it with :func:`load_encoded` or :func:`index_from_encoded`.

    Raises
    ------
    FileExistsError
        ``output_dir`` holds shards and ``overwrite`` is False.
    ValueError, TypeError, KeyError, OSError
        Duplicate ids, ids that are neither int nor str, malformed tokens (naming the document
        id), a missing column, an unreadable file: raised on the driver with the worker's
        exception type. Shard files written before the error are removed.

    Notes
    -----
    By default the workers write the shards (no FDE or token passes through the driver). The FDEs are computed from the float16-rounded
    tokens and equal ``FDEEncoder(config).encode_documents(tokens_f16, lengths=lengths)`` bit for
    bit. Call ``ray.init(...)`` first to pick a cluster; otherwise Ray starts a local one.
    """
    require("ray.data", "ray", "encode_dataset")
    import ray  # noqa: PLC0415 (optional dependency)
    import ray.data  # noqa: PLC0415

    if not isinstance(config, FDEConfig):
        raise TypeError(f"config: expected an FDEConfig, got {type(config).__name__}")
    shard_rows = positive_int(shard_rows, "shard_rows")
    batch_size = positive_int(batch_size, "batch_size")
    worker_threads = positive_int(worker_threads, "worker_threads", MAX_THREADS)
    if num_workers is not None:
        num_workers = positive_int(num_workers, "num_workers")
    root = Path(os.fspath(output_dir)).absolute()
    if not ray.is_initialized():
        ray.init()  # what Ray Data would do; needed here to size the actor pool

    if isinstance(dataset, (str, os.PathLike)):
        dataset = [dataset]
    if isinstance(dataset, (list, tuple)):
        paths = [str(Path(os.fspath(p)).absolute()) for p in dataset]
        if not paths:
            raise ValueError("dataset: expected at least one file")
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            raise FileNotFoundError(f"dataset: no such files: {missing[:5]}")
        ds = ray.data.from_items([{_PATH_COLUMN: p} for p in paths])
        workers_hint = num_workers or max(1, int(ray.cluster_resources().get("CPU", 1)) // worker_threads)
        batch_size = max(1, min(batch_size, math.ceil(len(paths) / workers_hint)))
    elif isinstance(dataset, ray.data.Dataset):
        ds = dataset
    else:
        raise TypeError(f"dataset: expected a ray.data.Dataset or a list of .npy/.npz paths, got "
                        f"{type(dataset).__name__}")

    if num_workers is None:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        compute = ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, cpus // worker_threads))
    else:
        compute = ray.data.ActorPoolStrategy(min_size=num_workers, max_size=num_workers)

    _prepare_dir(root, overwrite)
    writer = _ShardWriter(root, shard_rows, config.output_dimension, config.dimension)
    if write_in_workers and not isinstance(dataset, (list, tuple)):
        batch_size = shard_rows  # one worker batch = one shard
    encoded = ds.map_batches(
        _EncodeWorker, batch_size=batch_size, batch_format="numpy", compute=compute,
        fn_constructor_kwargs={"config": config.to_dict(), "tokens_column": tokens_column,
                               "id_column": id_column, "num_threads": worker_threads,
                               "output_dir": str(root) if write_in_workers else None},
        num_cpus=worker_threads)
    order = _preserve_order(encoded) if preserve_order else contextlib.nullcontext()
    try:
        with order:
            for batch in encoded.iter_batches(batch_size=None, batch_format="numpy"):
                for blob in batch["payload"]:
                    item = pickle.loads(blob)  # produced by our own workers
                    if item[0] == "error":
                        raise WORKER_ERRORS.get(item[1], ValueError)(item[2])
                    if item[0] == "written":
                        writer.add_written(item[1], item[2])
                    else:
                        writer.add(*item[1:])
        writer.close()
    except BaseException:
        writer.discard()  # shards without a manifest are useless: leave the directory clean
        if write_in_workers:  # and what workers wrote that the driver never heard of
            for p in root.iterdir():
                if SHARD_FILE.match(p.name) or _TMP_MARK in p.name:
                    with contextlib.suppress(OSError):
                        p.unlink()
        raise

    manifest = {
        "format": ENCODED_FORMAT, "format_version": ENCODED_FORMAT_VERSION,
        "config": config.to_dict(), "dimension": config.dimension,
        "fde_dimension": config.output_dimension, "token_dtype": "float16",
        "num_rows": sum(s["rows"] for s in writer.shards),
        "num_tokens": sum(s["tokens"] for s in writer.shards),
        "shards": writer.shards,
    }
    write_manifest(root, manifest)
    fsync_dir(root)
    return root


# -- reading ------------------------------------------------------------------------------------
def _read_manifest(root: Path) -> Dict[str, Any]:
    path = root / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"output_dir: no manifest.json in {root} (not encoded, or the run "
                                "did not finish)")
    return read_manifest(root, ENCODED_FORMAT, ENCODED_FORMAT_VERSION)


def _checked(root: Path, entry: Dict[str, Any], verify: bool) -> Path:
    name = entry.get("name") if isinstance(entry, dict) else None
    # Only plain names of files inside output_dir: never ../ or absolute paths from a manifest.
    if not isinstance(name, str) or not SHARD_FILE.match(name) or Path(name).name != name:
        raise ValueError(f"manifest.json: bad shard file name {name!r}")
    return check_file(root / name, entry, name, verify)


def _read_json_list(root: Path, entry: Dict[str, Any], verify: bool, n: int, what: str) -> List[Any]:
    out = loads_json(_checked(root, entry, verify).read_text(encoding="utf-8"), str(entry.get("name")))
    if not isinstance(out, list) or len(out) != n:
        raise ValueError(f"{entry.get('name')}: expected {n} {what}")
    return out


def _read_extras(root: Path, verify: bool) -> Tuple[Optional[List[Any]], Optional[List[str]]]:
    """The shards' metadata and texts (written by :func:`index_texts`), or None where absent."""
    m = _read_manifest(root)
    metadata: Optional[List[Any]] = [] if all("metadata" in s["files"] for s in m["shards"]) else None
    texts: Optional[List[str]] = [] if all("texts" in s["files"] for s in m["shards"]) else None
    if not m["shards"]:
        return None, None
    for s in m["shards"]:
        if metadata is not None:
            metadata += _read_json_list(root, s["files"]["metadata"], verify, s["rows"], "metadata dicts")
        if texts is not None:
            texts += _read_json_list(root, s["files"]["texts"], verify, s["rows"], "texts")
    return metadata, texts


def _read_shards(root: Path, verify: bool) -> Tuple[Dict[str, Any], List[Any], np.ndarray,
                                                    np.ndarray, np.ndarray]:
    m = _read_manifest(root)
    config = FDEConfig.from_dict(m["config"])
    ids: List[Any] = []
    fdes, tokens, lengths = [], [], []
    for s in m["shards"]:
        f = s["files"]
        fd = np.load(_checked(root, f["fdes"], verify), allow_pickle=False)
        tk = np.load(_checked(root, f["tokens"], verify), allow_pickle=False)
        ln = np.load(_checked(root, f["lengths"], verify), allow_pickle=False)
        sid = loads_json(_checked(root, f["ids"], verify).read_text(encoding="utf-8"), str(f["ids"]))
        n, t = s["rows"], s["tokens"]
        if (fd.shape != (n, config.output_dimension) or fd.dtype != np.float32
                or tk.shape != (t, config.dimension) or tk.dtype != np.float16
                or ln.shape != (n,) or int(ln.sum()) != t or len(sid) != n):
            raise ValueError(f"shard {s['index']}: arrays disagree with manifest.json")
        ids += sid
        fdes.append(fd)
        tokens.append(tk)
        lengths.append(ln.astype(np.int64, copy=False))
    if not m["shards"]:
        return (m, ids, np.zeros((0, config.output_dimension), np.float32),
                np.zeros((0, config.dimension), np.float16), np.zeros(0, np.int64))
    return m, ids, np.concatenate(fdes), np.concatenate(tokens), np.concatenate(lengths)


def load_encoded(output_dir: PathLike, *, verify: bool = True
                 ) -> Tuple[List[Union[int, str]], np.ndarray, np.ndarray, np.ndarray]:
    """Read every shard written by :func:`encode_dataset`, concatenated in shard order.

    Parameters
    ----------
    output_dir : str or path
    verify : bool, default True
        Check each file's SHA-256 against the manifest (sizes and shapes are always checked).

    Returns
    -------
    ids : list of int or str
    fdes : (N, fde_dimension) float32
    tokens : (T, dimension) float16
        Packed; document ``i`` owns ``lengths[i]`` consecutive rows.
    lengths : (N,) int64

    Raises
    ------
    FileNotFoundError
        No ``manifest.json`` (nothing encoded, or the run did not finish).
    ValueError
        A missing, truncated or corrupted shard file, or an unknown format.
    """
    _, ids, fdes, tokens, lengths = _read_shards(Path(os.fspath(output_dir)), verify)
    return ids, fdes, tokens, lengths


def index_from_encoded(output_dir: PathLike, backend: str = "auto", *, index_dir: Optional[PathLike] = None,
                       reencode: bool = False, verify: bool = True,
                       num_threads: Optional[int] = None) -> "Any":
    """Build a :class:`muvera.MuveraIndex` from :func:`encode_dataset` output.

    The stored FDEs are used as they are (no re-encoding): the shards are assembled into the
    index's own on-disk format and opened with :meth:`muvera.MuveraIndex.load`, which checks the
    result. Since the FDEs were computed from the float16 tokens, the index equals one built by
    ``MuveraIndex(config).add(tokens, ids=ids, lengths=lengths)`` in a single process.

    Parameters
    ----------
    output_dir : str or path
        An :func:`encode_dataset` output directory.
    backend : str, default "auto"
        As for :class:`muvera.MuveraIndex` (a faiss backend is trained/filled from the FDEs).
    index_dir : str or path, optional
        Keep the assembled index here (a normal saved index, stored with the exact backend's
        FDEs: reopen it with ``MuveraIndex.load(index_dir, backend=...)``; the return value
        memory-maps it). Default: a temporary directory inside ``output_dir``, removed once
        loaded into memory.
    reencode : bool, default False
        Ignore the stored FDEs and ``add`` the tokens (re-encoding them in this process).
    verify : bool, default True
        Check the shards' checksums.
    num_threads : int, optional
        Threads of the returned index.

    Returns
    -------
    MuveraIndex
    """
    from ..backends import ExactBackend  # noqa: PLC0415
    from ..idmap import IdMap  # noqa: PLC0415
    from ..index import MuveraIndex  # noqa: PLC0415
    from ..ragged import offsets_of  # noqa: PLC0415
    from ..store import TokenStore  # noqa: PLC0415

    root = Path(os.fspath(output_dir)).absolute()
    m, ids, fdes, tokens, lengths = _read_shards(root, verify)
    config = FDEConfig.from_dict(m["config"])
    if reencode:
        metadata, texts = _read_extras(root, verify)
        index = MuveraIndex(config, backend, num_threads=num_threads,
                            model=m["model"] if isinstance(m.get("model"), str) else None)
        if ids:
            index.add(tokens, ids=ids, lengths=lengths, metadata=metadata, texts=texts)
        return index

    keep = index_dir is not None
    target = Path(os.fspath(index_dir)).absolute() if keep else root / f".index{_TMP_MARK}{secrets.token_hex(4)}"
    if target.exists() and any(target.iterdir()):
        raise FileExistsError(f"index_dir: {target} is not empty")
    try:
        # The parts as MuveraIndex.add would leave them, saved by the index's own writer.
        idmap = IdMap()
        idmap.append(idmap.check_new(ids, len(ids)))
        store = TokenStore.from_arrays(np.ascontiguousarray(tokens, dtype=np.float16),
                                       offsets_of(np.asarray(lengths, dtype=np.int64)), "float16")
        metadata, texts = _read_extras(root, verify)
        index = MuveraIndex.from_parts(config, ids=idmap, store=store,
                                       backend=ExactBackend(config.output_dimension).set_vectors(
                                           np.ascontiguousarray(fdes)), num_threads=num_threads,
                                       metadata=metadata, texts=texts)
        if isinstance(m.get("model"), str):
            index.model = m["model"]  # recorded, so the index encodes query texts the same way
        index.save(target)
        # The loader checks what was just written (sizes, shapes, ids); checksums were already
        # checked on the shards.
        return MuveraIndex.load(target, mmap=keep, backend=backend, verify=False, num_threads=num_threads)
    finally:
        if not keep:
            shutil.rmtree(target, ignore_errors=True)
