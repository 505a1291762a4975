"""faiss backends: any ``faiss.index_factory`` string with the inner-product metric.

faiss is imported only when such a backend is built. Factory strings and search parameters are
checked here before faiss sees them: some malformed ones (``HNSW0``, ``PQ1280x0``) abort the
process inside faiss instead of raising.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any, Dict, Iterator, Mapping, Optional, Tuple

import numpy as np

from ..durable import write_via_path
from .._validate import positive_int
from .base import Backend, Entries, as_allowed_rows, as_queries, topk

__all__ = ["FaissBackend", "check_factory", "DEFAULT_K_FACTOR"]

_FILE = "backend.faiss"
_MAX_COUNT = 1 << 22       # nlist, M, PCA dims...: far above any useful setting
_MAX_EF = 1 << 16
_MAX_K_FACTOR = 1 << 10
#: Refine stages re-score this many times ``k`` base candidates by default (bench/refine_candidates.py).
DEFAULT_K_FACTOR = 4
# Filters allowing at most max(4096 rows, 1% of the index) are scanned exactly on the decoded
# vectors of those rows (when the index can decode them): graph and list searches slow down
# sharply when few rows qualify (bench/bench_filters.py).
_BRUTE_FORCE_ROWS = 4096
_BRUTE_FORCE_FRACTION = 100


def _faiss():
    try:
        import faiss  # noqa: PLC0415 (optional dependency, imported on use)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("faiss backends need faiss-cpu (a dependency of muvera-toolkit): pip install faiss-cpu") from exc
    return faiss


#: Largest squared vector norm handed to faiss: its float32 distances (|x|^2 + |c|^2 - 2 x.c)
#: must stay finite, or k-means aborts the whole process from inside OpenMP.
MAX_SQUARED_NORM = 1e36


def _check_magnitude(vectors: np.ndarray) -> None:
    """ValueError for vectors too large for faiss's float32 arithmetic (checked before training
    and adding: a faiss exception inside a parallel region cannot be caught, it terminates)."""
    if not len(vectors):
        return
    peak = max(float(vectors.max()), -float(vectors.min()))  # no |x| copy of the chunk
    if peak > 1e15 or (peak > 1e12 and float(np.einsum("ij,ij->i", vectors.astype(np.float64),
                                                              vectors.astype(np.float64)).max()) > MAX_SQUARED_NORM):
        raise ValueError(f"documents: FDE values up to {peak:.3g} are too large for the faiss backend (squared norms "
                         f"must stay below {MAX_SQUARED_NORM:g}); scale the token vectors down (e.g. normalise them)")


def _faiss_message(exc: Exception) -> str:
    """faiss's exception text without the C++ signature and source location."""
    lines = str(exc).strip().splitlines()
    msg = lines[-1] if lines else repr(exc)
    msg = re.sub(r"^Error in .*? at \S+:\d+: ", "", msg)
    return re.sub(r"^Error: '.*?' failed: ", "", msg)


def check_factory(factory: str, dimension: Optional[int] = None) -> str:
    """Validate a faiss factory string's numbers before faiss parses it; returns it stripped.

    Every number must be positive and bounded; ``PQ<M>x<b>`` needs ``1 <= b <= 16`` (and
    ``b == 4`` with ``fs``), ``SQ<b>`` one of 4/6/8, and ``<M>`` at most the dimension when known.

    Raises
    ------
    ValueError
        Naming the component at fault.
    """
    if not isinstance(factory, str) or not factory.strip():
        raise ValueError(f"backend: expected a faiss factory string, got {factory!r}")
    s = factory.strip()
    if len(s) > 200 or not s.isascii() or not s.isprintable():
        raise ValueError(f"backend: {s[:40]!r}... is not a plausible faiss factory string")
    for comp in s.split(","):
        c = comp.strip()
        if not c:
            raise ValueError(f"backend: empty component in faiss factory string {s!r}")
        nums = [int(t) for t in re.findall(r"\d+", c)]
        if any(n <= 0 for n in nums):
            raise ValueError(f"backend: {c!r} in {s!r}: every count must be positive")
        if any(n > _MAX_COUNT for n in nums):
            raise ValueError(f"backend: {c!r} in {s!r}: counts above {_MAX_COUNT} are not supported")
        pq = re.fullmatch(r"(?:IVF\d+_)?(?:PQ|OPQ|RQ|LSQ|PRQ|PLSQ)(\d+)(?:x(\d+))?(fs|np)?(?:_\d+)?", c)
        if pq:
            m, bits, suffix = int(pq.group(1)), pq.group(2), pq.group(3)
            if bits is not None and not 1 <= int(bits) <= 16:
                raise ValueError(f"backend: {c!r}: bits per code must be in [1, 16]")
            if suffix == "fs" and bits is not None and int(bits) != 4:
                raise ValueError(f"backend: {c!r}: fast-scan PQ needs 4 bits per code (x4fs)")
            if dimension is not None and m > dimension:
                raise ValueError(f"backend: {c!r}: {m} sub-quantizers exceed the dimension {dimension}")
        sq = re.fullmatch(r"SQ(\d+)", c)
        if sq and int(sq.group(1)) not in (4, 6, 8):
            raise ValueError(f"backend: {c!r}: SQ takes 4, 6 or 8 bits (or SQfp16/SQbf16)")
        hnsw = re.fullmatch(r"HNSW(\d+).*", c)
        if hnsw and int(hnsw.group(1)) > 1024:
            raise ValueError(f"backend: {c!r}: HNSW M above 1024 is not supported")
    return s


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
    pq_iterations : int, optional
        k-means iterations of a flat product quantizer's codebooks (faiss: 25). ``auto`` uses 10
        and one thread: 1,280 tiny k-means runs are dominated by OpenMP barriers, which stall
        badly when other processes share the cores (2,000 10240-d FDEs: 38 s with two threads
        under load, 3 s with one thread and 10 iterations).

    Notes
    -----
    Search parameters go per call (thread-safe): ``{"efSearch": 128}`` for HNSW,
    ``{"nprobe": 16}`` for IVF. An allowed-rows bitmap becomes a faiss ``IDSelectorBitmap``;
    indexes that take no selector (flat PQ, refine wrappers), and queries for which a selective
    graph or IVF search finds fewer than ``k`` allowed rows, fall back to asking for more rows
    and filtering, up to every row -- so a filtered search always returns every qualifying row
    the index can rank.
    """

    kind = "faiss"
    #: Refine stages with SQ8 codes are scored by muvera's sparse kernel (the query FDE's non-zero
    #: dimensions only); False leaves them to faiss (the same ranking, up to float rounding).
    SPARSE_REFINE = True

    def __init__(self, factory: str, dimension: Optional[int] = None, *, train_size: int = 25_600,
                 seed: int = 1234, pq_iterations: Optional[int] = None):
        self._factory = check_factory(factory, dimension)
        if pq_iterations is not None and (isinstance(pq_iterations, bool) or not isinstance(pq_iterations, int)
                                          or pq_iterations < 1):
            raise ValueError(f"pq_iterations: expected a positive int or None, got {pq_iterations!r}")
        self._pq_iterations = pq_iterations
        if isinstance(train_size, bool) or not isinstance(train_size, int) or train_size < 1:
            raise ValueError(f"train_size: expected a positive int, got {train_size!r}")
        self._train_size = int(train_size)
        self._seed = int(seed)
        self._dim: Optional[int] = None
        self._index: Any = None
        self._selector_ok = True
        self._k_factor = DEFAULT_K_FACTOR
        if dimension is not None:
            self._dim = int(dimension)
            self._index = self._build(self._dim)

    @classmethod
    def from_spec(cls, rest: str, dimension: Optional[int]) -> "FaissBackend":
        return cls(rest, dimension)

    def _build(self, dimension: int) -> Any:
        faiss = _faiss()
        check_factory(self._factory, dimension)
        try:
            index = faiss.index_factory(dimension, self._factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as exc:
            raise ValueError(f"backend: faiss cannot build factory string {self._factory!r} for dimension "
                             f"{dimension}: {_faiss_message(exc)}") from None
        _no_polysemous(faiss, index)
        return index

    # -- properties ----------------------------------------------------------------------------
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
    def needs_training(self) -> bool:
        return self._index is None or not self._index.is_trained

    @property
    def is_trained(self) -> bool:
        return self._index is not None and bool(self._index.is_trained)

    @property
    def add_chunk(self) -> int:
        # The first chunk trains: it must hold the whole training sample.
        return max(32_768, self._train_size)

    @property
    def can_reconstruct(self) -> bool:
        return self._index is not None and (self._refine() is not None or not self.is_ivf())

    @property
    def lossless(self) -> bool:
        return re.fullmatch(r"(IDMap,)?Flat|HNSW\d+(,Flat)?", self._factory) is not None

    @property
    def train_size(self) -> int:
        """Vectors sampled from the first ``add`` to train the index."""
        return self._train_size

    @property
    def nbytes(self) -> int:
        if self._index is None:
            return 0
        faiss = _faiss()
        idx = faiss.downcast_index(self._index)
        n, d = self.ntotal, self._dim or 0
        total = 0
        if hasattr(idx, "refine_index") and hasattr(idx, "base_index"):  # refine codes, then the base
            total += n * int(faiss.downcast_index(idx.refine_index).sa_code_size())
            idx = faiss.downcast_index(idx.base_index)
        try:
            total += n * int(idx.sa_code_size())
        except RuntimeError:
            total += n * d * 4
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
    def ef_search(self) -> int:
        """HNSW ``efSearch`` default (ValueError for non-HNSW indexes)."""
        return int(self._hnsw().efSearch)

    @ef_search.setter
    def ef_search(self, value: int) -> None:
        self._hnsw().efSearch = _bounded_int(value, "efSearch", _MAX_EF)

    @property
    def nprobe(self) -> int:
        """IVF ``nprobe`` default (ValueError for non-IVF indexes)."""
        return int(self.ivf_index().nprobe)

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        ivf = self.ivf_index()
        ivf.nprobe = _bounded_int(value, "nprobe", int(ivf.nlist))

    def _hnsw(self) -> Any:
        idx = None if self._index is None else _faiss().downcast_index(self._index)
        if idx is None or not hasattr(idx, "hnsw"):
            raise ValueError(f"params: efSearch needs an HNSW index; {self._factory!r} is not one")
        return idx.hnsw

    def _refine(self) -> Any:
        """The faiss ``IndexRefine`` wrapper when the factory ends in a refine stage, else None."""
        if self._index is None:
            return None
        idx = _faiss().downcast_index(self._index)
        return idx if hasattr(idx, "refine_index") and hasattr(idx, "base_index") else None

    @property
    def refines(self) -> bool:
        return self._refine() is not None

    @property
    def k_factor(self) -> int:
        """Refine stages: the base index returns ``k_factor * k`` rows, re-scored by the finer
        codes down to ``k`` (ValueError without a refine stage)."""
        if self._refine() is None:
            raise ValueError(f"params: k_factor needs a refine stage; {self._factory!r} has none")
        return self._k_factor

    @k_factor.setter
    def k_factor(self, value: int) -> None:
        if self._refine() is None:
            raise ValueError(f"params: k_factor needs a refine stage; {self._factory!r} has none")
        self._k_factor = _bounded_int(value, "k_factor", _MAX_K_FACTOR)

    def is_ivf(self) -> bool:
        """Whether the faiss index (inside any refine stage) is an IVF one."""
        try:
            self.ivf_index()
            return True
        except ValueError:
            return False

    def ivf_index(self) -> Any:
        """The IVF index inside the faiss index (its ``nlist``, ``nprobe``); ValueError if none."""
        if self._index is not None:
            try:
                return _faiss().extract_index_ivf(self._index)
            except (RuntimeError, TypeError):
                pass
        raise ValueError(f"params: nprobe needs an IVF index; {self._factory!r} is not one")

    # -- add / search --------------------------------------------------------------------------
    def train(self, vectors: np.ndarray) -> None:
        arr = np.ascontiguousarray(vectors, dtype=np.float32)
        if self._index is None:
            self._index = self._build(arr.shape[1])
            self._dim = arr.shape[1]
        if self._index.is_trained:
            return
        _check_magnitude(arr)
        sample = arr
        if len(arr) > self._train_size:
            rng = np.random.default_rng(self._seed)
            sample = arr[np.sort(rng.choice(len(arr), self._train_size, replace=False))]
        try:
            with self._flat_pq_training():
                self._index.train(np.ascontiguousarray(sample))
        except RuntimeError as exc:
            raise ValueError(f"documents: {len(sample)} vectors are too few to train faiss index "
                             f"{self._factory!r} (add more documents in the first call): "
                             f"{_faiss_message(exc)}") from None

    @contextlib.contextmanager
    def _flat_pq_training(self) -> Iterator[None]:
        """With ``pq_iterations`` set and a flat PQ (no IVF): that many k-means iterations per
        codebook, on one OpenMP thread (restored afterwards)."""
        pq = None
        if self._pq_iterations is not None and not self.is_ivf():
            refine = self._refine()
            base = _faiss().downcast_index(refine.base_index if refine is not None else self._index)
            pq = getattr(base, "pq", None)
        if pq is None:
            yield
            return
        faiss = _faiss()
        threads = faiss.omp_get_max_threads()
        pq.cp.niter = int(self._pq_iterations)
        faiss.omp_set_num_threads(1)
        try:
            yield
        finally:
            faiss.omp_set_num_threads(threads)

    def add(self, vectors: np.ndarray) -> None:
        arr = np.ascontiguousarray(vectors, dtype=np.float32)
        if self._dim is not None and (arr.ndim != 2 or arr.shape[1] != self._dim):
            raise ValueError(f"vectors: expected (n, {self._dim}) float32, got shape {arr.shape}")
        if self._index is None or not self._index.is_trained:
            self.train(arr)
        _check_magnitude(arr)
        try:
            self._index.add(arr)
        except RuntimeError as exc:
            raise ValueError(f"backend: faiss index {self._factory!r} could not add {len(arr)} vectors: "
                             f"{_faiss_message(exc)}") from None

    def check_params(self, params: Optional[Mapping[str, Any]]) -> None:
        self._param_values(params)

    def _param_values(self, params: Optional[Mapping[str, Any]]) -> Dict[str, int]:
        if not params:
            return {}
        if not isinstance(params, Mapping):
            raise TypeError(f"params: expected a dict such as {{'efSearch': 128}}, got {type(params).__name__}")
        p = dict(params)
        ef = p.pop("efSearch", p.pop("ef_search", None))
        nprobe = p.pop("nprobe", None)
        k_factor = p.pop("k_factor", None)
        if p:
            raise ValueError(f"params: unknown search parameters {sorted(map(str, p))} "
                             "(use efSearch, nprobe or k_factor)")
        if ef is not None and nprobe is not None:
            raise ValueError("params: give efSearch (HNSW) or nprobe (IVF), not both")
        out: Dict[str, int] = {}
        if k_factor is not None:
            if self._refine() is None:
                raise ValueError(f"params: k_factor needs a refine stage (',Refine(SQ8)'); {self._factory!r} has none")
            out["k_factor"] = _bounded_int(k_factor, "k_factor", _MAX_K_FACTOR)
        if ef is not None:
            self._hnsw()
            out["efSearch"] = _bounded_int(ef, "efSearch", _MAX_EF)
        if nprobe is not None:
            ivf = self.ivf_index()
            out["nprobe"] = _bounded_int(nprobe, "nprobe", int(ivf.nlist))
        return out

    def _params_object(self, values: Dict[str, int], sel: Any) -> Any:
        refine = self._refine()
        if refine is None:
            return self._base_params(values, sel)
        # A refine wrapper takes the selector and nprobe/efSearch through its base's parameters.
        faiss = _faiss()
        base = self._base_params(values, sel)
        kf = values.get("k_factor", self._k_factor)
        rp = faiss.IndexRefineSearchParameters(k_factor=float(kf))
        rp._base = base  # the swig object must outlive the search (and the SQ8 path reads it)
        if base is not None:
            rp.base_index_params = base
        return rp

    def _base_params(self, values: Dict[str, int], sel: Any) -> Any:
        faiss = _faiss()
        if "efSearch" in values:
            return faiss.SearchParametersHNSW(efSearch=values["efSearch"], **({"sel": sel} if sel else {}))
        if "nprobe" in values:
            return faiss.SearchParametersIVF(nprobe=values["nprobe"], **({"sel": sel} if sel else {}))
        if sel is None:
            return None
        if self.is_ivf():
            return faiss.SearchParametersIVF(sel=sel, nprobe=int(self.ivf_index().nprobe))
        if hasattr(faiss.downcast_index(self._index), "hnsw"):
            return faiss.SearchParametersHNSW(sel=sel, efSearch=int(self._hnsw().efSearch))
        return faiss.SearchParameters(sel=sel)

    def _code8_refine(self) -> Any:
        """The refine wrapper when its codes are SQ8 and muvera's refine kernel may score them
        (:attr:`SPARSE_REFINE`), else None."""
        refine = self._refine() if self.SPARSE_REFINE else None
        if refine is None:
            return None
        faiss = _faiss()
        sq = faiss.downcast_index(refine.refine_index)
        if not isinstance(sq, faiss.IndexScalarQuantizer) or sq.sq.qtype != faiss.ScalarQuantizer.QT_8bit:
            return None
        return refine

    def _refine_sparse(self, refine: Any, q: np.ndarray, k: int, sp: Any) -> Tuple[np.ndarray, np.ndarray]:
        """faiss's refine stage, re-scored by muvera's kernel: the base index's ``k_factor * k``
        rows, then inner products with their SQ8 codes over the query FDE's non-zero dimensions
        only (a query of a few tokens fills few partitions: ~12% of a 10240-d FDE on NFCorpus),
        instead of decoding every dimension of every candidate."""
        faiss = _faiss()
        from .. import _core  # noqa: PLC0415

        kf = self._k_factor if sp is None else sp.k_factor
        base_sp = None if sp is None else sp._base
        kb = min(self.ntotal, max(k, int(k * kf)))
        base = refine.base_index
        _, cand = base.search(q, kb, params=base_sp) if base_sp is not None else base.search(q, kb)
        sq = faiss.downcast_index(refine.refine_index)
        n, dim = int(sq.ntotal), int(sq.d)
        codes = faiss.rev_swig_ptr(sq.codes.data(), n * dim).reshape(n, dim)  # a view, no copy
        trained = faiss.rev_swig_ptr(sq.sq.trained.data(), 2 * dim)  # vmin then vdiff: a view, no copy per search
        rows, scores = _core.code8_refine_topk(q, cand, codes, trained[:dim], trained[dim:], k)
        return rows, scores

    def _raw_search(self, q: np.ndarray, k: int, sp: Any) -> Tuple[np.ndarray, np.ndarray]:
        k_eff = min(k, self.ntotal)
        refine = self._code8_refine()
        if refine is not None:
            rows, scores = self._refine_sparse(refine, q, k_eff, sp)
        else:
            scores, rows = self._index.search(q, k_eff, params=sp) if sp is not None else self._index.search(q, k_eff)
        rows = rows.astype(np.int64, copy=False)
        scores = scores.astype(np.float32, copy=False)
        scores[rows < 0] = -np.inf  # faiss pads with -FLT_MAX
        if k_eff < k:
            pad = k - k_eff
            rows = np.pad(rows, ((0, 0), (0, pad)), constant_values=-1)
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        return rows, scores

    def search(self, queries: np.ndarray, k: int, *, params: Optional[Mapping[str, Any]] = None,
               allowed: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
        values = self._param_values(params)
        k = positive_int(k, "k")
        queries = as_queries(queries, self._dim)
        n = self.ntotal
        rows = np.full((len(queries), k), -1, dtype=np.int64)
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        allow = as_allowed_rows(allowed, n)
        if n == 0:
            return rows, scores
        if allow is None:
            try:
                return self._raw_search(queries, k, self._params_object(values, None))
            except RuntimeError as exc:
                raise ValueError(f"backend: faiss index {self._factory!r} could not search: "
                                 f"{_faiss_message(exc)}") from None
        n_allowed = allow.count
        if n_allowed == 0:
            return rows, scores
        want = min(k, n_allowed)
        if self.can_reconstruct and n_allowed <= max(_BRUTE_FORCE_ROWS, n // _BRUTE_FORCE_FRACTION):
            return self._scan_allowed(queries, k, allow.rows)
        mask = allow.bitmap
        pending = np.arange(len(queries))
        if self._selector_ok:
            faiss = _faiss()
            bits = allow.packed
            sel = faiss.IDSelectorBitmap(n, faiss.swig_ptr(bits))
            try:
                r, s = self._raw_search(queries, k, self._params_object(values, sel))
            except RuntimeError:
                self._selector_ok = False  # this index type takes no selector
            else:
                rows, scores = r, s
                pending = np.flatnonzero((rows >= 0).sum(axis=1) < want)
                if pending.size:  # a graph/list search that met too few allowed rows: widen it
                    wide = _widened(values, 4 * max(k, values.get("efSearch", 0)), self, nprobe_factor=4)
                    r, s = self._raw_search(queries[pending], k, self._params_object(wide, sel))
                    rows[pending], scores[pending] = r, s
                    pending = pending[(r >= 0).sum(axis=1) < want]
            del sel, bits  # the selector points into bits: both die together, after the search
        if pending.size:
            r, s = self._overfetch(queries[pending], k, values, mask, n_allowed)
            rows[pending], scores[pending] = r, s
        return rows, scores

    def _scan_allowed(self, queries: np.ndarray, k: int, rows: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Exact inner products with the stored (decoded) vectors of the allowed ``rows`` only:
        for restrictive filters a graph or list search would wander the whole index to find them."""
        out_r = np.full((len(queries), k), -1, dtype=np.int64)
        out_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
        step = max(1, (1 << 24) // max(1, len(rows)))
        vecs = self.reconstruct(rows)
        for i in range(0, len(queries), step):
            cols, sc = topk(queries[i: i + step] @ vecs.T, k)
            valid = cols >= 0
            cols[valid] = rows[cols[valid]]
            out_r[i: i + step], out_s[i: i + step] = cols, sc
        return out_r, out_s

    def _overfetch(self, q: np.ndarray, k: int, values: Dict[str, int], mask: np.ndarray,
                   n_allowed: int) -> Tuple[np.ndarray, np.ndarray]:
        """Ask for more rows than k and keep the allowed ones, doubling until each query has k
        (or every row was asked for)."""
        n = self.ntotal
        want = min(k, n_allowed)
        fetch = min(n, -(-k * n // n_allowed))
        out_r = np.full((len(q), k), -1, dtype=np.int64)
        out_s = np.full((len(q), k), -np.inf, dtype=np.float32)
        pending = np.arange(len(q))
        while pending.size:
            sp = self._params_object(_widened(values, fetch, self), None)
            rows, scores = self._raw_search(q[pending], fetch, sp)
            ok = rows >= 0
            ok[ok] = mask[rows[ok]]
            done = (ok.sum(axis=1) >= want) | (fetch >= n)
            order = np.argsort(~ok[done], axis=1, kind="stable")[:, :k]  # allowed first, in rank order
            sel_r = np.take_along_axis(rows[done], order, axis=1)
            sel_s = np.take_along_axis(scores[done], order, axis=1)
            bad = ~np.take_along_axis(ok[done], order, axis=1)
            sel_r[bad], sel_s[bad] = -1, -np.inf
            width = sel_r.shape[1]
            out_r[pending[done], :width], out_s[pending[done], :width] = sel_r, sel_s
            pending = pending[~done]
            fetch = min(n, 2 * fetch)
        return out_r, out_s

    def reconstruct(self, rows: np.ndarray) -> np.ndarray:
        if not self.can_reconstruct:
            raise NotImplementedError(f"{self.name}: IVF indexes keep no direct map; cannot reconstruct")
        r = np.ascontiguousarray(rows, dtype=np.int64)
        refine = self._refine()
        source = refine.refine_index if refine is not None else self._index  # the finer codes
        return np.asarray(source.reconstruct_batch(r), dtype=np.float32)

    def reset(self) -> None:
        if self._index is not None:
            self._index.reset()

    def truncate(self, n: int) -> None:
        if self._index is None or self._index.ntotal <= n:
            return
        faiss = _faiss()
        refine = self._refine()
        parts = [refine.base_index, refine.refine_index] if refine is not None else [self._index]
        try:
            for part in parts:  # rows are numbered in add order: dropping the tail keeps the rest
                part.remove_ids(faiss.IDSelectorRange(int(n), int(part.ntotal)))
        except RuntimeError as exc:  # HNSW and others: no removal
            raise NotImplementedError(f"{self.name}: cannot drop trailing rows ({_faiss_message(exc)})") from None
        if refine is not None:
            refine.ntotal = int(n)

    def empty_copy(self) -> "FaissBackend":
        copy = FaissBackend(self._factory, train_size=self._train_size, seed=self._seed,
                            pq_iterations=self._pq_iterations)
        copy._k_factor = self._k_factor
        if self._index is not None:
            copy._dim = self._dim
            fresh = self._build(self._dim)
            if self._index.is_trained and not fresh.is_trained:
                copy._index = _faiss().clone_index(self._index)  # keep the quantizers
                copy._index.reset()
            else:
                copy._index = fresh
        return copy

    # -- persistence ---------------------------------------------------------------------------
    def save(self, directory: Path) -> Entries:
        if self._index is None:
            raise ValueError("save: the faiss index has no dimension yet (nothing was added)")
        faiss = _faiss()
        return {_FILE: write_via_path(Path(directory) / _FILE,
                                      lambda p: faiss.write_index(self._index, os.fspath(p)))}

    def load(self, directory: Path, entries: Entries, mmap: bool) -> "FaissBackend":
        faiss = _faiss()
        path = Path(directory) / _FILE
        if _FILE not in entries:
            raise ValueError(f"manifest.json: the faiss backend's {_FILE} is not listed")
        try:
            index = faiss.read_index(os.fspath(path))
        except RuntimeError as exc:
            raise ValueError(f"{_FILE}: not a readable faiss index: {_faiss_message(exc)}") from None
        if index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise ValueError(f"{_FILE}: expected an inner-product faiss index")
        if self._dim is not None and index.d != self._dim:
            raise ValueError(f"{_FILE}: expected dimension {self._dim}, got {index.d}")
        self._index, self._dim = index, int(index.d)
        return self


def _widened(values: Dict[str, int], fetch: int, backend: FaissBackend, nprobe_factor: int = 1) -> Dict[str, int]:
    """Search parameters that can return ``fetch`` rows: HNSW needs efSearch >= fetch; an IVF
    search may probe ``nprobe_factor`` times more lists."""
    if hasattr(_faiss().downcast_index(backend.index), "hnsw"):
        ef = values.get("efSearch", backend.ef_search)
        return {**values, "efSearch": max(ef, min(fetch, _MAX_EF))}
    if nprobe_factor > 1 and backend.is_ivf():
        ivf = backend.ivf_index()
        return {**values, "nprobe": min(int(ivf.nlist), nprobe_factor * values.get("nprobe", int(ivf.nprobe)))}
    return values


def _bounded_int(value: Any, name: str, upper: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"params: {name} expects an int, got {type(value).__name__}")
    if not 1 <= value <= upper:
        raise ValueError(f"params: {name} must be in [1, {upper}], got {value}")
    return int(value)

