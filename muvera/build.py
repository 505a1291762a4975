"""Build an index from a directory of token shards, in bounded memory, resumable.

:func:`token_shards` reads three layouts:

* an **embedding cache** entry (:mod:`muvera.eval.cache`: ``manifest.json`` of format
  ``muvera-embeddings`` and ``shard-NNNNN.npz`` files of float16 tokens + lengths);
* an :func:`~muvera.distributed.encode_dataset` output (``muvera-encoded``: ``tokens-NNNNN.npy``,
  ``lengths-NNNNN.npy``, ``ids-NNNNN.json``; its config is used when none is given);
* plain NumPy pairs: every ``*tokens*.npy`` with the ``*lengths*.npy`` of the same name (and an
  optional ``*ids*.json``), in name order -- e.g. ``part-000.tokens.npy`` +
  ``part-000.lengths.npy``.

:func:`build_index` streams the shards into a :class:`~muvera.MuveraIndex` one shard at a time
(only the codes and the candidate index are held in RAM; an exact tier is appended to a file),
trains what needs training on the first documents, saves checkpoints into the index directory,
and resumes from the last checkpoint when run again with the same arguments.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np

from ._progress import progress as _progress_bar
from .config import FDEConfig
from .durable import check_file, file_sha256, loads_json

__all__ = ["TokenShards", "token_shards", "build_index"]

PathLike = Union[str, "os.PathLike[str]"]
BUILD_RECORD = 1  # version of the "build" entry in an index manifest


@dataclass
class _Shard:
    name: str
    documents: int
    tokens: int
    read: Callable[[], Tuple[np.ndarray, np.ndarray, Optional[List[Any]]]]


class TokenShards:
    """A directory of token shards (see the module docstring), checked when opened.

    Attributes
    ----------
    kind : {"embedding-cache", "encoded", "npy"}
    dimension : int
    num_documents, num_tokens : int
    config : FDEConfig or None
        The FDE config recorded by ``encode_dataset`` (None for the other layouts).
    fingerprint : str
        SHA-256 over the shard list (names, sizes, recorded checksums): a resumed build checks it.
    """

    def __init__(self, directory: PathLike, *, verify: bool = True):
        root = Path(os.fspath(directory))
        if not root.is_dir():
            raise ValueError(f"source: {root} is not a directory of token shards")
        self.root, self.verify = root, verify
        self.config: Optional[FDEConfig] = None
        manifest = root / "manifest.json"
        if manifest.is_file():
            try:
                fmt = loads_json(manifest.read_text(encoding="utf-8"), str(manifest)).get("format")
            except (ValueError, UnicodeDecodeError, AttributeError):
                raise ValueError(f"source: {manifest} is not valid JSON") from None
            if fmt == "muvera-embeddings":
                self._open_cache(manifest)
            elif fmt == "muvera-encoded":
                self._open_encoded()
            else:
                raise ValueError(f"source: {manifest} is neither an embedding cache nor encode_dataset output "
                                 f"(format {fmt!r})")
        else:
            self._open_npy()
        dims = {self.dimension}
        if not self.shards:
            raise ValueError(f"source: {root} holds no token shards")
        self.num_documents = sum(s.documents for s in self.shards)
        self.num_tokens = sum(s.tokens for s in self.shards)
        if None in dims or self.dimension <= 0:
            raise ValueError(f"source: {root}: unknown token dimension")

    # -- layouts -------------------------------------------------------------------------------
    def _open_cache(self, manifest: Path) -> None:
        m = loads_json(manifest.read_text(encoding="utf-8"), str(manifest))
        self.kind = "embedding-cache"
        count, size = m.get("count"), m.get("shard_size")
        if not isinstance(count, int) or not isinstance(size, int) or size <= 0:
            raise ValueError(f"source: {manifest}: bad count/shard_size")
        self.dimension = int(m.get("dim") or 0)
        listed = m.get("shards", [])
        if not isinstance(listed, list) or not all(isinstance(s, dict) and isinstance(s.get("file"), str)
                                                   for s in listed):
            raise ValueError(f"source: {manifest}: 'shards' must be a list of objects with a 'file' name")
        by_name = {s["file"]: s for s in listed}
        self.shards: List[_Shard] = []
        for i in range(-(-count // size)):
            name = f"shard-{i:05d}.npz"
            entry = by_name.get(name)
            if entry is None or not (self.root / name).is_file():
                raise ValueError(f"source: {self.root}: {name} is missing (an incomplete cache: run the "
                                 "encoding again to finish it)")
            try:
                docs, rows = int(entry["count"]), int(entry["rows"])
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"source: {manifest}: the entry of {name} lacks a valid count/rows "
                                 f"({type(exc).__name__}: {exc})") from None
            self.shards.append(_Shard(name, docs, rows, lambda name=name, entry=entry: self._read_npz(name, entry)))
        self.fingerprint = hashlib.sha256(manifest.read_bytes()).hexdigest()

    def _read_npz(self, name: str, entry: Dict[str, Any]) -> Tuple[np.ndarray, np.ndarray, None]:
        path = self.root / name
        if self.verify and file_sha256(path) != entry.get("sha256"):
            raise ValueError(f"source: {path}: checksum mismatch (corrupt shard)")
        try:
            with np.load(path, allow_pickle=False) as z:
                tokens, lengths = z["tokens"], z["lengths"]
        except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as exc:
            raise ValueError(f"source: {path}: unreadable shard ({type(exc).__name__}: {exc})") from None
        self._check(name, tokens, lengths, entry["count"], entry["rows"])
        return tokens, lengths, None

    def _open_encoded(self) -> None:
        from .distributed.encode import ENCODED_FORMAT, ENCODED_FORMAT_VERSION  # noqa: PLC0415
        from .index_format import read_manifest  # noqa: PLC0415

        m = read_manifest(self.root, ENCODED_FORMAT, ENCODED_FORMAT_VERSION)
        self.kind = "encoded"
        self.config = FDEConfig.from_dict(m["config"])
        self.dimension = self.config.dimension
        self.shards = []
        for s in m["shards"]:
            files = s["files"]
            self.shards.append(_Shard(files["tokens"]["name"], int(s["rows"]), int(s["tokens"]),
                                      lambda s=s: self._read_encoded(s)))
        self.fingerprint = hashlib.sha256((self.root / "manifest.json").read_bytes()).hexdigest()

    def _read_encoded(self, s: Dict[str, Any]) -> Tuple[np.ndarray, np.ndarray, List[Any]]:
        f = s["files"]
        paths = {}
        for key in ("tokens", "lengths", "ids"):
            name = f[key]["name"]
            if Path(name).name != name:
                raise ValueError(f"source: manifest.json: bad shard file name {name!r}")
            paths[key] = check_file(self.root / name, f[key], name, self.verify)
        tokens = _load_array(paths["tokens"])
        lengths = _load_array(paths["lengths"])
        ids = loads_json(paths["ids"].read_text(encoding="utf-8"), str(paths["ids"]))
        self._check(f["tokens"]["name"], tokens, lengths, s["rows"], s["tokens"])
        if len(ids) != len(lengths):
            raise ValueError(f"source: {f['ids']['name']}: {len(ids)} ids for {len(lengths)} documents")
        return tokens, lengths, ids

    def _open_npy(self) -> None:
        self.kind = "npy"
        names = sorted(p.name for p in self.root.iterdir() if p.is_file() and p.name.endswith(".npy")
                       and "tokens" in p.name)
        if not names:
            raise ValueError(f"source: {self.root} has no manifest.json and no *tokens*.npy files")
        self.shards = []
        self.dimension = 0
        listing = []
        for name in names:
            lname = name.replace("tokens", "lengths")
            if not (self.root / lname).is_file():
                raise ValueError(f"source: {self.root / name} has no matching {lname}")
            tok = _load_array(self.root / name, mmap=True)
            lens = _load_array(self.root / lname)
            self._check(name, tok, lens, None, None)
            if self.dimension and tok.shape[1] != self.dimension:
                raise ValueError(f"source: {name}: dimension {tok.shape[1]}, the shards before it have "
                                 f"{self.dimension}")
            self.dimension = int(tok.shape[1])
            iname = name.replace("tokens", "ids")[: -len(".npy")] + ".json"
            self.shards.append(_Shard(name, len(lens), len(tok),
                                      lambda n=name, ln=lname, i=iname: self._read_npy(n, ln, i)))
            # Content, not just names and sizes: a same-size rewrite must not resume into a mixed index.
            listing.append([name, _sampled_digest(self.root / name), file_sha256(self.root / lname)])
        self.fingerprint = hashlib.sha256(json.dumps(listing).encode()).hexdigest()

    def _read_npy(self, name: str, lname: str, iname: str) -> Tuple[np.ndarray, np.ndarray, Optional[List[Any]]]:
        tokens = _load_array(self.root / name)
        lengths = _load_array(self.root / lname)
        self._check(name, tokens, lengths, None, None)
        ids = None
        if (self.root / iname).is_file():
            ids = loads_json((self.root / iname).read_text(encoding="utf-8"), str(self.root / iname))
            if not isinstance(ids, list) or len(ids) != len(lengths):
                raise ValueError(f"source: {iname}: expected a list of {len(lengths)} ids")
        return tokens, lengths, ids

    def _check(self, name: str, tokens: np.ndarray, lengths: np.ndarray, docs: Optional[int],
               rows: Optional[int]) -> None:
        if tokens.ndim != 2 or tokens.dtype.kind != "f":
            raise ValueError(f"source: {name}: expected a (tokens, dim) float array, got {tokens.dtype} {tokens.shape}")
        if self.dimension and tokens.shape[1] != self.dimension:
            raise ValueError(f"source: {name}: token dimension {tokens.shape[1]}, expected {self.dimension}")
        if lengths.ndim != 1 or lengths.dtype.kind not in "iu":
            raise ValueError(f"source: {name}: lengths must be a 1-D integer array")
        if len(lengths) and int(lengths.min()) <= 0:
            at = int(np.argmin(lengths))
            raise ValueError(f"source: {name}: document {at} has length {int(lengths[at])} (every document needs "
                             "at least one token)")
        if int(lengths.sum()) != len(tokens):
            raise ValueError(f"source: {name}: lengths sum to {int(lengths.sum())}, but the shard holds "
                             f"{len(tokens)} tokens")
        if (docs is not None and len(lengths) != docs) or (rows is not None and len(tokens) != rows):
            raise ValueError(f"source: {name}: {len(lengths)} documents / {len(tokens)} tokens, the manifest "
                             f"says {docs} / {rows}")

    # -- reading -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.shards)

    def read(self, i: int) -> Tuple[np.ndarray, np.ndarray, Optional[List[Any]]]:
        """Shard ``i``: packed tokens, lengths (int64), ids (or None)."""
        tokens, lengths, ids = self.shards[i].read()
        return tokens, np.asarray(lengths, dtype=np.int64), ids

    def batch(self, i: int) -> Dict[str, Any]:
        """Shard ``i`` as a dict batch for :meth:`muvera.MuveraIndex.add`."""
        tokens, lengths, ids = self.read(i)
        out: Dict[str, Any] = {"tokens": tokens, "lengths": lengths}
        if ids is not None:
            out["ids"] = ids
        return out


def _load_array(path: Path, mmap: bool = False) -> np.ndarray:
    """One ``.npy`` shard file; ValueError naming it (never numpy's bare message)."""
    from .index_format import load_npy  # noqa: PLC0415

    try:
        return load_npy(path, mmap)
    except ValueError as exc:
        raise ValueError(f"source: {path}: {exc}") from None


def _sampled_digest(path: Path, block: int = 1 << 16) -> str:
    """Modification time, size and SHA-256 of the first, middle and last 64 KiB of a file."""
    st = path.stat()
    sha = hashlib.sha256(f"{st.st_size}:{st.st_mtime_ns}".encode())
    with open(path, "rb") as f:
        for at in sorted({0, max(0, st.st_size // 2 - block // 2), max(0, st.st_size - block)}):
            f.seek(at)
            sha.update(f.read(block))
    return sha.hexdigest()


def token_shards(directory: PathLike, *, verify: bool = True) -> TokenShards:
    """Open a directory of token shards (embedding cache, ``encode_dataset`` output, ``.npy``
    pairs); ValueError for missing or mismatched files."""
    return TokenShards(directory, verify=verify)


def _record(shards: TokenShards, done: int, docs: int, complete: bool, options: Dict[str, Any]) -> Dict[str, Any]:
    return {"version": BUILD_RECORD, "source": os.fspath(shards.root.absolute()),
            "source_fingerprint": shards.fingerprint, "shards_done": done, "documents_done": docs,
            "complete": complete, "options": options}


def build_index(source: Union[PathLike, TokenShards], path: PathLike, config: Optional[FDEConfig] = None, *,
                backend: str = "auto", token_codec: str = "float16", keep_exact: bool = False,
                model: Optional[str] = None, num_threads: Optional[int] = None, progress: bool = True,
                checkpoint_seconds: Optional[float] = 600.0, verify: bool = True) -> Any:
    """Index a directory of token shards into a saved index at ``path``, in bounded memory.

    Shards are added one at a time (:meth:`MuveraIndex.add` with a stream): peak memory is the
    final index's codes and candidate index, plus about one shard and one chunk of FDEs. The
    store is sized once from the shard manifest (no doubling copies). With ``keep_exact`` the
    float16 exact tier is appended to a temporary file beside ``path``, never held in RAM. A
    backend or codec that trains does so on the first :attr:`MuveraIndex.STREAM_TRAIN_DOCS`
    documents.

    Parameters
    ----------
    source : path or TokenShards
        See :func:`token_shards`.
    path : path
        The index directory to write. If it holds an unfinished build of the same source and
        settings, the build resumes after its last checkpoint; a finished one is loaded as is.
    config : FDEConfig, optional
        Required unless the source is ``encode_dataset`` output (its config is the default).
    backend, token_codec, keep_exact, model, num_threads
        As for :class:`~muvera.MuveraIndex`; ``backend="auto"`` picks by corpus size.
    progress : bool, default True
        A progress bar over documents.
    checkpoint_seconds : float or None, default 600
        Save a checkpoint after the first shard that ends this long after the last one (None:
        only the final save). Each checkpoint rewrites the whole index directory.
    verify : bool, default True
        Check shard checksums where the layout records them.

    Returns
    -------
    MuveraIndex
        The saved index, loaded from ``path`` (codes memory-mapped).

    Raises
    ------
    ValueError
        Missing or mismatched shard files, a dimension other than the config's, ``path`` holding
        another index or a build of another source or with other settings.
    """
    from .index import MuveraIndex  # noqa: PLC0415
    from .index_format import find_index_dir, read_index  # noqa: PLC0415

    shards = source if isinstance(source, TokenShards) else token_shards(source, verify=verify)
    if config is None:
        if shards.config is None:
            raise ValueError(f"config: required for a {shards.kind} source (only encode_dataset output records one)")
        config = shards.config
    if not isinstance(config, FDEConfig):
        raise TypeError(f"config: expected an FDEConfig, got {type(config).__name__}")
    if config.dimension != shards.dimension:
        raise ValueError(f"config: dimension {config.dimension}, but the shards hold {shards.dimension}-d tokens")
    if checkpoint_seconds is not None and (isinstance(checkpoint_seconds, bool) or not isinstance(
            checkpoint_seconds, (int, float)) or not checkpoint_seconds >= 0):
        raise ValueError(f"checkpoint_seconds: expected a non-negative number or None, got {checkpoint_seconds!r}")
    target = Path(os.fspath(path)).absolute()
    options = {"config": config.to_dict(), "backend": backend, "token_codec": token_codec,
               "keep_exact": bool(keep_exact), "model": model}
    spill = target.parent if keep_exact else None
    if spill is not None:
        spill.mkdir(parents=True, exist_ok=True)

    start_shard, index = 0, None
    try:
        existing: Optional[Path] = find_index_dir(target)
    except FileNotFoundError:
        existing = None
    if existing is not None and not (existing / "manifest.json").is_file():
        existing = None  # an empty (or foreign) directory: save() accepts or refuses it
    if existing is not None:
        f = read_index(existing, verify=False)
        rec = f.build
        if rec is None:
            raise ValueError(f"path: {target} holds an index that build_index did not make; choose another path")
        if rec.get("source_fingerprint") != shards.fingerprint:
            raise ValueError(f"path: {target} holds a build of another source ({rec.get('source')}); "
                             "choose another path or delete it")
        if rec.get("options") != options:
            diff = sorted(k for k in options if rec.get("options", {}).get(k) != options[k])
            raise ValueError(f"resume: {target} was built with other settings ({', '.join(diff)}); "
                             "pass the same ones or choose another path")
        if rec.get("complete"):
            return MuveraIndex.load(target, num_threads=num_threads)
        index = MuveraIndex.load(target, mmap=True, num_threads=num_threads)
        start_shard = int(rec["shards_done"])
        if keep_exact and index.exact_tier is not None:  # move the exact tier out of RAM's way
            index.exact_tier = _respill(index.exact_tier, config.dimension, spill)
    else:
        index = MuveraIndex(config, backend, num_threads=num_threads, token_codec=token_codec, model=model,
                            keep_exact=keep_exact, exact_spill_dir=spill)
    index.store.reserve(shards.num_tokens, shards.num_documents)

    done_docs = sum(s.documents for s in shards.shards[:start_shard])
    bar = _progress_bar(shards.num_documents, "building", enabled=progress, unit="doc")
    bar.update(done_docs)
    last = time.monotonic()
    i = start_shard
    try:
        while i < len(shards):
            # While something still trains, gather shards into one stream: the training sample is
            # the first STREAM_TRAIN_DOCS documents, as in one add of the whole corpus.
            group = [i]
            if index.store.needs_training or index.backend.needs_training:
                n = shards.shards[i].documents
                while n < index.STREAM_TRAIN_DOCS and group[-1] + 1 < len(shards):
                    group.append(group[-1] + 1)
                    n += shards.shards[group[-1]].documents
            try:
                # An empty shard (a worker that got no documents) adds nothing; it is not an error.
                index.add((shards.batch(j) for j in group if shards.shards[j].documents), progress=False)
            except (ValueError, TypeError) as exc:
                kind = TypeError if isinstance(exc, TypeError) else ValueError
                raise kind(f"source: shard {shards.shards[group[0]].name}"
                                f"{'..' + shards.shards[group[-1]].name if len(group) > 1 else ''}: {exc}") from exc
            i = group[-1] + 1
            done_docs += sum(shards.shards[j].documents for j in group)
            bar.update(sum(shards.shards[j].documents for j in group))
            if checkpoint_seconds is not None and i < len(shards) and time.monotonic() - last >= checkpoint_seconds:
                index.build_state = _record(shards, i, done_docs, False, options)
                index.save(target)
                last = time.monotonic()
    finally:
        bar.close()
    index.build_state = _record(shards, len(shards), done_docs, True, options)
    index.save(target)
    del index
    return MuveraIndex.load(target, num_threads=num_threads)


def _respill(store: Any, dimension: int, directory: Path) -> Any:
    """Copy a (memory-mapped) exact tier into a spilled store, in chunks."""
    from .store import TokenStore  # noqa: PLC0415

    out = TokenStore.spilled(dimension, "float16", directory)
    lens = store.lengths
    off = store.offsets
    step = 4096
    for s in range(0, len(lens), step):
        e = min(len(lens), s + step)
        out.append_codes(store.tokens[off[s]: off[e]], lens[s:e])
    return out
