"""ShardedIndex: N MuveraIndex shards held by Ray actors, documents routed by a stable id hash.

On-disk layout (format ``muvera-sharded-index``, version 1)::

    <dir>/manifest.json          config, backend, token dtype, number of shards, routing
    <dir>/shard-00000/           a normal MuveraIndex directory (MuveraIndex.load reads it)
    <dir>/shard-00001/
    ...
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Any, Dict, Hashable, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from .._validate import MAX_THREADS, check_search_args, positive_int
from ..backends import make_backend
from ..metadata import MetadataStore
from ..codecs import make_codec
from ..config import FDEConfig
from ..encoder import FDEEncoder
from ..idmap import id_list, normalise_id
from ..index_format import read_manifest, write_manifest
from ..ragged import gather, offsets_of
from ..prune import check_prune_codec, split_prune
from ..store import pack_tokens
from .._optional import require

__all__ = ["ShardedIndex", "shard_of", "SHARDED_FORMAT", "SHARDED_FORMAT_VERSION"]

SHARDED_FORMAT = "muvera-sharded-index"
SHARDED_FORMAT_VERSION = 1
PathLike = Union[str, "os.PathLike[str]"]


# -- routing ------------------------------------------------------------------------------------
def shard_of(doc_id: Union[int, str], num_shards: int) -> int:
    """The shard a document id lives on: ``crc32(tag + str(id)) % num_shards``.

    The same in every process and Python version (unlike the salted built-in ``hash``); the tag
    keeps ``7`` and ``"7"`` (different ids in a MuveraIndex) apart.
    """
    x = normalise_id(doc_id, "doc_id")
    key = (b"i:" + str(x).encode("ascii")) if isinstance(x, int) else (b"s:" + x.encode("utf-8"))
    return zlib.crc32(key) % num_shards


def _merge(answers: List[Tuple[np.ndarray, np.ndarray, int]], nq: int, k: int,
           id_kind: Optional[str]) -> Tuple[np.ndarray, np.ndarray]:
    """Merge per-shard top-k lists (in shard order) into one top-k per query.

    A stable sort on the concatenation breaks score ties by shard, then by the shard's rank.
    Ids are int64 padded -1 unless the index holds str ids (object, padded None), and ``k`` is
    capped at the live documents of the answering shards, as for a single MuveraIndex.
    """
    k = min(k, max(1, sum(n for _, _, n in answers)))
    parts = [(i, s) for i, s, _ in answers]
    if not parts:
        empty = np.full((nq, k), None if id_kind == "str" else -1, dtype=object if id_kind == "str" else np.int64)
        return empty, np.full((nq, k), -np.inf, dtype=np.float32)
    scores = np.concatenate([s for _, s in parts], axis=1)
    if scores.shape[1] < k:
        pad = k - scores.shape[1]
        scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        parts = [(np.pad(i, ((0, 0), (0, pad)), constant_values=None if i.dtype == object else -1), s)
                 if j == 0 else (i, s) for j, (i, s) in enumerate(parts)]
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(scores, order, axis=1).astype(np.float32, copy=False)
    pad = np.isneginf(top)
    if id_kind != "str":
        ids = np.take_along_axis(np.concatenate([i for i, _ in parts], axis=1), order, axis=1)
        ids[pad] = -1
    else:
        objs = []
        for i, _ in parts:
            o = i.astype(object)
            if i.dtype != object:
                o[i < 0] = None
            objs.append(o)
        ids = np.take_along_axis(np.concatenate(objs, axis=1), order, axis=1)
        ids[pad] = None
    return ids, top


# -- the actor ----------------------------------------------------------------------------------
class _ShardWorker:
    """One MuveraIndex inside a Ray actor (made remote lazily by :func:`_actor_class`)."""

    def __init__(self, config: Dict[str, Any], backend: str, token_codec: str,
                 num_threads: Optional[int], path: Optional[str], load: bool, autosave: bool,
                 mmap: bool, keep_exact: bool = False) -> None:
        from ..index import MuveraIndex  # noqa: PLC0415

        self._path, self._autosave = path, autosave
        if load:
            self._index = MuveraIndex.load(path, mmap=mmap, backend=backend, num_threads=num_threads)
        else:
            self._index = MuveraIndex(FDEConfig.from_dict(config), backend, num_threads=num_threads,
                                      token_codec=token_codec, keep_exact=keep_exact)
            if path is not None:  # an empty shard on disk: reload_shard always has a base
                self._index.save(path)

    def _persist(self) -> None:
        if self._autosave and self._path is not None:
            self._index.save(self._path)

    def ping(self) -> bool:
        return True

    def len(self) -> int:
        return len(self._index)

    def ids(self) -> List[Hashable]:
        return self._index.ids

    def id_kind(self) -> Optional[str]:
        return self._index.id_kind

    def has_exact_tier(self) -> bool:
        return self._index.exact_tier is not None

    def present(self, ids: List[Hashable]) -> List[Hashable]:
        return [x for x in ids if x in self._index]

    def needs_training(self) -> bool:
        return self._index.store.needs_training

    def add(self, tokens: np.ndarray, lengths: np.ndarray, ids: List[Hashable],
            metadata: Optional[List[Dict[str, Any]]] = None) -> int:
        self._index.add(tokens, ids=ids, lengths=lengths, metadata=metadata)
        self._persist()
        return len(ids)

    def remove(self, ids: List[Hashable]) -> int:
        n = self._index.remove(ids)
        self._persist()
        return n

    def compact(self) -> int:
        n = self._index.compact()
        if n:
            self._persist()
        return n

    def get_tokens(self, doc_id: Hashable) -> np.ndarray:
        return self._index.get_tokens(doc_id)

    def search(self, qtok: np.ndarray, qoff: np.ndarray, qfde: np.ndarray, k: int, candidates: Optional[int],
               kwargs: Dict[str, Any]) -> Tuple[np.ndarray, np.ndarray]:
        # The driver checked and encoded the queries once for every shard. What the caller left
        # unset comes from this shard's tuned setting, else the defaults, as in MuveraIndex.search.
        kwargs = dict(kwargs)
        c, kwargs["params"], kwargs["rescore"] = self._index.search_settings(k, candidates, kwargs.get("params"),
                                                                             kwargs.get("rescore"))
        ids, scores = self._index.search_packed(qtok, qoff, qfde, k, c, **kwargs)
        return ids, scores, len(self._index)

    def tune(self, queries: Optional[Tuple[np.ndarray, np.ndarray]], options: Dict[str, Any]) -> Any:
        qtok, lens = (None, None) if queries is None else queries
        result = self._index.tune(qtok, lengths=lens, verbose=False, **options)
        self._persist()
        return result

    def tuned(self) -> Optional[Dict[str, Any]]:
        return self._index.tuned

    def search_exact(self, qtok: np.ndarray, qoff: np.ndarray, k: int, filter_ids: Optional[List[Hashable]],
                     where: Optional[str] = None, where_params: Sequence[Any] = ()) -> Tuple[np.ndarray, np.ndarray, int]:
        ids, scores = self._index.search_exact_packed(qtok, qoff, k, filter_ids=filter_ids, where=where,
                                                      where_params=where_params)
        return ids, scores, len(self._index)

    def save(self, path: str) -> None:
        self._index.save(path)


def _check_where(where: Optional[str], where_params: Any) -> None:
    """The driver's check of a metadata condition's types (each shard runs it)."""
    if where is not None and (not isinstance(where, str) or not where.strip()):
        raise TypeError(f"where: expected an SQL condition string, got {where!r}")
    if isinstance(where_params, (str, bytes)) or not isinstance(where_params, Sequence):
        raise TypeError(f"where_params: expected a tuple of values, got {type(where_params).__name__}")


_ACTOR_CLASS: Any = None


def _actor_class() -> Any:
    global _ACTOR_CLASS
    if _ACTOR_CLASS is None:
        ray = require("ray", "ray", "ShardedIndex")

        _ACTOR_CLASS = ray.remote(_ShardWorker)
    return _ACTOR_CLASS


def _actor_errors() -> Tuple[type, ...]:
    import ray.exceptions as rex  # noqa: PLC0415

    names = ("RayActorError", "ActorDiedError", "ActorUnavailableError", "ActorUnschedulableError")
    return tuple(getattr(rex, n) for n in names if hasattr(rex, n))


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first[:160]}" if first else type(exc).__name__


# -- the index ----------------------------------------------------------------------------------
class ShardedIndex:
    """A MuveraIndex split over ``num_shards`` Ray actors.

    Parameters
    ----------
    config : FDEConfig
    num_shards : int
    backend : str, default "auto"
        Backend of every shard (as for :class:`muvera.MuveraIndex`).
    shard_dir : str or path, optional
        Directory for the shards' saves (``shard-XXXXX`` subdirectories plus ``manifest.json``).
        Required for :meth:`reload_shard`. Must not already hold a sharded index (use
        :meth:`load` to reopen one).
    autosave : bool, optional
        Default True when ``shard_dir`` is set: every :meth:`add` / :meth:`remove` /
        :meth:`compact` saves each shard it touched, inside the same actor call, so a call that
        returned is on disk and survives the loss of the actor. Each save rewrites the whole
        shard (atomically): add in large batches, or pass False and call :meth:`save` yourself
        (then :meth:`reload_shard` restores the last explicit save).
    token_dtype : {"float16", "float32"}, optional
        Kept for compatibility: the same as ``token_codec``.
    num_threads : int, optional
        Threads of each shard's MuveraIndex (default: every core of its node; lower it when
        several shards share a node).
    actor_options : dict, optional
        Passed to ``ActorClass.options`` for every shard, e.g. ``{"num_cpus": 4}``,
        ``{"max_concurrency": 4}`` (concurrent searches per shard), ``{"resources": {...}}``.
    token_codec : str, optional
        Token encoding of every shard (:func:`muvera.codecs.make_codec`); default ``"float16"``.

    Notes
    -----
    * **Routing**: a document lives on shard :func:`shard_of` ``(id, num_shards)`` (CRC-32,
      stable across processes). Ids must be ints or strings and are required by :meth:`add`.
    * **Ids** are ints or strings, one kind per index (as for :class:`muvera.MuveraIndex`); results
      are int64 padded ``-1`` or object padded ``None`` accordingly.
    * **Search** encodes the queries' FDEs once, then sends them to every shard at once (one object-store copy) and merges
      each query's top-``k`` by score, ties broken by shard then by rank within the shard. Each
      shard reranks up to ``candidates`` of *its* documents, so with a ``candidates`` that covers
      every document both :meth:`search` and :meth:`search_exact` equal a single MuveraIndex's
      :meth:`~muvera.MuveraIndex.search_exact` on the same documents (up to the order of exactly
      tied scores).
    * **Failures**: a shard whose actor died makes calls raise ``RuntimeError("shard i is
      unavailable (...); call reload_shard(i)")``. :meth:`add` and :meth:`remove` first ask every
      shard they touch (which also checks for clashing / missing ids), so a shard found dead then
      leaves the index unchanged; a shard dying in the middle of a call can leave that call
      applied on the other shards only.
    * With a multi-node cluster, ``shard_dir`` must be on storage every node sees at the same path.
    * Searches may run from several threads; calls that change the index should not overlap.
    """

    #: Query batches smaller than this (tokens + FDEs) are sent inside each shard's call, larger
    #: ones through the object store once.
    INLINE_QUERY_BYTES = 1 << 20

    def __init__(self, config: FDEConfig, num_shards: int, *, backend: str = "auto",
                 shard_dir: Optional[PathLike] = None, autosave: Optional[bool] = None,
                 token_dtype: Optional[str] = None, num_threads: Optional[int] = None,
                 actor_options: Optional[Dict[str, Any]] = None, token_codec: Optional[str] = None,
                 keep_exact: bool = False, _load: bool = False, _mmap: bool = True) -> None:
        from ..index import codec_spec  # noqa: PLC0415

        if not isinstance(config, FDEConfig):
            raise TypeError(f"config: expected an FDEConfig, got {type(config).__name__}")
        self._num_shards = positive_int(num_shards, "num_shards", 1 << 16)
        if num_threads is not None:
            positive_int(num_threads, "num_threads", MAX_THREADS)
        # Checked here, before any actor starts: a bad spec is the caller's error, not a dead shard.
        self._proto = make_backend(backend, config.output_dimension)  # checks search params too
        self._backend = self._proto.name
        self._token_codec = make_codec(codec_spec(token_dtype, token_codec), config.dimension)
        self._keep_exact = bool(keep_exact)
        self._exact_tiers: Optional[bool] = None  # whether every shard keeps one (asked on first rescore)
        self._config = config
        self._encoder = FDEEncoder(config, num_threads=num_threads)
        self._id_kind: Optional[str] = None
        self._num_threads = num_threads
        self._actor_options = dict(actor_options or {})
        self._shard_dir = None if shard_dir is None else Path(os.fspath(shard_dir)).absolute()
        self._autosave = (self._shard_dir is not None) if autosave is None else bool(autosave)
        self._mmap = _mmap
        if self._autosave and self._shard_dir is None:
            raise ValueError("autosave: needs a shard_dir to save to")
        if self._shard_dir is not None and not _load:
            if (self._shard_dir / "manifest.json").exists():
                raise FileExistsError(f"shard_dir: {self._shard_dir} already holds a sharded index; "
                                      "reopen it with ShardedIndex.load")
            self._shard_dir.mkdir(parents=True, exist_ok=True)
        # Actors start in parallel: their constructors run concurrently.
        self._actors = [self._spawn(i, load=_load) for i in range(self._num_shards)]
        kinds = self._get({i: a.id_kind.remote() for i, a in enumerate(self._actors)})
        found = {k for k in kinds.values() if k is not None}
        if len(found) > 1:
            raise ValueError("shards hold different id kinds (int and str); the index is inconsistent")
        self._id_kind = found.pop() if found else None
        if self._shard_dir is not None and not _load:
            write_manifest(self._shard_dir, self._manifest())

    # -- plumbing ------------------------------------------------------------------------------
    def _shard_path(self, i: int, root: Optional[Path] = None) -> Optional[str]:
        base = root if root is not None else self._shard_dir
        return None if base is None else str(base / f"shard-{i:05d}")

    def _spawn(self, i: int, load: bool) -> Any:
        cls = _actor_class()
        if self._actor_options:
            cls = cls.options(**self._actor_options)
        return cls.remote(self._config.to_dict(), self._backend, self._token_codec.name, self._num_threads,
                          self._shard_path(i), load, self._autosave, self._mmap, self._keep_exact)

    def _get(self, refs: Dict[int, Any]) -> Dict[int, Any]:
        """ray.get every shard's future; a dead actor becomes a RuntimeError naming the shard."""
        import ray  # noqa: PLC0415

        dead_errors = _actor_errors()
        out: Dict[int, Any] = {}
        dead: List[Tuple[int, BaseException]] = []
        for i, ref in refs.items():
            try:
                out[i] = ray.get(ref)
            except dead_errors as exc:  # the actor is gone; any other error is the caller's
                dead.append((i, exc))
        if dead:
            i, exc = dead[0]
            more = f" (also unavailable: shards {[j for j, _ in dead[1:]]})" if len(dead) > 1 else ""
            raise RuntimeError(f"shard {i} is unavailable ({_short(exc)}); call reload_shard({i})"
                               f"{more}") from exc
        return out

    def _manifest(self) -> Dict[str, Any]:
        from .. import __version__  # noqa: PLC0415

        return {"format": SHARDED_FORMAT, "format_version": SHARDED_FORMAT_VERSION,
                "muvera_version": __version__, "config": self._config.to_dict(),
                "num_shards": self._num_shards, "backend": self._backend,
                "token_codec": self._token_codec.name, "keep_exact": self._keep_exact, "routing": "crc32",
                "shards": [f"shard-{i:05d}" for i in range(self._num_shards)]}

    def _route(self, ids: Sequence[Union[int, str]]) -> np.ndarray:
        return np.fromiter((shard_of(x, self._num_shards) for x in ids), dtype=np.int64, count=len(ids))

    # -- properties ----------------------------------------------------------------------------
    @property
    def config(self) -> FDEConfig:
        """The FDE configuration shared by every shard."""
        return self._config

    @property
    def num_shards(self) -> int:
        """Number of shards (fixed for the index's life: routing depends on it)."""
        return self._num_shards

    @property
    def shard_dir(self) -> Optional[Path]:
        """Where shards save themselves (None: in memory only)."""
        return self._shard_dir

    @property
    def actors(self) -> List[Any]:
        """The shards' Ray actor handles, in shard order."""
        return list(self._actors)

    @property
    def ids(self) -> List[Hashable]:
        """Live ids, shard by shard, each shard in insertion order."""
        got = self._get({i: a.ids.remote() for i, a in enumerate(self._actors)})
        return [x for i in range(self._num_shards) for x in got[i]]

    def shard_sizes(self) -> List[int]:
        """Live documents per shard."""
        got = self._get({i: a.len.remote() for i, a in enumerate(self._actors)})
        return [got[i] for i in range(self._num_shards)]

    def __len__(self) -> int:
        return sum(self.shard_sizes())

    def __contains__(self, doc_id: Any) -> bool:
        try:
            x = normalise_id(doc_id, "id")
        except (TypeError, ValueError):
            return False
        s = shard_of(x, self._num_shards)
        return bool(self._get({s: self._actors[s].present.remote([x])})[s])

    def __repr__(self) -> str:
        return (f"ShardedIndex(num_shards={self._num_shards}, backend={self._backend!r}, "
                f"shard_dir={None if self._shard_dir is None else str(self._shard_dir)!r})")

    # -- add / remove --------------------------------------------------------------------------
    def add(self, documents: Any, ids: Sequence[Union[int, str]], *, metadata: Any = None, lengths: Any = None,
            offsets: Any = None, mask: Any = None) -> List[Union[int, str]]:
        """Add documents, each to the shard its id hashes to; returns the ids.

        Parameters
        ----------
        documents : any batch form accepted by :meth:`muvera.MuveraIndex.add`
        ids : sequence of int or str
            Required (they decide the shard), unique, not already in the index.
        metadata : list of dict, optional
            One dict per document, stored in its shard (``search(..., where=...)`` filters on it).
        lengths, offsets, mask : optional
            Item boundaries for packed / padded input.

        Raises
        ------
        ValueError
            Malformed documents, wrong number of ids, duplicate or already-present ids (checked
            before any shard changes).
        TypeError
            Missing ids or ids that are neither int nor str.
        RuntimeError
            A shard is unavailable (see :meth:`reload_shard`).
        """
        import ray  # noqa: PLC0415

        if ids is None:
            raise TypeError("ids: required by ShardedIndex.add (documents are routed to shards by id)")
        # Validate and round once here, as every shard would, so shards never see a bad batch.
        tokens, lens = pack_tokens(documents, self._config.dimension, self._token_codec.input_dtype,
                                   lengths=lengths, offsets=offsets, mask=mask, name="documents")
        new_ids = id_list(ids, "ids", single_ok=False)
        if len(new_ids) != len(lens):
            raise ValueError(f"ids: expected {len(lens)} ids (one per document), got {len(new_ids)}")
        items = None if metadata is None else MetadataStore.check(metadata, len(lens))
        kinds = {"int" if isinstance(x, int) else "str" for x in new_ids}
        if len(kinds) > 1 or (self._id_kind is not None and kinds and kinds != {self._id_kind}):
            raise TypeError(f"ids: an index holds one kind of id ({self._id_kind or 'int or str'}), got "
                            f"{sorted(kinds)}")
        if len(set(new_ids)) != len(new_ids):
            seen: set = set()
            dups = [x for x in new_ids if x in seen or seen.add(x)]  # type: ignore[func-returns-value]
            raise ValueError(f"ids: duplicate ids in this call: {dups[:10]}")
        route = self._route(new_ids)
        groups = {s: np.flatnonzero(route == s) for s in np.unique(route).tolist()}
        # Ask first: finds dead shards and clashing ids before anything changes.
        present = self._get({s: self._actors[s].present.remote([new_ids[j] for j in rows.tolist()])
                             for s, rows in groups.items()})
        clash = [x for s in sorted(present) for x in present[s]]
        if clash:
            raise ValueError(f"ids: already in the index: {clash[:10]}")
        offs = offsets_of(lens)
        if self._token_codec.needs_training:
            # Each shard trains its codec on its first slice: refuse before any shard changes if an
            # untrained shard would get too few tokens to train on.
            untrained = self._get({s: self._actors[s].needs_training.remote() for s in groups})
            need = int(getattr(self._token_codec, "min_training_tokens", lambda: 0)())
            short = {s: int(lens[rows].sum()) for s, rows in groups.items()
                     if untrained[s] and int(lens[rows].sum()) < need}
            if short:
                raise ValueError(f"documents: the {self._token_codec.name!r} codec trains per shard on its first "
                                 f"add and needs {need} tokens; shards {sorted(short)} would get {short} tokens. "
                                 "Add a larger first batch")
        refs = {}
        for s, rows in groups.items():
            tok, ln = gather(tokens, offs, rows)
            refs[s] = self._actors[s].add.remote(ray.put(tok), ln, [new_ids[j] for j in rows.tolist()],
                                                 None if items is None else [items[j] for j in rows.tolist()])
        self._get(refs)
        if kinds:
            self._id_kind = kinds.pop()
        return new_ids

    def remove(self, ids: Any) -> int:
        """Remove documents by id (one id or an iterable); returns how many were removed.

        Raises
        ------
        KeyError
            If any id is not in the index (checked on every shard first; nothing is removed then).
        RuntimeError
            A shard is unavailable.
        """
        targets = list(dict.fromkeys(id_list(ids, "ids", single_ok=True)))
        if not targets:
            return 0
        route = self._route(targets)
        groups = {s: [targets[j] for j in np.flatnonzero(route == s).tolist()]
                  for s in np.unique(route).tolist()}
        present = self._get({s: self._actors[s].present.remote(g) for s, g in groups.items()})
        found = {x for v in present.values() for x in v}
        missing = [x for x in targets if x not in found]
        if missing:
            raise KeyError(f"ids: not in the index: {missing[:10]}")
        got = self._get({s: self._actors[s].remove.remote(g) for s, g in groups.items()})
        return int(sum(got.values()))

    def compact(self) -> int:
        """Compact every shard (see :meth:`muvera.MuveraIndex.compact`); returns rows dropped."""
        got = self._get({i: a.compact.remote() for i, a in enumerate(self._actors)})
        return int(sum(got.values()))

    def get_tokens(self, doc_id: Union[int, str]) -> np.ndarray:
        """A copy of one document's stored tokens (from its shard)."""
        x = normalise_id(doc_id, "id")
        s = shard_of(x, self._num_shards)
        return self._get({s: self._actors[s].get_tokens.remote(x)})[s]

    # -- search --------------------------------------------------------------------------------
    def _queries(self, queries: Any, lengths: Any, offsets: Any, mask: Any,
                 encode: bool) -> Tuple[Any, Any, Any, int]:
        import ray  # noqa: PLC0415

        qtok, qlens = pack_tokens(queries, self._config.dimension, np.float32, lengths=lengths,
                                  offsets=offsets, mask=mask, name="queries")
        qoff = offsets_of(qlens)
        # Encoded once here, not in every shard. A large batch goes into the object store once,
        # shared by every shard's call; a small one travels inside the calls (a put costs about
        # as much as a call: 3 puts took 2.6 ms of a 32-token query's 8.9 ms).
        qfde = self._encoder.encode_spans(qtok, qoff[:-1], qlens, is_document=False) if encode else None
        if qtok.nbytes + (0 if qfde is None else qfde.nbytes) < self.INLINE_QUERY_BYTES:
            return qtok, qoff, qfde, len(qlens)
        return ray.put(qtok), ray.put(qoff), (ray.put(qfde) if encode else None), len(qlens)

    def _filter_groups(self, filter_ids: Optional[Iterable[Hashable]]) -> Optional[Dict[int, List[Any]]]:
        if filter_ids is None:
            return None
        wanted = []
        for x in (filter_ids.tolist() if isinstance(filter_ids, np.ndarray) else filter_ids):
            try:
                wanted.append(normalise_id(x, "filter_ids"))
            except (TypeError, ValueError):
                continue  # an id no shard can hold: ignored, like unknown ids
        groups: Dict[int, List[Any]] = {}
        for x in wanted:
            groups.setdefault(shard_of(x, self._num_shards), []).append(x)
        return groups

    def search(self, queries: Any, k: int = 10, candidates: Optional[int] = None, *, ball_carving: Any = None,
               filter_ids: Optional[Iterable[Hashable]] = None, params: Optional[Dict[str, Any]] = None,
               rescore: Optional[int] = None, where: Optional[str] = None, where_params: Sequence[Any] = (),
               lengths: Any = None, offsets: Any = None,
               mask: Any = None) -> Tuple[np.ndarray, np.ndarray]:
        """Top-``k`` per query over all shards (each shard: FDE candidates, Chamfer rerank).

        Same arguments and return convention as :meth:`muvera.MuveraIndex.search`;
        ``candidates`` applies per shard (so up to ``num_shards * candidates`` documents are
        reranked per query). Unset ``candidates``, ``params`` and ``rescore`` come from each
        shard's :meth:`tune` setting, else the defaults.

        Raises
        ------
        RuntimeError
            A shard is unavailable.
        """
        from ..index import ball_carving_tau  # noqa: PLC0415

        k, candidates, rescore = check_search_args(k, candidates, rescore)
        c = candidates  # None: each shard's tuned setting, else the default
        tau = ball_carving_tau(ball_carving)
        prune, backend_params = split_prune(params)
        check_prune_codec(prune, self._token_codec)
        self._proto.check_params(backend_params)
        if rescore is not None:
            if self._exact_tiers is None:  # asked once: shards never gain or lose their tier
                self._exact_tiers = all(self._get({i: a.has_exact_tier.remote()
                                                   for i, a in enumerate(self._actors)}).values())
            if not self._exact_tiers:
                raise ValueError("rescore: needs an exact tier; build the sharded index with keep_exact=True")
        _check_where(where, where_params)
        qtok, qoff, qfde, nq = self._queries(queries, lengths, offsets, mask, encode=True)
        groups = self._filter_groups(filter_ids)
        refs = {}
        for i, a in enumerate(self._actors):
            # Every shard answers (an empty filter is cheap): the result width counts them all.
            kw = {"tau": tau, "params": params, "filter_ids": None if groups is None else groups.get(i, []),
                  "rescore": rescore, "where": where, "where_params": tuple(where_params)}
            refs[i] = a.search.remote(qtok, qoff, qfde, k, c, kw)
        got = self._get(refs)
        return _merge([got[i] for i in sorted(got)], nq, k, self._id_kind)

    def tune(self, queries: Any = None, *, target_recall: float = 0.95, k: int = 10, num_queries: int = 64,
             seed: int = 0, lengths: Any = None, offsets: Any = None, mask: Any = None,
             max_settings: int = 200) -> List[Any]:
        """:meth:`muvera.MuveraIndex.tune` on every shard, in parallel: each stores (and, with a
        ``shard_dir``, saves) the fastest setting meeting ``target_recall`` on its own documents,
        which :meth:`search` then uses where the caller leaves it unset. A shard meeting the
        target on its documents keeps its share of the true top-k, so the merged recall meets
        it too. Default queries: pseudo-queries from each shard's documents.

        Returns
        -------
        list of TuneResult
            One per shard, in shard order.
        """
        packed = None
        if queries is not None:
            qtok, qlens = pack_tokens(queries, self._config.dimension, np.float32, lengths=lengths,
                                      offsets=offsets, mask=mask, name="queries")
            packed = (qtok, qlens)
        options = {"target_recall": target_recall, "k": k, "num_queries": num_queries, "seed": seed,
                   "max_settings": max_settings}
        got = self._get({i: a.tune.remote(packed, options) for i, a in enumerate(self._actors)})
        return [got[i] for i in sorted(got)]

    @property
    def tuned(self) -> List[Optional[Dict[str, Any]]]:
        """Each shard's stored :meth:`tune` setting (None where a shard has none)."""
        got = self._get({i: a.tuned.remote() for i, a in enumerate(self._actors)})
        return [got[i] for i in sorted(got)]

    def search_exact(self, queries: Any, k: int = 10, *, filter_ids: Optional[Iterable[Hashable]] = None,
                     where: Optional[str] = None, where_params: Sequence[Any] = (),
                     lengths: Any = None, offsets: Any = None,
                     mask: Any = None) -> Tuple[np.ndarray, np.ndarray]:
        """Brute-force Chamfer top-``k`` over every live document of every shard.

        Equals :meth:`muvera.MuveraIndex.search_exact` of one index holding the same documents
        (up to the order of exactly tied scores).
        """
        k = positive_int(k, "k")
        _check_where(where, where_params)
        qtok, qoff, _, nq = self._queries(queries, lengths, offsets, mask, encode=False)
        groups = self._filter_groups(filter_ids)
        refs = {i: a.search_exact.remote(qtok, qoff, k, None if groups is None else groups.get(i, []), where,
                                         tuple(where_params))
                for i, a in enumerate(self._actors)}
        got = self._get(refs)
        return _merge([got[i] for i in sorted(got)], nq, k, self._id_kind)

    # -- persistence / recovery ----------------------------------------------------------------
    def save(self, path: Optional[PathLike] = None) -> Path:
        """Save every shard (in parallel, each atomically) and the manifest; returns the directory.

        Parameters
        ----------
        path : str or path, optional
            Default: ``shard_dir``. Another directory makes an independent copy (``shard_dir``,
            where autosaves and :meth:`reload_shard` go, is unchanged). The manifest is written
            after every shard has saved.
        """
        if path is None:
            if self._shard_dir is None:
                raise ValueError("path: required when the index has no shard_dir")
            root = self._shard_dir
        else:
            root = Path(os.fspath(path)).absolute()
        if (root / "manifest.json").exists():
            try:
                read_manifest(root, SHARDED_FORMAT, SHARDED_FORMAT_VERSION)
            except ValueError:
                raise ValueError(f"path: {root} holds something other than a sharded index") from None
        root.mkdir(parents=True, exist_ok=True)
        self._get({i: a.save.remote(self._shard_path(i, root)) for i, a in enumerate(self._actors)})
        write_manifest(root, self._manifest())
        return root

    @classmethod
    def load(cls, path: PathLike, *, backend: Optional[str] = None, autosave: bool = True,
             mmap: bool = True, num_threads: Optional[int] = None,
             actor_options: Optional[Dict[str, Any]] = None) -> "ShardedIndex":
        """Reopen a sharded index saved by :meth:`save` (or kept up to date by autosave).

        ``path`` becomes the ``shard_dir`` (autosaves continue there unless ``autosave=False``).
        ``backend`` rebuilds every shard with another backend (see :meth:`muvera.MuveraIndex.load`).
        """
        root = Path(os.fspath(path)).absolute()
        if not (root / "manifest.json").exists():
            raise FileNotFoundError(f"path: no sharded index at {root} (manifest.json missing)")
        m = read_manifest(root, SHARDED_FORMAT, SHARDED_FORMAT_VERSION)
        if m.get("routing") != "crc32":
            raise ValueError(f"manifest.json: unknown routing {m.get('routing')!r}")
        try:
            config = FDEConfig.from_dict(m["config"])
            codec = m.get("token_codec", m.get("token_dtype"))
            return cls(config, m["num_shards"], backend=m["backend"] if backend is None else backend,
                       shard_dir=root, autosave=autosave, token_codec=codec, num_threads=num_threads,
                       actor_options=actor_options, keep_exact=bool(m.get("keep_exact", False)), _load=True,
                       _mmap=mmap)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"manifest.json: malformed ({type(exc).__name__}: {exc})") from None

    def ping(self) -> List[bool]:
        """Liveness of each shard's actor (True/False), without raising."""
        import ray  # noqa: PLC0415

        alive = []
        for a in self._actors:
            try:
                alive.append(bool(ray.get(a.ping.remote(), timeout=30)))
            except Exception:  # noqa: BLE001 (any failure means unavailable)
                alive.append(False)
        return alive

    def reload_shard(self, i: int) -> None:
        """Replace shard ``i``'s actor by a new one loaded from the shard's last save.

        With autosave (the default with ``shard_dir``) that save holds every completed
        :meth:`add` / :meth:`remove`, so nothing is lost. The old actor is killed first if it is
        still running.

        Raises
        ------
        RuntimeError
            The index has no ``shard_dir`` (the shard was never saved).
        """
        import ray  # noqa: PLC0415

        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < self._num_shards:
            raise ValueError(f"i: expected a shard number in [0, {self._num_shards}), got {i!r}")
        i = int(i)
        if self._shard_dir is None:
            raise RuntimeError(f"shard {i} cannot be reloaded: the index has no shard_dir, so it was "
                               "never saved")
        try:
            ray.kill(self._actors[i])
        except Exception:  # noqa: BLE001 (already dead)
            pass
        actor = self._spawn(i, load=True)
        try:  # a failed load surfaces here, not on the next call
            ray.get(actor.ping.remote())
        except Exception as exc:
            raise RuntimeError(f"shard {i}: reload from {self._shard_path(i)} failed ({_short(exc)})") from exc
        self._actors[i] = actor

    def close(self) -> None:
        """Stop every shard actor (unsaved changes are lost). The index is unusable afterwards."""
        import ray  # noqa: PLC0415

        for a in self._actors:
            try:
                ray.kill(a)
            except Exception:  # noqa: BLE001
                pass
        self._actors = []

    def __enter__(self) -> "ShardedIndex":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
