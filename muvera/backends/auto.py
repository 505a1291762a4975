"""``backend="auto"``: exact FDE scan for small corpora, an IVF index with 4-bit PQ fast-scan codes
beyond :data:`SWITCH_AT` documents.

The rule (``bench/bench_scale.py`` measured it; README has the tables): below ``SWITCH_AT``
documents a brute-force scan of the float32 FDEs is exact and fast enough; above it, the scan's
cost and memory (4 bytes per FDE dimension per document) grow linearly, while
``IVF<nlist>,PQ<D/dsub>x4fs`` holds half a byte per ``dsub`` dimensions and scans
``nprobe / nlist`` of the corpus with SIMD lookup tables; the Chamfer rerank of the candidates is
the refine step. The switch happens inside :meth:`AutoBackend.add` when the corpus crosses the
threshold: the held FDEs train the IVF/PQ quantizers, move into the new index, and are freed.
``index.backend.active`` says which one is in use.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Optional, Tuple

import numpy as np

from ..durable import write_json
from .base import Backend, Entries
from .exact import ExactBackend
from .faiss_backend import FaissBackend

__all__ = ["AutoBackend", "SWITCH_AT", "scalable_factory"]

#: Documents from which the IVF-PQ fast-scan index replaces the exact scan.
SWITCH_AT = 50_000
_STATE = "backend.auto.json"


def scalable_factory(dimension: int, nlist: int = 1024, dsub: int = 8) -> str:
    """The faiss factory string ``auto`` switches to: ``IVF<nlist>,PQ<D/dsub>x4fs``
    (``dsub`` dimensions per 4-bit code; falls back to a divisor of ``D``)."""
    d = dsub
    while d > 1 and dimension % d:
        d -= 1
    return f"IVF{nlist},PQ{dimension // d}x4fs"


class AutoBackend(Backend):
    """Exact below :data:`SWITCH_AT` documents, ``IVF1024,PQ<D/8>x4fs`` from there on.

    Parameters
    ----------
    dimension : int, optional
    switch_at : int, default SWITCH_AT
    nprobe : int, default 32
        The IVF index's default lists probed per query (``params={"nprobe": n}`` overrides it).

    Notes
    -----
    ``name`` is ``"auto"`` whatever is active, so a saved index reloads as ``auto``;
    :attr:`active` is the spec of the backend in use (``"exact"`` or ``"faiss:IVF..."``).
    """

    kind = "auto"

    def __init__(self, dimension: Optional[int] = None, *, switch_at: int = SWITCH_AT, nprobe: int = 32):
        self._dim = None if dimension is None else int(dimension)
        self._switch_at = int(switch_at)
        self._nprobe = int(nprobe)
        self._inner: Backend = ExactBackend(self._dim)

    @classmethod
    def from_spec(cls, rest: str, dimension: Optional[int]) -> "AutoBackend":
        if rest:
            raise ValueError(f"backend: 'auto' takes no options, got {rest!r}")
        return cls(dimension)

    # -- what is active ------------------------------------------------------------------------
    @property
    def active(self) -> str:
        """The spec of the backend in use: ``"exact"`` or ``"faiss:IVF1024,PQ...x4fs"``."""
        return self._inner.name

    @property
    def inner(self) -> Backend:
        """The backend in use."""
        return self._inner

    @property
    def switch_at(self) -> int:
        return self._switch_at

    @property
    def name(self) -> str:
        return "auto"

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
    def add_chunk(self) -> int:
        return self._inner.add_chunk

    @property
    def can_reconstruct(self) -> bool:
        return self._inner.can_reconstruct

    @property
    def lossless(self) -> bool:
        return self._inner.lossless

    def __repr__(self) -> str:
        return f"AutoBackend(active={self.active!r}, ntotal={self.ntotal}, switch_at={self._switch_at})"

    # -- add / search --------------------------------------------------------------------------
    def _switch(self, extra: np.ndarray) -> None:
        """Train the IVF-PQ index on the held FDEs (plus ``extra`` if they are too few), move
        them in and drop the exact scan."""
        held = self._inner
        assert isinstance(held, ExactBackend)
        dim = int(held.dimension or extra.shape[1])
        train_size = FaissBackend("Flat").train_size
        sample = held.vectors
        if len(sample) < train_size and len(extra):
            sample = np.concatenate([sample, extra[: train_size - len(sample)]])
        # 1024 lists (39 training points each at least, faiss's minimum), fewer only when a small
        # switch_at leaves too few vectors to train them.
        nlist = 1024
        while nlist > 1 and 39 * nlist > len(sample):
            nlist //= 2
        target = FaissBackend(scalable_factory(dim, nlist), dim)
        target.train(sample)
        target.nprobe = min(self._nprobe, nlist)
        for s in range(0, held.ntotal, 32_768):
            target.add(held.vectors[s: s + 32_768])
        self._inner = target

    def add(self, vectors: np.ndarray) -> None:
        arr = np.ascontiguousarray(vectors, dtype=np.float32)
        if isinstance(self._inner, ExactBackend) and self._inner.ntotal + len(arr) >= self._switch_at:
            self._switch(arr)
        self._inner.add(arr)

    def search(self, queries: np.ndarray, k: int, *, params: Optional[Mapping[str, Any]] = None,
               allowed: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
        return self._inner.search(queries, k, params=params, allowed=allowed)

    def check_params(self, params: Optional[Mapping[str, Any]]) -> None:
        self._inner.check_params(params)

    def reconstruct(self, rows: np.ndarray) -> np.ndarray:
        return self._inner.reconstruct(rows)

    def reset(self) -> None:
        self._inner.reset()

    def empty_copy(self) -> "AutoBackend":
        copy = AutoBackend(self._dim, switch_at=self._switch_at, nprobe=self._nprobe)
        copy._inner = self._inner.empty_copy()  # a switched index keeps its quantizers
        if isinstance(copy._inner, FaissBackend) and copy._inner.index is not None:
            copy._inner.nprobe = min(self._nprobe, copy._inner.index.nlist)
        return copy

    # -- persistence ---------------------------------------------------------------------------
    def save(self, directory: Path) -> Entries:
        entries = dict(self._inner.save(directory)) if self._inner.dimension is not None else {}
        state = {"active": self.active, "switch_at": self._switch_at, "nprobe": self._nprobe}
        entries[_STATE] = write_json(Path(directory) / _STATE, state)
        return entries

    def load(self, directory: Path, entries: Entries, mmap: bool) -> "AutoBackend":
        from . import make_backend  # noqa: PLC0415

        if _STATE not in entries:
            raise ValueError(f"manifest.json: the auto backend's {_STATE} is not listed")
        try:
            state = json.loads((Path(directory) / _STATE).read_text(encoding="utf-8"))
            active, switch_at, nprobe = str(state["active"]), int(state["switch_at"]), int(state["nprobe"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{_STATE}: malformed ({exc})") from None
        if active != "exact" and not active.startswith("faiss:IVF"):
            raise ValueError(f"{_STATE}: unexpected active backend {active!r}")
        inner = make_backend(active, self._dim)
        rest = {k: v for k, v in entries.items() if k != _STATE}
        if rest:
            inner.load(directory, rest, mmap)
        self._inner, self._switch_at, self._nprobe = inner, switch_at, nprobe
        return self
