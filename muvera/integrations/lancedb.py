"""LanceDB: an embedded engine with multivector columns; MUVERA's two stages on one table.

:func:`to_lancedb` writes an index into a LanceDB table with the columns of
:func:`muvera.integrations.arrow.to_arrow` (``id``, ``fde``, ``tokens`` as a list of fixed-size
float32 lists -- LanceDB's multivector column --, ``metadata`` JSON and one typed column per
scalar metadata key) and the muvera header in the schema metadata.

:class:`LanceDBSearcher` searches it the MUVERA way: the query FDE finds ``candidates`` rows by
dot product on ``fde``, then a multivector (MaxSim, dot product per token) search restricted to
those rows ranks them. LanceDB reports distances (``1 - dot`` per query token); the searcher
turns them back into Chamfer scores, so results are shaped and scored like
:meth:`muvera.MuveraIndex.search`'s. Without a vector index on ``fde`` (none is made) the first
stage is exact; an IVF index a user adds makes it approximate, as a faiss backend does.

Example
-------
>>> import lancedb                                               # doctest: +SKIP
>>> from muvera.integrations.lancedb import LanceDBSearcher, to_lancedb
>>> db = lancedb.connect("./lance")
>>> to_lancedb(index, db, "docs")
>>> ids, scores = LanceDBSearcher(db, "docs", index.config).search(queries, k=10, candidates=100)
"""

from __future__ import annotations

import os
from typing import Any, List, Optional, Tuple

import numpy as np

from .._optional import require
from .._validate import check_search_args, positive_int
from ..config import FDEConfig
from ._common import ExportError, QueryEncoder, check_header, check_index, parse_header, results
from .arrow import SCHEMA_KEY, arrow_schema, metadata_fields, record_batches

__all__ = ["to_lancedb", "LanceDBSearcher"]


def _lancedb() -> Any:
    return require("lancedb", "lancedb", "the LanceDB integration")


def _connect(db: Any) -> Any:
    """A LanceDB connection: ``db`` itself, or ``lancedb.connect(db)`` for a path."""
    lancedb = _lancedb()
    if isinstance(db, (str, os.PathLike)):
        return lancedb.connect(os.fspath(db))
    if not hasattr(db, "open_table") or not hasattr(db, "create_table"):
        raise TypeError(f"db: expected a lancedb connection or a directory path, got {type(db).__name__}")
    return db


def _check_name(table: Any) -> str:
    if not isinstance(table, str) or not table.strip():
        raise TypeError(f"table: expected a non-empty table name, got {table!r}")
    return table


def _names(db: Any) -> List[str]:
    try:
        listed = db.list_tables()
        names = getattr(listed, "tables", listed)
    except AttributeError:  # older lancedb
        names = db.table_names()
    return list(names)


def _check_table(tbl: Any, config: FDEConfig, where: str) -> dict:
    """The muvera header of an existing table, after checking its columns and config."""
    pa = require("pyarrow", "lancedb", "the LanceDB integration")
    schema = tbl.schema
    for name in ("id", "fde", "tokens"):
        if name not in schema.names:
            raise ValueError(f"{where}: no {name!r} column (columns: {schema.names})")
    fde, tokens = schema.field("fde").type, schema.field("tokens").type
    if not pa.types.is_fixed_size_list(fde) or fde.list_size != config.output_dimension:
        raise ValueError(f"{where}: column 'fde' holds {fde}, the config's FDEs have {config.output_dimension} values")
    inner = getattr(tokens, "value_type", None)
    if inner is None or not pa.types.is_fixed_size_list(inner) or inner.list_size != config.dimension:
        raise ValueError(f"{where}: column 'tokens' holds {tokens}, the config's tokens have "
                         f"{config.dimension} dimensions")
    raw = (schema.metadata or {}).get(SCHEMA_KEY)
    if raw is None:
        raise ValueError(f"{where}: no muvera header in the schema metadata (not written by to_lancedb)")
    header = parse_header(raw, where)
    check_header(header, config, where)
    # the id column's type decides (a table made from an empty index has no id kind in its header)
    return dict(header, id_kind="str" if pa.types.is_string(schema.field("id").type) else "int")


def _sql_list(values: List[Any]) -> str:
    if values and isinstance(values[0], str):
        return ", ".join("'" + v.replace("'", "''") + "'" for v in values)
    return ", ".join(str(int(v)) for v in values)


def to_lancedb(index: Any, db: Any, table: str, *, batch_size: int = 1024, overwrite: bool = False) -> int:
    """Write the live documents of ``index`` into a LanceDB table (created if missing).

    Parameters
    ----------
    index : MuveraIndex
    db : lancedb connection or path
        ``lancedb.connect(...)``'s connection, or a directory path to connect to.
    table : str
        Created when missing; otherwise appended to after checking its columns, FDE config and
        id kind against the index.
    batch_size : int, default 1024
        Documents per written batch.
    overwrite : bool, default False
        When appending, first delete rows whose ids the index also holds (default: refuse,
        before anything is written).

    Returns
    -------
    int
        Rows written.

    Raises
    ------
    TypeError
        Not a MuveraIndex, a bad connection, table name or batch size.
    ValueError
        The existing table disagrees with the index, or holds some of its ids.
    ExportError
        A write failed. A table this call created is dropped again; an append is rolled back
        to the table's previous version (``written == []``), or, if that fails too,
        ``written`` lists the ids that were written.
    """
    check_index(index)
    conn = _connect(db)
    table = _check_name(table)
    batch_size = positive_int(batch_size, "batch_size")
    if not isinstance(overwrite, (bool, np.bool_)):
        raise TypeError(f"overwrite: expected a bool, got {type(overwrite).__name__}")
    pa = require("pyarrow", "lancedb", "the LanceDB integration")
    where = f"table {table!r}"
    created = table not in _names(conn)
    if created:
        fields = metadata_fields(index)
        tbl = conn.create_table(table, schema=arrow_schema(index, fields, token_type=pa.float32()))
        version = None
    else:
        tbl = conn.open_table(table)
        header = _check_table(tbl, index.config, where)
        if index.id_kind is not None and header["id_kind"] != index.id_kind:
            raise ValueError(f"{where}: holds {header['id_kind']} ids, the index has {index.id_kind} ids")
        fixed = {"id", "fde", "tokens", "metadata"}
        fields = [f for f in tbl.schema if f.name not in fixed]
        version = tbl.version
        ids = index.ids
        if ids:
            clash: List[Any] = []
            for s in range(0, len(ids), 1024):
                part = ids[s: s + 1024]
                clash += tbl.search().where(f"id IN ({_sql_list(part)})").select(["id"]).limit(len(part)) \
                    .to_arrow().column("id").to_pylist()
            if clash and not overwrite:
                raise ValueError(f"{where}: ids already there: {clash[:10]} (pass overwrite=True to replace them)")
            if clash:
                for s in range(0, len(clash), 1024):
                    tbl.delete(f"id IN ({_sql_list(clash[s: s + 1024])})")
    written: List[Any] = []
    try:
        for batch in record_batches(index, batch_size, fields=fields, token_type=pa.float32()):
            batch = batch.replace_schema_metadata(tbl.schema.metadata)
            tbl.add(pa.Table.from_batches([batch]).cast(tbl.schema))
            written += batch.column(0).to_pylist()
    except BaseException as exc:
        done = len(written)
        if created:
            try:
                conn.drop_table(table)
                fate = "the new table was dropped"
            except Exception as cleanup:  # noqa: BLE001
                fate = f"dropping the new table failed too ({type(cleanup).__name__}: {cleanup})"
            written = []
        else:
            try:
                tbl.restore(version)
                fate, written = f"the table was restored to version {version}", []
            except Exception as cleanup:  # noqa: BLE001
                fate = (f"restoring version {version} failed too ({type(cleanup).__name__}: {cleanup}); the rows "
                        "of the ids in ExportError.written were written, the others were not")
        if not isinstance(exc, Exception):
            raise
        raise ExportError(f"lancedb: export to {where} failed after {done} of {len(index)} rows "
                          f"({type(exc).__name__}: {exc}); {fate}", written) from exc
    return len(written)


class LanceDBSearcher:
    """MUVERA search on a LanceDB table: FDE candidates, then MaxSim over their tokens.

    Parameters
    ----------
    db : lancedb connection or path
    table : str
        A table written by :func:`to_lancedb`.
    config : FDEConfig
        The index's config (checked against the table's); queries are encoded with it in
        query mode.
    num_threads : int, optional
        Threads for encoding query FDEs.

    Raises
    ------
    ValueError
        No such table, or its columns / FDE config disagree with ``config``.
    """

    def __init__(self, db: Any, table: str, config: FDEConfig, *, num_threads: Optional[int] = None):
        conn = _connect(db)
        self.table_name = _check_name(table)
        self._encode = QueryEncoder(config, num_threads)
        if table not in _names(conn):
            raise ValueError(f"table {table!r}: not found in this LanceDB database")
        self.table = conn.open_table(table)
        self._header = _check_table(self.table, config, f"table {table!r}")

    @property
    def config(self) -> FDEConfig:
        """The FDE config queries are encoded with."""
        return self._encode.config

    def __len__(self) -> int:
        return int(self.table.count_rows())

    def search(self, queries: Any, k: int = 10, candidates: int = 100, *, where: Optional[str] = None,
               lengths: Any = None, offsets: Any = None, mask: Any = None) -> Tuple[np.ndarray, np.ndarray]:
        """Top-``k`` documents per query: ``candidates`` FDE neighbours reranked by MaxSim.

        Parameters
        ----------
        queries : any batch form :meth:`muvera.MuveraIndex.search` takes
        k : int, default 10
        candidates : int, default 100
        where : str, optional
            A LanceDB SQL filter on the table's columns (the typed metadata columns, ``id``),
            applied before the FDE search, e.g. ``"lang = 'en' AND year >= 2020"``.
        lengths, offsets, mask : optional

        Returns
        -------
        ids, scores
            As :meth:`muvera.MuveraIndex.search`.
        """
        k, c, _ = check_search_args(k, positive_int(candidates, "candidates"))
        if where is not None and (not isinstance(where, str) or not where.strip()):
            raise TypeError(f"where: expected a LanceDB SQL filter string, got {where!r}")
        tokens, off, fdes = self._encode(queries, lengths, offsets, mask)
        kind = self._header.get("id_kind")
        width = min(k, max(1, len(self)))
        hits = []
        for i in range(len(off) - 1):
            first = self.table.search(fdes[i], vector_column_name="fde").distance_type("dot").limit(c)
            if where is not None:
                first = first.where(where, prefilter=True)
            try:
                cand = first.select(["id", "_distance"]).to_arrow().column("id").to_pylist()
            except Exception as exc:  # noqa: BLE001 (a bad filter: DataFusion/Lance errors of many kinds)
                if where is not None:
                    raise ValueError(f"where: {type(exc).__name__}: {str(exc).strip().splitlines()[0]}") from None
                raise
            if not cand:
                hits.append([])
                continue
            q = tokens[off[i]: off[i + 1]]
            second = (self.table.search(q, vector_column_name="tokens").distance_type("dot")
                      .where(f"id IN ({_sql_list(cand)})", prefilter=True).select(["id", "_distance"])
                      .limit(k).to_arrow())
            nq = np.float32(len(q))
            # LanceDB's multivector distance is sum over query tokens of (1 - max dot).
            scores = nq - second.column("_distance").to_numpy().astype(np.float32)
            row = list(zip(second.column("id").to_pylist(), scores.tolist()))
            row.sort(key=lambda t: -t[1])
            hits.append(row)
        return results(hits, width, kind)

    def __repr__(self) -> str:
        return f"LanceDBSearcher(table={self.table_name!r}, fde_dimension={self.config.output_dimension})"
