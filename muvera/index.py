"""MuveraIndex: FDE candidate generation, then exact Chamfer rerank; ids, deletes, persistence.

Search is two-stage (MUVERA): each query's FDE retrieves ``candidates`` documents from a MIPS
backend, and the exact Chamfer similarity over their stored tokens picks the final top ``k``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import threading
from pathlib import Path
from typing import Any, Dict, Hashable, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from .backends import ExactBackend, FaissBackend, make_backend, topk
from .maxsim import rerank
from .config import FDEConfig
from .durable import check_file, file_entry, fsync_dir, fsync_file, write_npy
from .encoder import FDEEncoder
from .store import TokenStore, _Growable, _offsets_of, pack_tokens

__all__ = ["MuveraIndex", "ball_carve", "FORMAT_NAME", "FORMAT_VERSION"]

FORMAT_NAME = "muvera-index"
FORMAT_VERSION = 1
PathLike = Union[str, "os.PathLike[str]"]

DEFAULT_TAU = 0.7  # the paper's ball-carving threshold
_EXACT_FILTER_FLOATS = 1 << 25  # filters this small (rows x D) are scored exactly on FDEs
_INT64_MAX = 2**63 - 1


# -- helpers ------------------------------------------------------------------------------------
class _RWLock:
    """Many readers or one (re-entrant) writer; waiting writers block new readers."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer: Optional[int] = None
        self._depth = 0
        self._waiting = 0

    @contextlib.contextmanager
    def read(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._cond:
            nested = self._writer == me  # a writer may read what it holds
            if not nested:
                while self._writer is not None or self._waiting:
                    self._cond.wait()
                self._readers += 1
        try:
            yield
        finally:
            if not nested:
                with self._cond:
                    self._readers -= 1
                    if self._readers == 0:
                        self._cond.notify_all()

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._cond:
            if self._writer == me:
                self._depth += 1
            else:
                self._waiting += 1
                try:
                    while self._writer is not None or self._readers:
                        self._cond.wait()
                finally:
                    self._waiting -= 1
                self._writer, self._depth = me, 1
        try:
            yield
        finally:
            with self._cond:
                self._depth -= 1
                if self._depth == 0:
                    self._writer = None
                    self._cond.notify_all()


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected a positive int, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name}: expected a positive int, got {value}")
    return int(value)


def _tau_of(ball_carving: Any) -> Optional[float]:
    if ball_carving is None or ball_carving is False:
        return None
    if ball_carving is True:
        return DEFAULT_TAU
    if not isinstance(ball_carving, (int, float, np.floating, np.integer)) or not np.isfinite(ball_carving):
        raise ValueError(f"ball_carving: expected None, True or a finite threshold tau, got {ball_carving!r}")
    return float(ball_carving)


def _plain_int(x: Hashable) -> bool:
    """Ids that fit the int64 result array (non-negative, so -1 can pad)."""
    return type(x) is int and 0 <= x <= _INT64_MAX


def _normalise_id(x: Any, name: str) -> Hashable:
    if isinstance(x, np.generic):
        x = x.item()  # NumPy scalars -> Python ints/strs, so JSON and results stay plain
    if x is None or isinstance(x, bool):
        raise TypeError(f"{name}: ids cannot be None or bool, got {x!r}")
    try:
        hash(x)
    except TypeError:
        raise TypeError(f"{name}: ids must be hashable, got {type(x).__name__}") from None
    return x


def _id_list(ids: Any, name: str, single_ok: bool) -> List[Hashable]:
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
        if not single_ok:
            raise TypeError(f"{name}: expected a sequence of ids, got {type(ids).__name__}")
        ids = [ids]
    raw = ids.tolist() if isinstance(ids, np.ndarray) else list(ids)
    return [_normalise_id(x, name) for x in raw]


def ball_carve(tokens: np.ndarray, offsets: np.ndarray, tau: float) -> Tuple[np.ndarray, np.ndarray]:
    """Query ball carving (MUVERA paper, section 6): merge near-duplicate query tokens.

    For each query, repeatedly take the first token not yet clustered, put every unclustered
    token ``q'`` with ``<q, q'> >= tau`` (and ``q`` itself) in its cluster and replace the cluster
    by its **sum**. Chamfer scores of the carved query approximate the original ones (exact when
    clusters are singletons) at a fraction of the rerank cost.

    Parameters
    ----------
    tokens : (T, d) float32
        Packed query tokens (ColBERT-style normalised tokens; ``tau`` is an absolute threshold).
    offsets : (nq + 1,) int64
    tau : float
        Similarity threshold; the paper uses 0.7. With unit tokens, ``tau > 1`` never merges.

    Returns
    -------
    tokens : (T', d) float32, offsets : (nq + 1,) int64
    """
    out: List[np.ndarray] = []
    lens = np.zeros(len(offsets) - 1, dtype=np.int64)
    for i in range(len(lens)):
        q = tokens[offsets[i]: offsets[i + 1]]
        gram = q @ q.T
        remaining = np.ones(len(q), dtype=bool)
        clusters = []
        while remaining.any():
            seed = int(np.argmax(remaining))
            members = remaining & (gram[seed] >= tau)
            members[seed] = True
            clusters.append(q[members].sum(axis=0))
            remaining &= ~members
        out.append(np.asarray(clusters, dtype=np.float32).reshape(len(clusters), tokens.shape[1]))
        lens[i] = len(clusters)
    carved = np.concatenate(out, axis=0) if out else np.zeros((0, tokens.shape[1]), np.float32)
    return np.ascontiguousarray(carved, dtype=np.float32), _offsets_of(lens)


# -- persistence helpers ------------------------------------------------------------------------
def _backup_of(path: Path) -> Path:
    return path.with_name(path.name + ".bak")


def _swap_into_place(tmp: Path, target: Path) -> None:
    """Atomically replace ``target`` by ``tmp``; at every instant ``target`` or its backup is whole."""
    backup = _backup_of(target)
    if target.exists():
        if backup.exists():
            shutil.rmtree(backup)  # target is whole, so an old backup is stale
        os.replace(target, backup)
    try:
        os.replace(tmp, target)
    except BaseException:
        if backup.exists() and not target.exists():
            os.replace(backup, target)  # roll back
        raise
    fsync_dir(target.parent)
    shutil.rmtree(backup, ignore_errors=True)


def _load_npy(path: Path, mmap: bool) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"{path.name}: unreadable array file: {exc}") from None


def _expect(arr: np.ndarray, name: str, dtype: Any, shape: Tuple[int, ...]) -> None:
    if arr.dtype != np.dtype(dtype) or arr.shape != shape:
        raise ValueError(f"{name}: expected {np.dtype(dtype).name} {shape} per manifest.json, got "
                         f"{arr.dtype.name} {arr.shape}")


# -- the index ----------------------------------------------------------------------------------
_ADD_CHUNK = 32_768  # documents encoded per step when the backend compresses FDEs


class MuveraIndex:
    """Multi-vector retrieval index: FDE + MIPS candidates, exact Chamfer rerank.

    Parameters
    ----------
    config : FDEConfig
        FDE settings (e.g. ``FDEConfig.preset("10240", dimension=128)``).
    backend : str, default "exact"
        ``"exact"`` (brute-force BLAS) or a faiss factory string, with or without ``"faiss:"``:
        ``"HNSW32"``, ``"IVF1024,PQ1280x8"``, ...
    token_dtype : {"float16", "float32"}, default "float16"
        Precision of the stored tokens used for reranking.
    num_threads : int, optional
        Threads for encoding and reranking; default all cores.

    Notes
    -----
    * **Ids** are any hashables except None/bool (:meth:`save` needs ints or strings), returned as
      given. Results are an ``int64`` array padded with ``-1`` while every live id is a
      non-negative int (the default ids), otherwise an ``object`` array padded with ``None``.
      Scores are ``-inf`` wherever the id is padding.
    * **Deletes** tombstone rows (backends cannot delete); searches over-fetch to make up for them
      and never return removed documents. :meth:`compact` rebuilds without tombstones.
    * **Threads**: searches run concurrently (they only read); ``add``/``remove``/``compact`` take
      an exclusive lock and wait for running searches.

    Examples
    --------
    >>> import numpy as np, muvera
    >>> index = muvera.MuveraIndex(muvera.FDEConfig.preset("1280", dimension=16))
    >>> rng = np.random.default_rng(0)
    >>> docs = [rng.normal(size=(n, 16)).astype(np.float32) for n in (5, 8, 3)]
    >>> index.add(docs, ids=["a", "b", "c"])
    ['a', 'b', 'c']
    >>> ids, scores = index.search([docs[1]], k=2)
    >>> ids[0, 0]
    'b'
    """

    def __init__(self, config: FDEConfig, backend: str = "exact", token_dtype: str = "float16",
                 num_threads: Optional[int] = None):
        if not isinstance(config, FDEConfig):
            raise TypeError(f"config: expected an FDEConfig, got {type(config).__name__}")
        self._config = config
        self._encoder = FDEEncoder(config, num_threads=num_threads)
        self._num_threads = 0 if num_threads is None else int(num_threads)
        self._backend = make_backend(backend, config.output_dimension)
        self._store = TokenStore(config.dimension, token_dtype)
        # FDEs are encoded from the tokens as stored (after rounding to token_dtype), so they are
        # a pure function of the store: a compressed backend keeps no float32 copy, and compact()
        # or a change of backend on load re-encodes them bit for bit.
        self._row_ids = _Growable((), object)
        self._row_int = _Growable((), np.int64)
        self._id_to_row: Dict[Hashable, int] = {}
        self._n_other_ids = 0  # live ids that do not fit the int64 result array
        self._next_id = 0
        self._rw = _RWLock()
        self._save_lock = threading.Lock()

    # -- properties ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._id_to_row)

    def __contains__(self, doc_id: Any) -> bool:
        try:
            return _normalise_id(doc_id, "id") in self._id_to_row
        except TypeError:
            return False

    def __repr__(self) -> str:
        return (f"MuveraIndex(documents={len(self)}, backend={self._backend.name!r}, "
                f"token_dtype={self._store.dtype.name!r}, fde_dimension={self._config.output_dimension})")

    @property
    def config(self) -> FDEConfig:
        """The FDE configuration."""
        return self._config

    @property
    def encoder(self) -> FDEEncoder:
        """The FDE encoder (shared by documents and queries)."""
        return self._encoder

    @property
    def backend(self) -> Any:
        """The MIPS backend (:class:`~muvera.backends.Backend`)."""
        return self._backend

    @property
    def store(self) -> TokenStore:
        """The token store (rows include tombstones)."""
        return self._store

    @property
    def ids(self) -> List[Hashable]:
        """Live ids, in insertion (row) order."""
        with self._rw.read():
            return self._row_ids.view[np.flatnonzero(self._store.alive)].tolist()

    @property
    def num_deleted(self) -> int:
        """Tombstoned rows awaiting :meth:`compact`."""
        return len(self._store) - len(self)

    @property
    def nbytes(self) -> int:
        """Approximate memory held: tokens, FDEs / backend, ids."""
        return self._store.nbytes + self._backend.nbytes + self._row_int.nbytes * 2

    @property
    def num_threads(self) -> int:
        """Threads for encoding and reranking (0: every core)."""
        return self._num_threads

    @num_threads.setter
    def num_threads(self, value: Optional[int]) -> None:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"num_threads: expected a positive int or None, got {value!r}")
        self._num_threads = 0 if value is None else int(value)
        self._encoder = FDEEncoder(self._config, num_threads=value)

    def _fdes_of_rows(self, rows: np.ndarray) -> np.ndarray:
        """FDEs of store rows: the exact backend's copy, else re-encoded from the stored tokens."""
        if isinstance(self._backend, ExactBackend):
            return self._backend.vectors[rows]
        return self._encoder.encode_spans(self._store.tokens, self._store.offsets[rows],
                                          self._store.lengths[rows], is_document=True)

    # -- add / remove --------------------------------------------------------------------------
    def add(self, documents: Any, ids: Optional[Sequence[Hashable]] = None, *, lengths: Any = None,
            offsets: Any = None, mask: Any = None) -> List[Hashable]:
        """Add documents; returns their ids.

        Parameters
        ----------
        documents : list of (n_i, d) arrays, packed (T, d) array with lengths/offsets, or padded
            (n, L, d) array with mask (NumPy or torch; float32/64/16, bfloat16)
        ids : sequence of hashable, optional
            One per document, unique, not already live. Default: consecutive ints after the
            largest int id used so far.
        lengths, offsets, mask : optional
            Item boundaries for packed / padded input.

        Raises
        ------
        ValueError
            Wrong dimension, empty batch, a document with no tokens, NaN/Inf, duplicate ids, too
            few documents to train a faiss index. The index is unchanged after any error.
        TypeError
            Unsupported input or id types.
        """
        tokens, lens = pack_tokens(documents, self._config.dimension, self._store.dtype,
                                   lengths=lengths, offsets=offsets, mask=mask, name="documents")
        exact = isinstance(self._backend, ExactBackend)
        fdes = self._encoder.encode_documents(tokens, lengths=lens) if exact else None
        with self._rw.write():
            new_ids = self._check_new_ids(ids, len(lens))
            if exact:
                self._backend.add(fdes)
            else:
                self._add_chunked(tokens, lens)  # may fail only in its first chunk (faiss training)
            rows = self._store.append_packed(tokens, lens, validate=False)
            obj = np.empty(len(new_ids), dtype=object)
            obj[:] = new_ids
            self._row_ids.extend(obj)
            self._row_int.extend(np.array([x if _plain_int(x) else -1 for x in new_ids], dtype=np.int64))
            for doc_id, row in zip(new_ids, rows.tolist()):
                self._id_to_row[doc_id] = row
            self._n_other_ids += sum(not _plain_int(x) for x in new_ids)
            ints = [x for x in new_ids if type(x) is int]
            if ints:
                self._next_id = max(self._next_id, max(ints) + 1)
        return new_ids

    def _add_chunked(self, tokens: np.ndarray, lens: np.ndarray) -> None:
        """Encode and hand FDEs to a compressing backend in chunks: the float32 FDEs of a large
        batch (40 KB per document at 10240 d) never exist all at once."""
        starts = np.zeros(len(lens), dtype=np.int64)
        np.cumsum(lens[:-1], out=starts[1:])
        chunk = max(_ADD_CHUNK, getattr(self._backend, "train_size", 0))
        for s in range(0, len(lens), chunk):
            e = min(len(lens), s + chunk)
            self._backend.add(self._encoder.encode_spans(tokens, starts[s:e], lens[s:e], is_document=True))

    def _check_new_ids(self, ids: Any, n: int) -> List[Hashable]:
        if ids is None:
            return list(range(self._next_id, self._next_id + n))
        new = _id_list(ids, "ids", single_ok=False)
        if len(new) != n:
            raise ValueError(f"ids: expected {n} ids (one per document), got {len(new)}")
        if len(set(new)) != n:
            seen: set = set()
            dups = [x for x in new if x in seen or seen.add(x)]  # type: ignore[func-returns-value]
            raise ValueError(f"ids: duplicate ids in this call: {dups[:10]}")
        clash = [x for x in new if x in self._id_to_row]
        if clash:
            raise ValueError(f"ids: already in the index: {clash[:10]}")
        return new

    def remove(self, ids: Any) -> int:
        """Remove documents by id (one id or an iterable); returns how many were removed.

        Raises
        ------
        KeyError
            If any id is not in the index (nothing is removed then).
        """
        targets = list(dict.fromkeys(_id_list(ids, "ids", single_ok=True)))
        with self._rw.write():
            missing = [x for x in targets if x not in self._id_to_row]
            if missing:
                raise KeyError(f"ids: not in the index: {missing[:10]}")
            rows = [self._id_to_row.pop(x) for x in targets]
            self._store.delete(np.asarray(rows, dtype=np.int64))
            self._n_other_ids -= sum(not _plain_int(x) for x in targets)
        return len(targets)

    def compact(self) -> int:
        """Drop tombstoned rows from the store and rebuild the backend; returns rows dropped.

        A trained faiss index keeps its training (it is cloned, emptied and refilled).
        """
        with self._rw.write():
            keep = self._store.alive.astype(bool)
            dropped = int(len(keep) - keep.sum())
            if dropped == 0:
                return 0
            fdes = np.ascontiguousarray(self._fdes_of_rows(np.flatnonzero(keep)))
            backend = self._backend.empty_copy()  # built before any state changes
            if isinstance(backend, ExactBackend):
                backend.set_vectors(fdes)
            else:
                backend.add(fdes)
            self._store.compact()
            self._backend = backend
            self._row_ids = _Growable((), object, self._row_ids.view[keep])
            self._row_int = _Growable((), np.int64, self._row_int.view[keep])
            self._id_to_row = {x: i for i, x in enumerate(self._row_ids.view.tolist())}
            return dropped

    def get_tokens(self, doc_id: Hashable) -> np.ndarray:
        """A copy of one document's stored tokens ``(n_tokens, d)`` in the store dtype."""
        key = _normalise_id(doc_id, "id")
        with self._rw.read():
            if key not in self._id_to_row:
                raise KeyError(f"id: {key!r} is not in the index")
            return self._store.get(self._id_to_row[key]).copy()

    # -- search --------------------------------------------------------------------------------
    def search(self, queries: Any, k: int = 10, candidates: int = 100, *, ball_carving: Any = None,
               filter_ids: Optional[Iterable[Hashable]] = None, params: Optional[Dict[str, Any]] = None,
               lengths: Any = None, offsets: Any = None, mask: Any = None) -> Tuple[np.ndarray, np.ndarray]:
        """Top-``k`` documents per query: FDE candidates from the backend, exact Chamfer rerank.

        Parameters
        ----------
        queries : any batch form (list of (n_i, d) arrays, packed + lengths/offsets, padded + mask)
        k : int, default 10
        candidates : int, default 100
            Live documents reranked per query (>= k). When it covers every eligible document
            the backend is skipped and the result equals :meth:`search_exact`.
        ball_carving : None, True or float
            Carve the rerank query (:func:`ball_carve`) with threshold ``tau`` (True: 0.7). The
            FDE stage always uses the original query.
        filter_ids : iterable of ids, optional
            Only these documents may be returned (unknown or removed ids are ignored).
        params : dict, optional
            Backend search parameters, e.g. ``{"efSearch": 128}`` (HNSW), ``{"nprobe": 16}`` (IVF).
        lengths, offsets, mask : optional
            Item boundaries for packed / padded queries.

        Returns
        -------
        ids : (nq, k) int64 (padded -1) or object (padded None) array
            int64 while every live id is a non-negative int, object otherwise.
        scores : (nq, k) float32
            Chamfer scores (of the carved query when carving), best first; ``-inf`` padding.

        Notes
        -----
        Over-fetch: the backend is asked for ``ceil(candidates * rows / eligible)`` vectors
        (``rows`` includes tombstones, ``eligible`` counts live, filter-passing documents);
        queries still short of ``candidates`` eligible hits are re-asked with twice as many,
        up to every row. A filter whose FDE block (``eligible x D`` floats) is at most 32 Mi
        floats is scored exactly on the FDEs instead.
        """
        k = _positive_int(k, "k")
        c = _positive_int(candidates, "candidates")
        if c < k:
            raise ValueError(f"candidates: expected >= k ({k}), got {c}")
        tau = _tau_of(ball_carving)
        qtok, qoff = self._pack_queries(queries, lengths, offsets, mask)
        qfde = self._encoder.encode_queries(qtok, offsets=qoff)
        if tau is not None:
            qtok, qoff = ball_carve(qtok, qoff, tau)
        with self._rw.read():
            allowed = self._allowed(filter_ids)
            n_allowed = int(np.count_nonzero(allowed))
            c_eff = min(c, n_allowed)
            if n_allowed == 0 or c_eff == n_allowed:
                cand = None  # rerank every eligible document: exact
            elif filter_ids is not None and n_allowed * qfde.shape[1] <= _EXACT_FILTER_FLOATS:
                cand = self._filter_candidates(qfde, allowed, c_eff)
            else:
                cand = self._backend_candidates(qfde, allowed, n_allowed, c_eff, params)
            return self._rerank(qtok, qoff, k, cand, allowed)

    def search_exact(self, queries: Any, k: int = 10, *, filter_ids: Optional[Iterable[Hashable]] = None,
                     lengths: Any = None, offsets: Any = None,
                     mask: Any = None) -> Tuple[np.ndarray, np.ndarray]:
        """Brute-force Chamfer top-``k`` over every live document (the ground truth).

        Same arguments and return convention as :meth:`search`.
        """
        k = _positive_int(k, "k")
        qtok, qoff = self._pack_queries(queries, lengths, offsets, mask)
        with self._rw.read():
            return self._rerank(qtok, qoff, k, None, self._allowed(filter_ids))

    def _pack_queries(self, queries: Any, lengths: Any, offsets: Any,
                      mask: Any) -> Tuple[np.ndarray, np.ndarray]:
        tokens, lens = pack_tokens(queries, self._config.dimension, np.float32, lengths=lengths,
                                   offsets=offsets, mask=mask, name="queries")
        return tokens, _offsets_of(lens)

    def _allowed(self, filter_ids: Optional[Iterable[Hashable]]) -> np.ndarray:
        alive = self._store.alive
        if filter_ids is None:
            return alive
        wanted = _id_list(filter_ids, "filter_ids", single_ok=False)
        rows = [self._id_to_row[x] for x in wanted if x in self._id_to_row]
        mask = np.zeros(len(alive), dtype=np.uint8)
        mask[np.asarray(rows, dtype=np.int64)] = 1
        return mask & alive

    def _filter_candidates(self, qfde: np.ndarray, allowed: np.ndarray, c: int) -> np.ndarray:
        rows = np.flatnonzero(allowed)
        cols, _ = topk(qfde @ self._fdes_of_rows(rows).T, c)
        return rows[cols]

    def _backend_candidates(self, qfde: np.ndarray, allowed: np.ndarray, n_allowed: int, c: int,
                            params: Optional[Dict[str, Any]]) -> np.ndarray:
        ntotal = self._backend.ntotal
        fetch = min(ntotal, -(-c * ntotal // n_allowed))  # expected to hold c eligible rows
        out = np.full((len(qfde), c), -1, dtype=np.int64)
        pending = np.arange(len(qfde))
        while pending.size:
            rows, _ = self._backend.search(qfde[pending], fetch, params)
            ok = rows >= 0
            ok[ok] = allowed[rows[ok]].astype(bool)
            done = (ok.sum(axis=1) >= c) | (fetch >= ntotal)
            # First c eligible rows per finished query, in backend order (stable sort).
            order = np.argsort(~ok[done], axis=1, kind="stable")[:, :c]
            sel = np.take_along_axis(rows[done], order, axis=1)
            sel[~np.take_along_axis(ok[done], order, axis=1)] = -1
            out[pending[done]] = sel
            pending = pending[~done]
            fetch = min(ntotal, 2 * fetch)
        return out

    def _rerank(self, qtok: np.ndarray, qoff: np.ndarray, k: int, cand: Optional[np.ndarray],
                allowed: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        nq = len(qoff) - 1
        if not allowed.any():
            rows = np.full((nq, k), -1, dtype=np.int64)
            scores = np.full((nq, k), -np.inf, dtype=np.float32)
        else:
            rows, scores = rerank(qtok, qoff, self._store.tokens, self._store.offsets, k,
                                  candidates=cand, alive=allowed, num_threads=self._num_threads)
        return self._ids_of(rows), scores

    def _ids_of(self, rows: np.ndarray) -> np.ndarray:
        valid = rows >= 0
        if self._n_other_ids == 0:
            out = np.full(rows.shape, -1, dtype=np.int64)
            out[valid] = self._row_int.view[rows[valid]]
        else:
            out = np.full(rows.shape, None, dtype=object)
            out[valid] = self._row_ids.view[rows[valid]]
        return out

    # -- persistence ---------------------------------------------------------------------------
    def save(self, path: PathLike) -> None:
        """Save to directory ``path`` atomically (versioned format, checksummed files).

        Files go to a temporary sibling ``<path>.tmp-<random>`` (fsynced); then an existing
        ``path`` is renamed to ``<path>.bak``, the new directory to ``path``, and the backup is
        deleted. A crash at any point leaves ``path`` or ``<path>.bak`` whole, and :meth:`load`
        falls back to ``<path>.bak`` when ``path`` is missing. Stale temporaries from a crashed
        save are removed by the next save. Concurrent searches may continue meanwhile.

        Raises
        ------
        TypeError
            If an id is neither int nor str.
        ValueError
            If ``path`` exists and is not a muvera index directory.
        """
        from . import __version__  # noqa: PLC0415 (the package is loaded by now)

        target = Path(os.fspath(path)).absolute()
        with self._save_lock, self._rw.read():
            alive = self._store.alive
            ids = [x if a else None for x, a in zip(self._row_ids.view.tolist(), alive.tolist())]
            bad = [x for x in ids if x is not None and type(x) not in (int, str)]
            if bad:
                raise TypeError(f"ids: save needs int or str ids, got {bad[:5]}")
            if target.exists() and not (target.is_dir() and (
                    (target / "manifest.json").exists() or not any(target.iterdir()))):
                raise ValueError(f"path: {target} exists and is not a muvera index directory")
            target.parent.mkdir(parents=True, exist_ok=True)
            for stale in target.parent.iterdir():  # temporaries of a crashed save
                if stale.name.startswith(target.name + ".tmp-"):
                    shutil.rmtree(stale, ignore_errors=True)
            tmp = target.with_name(f"{target.name}.tmp-{secrets.token_hex(6)}")
            tmp.mkdir()
            try:
                files = {
                    "tokens.npy": write_npy(tmp / "tokens.npy", self._store.tokens),
                    "offsets.npy": write_npy(tmp / "offsets.npy", self._store.offsets),
                    "alive.npy": write_npy(tmp / "alive.npy", alive),
                }
                if isinstance(self._backend, ExactBackend):
                    files["fdes.npy"] = write_npy(tmp / "fdes.npy", self._backend.vectors)
                if isinstance(self._backend, FaissBackend):
                    self._backend.save(tmp / "backend.faiss")
                    fsync_file(tmp / "backend.faiss")
                    files["backend.faiss"] = file_entry(tmp / "backend.faiss")
                manifest = {
                    "format": FORMAT_NAME, "format_version": FORMAT_VERSION,
                    "muvera_version": __version__, "config": self._config.to_dict(),
                    "backend": self._backend.name, "token_dtype": self._store.dtype.name,
                    "dimension": self._config.dimension, "fde_dimension": self._config.output_dimension,
                    "num_rows": len(self._store), "num_live": len(self),
                    "num_tokens": self._store.num_tokens, "next_id": self._next_id,
                    "ids": ids, "files": files,
                }
                with open(tmp / "manifest.json", "w", encoding="utf-8") as f:
                    json.dump(manifest, f)
                    f.flush()
                    os.fsync(f.fileno())
                fsync_dir(tmp)
                _swap_into_place(tmp, target)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise

    @classmethod
    def load(cls, path: PathLike, mmap: bool = True, *, backend: Optional[str] = None,
             verify: bool = True, num_threads: Optional[int] = None) -> "MuveraIndex":
        """Load an index saved by :meth:`save`.

        Parameters
        ----------
        path : str or path
            The index directory (``<path>.bak`` is used if ``path`` is missing: an interrupted save).
        mmap : bool, default True
            Memory-map tokens (and the exact backend's FDEs) read-only; appending copies them.
        backend : str, optional
            Rebuild with another backend from the saved FDEs (default: the saved one).
        verify : bool, default True
            Check every file's SHA-256 (reads each file once). Sizes are always checked.
        num_threads : int, optional

        Raises
        ------
        FileNotFoundError
            No index at ``path`` (nor a backup).
        ValueError
            Unknown format, a newer format version, a missing, truncated or corrupted file
            (named), or contents inconsistent with ``manifest.json``.
        """
        root = Path(os.fspath(path))
        if not (root / "manifest.json").exists() and not root.exists() and \
                (_backup_of(root) / "manifest.json").exists():
            root = _backup_of(root)  # a save was interrupted between its two renames
        if not root.is_dir():
            raise FileNotFoundError(f"path: no muvera index at {os.fspath(path)}")
        try:
            manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ValueError(f"manifest.json: missing from {root}") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"manifest.json: not valid JSON: {exc}") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
            raise ValueError(f"manifest.json: not a {FORMAT_NAME} manifest")
        version = manifest.get("format_version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ValueError(f"manifest.json: bad format_version {version!r}")
        if version > FORMAT_VERSION:
            raise ValueError(f"manifest.json: format version {version} is newer than this muvera "
                             f"supports ({FORMAT_VERSION}); upgrade muvera")
        try:
            return cls._from_manifest(root, manifest, mmap, backend, verify, num_threads)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"manifest.json: malformed ({type(exc).__name__}: {exc})") from None

    @classmethod
    def _from_manifest(cls, root: Path, m: Dict[str, Any], mmap: bool, backend: Optional[str],
                       verify: bool, num_threads: Optional[int]) -> "MuveraIndex":
        files = m["files"]
        spec = m["backend"] if backend is None else backend
        needed = ["tokens.npy", "offsets.npy", "alive.npy"]
        # The saved faiss file serves when the backend is unchanged; saved FDEs (exact backend)
        # fill an exact backend; anything else is rebuilt by re-encoding the stored tokens.
        use_faiss_file = "backend.faiss" in files and make_backend(spec).name == m["backend"]
        use_fdes = "fdes.npy" in files and not use_faiss_file
        for name in needed + (["backend.faiss"] if use_faiss_file else []) + (["fdes.npy"] if use_fdes else []):
            check_file(root / name, files.get(name), name, verify)
        try:
            config = FDEConfig.from_dict(m["config"])
        except (TypeError, ValueError) as exc:
            raise ValueError(f"manifest.json: bad config: {exc}") from None
        n, t, d, big_d = m["num_rows"], m["num_tokens"], m["dimension"], m["fde_dimension"]
        if d != config.dimension or big_d != config.output_dimension:
            raise ValueError("manifest.json: dimension/fde_dimension disagree with the config")
        tokens = _load_npy(root / "tokens.npy", mmap)
        _expect(tokens, "tokens.npy", m["token_dtype"], (t, d))
        offsets = _load_npy(root / "offsets.npy", False)
        _expect(offsets, "offsets.npy", np.int64, (n + 1,))
        alive = _load_npy(root / "alive.npy", False)
        _expect(alive, "alive.npy", np.uint8, (n,))
        fdes = None
        if use_fdes:
            fdes = _load_npy(root / "fdes.npy", mmap)
            _expect(fdes, "fdes.npy", np.float32, (n, big_d))
        ids = m["ids"]
        if not isinstance(ids, list) or len(ids) != n:
            raise ValueError(f"manifest.json: expected {n} ids")
        live = alive.astype(bool).tolist()
        if any((x is None) == a for x, a in zip(ids, live)) or \
                any(type(x) not in (int, str) for x in ids if x is not None):
            raise ValueError("manifest.json: ids must be int/str exactly where alive.npy is 1")

        index = cls(config, spec, m["token_dtype"], num_threads)
        try:
            index._store = TokenStore.from_arrays(tokens, offsets, alive)
        except ValueError as exc:
            raise ValueError(f"offsets.npy/alive.npy: inconsistent ({exc})") from None
        if use_faiss_file:
            index._backend.load(root / "backend.faiss")
            if index._backend.ntotal != n:
                raise ValueError(f"backend.faiss: holds {index._backend.ntotal} vectors, expected {n}")
        elif n:
            if fdes is None:  # re-encode from the stored tokens (bit-identical to the saved run)
                fdes = index._encoder.encode_spans(tokens, offsets[:-1], np.diff(offsets), is_document=True)
            if isinstance(index._backend, ExactBackend):
                index._backend.set_vectors(fdes)
            else:
                index._backend.add(fdes)
        obj = np.empty(n, dtype=object)
        obj[:] = ids
        index._row_ids = _Growable((), object, obj)
        index._row_int = _Growable((), np.int64, np.array(
            [x if _plain_int(x) else -1 for x in ids], dtype=np.int64))
        index._id_to_row = {x: i for i, x in enumerate(ids) if x is not None}
        if len(index._id_to_row) != sum(live):
            raise ValueError("manifest.json: duplicate live ids")
        index._n_other_ids = sum(not _plain_int(x) for x in index._id_to_row)
        next_id = m["next_id"]
        if isinstance(next_id, bool) or not isinstance(next_id, int):
            raise ValueError("manifest.json: bad next_id")
        index._next_id = next_id
        return index
