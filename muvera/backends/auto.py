"""``backend="auto"`` (the index's default): a backend chosen by corpus size, upgraded as it grows.

The rule, measured by ``bench/bench_scale.py`` (README has the tables):

===================  ====================================  =========================================
documents            active backend                        why
===================  ====================================  =========================================
< ``PQ_AT``          ``exact`` (float32 FDEs, BLAS scan)   too few vectors to train codebooks
< ``IVF_AT``         ``PQ<D/8>x4fs`` (flat fast-scan)      half a byte per 8 dims: the scan reads
                                                           1/64 of the float32 bytes
>= ``IVF_AT``        ``IVF1024,PQ<D/8>x4fs``               scans only ``nprobe / 1024`` of the
                                                           lists: sublinear
===================  ====================================  =========================================

The exact Chamfer rerank of the candidates is the refine step of all three. Without faiss
installed (it is the ``search`` extra) ``auto`` stays on the exact scan and logs a warning once. When an ``add`` would
cross a threshold, :meth:`AutoBackend.replacement` hands the index an empty backend of the next
kind; the index refills it from its stored tokens (the FDEs are a pure function of them; the
first chunk trains the quantizers) and swaps it in, once per threshold. ``index.backend.active``
says which one is in use.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Optional, Tuple

import numpy as np

from ..durable import loads_json, write_json
from .base import Backend, Entries
from .exact import ExactBackend
from .faiss_backend import FaissBackend

__all__ = ["AutoBackend", "PQ_AT", "IVF_AT", "DEFAULT_REFINE", "scalable_factory"]

#: Documents from which flat 4-bit PQ fast-scan replaces the exact scan.
PQ_AT = 2_000
#: k-means iterations of the PQ phase's codebooks (see FaissBackend's ``pq_iterations``).
PQ_ITERATIONS = 10
#: Documents from which IVF + 4-bit PQ fast-scan replaces the flat scan.
IVF_AT = 50_000
#: The refine code re-scoring the fast-scan candidates (``k_factor`` times ``candidates`` of
#: them) before the Chamfer rerank: SQ8 keeps 0.98-0.99 of the exact FDE scan's top-200 on
#: SciFact and NFCorpus, where the 4-bit codes alone keep 0.63-0.72 (bench/refine_candidates.py).
DEFAULT_REFINE = "SQ8"
REFINE_CODES = ("SQ8", "SQ6", "SQ4", "SQfp16")
_STATE = "backend.auto.json"
_WARNED = False
log = logging.getLogger("muvera")


def _faiss_available() -> bool:
    try:
        import faiss  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True
_PHASES = ("exact", "pq", "ivf")


def _dsub(dimension: int, dsub: int = 8) -> int:
    d = dsub
    while d > 1 and dimension % d:
        d -= 1
    return d


def scalable_factory(dimension: int, phase: str = "ivf", nlist: int = 1024, refine: Optional[str] = None) -> str:
    """The faiss factory string of a phase: ``PQ<D/8>x4fs`` or ``IVF<nlist>,PQ<D/8>x4fs``
    (8 dimensions per 4-bit code, or the largest divisor of ``D`` below 8), followed by
    ``,Refine(<refine>)`` when a refine code is given (``"SQ8"``: one byte per dimension)."""
    m = dimension // _dsub(dimension)
    tail = "" if refine is None else f",Refine({refine})"
    if phase == "pq":
        return f"PQ{m}x4fs{tail}"
    if phase == "ivf":
        return f"IVF{nlist},PQ{m}x4fs{tail}"
    raise ValueError(f"phase: expected 'pq' or 'ivf', got {phase!r}")


def _check_refine(refine: Optional[str]) -> Optional[str]:
    if refine is None or refine == "none":
        return None
    if refine not in REFINE_CODES:
        raise ValueError(f"refine: expected one of {REFINE_CODES + ('none',)}, got {refine!r}")
    return refine


def phase_for(n: int, pq_at: int = PQ_AT, ivf_at: int = IVF_AT) -> str:
    """The phase ``auto`` uses for a corpus of ``n`` documents."""
    return "exact" if n < pq_at else ("pq" if n < ivf_at else "ivf")


class AutoBackend(Backend):
    """Exact, then flat PQ fast-scan, then IVF + PQ fast-scan as the corpus grows (see the module).

    Parameters
    ----------
    dimension : int, optional
    pq_at, ivf_at : int
        The thresholds (documents); defaults :data:`PQ_AT`, :data:`IVF_AT`.
    nprobe : int, default 32
        Default lists probed per query once IVF is active (``params={"nprobe": n}`` overrides it).
    nlist : int, default 1024
        IVF lists (trained on ``40 * nlist`` FDEs, at least 25,600).
    phase : {"exact", "pq", "ivf"}
        The phase to start in (replacements are built with the next one).

    Notes
    -----
    ``name`` is ``"auto"`` whatever is active, so a saved index reloads as ``auto``;
    :attr:`active` is the spec of the backend in use. Search parameters go to the active backend
    (``nprobe`` only applies once IVF is active).
    """

    kind = "auto"

    def __init__(self, dimension: Optional[int] = None, *, pq_at: int = PQ_AT, ivf_at: int = IVF_AT,
                 nprobe: int = 32, nlist: int = 1024, phase: str = "exact", refine: Optional[str] = DEFAULT_REFINE):
        if phase not in _PHASES:
            raise ValueError(f"phase: expected one of {_PHASES}, got {phase!r}")
        if not 0 < pq_at <= ivf_at:
            raise ValueError(f"pq_at, ivf_at: expected 0 < pq_at <= ivf_at, got {pq_at}, {ivf_at}")
        self._dim = None if dimension is None else int(dimension)
        if not 1 <= nlist <= 65536 or not 1 <= nprobe:
            raise ValueError(f"nlist, nprobe: expected 1 <= nlist <= 65536 and nprobe >= 1, got {nlist}, {nprobe}")
        self._pq_at, self._ivf_at, self._nprobe, self._phase = int(pq_at), int(ivf_at), int(nprobe), phase
        self._nlist = int(nlist)
        self._refine = _check_refine(refine)
        self._inner: Backend = self._make_inner(phase, self._dim)

    def _make_inner(self, phase: str, dim: Optional[int]) -> Backend:
        if phase == "exact" or dim is None:
            return ExactBackend(dim)
        # IVF: faiss wants 39 training points per list (1024 lists -> 39,936); PQ alone is cheap.
        train = max(25_600, 40 * self._nlist) if phase == "ivf" else 25_600
        inner = FaissBackend(scalable_factory(dim, phase, self._nlist, self._refine), dim, train_size=train,
                             pq_iterations=PQ_ITERATIONS)
        if phase == "ivf":
            inner.nprobe = min(self._nprobe, self._nlist)
        return inner

    @classmethod
    def from_spec(cls, rest: str, dimension: Optional[int]) -> "AutoBackend":
        opts = {}
        for part in filter(None, rest.split(",")):
            key, eq, value = part.partition("=")
            if not eq or key.strip() != "refine":
                raise ValueError(f"backend: 'auto' takes one option, refine=<{'|'.join(REFINE_CODES)}|none>; "
                                 f"got {rest!r}")
            opts["refine"] = value.strip()
        return cls(dimension, **opts)

    # -- what is active ------------------------------------------------------------------------
    @property
    def active(self) -> str:
        """The spec of the backend in use: ``"exact"``, ``"faiss:PQ...x4fs"`` or
        ``"faiss:IVF1024,PQ...x4fs"``."""
        return self._inner.name

    @property
    def phase(self) -> str:
        """``"exact"``, ``"pq"`` or ``"ivf"``."""
        return self._phase

    @property
    def inner(self) -> Backend:
        """The backend in use."""
        return self._inner

    @property
    def name(self) -> str:
        if self._refine == DEFAULT_REFINE:
            return "auto"
        return f"auto:refine={self._refine or 'none'}"

    @property
    def refines(self) -> bool:
        """Whether a refine code is configured (every phase alike, the exact one included)."""
        return self._refine is not None

    @property
    def refine(self) -> Optional[str]:
        """The refine code of the PQ and IVF phases (None: the 4-bit codes rank alone)."""
        return self._refine

    @property
    def dimension(self) -> Optional[int]:
        return self._inner.dimension

    @property
    def ntotal(self) -> int:
        return self._inner.ntotal

    @property
    def nbytes(self) -> int:
        return self._inner.nbytes

    @property
    def needs_training(self) -> bool:
        return self._inner.needs_training

    @property
    def is_trained(self) -> bool:
        return self._inner.is_trained

    @property
    def add_chunk(self) -> int:
        return self._inner.add_chunk

    @property
    def can_reconstruct(self) -> bool:
        return self._inner.can_reconstruct

    @property
    def lossless(self) -> bool:
        return self._inner.lossless

    def __repr__(self) -> str:
        return f"AutoBackend(active={self.active!r}, ntotal={self.ntotal})"

    # -- growth --------------------------------------------------------------------------------
    def replacement(self, n_after: int) -> Optional["AutoBackend"]:
        want = phase_for(n_after, self._pq_at, self._ivf_at)
        if _PHASES.index(want) <= _PHASES.index(self._phase):
            return None
        if not _faiss_available():  # the exact scan needs only NumPy: stay on it, say so once
            global _WARNED
            if not _WARNED:
                _WARNED = True
                log.warning("backend 'auto': faiss is not installed, so the exact FDE scan stays in use at %d "
                            "documents (linear in the corpus); pip install faiss-cpu (a dependency of muvera-toolkit)", n_after)
            return None
        dim = self._dim if self._dim is not None else self._inner.dimension
        return AutoBackend(dim, pq_at=self._pq_at, ivf_at=self._ivf_at, nprobe=self._nprobe, nlist=self._nlist,
                           phase=want, refine=self._refine)

    # -- add / search --------------------------------------------------------------------------
    def train(self, vectors: np.ndarray) -> None:
        self._inner.train(vectors)

    def add(self, vectors: np.ndarray) -> None:
        if self._dim is None and self._phase != "exact":  # dimension learnt now
            self._dim = int(np.asarray(vectors).shape[1])
            self._inner = self._make_inner(self._phase, self._dim)
        self._inner.add(vectors)

    def search(self, queries: np.ndarray, k: int, *, params: Optional[Mapping[str, Any]] = None,
               allowed: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
        return self._inner.search(queries, k, params=params, allowed=allowed)

    def check_params(self, params: Optional[Mapping[str, Any]]) -> None:
        self._inner.check_params(params)

    def reconstruct(self, rows: np.ndarray) -> np.ndarray:
        return self._inner.reconstruct(rows)

    def reset(self) -> None:
        self._inner.reset()

    def truncate(self, n: int) -> None:
        self._inner.truncate(n)

    def empty_copy(self) -> "AutoBackend":
        copy = AutoBackend(self._dim, pq_at=self._pq_at, ivf_at=self._ivf_at, nprobe=self._nprobe,
                           nlist=self._nlist, phase=self._phase, refine=self._refine)
        copy._inner = self._inner.empty_copy()  # keeps trained quantizers
        if self._phase == "ivf" and isinstance(copy._inner, FaissBackend) and copy._inner.index is not None:
            copy._inner.nprobe = min(self._nprobe, int(copy._inner.ivf_index().nlist))
        return copy

    # -- persistence ---------------------------------------------------------------------------
    def save(self, directory: Path) -> Entries:
        entries = dict(self._inner.save(directory)) if self._inner.dimension is not None else {}
        state = {"phase": self._phase, "active": self.active, "pq_at": self._pq_at, "ivf_at": self._ivf_at,
                 "nprobe": self._nprobe, "nlist": self._nlist, "refine": self._refine or "none"}
        entries[_STATE] = write_json(Path(directory) / _STATE, state)
        return entries

    def load(self, directory: Path, entries: Entries, mmap: bool) -> "AutoBackend":
        from . import make_backend  # noqa: PLC0415

        if _STATE not in entries:
            raise ValueError(f"manifest.json: the auto backend's {_STATE} is not listed")
        try:
            state = loads_json((Path(directory) / _STATE).read_text(encoding="utf-8"), _STATE)
            phase, active = str(state["phase"]), str(state["active"])
            pq_at, ivf_at, nprobe = int(state["pq_at"]), int(state["ivf_at"]), int(state["nprobe"])
            nlist = int(state["nlist"])
            refine = _check_refine(str(state.get("refine", "none")))  # before 0.5: no refine stage
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{_STATE}: malformed ({exc})") from None
        expect = {"exact": "exact", "pq": "faiss:PQ", "ivf": "faiss:IVF"}.get(phase)
        if expect is None or not active.startswith(expect):
            raise ValueError(f"{_STATE}: active backend {active!r} does not match phase {phase!r}")
        inner = make_backend(active, self._dim)
        rest = {k: v for k, v in entries.items() if k != _STATE}
        if rest:
            inner.load(directory, rest, mmap)
        self._inner, self._phase = inner, phase
        self._pq_at, self._ivf_at, self._nprobe, self._nlist = pq_at, ivf_at, nprobe, nlist
        self._refine = refine
        return self
