"""Per-document metadata in SQLite (the standard library): stored with the index, queried with
parameterised ``WHERE`` clauses that become the allowed-rows bitmap of a search.

Each document's dict is kept whole (JSON) and, for every key that is an SQL identifier and whose
value is a JSON scalar (str, int, float, bool, None), also in a column of that name, so
``where="year >= ? AND lang = ?"`` filters with real SQL on real indexes of the table.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple
from urllib.parse import quote

import numpy as np

from .durable import loads_json, write_via_path

__all__ = ["MetadataStore"]

_FILE = "metadata.sqlite"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_RESERVED = {"_row", "_json"}
_SCALARS = (str, int, float, bool, type(None))
_WORDS = re.compile(r"\w+", re.UNICODE)


def _case_clashes(items: List[Dict[str, Any]], columns: List[str]) -> None:
    """ValueError when two column keys (identifier keys of ``items``, and ``columns``) differ
    only in case."""
    seen = {c.lower(): c for c in columns}
    for i, m in enumerate(items):
        for key in m:
            if not _IDENT.match(key):
                continue
            other = seen.setdefault(key.lower(), key)
            if other != key:
                raise ValueError(f"metadata[{i}]: key {key!r} differs only in case from {other!r}; metadata "
                                 "columns are compared case-insensitively (as SQLite does), so use one spelling")


def _read_only_authorizer(action: int, *args: Any) -> int:
    """Allow only reading: a WHERE clause can never write, attach or change the database."""
    allowed = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION}
    return sqlite3.SQLITE_OK if action in allowed else sqlite3.SQLITE_DENY


class MetadataStore:
    """Row -> metadata dict, in an in-memory SQLite database (saved to ``metadata.sqlite``)."""

    #: Seconds one ``where`` condition may run before it is stopped with a ValueError (a
    #: runaway clause, such as a self-join, then costs only its own call). Set it on the class.
    WHERE_TIME_LIMIT = 5.0

    def __init__(self) -> None:
        self._db = sqlite3.connect(":memory:", check_same_thread=False)
        self._db.execute("CREATE TABLE meta (_row INTEGER PRIMARY KEY, _json TEXT NOT NULL)")
        self._columns: List[str] = []
        self._lock = threading.Lock()  # one connection: calls are serialised

    # -- checks --------------------------------------------------------------------------------
    @staticmethod
    def check(metadata: Any, n: int) -> List[Dict[str, Any]]:
        """Validate ``n`` metadata dicts (JSON-serialisable, str keys); returns them as a list."""
        if isinstance(metadata, (str, bytes, dict)) or not isinstance(metadata, Sequence):
            raise TypeError(f"metadata: expected a list of {n} dicts, got {type(metadata).__name__}")
        items = list(metadata)
        if len(items) != n:
            raise ValueError(f"metadata: expected {n} dicts (one per document), got {len(items)}")
        for i, m in enumerate(items):
            if not isinstance(m, dict):
                raise TypeError(f"metadata[{i}]: expected a dict, got {type(m).__name__}")
            bad = [k for k in m if not isinstance(k, str) or k.lower() in _RESERVED]
            if bad:
                raise ValueError(f"metadata[{i}]: keys must be strings other than {sorted(_RESERVED)} "
                                 f"(in any case), got {bad[:3]}")
            try:
                json.dumps(m, allow_nan=False)
            except (TypeError, ValueError, RecursionError) as exc:
                raise ValueError(f"metadata[{i}]: not JSON-serialisable ({type(exc).__name__}: {exc})") from None
        _case_clashes(items, [])
        return items

    def check_columns(self, items: List[Dict[str, Any]]) -> None:
        """Refuse keys that differ only in case from a column already stored (SQLite column
        names ignore case, so they would be the same column): ValueError, nothing changed."""
        _case_clashes(items, self._columns)

    def truncate(self, num_rows: int) -> None:
        """Drop the metadata (and texts) of rows ``num_rows`` and above (a failed add's rollback)."""
        with self._lock, self._db:
            self._db.execute("DELETE FROM meta WHERE _row >= ?", (int(num_rows),))
            if self._has_texts():
                self._db.execute("DELETE FROM texts WHERE rowid >= ?", (int(num_rows),))

    # -- the lexical index (SQLite FTS5, BM25) -------------------------------------------------
    def _has_texts(self) -> bool:
        return self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'texts'").fetchone() is not None

    def add_texts(self, rows: np.ndarray, texts: List[str]) -> None:
        """Index ``texts`` for BM25 (one transaction). Porter stemming over Unicode words."""
        with self._lock, self._db:
            if not self._has_texts():
                self._db.execute("CREATE VIRTUAL TABLE texts USING fts5(text, tokenize = 'porter unicode61')")
            self._db.executemany("INSERT INTO texts (rowid, text) VALUES (?, ?)",
                                 [(int(r), t) for r, t in zip(rows.tolist(), texts)])

    @property
    def has_texts(self) -> bool:
        """Whether any text was indexed for BM25."""
        with self._lock:
            return self._has_texts()

    def bm25(self, query: str, limit: int, rows: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
        """``(rows, scores)`` of the best ``limit`` texts for ``query`` by BM25 (higher is better),
        any of its words matching (they are quoted: no query syntax reaches FTS5); only ``rows``
        when given."""
        words = _WORDS.findall(query)
        if not words or limit <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        match = " OR ".join('"' + w.replace('"', '""') + '"' for w in dict.fromkeys(words))
        sql = "SELECT rowid, -bm25(texts) FROM texts WHERE texts MATCH ?"
        params: List[Any] = [match]
        if rows is not None:
            sql += " AND rowid IN (SELECT value FROM json_each(?))"
            params.append(json.dumps(np.asarray(rows, dtype=np.int64).tolist()))
        sql += " ORDER BY bm25(texts) LIMIT ?"
        params.append(int(limit))
        with self._lock:
            if not self._has_texts():
                raise ValueError("hybrid: this index holds no texts (add them with add(..., texts=...))")
            found = self._db.execute(sql, params).fetchall()
        return (np.fromiter((r for r, _ in found), dtype=np.int64, count=len(found)),
                np.fromiter((s for _, s in found), dtype=np.float32, count=len(found)))

    # -- changes -------------------------------------------------------------------------------
    def add(self, rows: np.ndarray, items: List[Dict[str, Any]]) -> None:
        """Store checked dicts for ``rows`` (one transaction: all or nothing)."""
        with self._lock, self._db:
            for key in sorted({k for m in items for k in m if _IDENT.match(k)} - set(self._columns)):
                self._db.execute(f'ALTER TABLE meta ADD COLUMN "{key}"')
                self._db.execute(f'CREATE INDEX "idx_{key}" ON meta ("{key}")')
                self._columns.append(key)
            cols = self._columns
            sql = f'INSERT INTO meta (_row, _json{"".join(f", {chr(34)}{c}{chr(34)}" for c in cols)}) ' \
                  f'VALUES ({", ".join("?" * (len(cols) + 2))})'
            self._db.executemany(sql, [
                (int(r), json.dumps(m, allow_nan=False),
                 *[m.get(c) if isinstance(m.get(c), _SCALARS) else None for c in cols])
                for r, m in zip(rows.tolist(), items)])

    def compact(self, keep: np.ndarray) -> None:
        """Renumber after the index dropped tombstoned rows (``keep``: old rows kept)."""
        keep = np.asarray(keep, dtype=bool)
        mapping = np.full(len(keep), -1, dtype=np.int64)
        mapping[keep] = np.arange(int(np.count_nonzero(keep)))
        with self._lock, self._db:
            self._db.execute("CREATE TEMP TABLE renumber (old INTEGER PRIMARY KEY, new INTEGER NOT NULL)")
            try:
                self._db.executemany("INSERT INTO renumber VALUES (?, ?)",
                                     ((int(o), int(n)) for o, n in zip(np.flatnonzero(keep), mapping[keep])))
                if self._has_texts():  # FTS5 rows: re-inserted under their new numbers
                    kept = self._db.execute("SELECT r.new, t.text FROM texts t JOIN renumber r ON r.old = t.rowid"
                                            ).fetchall()
                    self._db.execute("DELETE FROM texts")
                    self._db.executemany("INSERT INTO texts (rowid, text) VALUES (?, ?)", kept)
                self._db.execute("DELETE FROM meta WHERE _row NOT IN (SELECT old FROM renumber)")
                # Through negative numbers, so no two rows ever hold the same key mid-update.
                self._db.execute("UPDATE meta SET _row = -1 - (SELECT new FROM renumber WHERE old = meta._row)")
                self._db.execute("UPDATE meta SET _row = -1 - _row")
            finally:
                self._db.execute("DROP TABLE renumber")

    # -- reads ---------------------------------------------------------------------------------
    def get(self, rows: Sequence[int]) -> List[Optional[Dict[str, Any]]]:
        """The dicts of ``rows`` (None for a row that has none)."""
        out: Dict[int, Dict[str, Any]] = {}
        with self._lock:
            for r, js in self._db.execute(
                    f"SELECT _row, _json FROM meta WHERE _row IN ({','.join('?' * len(rows))})",
                    [int(r) for r in rows]):
                out[r] = loads_json(js, f"metadata of row {r}")
        return [out.get(int(r)) for r in rows]

    def where(self, clause: str, params: Sequence[Any], num_rows: int) -> np.ndarray:
        """Bool mask of the rows whose metadata satisfies ``clause`` (parameters bound, never
        formatted into the SQL; the clause can only read)."""
        mask = np.zeros(num_rows, dtype=bool)
        mask[self.where_rows(clause, params, num_rows)] = True
        return mask

    def where_rows(self, clause: str, params: Sequence[Any], num_rows: int) -> np.ndarray:
        """Sorted rows (below ``num_rows``) whose metadata satisfies ``clause``: O(matches)."""
        if not isinstance(clause, str) or not clause.strip():
            raise TypeError(f"where: expected an SQL condition string, got {clause!r}")
        if isinstance(params, (str, bytes)) or not isinstance(params, Sequence):
            raise TypeError(f"where_params: expected a tuple of values, got {type(params).__name__}")
        # NumPy scalars would bind as BLOBs (equal to no number): pass Python numbers.
        bound = tuple(p.item() if isinstance(p, np.generic) else p for p in params)
        limit = float(self.WHERE_TIME_LIMIT)
        with self._lock:
            deadline = time.monotonic() + limit
            self._db.set_authorizer(_read_only_authorizer)
            self._db.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
            try:
                rows = self._db.execute(f"SELECT _row FROM meta WHERE ({clause}) ORDER BY _row", bound).fetchall()
            except sqlite3.OperationalError as exc:
                if time.monotonic() > deadline and "interrupt" in str(exc):
                    raise ValueError(f"where: the condition ran past the {limit:g} s limit and was stopped "
                                     "(MetadataStore.WHERE_TIME_LIMIT); simplify it or raise the limit") from None
                known = ", ".join(self._columns) or "none yet"
                raise ValueError(f"where: {exc} (columns: {known})") from None
            except (sqlite3.Error, sqlite3.Warning, ValueError, OverflowError) as exc:
                known = ", ".join(self._columns) or "none yet"
                raise ValueError(f"where: {exc} (columns: {known})") from None
            finally:
                self._db.set_progress_handler(None, 0)
                self._db.set_authorizer(None)
        r = np.fromiter((x for (x,) in rows), dtype=np.int64)
        return np.unique(r[(r >= 0) & (r < num_rows)])

    @property
    def columns(self) -> List[str]:
        """Keys stored as SQL columns (usable in ``where``)."""
        return list(self._columns)

    # -- persistence ---------------------------------------------------------------------------
    def save(self, directory: Path) -> Dict[str, Dict[str, Any]]:
        """Write ``metadata.sqlite`` (a consistent copy through SQLite's backup API)."""
        def write(path: Path) -> None:
            dst = sqlite3.connect(str(path))
            try:
                with self._lock:
                    self._db.backup(dst)
            finally:
                dst.close()
        return {_FILE: write_via_path(Path(directory) / _FILE, write)}

    @classmethod
    def load(cls, directory: Path) -> "MetadataStore":
        """Read ``metadata.sqlite`` into memory (the saved file is never written)."""
        store = cls()
        # Quoted: '#', '?' and '%' in a path are URI syntax, not part of the name.
        src = sqlite3.connect(f"file:{quote(str(Path(directory).resolve() / _FILE))}?mode=ro", uri=True)
        try:
            src.backup(store._db)
        except sqlite3.Error as exc:
            raise ValueError(f"{_FILE}: unreadable ({exc})") from None
        finally:
            src.close()
        try:
            info = store._db.execute("PRAGMA table_info(meta)").fetchall()
        except sqlite3.Error as exc:
            raise ValueError(f"{_FILE}: unreadable ({exc})") from None
        names = [row[1] for row in info]
        if names[:2] != ["_row", "_json"]:
            raise ValueError(f"{_FILE}: not a muvera metadata table")
        store._columns = names[2:]
        return store
