"""Arrow tables and Parquet files: a neutral export any engine or dataframe library reads.

One row per live document:

======== ===================================================== ==================================
column   type                                                  holds
======== ===================================================== ==================================
id       int64 or string                                       the document id
fde      fixed_size_list<float32>[D]                           the FDE, as the backend scores it
tokens   list<fixed_size_list<float16 or float32>[d]>          the stored tokens, in the store's dtype
metadata string (JSON) or null                                 the whole metadata dict
<key>    the value's type                                      each scalar metadata key (for filters
                                                               in other tools; ``metadata`` rules)
======== ===================================================== ==================================

The schema metadata key ``b"muvera"`` holds the FDE config, the id kind, the token codec and the
model spec as JSON, so :func:`from_arrow` / :func:`read_parquet` rebuild the index with nothing
else given: same ids, same tokens, same FDEs, same search results (bit for bit for the float16
and float32 stores; a compressed store such as int8 exports its decoded tokens as float32).
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Iterator, List, Optional, Union

import numpy as np

from .._optional import require
from ..durable import loads_json
from .._validate import positive_int
from ..config import FDEConfig
from ._common import check_index, export_batches, header_of, parse_header

__all__ = ["to_arrow", "from_arrow", "write_parquet", "read_parquet", "arrow_schema", "record_batches",
           "metadata_fields", "SCHEMA_KEY"]

SCHEMA_KEY = b"muvera"
_FIXED = ("id", "fde", "tokens", "metadata")
PathLike = Union[str, "os.PathLike[str]"]


def _pa() -> Any:
    return require("pyarrow", "arrow", "Arrow/Parquet export")


def _scalar_keys(metadata: List[Optional[Dict[str, Any]]]) -> List[str]:
    keys: Dict[str, None] = {}
    for m in metadata:
        for key, value in (m or {}).items():
            if key not in _FIXED and isinstance(value, (str, int, float, bool)):
                keys.setdefault(key)
    return list(keys)


def arrow_schema(index: Any, extra: Optional[List[Any]] = None, *, token_type: Optional[Any] = None) -> Any:
    """The schema of :func:`to_arrow`'s table (without per-key metadata columns unless given in
    ``extra`` as pyarrow fields), with the muvera header in its metadata. ``token_type``
    overrides the tokens' value type (default: the store's)."""
    pa = _pa()
    check_index(index)
    header = header_of(index)
    d, big_d = index.config.dimension, index.config.output_dimension
    value = token_type or (pa.float16() if header["token_dtype"] == "float16" else pa.float32())
    fields = [pa.field("id", pa.string() if index.id_kind == "str" else pa.int64(), nullable=False),
              pa.field("fde", pa.list_(pa.float32(), big_d), nullable=False),
              pa.field("tokens", pa.list_(pa.list_(value, d)), nullable=False),
              pa.field("metadata", pa.string())] + list(extra or [])
    return pa.schema(fields, metadata={SCHEMA_KEY: json.dumps(header).encode()})


def _batch_arrays(batch: Any, pa: Any, d: int, big_d: int, id_kind: Optional[str]) -> Dict[str, Any]:
    ids = pa.array(batch.ids, type=pa.string() if id_kind == "str" else pa.int64())
    fde = pa.FixedSizeListArray.from_arrays(pa.array(batch.fdes.reshape(-1)), big_d)
    flat = pa.FixedSizeListArray.from_arrays(pa.array(batch.tokens.reshape(-1)), d)
    offsets = np.zeros(len(batch.lengths) + 1, dtype=np.int64)
    np.cumsum(batch.lengths, out=offsets[1:])
    if offsets[-1] >= 2**31:
        raise ValueError("batch_size: a batch holds 2**31 tokens or more; use a smaller batch_size")
    tokens = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), flat)
    meta = pa.array([None if m is None else json.dumps(m, allow_nan=False) for m in batch.metadata],
                    type=pa.string())
    return {"id": ids, "fde": fde, "tokens": tokens, "metadata": meta}


def metadata_fields(index: Any) -> List[Any]:
    """One typed ``pyarrow.field`` per scalar metadata key of the live documents, in first-seen
    order; keys whose values mix types (str and int, say) are left out (the JSON column keeps
    them). Reads every metadata dict once (tokens are not read)."""
    pa = _pa()
    metas = index.metadata(index.ids) if len(index) else []
    fields = []
    for key in _scalar_keys(metas):
        try:
            column = pa.array([(m or {}).get(key) for m in metas])
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            continue
        if not pa.types.is_null(column.type):
            fields.append(pa.field(key, column.type))
    return fields


def _typed(values: List[Any], field: Any, pa: Any) -> Any:
    try:
        return pa.array(values, type=field.type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):  # a value that does not fit: null
        out = []
        for v in values:
            try:
                pa.array([v], type=field.type)
                out.append(v)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
                out.append(None)
        return pa.array(out, type=field.type)


def record_batches(index: Any, batch_size: int = 1024, *, fields: Optional[List[Any]] = None,
                   token_type: Optional[Any] = None) -> Iterator[Any]:
    """The rows of :func:`to_arrow` as ``pyarrow.RecordBatch`` es of ``batch_size`` documents,
    all of one schema: the fixed columns plus the metadata columns ``fields`` (default none).

    ``token_type`` (a pyarrow float type) converts the tokens, e.g. to float32 for engines that
    score in the type they store.
    """
    pa = _pa()
    check_index(index)
    d, big_d, kind = index.config.dimension, index.config.output_dimension, index.id_kind
    schema = arrow_schema(index, fields, token_type=token_type)
    for batch in export_batches(index, batch_size):
        if token_type is not None:
            batch.tokens = batch.tokens.astype(token_type.to_pandas_dtype())
        arrays = _batch_arrays(batch, pa, d, big_d, kind)
        for field in fields or []:
            arrays[field.name] = _typed([(m or {}).get(field.name) for m in batch.metadata], field, pa)
        yield pa.RecordBatch.from_arrays([arrays[f.name] for f in schema], schema=schema)


def to_arrow(index: Any, *, batch_size: int = 4096, metadata_columns: bool = True) -> Any:
    """The live documents of ``index`` as a ``pyarrow.Table`` (see the module docstring).

    Parameters
    ----------
    index : MuveraIndex
    batch_size : int, default 4096
        Documents per record batch.
    metadata_columns : bool, default True
        Besides the ``metadata`` JSON column, one typed column per scalar metadata key (keys
        whose values mix types stay in the JSON column only).

    Returns
    -------
    pyarrow.Table
    """
    pa = _pa()
    check_index(index)
    positive_int(batch_size, "batch_size")
    fields = metadata_fields(index) if metadata_columns else []
    schema = arrow_schema(index, fields)
    return pa.Table.from_batches(list(record_batches(index, batch_size, fields=fields)), schema=schema)


def _column(table: Any, name: str, where: str) -> Any:
    if name not in table.column_names:
        raise ValueError(f"{where}: no {name!r} column (columns: {table.column_names})")
    column = table.column(name).combine_chunks()
    if column.null_count:
        raise ValueError(f"{where}: column {name!r} has {column.null_count} null values")
    return column


def _tokens_of(table: Any, d: int, where: str) -> tuple:
    pa = _pa()
    column = _column(table, "tokens", where)
    if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)):
        raise ValueError(f"{where}: column 'tokens' must be a list of fixed-size lists, got {column.type}")
    lens = np.asarray(column.value_lengths().to_numpy(zero_copy_only=False), dtype=np.int64)
    inner = column.flatten()
    if not pa.types.is_fixed_size_list(inner.type) or inner.type.list_size != d:
        raise ValueError(f"{where}: column 'tokens' must hold fixed_size_list<float>[{d}] token vectors "
                         f"(the config's dimension), got {inner.type}")
    values = inner.flatten()
    if not pa.types.is_floating(values.type) or inner.null_count or values.null_count:
        raise ValueError(f"{where}: column 'tokens' must hold non-null floats, got {values.type}")
    flat = values.to_numpy(zero_copy_only=False)
    return flat.reshape(-1, d), lens


def _metadata_of(table: Any, where: str) -> Optional[List[Dict[str, Any]]]:
    if "metadata" in table.column_names:
        out = []
        for i, text in enumerate(table.column("metadata").to_pylist()):
            if text is None:
                out.append({})
                continue
            try:
                value = loads_json(text, "metadata")
            except ValueError as exc:
                raise ValueError(f"{where}: metadata[{i}] is not valid JSON ({exc})") from None
            if not isinstance(value, dict):
                raise ValueError(f"{where}: metadata[{i}] must be a JSON object, got {type(value).__name__}")
            out.append(value)
        return out if any(out) else None
    others = [c for c in table.column_names if c not in _FIXED]
    if not others:
        return None
    cols = {c: table.column(c).to_pylist() for c in others}
    return [{c: cols[c][i] for c in others if cols[c][i] is not None} for i in range(table.num_rows)]


def from_arrow(table: Any, config: Optional[FDEConfig] = None, *, backend: str = "auto",
               token_codec: Optional[str] = None, model: Optional[str] = None, verify: bool = True,
               num_threads: Optional[int] = None) -> Any:
    """Build a :class:`~muvera.MuveraIndex` from a table made by :func:`to_arrow` (or any table
    with ``id`` and ``tokens`` columns of that shape; then ``config`` must be given).

    Parameters
    ----------
    table : pyarrow.Table
    config : FDEConfig, optional
        Default: the config in the table's schema metadata. A different config re-encodes the
        FDEs from the tokens (the ``fde`` column is then not used).
    backend : str, default "auto"
    token_codec : str, optional
        Default: the exporting index's codec when it stored float16/float32 tokens, else the
        tokens' dtype (a compressed store such as int8 exported decoded float32 tokens; they
        are kept as float32, exactly, unless another codec is given here).
    model : str, optional
        Default: the model spec the exporting index recorded.
    verify : bool, default True
        With the table's own config and a backend that keeps FDEs exactly, check that the FDEs
        encoded here equal the ``fde`` column (a table from another encoder variant is refused).
    num_threads : int, optional

    Returns
    -------
    MuveraIndex

    Raises
    ------
    TypeError
        ``table`` is not a pyarrow Table, ``config`` not an FDEConfig.
    ValueError
        No config anywhere, missing or null columns, tokens of the wrong dimension, FDEs that
        disagree with the config, bad metadata JSON.
    """
    pa = _pa()
    from ..index import MuveraIndex  # noqa: PLC0415

    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    if not isinstance(table, pa.Table):
        raise TypeError(f"table: expected a pyarrow.Table, got {type(table).__name__}")
    if config is not None and not isinstance(config, FDEConfig):
        raise TypeError(f"config: expected an FDEConfig or None, got {type(config).__name__}")
    where = "table"
    raw = (table.schema.metadata or {}).get(SCHEMA_KEY)
    header = parse_header(raw, where) if raw is not None else None
    if config is None:
        if header is None:
            raise ValueError(f"{where}: no muvera header in the schema metadata; pass config=FDEConfig(...)")
        config = FDEConfig.from_dict(header["config"])
    own_config = header is not None and FDEConfig.from_dict(header["config"]).to_dict() == config.to_dict()
    if token_codec is None:
        # a float store's codec; a compressed store exported decoded float32 tokens: keep them whole
        token_codec = header["token_codec"] if header is not None and header.get("token_codec") in (
            "float16", "float32") else None
    index = MuveraIndex(config, backend=backend, num_threads=num_threads, token_codec=token_codec,
                        model=model if model is not None else (header or {}).get("model"))
    if table.num_rows == 0:
        return index
    ids = _column(table, "id", where).to_pylist()
    tokens, lens = _tokens_of(table, config.dimension, where)
    if token_codec is None and tokens.dtype == np.float32:  # float32 tokens: keep them whole
        index = MuveraIndex(config, backend=backend, num_threads=num_threads, token_codec="float32",
                            model=index.model)
    metadata = _metadata_of(table, where)
    index.add(tokens, ids=ids, lengths=lens, metadata=metadata)
    if verify and own_config and "fde" in table.column_names and index.backend.lossless \
            and index.backend.can_reconstruct:
        fde = _column(table, "fde", where)
        stored = fde.flatten().to_numpy(zero_copy_only=False).reshape(len(ids), -1)
        if stored.shape[1] != config.output_dimension:
            raise ValueError(f"{where}: column 'fde' has {stored.shape[1]} values per row, the config "
                             f"gives {config.output_dimension}")
        mine = index.backend.reconstruct(np.arange(len(ids), dtype=np.int64))
        if not np.array_equal(np.asarray(mine, np.float32), np.asarray(stored, np.float32)):
            raise ValueError(f"{where}: the 'fde' column differs from the FDEs this config encodes from the "
                             "tokens (another encoder variant or edited FDEs?); pass verify=False to "
                             "re-encode anyway")
    return index


def write_parquet(index: Any, path: PathLike, *, batch_size: int = 4096, compression: str = "zstd") -> int:
    """Write ``index`` to one Parquet file (streamed, one row group per batch); returns rows.

    The FDE config and the rest of the header travel in the schema metadata; the metadata
    columns are those of :func:`to_arrow`. The file appears whole or not at all (written to
    ``<path>.tmp-<pid>`` and renamed).
    """
    pq = require("pyarrow.parquet", "arrow", "Parquet export")
    check_index(index)
    positive_int(batch_size, "batch_size")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a file path, got {type(path).__name__}")
    target = os.fspath(path)
    if os.path.isdir(target):
        raise ValueError(f"path: {target} is a directory; expected a .parquet file path")
    tmp = f"{target}.tmp-{os.getpid()}"
    fields = metadata_fields(index)
    schema = arrow_schema(index, fields)
    rows = 0
    try:
        with pq.ParquetWriter(tmp, schema, compression=compression, **_float_options(schema)) as writer:
            for batch in record_batches(index, batch_size, fields=fields):
                writer.write_batch(batch)
                rows += batch.num_rows
            if rows == 0:
                writer.write_table(schema.empty_table())
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return rows


def _float_options(schema: Any) -> Dict[str, Any]:
    """Parquet writer options for the big float columns: no dictionary and no statistics (both
    cost time and buy nothing on millions of distinct floats) and BYTE_STREAM_SPLIT encoding
    (floats compress better by byte plane): 5x faster and ~10% smaller than the defaults."""
    import io  # noqa: PLC0415

    pq = require("pyarrow.parquet", "arrow", "Parquet export")
    buf = io.BytesIO()
    pq.write_table(schema.empty_table(), buf)  # the leaf paths Parquet gives nested columns
    paths = [c.path for c in pq.ParquetFile(io.BytesIO(buf.getvalue())).schema]
    floats = [p for p in paths if p.split(".")[0] in ("fde", "tokens")]
    return {"use_dictionary": [p for p in paths if p not in floats],
            "write_statistics": [p for p in paths if p not in floats], "use_byte_stream_split": floats}


def read_parquet(path: PathLike, config: Optional[FDEConfig] = None, **kwargs: Any) -> Any:
    """A :class:`~muvera.MuveraIndex` from a Parquet file written by :func:`write_parquet` (or
    any file with that layout); ``kwargs`` as for :func:`from_arrow`.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    ValueError
        Not a Parquet file, or as :func:`from_arrow`.
    """
    pa = _pa()
    pq = require("pyarrow.parquet", "arrow", "Parquet import")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a file path, got {type(path).__name__}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{os.fspath(path)}: no such Parquet file")
    verify = kwargs.get("verify", True)  # the FDE column is read only to verify the FDEs
    try:
        names = pq.read_schema(path).names
        table = pq.read_table(path, columns=None if verify else [c for c in names if c != "fde"])
    except (pa.ArrowInvalid, OSError) as exc:
        raise ValueError(f"{os.fspath(path)}: not a readable Parquet file ({exc})") from None
    return from_arrow(table, config, **kwargs)

