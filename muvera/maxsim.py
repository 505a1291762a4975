"""Chamfer (MaxSim) similarity: the exact late-interaction score used to rerank candidates.

``Chamfer(Q, D) = sum over query tokens q of max over document tokens t of <q, t>``.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from . import _core
from .batch import as_matrix
from .ragged import offsets_of
from .store import pack_tokens

__all__ = ["chamfer", "chamfer_matrix", "rerank", "chamfer_reference"]

_TOKEN_DTYPES = (np.float32, np.float16)


def chamfer_reference(query: np.ndarray, document: np.ndarray) -> float:
    """Plain NumPy Chamfer similarity (float64 accumulation): the oracle for the C++ kernel."""
    q = np.asarray(query, dtype=np.float64)
    d = np.asarray(document, dtype=np.float64)
    if len(q) == 0:
        return 0.0
    return float((q @ d.T).max(axis=1).sum())


def _packed_float32(batch: Any, dimension: int, name: str, lengths: Any = None, offsets: Any = None,
                    mask: Any = None) -> Tuple[np.ndarray, np.ndarray]:
    """Any batch form (lists, packed + lengths/offsets, padded + mask; NumPy or torch, bfloat16
    and ``requires_grad`` tensors included) -> (packed float32 tokens, offsets), finite."""
    tokens, lens = pack_tokens(batch, dimension, np.float32, lengths=lengths, offsets=offsets, mask=mask,
                               name=name, allow_empty_items=True)
    return tokens, offsets_of(lens)


def _check_finite(x: np.ndarray, name: str) -> None:
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: contains NaN or Inf values")


def _finite_scores(scores: np.ndarray) -> np.ndarray:
    if not np.isfinite(scores).all():
        raise ValueError("scores overflow float32 (token values too large for their products to be "
                         "represented); rescale the vectors")
    return scores


def rerank(query_tokens: np.ndarray, query_offsets: np.ndarray, doc_tokens: np.ndarray,
           doc_offsets: np.ndarray, k: int, candidates: Optional[np.ndarray] = None,
           alive: Optional[np.ndarray] = None, num_threads: int = 0,
           isa: str = "") -> Tuple[np.ndarray, np.ndarray]:
    """Exact Chamfer top-k over candidate documents of a token store (C++, threads, GIL released).

    Parameters
    ----------
    query_tokens : (Tq, d) float32
        All queries' tokens, packed.
    query_offsets : (n_queries + 1,) int64
    doc_tokens : (T, d) float32 or float16
        The token store, documents packed row-major.
    doc_offsets : (N + 1,) int64
        Document ``i`` owns rows ``doc_offsets[i]:doc_offsets[i+1]``.
    k : int
        Results per query.
    candidates : (n_queries, C) int64, optional
        Document rows to score per query; ``-1`` entries are skipped. Default: every document.
    alive : (N,) bool or uint8, optional
        Documents with a false entry are never returned (tombstones, filters).
    num_threads : int
        0 = all cores.

    Returns
    -------
    rows : (n_queries, k) int64
        Best document rows, best first; ``-1`` where fewer than k documents qualified.
    scores : (n_queries, k) float32
        Their Chamfer scores; ``-inf`` for ``-1`` rows.
    """
    qt = np.ascontiguousarray(query_tokens, dtype=np.float32)
    _check_finite(qt, "query_tokens")  # doc_tokens: a TokenStore only holds validated tokens
    dt = doc_tokens
    if dt.dtype not in _TOKEN_DTYPES:
        raise TypeError(f"doc_tokens: expected float32 or float16, got {dt.dtype}")
    cand = None if candidates is None else np.ascontiguousarray(candidates, dtype=np.int64)
    if cand is not None and cand.ndim == 2 and cand.shape[1] > 1:
        srt = np.sort(cand, axis=1)
        if ((srt[:, 1:] == srt[:, :-1]) & (srt[:, 1:] >= 0)).any():
            raise ValueError("candidates: a document row repeats within a query's candidates")
    alv = None if alive is None else np.ascontiguousarray(alive, dtype=np.uint8)
    return _core.chamfer_topk(qt, np.ascontiguousarray(query_offsets, dtype=np.int64), dt,
                              np.ascontiguousarray(doc_offsets, dtype=np.int64), cand, alv, int(k),
                              int(num_threads), isa)


def chamfer(query: Any, document: Any) -> float:
    """Chamfer similarity of one query and one document, each an ``(n_tokens, d)`` array
    (NumPy or torch, float16/32/64 or bfloat16, ``requires_grad`` tensors too).

    Raises ValueError for an empty document (the max over no tokens is undefined), NaN/Inf, or
    values so large that the score overflows float32.
    """
    q, _ = as_matrix(query, _dim_of(query, "query"), "query")
    d, _ = as_matrix(document, q.shape[1], "document")
    if len(d) == 0:
        raise ValueError("document: expected at least one token")
    try:
        scores = chamfer_matrix([query], [document])
    except ValueError as exc:  # name the single arguments, not batch items
        raise ValueError(str(exc).replace("queries[0]", "query").replace("documents[0]", "document")) from None
    return float(scores[0, 0])


def chamfer_matrix(queries: Any, documents: Any, *, query_lengths: Any = None, query_offsets: Any = None,
                   query_mask: Any = None, doc_lengths: Any = None, doc_offsets: Any = None,
                   doc_mask: Any = None, num_threads: int = 0) -> np.ndarray:
    """All-pairs Chamfer similarity: ``(n_queries, n_documents)`` float32.

    Both batches take any form the encoder takes: lists of ``(n_i, d)`` arrays, packed ``(T, d)``
    arrays with ``*_lengths`` / ``*_offsets``, padded ``(n, L, d)`` arrays with ``*_mask``; NumPy
    or torch (CPU; bfloat16 and ``requires_grad`` tensors are read as they are).

    Raises
    ------
    ValueError
        Mismatched dimensions, a document with no tokens, NaN/Inf, or scores overflowing float32.
    """
    qtok, qoff = _packed_float32(queries, _dim_of(queries, "queries"), "queries", query_lengths,
                                 query_offsets, query_mask)
    dtok, doff = _packed_float32(documents, qtok.shape[1], "documents", doc_lengths, doc_offsets, doc_mask)
    if (np.diff(doff) == 0).any():
        raise ValueError(f"documents[{int(np.argmax(np.diff(doff) == 0))}]: expected at least one token")
    n_docs = len(doff) - 1
    cand = np.broadcast_to(np.arange(n_docs, dtype=np.int64), (len(qoff) - 1, n_docs))
    return _finite_scores(_core.chamfer_scores(qtok, qoff, dtok, doff, np.ascontiguousarray(cand),
                                               int(num_threads), ""))


def _dim_of(batch: Any, name: str) -> int:
    """The token dimension of a batch in any form (its last axis)."""
    if isinstance(batch, (list, tuple)):
        if not batch:
            raise ValueError(f"{name}: expected at least one item, got an empty list")
        batch = batch[0]
    shape = tuple(batch.shape) if hasattr(batch, "shape") else np.shape(batch)
    if len(shape) < 2 and name in ("query", "document"):
        raise ValueError(f"{name}: expected a 2-D array of shape (n_tokens, d), got shape {shape}")
    return int(shape[-1]) if shape else -1
