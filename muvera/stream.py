"""Streams of document batches: what :meth:`muvera.MuveraIndex.add` accepts besides one batch.

A stream is an iterator or generator (any iterable that is not a list, tuple, array, tensor,
mapping or string). Each item it yields is one batch, in any of these forms:

* what ``add`` takes as ``documents`` (a list of ``(n_i, d)`` arrays, a padded ``(n, L, d)`` array);
* ``(tokens, lengths)`` -- packed ``(T, d)`` tokens and ``(n,)`` integer lengths;
* a dict with ``"tokens"`` (or ``"documents"``) and optionally ``"lengths"``, ``"offsets"``,
  ``"mask"``, ``"ids"`` and ``"metadata"`` (one dict per document).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, List, Optional

import numpy as np

from .batch import is_torch

__all__ = ["is_stream", "Batch", "as_batch"]

_DICT_KEYS = {"tokens", "documents", "lengths", "offsets", "mask", "ids", "metadata"}


def is_stream(documents: Any) -> bool:
    """Whether ``documents`` is a stream of batches rather than one batch."""
    if isinstance(documents, (list, tuple, str, bytes, Mapping, np.ndarray)) or is_torch(documents):
        return False
    return isinstance(documents, (Iterator, Iterable)) and not hasattr(documents, "__array__")


@dataclass
class Batch:
    """One batch of a stream, not yet validated (``MuveraIndex.add`` checks it)."""

    documents: Any
    lengths: Any = None
    offsets: Any = None
    mask: Any = None
    ids: Optional[List[Any]] = None
    metadata: Optional[List[Any]] = None


def _is_lengths(x: Any) -> bool:
    if is_torch(x):
        return x.dim() == 1 and not x.is_floating_point() and not x.is_complex()
    arr = np.asarray(x)
    return arr.ndim == 1 and arr.dtype.kind in "iu"


def as_batch(item: Any, position: int) -> Batch:
    """Interpret one yielded item (see the module docstring); TypeError naming the batch."""
    where = f"documents: batch {position}"
    if isinstance(item, Mapping):
        unknown = set(item) - _DICT_KEYS
        if unknown:
            raise TypeError(f"{where}: unknown keys {sorted(map(str, unknown))} (expected some of "
                            f"{sorted(_DICT_KEYS)})")
        if ("tokens" in item) == ("documents" in item):
            raise TypeError(f"{where}: a dict batch needs exactly one of 'tokens' or 'documents'")
        docs = item["tokens"] if "tokens" in item else item["documents"]
        ids = item.get("ids")
        if ids is not None and (isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable)):
            raise TypeError(f"{where}: 'ids' must be a sequence of ids (one per document), got "
                            f"{type(ids).__name__} {ids!r:.40}")
        return Batch(docs, item.get("lengths"), item.get("offsets"), item.get("mask"),
                     None if ids is None else list(ids), item.get("metadata"))
    if (isinstance(item, tuple) and len(item) == 2 and getattr(item[0], "ndim", 0) == 2
            and _is_lengths(item[1])):
        return Batch(item[0], lengths=item[1])
    if isinstance(item, (list, tuple, np.ndarray)) or is_torch(item):
        return Batch(item)
    raise TypeError(f"{where}: expected a list of (n_i, d) arrays, a padded (n, L, d) array, "
                    f"(tokens, lengths) or a dict with 'tokens', got {type(item).__name__}")
