"""Files that survive crashes: hashed, fsynced writes under a temporary name, then a rename;
checks of size and SHA-256 against a manifest entry. Shared by every on-disk format of muvera
(index directories, the embedding cache, distributed encodings, sharded indexes)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any, Callable, Dict

import numpy as np

TMP_MARK = ".tmp-"  # in the name of every file still being written


class HashingWriter:
    """A write-only file wrapper that hashes and counts the bytes written through it."""

    def __init__(self, f: Any) -> None:
        self._f, self.sha, self.size = f, hashlib.sha256(), 0

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.sha.update(view)
        self.size += len(view)
        return self._f.write(data)


def loads_json(text: Any, what: str) -> Any:
    """``json.loads`` whose every failure is a ValueError naming ``what``: a document nested
    deeper than the parser recurses raises RecursionError, which is not one."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError(f"{what}: JSON nested too deeply to read") from None


def write_atomic(path: Path, write: Callable[[Any], Any]) -> Dict[str, Any]:
    """Write ``path`` through ``write(file)`` under a temporary name, fsync, rename.

    Returns the manifest entry ``{"bytes": ..., "sha256": ...}``; a failure leaves no file behind.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}{TMP_MARK}{secrets.token_hex(4)}")
    try:
        with open(tmp, "wb") as f:
            h = HashingWriter(f)
            write(h)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return {"bytes": h.size, "sha256": h.sha.hexdigest()}


def write_via_path(path: Path, write: Callable[[Path], Any]) -> Dict[str, Any]:
    """Like :func:`write_atomic` for writers that take a file name (faiss ``write_index``):
    ``write(tmp_path)``, fsync, hash, rename. Returns the manifest entry."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}{TMP_MARK}{secrets.token_hex(4)}")
    try:
        write(tmp)
        fsync_file(tmp)
        entry = file_entry(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return entry


def write_npy(path: Path, arr: np.ndarray) -> Dict[str, Any]:
    """:func:`write_atomic` of one ``.npy`` file (streamed, no pickles)."""
    return write_atomic(path, lambda f: np.lib.format.write_array(f, np.ascontiguousarray(arr),
                                                                  allow_pickle=False))


def write_json(path: Path, data: Any, indent: int = 1) -> Dict[str, Any]:
    """:func:`write_atomic` of a JSON document."""
    return write_atomic(path, lambda f: f.write(json.dumps(data, indent=indent).encode("utf-8")))


def file_sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            sha.update(block)
    return sha.hexdigest()


def file_entry(path: Path) -> Dict[str, Any]:
    """The manifest entry of an existing file."""
    return {"bytes": Path(path).stat().st_size, "sha256": file_sha256(path)}


def check_file(path: Path, entry: Any, name: str, verify: bool = True) -> Path:
    """Raise ValueError naming ``name`` unless ``path`` exists with the entry's size (and SHA-256)."""
    path = Path(path)
    if not isinstance(entry, dict):
        raise ValueError(f"{name}: not listed in manifest.json")
    if not path.is_file():
        raise ValueError(f"{name}: missing from {path.parent}")
    size = path.stat().st_size
    if size != entry["bytes"]:
        raise ValueError(f"{name}: size {size} bytes, manifest.json says {entry['bytes']} "
                         "(truncated or corrupted)")
    if verify and file_sha256(path) != entry["sha256"]:
        raise ValueError(f"{name}: SHA-256 checksum mismatch (corrupted file)")
    return path


def fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def fsync_dir(path: Path) -> None:
    """Make renames inside ``path`` durable (a no-op where directories cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
