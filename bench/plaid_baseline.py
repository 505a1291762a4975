"""PLAID baseline (colbert-ai's engine) over precomputed token vectors, for side-by-side benchmarks.

colbert-ai (PyPI ``colbert-ai``, tested with 0.2.22) is an *optional* dependency: nothing here is
copied from it; it is imported lazily and :func:`plaid_available` says whether it can be used.
No ColBERT checkpoint is needed: the index is built from token vectors we already have, and
queries are given as token matrices, never as text.

How colbert-ai is driven
------------------------
Indexing uses colbert's own pipeline, ``colbert.indexing.collection_indexer.CollectionIndexer``
(``setup`` -> ``train`` -> ``index`` -> ``finalize``: passage sampling, faiss k-means with colbert's
partition heuristic ``2**floor(log2(16*sqrt(n_embeddings)))``, ``ResidualCodec`` bucket training,
``IndexSaver`` chunk compression, ``optimize_ivf``). Only its constructor is replaced, in a small
subclass: the stock one loads a ColBERT ``Checkpoint`` (a Hugging Face model) and wraps it in a
``CollectionEncoder``. The subclass instead installs an encoder whose ``encode_passages`` receives
the passage-id strings of the collection (``"0"``, ``"1"``, ...) and returns our ``(embs, doclens)``
for them. No colbert attribute is monkeypatched.

Search bypasses ``Searcher`` (which would also load a checkpoint to encode query text) and calls
the PLAID engine underneath it directly: ``colbert.search.index_storage.IndexScorer(index, use_gpu=
False)`` and ``IndexScorer.rank(config, Q)`` with a precomputed ``Q`` of shape ``(1, n_q_tokens,
dim)``. That is candidate generation over the centroid IVF (``ncells``), centroid-interaction
pruning (``centroid_score_threshold``) and the two-stage approximate filter keeping ``ndocs`` then
``ndocs // 4`` documents, then a MaxSim over their residual-decompressed vectors. The knobs default
to ``Searcher.dense_search``'s choices for the requested k.

CPU only. colbert's CPU kernels are C++ extensions compiled on first use with
``torch.utils.cpp_extension.load`` (g++ and ninja; cached under ``~/.cache/torch_extensions``, about
2-3 minutes the first time on 2 cores). The kernels use ``torch.get_num_threads()`` threads, so the
``threads`` setting is applied around each build and search.

Smoke run (synthetic clustered corpus, recall vs brute-force Chamfer, single-thread latency)::

    python bench/plaid_baseline.py [--docs 2000] [--queries 50] [--k 10] [--scifact]

``--scifact`` uses the SciFact MiniLM token vectors of ``~/.cache/muvera/scifact`` projected to 128
dimensions with a PCA, if that cache is complete.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import random
import shutil
import sys
import tempfile
import time
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["plaid_available", "PlaidBaseline", "exact_chamfer_topk"]


@functools.lru_cache(maxsize=1)
def plaid_available() -> bool:
    """True when colbert-ai's PLAID engine (and torch, faiss) can be imported."""
    try:
        import faiss  # noqa: F401
        import torch  # noqa: F401
        from colbert.indexing.collection_indexer import CollectionIndexer  # noqa: F401
        from colbert.modeling.colbert import ColBERT  # noqa: F401
        from colbert.search.index_storage import IndexScorer  # noqa: F401
    except Exception:
        return False
    return True


def _load_extensions() -> None:
    """Compile/load colbert's CPU C++ kernels (segmented MaxSim, PID filter, residual decompression).

    ``ColBERT.segmented_maxsim`` is normally loaded by the ColBERT *model* constructor, which we
    never run, so it is loaded here through the same public classmethod.
    """
    from colbert.modeling.colbert import ColBERT
    from colbert.search.index_storage import IndexScorer
    from colbert.search.strided_tensor import StridedTensor

    IndexScorer.try_load_torch_extensions(False)
    StridedTensor.try_load_torch_extensions(False)
    ColBERT.try_load_torch_extensions(False)


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    import torch

    old = torch.get_num_threads()
    if n != old:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n != old:
            torch.set_num_threads(old)


@contextlib.contextmanager
def _captured_output(enabled: bool) -> Iterator[None]:
    """Send fd 1/2 (colbert's print_message, tqdm, faiss's C++ k-means log) to a temporary file.

    On an exception the tail of what was captured is written to stderr before re-raising.
    """
    if not enabled:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            if failed:
                log.seek(0)
                tail = log.read()[-4000:].decode(errors="replace")
                sys.stderr.write("---- colbert output (tail) ----\n" + tail + "\n")


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed Python's and torch's global RNGs (colbert samples pids/embeddings with them); restore after."""
    import torch

    py_state, torch_state = random.getstate(), torch.get_rng_state()
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(py_state)
        torch.set_rng_state(torch_state)


def _normalized_f32(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class _PrecomputedEncoder:
    """Stands in for ``colbert.indexing.collection_encoder.CollectionEncoder``.

    ``encode_passages(passages)`` gets passage-id strings (the collection is ``["0", "1", ...]``) and
    returns ``(embs (sum doclens, dim) float32 torch tensor, doclens list[int])`` for them, in order,
    which is what ``CollectionIndexer`` expects from the CPU encoder.
    """

    def __init__(self, tokens: np.ndarray, offsets: np.ndarray):
        self.tokens = tokens
        self.offsets = offsets

    def encode_passages(self, passages: Sequence[str]):
        import torch

        if len(passages) == 0:
            return None, None
        pids = np.fromiter((int(p) for p in passages), dtype=np.int64, count=len(passages))
        starts, ends = self.offsets[pids], self.offsets[pids + 1]
        doclens = (ends - starts).tolist()
        if len(pids) > 1 and np.all(np.diff(pids) == 1):  # a contiguous chunk: one slice
            embs = self.tokens[starts[0]:ends[-1]]
        else:
            embs = np.concatenate([self.tokens[s:e] for s, e in zip(starts, ends)], axis=0)
        return torch.from_numpy(np.ascontiguousarray(embs, dtype=np.float32)), doclens


def _make_indexer_class():
    from colbert.data.collection import Collection
    from colbert.indexing.collection_indexer import CollectionIndexer
    from colbert.indexing.index_saver import IndexSaver

    class PrecomputedCollectionIndexer(CollectionIndexer):
        """``CollectionIndexer`` whose encoder returns precomputed vectors instead of running a model.

        Only ``__init__`` differs from the stock class (which would load a ColBERT checkpoint);
        ``setup`` optionally overrides the number of centroids after colbert's heuristic ran.
        """

        def __init__(self, config, collection, encoder, num_partitions: Optional[int] = None,
                     verbose: int = 0):
            self.verbose = verbose
            self.config = config
            self.rank, self.nranks = config.rank, config.nranks
            self.use_gpu = False
            self.collection = Collection.cast(collection)
            self.encoder = encoder
            self.saver = IndexSaver(config)
            self._num_partitions_override = num_partitions

        def setup(self):
            super().setup()
            if self._num_partitions_override:
                self.num_partitions = int(self._num_partitions_override)
                self._save_plan()

    return PrecomputedCollectionIndexer


class PlaidBaseline:
    """A PLAID index (colbert-ai) built from packed token vectors; search with token matrices.

    Parameters
    ----------
    doc_tokens : (total_tokens, dim) float16/float32
        All document tokens, packed; rows are L2-normalised here (PLAID assumes unit vectors).
    doc_offsets : (n_docs + 1,) int64
        Document ``i`` is ``doc_tokens[doc_offsets[i]:doc_offsets[i + 1]]``; every document needs
        at least one token. Search results are these row numbers.
    index_dir : str, optional
        Where to write the index; a fresh ``/tmp/plaid_*`` directory by default (removed by
        :meth:`close`). An existing directory must be empty.
    nbits : int
        Bits per residual dimension (1, 2 or 4; ``dim * nbits`` must be a multiple of 8).
    kmeans_niters : int
        faiss k-means iterations for the centroids.
    num_centroids : int, optional
        Number of centroids; colbert's heuristic ``2**floor(log2(16*sqrt(n_tokens)))`` when None.
    threads : int, optional
        torch/faiss threads for building and for colbert's search kernels; the current
        ``torch.get_num_threads()`` when None.
    ncells, centroid_score_threshold, ndocs : optional
        Search knobs (attributes, overridable per call). ``None`` takes ``Searcher.dense_search``'s
        defaults for the k asked: k <= 10 -> (1, 0.5, 256); k <= 100 -> (2, 0.45, 1024); else
        (4, 0.4, max(4k, 4096)). ``ndocs // 4`` documents are scored with decompressed vectors,
        so ``ndocs`` should be at least ``4 * k``.
    seed : int
        Seeds colbert's passage/embedding sampling (faiss k-means uses colbert's fixed seed 123).
    quiet : bool
        Capture colbert's and faiss's console output during the build.

    Attributes
    ----------
    build_seconds : float
        Wall time of the index build (k-means, compression, IVF), excluding the one-off
        compilation of colbert's C++ kernels.
    index_bytes : int
        Size of the index directory on disk.
    num_centroids, num_docs, num_tokens, dim : int
    """

    def __init__(self, doc_tokens: np.ndarray, doc_offsets: np.ndarray, *,
                 index_dir: Optional[str] = None, nbits: int = 2, kmeans_niters: int = 4,
                 num_centroids: Optional[int] = None, threads: Optional[int] = None,
                 ncells: Optional[int] = None, centroid_score_threshold: Optional[float] = None,
                 ndocs: Optional[int] = None, seed: int = 0, quiet: bool = True):
        if not plaid_available():
            raise ImportError("PlaidBaseline needs colbert-ai (pip install colbert-ai), torch and faiss")
        import faiss
        import torch

        if torch.cuda.is_available():
            raise RuntimeError("PlaidBaseline runs colbert on CPU only; hide GPUs (CUDA_VISIBLE_DEVICES='')")
        tokens = np.asarray(doc_tokens)
        offsets = np.asarray(doc_offsets, dtype=np.int64)
        if tokens.ndim != 2 or offsets.ndim != 1 or len(offsets) < 2:
            raise ValueError("doc_tokens must be (total_tokens, dim) and doc_offsets (n_docs + 1,)")
        if offsets[0] != 0 or offsets[-1] != len(tokens) or np.any(np.diff(offsets) <= 0):
            raise ValueError("doc_offsets must start at 0, end at len(doc_tokens) and give every "
                             "document at least one token")
        self.dim = int(tokens.shape[1])
        if (self.dim * nbits) % 8 != 0 or self.dim % 8 != 0:
            raise ValueError(f"dim={self.dim} with nbits={nbits}: dim and dim * nbits must be multiples of 8")
        self.num_docs = len(offsets) - 1
        self.num_tokens = len(tokens)
        self.nbits = int(nbits)
        self.kmeans_niters = int(kmeans_niters)
        self.threads = int(threads) if threads else torch.get_num_threads()
        self.ncells = ncells
        self.centroid_score_threshold = centroid_score_threshold
        self.ndocs = ndocs

        self._own_dir = index_dir is None
        if index_dir is None:
            index_dir = tempfile.mkdtemp(prefix="plaid_", dir="/tmp")
        else:
            os.makedirs(index_dir, exist_ok=True)
            if os.listdir(index_dir):
                raise ValueError(f"{index_dir}: index directory is not empty")
        self.index_dir = os.path.abspath(index_dir)

        from colbert.infra.config import ColBERTConfig

        _load_extensions()  # outside the timed build, and not silenced (compiler errors stay visible)

        config = ColBERTConfig(
            dim=self.dim, nbits=self.nbits, kmeans_niters=self.kmeans_niters,
            index_path=self.index_dir, root=self.index_dir, gpus=0, rank=0, nranks=1,
            doc_maxlen=int(np.diff(offsets).max()), avoid_fork_if_possible=True)
        encoder = _PrecomputedEncoder(_normalized_f32(tokens), offsets)
        collection = [str(i) for i in range(self.num_docs)]
        indexer_cls = _make_indexer_class()

        faiss_threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(self.threads)
        t0 = time.perf_counter()
        try:
            with _captured_output(quiet), _torch_threads(self.threads), _seeded(seed):
                indexer = indexer_cls(config, collection, encoder, num_partitions=num_centroids)
                indexer.run(shared_lists=[])
        finally:
            faiss.omp_set_num_threads(faiss_threads)
        self.build_seconds = time.perf_counter() - t0
        self.num_centroids = int(indexer.num_partitions)
        del encoder, indexer

        self._load(quiet)

    def _load(self, quiet: bool) -> None:
        from colbert.infra.config import ColBERTConfig
        from colbert.search.index_storage import IndexScorer

        with _captured_output(quiet):
            self._scorer = IndexScorer(self.index_dir, use_gpu=False, load_index_with_mmap=False)
        self._config = ColBERTConfig.load_from_index(self.index_dir)

    @property
    def index_bytes(self) -> int:
        total = 0
        for root, _, files in os.walk(self.index_dir):
            for f in files:
                total += os.path.getsize(os.path.join(root, f))
        return total

    def _knobs(self, k: int, ncells, threshold, ndocs) -> Tuple[int, float, int]:
        ncells = ncells if ncells is not None else self.ncells
        threshold = threshold if threshold is not None else self.centroid_score_threshold
        ndocs = ndocs if ndocs is not None else self.ndocs
        if k <= 10:
            d = (1, 0.5, 256)
        elif k <= 100:
            d = (2, 0.45, 1024)
        else:
            d = (4, 0.4, max(k * 4, 4096))
        return (int(ncells if ncells is not None else d[0]),
                float(threshold if threshold is not None else d[1]),
                int(ndocs if ndocs is not None else d[2]))

    def search(self, query_tokens: np.ndarray, k: int = 10, *, ncells: Optional[int] = None,
               centroid_score_threshold: Optional[float] = None,
               ndocs: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
        """Top-k documents for ONE query ``(n_q_tokens, dim)``.

        Returns ``(doc_rows (k,) int64, scores (k,) float32)``, best first; ``-1`` / ``-inf`` pad
        when PLAID returned fewer than k documents. Scores are MaxSim sums over the compressed
        (centroid + residual) document vectors, i.e. PLAID's approximation of Chamfer.
        """
        import torch

        q = _normalized_f32(np.asarray(query_tokens).reshape(-1, self.dim))
        nc, thr, nd = self._knobs(k, ncells, centroid_score_threshold, ndocs)
        cfg = self._config
        cfg.configure(ncells=nc, centroid_score_threshold=thr, ndocs=nd,
                      query_maxlen=max(int(q.shape[0]), 1))
        Q = torch.from_numpy(np.ascontiguousarray(q)).unsqueeze(0)
        rows = np.full(k, -1, dtype=np.int64)
        scores = np.full(k, -np.inf, dtype=np.float32)
        if q.shape[0] == 0:
            return rows, scores
        with _torch_threads(self.threads):
            pids, sc = self._scorer.rank(cfg, Q)
        n = min(k, len(pids))
        rows[:n] = pids[:n]
        scores[:n] = sc[:n]
        return rows, scores

    def search_batch(self, query_tokens: np.ndarray, query_offsets: np.ndarray, k: int = 10, *,
                     ncells: Optional[int] = None, centroid_score_threshold: Optional[float] = None,
                     ndocs: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
        """:meth:`search` for each query of a packed batch; ``(n_q, k)`` int64 rows and float32 scores."""
        qo = np.asarray(query_offsets, dtype=np.int64)
        rows = np.full((len(qo) - 1, k), -1, dtype=np.int64)
        scores = np.full((len(qo) - 1, k), -np.inf, dtype=np.float32)
        for i in range(len(qo) - 1):
            rows[i], scores[i] = self.search(query_tokens[qo[i]:qo[i + 1]], k, ncells=ncells,
                                             centroid_score_threshold=centroid_score_threshold,
                                             ndocs=ndocs)
        return rows, scores

    def close(self) -> None:
        """Drop the loaded index and delete its directory if this object created it."""
        self._scorer = None
        if self._own_dir and os.path.isdir(self.index_dir):
            shutil.rmtree(self.index_dir, ignore_errors=True)

    def __enter__(self) -> "PlaidBaseline":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ----------------------------------------------------------------------------------------------
# Smoke run
# ----------------------------------------------------------------------------------------------

def exact_chamfer_topk(query_tokens: np.ndarray, query_offsets: np.ndarray, doc_tokens: np.ndarray,
                       doc_offsets: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Brute-force Chamfer top-k in NumPy: sum over query tokens of the max dot product per doc."""
    d = np.asarray(doc_tokens, dtype=np.float32)
    starts = np.asarray(doc_offsets[:-1], dtype=np.int64)
    nq = len(query_offsets) - 1
    rows = np.empty((nq, k), dtype=np.int64)
    scores = np.empty((nq, k), dtype=np.float32)
    for i in range(nq):
        q = np.asarray(query_tokens[query_offsets[i]:query_offsets[i + 1]], dtype=np.float32)
        sims = d @ q.T                                   # (total_tokens, n_q_tokens)
        per_doc = np.maximum.reduceat(sims, starts, axis=0).sum(axis=1)
        top = np.argpartition(-per_doc, min(k, len(per_doc) - 1))[:k]
        top = top[np.argsort(-per_doc[top], kind="stable")]
        rows[i], scores[i] = top, per_doc[top]
    return rows, scores


def synthetic_corpus(n_docs: int, n_queries: int, dim: int = 128, seed: int = 0,
                     n_topics: int = 100, n_words: int = 4000, token_noise: float = 0.06):
    """Clustered unit-norm tokens: topics -> 'word' centres -> noisy tokens; queries copy a doc.

    Returns ``(doc_tokens f32, doc_offsets, query_tokens f32, query_offsets, source_doc)``.
    """
    rng = np.random.default_rng(seed)
    topics = _normalized_f32(rng.standard_normal((n_topics, dim)))
    word_topic = rng.integers(0, n_topics, n_words)
    words = _normalized_f32(topics[word_topic] + 0.9 * _normalized_f32(rng.standard_normal((n_words, dim))))
    by_topic: List[np.ndarray] = [np.flatnonzero(word_topic == t) for t in range(n_topics)]
    lens = rng.integers(30, 81, n_docs)
    offsets = np.zeros(n_docs + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    doc_topics = rng.integers(0, n_topics, (n_docs, 3))
    tokens = np.empty((offsets[-1], dim), dtype=np.float32)
    for i in range(n_docs):
        n = lens[i]
        pool = np.concatenate([by_topic[t] for t in doc_topics[i]])
        own = rng.random(n) < 0.7  # 70% words of the doc's 3 topics, 30% any word
        w = np.where(own, pool[rng.integers(0, len(pool), n)], rng.integers(0, n_words, n))
        tokens[offsets[i]:offsets[i + 1]] = words[w] + token_noise * rng.standard_normal((n, dim))
    tokens = _normalized_f32(tokens)

    src = rng.choice(n_docs, n_queries, replace=False)
    q_parts, q_lens = [], []
    for d in src:
        doc = tokens[offsets[d]:offsets[d + 1]]
        m = int(rng.integers(16, 33))
        pick = rng.choice(len(doc), min(m, len(doc)), replace=False)
        q = doc[pick] + 0.08 * rng.standard_normal((len(pick), dim)).astype(np.float32)
        q_parts.append(_normalized_f32(q))
        q_lens.append(len(pick))
    q_off = np.zeros(n_queries + 1, dtype=np.int64)
    np.cumsum(q_lens, out=q_off[1:])
    return tokens, offsets, np.concatenate(q_parts), q_off, src


def scifact_corpus(max_docs: Optional[int], n_queries: int, dim: int = 128):
    """SciFact MiniLM vectors from ``~/.cache/muvera/scifact``, PCA-projected to ``dim``; None if absent."""
    from muvera.eval.cache import default_cache_root, load_cached
    from muvera.eval.embed import fit_pca, project

    base = default_cache_root() / "scifact"
    models = sorted(p for p in base.glob("*") if (p / "docs").is_dir() and (p / "queries").is_dir()) \
        if base.is_dir() else []
    if len(models) != 1:
        return None
    try:
        dt, do = load_cached(models[0] / "docs")
        qt, qo = load_cached(models[0] / "queries")
    except (ValueError, OSError) as e:
        print(f"scifact cache not usable ({e}); using synthetic data")
        return None
    if max_docs and max_docs < len(do) - 1:
        do = do[:max_docs + 1]
        dt = dt[:do[-1]]
    proj = fit_pca(dt, dim)
    dt = project(dt, proj)
    n = min(n_queries, len(qo) - 1)
    qo = qo[:n + 1]
    qt = project(qt[:qo[-1]], proj)
    return dt, do, qt, qo, None


def _knob_triple(text: str) -> Tuple[int, float, int]:
    nc, thr, nd = text.split(",")
    return int(nc), float(thr), int(nd)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--nbits", type=int, default=2)
    ap.add_argument("--kmeans-niters", type=int, default=4)
    ap.add_argument("--centroids", type=int, default=None)
    ap.add_argument("--build-threads", type=int, default=None, help="default: all cores")
    ap.add_argument("--ncells", type=int, default=None)
    ap.add_argument("--threshold", type=float, default=None)
    ap.add_argument("--ndocs", type=int, default=None)
    ap.add_argument("--sweep", type=_knob_triple, nargs="*", default=[(2, 0.45, 1024), (4, 0.4, 4096)],
                    metavar="NCELLS,THRESHOLD,NDOCS", help="extra knob settings to time (default: "
                    "2,0.45,1024 and 4,0.4,4096; pass --sweep with nothing to skip)")
    ap.add_argument("--scifact", action="store_true", help="use the SciFact cache if it is complete")
    ap.add_argument("--verbose", action="store_true", help="show colbert's build output")
    args = ap.parse_args(argv)

    if not plaid_available():
        print("colbert-ai is not installed (pip install colbert-ai); nothing to do")
        return 0
    import torch

    data = scifact_corpus(args.docs, args.queries, args.dim) if args.scifact else None
    name = "scifact (PCA %d)" % args.dim if data is not None else "synthetic"
    if data is None:
        data = synthetic_corpus(args.docs, args.queries, args.dim)
    dt, do, qt, qo, _ = data
    print(f"corpus: {name}: {len(do) - 1} docs, {len(dt)} tokens, dim {dt.shape[1]}; "
          f"{len(qo) - 1} queries, {len(qt)} query tokens")

    t0 = time.perf_counter()
    _load_extensions()
    print(f"colbert C++ kernels ready in {time.perf_counter() - t0:.1f}s")

    build_threads = args.build_threads or os.cpu_count() or 1
    plaid = PlaidBaseline(dt, do, nbits=args.nbits, kmeans_niters=args.kmeans_niters,
                          num_centroids=args.centroids, threads=build_threads,
                          ncells=args.ncells, centroid_score_threshold=args.threshold,
                          ndocs=args.ndocs, quiet=not args.verbose)
    try:
        print(f"build: {plaid.build_seconds:.2f}s ({build_threads} threads), {plaid.num_centroids} "
              f"centroids, nbits={plaid.nbits}, index {plaid.index_bytes / 2**20:.2f} MiB "
              f"({plaid.index_bytes / len(dt):.1f} B/token) at {plaid.index_dir}")

        k = args.k
        t0 = time.perf_counter()
        ex_rows, _ = exact_chamfer_topk(qt, qo, _normalized_f32(dt), do, k)
        print(f"exact chamfer (numpy): {time.perf_counter() - t0:.2f}s for {len(qo) - 1} queries")

        plaid.threads = 1  # single-thread latency
        torch.set_num_threads(1)
        plaid.search(qt[qo[0]:qo[1]], k)  # warm-up
        lat, rows = [], np.empty((len(qo) - 1, k), dtype=np.int64)
        for i in range(len(qo) - 1):
            t0 = time.perf_counter()
            rows[i], _ = plaid.search(qt[qo[i]:qo[i + 1]], k)
            lat.append(time.perf_counter() - t0)
        lat_ms = np.array(lat) * 1e3
        recall = np.mean([len(set(rows[i]) & set(ex_rows[i])) / k for i in range(len(rows))])
        nc, thr, nd = plaid._knobs(k, None, None, None)
        print(f"search (1 thread, ncells={nc}, threshold={thr}, ndocs={nd}): "
              f"Recall@{k} vs exact Chamfer = {recall:.3f}; latency p50 {np.percentile(lat_ms, 50):.2f} ms, "
              f"p95 {np.percentile(lat_ms, 95):.2f} ms")
        b_rows, b_scores = plaid.search_batch(qt, qo, k)
        assert np.array_equal(b_rows, rows), "search_batch disagrees with search"
        # PLAID's scores (over compressed vectors) against exact Chamfer of the same documents
        dtn = _normalized_f32(dt)
        err = []
        for i in range(len(qo) - 1):
            q = qt[qo[i]:qo[i + 1]]
            for r, sc in zip(b_rows[i], b_scores[i]):
                if r >= 0:
                    exact = float((q @ dtn[do[r]:do[r + 1]].T).max(axis=1).sum())
                    err.append(abs(sc - exact) / max(abs(exact), 1e-9))
        print(f"PLAID score vs exact Chamfer of the returned docs: mean rel. error {np.mean(err):.4f}")

        for nc, thr, nd in args.sweep:
            lat = []
            for i in range(len(qo) - 1):
                t0 = time.perf_counter()
                rows[i], _ = plaid.search(qt[qo[i]:qo[i + 1]], k, ncells=nc,
                                          centroid_score_threshold=thr, ndocs=nd)
                lat.append(time.perf_counter() - t0)
            lat_ms = np.array(lat) * 1e3
            recall = np.mean([len(set(rows[i]) & set(ex_rows[i])) / k for i in range(len(rows))])
            print(f"  ncells={nc}, threshold={thr}, ndocs={nd}: Recall@{k} = {recall:.3f}; "
                  f"p50 {np.percentile(lat_ms, 50):.2f} ms, p95 {np.percentile(lat_ms, 95):.2f} ms")
    finally:
        plaid.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
