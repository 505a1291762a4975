"""Qdrant: FDE as a dense vector for candidates, tokens as a MAX_SIM multivector for the rerank.

:func:`to_qdrant` writes an index into a collection with two named vectors:

* ``"fde"`` -- the document FDE, dot product (HNSW on the server as configured there);
* ``"tokens"`` -- the stored tokens as a multivector compared with ``MAX_SIM`` (dot product per
  token), with HNSW off (``m=0``): it is only ever used to rerank prefetched candidates.

The payload holds ``muvera_id`` (our id) and ``metadata`` (the document's dict). Int ids are the
point ids; string ids become deterministic UUIDs (:func:`~muvera.integrations._common.uuid_of`).
The FDE config travels in the collection's metadata under ``"muvera"`` (qdrant-client >= 1.16),
so an append or a :class:`QdrantSearcher` with another config is refused instead of returning
nonsense.

:class:`QdrantSearcher` runs MUVERA's two stages as one Qdrant query per search (a batch of them
for several queries): a prefetch of ``candidates`` points on the query FDE, then MAX_SIM on the
multivector. Its results are shaped exactly like :meth:`muvera.MuveraIndex.search`'s.

Example
-------
>>> from qdrant_client import QdrantClient                      # doctest: +SKIP
>>> from muvera.integrations.qdrant import QdrantSearcher, to_qdrant
>>> client = QdrantClient(":memory:")                           # or url="http://localhost:6333"
>>> to_qdrant(index, client, "docs")
>>> ids, scores = QdrantSearcher(client, "docs", index.config).search(queries, k=10, candidates=100)
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from .._optional import require
from .._validate import check_search_args, positive_int
from ..config import FDEConfig
from ._common import (ExportError, QueryEncoder, check_header, check_index,
                      export_batches, header_of, parse_header, results, uuid_of)

__all__ = ["to_qdrant", "QdrantSearcher", "FDE_VECTOR", "TOKENS_VECTOR", "point_id"]

FDE_VECTOR = "fde"
TOKENS_VECTOR = "tokens"
_META_KEY = "muvera"


def _models() -> Any:
    return require("qdrant_client.models", "qdrant", "the Qdrant integration")


def point_id(doc_id: Any) -> Any:
    """The Qdrant point id of one of our ids: the int itself, or a uuid5 string for a str id."""
    return uuid_of(doc_id) if isinstance(doc_id, str) else int(doc_id)


def _check_client(client: Any) -> None:
    qdrant_client = require("qdrant_client", "qdrant", "the Qdrant integration")
    if not isinstance(client, qdrant_client.QdrantClient):
        raise TypeError(f"client: expected a qdrant_client.QdrantClient, got {type(client).__name__}")


def _check_name(collection: Any) -> str:
    if not isinstance(collection, str) or not collection.strip():
        raise TypeError(f"collection: expected a non-empty collection name, got {collection!r}")
    return collection


def _reach(client: Any, collection: str) -> bool:
    """Whether the collection exists; ConnectionError naming the cause if Qdrant cannot be reached."""
    try:
        return bool(client.collection_exists(collection))
    except Exception as exc:  # noqa: BLE001 (httpx, grpc and Qdrant's own errors all mean "no answer")
        raise ConnectionError(f"qdrant: cannot reach the database to look up collection {collection!r} "
                              f"({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''})"
                              ) from exc


def _collection_header(client: Any, collection: str, config: FDEConfig) -> Dict[str, Any]:
    """The muvera header of an existing collection, after checking it and its vectors against
    ``config``; ValueError naming what disagrees."""
    where = f"collection {collection!r}"
    info = client.get_collection(collection)
    vectors = info.config.params.vectors
    if not isinstance(vectors, Mapping) or FDE_VECTOR not in vectors or TOKENS_VECTOR not in vectors:
        names = sorted(vectors) if isinstance(vectors, Mapping) else "one unnamed vector"
        raise ValueError(f"{where}: expected named vectors {FDE_VECTOR!r} and {TOKENS_VECTOR!r}, has {names}")
    fde, tokens = vectors[FDE_VECTOR], vectors[TOKENS_VECTOR]
    if fde.size != config.output_dimension:
        raise ValueError(f"{where}: vector {FDE_VECTOR!r} has size {fde.size}, the config's FDEs have "
                         f"{config.output_dimension}")
    if tokens.size != config.dimension:
        raise ValueError(f"{where}: vector {TOKENS_VECTOR!r} has size {tokens.size}, the config's tokens have "
                         f"{config.dimension} dimensions")
    models = _models()
    mv = tokens.multivector_config
    if mv is None or mv.comparator != models.MultiVectorComparator.MAX_SIM:
        raise ValueError(f"{where}: vector {TOKENS_VECTOR!r} is not a MAX_SIM multivector")
    raw = (getattr(info.config, "metadata", None) or {}).get(_META_KEY)
    if raw is None:
        raise ValueError(f"{where}: no muvera header in the collection metadata (not written by to_qdrant)")
    header = parse_header(raw, where)
    check_header(header, config, where)
    return header


def _create(client: Any, collection: str, index: Any) -> None:
    models = _models()
    header = header_of(index)
    client.create_collection(
        collection,
        vectors_config={
            FDE_VECTOR: models.VectorParams(size=index.config.output_dimension, distance=models.Distance.DOT),
            TOKENS_VECTOR: models.VectorParams(
                size=index.config.dimension, distance=models.Distance.DOT,
                multivector_config=models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM),
                hnsw_config=models.HnswConfigDiff(m=0)),
        },
        metadata={_META_KEY: header})


def _existing(client: Any, collection: str, pids: List[Any]) -> List[Any]:
    found = client.retrieve(collection, ids=pids, with_payload=["muvera_id"], with_vectors=False)
    return [p.payload.get("muvera_id", p.id) if p.payload else p.id for p in found]


def to_qdrant(index: Any, client: Any, collection: str, *, batch_size: int = 64, overwrite: bool = False) -> int:
    """Write the live documents of ``index`` into a Qdrant collection (created if missing).

    Parameters
    ----------
    index : MuveraIndex
    client : qdrant_client.QdrantClient
        Any client: embedded (``QdrantClient(":memory:")``, ``QdrantClient(path=...)``) or a server.
    collection : str
        Created with the FDE and multivector layout when missing; otherwise appended to after
        checking its vector sizes and FDE config against the index.
    batch_size : int, default 64
        Points per upsert request.
    overwrite : bool, default False
        When appending, replace points whose ids are already in the collection (default:
        refuse, before anything is written).

    Returns
    -------
    int
        Points written.

    Raises
    ------
    TypeError
        Not a MuveraIndex / QdrantClient, a bad collection name or batch size.
    ConnectionError
        Qdrant cannot be reached.
    ValueError
        The existing collection's vectors, FDE config or id kind disagree with the index, or
        (``overwrite=False``) some ids are already in it. Nothing is written then.
    ExportError
        An upsert failed part way through an append: ``written`` lists the ids that were
        written. A collection this call created is deleted again on any failure (the error
        is an ExportError with ``written == []``), so no partial new collection is left.
    """
    check_index(index)
    _check_client(client)
    collection = _check_name(collection)
    batch_size = positive_int(batch_size, "batch_size")
    if not isinstance(overwrite, (bool, np.bool_)):
        raise TypeError(f"overwrite: expected a bool, got {type(overwrite).__name__}")
    models = _models()
    created = not _reach(client, collection)
    if created:
        _create(client, collection, index)
    else:
        header = _collection_header(client, collection, index.config)
        if index.id_kind is not None and header.get("id_kind") not in (None, index.id_kind):
            raise ValueError(f"collection {collection!r}: holds {header['id_kind']} ids, the index has "
                             f"{index.id_kind} ids")
        if not overwrite and len(index):
            clash: List[Any] = []
            ids = index.ids
            for s in range(0, len(ids), 1024):
                clash += _existing(client, collection, [point_id(x) for x in ids[s: s + 1024]])
                if len(clash) >= 10:
                    break
            if clash:
                raise ValueError(f"collection {collection!r}: ids already there: {clash[:10]} "
                                 "(pass overwrite=True to replace them)")
        if header.get("id_kind") is None and index.id_kind is not None:  # first ids: record their kind
            meta = dict(header, id_kind=index.id_kind)
            client.update_collection(collection, metadata={_META_KEY: meta})
    written: List[Any] = []
    try:
        for batch in export_batches(index, batch_size):
            points = models.Batch(
                ids=[point_id(x) for x in batch.ids],
                vectors={FDE_VECTOR: batch.fdes.tolist(),
                         TOKENS_VECTOR: [t.astype(np.float32).tolist() for t in batch.split_tokens()]},
                payloads=[{"muvera_id": x, "metadata": m} for x, m in zip(batch.ids, batch.metadata)])
            client.upsert(collection, points=points, wait=True)
            written += batch.ids
    except BaseException as exc:
        if created:
            try:
                client.delete_collection(collection)
                fate = "the new collection was deleted"
            except Exception as cleanup:  # noqa: BLE001
                fate = f"deleting the new collection failed too ({type(cleanup).__name__}: {cleanup})"
            if not isinstance(exc, Exception):
                raise
            raise ExportError(f"qdrant: export to new collection {collection!r} failed after {len(written)} of "
                              f"{len(index)} points ({type(exc).__name__}: {exc}); {fate}", []) from exc
        if not isinstance(exc, Exception):
            raise
        raise ExportError(f"qdrant: append to collection {collection!r} failed after {len(written)} of "
                          f"{len(index)} points ({type(exc).__name__}: {exc}); the points of the ids in "
                          f"ExportError.written were written, the others were not", written) from exc
    return len(written)


def _as_filter(where: Any) -> Any:
    """A qdrant ``Filter`` as given, or one built from ``{key: value}`` equality matches on the
    payload's ``metadata`` (a list/tuple/set value matches any of its values)."""
    models = _models()
    if where is None or isinstance(where, models.Filter):
        return where
    if not isinstance(where, Mapping) or not where:
        raise TypeError(f"where: expected a non-empty dict of metadata key -> value, or a qdrant Filter, "
                        f"got {type(where).__name__}")
    must = []
    for key, value in where.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"where: keys must be metadata field names, got {key!r}")
        if isinstance(value, (list, tuple, set, frozenset)):
            match = models.MatchAny(any=list(value))
        elif isinstance(value, (str, int, bool)) and not isinstance(value, float):
            match = models.MatchValue(value=value)
        else:
            raise TypeError(f"where[{key!r}]: expected a str, int or bool (or a list of them), got "
                            f"{type(value).__name__}")
        must.append(models.FieldCondition(key=f"metadata.{key}", match=match))
    return models.Filter(must=must)


class QdrantSearcher:
    """MUVERA search inside Qdrant: FDE prefetch + MAX_SIM on the token multivector.

    Parameters
    ----------
    client : qdrant_client.QdrantClient
    collection : str
        A collection written by :func:`to_qdrant`.
    config : FDEConfig
        The index's config; queries are encoded into FDEs with it, in query mode. Checked
        against the collection's.
    num_threads : int, optional
        Threads for encoding query FDEs.

    Raises
    ------
    ConnectionError
        Qdrant cannot be reached.
    ValueError
        No such collection, or its vectors / FDE config disagree with ``config``.
    """

    def __init__(self, client: Any, collection: str, config: FDEConfig, *, num_threads: Optional[int] = None):
        _check_client(client)
        self.collection = _check_name(collection)
        self._encode = QueryEncoder(config, num_threads)
        self.client = client
        if not _reach(client, collection):
            raise ValueError(f"collection {collection!r}: not found in this Qdrant")
        self._header = _collection_header(client, collection, config)

    @property
    def config(self) -> FDEConfig:
        """The FDE config queries are encoded with."""
        return self._encode.config

    def __len__(self) -> int:
        return int(self.client.count(self.collection, exact=True).count)

    def search(self, queries: Any, k: int = 10, candidates: int = 100, *, where: Any = None,
               lengths: Any = None, offsets: Any = None, mask: Any = None) -> Tuple[np.ndarray, np.ndarray]:
        """Top-``k`` documents per query: ``candidates`` FDE neighbours, reranked by MAX_SIM.

        Parameters
        ----------
        queries : any batch form :meth:`muvera.MuveraIndex.search` takes
        k : int, default 10
        candidates : int, default 100
            Points prefetched on the FDE (>= k).
        where : dict or qdrant_client.models.Filter, optional
            Restrict candidates: ``{"lang": "en", "year": [2020, 2021]}`` matches the payload's
            ``metadata`` fields (equality; a list matches any of its values), or any Qdrant
            ``Filter`` as is (keys are then full payload paths, e.g. ``"metadata.lang"``).
        lengths, offsets, mask : optional
            Item boundaries for packed / padded queries.

        Returns
        -------
        ids, scores
            As :meth:`muvera.MuveraIndex.search`: ``(nq, min(k, points))``, ``int64`` padded with
            ``-1`` or ``object`` padded with None (str ids), float32 scores with ``-inf`` padding.
        """
        k, c, _ = check_search_args(k, positive_int(candidates, "candidates"))
        flt = _as_filter(where)
        models = _models()
        tokens, off, fdes = self._encode(queries, lengths, offsets, mask)
        requests = [models.QueryRequest(
            prefetch=models.Prefetch(query=fdes[i].tolist(), using=FDE_VECTOR, limit=c, filter=flt),
            query=tokens[off[i]: off[i + 1]].tolist(), using=TOKENS_VECTOR, limit=k,
            with_payload=["muvera_id"]) for i in range(len(off) - 1)]
        try:
            answers = self.client.query_batch_points(self.collection, requests=requests)
            width = min(k, max(1, len(self)))
        except Exception as exc:  # noqa: BLE001
            if not _reach(self.client, self.collection):
                raise ValueError(f"collection {self.collection!r}: no longer exists") from exc
            raise
        if self._header.get("id_kind") is None:  # made from an empty index: the first append sets it
            self._header = _collection_header(self.client, self.collection, self.config)
        kind = self._header.get("id_kind")
        hits = [[((p.payload or {}).get("muvera_id", p.id) if kind == "str" else int(p.id), float(p.score))
                 for p in answer.points] for answer in answers]
        return results(hits, width, kind)

    def __repr__(self) -> str:
        return f"QdrantSearcher(collection={self.collection!r}, fde_dimension={self.config.output_dimension})"
