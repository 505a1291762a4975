"""IdMap: user ids <-> index rows, one id kind per index, tombstones as a bitmap (faiss's
``IndexIDMap`` shape). Used by :class:`muvera.MuveraIndex` and, through it, every shard of a
:class:`muvera.distributed.ShardedIndex`.

Id kinds
--------
* ``int`` -- non-negative Python/NumPy integers up to 2**63 - 1. Results are ``int64`` arrays
  padded with ``-1``.
* ``str`` -- Python/NumPy strings. Results are ``object`` arrays padded with ``None``.

An index takes the kind of the first ids it is given and keeps it (also when every document is
removed); an empty index that never held ids answers with ``int64`` / ``-1``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from .durable import write_npy
from .buffers import Growable

__all__ = ["IdMap", "normalise_id", "id_list", "IdLike"]

IdLike = Union[int, str]
_INT64_MAX = 2**63 - 1
_FILES_INT = ("ids.npy",)
_FILES_STR = ("ids_utf8.npy", "ids_offsets.npy")


def normalise_id(x: Any, name: str = "id") -> IdLike:
    """One id as a plain ``int`` or ``str``; TypeError/ValueError naming ``name`` otherwise."""
    if isinstance(x, np.generic):
        x = x.item()  # NumPy scalars -> Python ints/strs
    if isinstance(x, bool) or x is None:
        raise TypeError(f"{name}: ids are ints or strings, got {x!r}")
    if isinstance(x, int):
        if not 0 <= x <= _INT64_MAX:
            raise ValueError(f"{name}: int ids must be in [0, 2**63 - 1] (-1 pads results), got {x}")
        return x
    if isinstance(x, str):
        return x
    raise TypeError(f"{name}: ids are ints or strings, got {type(x).__name__} {x!r}")


def id_list(ids: Any, name: str, single_ok: bool) -> List[IdLike]:
    """A sequence (or, if ``single_ok``, one id) as a list of normalised ids."""
    if isinstance(ids, (str, bytes, int, np.generic)) or not isinstance(ids, Iterable):
        if not single_ok or isinstance(ids, bytes):
            raise TypeError(f"{name}: expected a sequence of ids, got {type(ids).__name__}")
        ids = [ids]
    raw = ids.tolist() if isinstance(ids, np.ndarray) else list(ids)
    return [normalise_id(x, name) for x in raw]


def _kind_of(x: IdLike) -> str:
    return "int" if isinstance(x, int) else "str"


class IdMap:
    """Row <-> id mapping with tombstones.

    Rows are numbered 0.. in add order and never renumbered until :meth:`compact`. Removing an
    id clears its row's ``alive`` flag; the id can then be added again (to a new row).

    Parameters
    ----------
    kind : {"int", "str"}, optional
        Fixed by the first :meth:`append` when not given.
    """

    def __init__(self, kind: Optional[str] = None):
        if kind not in (None, "int", "str"):
            raise ValueError(f"kind: expected 'int', 'str' or None, got {kind!r}")
        self._kind = kind
        self._ids = self._new_ids_buffer(kind)
        self._alive = Growable((), np.uint8)
        self._to_row: Dict[IdLike, int] = {}
        self._next_id = 0
        # int ids: a dense id -> live row table (-1: none), kept in step with every change while
        # the ids are compact (max id < 4 n + 4096); None once they are not (dict lookups then).
        self._table: Optional[Growable] = Growable((), np.int64) if kind != "str" else None
        # The alive flags as little-endian packed bits (faiss's IDSelectorBitmap), kept in step.
        self._packed = Growable((), np.uint8)

    @staticmethod
    def _new_ids_buffer(kind: Optional[str], data: Optional[np.ndarray] = None) -> Growable:
        return Growable((), object if kind == "str" else np.int64, data)

    # -- properties ----------------------------------------------------------------------------
    def __len__(self) -> int:
        """Live ids."""
        return len(self._to_row)

    def __contains__(self, x: Any) -> bool:
        try:
            return normalise_id(x) in self._to_row
        except (TypeError, ValueError):
            return False

    @property
    def kind(self) -> Optional[str]:
        """``"int"``, ``"str"`` or None (nothing added yet)."""
        return self._kind

    @property
    def num_rows(self) -> int:
        """Rows, tombstoned ones included."""
        return len(self._alive)

    @property
    def alive(self) -> np.ndarray:
        """``(num_rows,)`` uint8 view: 1 for live rows. Do not write to it."""
        return self._alive.view

    @property
    def next_id(self) -> int:
        """The first default id of the next :meth:`append` without ids."""
        return self._next_id

    @property
    def result_dtype(self) -> np.dtype:
        """``object`` for str ids, ``int64`` otherwise."""
        return np.dtype(object) if self._kind == "str" else np.dtype(np.int64)

    @property
    def nbytes(self) -> int:
        return self._ids.nbytes + self._alive.nbytes

    @property
    def alive_bool(self) -> np.ndarray:
        """``(num_rows,)`` bool view of :attr:`alive` (no copy). Do not write to it."""
        return self._alive.view.view(bool)

    @property
    def alive_packed(self) -> np.ndarray:
        """:attr:`alive` as little-endian packed bits (``ceil(num_rows / 8)`` bytes), kept in
        step with every change. Do not write to it."""
        return self._packed.view

    def _set_packed(self, rows: np.ndarray, value: bool) -> None:
        need = (self.num_rows + 7) // 8
        if need > len(self._packed):
            self._packed.extend(np.zeros(need - len(self._packed), dtype=np.uint8))
        if not len(rows):
            return
        bits = np.left_shift(np.uint8(1), (rows & 7).astype(np.uint8))
        packed = self._packed.writable()
        if value:
            np.bitwise_or.at(packed, rows >> 3, bits)
        else:
            np.bitwise_and.at(packed, rows >> 3, ~bits)

    def live_ids(self) -> List[IdLike]:
        """Live ids in row order."""
        return self._ids.view[np.flatnonzero(self._alive.view)].tolist()

    # -- changes -------------------------------------------------------------------------------
    def check_new(self, ids: Any, n: int, replacing: Sequence[IdLike] = ()) -> List[IdLike]:
        """Validate ``n`` new ids (or make default ints when ``ids`` is None); changes nothing.
        Ids in ``replacing`` (an upsert's live ids) may be live."""
        if ids is None:
            if self._kind == "str":
                raise TypeError("ids: this index holds str ids; give one id per document")
            if self._next_id + n - 1 > _INT64_MAX:
                raise ValueError(f"ids: the default ids would run past 2**63 - 1 (the next is {self._next_id}); "
                                 "give ids explicitly")
            return list(range(self._next_id, self._next_id + n))
        new = id_list(ids, "ids", single_ok=False)
        if len(new) != n:
            raise ValueError(f"ids: expected {n} ids (one per document), got {len(new)}")
        kinds = {_kind_of(x) for x in new}
        if len(kinds) > 1:
            raise TypeError("ids: mix ints and strings; an index holds one kind of id")
        if self._kind is not None and kinds and kinds != {self._kind}:
            raise TypeError(f"ids: this index holds {self._kind} ids, got {kinds.pop()} ids")
        if len(set(new)) != n:
            seen: set = set()
            dups = [x for x in new if x in seen or seen.add(x)]  # type: ignore[func-returns-value]
            raise ValueError(f"ids: duplicate ids in this call: {dups[:10]}")
        skip = set(replacing)
        clash = [x for x in new if x in self._to_row and x not in skip]
        if clash:
            raise ValueError(f"ids: already in the index: {clash[:10]}")
        return new

    def append(self, ids: List[IdLike]) -> np.ndarray:
        """Add already checked ids (:meth:`check_new`) as new live rows; returns the rows."""
        start = self.num_rows
        if ids and self._kind is None:
            self._kind = _kind_of(ids[0])
            self._ids = self._new_ids_buffer(self._kind, self._ids.view.astype(self.result_dtype))
        if self._kind == "str":
            arr = np.empty(len(ids), dtype=object)
            arr[:] = ids
        else:
            arr = np.asarray(ids, dtype=np.int64).reshape(len(ids))
        self._ids.extend(arr)
        self._alive.extend(np.ones(len(ids), dtype=np.uint8))
        for row, x in enumerate(ids, start):
            self._to_row[x] = row
        rows = np.arange(start, start + len(ids), dtype=np.int64)
        self._set_packed(rows, True)
        if self._kind == "int" and ids:
            self._next_id = max(self._next_id, int(arr.max()) + 1)
            self._table_set(arr, rows)
        elif self._kind == "str":
            self._table = None
        return rows

    def _table_set(self, ids: np.ndarray, rows: np.ndarray) -> None:
        """Point the dense table's ``ids`` at ``rows`` (growing it), or drop it when the ids
        stop being compact. Costs O(len(ids)) plus amortised growth."""
        if self._table is None or not len(ids):
            return
        top = int(ids.max()) + 1
        if top > 4 * len(self._to_row) + 4096:
            self._table = None  # sparse ids: dict lookups from now on
            return
        have = len(self._table)
        if top > have:
            self._table.extend(np.full(top - have, -1, dtype=np.int64))
        self._table.writable()[ids] = rows

    def rows_of(self, ids: Iterable[IdLike], *, missing: str = "raise") -> np.ndarray:
        """Rows of live ids. ``missing="raise"``: KeyError for unknown ids; ``"ignore"``: skip."""
        if missing == "ignore":
            return np.fromiter((self._to_row[x] for x in ids if x in self._to_row), dtype=np.int64)
        absent = [x for x in ids if x not in self._to_row]
        if absent:
            raise KeyError(f"ids: not in the index: {absent[:10]}")
        return np.fromiter((self._to_row[x] for x in ids), dtype=np.int64)

    def row_of(self, x: Any) -> int:
        key = normalise_id(x)
        if key not in self._to_row:
            raise KeyError(f"id: {key!r} is not in the index")
        return self._to_row[key]

    def remove(self, ids: List[IdLike]) -> int:
        """Tombstone live ids (all or none: KeyError if any is missing); returns how many."""
        rows = self.rows_of(ids)
        self._alive.writable()[rows] = 0
        self._set_packed(rows, False)
        for x in ids:
            del self._to_row[x]
        if self._table is not None and self._kind == "int":
            self._table.writable()[np.asarray(ids, dtype=np.int64)] = -1
        return len(rows)

    def restore(self, ids: List[IdLike], rows: np.ndarray) -> None:
        """Undo :meth:`remove` of ``ids`` (their former ``rows``): the rollback of a failed upsert."""
        rows = np.asarray(rows, dtype=np.int64)
        self._alive.writable()[rows] = 1
        self._set_packed(rows, True)
        for x, r in zip(ids, rows.tolist()):
            self._to_row[x] = r
        if self._kind == "int" and len(rows):
            self._table_set(np.asarray(ids, dtype=np.int64), rows)

    def allowed(self, filter_ids: Optional[Iterable[Any]]) -> np.ndarray:
        """The allowed-rows bitmap (bool): live rows, restricted to ``filter_ids`` when given
        (unknown, removed or other-kind ids in the filter are ignored)."""
        if filter_ids is None:
            return self._alive.view.astype(bool)
        mask = np.zeros(self.num_rows, dtype=bool)
        mask[self.live_rows(filter_ids)] = True
        return mask

    def live_rows(self, filter_ids: Iterable[Any]) -> np.ndarray:
        """Sorted, unique live rows of ``filter_ids`` (unknown, removed or other-kind ids are
        ignored). O(len(filter_ids)): never touches the per-row arrays."""
        raw = filter_ids.tolist() if isinstance(filter_ids, np.ndarray) and filter_ids.dtype == object else filter_ids
        if isinstance(raw, (str, bytes)) or not isinstance(raw, Iterable):
            raise TypeError(f"filter_ids: expected a sequence of ids, got {type(filter_ids).__name__}")
        if self._kind == "int" and self._table is not None:
            arr = raw if isinstance(raw, np.ndarray) else np.asarray(list(raw) if not isinstance(raw, list) else raw)
            if arr.ndim == 1 and (arr.size == 0 or arr.dtype.kind in "iu"):
                table = self._table.view
                if arr.dtype.kind == "u":
                    arr = arr[arr <= _INT64_MAX]
                q = arr.astype(np.int64, copy=False)
                got = table[q[(q >= 0) & (q < len(table))]]
                return np.unique(got[got >= 0])
            raw = arr.tolist()
        to_row = self._to_row
        rows = []
        for x in raw:
            t = type(x)
            if t is int or t is str:
                r = to_row.get(x)
            else:
                try:
                    r = to_row.get(normalise_id(x, "filter_ids"))
                except (TypeError, ValueError):
                    continue  # an id no index can hold matches nothing
            if r is not None:
                rows.append(r)
        return np.unique(np.asarray(rows, dtype=np.int64))

    def compact(self) -> np.ndarray:
        """Drop tombstoned rows; returns the ``keep`` mask (bool, old rows) that was applied."""
        keep = self._alive.view.astype(bool)
        ids = self._ids.view[keep]
        self._ids = self._new_ids_buffer(self._kind, np.ascontiguousarray(ids))
        self._alive = Growable((), np.uint8, np.ones(len(ids), dtype=np.uint8))
        self._to_row = {x: i for i, x in enumerate(ids.tolist())}
        self._rebuild_table()
        self._packed = Growable((), np.uint8, np.packbits(self._alive.view.view(bool), bitorder="little"))
        return keep

    def compacted(self) -> "IdMap":
        """A new map without the tombstoned rows (this one unchanged): :meth:`compact` staged,
        so that an index can swap every compacted part in at once."""
        keep = self._alive.view.astype(bool)
        ids = self._ids.view[keep]
        return IdMap.from_rows(self._kind, ids, np.ones(len(ids), dtype=np.uint8), self._next_id)

    def _rebuild_table(self) -> None:
        """The dense id -> row table from scratch (after compact or load)."""
        self._table = None if self._kind == "str" else Growable((), np.int64)
        if self._kind == "int":
            live = np.flatnonzero(self._alive.view)
            self._table_set(self._ids.view[live].astype(np.int64), live)

    # -- results -------------------------------------------------------------------------------
    def ids_of(self, rows: np.ndarray) -> np.ndarray:
        """Ids of result rows; ``-1`` rows become ``-1`` (int kind) or ``None`` (str kind)."""
        valid = rows >= 0
        if self._kind == "str":
            out = np.full(rows.shape, None, dtype=object)
        else:
            out = np.full(rows.shape, -1, dtype=np.int64)
        out[valid] = self._ids.view[rows[valid]]
        return out

    # -- persistence ---------------------------------------------------------------------------
    def save(self, directory: Path) -> Tuple[Dict[str, Any], Dict[str, Dict[str, Any]]]:
        """Write the id arrays; returns ``(manifest fields, file entries)``."""
        d = Path(directory)
        files = {"alive.npy": write_npy(d / "alive.npy", self._alive.view)}
        if self._kind == "str":
            encoded = [s.encode("utf-8", "surrogatepass") for s in self._ids.view.tolist()]
            offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
            np.cumsum([len(b) for b in encoded], out=offsets[1:])
            blob = np.frombuffer(b"".join(encoded), dtype=np.uint8)
            files["ids_utf8.npy"] = write_npy(d / "ids_utf8.npy", blob)
            files["ids_offsets.npy"] = write_npy(d / "ids_offsets.npy", offsets)
        else:
            files["ids.npy"] = write_npy(d / "ids.npy", self._ids.view)
        return {"id_kind": self._kind, "next_id": self._next_id}, files

    @classmethod
    def load(cls, directory: Path, fields: Dict[str, Any], num_rows: int) -> "IdMap":
        """Read what :meth:`save` wrote (files already checked against the manifest)."""
        from .index_format import expect, load_npy  # noqa: PLC0415 (the format module imports this one)

        d = Path(directory)
        kind = fields.get("id_kind")
        if kind not in (None, "int", "str"):
            raise ValueError(f"manifest.json: bad id_kind {kind!r}")
        alive = load_npy(d / "alive.npy", False)
        expect(alive, "alive.npy", np.uint8, (num_rows,))
        if kind == "str":
            blob = load_npy(d / "ids_utf8.npy", False)
            offsets = load_npy(d / "ids_offsets.npy", False)
            expect(offsets, "ids_offsets.npy", np.int64, (num_rows + 1,))
            if blob.dtype != np.uint8 or blob.ndim != 1 or offsets[0] != 0 or offsets[-1] != len(blob) \
                    or (np.diff(offsets) < 0).any():
                raise ValueError("ids_utf8.npy/ids_offsets.npy: inconsistent string ids")
            raw = blob.tobytes()
            try:
                ids: List[Any] = [raw[a:b].decode("utf-8", "surrogatepass")
                                  for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]
            except UnicodeDecodeError:
                raise ValueError("ids_utf8.npy: not valid UTF-8") from None
        else:
            arr = load_npy(d / "ids.npy", False)
            expect(arr, "ids.npy", np.int64, (num_rows,))
            if (arr < 0).any():
                raise ValueError("ids.npy: negative ids")
            ids = arr.tolist()
        next_id = fields.get("next_id", 0)
        if isinstance(next_id, bool) or not isinstance(next_id, int) or next_id < 0:
            raise ValueError(f"manifest.json: bad next_id {next_id!r}")
        return cls.from_rows(kind, ids, alive, next_id)

    @classmethod
    def from_rows(cls, kind: Optional[str], ids: List[Any], alive: np.ndarray, next_id: int) -> "IdMap":
        """An IdMap over row ids (any value on dead rows) and alive flags; checks uniqueness."""
        if alive.dtype != np.uint8 or (alive > 1).any():
            raise ValueError("alive.npy: expected 0/1 flags")
        m = cls(kind)
        if kind == "str":
            arr = np.empty(len(ids), dtype=object)
            arr[:] = ids
        else:
            arr = np.asarray(ids, dtype=np.int64).reshape(len(ids))
        m._ids = cls._new_ids_buffer(kind, arr)
        m._alive = Growable((), np.uint8, np.ascontiguousarray(alive))
        live = np.flatnonzero(alive)
        m._to_row = {x: int(r) for x, r in zip(arr[live].tolist(), live.tolist())}
        if len(m._to_row) != len(live):
            raise ValueError("manifest.json: duplicate live ids")
        m._rebuild_table()
        m._packed = Growable((), np.uint8, np.packbits(m._alive.view.view(bool), bitorder="little"))
        m._next_id = int(next_id)
        if kind == "int" and len(live):
            m._next_id = max(m._next_id, int(arr[live].max()) + 1)
        return m
