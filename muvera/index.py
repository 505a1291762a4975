"""MuveraIndex: FDE candidate generation, then exact Chamfer rerank; ids, deletes, persistence.

Search is two-stage (MUVERA): each query's FDE retrieves ``candidates`` documents from a MIPS
backend, and the exact Chamfer similarity over their stored tokens picks the final top ``k``.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import index_format
from ._validate import MAX_THREADS, check_search_args, positive_int
from .backends import AllowedRows, Backend, make_backend
from .prune import DEFAULT_PRUNE_FACTOR, check_prune_codec, check_prune_factor, split_prune
from .config import FDEConfig
from .encoder import FDEEncoder
from .idmap import IdLike, IdMap, id_list
from .metadata import MetadataStore
from ._progress import progress as _progress_bar
from .stream import as_batch, is_stream
from .index_format import FORMAT_NAME, FORMAT_VERSION
from ._threads import SEARCH_GATE
from .ragged import offsets_of
from .store import TokenStore, pack_tokens
from .tune import TuneResult, check_tuned
from .wal import WriteAheadLog
from .wal import encode_add as wal_add
from .wal import encode_remove as wal_remove

__all__ = ["MuveraIndex", "ball_carve", "FORMAT_NAME", "FORMAT_VERSION"]

PathLike = Union[str, "os.PathLike[str]"]
DEFAULT_TAU = 0.7  # the paper's ball-carving threshold
_DECODE_ROWS = 2048  # documents decoded at once when FDEs are re-encoded from compressed codes
log = logging.getLogger("muvera")


# -- helpers ------------------------------------------------------------------------------------
class _Crossing:
    """A backend being built on a background thread for an ``auto`` crossing."""

    def __init__(self, backend: Backend, rows: int, generation: int, before: Backend):
        self.backend, self.rows, self.generation, self.before = backend, rows, generation, before
        self.ready = threading.Event()  # trained and filled with the first `rows` (or failed)
        self.error: Optional[BaseException] = None
        self.thread: Optional[threading.Thread] = None


def _active(backend: Backend) -> str:
    """What a backend runs (``auto``'s active phase, else its name)."""
    return str(getattr(backend, "active", backend.name))


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


def ball_carving_tau(ball_carving: Any) -> Optional[float]:
    if ball_carving is None or ball_carving is False:
        return None
    if ball_carving is True:
        return DEFAULT_TAU
    if not isinstance(ball_carving, (int, float, np.floating, np.integer)) or not np.isfinite(ball_carving):
        raise ValueError(f"ball_carving: expected None, True or a finite threshold tau, got {ball_carving!r}")
    return float(ball_carving)


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
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or tokens.dtype.kind != "f":
        raise ValueError(f"tokens: expected a packed (T, d) float array, got {tokens.dtype} {tokens.shape}")
    offsets = np.asarray(offsets)
    if offsets.ndim != 1 or len(offsets) < 1 or (offsets.size and offsets.dtype.kind not in "iu"):
        raise ValueError("offsets: expected a 1-D integer array of n_queries + 1 values")
    if offsets[0] != 0 or offsets[-1] != len(tokens) or (np.diff(offsets) < 0).any():
        raise ValueError(f"offsets: expected a non-decreasing sequence from 0 to {len(tokens)} (the token rows)")
    if not np.isfinite(float(tau)):
        raise ValueError(f"tau: expected a finite threshold, got {tau!r}")
    out: List[np.ndarray] = []
    lens = np.zeros(len(offsets) - 1, dtype=np.int64)
    for i in range(len(lens)):
        clusters = _carve_one(np.asarray(tokens[offsets[i]: offsets[i + 1]], dtype=np.float32), float(tau))
        out.append(clusters)
        lens[i] = len(clusters)
    carved = np.concatenate(out, axis=0) if out else np.zeros((0, tokens.shape[1]), np.float32)
    return np.ascontiguousarray(carved, dtype=np.float32), offsets_of(lens)


#: Similarity values held at once while carving one query: memory stays linear in its length.
_CARVE_BLOCK_FLOATS = 1 << 22


def _carve_one(q: np.ndarray, tau: float) -> np.ndarray:
    """Greedy carving of one query. The seeds are, in order, the first tokens still unclustered,
    so the similarity rows of the next few unclustered tokens are computed together (one block
    of at most ``_CARVE_BLOCK_FLOATS`` values, never the n x n Gram matrix), and each becomes a
    seed only if no earlier seed took it."""
    n, d = q.shape
    remaining = np.ones(n, dtype=bool)
    sums = np.zeros((n, d), dtype=np.float32)  # worst case: every token its own cluster
    count = 0
    block = max(1, _CARVE_BLOCK_FLOATS // max(1, n))
    pos = 0
    while pos < n:
        nxt = np.flatnonzero(remaining[pos:])
        if not len(nxt):
            break
        seeds = nxt[:block] + pos
        sims = q[seeds] @ q.T  # (len(seeds), n)
        for r, seed in enumerate(seeds.tolist()):
            if not remaining[seed]:
                continue  # an earlier seed of this block took it
            members = remaining & (sims[r] >= tau)
            members[seed] = True
            sums[count] = q[members].sum(axis=0)
            count += 1
            remaining &= ~members
        pos = int(seeds[-1]) + 1
    return sums[:count].copy()


def _fuse(lists: List[Tuple[np.ndarray, np.ndarray, float]], fusion: str, rrf_k: int) -> List[Tuple[int, float]]:
    """Fused ``(row, score)`` best first (ties: the lower row) from ranked ``(rows, scores,
    weight)`` lists: reciprocal rank fusion, or a weighted sum of min-max normalised scores."""
    total: Dict[int, float] = {}
    for rows, scores, weight in lists:
        if not len(rows) or weight == 0:
            continue
        if fusion == "rrf":
            parts = weight / (rrf_k + 1.0 + np.arange(len(rows)))
        else:
            lo, hi = float(np.min(scores)), float(np.max(scores))
            parts = weight * ((scores - lo) / (hi - lo) if hi > lo else np.ones(len(rows)))
        for r, p in zip(rows.tolist(), parts.tolist()):
            total[r] = total.get(r, 0.0) + p
    return sorted(total.items(), key=lambda rs: (-rs[1], rs[0]))


def _check_texts(texts: Any, n: int) -> List[str]:
    """One str per document, or a TypeError/ValueError naming ``texts``."""
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence):
        raise TypeError(f"texts: expected a list of {n} strings, got {type(texts).__name__}")
    items = list(texts)
    if len(items) != n:
        raise ValueError(f"texts: expected {n} strings (one per document), got {len(items)}")
    bad = next((i for i, t in enumerate(items) if not isinstance(t, str)), None)
    if bad is not None:
        raise TypeError(f"texts[{bad}]: expected a str, got {type(items[bad]).__name__}")
    return items


def _same_kind(exc: BaseException) -> type:
    """ValueError or TypeError, whichever ``exc`` is: a re-raise with more context must not call
    a subclass's constructor with one string (UnicodeDecodeError takes five arguments)."""
    return TypeError if isinstance(exc, TypeError) else ValueError


def codec_spec(token_dtype: Any, token_codec: Any) -> str:
    if token_dtype is not None and not isinstance(token_dtype, str):
        token_dtype = np.dtype(token_dtype).name
    if token_dtype is not None and token_codec is not None and token_dtype != token_codec:
        raise ValueError(f"token_codec: {token_codec!r} disagrees with token_dtype {token_dtype!r}; give one")
    spec = token_codec if token_codec is not None else token_dtype
    return "float16" if spec is None else spec


class MuveraIndex:
    """Multi-vector retrieval index: FDE + MIPS candidates, exact Chamfer rerank.

    The index composes four parts and knows none of their insides: an
    :class:`~muvera.idmap.IdMap` (ids <-> rows, tombstones), an :class:`~muvera.FDEEncoder`, a
    :class:`~muvera.backends.Backend` (FDE candidates) and a :class:`~muvera.store.TokenStore`
    (tokens and the rerank on them). Each part saves and loads its own files through
    :mod:`muvera.index_format`.

    Parameters
    ----------
    config : FDEConfig
        FDE settings (e.g. ``FDEConfig.preset("10240", dimension=128)``).
    backend : str, default "auto"
        A backend spec (:func:`muvera.backends.make_backend`): ``"auto"`` (exact scan below
        2,000 documents, 4-bit PQ fast-scan below 50,000, IVF + PQ fast-scan beyond;
        ``index.backend.active`` says which, :mod:`muvera.backends.auto` gives the rule),
        ``"exact"`` (brute-force BLAS), a faiss factory string with or without ``"faiss:"``
        (``"HNSW32"``, ``"IVF1024,PQ1280x8"``), or a registered kind.
    token_dtype : {"float16", "float32"}, optional
        Kept for compatibility: the same as ``token_codec``.
    num_threads : int, optional
        Threads for encoding and reranking; default all cores.
    token_codec : str, optional
        Token encoding of the store (:func:`muvera.codecs.make_codec`); default ``"float16"``.
    model : str, optional
        The text model spec that made the tokens (e.g. ``"default"``); saved with the index so
        ``muvera search`` encodes queries with the same model.
    keep_exact : bool, default False
        Keep a float16 exact tier beside compressed codes, for ``search(..., rescore=N)``.
    exact_spill_dir : path, optional
        With ``keep_exact``: append the exact tier to a temporary file in this directory while
        documents are added, instead of holding it in RAM (it is memory-mapped for rescoring and
        copied into the index directory by :meth:`save`). For corpora whose float16 tokens do not
        fit in memory.

    Notes
    -----
    * **Ids** are ints (non-negative) or strings, one kind per index, fixed by the first ``add``.
      Results are ``int64`` arrays padded with ``-1`` for int ids (and for an index that never
      held ids), ``object`` arrays padded with ``None`` for string ids. Scores are ``-inf``
      wherever the id is padding.
    * **Deletes** tombstone rows; tombstones and ``filter_ids`` reach the backend and the rerank
      as one allowed-rows bitmap, so removed documents are never returned and never cost an
      over-fetch. :meth:`compact` drops them.
    * **Threads**: searches run concurrently (they only read); ``add``/``remove`` take an
      exclusive lock and wait for running searches; :meth:`compact` builds its new parts while
      searches go on and takes the exclusive lock only to swap them in.

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

    def __init__(self, config: FDEConfig, backend: str = "auto", token_dtype: Any = None,
                 num_threads: Optional[int] = None, *, token_codec: Optional[str] = None,
                 model: Optional[str] = None, keep_exact: bool = False,
                 exact_spill_dir: Optional[PathLike] = None):
        if not isinstance(config, FDEConfig):
            raise TypeError(f"config: expected an FDEConfig, got {type(config).__name__}")
        if num_threads is not None:
            positive_int(num_threads, "num_threads", MAX_THREADS)
        if model is not None and not isinstance(model, str):
            raise TypeError(f"model: expected a model spec string or None, got {type(model).__name__}")
        self._config = config
        self._encoder = FDEEncoder(config, num_threads=num_threads)
        self._num_threads = 0 if num_threads is None else int(num_threads)
        self._store = TokenStore(config.dimension, codec_spec(token_dtype, token_codec))
        if isinstance(backend, str) and backend.strip().lower() == "auto" and self._store.codec.kind == "residual":
            # Residual codes carry centroid ids: the centroid-interaction prune replaces the SQ8
            # FDE refine (muvera.prune), so the default index stores no refine codes.
            backend = "auto:refine=none"
        self._backend: Backend = make_backend(backend, config.output_dimension)
        # FDEs are encoded from the tokens in the codec's input dtype (float16 for the default
        # store), so they are a pure function of the store: compact() or a change of backend on
        # load re-encodes them bit for bit.
        self._ids = IdMap()
        self._model = model
        if not isinstance(keep_exact, (bool, np.bool_)):
            raise TypeError(f"keep_exact: expected a bool, got {type(keep_exact).__name__}")
        if keep_exact and self._store.stores_tokens:
            raise ValueError(f"keep_exact: the {self._store.codec_name!r} store is exact already; the exact "
                             "tier serves compressed codecs such as 'int8'")
        # The exact tier: float16 tokens beside the codes (memory-mapped once saved and loaded),
        # read only to rescore the best candidates (search(..., rescore=N)).
        if exact_spill_dir is not None and not isinstance(exact_spill_dir, (str, os.PathLike)):
            raise TypeError(f"exact_spill_dir: expected a directory path, got {type(exact_spill_dir).__name__}")
        self._exact: Optional[TokenStore] = None
        if keep_exact:
            self._exact = (TokenStore(config.dimension, "float16") if exact_spill_dir is None
                           else TokenStore.spilled(config.dimension, "float16", exact_spill_dir))
        elif exact_spill_dir is not None:
            raise ValueError("exact_spill_dir: only used with keep_exact=True")
        self._meta = MetadataStore()
        self._compactions = 0  # renumberings so far: a `where` result from before one is stale
        self._wal: Optional[WriteAheadLog] = None  # open(..., wal=True): changes logged before applied
        self._build_state: Optional[Dict[str, Any]] = None  # muvera.build_index's record (resume)
        self._tuned: Optional[Dict[str, Any]] = None  # tune()'s chosen search setting
        # The prune width searches use unless params say (residual codes, no refine stage); an
        # index saved before 0.10.0 loads with 1: it searches as it did (muvera.prune).
        self._prune_factor = DEFAULT_PRUNE_FACTOR
        self._rw = _RWLock()
        self._mutate = threading.Lock()  # one writer at a time (add/remove/compact)
        self._unflushed = threading.local()  # group commit: (log, end) of this thread's records
        self._crossing: Optional[_Crossing] = None  # a backend being built in the background
        self._crossing_wanted = False  # an add crossed into one: start it once the add commits
        self._crossing_retry_at = 0  # after a failed background build: not before this many rows
        self._save_lock = threading.Lock()

    # -- properties ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, doc_id: Any) -> bool:
        return doc_id in self._ids

    def __repr__(self) -> str:
        return (f"MuveraIndex(documents={len(self)}, backend={self._backend.name!r}, "
                f"token_codec={self._store.codec_name!r}, fde_dimension={self._config.output_dimension})")

    @property
    def config(self) -> FDEConfig:
        """The FDE configuration."""
        return self._config

    @property
    def encoder(self) -> FDEEncoder:
        """The FDE encoder (shared by documents and queries)."""
        return self._encoder

    @property
    def backend(self) -> Backend:
        """The MIPS backend (:class:`~muvera.backends.Backend`)."""
        return self._backend

    @property
    def store(self) -> TokenStore:
        """The token store (rows include tombstones)."""
        return self._store

    @property
    def exact_tier(self) -> Optional[TokenStore]:
        """The float16 exact tier (``keep_exact=True``), else None. Assign a store holding the
        same rows to move it (``build_index`` moves a loaded tier into a spill file)."""
        return self._exact

    @exact_tier.setter
    def exact_tier(self, store: TokenStore) -> None:
        if self._exact is None or not isinstance(store, TokenStore):
            raise ValueError("exact_tier: only an index built with keep_exact=True takes a replacement TokenStore")
        with self._mutate, self._rw.write():
            if len(store) != len(self._exact):
                raise ValueError(f"exact_tier: the replacement holds {len(store)} rows, the index {len(self._exact)}")
            self._exact = store

    @property
    def build_state(self) -> Optional[Dict[str, Any]]:
        """``muvera.build.build_index``'s progress record, saved with the index (resume), or None."""
        return self._build_state

    @build_state.setter
    def build_state(self, value: Optional[Dict[str, Any]]) -> None:
        if value is not None and not isinstance(value, dict):
            raise TypeError(f"build_state: expected a dict or None, got {type(value).__name__}")
        self._build_state = value

    @classmethod
    def from_parts(cls, config: FDEConfig, *, ids: IdMap, store: TokenStore, backend: Backend,
                   num_threads: Optional[int] = None, metadata: Optional[Sequence[Dict[str, Any]]] = None,
                   texts: Optional[Sequence[str]] = None) -> "MuveraIndex":
        """An index over parts made elsewhere (``encode_dataset``'s shards): every part must hold
        the same rows; ValueError otherwise. The parts are used, not copied; ``metadata`` (one
        dict per row) and ``texts`` (kept for BM25) are added as :meth:`add` adds them."""
        for name, value, kind in (("config", config, FDEConfig), ("ids", ids, IdMap), ("store", store, TokenStore),
                                  ("backend", backend, Backend)):
            if not isinstance(value, kind):
                raise TypeError(f"{name}: expected a {kind.__name__}, got {type(value).__name__}")
        if not (ids.num_rows == len(store) == backend.ntotal):
            raise ValueError(f"parts: ids hold {ids.num_rows} rows, the store {len(store)}, the backend "
                             f"{backend.ntotal}; they must agree")
        if store.dimension != config.dimension:
            raise ValueError(f"store: {store.dimension}-d tokens, the config says {config.dimension}")
        index = cls(config, backend.name, num_threads=num_threads, token_codec=store.codec_name)
        rows = np.arange(ids.num_rows, dtype=np.int64)
        if metadata is not None:
            items = MetadataStore.check(list(metadata), ids.num_rows)
            index._meta.check_columns(items)
            index._meta.add(rows, items)
        if texts is not None:
            texts = list(texts)
            if len(texts) != ids.num_rows or not all(isinstance(t, str) for t in texts):
                raise ValueError(f"texts: expected {ids.num_rows} strings, one per row")
            index._meta.add_texts(rows, texts)
        index._ids, index._store, index._backend = ids, store, backend
        return index

    @property
    def id_map(self) -> IdMap:
        """Ids <-> rows and the tombstones."""
        return self._ids

    @property
    def id_kind(self) -> Optional[str]:
        """``"int"``, ``"str"`` or None (no ids yet)."""
        return self._ids.kind

    @property
    def model(self) -> Optional[str]:
        """The text model spec recorded with the index (None if not given)."""
        return self._model

    @model.setter
    def model(self, value: Optional[str]) -> None:
        if value is not None and not isinstance(value, str):
            raise TypeError(f"model: expected a model spec string or None, got {type(value).__name__}")
        self._model = value

    @property
    def ids(self) -> List[IdLike]:
        """Live ids, in insertion (row) order."""
        with self._rw.read():
            return self._ids.live_ids()

    @property
    def num_deleted(self) -> int:
        """Tombstoned rows awaiting :meth:`compact`."""
        return self._ids.num_rows - len(self._ids)

    @property
    def nbytes(self) -> int:
        """Approximate memory held: token codes and the codec's tables, FDEs / backend, ids, and the
        exact tier unless it is memory-mapped (a loaded index that has not been changed since)."""
        exact = 0 if self._exact is None or self._exact.is_memory_mapped else self._exact.nbytes
        return (self._store.nbytes + self._store.codec_nbytes + self._backend.nbytes + self._ids.nbytes
                + exact)

    @property
    def num_threads(self) -> int:
        """Threads for encoding and reranking (0: every core)."""
        return self._num_threads

    @num_threads.setter
    def num_threads(self, value: Optional[int]) -> None:
        if value is not None:
            positive_int(value, "num_threads", MAX_THREADS)
        self._num_threads = 0 if value is None else int(value)
        self._encoder = FDEEncoder(self._config, num_threads=value)

    # -- add / remove --------------------------------------------------------------------------
    def add(self, documents: Any, ids: Optional[Iterable[IdLike]] = None, *, metadata: Any = None,
            texts: Optional[Sequence[str]] = None, upsert: bool = False, lengths: Any = None, offsets: Any = None,
            mask: Any = None, progress: Optional[bool] = None) -> List[IdLike]:
        """Add documents (one batch, or a stream of batches); returns their ids.

        Parameters
        ----------
        documents : list of (n_i, d) arrays, packed (T, d) array with lengths/offsets, or padded
            (n, L, d) array with mask (NumPy or torch; float32/64/16, bfloat16); or an iterator /
            generator of such batches (:mod:`muvera.stream`: also ``(tokens, lengths)`` pairs and
            dicts with ``tokens``, ``lengths``, ``ids``, ``metadata``), added as they arrive so
            that memory stays bounded by a batch. While the backend or the codec still needs
            training, the first batches are gathered until they hold :attr:`STREAM_TRAIN_DOCS`
            documents (or the stream ends; a codec with a fixed size such as ``residual:2:k=1024``
            needs fewer: its ``stream_training_tokens()``), train, and are then added -- exactly
            what one ``add`` of the same documents does.
        ids : sequence of int or str, optional
            One per document, unique, not already live, of the index's id kind. Default:
            consecutive ints after the largest int id used so far (int-id indexes only).
        metadata : list of dict, optional
            One JSON-serialisable dict per document, stored with the index (SQLite); scalar
            values under identifier keys can be filtered with ``search(..., where=...)``.
        texts : list of str, optional
            One text per document, indexed for BM25 (SQLite FTS5) so that ``search(...,
            lexical=...)`` can fuse lexical and multi-vector results. One batch only.
        upsert : bool, default False
            Replace the documents whose ids are already live (one change: the old versions are
            removed and the new ones added together, or neither). One batch with ids only.
        lengths, offsets, mask : optional
            Item boundaries for packed / padded input (streams: per batch, in dict batches).
        progress : bool, optional
            A progress bar (tqdm) over documents; default on for streams, off for one batch.

        Raises
        ------
        ValueError
            Wrong dimension, empty batch, a document with no tokens, NaN/Inf, duplicate ids, too
            few documents to train a faiss index. The index is unchanged after any error in a
            single batch; for a stream, the batches before the failing one stay added and the
            message names the failing batch and how many documents were added.
        TypeError
            Unsupported input, ids that are not int/str or not of the index's kind.
        """
        if is_stream(documents):
            if lengths is not None or offsets is not None or mask is not None:
                raise ValueError("lengths/offsets/mask: with a stream of batches give them per batch "
                                 "(dict batches with 'lengths', 'offsets' or 'mask')")
            if texts is not None or upsert:
                raise ValueError("texts, upsert: give them with a single batch (not a stream)")
            return self._add_stream(documents, ids, metadata, True if progress is None else bool(progress))
        tokens, lens = pack_tokens(documents, self._config.dimension, self._store.input_dtype,
                                   lengths=lengths, offsets=offsets, mask=mask, name="documents")
        items = None if metadata is None else MetadataStore.check(metadata, len(lens))
        text_list = None if texts is None else _check_texts(texts, len(lens))
        if not isinstance(upsert, bool):
            raise TypeError(f"upsert: expected True or False, got {upsert!r}")
        if upsert and ids is None:
            raise ValueError("upsert: give the ids to replace")
        with self._changing():
            replaced = [x for x in id_list(ids, "ids", single_ok=False) if x in self._ids] if upsert else []
            new_ids = self._ids.check_new(ids, len(lens), replacing=replaced)
            if items is not None:
                self._meta.check_columns(items)
            self._commit_add(tokens, lens, new_ids, items, text_list, replaced)
        return new_ids

    #: Documents gathered from a stream to train an untrained backend or codec before adding.
    STREAM_TRAIN_DOCS = 32_768

    def _add_stream(self, stream: Iterable[Any], ids: Any, metadata: Any, show: bool) -> List[IdLike]:
        """Add a stream of batches one by one (see :meth:`add`)."""
        all_ids = None if ids is None else id_list(ids, "ids", single_ok=False)
        all_meta = None if metadata is None else list(metadata)
        dtype = self._store.input_dtype
        added: List[IdLike] = []
        pending: List[Tuple[np.ndarray, np.ndarray, List[IdLike], Any]] = []
        pending_ids: set = set()
        used = 0  # documents consumed from all_ids / all_meta

        def training() -> bool:
            return self._store.needs_training or self._backend.needs_training

        def flush() -> None:
            """Train on the gathered batches as one add of them would, then add them one by one
            (no concatenated copy of them outlives the training)."""
            if not pending:
                return
            batches = list(pending)
            pending.clear()
            pending_ids.clear()
            if self._wal is not None:  # one logged add of them all: replay trains exactly as this does
                tokens = np.concatenate([p[0] for p in batches]) if len(batches) > 1 else batches[0][0]
                lens = np.concatenate([p[1] for p in batches])
                new_ids = [x for p in batches for x in p[2]]
                items = None
                if any(p[3] is not None for p in batches):
                    items = [m for p in batches for m in (p[3] if p[3] is not None else [{}] * len(p[1]))]
                with self._changing():
                    self._ids.check_new(new_ids, len(lens))
                    if items is not None:
                        self._meta.check_columns(items)
                    self._commit_add(tokens, lens, new_ids, items)
                added.extend(new_ids)
                bar.update(len(new_ids))
                return
            with self._mutate:
                self._ids.check_new([x for p in batches for x in p[2]], sum(len(p[1]) for p in batches))
                with self._rw.write():
                    self._train_on(batches)
            for tokens, lens, new_ids, items in batches:
                with self._changing():
                    if items is not None:
                        self._meta.check_columns(items)
                    self._commit_add(tokens, lens, new_ids, items)
                added.extend(new_ids)
                bar.update(len(new_ids))

        bar = _progress_bar(None, "indexing", enabled=show, unit="doc")
        j = 0  # the batch being read or added (an error while the stream makes batch j names it)
        source = iter(stream)
        try:
            for j in itertools.count():
                try:
                    item = next(source)
                except StopIteration:
                    break
                b = as_batch(item, j)
                tokens, lens = pack_tokens(b.documents, self._config.dimension, dtype, lengths=b.lengths,
                                           offsets=b.offsets, mask=b.mask, name=f"documents: batch {j}")
                n = len(lens)
                if b.ids is not None and all_ids is not None:
                    raise ValueError(f"ids: batch {j} carries ids and ids= was given too; give one")
                if b.metadata is not None and all_meta is not None:
                    raise ValueError(f"metadata: batch {j} carries metadata and metadata= was given too; give one")
                if all_ids is not None:
                    if used + n > len(all_ids):
                        raise ValueError(f"ids: {len(all_ids)} ids given, but the stream holds more documents")
                    b.ids = all_ids[used: used + n]
                if all_meta is not None and b.metadata is None:
                    b.metadata = all_meta[used: used + n]
                used += n
                new_ids = self._ids.check_new(b.ids, n) if b.ids is not None or self._ids.kind == "str" else None
                if new_ids is None:  # default ints continue after the pending ones
                    start = self._ids.check_new(None, 1)[0] + sum(len(p[1]) for p in pending)
                    new_ids = list(range(start, start + n))
                clash = [x for x in new_ids if x in pending_ids]
                if clash:
                    raise ValueError(f"ids: duplicate ids across batches: {clash[:10]}")
                items = None if b.metadata is None else MetadataStore.check(b.metadata, n)
                if training() or pending:
                    pending.append((tokens, lens, new_ids, items))
                    pending_ids.update(new_ids)
                    want_tokens = None if self._backend.needs_training else self._store.training_tokens_wanted()
                    if (sum(len(p[1]) for p in pending) >= self.STREAM_TRAIN_DOCS
                            or (want_tokens is not None and sum(len(p[0]) for p in pending) >= want_tokens)):
                        flush()
                    continue
                with self._changing():
                    self._ids.check_new(new_ids, n)
                    if items is not None:
                        self._meta.check_columns(items)
                    self._commit_add(tokens, lens, new_ids, items)
                added.extend(new_ids)
                bar.update(n)
            flush()
            if all_ids is not None and used != len(all_ids):
                raise ValueError(f"ids: {len(all_ids)} ids given for a stream of {used} documents "
                                 f"(all {len(added)} were added with the first ids)")
        except (ValueError, TypeError) as exc:
            kept = len(added)
            try:
                flush()  # the valid batches before the failing one are added
            except (ValueError, TypeError) as exc2:
                raise _same_kind(exc)(f"{exc} [stream: batch {j} failed; the earlier gathered batches could "
                                      f"not be added either: {exc2}; {kept} documents were added]") from exc
            raise _same_kind(exc)(f"{exc} [stream: batch {j} failed; the {len(added)} documents before it "
                                  f"were added]") from exc
        finally:
            bar.close()
        return added

    @contextlib.contextmanager
    def _changing(self) -> Iterator[None]:
        """The write lock of a logged change. With group commit, the wait for this thread's
        records to reach the disk comes after the lock is released, so that the records other
        writers append meanwhile share the flush."""
        with self._mutate:
            yield
        self._await_flush()

    def _await_flush(self) -> None:
        pending = getattr(self._unflushed, "records", None)
        if pending:
            self._unflushed.records = []
            for log, end in pending:
                log.wait_durable(end)

    def _log_unflushed(self, payload: Tuple[int, bytes]) -> int:
        """Group commit: write a record now, flush it after the lock (see :meth:`_changing`);
        returns the offset before it (for a rollback)."""
        log = self._wal
        start, end = log.write(*payload)  # type: ignore[union-attr]
        pending = getattr(self._unflushed, "records", None)
        if pending is None:
            pending = self._unflushed.records = []
        pending.append((log, end))
        return start

    def _forget_unflushed(self, start: int) -> None:
        """A change whose record was cut from the log: nothing to wait for."""
        pending = getattr(self._unflushed, "records", None) or []
        self._unflushed.records = [(log, end) for log, end in pending if log is not self._wal or end <= start]

    def _commit_add(self, tokens: np.ndarray, lens: np.ndarray, new_ids: List[IdLike],
                    items: Optional[List[Dict[str, Any]]], texts: Optional[List[str]] = None,
                    replaced: Sequence[IdLike] = ()) -> np.ndarray:
        """Log the add (with a write-ahead log: appended and fsynced first), then apply it to
        every part under the write lock; a failed add is cut from the log again. Caller holds
        ``_mutate`` and has checked the ids and metadata keys."""
        mark, flushed = None, None
        record = None if self._wal is None else wal_add(new_ids, tokens, lens, items, texts, bool(replaced))
        if record is not None and self._wal.defers(len(record[1])):  # type: ignore[union-attr]
            mark = self._log_unflushed(record)  # flushed after the lock (_changing), with others
        elif record is not None:  # written now; its fsync runs while the add is applied
            mark, flushed = self._wal.begin(*record)  # type: ignore[union-attr]
        durable = None if flushed is None else flushed.result  # waited on before the ids commit
        try:
            with self._rw.write():
                old_rows = self._ids.rows_of(replaced)
                self._ids.remove(list(replaced))
                try:
                    return self._add_batch(tokens, lens, new_ids, items, texts, durable)
                except BaseException:
                    self._ids.restore(list(replaced), old_rows)  # the old versions come back
                    raise
        except BaseException:
            if mark is not None:
                if flushed is not None:
                    try:
                        flushed.result()
                    except OSError:
                        pass
                self._wal.truncate(mark)  # type: ignore[union-attr]
                self._forget_unflushed(mark)
            raise

    def _add_batch(self, tokens: np.ndarray, lens: np.ndarray, new_ids: List[IdLike],
                   items: Optional[List[Dict[str, Any]]], texts: Optional[List[str]] = None,
                   durable: Optional[Any] = None) -> np.ndarray:
        """Add one checked batch to every part -- backend, token store, exact tier, metadata,
        ids -- all or nothing: after any error (a full disk under the spilled exact tier, a
        refused metadata key, memory) each part is put back as it was. Caller holds the write
        lock and has checked the ids and the metadata keys."""
        n0 = self._ids.num_rows
        backend0 = self._backend
        spare = backend0.empty_copy() if backend0.needs_training else None  # untrained, empty
        codec_trained_now = self._store.needs_training
        try:
            rows = self._add_packed(tokens, lens)
            if items is not None:
                self._meta.add(rows, items)
            if texts is not None:
                self._meta.add_texts(rows, texts)
            if durable is not None:
                durable()  # the write-ahead record is on disk: a failed fsync rolls the add back
            self._ids.append(new_ids)
        except BaseException:
            self._crossing_wanted = False
            self._roll_back(n0, backend0, spare)
            if codec_trained_now and not self._store.needs_training:
                self._store.untrain()  # the index is left as it was: untrained, empty
            raise
        if self._crossing_wanted:
            self._start_crossing()
        return rows

    def _roll_back(self, n0: int, backend0: Backend, spare: Optional[Backend]) -> None:
        """Put every part back to its first ``n0`` rows (see :meth:`_add_batch`)."""
        self._store.truncate(n0)
        if self._exact is not None:
            self._exact.truncate(n0)
        self._meta.truncate(n0)
        if spare is not None:  # the backend was untrained: forget this add's training too
            self._backend = spare
            return
        self._backend = backend0  # a size crossing's replacement is dropped with the rows
        if backend0.ntotal > n0:
            try:
                backend0.truncate(n0)
            except NotImplementedError:  # e.g. HNSW: rebuilt from the stored tokens
                fresh = backend0.empty_copy()
                self._fill_backend(fresh, np.arange(n0, dtype=np.int64), None)
                self._backend = fresh

    def _add_packed(self, tokens: np.ndarray, lens: np.ndarray) -> np.ndarray:
        """Add checked, packed tokens to the backend, the token store and the exact tier;
        returns their rows (:meth:`_add_batch` adds the ids and rolls back on errors). FDEs are
        encoded and handed to the backend in its preferred chunks: the float32 FDEs of a large
        batch (40 KB per document at 10240 d) never exist all at once."""
        exact = None
        if self._exact is not None:  # checked before anything changes: float16 must hold the values
            try:
                exact, _ = self._exact.encode(tokens)
            except ValueError:
                raise ValueError("documents: values beyond the float16 range (keep_exact stores float16 "
                                 "tokens)") from None
        codes, _ = self._store.encode(tokens)  # the first add trains the codec on its own tokens
        self._grow_backend(len(lens))
        source = self._store.fde_source(codes)  # float codecs: the tokens themselves
        starts = offsets_of(lens)[:-1]
        chunk = self._backend.add_chunk
        for s in range(0, len(lens), chunk):
            e = min(len(lens), s + chunk)
            self._backend.add(self._encoder.encode_spans(source, starts[s:e], lens[s:e], is_document=True))
        rows = self._store.append_codes(codes, lens)
        if exact is not None:
            self._exact.append_codes(exact, lens)  # type: ignore[union-attr]
        return rows

    def _train_on(self, batches: List[Tuple[np.ndarray, np.ndarray, Any, Any]]) -> None:
        """Train the codec and the backend on packed batches exactly as one ``add`` of their
        concatenation trains them (caller holds the write lock); all-or-nothing."""
        trained_codec = False
        try:
            if self._store.needs_training:
                tokens = batches[0][0] if len(batches) == 1 else np.concatenate([b[0] for b in batches])
                trained_codec = self._store.train(tokens)
                del tokens
            if self._backend.needs_training:
                # One add trains the backend on its first chunk of FDEs: encode just that chunk.
                chunk = self._backend.add_chunk
                parts, lens_parts, have = [], [], 0
                for tokens, lens, _, _ in batches:
                    take = min(len(lens), chunk - have)
                    if take <= 0:
                        break
                    end = int(lens[:take].sum())
                    parts.append(self._store.fde_source(self._store.encode(tokens[:end])[0]))
                    lens_parts.append(lens[:take])
                    have += take
                lens = np.concatenate(lens_parts)
                source = parts[0] if len(parts) == 1 else np.concatenate(parts)
                self._backend.train(self._encoder.encode_spans(source, offsets_of(lens)[:-1], lens,
                                                               is_document=True))
        except BaseException:
            if trained_codec:
                self._store.untrain()
            raise

    #: An ``auto`` crossing whose new backend trains on at least this many documents (the IVF
    #: phase, 50,000 by default) is built on a background thread: the crossing add and the adds
    #: after it go on into the current backend, and the new one is swapped in, caught up with
    #: the rows added meanwhile, when it is ready (:meth:`wait_for_backend`). Smaller crossings
    #: (the PQ phase at 2,000) train inside the add. ``None`` turns the background off.
    BACKGROUND_CROSSING_ROWS: Optional[int] = 10_000

    def _grow_backend(self, n_new: int) -> None:
        """Swap in the backend's replacement when this add crosses one of its size thresholds
        (``auto``): refilled with every current row before the new ones are added -- or, for a
        large crossing, built in the background (see :attr:`BACKGROUND_CROSSING_ROWS`). Caller
        holds ``_mutate`` and the write lock."""
        crossing = self._crossing
        if crossing is not None:
            if crossing.ready.is_set():
                self._finish_crossing()
            elif self._ids.num_rows + n_new - crossing.rows > max(10_000, crossing.rows // 2):
                crossing.ready.wait()  # a bounded backlog: the build needs no lock to finish
                self._finish_crossing()
            else:
                return
        n_after = self._ids.num_rows + n_new
        repl = self._backend.replacement(n_after)
        if repl is None:
            return
        limit = self.BACKGROUND_CROSSING_ROWS
        if limit is not None and self._ids.num_rows >= limit:
            if n_after >= self._crossing_retry_at:  # not again right after a failed build
                self._crossing_wanted = True  # started once this add has committed (_add_batch)
            return
        if self._ids.num_rows:
            self._fill_backend(repl, np.arange(self._ids.num_rows, dtype=np.int64), self._backend)
        self._backend = repl

    def _start_crossing(self) -> None:
        """Start the background build of the backend a committed add crossed into."""
        self._crossing_wanted = False
        repl = self._backend.replacement(self._ids.num_rows)
        if repl is None or self._crossing is not None:
            return
        crossing = _Crossing(repl, self._ids.num_rows, self._compactions, self._backend)
        self._crossing = crossing
        store = self._store  # rows below crossing.rows never change while the generation holds
        crossing.thread = threading.Thread(target=self._build_crossing, args=(crossing, store),
                                           name="muvera-crossing", daemon=True)
        crossing.thread.start()

    def _build_crossing(self, crossing: "_Crossing", store: TokenStore) -> None:
        """The background part: train the new backend and fill it with the first rows (no lock:
        they are immutable), then swap it in at the next chance (under the writers' lock)."""
        try:
            self._fill_backend(crossing.backend, np.arange(crossing.rows, dtype=np.int64), None, store)
        except BaseException as exc:  # noqa: BLE001 -- reported, and the index keeps its backend
            crossing.error = exc
        crossing.ready.set()
        while self._crossing is crossing:
            if self._mutate.acquire(timeout=0.05):
                try:
                    if self._crossing is crossing:
                        self._finish_crossing(follow=True)
                finally:
                    self._mutate.release()
                break

    def _finish_crossing(self, follow: bool = False) -> None:
        """Swap in a built background crossing, caught up with the rows added since (caller
        holds ``_mutate``); dropped if the index was compacted or its backend replaced since.
        ``follow`` (no add in progress): start the next crossing if the rows already call for it."""
        crossing, self._crossing = self._crossing, None
        if crossing is None:
            return
        crossing.ready.wait()
        if crossing.error is None and (crossing.generation != self._compactions
                                       or crossing.before is not self._backend):
            return  # renumbered or replaced meanwhile: the next crossing add starts over
        n = self._ids.num_rows
        if crossing.error is None and n > crossing.rows:
            try:  # the current backend is the one it replaces: copied from it when lossless
                self._fill_backend(crossing.backend, np.arange(crossing.rows, n, dtype=np.int64), self._backend)
            except Exception as exc:  # noqa: BLE001 -- a failed catch-up fails no add
                crossing.error = exc
        if crossing.error is not None:
            self._crossing_retry_at = int(crossing.rows * 1.25) + 1
            log.warning("backend: the background build of %s failed (%s); %s stays in use until %d documents",
                        _active(crossing.backend), crossing.error, _active(self._backend), self._crossing_retry_at)
            return
        with self._rw.write():
            self._backend = crossing.backend
        if follow and self._backend.replacement(self._ids.num_rows) is not None:
            self._start_crossing()

    def wait_for_backend(self, timeout: Optional[float] = None) -> bool:
        """Wait until a background ``auto`` crossing (see :attr:`BACKGROUND_CROSSING_ROWS`) has
        swapped in its backend; returns False if ``timeout`` seconds passed first. Returns True
        at once when none is being built.

        Raises
        ------
        ValueError
            ``timeout`` is negative or not finite.
        """
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 <= timeout < float("inf"):
                raise ValueError(f"timeout: expected None or a finite number of seconds >= 0, got {timeout!r}")
        crossing = self._crossing
        if crossing is None:
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        while crossing is not None:  # a finished crossing may start the next phase's
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not crossing.ready.wait(left):
                return False
            with self._mutate:
                if self._crossing is crossing:
                    self._finish_crossing(follow=True)
                crossing = self._crossing
        return True

    def train(self, documents: Any, *, lengths: Any = None, offsets: Any = None, mask: Any = None) -> None:
        """Train the token codec (``residual:*``: k-means centroids and residual levels) on a
        sample of documents, before the first :meth:`add`. Later adds encode with what was
        learned here, without re-clustering. Without this call the first ``add`` trains on its
        own tokens.

        Parameters
        ----------
        documents : any batch form (see :meth:`add`)
            A representative sample: PLAID's centroid count grows with its token count
            (``2**floor(log2(16 sqrt(tokens)))``), so give a sample of about the corpus size.

        Raises
        ------
        ValueError
            The codec needs no training (float16/float32/int8), the index already holds
            documents or a trained codec, too few tokens, bad input.
        """
        store = self._store
        if not store.needs_training:
            raise ValueError(f"train: the {store.codec_name!r} token codec is trained already or needs no training")
        tokens, _ = pack_tokens(documents, self._config.dimension, store.input_dtype, lengths=lengths,
                                offsets=offsets, mask=mask, name="documents")
        with self._mutate:
            if self._ids.num_rows:
                raise ValueError("train: the index already holds documents encoded with the current codec")
            with self._rw.write():
                try:
                    store.train(tokens)
                except BaseException:
                    store.untrain()
                    raise
        if self._wal is not None:  # training is not logged: make it durable by a checkpoint
            self.checkpoint()

    def remove(self, ids: Any) -> int:
        """Remove documents by id (one id or an iterable); returns how many were removed.

        Raises
        ------
        KeyError
            If any id is not in the index (nothing is removed then).
        """
        targets = list(dict.fromkeys(id_list(ids, "ids", single_ok=True)))
        with self._changing():
            self._ids.rows_of(targets)  # KeyError before anything is logged or changed
            mark, record = None, None if self._wal is None else wal_remove(targets)
            if record is not None and self._wal.defers(len(record[1])):  # type: ignore[union-attr]
                mark = self._log_unflushed(record)
            elif record is not None:
                mark = self._wal.append(*record)  # type: ignore[union-attr]
            try:
                with self._rw.write():
                    removed = self._ids.remove(targets)
            except BaseException:
                if mark is not None:
                    self._wal.truncate(mark)  # type: ignore[union-attr]
                    self._forget_unflushed(mark)
                raise
        return removed

    def compact(self) -> int:
        """Drop tombstoned rows from the store and rebuild the backend; returns rows dropped.

        The new parts are built while searches go on; the exclusive lock is held only to swap
        them in. A trained faiss index keeps its training (it is cloned, emptied and refilled).
        With a write-ahead log, a checkpoint follows (row numbers are not logged).
        """
        dropped = self._compact()
        if dropped and self._wal is not None:
            self.checkpoint()
        return dropped

    def _compact(self) -> int:
        with self._mutate:
            keep = self._ids.alive.astype(bool)
            dropped = int(len(keep) - keep.sum())
            if dropped == 0:
                return 0
            with self._rw.read():  # writers are excluded by _mutate: the parts hold still
                backend = self._backend.empty_copy()
                self._fill_backend(backend, np.flatnonzero(keep), self._backend)
                store = self._store.compacted(keep)
                exact = None if self._exact is None else self._exact.compacted(keep)
                ids = self._ids.compacted()
            with self._rw.write():  # all or nothing: the one step that can fail goes first
                self._meta.compact(keep)  # one SQL transaction
                self._store, self._backend, self._exact, self._ids = store, backend, exact, ids
                self._compactions += 1
            return dropped

    def _fill_backend(self, target: Backend, rows: np.ndarray, source: Optional[Backend],
                      store: Optional[TokenStore] = None) -> None:
        """Add the FDEs of store ``rows`` to ``target``: copied from a lossless ``source``
        backend, else re-encoded from the stored tokens (bit-identical to the first encoding)."""
        store = self._store if store is None else store
        lossless = source is not None and source.lossless
        chunk = target.add_chunk
        for s in range(0, len(rows), chunk):
            r = rows[s: s + chunk]
            if lossless:
                target.add(source.reconstruct(r))  # type: ignore[union-attr]
                continue
            # decoded a few thousand rows at a time: the float32 tokens of a whole chunk (40,000
            # documents train an IVF) would cost more than its FDEs
            fdes = np.empty((len(r), self._config.output_dimension), dtype=np.float32)
            for a, src, starts, lens in store.fde_sources(r, _DECODE_ROWS):
                fdes[a: a + len(lens)] = self._encoder.encode_spans(src, starts, lens, is_document=True)
            target.add(fdes)
            del fdes

    def metadata(self, ids: Any) -> List[Optional[Dict[str, Any]]]:
        """The metadata dicts of live ids (one id or a sequence); None where none was given.

        Raises
        ------
        KeyError
            If an id is not in the index.
        """
        single = isinstance(ids, (str, int, np.generic))
        wanted = id_list(ids, "ids", single_ok=True)
        with self._rw.read():
            out = self._meta.get(self._ids.rows_of(wanted).tolist())
        return out[0] if single else out

    def get_tokens(self, doc_id: IdLike) -> np.ndarray:
        """A copy of one document's stored tokens ``(n_tokens, d)`` (float codecs: their dtype;
        others: decoded to float32)."""
        with self._rw.read():
            row = self._ids.row_of(doc_id)
            return self._store.get(row).copy() if self._store.stores_tokens else self._store.get_tokens(row)

    # -- search --------------------------------------------------------------------------------
    def search(self, queries: Any, k: int = 10, candidates: Optional[int] = None, *, ball_carving: Any = None,
               filter_ids: Optional[Iterable[IdLike]] = None, params: Optional[Dict[str, Any]] = None,
               rescore: Optional[int] = None, where: Optional[str] = None, where_params: Sequence[Any] = (),
               lexical: Optional[Sequence[str]] = None, fusion: str = "weighted", lexical_weight: float = 0.3,
               lengths: Any = None, offsets: Any = None, mask: Any = None) -> Tuple[np.ndarray, np.ndarray]:
        """Top-``k`` documents per query: FDE candidates from the backend, exact Chamfer rerank.

        Parameters
        ----------
        queries : any batch form (list of (n_i, d) arrays, packed + lengths/offsets, padded + mask)
        k : int, default 10
        candidates : int, optional
            Documents reranked per query (>= k). Default: the setting :meth:`tune` stored, else
            ``max(DEFAULT_CANDIDATES, k)``. When it covers every eligible document the backend
            is skipped and the result equals :meth:`search_exact`.
        ball_carving : None, True or float
            Carve the rerank query (:func:`ball_carve`) with threshold ``tau`` (True: 0.7). The
            FDE stage always uses the original query.
        filter_ids : iterable of ids, optional
            Only these documents may be returned (unknown or removed ids are ignored). The
            filter reaches the backend as an allowed-rows bitmap: nothing is re-encoded.
        params : dict, optional
            Backend search parameters, e.g. ``{"efSearch": 128}`` (HNSW), ``{"nprobe": 16}`` (IVF),
            ``{"k_factor": 8}`` (refine stages, ``auto``'s PQ and IVF phases), and
            ``{"prune_factor": 8}``: with residual codes the backend returns that many times
            ``candidates``, cut back to ``candidates`` by centroid interaction (:mod:`muvera.prune`;
            default 4 unless the backend refines, 1 turns it off). Default: those :meth:`tune`
            stored for the active backend, else the defaults.
        where, where_params : str, sequence, optional
            Only documents whose metadata satisfies the SQL condition ``where`` (e.g.
            ``"year >= ? AND lang = ?"``) with its ``?`` placeholders bound to ``where_params``
            (values are never formatted into the SQL; the condition can only read). Combined
            with ``filter_ids``; reaches the backend as the same allowed-rows bitmap. NumPy
            scalars bind as Python numbers; a string never equals a number (the columns have
            no type affinity: use ``CAST(? AS INTEGER)``). The condition runs before the index
            lock is taken, under ``MetadataStore.WHERE_TIME_LIMIT`` seconds (ValueError past it).
        rescore : int, optional
            With ``keep_exact=True``: rerank the candidates on the compressed codes, then rescore
            the best ``rescore`` (>= k) from the float16 exact tier; the returned scores are then
            Chamfer over the float16 tokens. Default: :meth:`tune`'s setting, else none.
        lexical : list of str, optional
            Hybrid search: one query text per query, matched by BM25 against the texts given to
            :meth:`add` (SQLite FTS5), and fused with the multi-vector results; the filters
            apply to both. The returned scores are then the fused scores.
        fusion : {"weighted", "rrf"}, default "weighted"
            A weighted sum of each list's min-max normalised scores, or reciprocal rank fusion
            (``sum 1 / (60 + rank)``). ``bench/bench_hybrid.py``: both beat BM25 and MUVERA alone
            on SciFact and NFCorpus, the weighted sum at 0.3 by the most.
        lexical_weight : float, default 0.3
            The BM25 side's weight: in ``"weighted"`` its share of the sum, in ``"rrf"`` its
            terms' multiplier relative to the multi-vector side's (``0.3 / 0.7``).
        lengths, offsets, mask : optional
            Item boundaries for packed / padded queries.

        Returns
        -------
        ids : (nq, min(k, len(index))) array
            ``int64`` padded with ``-1`` (int ids, or no ids yet) or ``object`` padded with
            ``None`` (str ids), best first. ``k`` is capped at the number of live documents
            (at least 1 column); rows are padded where fewer documents qualify (filters).
        scores : float32, same shape
            Chamfer scores (of the carved query when carving); ``-inf`` padding.
        """
        k, candidates, rescore = check_search_args(k, candidates, rescore)
        candidates, params, rescore = self._search_defaults(k, candidates, params, rescore)
        c = int(candidates)
        tau = ball_carving_tau(ball_carving)
        if rescore is not None and self._exact is None:
            raise ValueError("rescore: needs an exact tier; build the index with keep_exact=True")
        prune, backend_params = split_prune(params)
        check_prune_codec(prune, self._store.codec)
        self._backend.check_params(backend_params)
        qtok, qoff = self.pack_queries(queries, lengths, offsets, mask)
        qfde = self.encode_packed_queries(qtok, qoff)
        if lexical is not None:
            return self._hybrid(qtok, qoff, qfde, k, c, _check_texts(lexical, len(qoff) - 1), fusion, lexical_weight,
                                tau=tau, filter_ids=filter_ids, params=params, rescore=rescore, where=where,
                                where_params=where_params)
        return self.search_packed(qtok, qoff, qfde, k, c, tau=tau, filter_ids=filter_ids, params=params,
                                  rescore=rescore, where=where, where_params=where_params)

    #: Reciprocal rank fusion's rank offset (the usual 60).
    RRF_K = 60

    def _hybrid(self, qtok: np.ndarray, qoff: np.ndarray, qfde: np.ndarray, k: int, c: int, texts: List[str],
                fusion: str, weight: float, **kw: Any) -> Tuple[np.ndarray, np.ndarray]:
        """Multi-vector and BM25 results, each ``c`` deep, fused per query (see :meth:`search`)."""
        if fusion not in ("rrf", "weighted"):
            raise ValueError(f"fusion: expected 'rrf' or 'weighted', got {fusion!r}")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight <= 1:
            raise ValueError(f"lexical_weight: expected a number in [0, 1], got {weight!r}")
        pre = self._where_first(kw["where"], kw["where_params"])
        with SEARCH_GATE.enter() as shared, self._rw.read():
            threads = 1 if shared else self._num_threads
            if weight < 1.0:
                mv_rows, mv_scores = self._search_rows_unlocked(qtok, qoff, qfde, c, c, kw["tau"], kw["filter_ids"],
                                                                kw["params"], kw["rescore"], kw["where"],
                                                                kw["where_params"], threads, pre)
            else:  # BM25 alone: the multi-vector side weighs nothing
                mv_rows = np.full((len(texts), 1), -1, dtype=np.int64)
                mv_scores = np.full((len(texts), 1), -np.inf, dtype=np.float32)
            allowed = self._allowed(kw["filter_ids"], kw["where"], kw["where_params"], pre)
            only = allowed.rows if allowed is not None and allowed.has_rows else None
            width = self._result_width(k)
            out_rows = np.full((len(texts), width), -1, dtype=np.int64)
            out_scores = np.full((len(texts), width), -np.inf, dtype=np.float32)
            for i, text in enumerate(texts):
                lex_rows, lex_scores = self._meta.bm25(text, c, only)
                if allowed is not None and only is None:  # tombstones: the live bitmap
                    keep = allowed.bitmap[lex_rows]
                    lex_rows, lex_scores = lex_rows[keep], lex_scores[keep]
                valid = mv_rows[i] >= 0
                fused = _fuse([(mv_rows[i][valid], mv_scores[i][valid], 1.0 - weight), (lex_rows, lex_scores, weight)],
                              fusion, self.RRF_K)
                top = fused[:width]
                out_rows[i, :len(top)] = [r for r, _ in top]
                out_scores[i, :len(top)] = [s for _, s in top]
            return self._ids.ids_of(out_rows), out_scores

    #: Hint the OS to read the rescored documents' exact-tier rows all at once before the
    #: rescore reads them (``TokenStore.prefetch``); a class setting, for benchmarks.
    PREFETCH_EXACT = True

    #: Candidates reranked per query when neither the caller nor :meth:`tune` sets them.
    DEFAULT_CANDIDATES = 200

    @property
    def default_prune_factor(self) -> int:
        """FDE candidates fetched per reranked one when ``params`` does not say
        (``prune_factor``): the index's setting (:data:`muvera.prune.DEFAULT_PRUNE_FACTOR` for a
        new index, 1 for one saved before 0.10.0, so that it searches as it did) when the store
        can prune (residual codes) and the backend has no refine stage of its own, else 1 (no
        prune). Assign an int in [1, 64] to change it; :meth:`save` keeps it."""
        if not self._store.can_prune or self._backend.refines:
            return 1
        return self._prune_factor

    @default_prune_factor.setter
    def default_prune_factor(self, value: int) -> None:
        self._prune_factor = check_prune_factor(value, "default_prune_factor")

    def search_settings(self, k: int, candidates: Optional[int] = None, params: Optional[Dict[str, Any]] = None,
                        rescore: Optional[int] = None) -> Tuple[int, Optional[Dict[str, Any]], Optional[int]]:
        """``(candidates, params, rescore)`` a :meth:`search` with these arguments uses: the
        ones given, else the setting :meth:`tune` stored, else the defaults (arguments already
        checked, e.g. by ``muvera._validate.check_search_args``)."""
        return self._search_defaults(k, candidates, params, rescore)

    def _search_defaults(self, k: int, candidates: Optional[int], params: Optional[Dict[str, Any]],
                         rescore: Optional[int]) -> Tuple[int, Optional[Dict[str, Any]], Optional[int]]:
        """Fill unset search arguments: the tuned setting (its params and rescore only while the
        backend it was tuned on is active), else the defaults; explicit arguments win."""
        t = self._tuned
        if candidates is None:
            base = t["candidates"] if t is not None else self.DEFAULT_CANDIDATES
            candidates = max(base, k)  # only k given: the candidates follow it
        if t is not None and t["backend"] == getattr(self._backend, "active", self._backend.name):
            if params is None and t["params"]:
                params = dict(t["params"])
            if rescore is None and t["rescore"] is not None and self._exact is not None:
                rescore = max(t["rescore"], k)
        return candidates, params, rescore

    @property
    def tuned(self) -> Optional[Dict[str, Any]]:
        """The search setting :meth:`tune` stored (``candidates``, ``params``, ``rescore``, the
        recall and p50 it measured, the target, the backend it was tuned on), or None. Set to
        None to forget it."""
        return None if self._tuned is None else dict(self._tuned)

    @tuned.setter
    def tuned(self, value: Optional[Dict[str, Any]]) -> None:
        if value is not None:
            raise ValueError("tuned: only None (forget the tuned setting) can be assigned; use tune()")
        self._tuned = None

    def tune(self, queries: Any = None, *, target_recall: float = 0.95, k: int = 10, num_queries: int = 64,
             seed: int = 0, lengths: Any = None, offsets: Any = None, mask: Any = None,
             max_settings: int = 200, verbose: bool = True, plot: Optional[PathLike] = None) -> "TuneResult":
        """Find and store the fastest search setting whose recall@k against exact Chamfer meets
        ``target_recall`` on a query sample; :meth:`search` then uses it by default (explicit
        arguments still win) and :meth:`save` keeps it.

        Tried: FDE ``candidates`` (20 ... 3200), IVF ``nprobe`` (once ``auto`` or a faiss IVF
        index is active), the refine stage's ``k_factor``, the prune's ``prune_factor`` (residual
        codes), and the exact-tier ``rescore`` depth
        (``keep_exact=True``). For each setting, recall@k against the brute-force Chamfer top-k
        (the exact tier's when kept) and the median per-query latency on one thread.

        Parameters
        ----------
        queries : any batch form, optional
            Your own queries (a sample of ``num_queries`` is used). Default: pseudo-queries drawn
            from the indexed documents (:func:`muvera.tune.pseudo_queries`), which usually
            overstate recall: give real queries when you have them.
        target_recall : float, default 0.95
        k : int, default 10
        num_queries : int, default 64
        seed : int, default 0
            Seeds the query sample.
        lengths, offsets, mask : optional
            Item boundaries for packed / padded ``queries``.
        max_settings : int, default 200
            Stop after measuring this many settings.
        verbose : bool, default True
            Print the table of settings.
        plot : path, optional
            Draw the recall-latency curve (log-scaled latency) to this PNG.

        Returns
        -------
        TuneResult
            Every setting measured, the chosen one, and whether the target was met (when it was
            not, the best-recall setting is stored and the table says so).

        Raises
        ------
        ValueError
            A target outside (0, 1], a non-positive k / num_queries, an empty index, bad queries.
        """
        from .tune import tune_index  # noqa: PLC0415

        self.wait_for_backend()  # tuned on the backend that will serve, not one being replaced
        result = tune_index(self, queries, target_recall=target_recall, k=k, num_queries=num_queries, seed=seed,
                            lengths=lengths, offsets=offsets, mask=mask, max_settings=max_settings)
        ch = result.chosen
        with self._mutate:
            self._tuned = {"candidates": ch["candidates"], "params": dict(ch["params"]), "rescore": ch["rescore"],
                           "k": result.k, "target_recall": result.target_recall, "recall": ch["recall"],
                           "p50_ms": ch["p50_ms"], "met": result.met, "backend": result.backend,
                           "queries": result.queries}
        if verbose:
            print(result.table())
        if plot is not None:
            result.plot(plot)
        if self._wal is not None:  # the stored setting is durable at once
            self.checkpoint()
        return result

    def encode_packed_queries(self, qtok: np.ndarray, qoff: np.ndarray) -> np.ndarray:
        """FDEs of packed, checked float32 queries (what :meth:`search` does first)."""
        return self._encoder.encode_spans(qtok, qoff[:-1], np.diff(qoff), is_document=False)

    def search_packed(self, qtok: np.ndarray, qoff: np.ndarray, qfde: np.ndarray, k: int, c: int, *,
                      tau: Optional[float] = None, filter_ids: Optional[Iterable[IdLike]] = None,
                      params: Optional[Dict[str, Any]] = None, rescore: Optional[int] = None,
                      where: Optional[str] = None, where_params: Sequence[Any] = ()) -> Tuple[np.ndarray, np.ndarray]:
        """:meth:`search` on already checked input: packed float32 query tokens and offsets and
        their FDEs (a :class:`~muvera.distributed.ShardedIndex` encodes queries once for every
        shard). Arguments are not validated again."""
        return self.search_rows(qtok, qoff, qfde, k, c, tau=tau, filter_ids=filter_ids, params=params,
                                 rescore=rescore, where=where, where_params=where_params, to_ids=True)

    def search_rows(self, qtok: np.ndarray, qoff: np.ndarray, qfde: np.ndarray, k: int, c: int, *,
                    tau: Optional[float] = None, filter_ids: Optional[Iterable[IdLike]] = None,
                    params: Optional[Dict[str, Any]] = None, rescore: Optional[int] = None,
                    where: Optional[str] = None, where_params: Sequence[Any] = (),
                    to_ids: bool = False) -> Tuple[np.ndarray, np.ndarray]:
        """:meth:`search_packed` returning store rows (``-1`` padding), or ids with ``to_ids``
        (mapped under the same read lock as the search)."""
        pre = self._where_first(where, where_params)
        with SEARCH_GATE.enter() as shared, self._rw.read():
            rows, scores = self._search_rows_unlocked(qtok, qoff, qfde, k, c, tau, filter_ids, params, rescore,
                                                      where, where_params, 1 if shared else self._num_threads,
                                                      pre)
            return (self._ids.ids_of(rows) if to_ids else rows), scores

    def _search_rows_unlocked(self, qtok: np.ndarray, qoff: np.ndarray, qfde: np.ndarray, k: int, c: int,
                              tau: Optional[float], filter_ids: Optional[Iterable[IdLike]],
                              params: Optional[Dict[str, Any]], rescore: Optional[int], where: Optional[str],
                              where_params: Sequence[Any], threads: int,
                              pre: Optional[Tuple[int, int, np.ndarray]] = None) -> Tuple[np.ndarray, np.ndarray]:
        """The search itself; the caller holds the search gate and the read lock."""
        if tau is not None:
            qtok, qoff = ball_carve(qtok, qoff, tau)
        k = self._result_width(k)
        allowed = self._allowed(filter_ids, where, where_params, pre)
        n_allowed = self._ids.num_rows if allowed is None else allowed.count
        if n_allowed == 0:
            return self._empty_rows(len(qoff) - 1, k)
        nq = len(qoff) - 1
        if allowed is None and c >= n_allowed:
            cand = None  # rerank every document: exact
        elif c >= n_allowed:  # rerank every eligible document (listed: cheaper than a mask scan)
            cand = np.broadcast_to(allowed.rows, (nq, n_allowed))  # type: ignore[union-attr]
        else:
            prune, params = split_prune(params)
            if prune is None:
                prune = self.default_prune_factor
            wide = min(c * prune, n_allowed)
            cand, _ = self._backend.search(qfde, wide, params=params, allowed=allowed)
            if wide > c:  # the bag scores keep c of them, then the rerank (muvera.prune)
                width = k if rescore is None else self._result_width(rescore)
                top, scores = self._store.prune_rerank(qtok, qoff, cand, c, min(width, c), threads)
                if width > c:  # a result wider than the kept rows: -1 / -inf padded
                    top = np.pad(top, ((0, 0), (0, width - c)), constant_values=-1)
                    scores = np.pad(scores, ((0, 0), (0, width - c)), constant_values=-np.inf)
                if rescore is None:
                    return top, scores
                return self._rescore(qtok, qoff, k, top, threads)
        if rescore is None:
            return self._store.rerank(qtok, qoff, k, cand, None, threads)
        # Two tiers: the best `rescore` on the codes, then exact float16 Chamfer over those.
        width = self._result_width(rescore)
        top, _ = self._store.rerank(qtok, qoff, width, cand, None, threads)
        return self._rescore(qtok, qoff, k, top, threads)

    def _rescore(self, qtok: np.ndarray, qoff: np.ndarray, k: int, top: np.ndarray,
                 threads: int) -> Tuple[np.ndarray, np.ndarray]:
        """Exact float16 Chamfer over the exact tier's rows ``top`` (the codes' best)."""
        if self.PREFETCH_EXACT:  # the exact tier is usually on disk: read the rescored rows at once
            self._exact.prefetch(top)  # type: ignore[union-attr]
        return self._exact.rerank(qtok, qoff, k, top, None, threads)  # type: ignore[union-attr]

    def exact_rows(self, qtok: np.ndarray, qoff: np.ndarray, k: int) -> np.ndarray:
        """Rows of the exact Chamfer top-``k`` over every live document, on the exact tier when
        the index keeps one (else on the store): the ground truth :meth:`tune` measures against."""
        with SEARCH_GATE.enter() as shared, self._rw.read():
            allowed = self._allowed(None)
            tier = self._exact if self._exact is not None else self._store
            rows, _ = tier.rerank(qtok, qoff, self._result_width(k), None,
                                  None if allowed is None else allowed.bitmap.view(np.uint8),
                                  1 if shared else self._num_threads)
            return rows

    def _empty_rows(self, nq: int, k: int) -> Tuple[np.ndarray, np.ndarray]:
        return np.full((nq, k), -1, dtype=np.int64), np.full((nq, k), -np.inf, dtype=np.float32)

    def search_exact(self, queries: Any, k: int = 10, *, filter_ids: Optional[Iterable[IdLike]] = None,
                     where: Optional[str] = None, where_params: Sequence[Any] = (), lengths: Any = None,
                     offsets: Any = None, mask: Any = None) -> Tuple[np.ndarray, np.ndarray]:
        """Brute-force Chamfer top-``k`` over every live document (the ground truth).

        Same arguments and return convention as :meth:`search`.
        """
        k = positive_int(k, "k")
        qtok, qoff = self.pack_queries(queries, lengths, offsets, mask)
        return self.search_exact_packed(qtok, qoff, k, filter_ids=filter_ids, where=where,
                                        where_params=where_params)

    def search_exact_packed(self, qtok: np.ndarray, qoff: np.ndarray, k: int, *,
                            filter_ids: Optional[Iterable[IdLike]] = None, where: Optional[str] = None,
                            where_params: Sequence[Any] = ()) -> Tuple[np.ndarray, np.ndarray]:
        """:meth:`search_exact` on packed, checked float32 queries."""
        pre = self._where_first(where, where_params)
        with SEARCH_GATE.enter() as shared, self._rw.read():
            k = self._result_width(k)
            allowed = self._allowed(filter_ids, where, where_params, pre)
            if allowed is not None and allowed.count == 0 or self._ids.num_rows == 0:
                return self._empty_result(len(qoff) - 1, k)
            threads = 1 if shared else self._num_threads
            if allowed is not None and allowed.has_rows:  # a filter: score its rows only
                cand = np.ascontiguousarray(np.broadcast_to(allowed.rows, (len(qoff) - 1, allowed.count)))
                return self._rerank(qtok, qoff, k, cand, None, threads)
            return self._rerank(qtok, qoff, k, None, None if allowed is None else allowed.bitmap, threads)

    def pack_queries(self, queries: Any, lengths: Any = None, offsets: Any = None,
                     mask: Any = None) -> Tuple[np.ndarray, np.ndarray]:
        """Queries in any batch form -> checked packed float32 tokens and offsets (what
        :meth:`search_rows` and :meth:`exact_rows` take)."""
        tokens, lens = pack_tokens(queries, self._config.dimension, np.float32, lengths=lengths,
                                   offsets=offsets, mask=mask, name="queries")
        return tokens, offsets_of(lens)

    def _result_width(self, k: int) -> int:
        """Results have ``min(k, live documents)`` columns (at least one): a huge ``k`` never
        allocates more than the index can fill."""
        return min(k, max(1, len(self._ids)))

    def _where_first(self, where: Optional[str], where_params: Sequence[Any]) -> Optional[Tuple[int, int, np.ndarray]]:
        """Evaluate a metadata condition before the index lock is taken, so that a slow one
        never holds the lock (a writer would queue behind it, and every reader behind the
        writer). Only rows committed before it started count: (compactions, rows, matches)."""
        if where is None:
            return None
        gen, n = self._compactions, self._ids.num_rows
        return gen, n, self._meta.where_rows(where, where_params, n)

    def _allowed(self, filter_ids: Optional[Iterable[IdLike]], where: Optional[str] = None,
                 where_params: Sequence[Any] = (),
                 pre: Optional[Tuple[int, int, np.ndarray]] = None) -> Optional[AllowedRows]:
        """The rows a search may return, or None when every row is allowed (no tombstones, no
        filter). A filter gives its rows (O(filter) to find, never a per-row pass); tombstones
        alone give the live bitmap the id map keeps in step (no copy, no count)."""
        ids = self._ids
        n = ids.num_rows
        if filter_ids is None and where is None:
            if self.num_deleted == 0:
                return None
            return AllowedRows(n, bitmap=ids.alive_bool, count=len(ids), packed=ids.alive_packed)
        rows = None if filter_ids is None else ids.live_rows(filter_ids)
        if where is not None:
            if pre is not None and pre[0] == self._compactions:
                match = pre[2]  # rows added since are left out: the search ran before them
            else:
                match = self._meta.where_rows(where, where_params, n)
            if rows is None:
                rows = match[ids.alive_bool[match]] if len(match) else match
            else:
                rows = np.intersect1d(rows, match, assume_unique=True)
        return AllowedRows(n, rows=rows)

    def _empty_result(self, nq: int, k: int) -> Tuple[np.ndarray, np.ndarray]:
        return (self._ids.ids_of(np.full((nq, k), -1, dtype=np.int64)),
                np.full((nq, k), -np.inf, dtype=np.float32))

    def _rerank(self, qtok: np.ndarray, qoff: np.ndarray, k: int, cand: Optional[np.ndarray],
                allowed: Optional[np.ndarray], threads: int) -> Tuple[np.ndarray, np.ndarray]:
        alive = None if allowed is None else allowed.view(np.uint8)
        rows, scores = self._store.rerank(qtok, qoff, k, cand, alive, threads)
        return self._ids.ids_of(rows), scores

    # -- persistence ---------------------------------------------------------------------------
    def save(self, path: PathLike) -> None:
        """Save to directory ``path`` atomically (versioned format, checksummed files and manifest).

        Files go to a temporary sibling ``<path>.tmp-<random>`` (fsynced); then an existing
        ``path`` is renamed to ``<path>.bak``, the new directory to ``path``, and the backup is
        deleted. A crash at any point leaves ``path`` or ``<path>.bak`` whole, and :meth:`load`
        falls back to ``<path>.bak`` when ``path`` is missing. Only directories this library
        marked as its own are ever deleted; a symlinked ``path`` saves where it points.
        Concurrent searches may continue meanwhile. A backend being built in the background
        (an ``auto`` crossing) is waited for first, so that the saved index holds it.

        Raises
        ------
        ValueError
            If ``path`` exists and is not a muvera index directory, or ``<path>.bak`` exists and
            was not written by muvera for this index.
        """
        from . import __version__  # noqa: PLC0415 (the package is loaded by now)

        target = index_format.resolve_index_dir(path)
        self.wait_for_backend()  # a background crossing lands first: a load then need not rebuild it

        def write(tmp: Path) -> Dict[str, Any]:
            parts = index_format.IndexParts(
                self._config.to_dict(), self._model, self._ids, self._store, self._backend, self._meta,
                self._exact, {"build": self._build_state, "tuned": self._tuned,
                              "search": {"prune_factor": self._prune_factor}})
            return index_format.write_index(tmp, parts, __version__)

        if self._wal is not None and target == self._wal_dir:  # a checkpoint: no write slips in between
            with self._mutate, self._save_lock, self._rw.read():
                index_format.save_directory(target, FORMAT_NAME, write)
                self._wal.close()  # the old log went with the old directory
                self._wal = WriteAheadLog(target, sync=self._wal_sync, group_commit=self._wal.group_commit)
            return
        with self._save_lock, self._rw.read():
            index_format.save_directory(target, FORMAT_NAME, write)

    @classmethod
    def load(cls, path: PathLike, mmap: bool = True, *, backend: Optional[str] = None,
             verify: bool = True, num_threads: Optional[int] = None) -> "MuveraIndex":
        """Load an index saved by :meth:`save` (any format version this release reads).

        Parameters
        ----------
        path : str or path
            The index directory (``<path>.bak`` is used if ``path`` is missing: an interrupted save).
        mmap : bool, default True
            Memory-map tokens (and the exact backend's FDEs) read-only; appending copies them.
        backend : str, optional
            Rebuild with another backend (default: the saved one), from the saved FDEs when the
            saved backend holds them exactly, else by re-encoding the stored tokens.
        verify : bool, default True
            Check every file's SHA-256 (reads each file once). Sizes are always checked.
        num_threads : int, optional

        Raises
        ------
        FileNotFoundError
            No index at ``path`` (nor a backup).
        ValueError
            Unknown format, a newer format version, a missing, truncated or corrupted file
            (named), an edited manifest, or contents inconsistent with ``manifest.json``.
        """
        for attempt in range(cls.LOAD_ATTEMPTS):
            before = index_format.dir_identity(path)
            try:
                with index_format.swap_lock(index_format.resolve_index_dir(path), exclusive=False):
                    f = index_format.read_index(path, verify)
                    try:
                        index = cls._from_files(f, mmap, backend, num_threads)
                    except (KeyError, TypeError, AttributeError) as exc:
                        raise ValueError(f"manifest.json: malformed ({type(exc).__name__}: {exc})") from None
            except (ValueError, OSError):
                # A save in another process swapped the directory while it was read: read again.
                if attempt + 1 < cls.LOAD_ATTEMPTS and index_format.dir_identity(path) != before:
                    time.sleep(0.01 * (attempt + 1))
                    continue
                raise
            if index_format.dir_identity(path) == before or attempt + 1 == cls.LOAD_ATTEMPTS:
                break
        index_format.clean_stale(index_format.resolve_index_dir(path))
        records, _, _ = WriteAheadLog.read(f.root)  # changes logged since the last checkpoint
        index._replay(records)
        return index

    def _replay(self, records: List[Any]) -> None:
        """Apply logged changes in order, exactly as they were applied when logged."""
        for i, rec in enumerate(records):
            try:
                with self._mutate:
                    if rec.kind == "remove":
                        with self._rw.write():
                            self._ids.remove(rec.ids)
                        continue
                    lens = np.asarray(rec.lengths, dtype=np.int64)
                    items = None if rec.metadata is None else MetadataStore.check(rec.metadata, len(lens))
                    if rec.replace:  # an upsert: the old versions go with the same record
                        live = [x for x in rec.ids if x in self._ids]
                        with self._rw.write():
                            self._ids.remove(live)
                    new_ids = self._ids.check_new(rec.ids, len(lens))
                    tokens = np.ascontiguousarray(rec.tokens, dtype=self._store.input_dtype)
                    with self._rw.write():
                        self._add_batch(tokens, lens, new_ids, items, rec.texts)
            except (KeyError, ValueError, TypeError) as exc:
                raise ValueError(f"wal.log: record {i} ({rec.kind}) cannot be replayed: {exc}") from None

    @classmethod
    def open(cls, path: PathLike, config: Optional[FDEConfig] = None, *, wal: bool = True, sync: bool = True,
             group_commit: bool = False, mmap: bool = True, **kwargs: Any) -> "MuveraIndex":
        """Open the index at ``path`` for durable writes: every ``add`` and ``remove`` is
        appended to ``path/wal.log`` (fsynced when ``sync``) before it is applied and before
        the call returns, so an acknowledged write survives a crash; :meth:`load` replays the
        log, and :meth:`checkpoint` folds it into the saved index. One process writes an index
        at a time (a second ``open`` raises ValueError).

        Parameters
        ----------
        path : path
            The index directory. If it does not exist, ``config`` (and ``kwargs``, as for
            :class:`MuveraIndex`) make a new, empty index saved there.
        config : FDEConfig, optional
            Only for a new index.
        wal : bool, default True
            False: :meth:`load` (the log, if any, is replayed, and nothing new is logged).
        sync : bool, default True
            fsync each record before the write returns (False: the OS flushes; a process crash
            loses nothing, a power loss may lose the last writes).
        group_commit : bool, default False
            Concurrent writers share flushes: a change is applied and the write lock released
            before its record is flushed, and the call returns once a flush -- the first waiter's,
            covering every record written so far -- has it on disk. Throughput under concurrent
            writers approaches that without a log; a single sequential writer gains nothing. A
            concurrent reader may see a change before it is durable (a crash then loses it, but it
            was never acknowledged), and a failed flush fails its changes after they were
            applied: the log then refuses writes (OSError) until the index is loaded again.
        mmap : bool, default True
            As for :meth:`load`.

        Raises
        ------
        ValueError
            Another process has the index open for writing; a new index without ``config``.
        """
        root = index_format.resolve_index_dir(path)
        created = False
        if not root.exists() and not (root.parent / (root.name + ".bak")).exists():
            if config is None:
                raise ValueError(f"path: no index at {root}; give config= to create one")
            cls(config, **kwargs).save(root)
            created = True
        index = cls.load(root, mmap=mmap)
        if not created:  # open-or-create: what was given must describe the index that is there
            other = sorted(set(kwargs) - {"backend", "token_codec"})
            if other:
                raise ValueError(f"{other[0]}: {root} holds an index already; options of a new index do not apply")
            given = {"config": config, "backend": kwargs.get("backend"), "token_codec": kwargs.get("token_codec")}
            saved = {"config": index.config, "backend": index.backend.name, "token_codec": index.store.codec_name}
            for key, value in given.items():
                if value is not None and value != saved[key]:
                    raise ValueError(f"{key}: {root} holds an index with {key} {saved[key]!r}, not {value!r}")
        if not isinstance(group_commit, bool):
            raise TypeError(f"group_commit: expected True or False, got {group_commit!r}")
        if wal:
            index._attach_wal(index_format.find_index_dir(root), sync, group_commit)
        elif group_commit:
            raise ValueError("group_commit: only with wal=True")
        return index

    def _attach_wal(self, directory: Path, sync: bool, group_commit: bool = False) -> None:
        # Opening cuts a torn tail: that record was never acknowledged.
        log = WriteAheadLog(directory, sync=sync, group_commit=group_commit)
        self._wal, self._wal_dir, self._wal_sync = log, index_format.resolve_index_dir(directory), sync

    def checkpoint(self) -> None:
        """Fold the write-ahead log into the saved index (a new directory swapped in atomically,
        with an empty log); an index opened without a log raises ValueError."""
        if self._wal is None:
            raise ValueError("checkpoint: this index has no write-ahead log; open it with MuveraIndex.open(path)")
        self.save(self._wal_dir)

    def close(self) -> None:
        """Release the write-ahead log (the index stays usable in memory, without logging)."""
        if self._wal is not None:
            self._wal.close()
            self._wal = None

    #: Reads of an index that a concurrent save keeps replacing, before :meth:`load` gives up.
    LOAD_ATTEMPTS = 8

    @classmethod
    def _from_files(cls, f: "index_format.IndexFiles", mmap: bool, backend: Optional[str],
                    num_threads: Optional[int]) -> "MuveraIndex":
        try:
            config = FDEConfig.from_dict(f.config)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"manifest.json: bad config: {exc}") from None
        try:
            saved = make_backend(f.backend_spec, config.output_dimension)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"manifest.json: backend: {exc}") from None
        index = cls(config, saved.name if backend is None else backend, num_threads=num_threads,
                    token_codec=str(f.tokens_fields["token_codec"]), model=f.model)
        n = f.num_rows
        index._ids = f.id_map
        index._store = TokenStore.load(f.root, f.tokens_fields, f.files, config.dimension, n, mmap)
        if "metadata.sqlite" in f.files:
            index._meta = MetadataStore.load(f.root)
        index._build_state = f.build
        index._tuned = check_tuned(f.tuned)
        search = f.search or {}
        try:  # saved before 0.10.0 (no section): no prune, the results it gave then
            index._prune_factor = check_prune_factor(search.get("prune_factor", 1), "prune_factor")
        except ValueError as exc:
            raise ValueError(f"manifest.json: search: {exc}") from None
        if f.exact_fields is not None:  # always memory-mapped: only the codes need to be in RAM
            index._exact = TokenStore.load(f.root, f.exact_fields, f.files, config.dimension, n, True,
                                           prefix="exact_")
        if f.backend_entries:
            saved.load(f.root, f.backend_entries, mmap)
            if saved.ntotal != n:
                raise ValueError(f"{sorted(f.backend_entries)[0]}: holds {saved.ntotal} vectors, expected {n}")
        # The saved backend as it was saved (an auto index from 0.4.0 keeps its unrefined codes:
        # its spec read "auto" then), unless another backend was asked for.
        if f.backend_entries and (backend is None or index._backend.name == saved.name):
            index._backend = saved
        elif n:
            source = saved if f.backend_entries else None
            index._backend = index._backend.replacement(n) or index._backend
            index._fill_backend(index._backend, np.arange(n, dtype=np.int64), source)
        return index
