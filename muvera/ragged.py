"""Ragged arrays: many variable-length items packed row-major in one array, with ``offsets``
(item ``i`` owns rows ``offsets[i]:offsets[i+1]``) or ``lengths``. The helpers every layer
shares, so that the idiom is written once."""

from __future__ import annotations

from typing import Tuple

import numpy as np

__all__ = ["offsets_of", "span_index", "gather"]


def offsets_of(lengths: np.ndarray) -> np.ndarray:
    """``(n + 1,)`` int64 offsets of items with these lengths: ``[0, l0, l0 + l1, ...]``."""
    off = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=off[1:])
    return off


def span_index(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Row indices that gather the spans ``[starts[i], starts[i] + lengths[i])`` back to back, in
    one vectorised expression (no per-item loop)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    packed = offsets_of(lengths)
    return np.repeat(np.asarray(starts, dtype=np.int64) - packed[:-1], lengths) + np.arange(
        int(packed[-1]), dtype=np.int64)


def gather(rows_of: np.ndarray, offsets: np.ndarray, items: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """The rows of items ``items`` of a packed array (``rows_of``, ``offsets``), packed again:
    ``(rows, lengths)``."""
    items = np.asarray(items, dtype=np.int64)
    lengths = (offsets[items + 1] - offsets[items]).astype(np.int64)
    return rows_of[span_index(offsets[items], lengths)], lengths
