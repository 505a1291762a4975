"""MIPS backends: maximum-inner-product search over the FDE vectors.

Every backend numbers vectors sequentially from 0 in the order they were added (the
:class:`~muvera.store.TokenStore` row numbers), returns ``-1`` / ``-inf`` padding when fewer than
``k`` vectors qualify, and cannot delete (the index keeps tombstones instead).

* :class:`ExactBackend` -- brute force with NumPy BLAS, exact.
* :class:`FaissBackend` -- any ``faiss.index_factory`` string with the inner-product metric
  (``"Flat"``, ``"HNSW32"``, ``"IVF256,Flat"``, ``"IVF1024,PQ1280x8"``, ...). faiss is imported only
  when such a backend is built.
"""

from __future__ import annotations

import abc
import os
import re
from typing import Any, Mapping, Optional, Tuple, Union

import numpy as np

from .store import _Growable

__all__ = ["Backend", "ExactBackend", "FaissBackend", "make_backend", "topk"]

PathLike = Union[str, "os.PathLike[str]"]
_CHUNK_FLOATS = 1 << 24  # query-chunk score matrix bound: 64 MiB of float32


def topk(scores: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Row-wise top-k of a ``(nq, n)`` score matrix: ``(cols int64, scores float32)``, best first.

    Ties are broken by the smaller column; ``-1`` / ``-inf`` pad rows when ``k > n``.
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
    return rows, out


def _as_vectors(x: Any, dimension: Optional[int], name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D (n, D) array, got shape {arr.shape}")
    if dimension is not None and arr.shape[1] != dimension:
        raise ValueError(f"{name}: expected {dimension} columns, got shape {arr.shape}")
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name}: expected float values, got {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: contains NaN or Inf values")
    return arr


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
        raise ValueError(f"k: expected a positive int, got {k!r}")
    return int(k)


class Backend(abc.ABC):
    """Maximum-inner-product search over float32 vectors, rows numbered 0.. in add order.

    Searches may run concurrently from several threads; ``add``/``reset``/``load`` must not run
    concurrently with anything else (:class:`muvera.MuveraIndex` guarantees this).
    """

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """The spec string :func:`make_backend` rebuilds this backend from."""

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

    @abc.abstractmethod
    def add(self, vectors: np.ndarray) -> None:
        """Append ``(n, D)`` vectors; they get rows ``ntotal .. ntotal + n - 1``."""

    @abc.abstractmethod
    def search(self, queries: np.ndarray, k: int,
               params: Optional[Mapping[str, Any]] = None) -> Tuple[np.ndarray, np.ndarray]:
        """Top-``k`` rows by inner product: ``(rows (nq, k) int64, scores (nq, k) float32)``.

        Rows are best first, ``-1`` (score ``-inf``) where fewer than k were found.
        """

    @abc.abstractmethod
    def reset(self) -> None:
        """Remove every vector (a trained faiss index keeps its training)."""

    @abc.abstractmethod
    def empty_copy(self) -> "Backend":
        """A new, empty backend of the same kind (keeping any training), for rebuilds."""

    @abc.abstractmethod
    def save(self, path: PathLike) -> None:
        """Write the backend to one file."""

    @abc.abstractmethod
    def load(self, path: PathLike) -> "Backend":
        """Replace this backend's content by the file at ``path``; returns self."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, ntotal={self.ntotal}, dimension={self.dimension})"


class ExactBackend(Backend):
    """Exact MIPS: float32 matmul (BLAS) in query chunks, then an argpartition top-k.

    Parameters
    ----------
    dimension : int, optional
        Fixed on the first ``add`` if not given.
    """

    def __init__(self, dimension: Optional[int] = None):
        self._dim = None if dimension is None else int(dimension)
        self._vecs: Optional[_Growable] = None if dimension is None else _Growable((self._dim,), np.float32)

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
    def vectors(self) -> np.ndarray:
        """``(ntotal, D)`` float32 view of the stored vectors (do not write to it)."""
        if self._vecs is None:
            return np.zeros((0, 0), dtype=np.float32)
        return self._vecs.view

    def add(self, vectors: np.ndarray) -> None:
        arr = _as_vectors(vectors, self._dim, "vectors")
        if self._vecs is None:
            self._dim = arr.shape[1]
            self._vecs = _Growable((self._dim,), np.float32)
        self._vecs.extend(arr)

    def search(self, queries: np.ndarray, k: int,
               params: Optional[Mapping[str, Any]] = None) -> Tuple[np.ndarray, np.ndarray]:
        if params:
            raise ValueError(f"params: the exact backend takes no search parameters, got {dict(params)}")
        k = _check_k(k)
        q = _as_vectors(queries, self._dim, "queries")
        base = self.vectors  # snapshot: a concurrent add never changes this view
        n = len(base)
        rows = np.full((len(q), k), -1, dtype=np.int64)
        scores = np.full((len(q), k), -np.inf, dtype=np.float32)
        if n == 0:
            return rows, scores
        step = max(1, _CHUNK_FLOATS // n)
        for i in range(0, len(q), step):
            rows[i: i + step], scores[i: i + step] = topk(q[i: i + step] @ base.T, k)
        return rows, scores

    def reset(self) -> None:
        if self._vecs is not None:
            self._vecs = _Growable((self._dim,), np.float32)

    def empty_copy(self) -> "ExactBackend":
        return ExactBackend(self._dim)

    def save(self, path: PathLike) -> None:
        np.save(path, self.vectors, allow_pickle=False)

    def load(self, path: PathLike, mmap: bool = False) -> "ExactBackend":
        """Load a ``.npy`` matrix; ``mmap=True`` maps it read-only (copied on the next add)."""
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        return self.set_vectors(arr)

    def set_vectors(self, arr: np.ndarray) -> "ExactBackend":
        """Use ``arr`` ``(n, D)`` float32 (C-contiguous, may be a read-only memory map) as content."""
        if arr.ndim != 2 or arr.dtype != np.float32 or not arr.flags.c_contiguous:
            raise ValueError(f"vectors: expected a C-contiguous (n, D) float32 matrix, got "
                             f"{arr.dtype} {arr.shape}")
        if self._dim is not None and arr.shape[1] != self._dim:
            raise ValueError(f"vectors: expected {self._dim} columns, got {arr.shape[1]}")
        self._dim = arr.shape[1]
        self._vecs = _Growable((self._dim,), np.float32, arr)
        return self


def _faiss_message(exc: Exception) -> str:
    """faiss's exception text without the C++ signature and source location."""
    lines = str(exc).strip().splitlines()
    msg = lines[-1] if lines else repr(exc)
    msg = re.sub(r"^Error in .*? at \S+:\d+: ", "", msg)
    return re.sub(r"^Error: '.*?' failed: ", "", msg)


def _no_polysemous(faiss: Any, index: Any) -> None:
    """Turn off polysemous training, which the factory enables for PQ codes.

    It only serves Hamming-filtered search (not used here) and costs seconds per sub-quantizer,
    i.e. hours for PQ1280x8.
    """
    idx = faiss.downcast_index(index)
    if hasattr(idx, "do_polysemous_training"):
        idx.do_polysemous_training = False
    pq = getattr(idx, "pq", None)
    if pq is not None and hasattr(pq, "cp"):
        # 8-d sub-quantizers converge in a few k-means rounds; faiss's 25 triples the build time.
        pq.cp.niter = 10
    for attr in ("index", "storage", "base_index"):  # PreTransform, HNSW, Refine wrappers
        inner = getattr(idx, attr, None)
        if inner is not None and hasattr(inner, "ntotal"):
            _no_polysemous(faiss, inner)


def _faiss():
    try:
        import faiss  # noqa: PLC0415 (optional dependency, imported on use)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("faiss backends need faiss: pip install faiss-cpu") from exc
    return faiss


class FaissBackend(Backend):
    """Any faiss index built by ``faiss.index_factory(D, factory, METRIC_INNER_PRODUCT)``.

    Parameters
    ----------
    factory : str
        A faiss factory string, e.g. ``"Flat"``, ``"HNSW32"``, ``"IVF256,Flat"``,
        ``"IVF1024,PQ1280x8"`` (the paper's PQ-256-8 on a 10240-d FDE: one byte per 8 dims).
    dimension : int, optional
        Vector dimension; the index is built on the first ``add`` if not given.
    train_size : int, default 25_600
        Indexes that need training are trained on the first ``add``, on at most this many of its
        vectors (a seeded random sample; 100 per centroid of a 256-centroid PQ codebook).
    seed : int, default 1234
        Seed of the training sample.

    Notes
    -----
    Search parameters go per call (thread-safe): ``search(q, k, {"efSearch": 128})`` for HNSW,
    ``{"nprobe": 16}`` for IVF. The :attr:`ef_search` / :attr:`nprobe` properties change the
    index defaults instead; do not set them while other threads search.
    """

    def __init__(self, factory: str, dimension: Optional[int] = None, *, train_size: int = 25_600,
                 seed: int = 1234):
        if not isinstance(factory, str) or not factory.strip():
            raise ValueError(f"factory: expected a faiss factory string, got {factory!r}")
        if train_size < 1:
            raise ValueError(f"train_size: expected a positive int, got {train_size!r}")
        self._factory = factory.strip()
        self._train_size = int(train_size)
        self._seed = int(seed)
        self._dim: Optional[int] = None
        self._index: Any = None
        if dimension is not None:
            self._dim = int(dimension)
            self._index = self._build(self._dim)

    def _build(self, dimension: int) -> Any:
        faiss = _faiss()
        try:
            index = faiss.index_factory(dimension, self._factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as exc:
            raise ValueError(f"factory: faiss cannot build {self._factory!r} for dimension "
                             f"{dimension}: {_faiss_message(exc)}") from None
        _no_polysemous(faiss, index)
        return index

    @property
    def name(self) -> str:
        return f"faiss:{self._factory}"

    @property
    def factory(self) -> str:
        """The faiss factory string."""
        return self._factory

    @property
    def index(self) -> Any:
        """The underlying faiss index (None before the dimension is known)."""
        return self._index

    @property
    def dimension(self) -> Optional[int]:
        return self._dim

    @property
    def ntotal(self) -> int:
        return 0 if self._index is None else int(self._index.ntotal)

    @property
    def is_trained(self) -> bool:
        """Whether the index is trained (always True for Flat/HNSW-Flat)."""
        return self._index is not None and bool(self._index.is_trained)

    @property
    def nbytes(self) -> int:
        if self._index is None:
            return 0
        faiss = _faiss()
        idx = faiss.downcast_index(self._index)
        n, d = self.ntotal, self._dim or 0
        try:
            total = n * int(idx.sa_code_size())
        except RuntimeError:
            total = n * d * 4
        if hasattr(idx, "hnsw"):
            total += int(idx.hnsw.neighbors.size()) * 4 + int(idx.hnsw.levels.size()) * 4
        if hasattr(idx, "invlists"):
            total += n * 8  # stored ids
            quantizer = getattr(idx, "quantizer", None)
            if quantizer is not None:
                total += int(quantizer.ntotal) * d * 4
        pq = getattr(idx, "pq", None)
        if pq is not None:
            total += int(pq.M) * int(pq.ksub) * int(pq.dsub) * 4
        return total

    @property
    def train_size(self) -> int:
        """Vectors sampled from the first ``add`` to train the index."""
        return self._train_size

    @property
    def ef_search(self) -> int:
        """HNSW ``efSearch`` default (ValueError for non-HNSW indexes)."""
        return int(self._hnsw().efSearch)

    @ef_search.setter
    def ef_search(self, value: int) -> None:
        self._hnsw().efSearch = int(value)

    @property
    def nprobe(self) -> int:
        """IVF ``nprobe`` default (ValueError for non-IVF indexes)."""
        return int(self._ivf().nprobe)

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        self._ivf().nprobe = int(value)

    def _hnsw(self) -> Any:
        idx = None if self._index is None else _faiss().downcast_index(self._index)
        if idx is None or not hasattr(idx, "hnsw"):
            raise ValueError(f"efSearch: {self._factory!r} is not an HNSW index")
        return idx.hnsw

    def _ivf(self) -> Any:
        if self._index is not None:
            try:
                return _faiss().extract_index_ivf(self._index)
            except (RuntimeError, TypeError):
                pass
        raise ValueError(f"nprobe: {self._factory!r} is not an IVF index")

    def add(self, vectors: np.ndarray) -> None:
        arr = _as_vectors(vectors, self._dim, "vectors")
        if self._index is None:
            self._index = self._build(arr.shape[1])
            self._dim = arr.shape[1]
        if not self._index.is_trained:
            self._train(arr)
        self._index.add(arr)

    def _train(self, arr: np.ndarray) -> None:
        sample = arr
        if len(arr) > self._train_size:
            rng = np.random.default_rng(self._seed)
            sample = arr[np.sort(rng.choice(len(arr), self._train_size, replace=False))]
        try:
            self._index.train(np.ascontiguousarray(sample))
        except RuntimeError as exc:
            raise ValueError(f"vectors: {len(sample)} vectors are too few to train faiss index "
                             f"{self._factory!r} (add more documents in the first call): "
                             f"{_faiss_message(exc)}") from None

    def _search_params(self, params: Optional[Mapping[str, Any]]) -> Any:
        if not params:
            return None
        faiss = _faiss()
        p = dict(params)
        ef = p.pop("efSearch", p.pop("ef_search", None))
        nprobe = p.pop("nprobe", None)
        if p:
            raise ValueError(f"params: unknown search parameters {sorted(p)} (use efSearch or nprobe)")
        if ef is not None and nprobe is not None:
            raise ValueError("params: give efSearch (HNSW) or nprobe (IVF), not both")
        if ef is not None:
            self._hnsw()
            sp = faiss.SearchParametersHNSW()
            sp.efSearch = int(ef)
            return sp
        self._ivf()
        sp = faiss.SearchParametersIVF()
        sp.nprobe = int(nprobe)
        return sp

    def search(self, queries: np.ndarray, k: int,
               params: Optional[Mapping[str, Any]] = None) -> Tuple[np.ndarray, np.ndarray]:
        k = _check_k(k)
        q = _as_vectors(queries, self._dim, "queries")
        sp = self._search_params(params)
        if self.ntotal == 0:
            return (np.full((len(q), k), -1, dtype=np.int64),
                    np.full((len(q), k), -np.inf, dtype=np.float32))
        scores, rows = self._index.search(q, k, params=sp) if sp is not None else self._index.search(q, k)
        rows = rows.astype(np.int64, copy=False)
        scores = scores.astype(np.float32, copy=False)
        scores[rows < 0] = -np.inf  # faiss pads with -FLT_MAX
        return rows, scores

    def reset(self) -> None:
        if self._index is not None:
            self._index.reset()

    def empty_copy(self) -> "FaissBackend":
        copy = FaissBackend(self._factory, train_size=self._train_size, seed=self._seed)
        if self._index is not None:
            copy._dim = self._dim
            if self._index.is_trained and self._needs_training():
                # Keep the quantizers: clone, then drop the vectors.
                copy._index = _faiss().clone_index(self._index)
                copy._index.reset()
            else:
                copy._index = copy._build(self._dim)
        return copy

    def _needs_training(self) -> bool:
        fresh = self._build(self._dim)
        return not fresh.is_trained

    def save(self, path: PathLike) -> None:
        if self._index is None:
            raise ValueError("save: the faiss index has no dimension yet (nothing was added)")
        _faiss().write_index(self._index, os.fspath(path))

    def load(self, path: PathLike) -> "FaissBackend":
        faiss = _faiss()
        try:
            index = faiss.read_index(os.fspath(path))
        except RuntimeError as exc:
            raise ValueError(f"{os.fspath(path)}: not a readable faiss index: "
                             f"{_faiss_message(exc)}") from None
        if index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise ValueError(f"{os.fspath(path)}: expected an inner-product faiss index")
        if self._dim is not None and index.d != self._dim:
            raise ValueError(f"{os.fspath(path)}: expected dimension {self._dim}, got {index.d}")
        self._index, self._dim = index, int(index.d)
        return self


def make_backend(spec: str, dimension: Optional[int] = None) -> Backend:
    """Build a backend from a spec string.

    Parameters
    ----------
    spec : str
        ``"exact"``, or a faiss factory string with or without a ``"faiss:"`` prefix
        (``"faiss:HNSW32"`` and ``"HNSW32"`` are the same).
    dimension : int, optional
        Vector dimension; lets faiss validate the factory string now.

    Examples
    --------
    >>> make_backend("exact").name
    'exact'
    """
    if not isinstance(spec, str):
        raise TypeError(f"backend: expected a spec string such as 'exact' or 'HNSW32', got "
                        f"{type(spec).__name__}")
    s = spec.strip()
    if s.lower() == "exact":
        return ExactBackend(dimension)
    if s.lower().startswith("faiss:"):
        s = s[len("faiss:"):]
    if not s:
        raise ValueError(f"backend: expected 'exact' or a faiss factory string, got {spec!r}")
    return FaissBackend(s, dimension)
