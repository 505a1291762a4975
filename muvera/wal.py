"""A write-ahead log of index changes, so that a write acknowledged between two saves survives a
crash.

The log is ``wal.log`` in the index directory: a sequence of records, each

    magic b"MWAL" | version u8 | kind u8 | payload length u64 | CRC-32 of the payload u32 | payload

(little-endian). An ``add`` payload is a JSON header (ids, metadata, lengths, token dtype and
dimension) followed by the packed tokens' raw bytes; a ``remove`` payload is the JSON list of
ids. A record is written before the change is applied and flushed to disk (``fdatasync``; a large
record's on the log's own C++ thread while the change is applied) before the change becomes
visible and the call returns; it is truncated away again if the change fails (a failed flush
fails the change), so the log holds exactly the changes that were (or, after a crash in between,
were about to be) applied. Reading stops at the first record that is incomplete or fails its
checksum -- a torn tail from a crash mid-append -- and drops it.

The file is written ahead in zeros, 8 MiB at a time, and records overwrite them: a record's
flush then writes data blocks only, with no change of size or extents for the filesystem to
journal (on this machine's ext4 that takes a small flush from about 0.22 to 0.13 ms). Zeros
never read as a record; opening the log for writing, and closing it, cut them off again.

Group commit (``MuveraIndex.open(path, group_commit=True)``): a change's record is written, the
change applied and the write lock released before its flush; the caller then waits until a
flush covers its record (:meth:`WriteAheadLog.wait_durable`). The first waiter flushes every
record written so far, for all of them, so concurrent writers share flushes. A call still
returns only once its record is on disk, but a concurrent reader may see the change before that
(and a crash in between loses a change someone saw, never one that was acknowledged). A failed
flush in this mode fails every change it covered *after* they were applied: the log refuses
further writes (OSError) and the index must be loaded again.

A checkpoint (``MuveraIndex.checkpoint``, or ``save`` to the index's own path) writes a new index
directory with every change folded in, swaps it in atomically and starts an empty log in it: a
crash before the swap leaves the old directory and its log, after it the new directory.
"""

from __future__ import annotations

import json
import os
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .durable import fsync_dir, loads_json

__all__ = ["WriteAheadLog", "WAL_FILE", "Record"]

WAL_FILE = "wal.log"
_MAGIC = b"MWAL"
_VERSION = 1
_HEADER = struct.Struct("<4sBBQI")  # magic, version, kind, payload length, crc32
_ADD, _REMOVE = 1, 2
_MAX_PAYLOAD = 1 << 40
_GROW = 8 << 20  # the log is written ahead in zeros by this much (see WriteAheadLog._reserve)
_ZEROS = bytes(1 << 20)
# A record from this size on is flushed on the log's own thread while its change is applied; a
# smaller one is flushed before the change, on the caller's thread. bench/bench_wal.py on this
# 2-core machine: overlapping lost to the plain flush at 1-100 64-token documents per add (the
# flush thread's wake-up and its CPU compete with a short apply) and won at 1,000.
_OVERLAP_BYTES = 4 << 20
# Group commit defers records smaller than this; a larger one amortises its own flush and is
# flushed as without group commit (bench/bench_wal.py: deferring 3 MB records from 8 writers lost
# to flushing each one, as the shared flush then chases pages the other writers keep dirtying).
_GROUP_MAX_BYTES = 1 << 20

# fdatasync where the OS has it: the data and the size that reaches it, without the timestamps.
_datasync = getattr(os, "fdatasync", os.fsync)

try:  # POSIX: one writer process per log
    import fcntl as _fcntl
except ImportError:  # pragma: no cover
    _fcntl = None  # type: ignore[assignment]


def _write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


class _Flush:
    """The started flush of one record: ``result()`` waits for it (OSError if it failed), once."""

    __slots__ = ("_worker", "_error", "_waited")

    def __init__(self, worker: Any):
        self._worker, self._error, self._waited = worker, None, False

    def result(self) -> None:
        if not self._waited:
            self._waited = True
            try:
                self._worker.wait()
            except OSError as exc:
                self._error = exc
        if self._error is not None:
            raise self._error


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
    group_commit : bool, default False
        Records are written with :meth:`write` and made durable by :meth:`wait_durable`, one
        flush for every record written so far (see the module's notes).
    """

    def __init__(self, directory: Path, *, sync: bool = True, group_commit: bool = False):
        self.path = Path(directory) / WAL_FILE
        self.sync = bool(sync)
        self.group_commit = bool(group_commit)
        self._cond = threading.Condition()  # group commit: guards the fields below
        self._syncing = False  # a flush is running (its leader holds no lock meanwhile)
        self._broken: Optional[OSError] = None  # a group flush failed: no more writes
        created = not self.path.exists()
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if _fcntl is not None:
            try:
                _fcntl.flock(self._fd, _fcntl.LOCK_EX | _fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(self._fd)
                raise ValueError(f"{self.path}: another process has this index open for writing "
                                 "(one writer per index)") from None
        if created:
            fsync_dir(self.path.parent)
        _, good, _ = self.read(directory)
        # Whatever follows the last whole record -- a torn tail, or zeros written ahead -- goes.
        self._end = self._allocated = self._durable = good  # _durable: every byte before it is on disk
        if os.fstat(self._fd).st_size != good:
            self.truncate(good)
        self.records = 0
        self._flusher: Any = None  # _core.DataSyncWorker, made on the first flush
        self._last: Optional[_Flush] = None

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
        return out, pos, len(data[pos:].rstrip(b"\0"))  # zeros written ahead are not a torn tail

    # -- appending -----------------------------------------------------------------------------
    def tell(self) -> int:
        """The offset after the last record."""
        return self._end

    def _reserve(self, nbytes: int) -> None:
        """Make sure ``nbytes`` past the end are written (as zeros) and flushed, in steps of
        ``_GROW``: a record then overwrites blocks the file already has, and its fdatasync
        flushes only those data blocks -- no size or extent change to journal each time."""
        if self._end + nbytes <= self._allocated:
            return
        start = self._allocated
        stop = max(start + _GROW, -(-(self._end + nbytes) // _GROW) * _GROW)
        try:
            for pos in range(start, stop, len(_ZEROS)):
                _write_all(self._fd, _ZEROS[: min(len(_ZEROS), stop - pos)], pos)
            _datasync(self._fd)
        except BaseException:
            os.ftruncate(self._fd, start)  # a full disk: the log is as it was, the change fails
            raise
        self._allocated = stop

    def begin(self, kind: int, payload: bytes) -> Tuple[int, Any]:
        """Write one record and flush it (when ``sync``); returns ``(offset before it, the flush
        or None)``. A large record's flush runs on the log's own C++ thread, which needs no GIL:
        the caller applies the change meanwhile and waits (``result()``) before acknowledging
        it, so the flush overlaps the work. A small one is flushed before this returns."""
        if self._broken is not None:
            raise self._refusal()
        start, end = self._put(kind, payload)
        if not self.sync:
            return start, None
        if len(payload) < _OVERLAP_BYTES or self.group_commit:  # flushed now: see _OVERLAP_BYTES
            try:
                self._settle()
                _datasync(self._fd)
            except BaseException:
                self.truncate(start)
                raise
            if self.group_commit:
                with self._cond:  # the flush covered every deferred record before this one too
                    self._durable = max(self._durable, end)
                    self._cond.notify_all()
            return start, None
        if self._flusher is None:
            from . import _core  # noqa: PLC0415

            self._flusher = _core.DataSyncWorker()
        self._settle()
        self._flusher.start(self._fd)
        self._last = _Flush(self._flusher)
        return start, self._last

    def defers(self, nbytes: int) -> bool:
        """Whether a record of ``nbytes`` goes through :meth:`write` and :meth:`wait_durable`
        (group commit, a small record) rather than :meth:`begin`."""
        return self.group_commit and self.sync and nbytes < _GROUP_MAX_BYTES

    def _put(self, kind: int, payload: bytes) -> Tuple[int, int]:
        """Write one record after the last, unflushed; ``(offset before it, offset after it)``."""
        start = self._end
        head = _HEADER.pack(_MAGIC, _VERSION, kind, len(payload), zlib.crc32(payload) & 0xFFFFFFFF)
        self._reserve(len(head) + len(payload))
        try:
            _write_all(self._fd, head, start)
            _write_all(self._fd, payload, start + len(head))
        except BaseException:
            self.truncate(start)
            raise
        self._end = start + len(head) + len(payload)
        self.records += 1
        return start, self._end

    def write(self, kind: int, payload: bytes) -> Tuple[int, int]:
        """Group commit: write one record without flushing it; returns ``(offset before it,
        offset after it)``. The caller applies the change, releases its write lock and then calls
        :meth:`wait_durable` with the second offset (or :meth:`truncate` with the first if the
        change failed)."""
        if self._broken is not None:
            raise self._refusal()
        return self._put(kind, payload)

    def _refusal(self) -> OSError:
        assert self._broken is not None
        return OSError(self._broken.errno, f"{self.path}: an earlier flush failed ({self._broken}); "
                       "the index in memory may hold changes that are not on disk: load it again")

    def wait_durable(self, end: int) -> None:
        """Group commit: return once every byte before ``end`` is on disk. The first caller to
        find no flush running flushes all records written so far (the GIL is released while it
        waits on the disk, so other writers append meanwhile and share the next flush)."""
        if not self.sync:
            return
        with self._cond:
            while self._durable < end:
                if self._broken is not None:
                    raise OSError(self._broken.errno, f"{self.path}: the flush of this change failed "
                                  f"({self._broken}); it is applied in memory but may not be on disk")
                if self._syncing:
                    self._cond.wait()
                    continue
                self._syncing, target, fd = True, self._end, self._fd
                self._cond.release()
                error: Optional[OSError] = None
                try:
                    _datasync(fd)
                except OSError as exc:
                    error = exc
                finally:
                    self._cond.acquire()
                    self._syncing = False
                    if error is None:
                        self._durable = max(self._durable, target)
                    elif self._broken is None:
                        self._broken = error
                    self._cond.notify_all()

    def _settle(self) -> None:
        """Wait for a started flush that nobody waited for (its caller failed first)."""
        last, self._last = self._last, None
        if last is not None and not last._waited:
            last.result()

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
        """Cut the log back to ``offset`` (a failed change, or a torn tail found on open): the
        file ends there, so no stale record can follow a later, shorter one."""
        with self._cond:  # no group flush runs meanwhile: none may mark bytes after the cut durable
            while self._syncing:
                self._cond.wait()
            os.ftruncate(self._fd, offset)
            os.fsync(self._fd)
            self._end = self._allocated = offset
            self._durable = min(self._durable, offset)

    def close(self) -> None:
        """Close the log. Group commit: records written but not flushed are flushed first (a
        checkpoint has made them durable in the new index already); their waiters return."""
        try:
            self._settle()  # a started flush finishes before its descriptor closes
        except OSError:
            pass
        if self.group_commit and self._fd >= 0:
            try:
                self.wait_durable(self._end)  # the waiters return with it (or get its error)
            except OSError:
                pass
        self._flusher = None
        if self._fd >= 0:
            try:
                os.ftruncate(self._fd, self._end)  # the zeros written ahead go (they are harmless if not)
            except OSError:
                pass
            os.close(self._fd)
            self._fd = -1
