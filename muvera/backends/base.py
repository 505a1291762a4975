"""The backend interface: maximum-inner-product search over FDE vectors (faiss's ``Index`` shape).

Every backend numbers vectors sequentially from 0 in the order they were added (the index's row
numbers), owns its state and its files, and takes an *allowed-rows bitmap* at search time so that
tombstones and filters never cost an over-fetch in the caller.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any, ClassVar, Dict, Mapping, Optional, Tuple

import numpy as np

__all__ = ["Backend", "topk", "as_allowed", "as_queries", "Entries", "AllowedRows"]

#: ``{file name: {"bytes": int, "sha256": str}}`` -- what ``save`` returns and ``load`` receives.
Entries = Dict[str, Dict[str, Any]]


def topk(scores: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Row-wise top-k of a ``(nq, n)`` score matrix: ``(cols int64, scores float32)``, best first.

    Ties are broken by the smaller column; ``-1`` / ``-inf`` pad rows when ``k > n``. Entries
    scored ``-inf`` (masked out) are returned as padding too.
    """
    nq, n = scores.shape
    rows = np.full((nq, k), -1, dtype=np.int64)
    out = np.full((nq, k), -np.inf, dtype=np.float32)
    take = min(k, n)
    if take == 0:
        return rows, out
    if take < n:
        part = np.argpartition(-scores, take - 1, axis=1)[:, :take]
    else:
        part = np.broadcast_to(np.arange(n), (nq, n))
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -part_scores), axis=1)  # score desc, then column asc
    rows[:, :take] = np.take_along_axis(part, order, axis=1)
    out[:, :take] = np.take_along_axis(part_scores, order, axis=1)
    rows[out == -np.inf] = -1
    return rows, out


def as_queries(queries: Any, dimension: Optional[int]) -> np.ndarray:
    """Queries as a C-contiguous ``(nq, D)`` float32 array; ValueError naming ``queries`` for
    another shape (a shape check only: the index hands over FDEs of checked tokens)."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    if q.ndim != 2 or (dimension is not None and q.shape[1] != dimension):
        raise ValueError(f"queries: expected an (nq, {dimension}) array, got shape {q.shape}")
    return q


class AllowedRows:
    """The rows a search may return, in the form the caller has: a sorted row list (a filter)
    or a bitmap (tombstones). The other form, the count and faiss's packed bits are made on
    demand, once, so a search restricted to a few rows never touches a per-row array.

    Parameters
    ----------
    ntotal : int
        Rows in the index (the bitmap's length).
    rows : (m,) int64, optional
        Sorted, unique allowed rows.
    bitmap : (ntotal,) bool, optional
        One flag per row (a view is kept, not copied).
    count : int, optional
        Allowed rows, when the caller knows it without counting.
    """

    __slots__ = ("ntotal", "_rows", "_bitmap", "_count", "_packed")

    def __init__(self, ntotal: int, *, rows: Optional[np.ndarray] = None, bitmap: Optional[np.ndarray] = None,
                 count: Optional[int] = None, packed: Optional[np.ndarray] = None):
        if (rows is None) == (bitmap is None):
            raise ValueError("AllowedRows: give rows or bitmap")
        self.ntotal = int(ntotal)
        self._rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        self._bitmap = bitmap
        self._count = len(self._rows) if self._rows is not None else count
        self._packed = packed

    @property
    def count(self) -> int:
        """How many rows are allowed."""
        if self._count is None:
            self._count = int(np.count_nonzero(self._bitmap))
        return self._count

    @property
    def has_rows(self) -> bool:
        """True when the row list is at hand (no per-row pass needed to list them)."""
        return self._rows is not None

    @property
    def rows(self) -> np.ndarray:
        """Sorted allowed rows (int64)."""
        if self._rows is None:
            self._rows = np.flatnonzero(self._bitmap)
        return self._rows

    @property
    def bitmap(self) -> np.ndarray:
        """``(ntotal,)`` bool flags."""
        if self._bitmap is None:
            mask = np.zeros(self.ntotal, dtype=bool)
            mask[self._rows] = True
            self._bitmap = mask
        return self._bitmap

    @property
    def packed(self) -> np.ndarray:
        """The bitmap as little-endian packed bits (faiss's ``IDSelectorBitmap``)."""
        if self._packed is None:
            self._packed = np.packbits(self.bitmap, bitorder="little")
        return self._packed


def as_allowed(allowed: Any, ntotal: int) -> Optional[np.ndarray]:
    """Normalise an allowed-rows bitmap: None (every row) or a ``(ntotal,)`` bool array
    (an :class:`AllowedRows` gives its bitmap)."""
    if allowed is None:
        return None
    if isinstance(allowed, AllowedRows):
        if allowed.ntotal != ntotal:
            raise ValueError(f"allowed: expected rows of a {ntotal}-row index, got {allowed.ntotal}")
        return allowed.bitmap
    arr = np.asarray(allowed)
    if arr.shape != (ntotal,) or arr.dtype.kind not in "bu":
        raise ValueError(f"allowed: expected a ({ntotal},) bool/uint8 bitmap, got {arr.dtype} {arr.shape}")
    return arr.astype(bool, copy=False)


def as_allowed_rows(allowed: Any, ntotal: int) -> Optional[AllowedRows]:
    """``allowed`` (None, a bitmap or an :class:`AllowedRows`) as an :class:`AllowedRows`."""
    if allowed is None or isinstance(allowed, AllowedRows):
        if allowed is not None and allowed.ntotal != ntotal:
            raise ValueError(f"allowed: expected rows of a {ntotal}-row index, got {allowed.ntotal}")
        return allowed
    return AllowedRows(ntotal, bitmap=as_allowed(allowed, ntotal))


class Backend(abc.ABC):
    """Maximum-inner-product search over float32 vectors, rows numbered 0.. in add order.

    Subclasses register a spec prefix with :func:`muvera.backends.register_backend`; an index
    only ever talks to this interface. Searches may run concurrently from several threads;
    ``add``/``train``/``reset``/``load`` must not run concurrently with anything else
    (:class:`muvera.MuveraIndex` guarantees this).
    """

    #: The spec prefix this class is registered under (``"exact"``, ``"faiss"``, ...).
    kind: ClassVar[str] = ""

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """The spec string :func:`~muvera.backends.make_backend` rebuilds this backend from."""

    @property
    @abc.abstractmethod
    def dimension(self) -> Optional[int]:
        """Vector dimension (None until known)."""

    @property
    @abc.abstractmethod
    def ntotal(self) -> int:
        """Number of vectors added."""

    @property
    @abc.abstractmethod
    def nbytes(self) -> int:
        """Estimated memory held, in bytes."""

    @property
    def needs_training(self) -> bool:
        """Whether :meth:`train` must run (the first :meth:`add` does it) before vectors are held."""
        return False

    @property
    def is_trained(self) -> bool:
        """Whether the backend is ready to take vectors."""
        return True

    @property
    def add_chunk(self) -> int:
        """Preferred vectors per :meth:`add` call (callers encode FDEs in chunks of this size)."""
        return 32_768

    @property
    def can_reconstruct(self) -> bool:
        """Whether :meth:`reconstruct` returns the stored vectors (exactly or as coded)."""
        return False

    @property
    def lossless(self) -> bool:
        """Whether :meth:`reconstruct` returns the added vectors bit for bit (rebuilds may copy
        them instead of re-encoding)."""
        return False

    def replacement(self, n_after: int) -> Optional["Backend"]:
        """An empty backend that should replace this one before the index grows to ``n_after``
        vectors (the index refills it with every current row, then adds the new ones), or None
        to keep this one. ``auto`` uses it to move to a scalable index as the corpus grows."""
        return None

    def train(self, vectors: np.ndarray) -> None:  # noqa: B027 (optional hook)
        """Learn any quantiser from a sample; a no-op for backends that need none."""

    @abc.abstractmethod
    def add(self, vectors: np.ndarray) -> None:
        """Append ``(n, D)`` float32 vectors; they get rows ``ntotal .. ntotal + n - 1``."""

    @abc.abstractmethod
    def search(self, queries: np.ndarray, k: int, *, params: Optional[Mapping[str, Any]] = None,
               allowed: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
        """Top-``k`` rows by inner product: ``(rows (nq, k) int64, scores (nq, k) float32)``.

        Parameters
        ----------
        queries : (nq, D) float32, C-contiguous (the index passes them checked)
        k : int
        params : mapping, optional
            Backend search parameters (e.g. ``{"efSearch": 128}``).
        allowed : AllowedRows or (ntotal,) bool array, optional
            Only these rows may be returned (the index passes :class:`AllowedRows`; see
            :func:`as_allowed_rows`).

        Returns
        -------
        rows, scores : (nq, k) int64, (nq, k) float32
            Best first, ``-1`` (score ``-inf``) where fewer than ``k`` qualified.
        """

    @property
    def refines(self) -> bool:
        """Whether searches re-score coarse candidates with finer codes of their own (a faiss
        ``Refine`` stage); the index then does not prune them again."""
        return False

    def check_params(self, params: Optional[Mapping[str, Any]]) -> None:
        """Raise ValueError for search parameters this backend does not take."""
        if params:
            raise ValueError(f"params: the {self.name!r} backend takes no search parameters, got {dict(params)}")

    def reconstruct(self, rows: np.ndarray) -> np.ndarray:
        """The stored vectors of ``rows`` as ``(len(rows), D)`` float32 (decoded where coded)."""
        raise NotImplementedError(f"{self.name}: cannot reconstruct vectors")

    @abc.abstractmethod
    def reset(self) -> None:
        """Remove every vector (training is kept)."""

    def truncate(self, n: int) -> None:
        """Drop the vectors of rows ``n`` and above: the rollback of an add that failed part way.
        Backends that cannot raise NotImplementedError; the index then rebuilds them."""
        raise NotImplementedError(f"{self.name}: cannot drop trailing rows")

    @abc.abstractmethod
    def empty_copy(self) -> "Backend":
        """A new, empty backend of the same kind (keeping any training), for rebuilds."""

    @abc.abstractmethod
    def save(self, directory: Path) -> Entries:
        """Write this backend's files into ``directory``; returns their manifest entries.

        File names start with ``backend`` or ``fdes`` so they never clash with other parts.
        """

    @abc.abstractmethod
    def load(self, directory: Path, entries: Entries, mmap: bool) -> "Backend":
        """Replace the content by the files ``save`` wrote (already checked against ``entries``)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, ntotal={self.ntotal}, dimension={self.dimension})"
