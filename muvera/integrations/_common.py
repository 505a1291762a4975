"""What every integration shares: reading an index out in batches, the FDE header that travels
with an export, query FDEs, and results shaped like :meth:`muvera.MuveraIndex.search`'s."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from .._validate import positive_int
from ..durable import loads_json
from ..config import FDEConfig
from ..encoder import FDEEncoder
from ..ragged import offsets_of
from ..store import pack_tokens

__all__ = ["ExportError", "ExportBatch", "check_index", "export_batches", "header_of", "check_header",
           "QueryEncoder", "results", "uuid_of", "HEADER_FORMAT", "HEADER_VERSION"]

HEADER_FORMAT = "muvera-export"
HEADER_VERSION = 1
#: uuid5 namespace for string ids (a fixed, random-looking namespace of this project).
ID_NAMESPACE = uuid.UUID("5b0c1a3e-6f1d-5c55-9d7e-6d757665726a")


class ExportError(RuntimeError):
    """An export failed part way while appending to an existing collection or table.

    Attributes
    ----------
    written : list
        Ids of the documents that were written before the failure (the others were not).
    """

    def __init__(self, message: str, written: List[Any]):
        super().__init__(message)
        self.written = list(written)


@dataclass
class ExportBatch:
    """Live documents of an index, in row order: ids, FDEs, packed tokens, metadata."""

    ids: List[Any]
    fdes: np.ndarray        # (n, D) float32, as the backend scores them
    tokens: np.ndarray      # (T, d) in the store's dtype (float codecs) or decoded float32
    lengths: np.ndarray     # (n,) int64
    metadata: List[Optional[Dict[str, Any]]]

    def split_tokens(self) -> List[np.ndarray]:
        """One ``(n_i, d)`` view per document."""
        off = offsets_of(self.lengths)
        return [self.tokens[off[i]: off[i + 1]] for i in range(len(self.lengths))]


def check_index(index: Any) -> None:
    """TypeError unless ``index`` is a :class:`muvera.MuveraIndex`."""
    from ..index import MuveraIndex  # noqa: PLC0415

    if not isinstance(index, MuveraIndex):
        raise TypeError(f"index: expected a muvera.MuveraIndex, got {type(index).__name__}")


def token_dtype(index: Any) -> np.dtype:
    """The dtype an export holds tokens in: the store's for float codecs, else float32 (decoded)."""
    return index.store.token_dtype


def export_batches(index: Any, batch_size: int = 1024) -> Iterator[ExportBatch]:
    """The live documents of ``index`` in batches of ``batch_size`` (row order).

    FDEs come from the backend when it holds them exactly, else they are re-encoded from the
    stored tokens (bit-identical to the first encoding). Do not add to or remove from the index
    while iterating.
    """
    check_index(index)
    batch_size = positive_int(batch_size, "batch_size")
    store, backend, encoder = index.store, index.backend, index.encoder
    rows_all = np.flatnonzero(index.id_map.alive)
    for s in range(0, len(rows_all), batch_size):
        rows = rows_all[s: s + batch_size]
        tokens, source, lens = store.tokens_of(rows)
        if backend.lossless and backend.can_reconstruct:
            fdes = np.asarray(backend.reconstruct(rows), dtype=np.float32)
        else:
            fdes = encoder.encode_spans(source, offsets_of(lens)[:-1], lens, is_document=True)
        ids = index.id_map.ids_of(rows).tolist()
        yield ExportBatch(ids, fdes, np.ascontiguousarray(tokens), lens, index.metadata(ids) if ids else [])


def header_of(index: Any) -> Dict[str, Any]:
    """What an export records about its index: the FDE config, sizes, id kind, token dtype, model."""
    from .. import __version__  # noqa: PLC0415

    return {"format": HEADER_FORMAT, "version": HEADER_VERSION, "muvera_version": __version__,
            "config": index.config.to_dict(), "dimension": index.config.dimension,
            "fde_dimension": index.config.output_dimension, "id_kind": index.id_kind,
            "token_codec": index.store.codec_name, "token_dtype": token_dtype(index).name,
            "model": index.model}


def parse_header(raw: Any, where: str) -> Dict[str, Any]:
    """A header read back (dict or JSON text), checked for format and version."""
    if isinstance(raw, (bytes, str)):
        try:
            raw = loads_json(raw, "metadata")
        except ValueError as exc:
            raise ValueError(f"{where}: the muvera header is not valid JSON ({exc})") from None
    if not isinstance(raw, dict) or raw.get("format") != HEADER_FORMAT:
        raise ValueError(f"{where}: not written by muvera (no {HEADER_FORMAT!r} header)")
    if not isinstance(raw.get("version"), int) or raw["version"] > HEADER_VERSION:
        raise ValueError(f"{where}: muvera header version {raw.get('version')!r} is newer than this "
                         f"release reads ({HEADER_VERSION}); upgrade muvera-toolkit")
    try:
        FDEConfig.from_dict(raw["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{where}: bad FDE config in the muvera header ({exc})") from None
    return raw


def check_header(found: Dict[str, Any], config: FDEConfig, where: str, *,
                 id_kind: Optional[str] = None) -> None:
    """ValueError unless the stored header was written for ``config`` (and, when given, the
    same id kind): FDEs made with another config do not rank like this one's."""
    stored = FDEConfig.from_dict(found["config"])
    if stored.to_dict() != config.to_dict():
        diff = {k: (v, config.to_dict().get(k)) for k, v in stored.to_dict().items()
                if config.to_dict().get(k) != v}
        what = ", ".join(f"{k}: stored {a!r}, given {b!r}" for k, (a, b) in diff.items())
        raise ValueError(f"{where}: holds FDEs of another config ({what}); use the config it was written with")
    if id_kind is not None and found.get("id_kind") not in (None, id_kind):
        raise ValueError(f"{where}: holds {found['id_kind']} ids, the index has {id_kind} ids")


class QueryEncoder:
    """Queries in any batch form -> ``(packed float32 tokens, offsets, FDEs)``, encoded in query
    mode by an :class:`~muvera.FDEEncoder` of ``config`` (what :meth:`MuveraIndex.search` does)."""

    def __init__(self, config: FDEConfig, num_threads: Optional[int] = None):
        if not isinstance(config, FDEConfig):
            raise TypeError(f"config: expected an FDEConfig, got {type(config).__name__}")
        self.config = config
        self.encoder = FDEEncoder(config, num_threads=num_threads)

    def __call__(self, queries: Any, lengths: Any = None, offsets: Any = None,
                 mask: Any = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        tokens, lens = pack_tokens(queries, self.config.dimension, np.float32, lengths=lengths,
                                   offsets=offsets, mask=mask, name="queries")
        off = offsets_of(lens)
        fdes = self.encoder.encode_spans(tokens, off[:-1], lens, is_document=False)
        return tokens, off, fdes


def results(hits: Sequence[Sequence[Tuple[Any, float]]], width: int,
            id_kind: Optional[str]) -> Tuple[np.ndarray, np.ndarray]:
    """Per-query ``[(id, score), ...]`` (best first) -> ``(ids, scores)`` of shape
    ``(nq, width)`` as :meth:`MuveraIndex.search` returns them: ``int64`` padded with ``-1``, or
    ``object`` padded with None for str ids; float32 scores, ``-inf`` padding."""
    nq = len(hits)
    if id_kind == "str":
        ids = np.full((nq, width), None, dtype=object)
    else:
        ids = np.full((nq, width), -1, dtype=np.int64)
    scores = np.full((nq, width), -np.inf, dtype=np.float32)
    for i, row in enumerate(hits):
        for j, (doc_id, score) in enumerate(row[:width]):
            ids[i, j] = doc_id
            scores[i, j] = score
    return ids, scores


def uuid_of(doc_id: str) -> str:
    """The deterministic UUID a string id is stored under (uuid5 in muvera's namespace)."""
    return str(uuid.uuid5(ID_NAMESPACE, doc_id))
