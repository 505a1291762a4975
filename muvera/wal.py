"""A write-ahead log of index changes, so that a write acknowledged between two saves survives a
crash.

The log is ``wal.log`` in the index directory: a sequence of records, each

    magic b"MWAL" | version u8 | kind u8 | payload length u64 | CRC-32 of the payload u32 | payload

(little-endian). An ``add`` payload is a JSON header (ids, metadata, lengths, token dtype and
dimension) followed by the packed tokens' raw bytes; a ``remove`` payload is the JSON list of
ids. A record is written before the change is applied and flushed to disk (``fdatasync``, on the
log's own thread, while the change is applied) before the change becomes visible and the call
returns; it is truncated away again if the change fails (a failed flush fails the change), so
the log holds exactly the changes that were (or, after a crash in between, were about to be)
applied. Reading stops at the first record that is incomplete or
fails its checksum -- a torn tail from a crash mid-append -- and drops it.

A checkpoint (``MuveraIndex.checkpoint``, or ``save`` to the index's own path) writes a new index
directory with every change folded in, swaps it in atomically and starts an empty log in it: a
crash before the swap leaves the old directory and its log, after it the new directory.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np

from .durable import fsync_dir, loads_json

__all__ = ["WriteAheadLog", "WAL_FILE", "Record"]

WAL_FILE = "wal.log"
_MAGIC = b"MWAL"
_VERSION = 1
_HEADER = struct.Struct("<4sBBQI")  # magic, version, kind, payload length, crc32
_ADD, _REMOVE = 1, 2
_MAX_PAYLOAD = 1 << 40

# fdatasync where the OS has it: the data and the size that reaches it, without the timestamps.
_datasync = getattr(os, "fdatasync", os.fsync)

try:  # POSIX: one writer process per log
    import fcntl as _fcntl
except ImportError:  # pragma: no cover
    _fcntl = None  # type: ignore[assignment]


@dataclass
class Record:
    """One logged change: ``kind`` "add" (ids, metadata, tokens, lengths) or "remove" (ids)."""

    kind: str
    ids: List[Any]
    tokens: Optional[np.ndarray] = None
    lengths: Optional[np.ndarray] = None
    metadata: Optional[List[Dict[str, Any]]] = None
    texts: Optional[List[str]] = None
    replace: bool = False  # an upsert: the live ones among ``ids`` are removed first


def encode_add(ids: List[Any], tokens: np.ndarray, lengths: np.ndarray,
               metadata: Optional[List[Dict[str, Any]]], texts: Optional[List[str]] = None,
               replace: bool = False) -> Tuple[int, bytes]:
    tokens = np.ascontiguousarray(tokens)
    head = json.dumps({"ids": ids, "metadata": metadata, "lengths": np.asarray(lengths, np.int64).tolist(),
                       "dtype": tokens.dtype.str, "dim": int(tokens.shape[1]), "texts": texts, "replace": replace},
                      allow_nan=False).encode("utf-8")
    return _ADD, struct.pack("<I", len(head)) + head + tokens.tobytes()


def encode_remove(ids: List[Any]) -> Tuple[int, bytes]:
    return _REMOVE, json.dumps({"ids": ids}).encode("utf-8")


def _decode(kind: int, payload: bytes) -> Record:
    if kind == _REMOVE:
        return Record("remove", list(loads_json(payload.decode("utf-8"), WAL_FILE)["ids"]))
    (n,) = struct.unpack_from("<I", payload)
    head = loads_json(payload[4: 4 + n].decode("utf-8"), WAL_FILE)
    lengths = np.asarray(head["lengths"], dtype=np.int64)
    tokens = np.frombuffer(payload, dtype=np.dtype(head["dtype"]), offset=4 + n).reshape(-1, int(head["dim"]))
    if int(lengths.sum()) != len(tokens):
        raise ValueError(f"{WAL_FILE}: an add record's lengths do not match its tokens")
    return Record("add", list(head["ids"]), tokens, lengths, head["metadata"], head.get("texts"),
                  bool(head.get("replace", False)))


class WriteAheadLog:
    """The log of one index directory, opened for appending (exclusively: a second process that
    opens the same index's log gets a ValueError).

    Parameters
    ----------
    directory : path
        The index directory.
    sync : bool, default True
        fsync every record before the write returns (durable once acknowledged). False leaves
        flushing to the OS: faster, and a machine crash (not a process crash) can lose the tail.
    """

    def __init__(self, directory: Path, *, sync: bool = True):
        self.path = Path(directory) / WAL_FILE
        self.sync = bool(sync)
        created = not self.path.exists()
        self._f = open(self.path, "a+b")  # noqa: SIM115 (held open for the index's lifetime)
        if _fcntl is not None:
            try:
                _fcntl.flock(self._f.fileno(), _fcntl.LOCK_EX | _fcntl.LOCK_NB)
            except BlockingIOError:
                self._f.close()
                raise ValueError(f"{self.path}: another process has this index open for writing "
                                 "(one writer per index)") from None
        if created:
            fsync_dir(self.path.parent)
        self._f.seek(0, os.SEEK_END)
        self.records = 0
        self._pool: Any = None

    # -- reading -------------------------------------------------------------------------------
    @staticmethod
    def read(directory: Path) -> Tuple[List[Record], int, int]:
        """``(records, good_bytes, dropped_bytes)`` of ``directory``'s log: every whole record,
        the offset after the last of them, and how many bytes of torn tail follow it."""
        path = Path(directory) / WAL_FILE
        if not path.exists():
            return [], 0, 0
        data = path.read_bytes()
        out: List[Record] = []
        pos = 0
        while pos + _HEADER.size <= len(data):
            magic, version, kind, length, crc = _HEADER.unpack_from(data, pos)
            end = pos + _HEADER.size + length
            if magic != _MAGIC or version != _VERSION or kind not in (_ADD, _REMOVE) or length > _MAX_PAYLOAD \
                    or end > len(data):
                break
            payload = data[pos + _HEADER.size: end]
            if zlib.crc32(payload) & 0xFFFFFFFF != crc:
                break
            try:
                out.append(_decode(kind, payload))
            except (ValueError, KeyError, TypeError, struct.error, UnicodeDecodeError):
                break
            pos = end
        return out, pos, len(data) - pos

    # -- appending -----------------------------------------------------------------------------
    def tell(self) -> int:
        return self._f.tell()

    def begin(self, kind: int, payload: bytes) -> Tuple[int, Any]:
        """Write one record to the OS now and start its fsync on the log's own thread (when
        ``sync``); returns ``(offset before it, a future of the fsync or None)``. The caller
        applies the change meanwhile and waits for the future before acknowledging it, so the
        disk flush overlaps the work instead of adding to it."""
        start = self._f.tell()
        head = _HEADER.pack(_MAGIC, _VERSION, kind, len(payload), zlib.crc32(payload) & 0xFFFFFFFF)
        try:
            self._f.write(head)
            self._f.write(payload)
            self._f.flush()
        except BaseException:
            self.truncate(start)
            raise
        self.records += 1
        if not self.sync:
            return start, None
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="muvera-wal-fsync")
        return start, self._pool.submit(_datasync, self._f.fileno())

    def append(self, kind: int, payload: bytes) -> int:
        """Write one record and wait for its flush (when ``sync``); returns the offset before it,
        for :meth:`truncate` should the change it logs fail."""
        start, flushed = self.begin(kind, payload)
        if flushed is not None:
            try:
                flushed.result()
            except BaseException:
                self.truncate(start)
                raise
        return start

    def truncate(self, offset: int) -> None:
        """Cut the log back to ``offset`` (a failed change, or a torn tail found on open)."""
        self._f.flush()
        self._f.truncate(offset)
        self._f.seek(offset)
        os.fsync(self._f.fileno())

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if not self._f.closed:
            self._f.close()
