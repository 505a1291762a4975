"""The exact backend: brute-force inner products with NumPy BLAS, in query chunks."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Tuple

import numpy as np

from ..durable import write_npy
from ..buffers import Growable
from .._validate import positive_int
from .base import Backend, Entries, as_allowed_rows, as_queries, topk

__all__ = ["ExactBackend"]

_CHUNK_FLOATS = 1 << 24  # query-chunk score matrix bound: 64 MiB of float32
# A filter allowing at most 1/16 of the rows is scored on a gathered copy of those rows; above
# that the copy costs more than scanning everything and masking (bench/bench_filters.py).
_GATHER_FRACTION = 16
_FILE = "fdes.npy"


class ExactBackend(Backend):
    """Exact MIPS: float32 matmul (BLAS) in query chunks, then an argpartition top-k.

    Parameters
    ----------
    dimension : int, optional
        Fixed on the first ``add`` if not given.

    Notes
    -----
    A restrictive ``allowed`` bitmap (at most 1/16 of the rows) is scored on those rows only;
    otherwise the disallowed scores are masked.
    """

    kind = "exact"

    def __init__(self, dimension: Optional[int] = None):
        self._dim = None if dimension is None else int(dimension)
        self._vecs: Optional[Growable] = None if dimension is None else Growable((self._dim,), np.float32)

    @classmethod
    def from_spec(cls, rest: str, dimension: Optional[int]) -> "ExactBackend":
        if rest:
            raise ValueError(f"backend: 'exact' takes no options, got 'exact:{rest}'")
        return cls(dimension)

    @property
    def name(self) -> str:
        return "exact"

    @property
    def dimension(self) -> Optional[int]:
        return self._dim

    @property
    def ntotal(self) -> int:
        return 0 if self._vecs is None else len(self._vecs)

    @property
    def nbytes(self) -> int:
        return 0 if self._vecs is None else self._vecs.nbytes

    @property
    def can_reconstruct(self) -> bool:
        return True

    @property
    def lossless(self) -> bool:
        return True

    @property
    def vectors(self) -> np.ndarray:
        """``(ntotal, D)`` float32 view of the stored vectors (do not write to it)."""
        if self._vecs is None:
            return np.zeros((0, self._dim or 0), dtype=np.float32)
        return self._vecs.view

    def add(self, vectors: np.ndarray) -> None:
        arr = np.ascontiguousarray(vectors, dtype=np.float32)
        if arr.ndim != 2 or (self._dim is not None and arr.shape[1] != self._dim):
            raise ValueError(f"vectors: expected (n, {self._dim}) float32, got shape {arr.shape}")
        # Not scanned for NaN: the index only hands over FDEs of checked, finite tokens.
        if self._vecs is None:
            self._dim = arr.shape[1]
            self._vecs = Growable((self._dim,), np.float32)
        self._vecs.extend(arr)

    def truncate(self, n: int) -> None:
        if self._vecs is not None:
            self._vecs.truncate(n)

    def search(self, queries: np.ndarray, k: int, *, params: Optional[Mapping[str, Any]] = None,
               allowed: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
        self.check_params(params)
        k = positive_int(k, "k")
        queries = as_queries(queries, self._dim)
        base = self.vectors  # snapshot: a concurrent add never changes this view
        n = len(base)
        allow = as_allowed_rows(allowed, n)
        rows = np.full((len(queries), k), -1, dtype=np.int64)
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        if n == 0:
            return rows, scores
        subset, mask = None, None
        if allow is not None:
            if allow.count == 0:
                return rows, scores
            if _GATHER_FRACTION * allow.count <= n:
                subset = allow.rows
                base = base[subset]  # a restrictive filter: gathering its rows beats a full scan
            else:
                mask = allow.bitmap
        step = max(1, _CHUNK_FLOATS // len(base))
        for i in range(0, len(queries), step):
            s = queries[i: i + step] @ base.T
            if mask is not None:
                s[:, ~mask] = -np.inf
            rows[i: i + step], scores[i: i + step] = topk(s, k)
        if subset is not None:
            valid = rows >= 0
            rows[valid] = subset[rows[valid]]
        return rows, scores

    def reconstruct(self, rows: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(self.vectors[np.asarray(rows, dtype=np.int64)])

    def reset(self) -> None:
        if self._vecs is not None:
            self._vecs = Growable((self._dim,), np.float32)

    def empty_copy(self) -> "ExactBackend":
        return ExactBackend(self._dim)

    def save(self, directory: Path) -> Entries:
        return {_FILE: write_npy(Path(directory) / _FILE, self.vectors)}

    def load(self, directory: Path, entries: Entries, mmap: bool) -> "ExactBackend":
        from ..index_format import load_npy  # noqa: PLC0415 (format helpers import backends)

        if _FILE not in entries:
            raise ValueError(f"manifest.json: the exact backend's {_FILE} is not listed")
        arr = load_npy(Path(directory) / _FILE, mmap)
        return self.set_vectors(arr)

    def set_vectors(self, arr: np.ndarray) -> "ExactBackend":
        """Use ``arr`` ``(n, D)`` float32 (C-contiguous, may be a read-only memory map) as content."""
        if arr.ndim != 2 or arr.dtype != np.float32 or not arr.flags.c_contiguous:
            raise ValueError(f"{_FILE}: expected a C-contiguous (n, D) float32 matrix, got "
                             f"{arr.dtype} {arr.shape}")
        if self._dim is not None and arr.shape[1] != self._dim:
            raise ValueError(f"{_FILE}: expected {self._dim} columns, got {arr.shape[1]}")
        self._dim = arr.shape[1]
        self._vecs = Growable((self._dim,), np.float32, arr)
        return self
