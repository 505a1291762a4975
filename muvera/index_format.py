"""The on-disk index format: one writer, versioned readers, checksummed manifests.

An index directory holds ``manifest.json`` and the files of each part (ids, tokens, backend),
each part writing and reading its own files. The manifest lists every file with its size and
SHA-256 and carries a SHA-256 of its own content, so a flipped byte or an edited field anywhere
is caught on load.

Versions
--------
* **1** (muvera 0.1.0): ids inline in the manifest, ``token_dtype``, a backend spec string, no
  manifest checksum. Read by :func:`_read_v1`; never written any more.
* **2**: ids in array files (:class:`~muvera.idmap.IdMap`), ``tokens`` with a token codec,
  ``backend`` with its own file entries, the text ``model`` that made the tokens, a manifest
  checksum.

Saving (:func:`save_directory`) writes a temporary sibling ``<name>.tmp-<hex>``, then swaps it in
through ``<name>.bak``; both carry a marker file naming the index they belong to, and only
directories with that marker are ever deleted. A save holds a lock on its temporary directory's
marker while it runs: a temporary whose lock is free belongs to a save that is gone (its
leftovers are removed), one whose lock is held belongs to a live save in another process (a
second writer to the same path is refused; its files are never touched). Loads that overlap a
save's swap retry, so they get the old index or the new one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import socket
import stat
import time
import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from .durable import check_file, fsync_dir, loads_json, write_atomic

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "read_manifest", "write_manifest", "save_directory",
           "resolve_index_dir", "load_npy", "expect", "IndexFiles", "IndexParts", "read_index", "write_index",
           "register_section", "SECTIONS"]

FORMAT_NAME = "muvera-index"
FORMAT_VERSION = 2
MARKER = ".muvera-owner"        # in every directory this library writes: names its index
MAX_MANIFEST_BYTES = 256 << 20  # version-1 manifests hold every id inline


# -- small array helpers ------------------------------------------------------------------------
def load_npy(path: Path, mmap: bool) -> np.ndarray:
    """An ``.npy`` file (no pickles), memory-mapped read-only when ``mmap``; ValueError naming it."""
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError, SyntaxError, TypeError, KeyError, RecursionError,
            tokenize.TokenError) as exc:  # a damaged header reaches numpy's header parser
        raise ValueError(f"{Path(path).name}: unreadable array file: {type(exc).__name__}: {exc}") from None


def expect(arr: np.ndarray, name: str, dtype: Any, shape: Tuple[int, ...]) -> None:
    """ValueError naming ``name`` unless ``arr`` has this dtype and shape."""
    if arr.dtype != np.dtype(dtype) or arr.shape != tuple(shape):
        raise ValueError(f"{name}: expected {np.dtype(dtype).name} {tuple(shape)} per manifest.json, got "
                         f"{arr.dtype.name} {arr.shape}")


# -- manifests ----------------------------------------------------------------------------------
def _canonical(body: Dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def write_manifest(directory: Path, body: Dict[str, Any]) -> Dict[str, Any]:
    """Write ``directory/manifest.json``: ``body`` plus ``checksum`` = SHA-256 of its canonical JSON."""
    doc = dict(body)
    doc["checksum"] = {"sha256": hashlib.sha256(_canonical(body)).hexdigest()}
    return write_atomic(Path(directory) / "manifest.json",
                        lambda f: f.write(json.dumps(doc, indent=1).encode("utf-8")))


def read_manifest(directory: Path, format_name: str, max_version: int,
                  max_bytes: int = MAX_MANIFEST_BYTES) -> Dict[str, Any]:
    """Read and check ``directory/manifest.json``.

    The file must be a regular file of at most ``max_bytes`` (no FIFO or device is ever opened
    for reading), valid JSON of bounded nesting, of ``format_name`` and a version this code reads;
    a ``checksum`` entry, when present (every version after 1), must match.

    Raises
    ------
    ValueError
        Naming ``manifest.json`` and the problem.
    """
    path = Path(directory) / "manifest.json"
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ValueError(f"manifest.json: missing from {directory}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"manifest.json: not a regular file in {directory}")
    if st.st_size > max_bytes:
        raise ValueError(f"manifest.json: {st.st_size} bytes, more than the {max_bytes} a manifest may hold")
    with open(path, "rb") as f:
        raw = f.read(max_bytes + 1)
    try:
        doc = loads_json(raw.decode("utf-8"), "manifest.json")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"manifest.json: not valid JSON: {exc}") from None
    except RecursionError:
        raise ValueError("manifest.json: nested too deeply") from None
    if not isinstance(doc, dict) or doc.get("format") != format_name:
        raise ValueError(f"manifest.json: not a {format_name} manifest")
    version = doc.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"manifest.json: bad format_version {version!r}")
    if version > max_version:
        raise ValueError(f"manifest.json: format version {version} is newer than this muvera "
                         f"supports ({max_version}); upgrade muvera")
    checksum = doc.pop("checksum", None)
    if checksum is not None or version > 1:
        want = checksum.get("sha256") if isinstance(checksum, dict) else None
        if want != hashlib.sha256(_canonical(doc)).hexdigest():
            raise ValueError("manifest.json: checksum mismatch (the manifest was edited or corrupted)")
    return doc


# -- saving a directory atomically --------------------------------------------------------------
def _marker_owner(directory: Path) -> Optional[str]:
    """The index name recorded in ``directory``'s marker, or None if it has none."""
    p = directory / MARKER
    try:
        if not p.is_file() or p.stat().st_size > 4096:
            return None
        return json.loads(p.read_text(encoding="utf-8")).get("index")
    except (OSError, ValueError, AttributeError):
        return None


def is_index_dir(directory: Path, format_name: str) -> bool:
    """Whether ``directory`` holds a saved index of ``format_name`` (ours to replace): its marker,
    or a manifest of that format (indexes saved by 0.1.0 have no marker). A folder that merely
    has some other ``manifest.json`` is never replaced."""
    if _marker_owner(directory) == directory.name:
        return True
    path = directory / "manifest.json"
    try:
        if not path.is_file() or path.stat().st_size > MAX_MANIFEST_BYTES:
            return False
        with open(path, "rb") as f:
            head = loads_json(f.read(MAX_MANIFEST_BYTES).decode("utf-8"), "manifest.json")
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return False
    return isinstance(head, dict) and head.get("format") == format_name


try:  # POSIX: flock locks die with their process, so a crashed save never blocks the next
    import fcntl as _fcntl
except ImportError:  # pragma: no cover (Windows: no liveness check; leftovers count as stale)
    _fcntl = None  # type: ignore[assignment]


@contextlib.contextmanager
def swap_lock(target: Path, exclusive: bool) -> Iterator[None]:
    """A lock on ``target``'s parent directory: a save holds it exclusively for its two renames
    and the removal of the old directory (milliseconds), a load shared while it reads, so a
    load never reads half an old and half a new index, nor files that are being deleted."""
    if _fcntl is None:
        yield
        return
    try:
        fd = os.open(os.fspath(target.parent), os.O_RDONLY)
    except OSError:  # no parent to lock (it is created by the save): nothing to exclude yet
        yield
        return
    try:
        _fcntl.flock(fd, _fcntl.LOCK_EX if exclusive else _fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def _claim(tmp: Path, owner: str) -> Any:
    """Write ``tmp``'s marker and hold an exclusive lock on it for the save's lifetime; returns
    the open file (closing it releases the lock)."""
    f = open(tmp / MARKER, "w+b")  # noqa: SIM115 (held open on purpose)
    if _fcntl is not None:
        _fcntl.flock(f.fileno(), _fcntl.LOCK_EX)
    info = {"index": owner, "pid": os.getpid(), "host": socket.gethostname(), "started_ns": time.time_ns()}
    f.write(json.dumps(info).encode("utf-8"))
    f.flush()
    os.fsync(f.fileno())
    return f


def _live_save(directory: Path) -> Optional[Dict[str, Any]]:
    """The marker of a save still running in some process (its lock is held), else None."""
    if _fcntl is None:
        return None
    try:
        with open(directory / MARKER, "rb") as f:
            try:
                _fcntl.flock(f.fileno(), _fcntl.LOCK_SH | _fcntl.LOCK_NB)
            except BlockingIOError:
                try:
                    info = json.loads(f.read(4096).decode("utf-8"))
                except (ValueError, UnicodeDecodeError):
                    info = None
                return info if isinstance(info, dict) else {}
            _fcntl.flock(f.fileno(), _fcntl.LOCK_UN)
    except OSError:
        return None
    return None


def _other_saves(target: Path, mine: Optional[Path] = None) -> List[Tuple[Path, Dict[str, Any]]]:
    """Live saves to ``target`` other than ``mine``: (temporary directory, marker)."""
    out = []
    try:
        siblings = list(target.parent.iterdir())
    except OSError:
        return out
    for p in siblings:
        if p != mine and p.name.startswith(target.name + ".tmp-") and p.is_dir() and not p.is_symlink():
            info = _live_save(p)
            if info is not None:
                out.append((p, info))
    return out


def resolve_index_dir(path: Any) -> Path:
    """The real directory an index path names (symlinks followed, so saves go where they point)."""
    return Path(os.path.realpath(os.fspath(path)))


def _backup_of(path: Path) -> Path:
    return path.with_name(path.name + ".bak")


#: An empty, unmarked temporary is a save killed before its marker was written once it is
#: this old (younger ones may be a live save between ``mkdir`` and its marker).
UNMARKED_GRACE_S = 60.0


def clean_stale(target: Path) -> None:
    """Remove ``<name>.tmp-*`` siblings of ``target`` that this library wrote for it and whose
    save is gone (a killed save's leftovers); a live save's temporary (its marker locked by
    another process) and anything without the marker naming ``target`` are left alone, except
    empty unmarked ones older than :data:`UNMARKED_GRACE_S` (killed before the marker)."""
    try:
        siblings = list(target.parent.iterdir())
    except OSError:
        return
    for p in siblings:
        if not (p.name.startswith(target.name + ".tmp-") and p.is_dir() and not p.is_symlink()):
            continue
        if _marker_owner(p) == target.name:
            if _live_save(p) is None:
                shutil.rmtree(p, ignore_errors=True)
        elif not (p / MARKER).exists():
            try:
                if time.time() - p.stat().st_mtime > UNMARKED_GRACE_S:
                    p.rmdir()  # only ever succeeds on an empty directory
            except OSError:
                pass


def _foreign_files(target: Path) -> List[str]:
    """Names in an existing index directory that its manifest does not list (a user's own
    files): a save would delete them with the old directory."""
    try:
        doc = loads_json((target / "manifest.json").read_text(encoding="utf-8"), "manifest.json")
        listed = set(doc.get("files", {})) if isinstance(doc, dict) else set()
    except (OSError, ValueError, UnicodeDecodeError, RecursionError, AttributeError):
        return []  # unreadable manifest: nothing to compare against (it is ours by its marker)
    if not listed:
        return []
    ours = listed | {"manifest.json", MARKER, "wal.log"}
    return sorted(p.name for p in target.iterdir() if p.name not in ours)


def save_directory(target: Path, format_name: str, write: Callable[[Path], Dict[str, Any]]) -> None:
    """Save an index directory atomically.

    ``write(tmp)`` writes every part into the fresh directory ``tmp`` and returns the manifest
    body; the manifest (checksummed) and the ownership marker are added, everything is fsynced,
    and ``tmp`` replaces ``target`` through ``<target>.bak``. At every instant ``target`` or
    its backup is whole.

    Raises
    ------
    ValueError
        ``target`` exists and is not an index of ``format_name`` (nor an empty directory), or
        ``<target>.bak`` exists and was not written by muvera for this index.
    """
    if target.exists() and not (target.is_dir() and (is_index_dir(target, format_name)
                                                      or not any(target.iterdir()))):
        raise ValueError(f"path: {target} exists and is not a muvera index directory")
    backup = _backup_of(target)
    if backup.exists() or backup.is_symlink():
        if backup.is_symlink() or not backup.is_dir() or _marker_owner(backup) != target.name:
            raise ValueError(f"path: {backup} exists and was not written by muvera for {target.name}; "
                             f"move it away before saving")
    foreign = _foreign_files(target) if target.is_dir() else []
    if foreign:
        raise ValueError(f"path: {target} holds files muvera did not write ({', '.join(foreign[:5])}); saving "
                         "replaces the whole directory, so move them away first")
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(target)
    tmp = target.with_name(f"{target.name}.tmp-{secrets.token_hex(6)}")
    tmp.mkdir()
    claim = None
    try:
        claim = _claim(tmp, target.name)
        _refuse_concurrent(target, tmp)
        body = write(tmp)
        body["format"] = format_name
        write_manifest(tmp, body)
        fsync_dir(tmp)
        _refuse_concurrent(target, tmp)  # the earliest of two overlapping saves wins
        with swap_lock(target, exclusive=True):
            _swap_into_place(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if claim is not None:
            claim.close()


def _refuse_concurrent(target: Path, tmp: Path) -> None:
    """ValueError when another live save to ``target`` started before this one (``tmp``)."""
    mine = _marker_info(tmp)
    key = (mine.get("started_ns", 0), tmp.name)
    for other, info in _other_saves(target, tmp):
        if (info.get("started_ns", 0), other.name) < key:
            who = f"pid {info.get('pid')} on {info.get('host')}" if info.get("pid") else "another process"
            raise ValueError(f"path: {target} is being saved by {who} (since before this save began); "
                             "one writer per index path: wait for it, or save elsewhere")


def _marker_info(directory: Path) -> Dict[str, Any]:
    try:
        info = json.loads((directory / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return info if isinstance(info, dict) else {}


def _swap_into_place(tmp: Path, target: Path) -> None:
    backup = _backup_of(target)
    if target.exists():
        if backup.exists():
            shutil.rmtree(backup)  # checked above: ours, and target is whole, so it is stale
        os.replace(target, backup)
    try:
        os.replace(tmp, target)
    except BaseException:
        if backup.exists() and not target.exists():
            os.replace(backup, target)  # roll back
        raise
    fsync_dir(target.parent)
    shutil.rmtree(backup, ignore_errors=True)  # the old target: checked to be an index before


def dir_identity(path: Any) -> Optional[Tuple[int, int]]:
    """(device, inode) of the directory :func:`find_index_dir` picks now, or None: a save's
    swap changes it, so a load can tell that the files under it changed while it read them."""
    try:
        st = find_index_dir(path).stat()
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def find_index_dir(path: Any) -> Path:
    """``path`` itself, or ``<path>.bak`` when a save was interrupted between its two renames."""
    root = resolve_index_dir(path)
    if not root.exists() and (_backup_of(root) / "manifest.json").exists():
        return _backup_of(root)
    if not root.is_dir():
        raise FileNotFoundError(f"path: no muvera index at {os.fspath(path)}")
    return root


# -- optional manifest sections ------------------------------------------------------------------
#: Optional top-level manifest objects (name -> what it holds). A new one is one line here, or a
#: :func:`register_section` call: :func:`write_index` writes it when the parts carry it and
#: :func:`read_index` hands it back in ``IndexFiles.sections`` (a JSON object, or absent).
SECTIONS: Dict[str, str] = {
    "build": "muvera.build_index's progress record (resume)",
    "tuned": "MuveraIndex.tune's chosen search setting",
    "search": "MuveraIndex's search defaults (prune_factor; absent: saved before 0.10.0, which did not prune)",
}


def register_section(name: str, description: str) -> None:
    """Add an optional manifest section (a JSON object carried through save and load)."""
    reserved = {"format", "format_version", "muvera_version", "manifest_sha256", "exact_tier", "metadata",
                "config", "model", "num_rows", "num_live", "ids", "tokens", "backend", "files"}
    if not isinstance(name, str) or not name.isidentifier() or name in reserved:
        raise ValueError(f"name: expected a new identifier, not a manifest field, got {name!r}")
    SECTIONS[name] = str(description)


# -- writing an index ---------------------------------------------------------------------------
@dataclass
class IndexParts:
    """What an index is made of, for :func:`write_index`: each part writes its own files."""

    config: Dict[str, Any]
    model: Optional[str]
    ids: Any                       # IdMap
    store: Any                     # TokenStore (codes)
    backend: Any                   # Backend
    metadata: Any                  # MetadataStore
    exact: Any = None              # TokenStore (the float16 exact tier), when kept
    sections: Optional[Dict[str, Dict[str, Any]]] = None  # optional SECTIONS, by name


def write_index(tmp: Path, parts: IndexParts, muvera_version: str) -> Dict[str, Any]:
    """Write every part's files into ``tmp`` and return the manifest body (for
    :func:`save_directory`, which writes it with its checksum and swaps the directory in)."""
    sections = {k: v for k, v in (parts.sections or {}).items() if v is not None}
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise ValueError(f"sections: {sorted(unknown)} are not registered manifest sections (register_section)")
    files: Dict[str, Any] = {}

    def take(part_files: Dict[str, Any]) -> List[str]:
        clash = set(files) & set(part_files)
        if clash:
            raise RuntimeError(f"index parts write the same files: {sorted(clash)}")
        files.update(part_files)
        return sorted(part_files)

    id_fields, id_files = parts.ids.save(tmp)
    tok_fields, tok_files = parts.store.save(tmp)
    ids_entry = {**id_fields, "files": take(id_files)}
    tokens_entry = {**tok_fields, "files": take(tok_files)}
    backend_entry = {"spec": parts.backend.name, "ntotal": parts.backend.ntotal, "files": take(parts.backend.save(tmp))}
    exact_tier = None
    if parts.exact is not None:
        ex_fields, ex_files = parts.exact.save(tmp, prefix="exact_")
        exact_tier = {**ex_fields, "files": take(ex_files)}
    meta_entry = {"files": take(parts.metadata.save(tmp)), "columns": parts.metadata.columns}
    return {"format_version": FORMAT_VERSION, "muvera_version": muvera_version, "exact_tier": exact_tier,
            "metadata": meta_entry, "config": parts.config, "model": parts.model,
            "num_rows": parts.ids.num_rows, "num_live": len(parts.ids),
            "ids": ids_entry, "tokens": tokens_entry, "backend": backend_entry, **sections, "files": files}


# -- reading an index ---------------------------------------------------------------------------
@dataclass
class IndexFiles:
    """A checked index directory, normalised across format versions."""

    root: Path
    version: int
    config: Dict[str, Any]
    model: Optional[str]
    num_rows: int
    id_map: Any                          # the ids, read (an IdMap, from either version's layout)
    tokens_fields: Dict[str, Any]        # for TokenStore.load
    backend_spec: str
    backend_entries: Dict[str, Dict[str, Any]]
    files: Dict[str, Dict[str, Any]]
    muvera_version: str
    exact_fields: Optional[Dict[str, Any]] = None  # the float16 exact tier, when kept
    sections: Optional[Dict[str, Dict[str, Any]]] = None  # the optional SECTIONS present

    @property
    def build(self) -> Optional[Dict[str, Any]]:
        """muvera.build_index's progress record, when built by it."""
        return (self.sections or {}).get("build")

    @property
    def tuned(self) -> Optional[Dict[str, Any]]:
        """MuveraIndex.tune's chosen search setting."""
        return (self.sections or {}).get("tuned")

    @property
    def search(self) -> Optional[Dict[str, Any]]:
        """MuveraIndex's search defaults (None: saved before 0.10.0)."""
        return (self.sections or {}).get("search")


def _field(m: Dict[str, Any], key: str, kind: Any) -> Any:
    if key not in m:
        raise ValueError(f"manifest.json: missing {key!r}")
    v = m[key]
    if kind is int and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
        raise ValueError(f"manifest.json: {key} must be a non-negative int, got {v!r}")
    if kind is not int and not isinstance(v, kind):
        raise ValueError(f"manifest.json: {key} has the wrong type ({type(v).__name__})")
    return v


def read_index(path: Any, verify: bool = True) -> IndexFiles:
    """Find, read and check an index directory's manifest and files (sizes always, SHA-256 when
    ``verify``). The parts then read their own files."""
    root = find_index_dir(path)
    if not (root / "manifest.json").exists() and not (root / "manifest.json").is_symlink():
        raise ValueError(f"path: {root} is not a muvera index (it has no manifest.json); give the directory "
                         "that MuveraIndex.save or `muvera index -o` wrote")
    m = read_manifest(root, FORMAT_NAME, FORMAT_VERSION)
    files = _field(m, "files", dict)
    for name, entry in files.items():
        if not isinstance(name, str) or "/" in name or "\\" in name or name.startswith(".") or name == "manifest.json":
            raise ValueError(f"manifest.json: bad file name {name!r}")
        check_file(root / name, entry, name, verify)
    if m["format_version"] == 1:
        return _read_v1(root, m, files)
    ids = _field(m, "ids", dict)
    tokens = _field(m, "tokens", dict)
    backend = _field(m, "backend", dict)
    spec = backend.get("spec")
    if not isinstance(spec, str):
        raise ValueError("manifest.json: backend.spec must be a string")
    names = backend.get("files", [])
    if not isinstance(names, list) or any(name not in files for name in names):
        raise ValueError("manifest.json: the backend's files are not listed under files")
    for part in ("ids", "tokens"):
        listed = (ids if part == "ids" else tokens).get("files", [])
        if not isinstance(listed, list) or any(name not in files for name in listed):
            raise ValueError(f"manifest.json: the {part} files are not listed under files")
    entries = {name: files[name] for name in names}
    model = m.get("model")
    if model is not None and not isinstance(model, str):
        raise ValueError("manifest.json: model must be a string or null")
    exact = m.get("exact_tier")
    if exact is not None and (not isinstance(exact, dict) or any(n not in files for n in exact.get("files", []))):
        raise ValueError("manifest.json: bad exact_tier entry")
    sections = {}
    for name in SECTIONS:
        value = m.get(name)
        if value is not None and not isinstance(value, dict):
            raise ValueError(f"manifest.json: {name} must be an object or null")
        if value is not None:
            sections[name] = value
    from .idmap import IdMap  # noqa: PLC0415 (idmap reads its arrays through this module)

    n = _field(m, "num_rows", int)
    return IndexFiles(root, 2, _field(m, "config", dict), model, n, IdMap.load(root, ids, n),
                      tokens, spec, entries, files, str(m.get("muvera_version", "")), exact, sections)


def _read_v1(root: Path, m: Dict[str, Any], files: Dict[str, Any]) -> IndexFiles:
    """Version 1 (muvera 0.1.0): ids inline, token_dtype, backend as a spec string."""
    n = _field(m, "num_rows", int)
    ids = _field(m, "ids", list)
    if len(ids) != n:
        raise ValueError(f"manifest.json: expected {n} ids")
    token_dtype = _field(m, "token_dtype", str)
    spec = _field(m, "backend", str)
    entries = {k: files[k] for k in ("fdes.npy", "backend.faiss") if k in files}
    tokens = {"token_codec": token_dtype, "codec_state": {}, "num_tokens": _field(m, "num_tokens", int)}
    cfg = _field(m, "config", dict)
    if m.get("dimension") != cfg.get("dimension"):
        raise ValueError("manifest.json: dimension disagrees with the config")
    return IndexFiles(root, 1, cfg, None, n, _v1_ids(root, ids, n, _field(m, "next_id", int)), tokens, spec,
                      entries, files, str(m.get("muvera_version", "")))


def _v1_ids(root: Path, ids: List[Any], n: int, next_id: int) -> Any:
    """Version 1's inline ids (None on dead rows) and alive.npy, as the IdMap version 2 reads."""
    from .idmap import IdMap  # noqa: PLC0415

    kind = legacy_id_kind(ids)
    alive = load_npy(root / "alive.npy", False)
    expect(alive, "alive.npy", np.uint8, (n,))
    if any((x is None) == bool(a) for x, a in zip(ids, alive.tolist())):
        raise ValueError("manifest.json: ids must be given exactly where alive.npy is 1")
    filler = "" if kind == "str" else 0
    return IdMap.from_rows(kind, [filler if x is None else x for x in ids], alive, next_id)


def legacy_id_kind(ids: List[Any]) -> Optional[str]:
    """The id kind of a version-1 id list (None on dead rows); ValueError for what version 2
    cannot hold (mixed kinds, negative ints)."""
    live = [x for x in ids if x is not None]
    if any(type(x) not in (int, str) for x in live):
        raise ValueError("manifest.json: ids must be int or str")
    kinds = {type(x) for x in live}
    if len(kinds) > 1:
        raise ValueError("manifest.json: this version-1 index mixes int and str ids, which muvera no "
                         "longer supports; load it with muvera 0.1.0 and re-add with one id kind")
    if int in kinds and min(live) < 0:
        raise ValueError("manifest.json: negative int ids are no longer supported (-1 pads results)")
    return None if not kinds else ("int" if int in kinds else "str")
