"""Residual token codes (the ColBERTv2 / PLAID scheme): a k-means centroid id per token plus
``nbits`` per dimension of quantised residual.

Each token ``x`` is stored as the id of its nearest centroid ``c`` (uint16) and, per dimension
``t``, a level ``b_t`` in ``[0, 2**nbits)`` of the residual ``x - c``; the decoded token is
``c + lo + step * b`` with per-dimension ``lo`` and ``step`` fitted to the residual distribution
(uniformly spaced levels, Lloyd-fitted: quantile start, then alternating assignment and a least
squares fit of ``lo`` and ``step``). Uniform spacing is what lets the rerank stay on the codes:

    q . x_hat = q . c  +  q . lo  +  sum_t (q_t step_t) b_t

The first term comes from one ``query x centroid`` table per query, the second is one number per
query token, and the third is an integer dot product: ``q * step`` quantised to int8 per query
token (scale ``sq``) against the unsigned codes (the rounding error is centred on the middle level,
``sum_t (q_t step_t - sq qi_t) * mid`` folded into the per-token constant, so what remains scales
with the residual, not with the level offset), which x86 computes 32-64 products per
instruction (``vpmaddubsw`` on AVX2 / AVX-512BW, ``vpdpbusd`` with VNNI). The rerank therefore
never materialises a float copy of the candidates. Its score is defined by that computation
(:meth:`ResidualCodec.reference_chamfer` spells it out in NumPy; the C++ kernels equal it bit for
bit); it differs from float Chamfer over :meth:`ResidualCodec.decode` only by the int8 rounding of
``q * step``, far below the residual quantisation itself.

Row layout (``uint8``): two bytes of little-endian centroid id, then ``P = ceil(d * nbits / 8)``
bytes of levels in bit planes: byte ``j`` holds, in its bits ``k*nbits ..``, dimension
``k * P + j`` -- so unpacking one plane yields ``P`` consecutive dimensions.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np

from .. import _core
from .base import Entries, TokenCodec

__all__ = ["ResidualCodec", "plaid_num_centroids", "MIN_TRAIN_TOKENS", "MAX_CENTROIDS"]

log = logging.getLogger(__name__)

MIN_TRAIN_TOKENS = 512        # below this the tables would be fitted on too little
SMALL_TRAINING_TOKENS = 20_000  # a warning below this: later adds inherit the tables
POINTS_PER_CENTROID = 16      # small samples: at most N / 16 centroids
MAX_CENTROIDS = 1 << 16       # centroid ids are stored as uint16
KMEANS_ITERATIONS = 4         # ColBERTv2's default
KMEANS_SEED = 123
SAMPLE_PER_CENTROID = 32      # k-means sample: at most this many tokens per centroid
MAX_KMEANS_SAMPLE = 1 << 19
LEVEL_SAMPLE = 1 << 16        # residuals the per-dimension levels are fitted on
LEVEL_ITERATIONS = 8
ALLOWED_NBITS = (1, 2, 4, 8)


def plaid_num_centroids(num_tokens: int) -> int:
    """PLAID's centroid count for a corpus of ``num_tokens`` tokens: ``2**floor(log2(16 sqrt(N)))``,
    capped at :data:`MAX_CENTROIDS` (ids are uint16) and at ``num_tokens``."""
    if num_tokens < 1:
        raise ValueError(f"num_tokens: expected >= 1, got {num_tokens}")
    k = 2 ** int(math.floor(math.log2(16.0 * math.sqrt(num_tokens))))
    return int(max(1, min(k, MAX_CENTROIDS, num_tokens)))


def train_num_centroids(num_tokens: int) -> int:
    """Centroids trained on ``num_tokens`` tokens: PLAID's count, but at most ``N / 16`` (a power of
    two) so that each centroid sees points and held-out residuals are representative."""
    cap = 2 ** int(math.floor(math.log2(max(1, num_tokens // POINTS_PER_CENTROID))))
    return int(max(1, min(plaid_num_centroids(num_tokens), cap)))


def query_max(nbits: int) -> int:
    """Largest |int8| of the quantised query: pairs of products must fit int16 (``vpmaddubsw``)."""
    return 127 if nbits <= 4 else 63


def parse_residual_options(options: str) -> Tuple[int, Optional[int]]:
    """``"2"`` / ``"4:k=4096"`` -> ``(nbits, num_centroids or None)``."""
    parts = [p.strip() for p in options.split(":")] if options else []
    if not parts or not parts[0]:
        raise ValueError("token_codec: 'residual' needs the bits per dimension, e.g. 'residual:2' or 'residual:4'")
    try:
        nbits = int(parts[0])
    except ValueError:
        raise ValueError(f"token_codec: residual bits must be one of {ALLOWED_NBITS}, got {parts[0]!r}") from None
    if nbits not in ALLOWED_NBITS:
        raise ValueError(f"token_codec: residual bits must be one of {ALLOWED_NBITS}, got {nbits}")
    k = None
    for extra in parts[1:]:
        key, _, value = extra.partition("=")
        if key.strip() != "k" or not value.strip().isdigit():
            raise ValueError(f"token_codec: unknown residual option {extra!r} (expected 'k=<centroids>')")
        k = int(value)
        if not 1 <= k <= MAX_CENTROIDS:
            raise ValueError(f"token_codec: residual centroids must be in [1, {MAX_CENTROIDS}], got {k}")
    return nbits, k


class ResidualCodec(TokenCodec):
    """Centroid id + ``nbits``-per-dimension residual levels; rows of ``2 + ceil(d*nbits/8)`` bytes.

    Parameters
    ----------
    dimension : int
        Token dimension.
    nbits : {1, 2, 4, 8}
        Bits per dimension of the residual.
    num_centroids : int, optional
        Fixed centroid count; default PLAID's rule over the training tokens
        (:func:`plaid_num_centroids`).
    """

    kind = "residual"

    def __init__(self, dimension: int, nbits: int = 2, num_centroids: Optional[int] = None):
        super().__init__(dimension)
        if nbits not in ALLOWED_NBITS:
            raise ValueError(f"nbits: expected one of {ALLOWED_NBITS}, got {nbits!r}")
        if num_centroids is not None and (isinstance(num_centroids, bool) or not isinstance(num_centroids, int)
                                          or not 1 <= num_centroids <= MAX_CENTROIDS):
            raise ValueError(f"num_centroids: expected an int in [1, {MAX_CENTROIDS}] or None, got {num_centroids!r}")
        self.nbits = int(nbits)
        self.requested_centroids = num_centroids
        self.plane_bytes = (self.dimension * self.nbits + 7) // 8
        self.centroids: Optional[np.ndarray] = None   # (K, d) float16: stored, and what the kernels read
        self.lo: Optional[np.ndarray] = None          # (d,) float32
        self.step: Optional[np.ndarray] = None        # (d,) float32
        self.train_seconds: float = 0.0

    # -- description ---------------------------------------------------------------------------
    @property
    def name(self) -> str:
        base = f"residual:{self.nbits}"
        return base if self.requested_centroids is None else f"{base}:k={self.requested_centroids}"

    @property
    def code_dtype(self) -> np.dtype:
        return np.dtype(np.uint8)

    @property
    def code_width(self) -> int:
        return 2 + self.plane_bytes

    @property
    def needs_training(self) -> bool:
        return self.centroids is None

    @property
    def _centroids32(self) -> np.ndarray:
        """The centroids as float32 (exact), made on demand for NumPy-side work."""
        self._require_trained()
        return self.centroids.astype(np.float32)  # type: ignore[union-attr]

    @property
    def num_centroids(self) -> int:
        """Trained centroid count (0 before training)."""
        return 0 if self.centroids is None else len(self.centroids)

    @property
    def state_nbytes(self) -> int:
        """Bytes of the learned tables, in memory and on disk alike: float16 centroids (the kernels
        convert them as they go, so there is no float32 copy) and the levels."""
        if self.centroids is None:
            return 0
        return int(self.centroids.nbytes + 2 * 4 * self.dimension)

    def state_fields(self) -> Dict[str, Any]:
        return {"nbits": self.nbits, "num_centroids": self.num_centroids}

    def min_training_tokens(self) -> int:
        """Tokens :meth:`train` needs at least."""
        return max(MIN_TRAIN_TOKENS, self.requested_centroids or 0)

    def stream_training_tokens(self) -> Optional[int]:
        """With a fixed centroid count, training reads at most ``SAMPLE_PER_CENTROID * k`` tokens
        for k-means and ``LEVEL_SAMPLE`` held-out ones (an eighth of what it is given): gather that
        many. PLAID's count grows with the sample, so it keeps the index's document rule."""
        if not self.requested_centroids:
            return None
        return max(8 * LEVEL_SAMPLE, SAMPLE_PER_CENTROID * self.requested_centroids + LEVEL_SAMPLE,
                   self.min_training_tokens())

    # -- training ------------------------------------------------------------------------------
    def train(self, tokens: np.ndarray) -> None:
        """Learn centroids (faiss k-means on a sample) and per-dimension levels.

        Raises
        ------
        ValueError
            Fewer than :meth:`min_training_tokens` tokens, or tokens of the wrong dimension.
        """
        import time

        faiss = _faiss()

        x = np.asarray(tokens)
        if x.ndim != 2 or x.shape[1] != self.dimension:
            raise ValueError(f"tokens: expected (n, {self.dimension}) token rows to train on, got shape {x.shape}")
        _check_range(x)  # before k-means: faiss aborts the process on overflowing distances
        need = self.min_training_tokens()
        if len(x) < need:
            raise ValueError(f"token_codec {self.name!r}: training needs at least {need} tokens, got {len(x)}; "
                             "add a larger first batch or call index.train(sample) with more documents")
        start = time.perf_counter()
        n = len(x)
        k = self.requested_centroids or train_num_centroids(n)
        if n < SMALL_TRAINING_TOKENS:
            log.warning("token_codec %s: training on only %d tokens (%d centroids); the tables serve every later "
                        "add, so quality suffers: train on a sample of the corpus (index.train) when you can",
                        self.name, n, k)
        # Levels are fitted on held-out tokens (not seen by k-means), so they reflect the residuals
        # of tokens encoded later, not the k-means sample's own (smaller) ones.
        rng = np.random.default_rng(KMEANS_SEED)
        order = rng.permutation(n)
        n_held = min(LEVEL_SAMPLE, max(1, n // 8))
        held = x[np.sort(order[:n_held])].astype(np.float32)
        rest = order[n_held:]
        n_sample = min(len(rest), max(k, SAMPLE_PER_CENTROID * k), MAX_KMEANS_SAMPLE)
        sample = np.ascontiguousarray(x[np.sort(rest[:n_sample])], dtype=np.float32)
        if k >= len(sample):
            centroids = sample[:k].copy()
        else:
            km = faiss.Kmeans(self.dimension, k, niter=KMEANS_ITERATIONS, seed=KMEANS_SEED,
                              max_points_per_centroid=SAMPLE_PER_CENTROID, verbose=False)
            km.cp.min_points_per_centroid = 1  # small corpora: fewer points per centroid is fine
            try:
                km.train(sample)
            except RuntimeError as exc:  # faiss errors outside its parallel regions
                raise ValueError(f"token_codec {self.name!r}: k-means training failed: {exc}") from None
            centroids = km.centroids
        c16 = np.ascontiguousarray(centroids, dtype=np.float16)
        c32 = c16.astype(np.float32)
        if not np.isfinite(c32).all():
            raise ValueError("tokens: centroids beyond the float16 range; scale the tokens down")
        lo, step = fit_levels(held - c32[nearest_centroids(c32, held)], self.nbits)
        # Assigned together, last: a failure above leaves the codec untrained, never half-trained.
        self.centroids, self.lo, self.step = c16, lo, step
        self.train_seconds = time.perf_counter() - start
        log.info("trained %s on %d tokens: %d centroids in %.1f s", self.name, n, k, self.train_seconds)

    def untrain(self) -> None:
        """Forget the learned state (an add that failed after training the codec)."""
        self.centroids = self.lo = self.step = None

    def assign(self, tokens: np.ndarray) -> np.ndarray:
        """Nearest centroid (L2) of each token, int64."""
        self._require_trained()
        return nearest_centroids(self._centroids32, tokens)

    # -- codes ---------------------------------------------------------------------------------
    def encode(self, tokens: np.ndarray) -> np.ndarray:
        self._require_trained()
        x = np.asarray(tokens, dtype=np.float32)
        _check_range(x)
        c32 = self._centroids32
        cid = nearest_centroids(c32, x)
        levels = quantise(x - c32[cid], self.lo, self.step, self.nbits)  # type: ignore[arg-type]
        out = np.empty((len(x), self.code_width), dtype=np.uint8)
        out[:, :2] = cid.astype("<u2").view(np.uint8).reshape(len(x), 2)
        out[:, 2:] = pack_planes(levels, self.nbits, self.plane_bytes)
        return out

    def split(self, codes: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """``(centroid ids (T,) int64, levels (T, d) uint8)`` of stored rows."""
        codes = np.asarray(codes)
        cid = np.ascontiguousarray(codes[:, :2]).view("<u2").reshape(len(codes)).astype(np.int64)
        return cid, unpack_planes(codes[:, 2:], self.nbits, self.dimension)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        self._require_trained()
        cid, levels = self.split(codes)
        return self.centroids[cid].astype(np.float32) + (self.lo + self.step * levels.astype(np.float32))  # type: ignore[index]

    # -- scoring -------------------------------------------------------------------------------
    def rerank(self, query_tokens: np.ndarray, query_offsets: np.ndarray, codes: np.ndarray,
               offsets: np.ndarray, k: int, candidates: Optional[np.ndarray],
               allowed: Optional[np.ndarray], num_threads: int) -> Tuple[np.ndarray, np.ndarray]:
        self._require_trained()
        return _core.residual_topk(query_tokens, query_offsets, codes, offsets, candidates, allowed,
                                   self.centroids, self.lo, self.step, self.nbits, int(k),
                                   int(num_threads), "")

    def reference_chamfer(self, query: np.ndarray, codes: np.ndarray) -> float:
        """The rerank score of one ``(n, d)`` float32 query against one document's code rows,
        computed in NumPy in the kernels' order of operations (sequential float32 sums, no fused
        multiply-add): the C++ kernels equal it bit for bit."""
        self._require_trained()
        q = np.asarray(query, dtype=np.float32)
        cid, levels = self.split(codes)
        c = self.centroids[cid].astype(np.float32)                          # type: ignore[index]
        mid = np.float32(((1 << self.nbits) - 1) / 2)
        lo_mid = self.lo + self.step * mid                                  # type: ignore[operator]
        qc = np.zeros((len(q), len(c)), dtype=np.float32)
        a = np.zeros(len(q), dtype=np.float32)
        for t in range(self.dimension):                                     # sequential sums
            qc += q[:, t, None] * c[None, :, t]
            a += q[:, t] * lo_mid[t]
        qi, sq = quantise_queries(q, self.step, self.nbits)                 # type: ignore[arg-type]
        a = a - sq * (qi.sum(axis=1).astype(np.float32) * mid)              # the int8 rounding, centred
        dots = qi.astype(np.int64) @ levels.T.astype(np.int64)              # exact integers
        s = qc + sq[:, None] * dots.astype(np.float32)
        best = s.max(axis=1) + a
        total = np.float32(0.0)
        for v in best:
            total = np.float32(total + v)
        return float(total)

    # -- persistence ---------------------------------------------------------------------------
    def save(self, directory: Path) -> Entries:
        from ..durable import write_npy  # noqa: PLC0415

        if self.centroids is None:  # an empty index: nothing learned yet
            return {}
        d = Path(directory)
        levels = np.stack([self.lo, self.step]).astype(np.float32)  # type: ignore[list-item]
        return {"codec_centroids.npy": write_npy(d / "codec_centroids.npy", self.centroids),
                "codec_levels.npy": write_npy(d / "codec_levels.npy", levels)}

    def load(self, directory: Path, entries: Entries, mmap: bool) -> "ResidualCodec":
        from ..index_format import expect, load_npy  # noqa: PLC0415

        d = Path(directory)
        if "codec_centroids.npy" not in entries and "codec_levels.npy" not in entries:
            return self  # saved before training (an empty index); check_codes refuses codes
        for name in ("codec_centroids.npy", "codec_levels.npy"):
            if name not in entries:
                raise ValueError(f"manifest.json: token codec {self.name!r} needs {name}, which is not listed")
        centroids = np.ascontiguousarray(load_npy(d / "codec_centroids.npy", False))
        if centroids.ndim != 2 or centroids.dtype != np.float16 or centroids.shape[1] != self.dimension \
                or not 1 <= len(centroids) <= MAX_CENTROIDS:
            raise ValueError(f"codec_centroids.npy: expected (K <= {MAX_CENTROIDS}, {self.dimension}) float16, "
                             f"got {centroids.dtype} {centroids.shape}")
        levels = load_npy(d / "codec_levels.npy", False)
        expect(levels, "codec_levels.npy", np.float32, (2, self.dimension))
        c32 = centroids.astype(np.float32)
        if not (np.isfinite(c32).all() and np.isfinite(levels).all()) or (levels[1] <= 0).any():
            raise ValueError("codec_centroids.npy / codec_levels.npy: non-finite values or a level step <= 0")
        self.centroids = centroids
        self.lo, self.step = np.ascontiguousarray(levels[0]), np.ascontiguousarray(levels[1])
        return self

    def check_codes(self, codes: np.ndarray) -> None:
        """Raise ValueError if any stored centroid id is outside the trained table."""
        if len(codes) and self.centroids is None:
            raise ValueError(f"tokens.npy: {len(codes)} residual code rows but no trained codec tables")
        if len(codes) and self.centroids is not None:
            top = int(np.ascontiguousarray(codes[:, :2]).view("<u2").max())
            if top >= len(self.centroids):
                raise ValueError(f"tokens.npy: centroid id {top} but the codec has {len(self.centroids)} centroids")

    def _require_trained(self) -> None:
        if self.centroids is None:
            raise ValueError(f"token_codec {self.name!r}: not trained yet (add documents or call train first)")


# -- helpers shared with the tests (plain NumPy) ---------------------------------------------------

def _faiss():
    """faiss (a core dependency), or an ImportError that says so instead of a bare
    ModuleNotFoundError from an install that lost it."""
    try:
        import faiss  # noqa: PLC0415
    except ImportError as exc:
        raise ImportError("token_codec 'residual:*' needs faiss-cpu (a dependency of muvera-toolkit; k-means and "
                          "nearest centroids): pip install faiss-cpu") from exc
    return faiss


#: Largest token value the residual codecs take: their centroids are float16.
MAX_TOKEN_VALUE = 65504.0


def _check_range(x: np.ndarray) -> None:
    """ValueError for token values the float16 centroids cannot hold (their squared distances
    would also overflow faiss's float32 k-means, which aborts the process instead of raising)."""
    peak = max(float(x.max()), -float(x.min())) if len(x) else 0.0  # no |x| copy of the tokens
    if peak > MAX_TOKEN_VALUE:
        raise ValueError(f"tokens: values up to {peak:.3g}, beyond +-{MAX_TOKEN_VALUE:g} "
                         "(the residual codecs keep float16 centroids); scale the tokens down (e.g. normalise them)")


def nearest_centroids(centroids: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """Nearest centroid (L2, faiss) of each token row, int64, in chunks."""
    faiss = _faiss()
    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    out = np.empty(len(tokens), dtype=np.int64)
    for s in range(0, len(tokens), 65536):
        _, nearest = index.search(np.ascontiguousarray(tokens[s:s + 65536], dtype=np.float32), 1)
        out[s:s + 65536] = nearest[:, 0]
    return out


def fit_levels(residuals: np.ndarray, nbits: int) -> Tuple[np.ndarray, np.ndarray]:
    """Per-dimension ``(lo, step)`` of ``2**nbits`` uniformly spaced levels minimising the squared
    error of the residuals: start from the quantiles ``0.5/L`` and ``1 - 0.5/L``, then alternate
    nearest-level assignment with a least-squares fit of ``r ~ lo + step * b``."""
    levels = 1 << nbits
    r = np.asarray(residuals, dtype=np.float64)
    lo = np.quantile(r, 0.5 / levels, axis=0)
    hi = np.quantile(r, 1.0 - 0.5 / levels, axis=0)
    step = np.maximum((hi - lo) / (levels - 1), 1e-12)
    for _ in range(LEVEL_ITERATIONS):
        b = np.clip(np.rint((r - lo) / step), 0, levels - 1)
        bm, rm = b.mean(axis=0), r.mean(axis=0)
        var = ((b - bm) ** 2).mean(axis=0)
        cov = ((b - bm) * (r - rm)).mean(axis=0)
        ok = var > 0
        new_step = np.where(ok, cov / np.where(ok, var, 1.0), step)
        ok &= new_step > 1e-12
        step = np.where(ok, new_step, step)
        lo = np.where(ok, rm - step * bm, lo)
    return lo.astype(np.float32), step.astype(np.float32)


def quantise(residuals: np.ndarray, lo: np.ndarray, step: np.ndarray, nbits: int) -> np.ndarray:
    """Nearest level of each residual value, uint8 in ``[0, 2**nbits)``."""
    top = (1 << nbits) - 1
    return np.clip(np.rint((residuals - lo) / step), 0, top).astype(np.uint8)


def pack_planes(levels: np.ndarray, nbits: int, plane_bytes: int) -> np.ndarray:
    """``(T, d)`` levels -> ``(T, plane_bytes)`` bytes; byte j, bits k*nbits.. hold dim k*P + j."""
    t, d = levels.shape
    per = 8 // nbits
    padded = np.zeros((t, per * plane_bytes), dtype=np.uint8)
    padded[:, :d] = levels
    out = np.zeros((t, plane_bytes), dtype=np.uint8)
    for k in range(per):
        out |= (padded[:, k * plane_bytes:(k + 1) * plane_bytes] << np.uint8(k * nbits)).astype(np.uint8)
    return out


def unpack_planes(packed: np.ndarray, nbits: int, dimension: int) -> np.ndarray:
    """Inverse of :func:`pack_planes`: ``(T, P)`` bytes -> ``(T, d)`` uint8 levels."""
    packed = np.asarray(packed, dtype=np.uint8)
    per, mask = 8 // nbits, np.uint8((1 << nbits) - 1)
    planes = [(packed >> np.uint8(k * nbits)) & mask for k in range(per)]
    return np.ascontiguousarray(np.concatenate(planes, axis=1)[:, :dimension])


def quantise_queries(q: np.ndarray, step: np.ndarray, nbits: int) -> Tuple[np.ndarray, np.ndarray]:
    """``q * step`` per query token as int8 ``qi`` and float32 scale ``sq`` (``qi * sq ~ q * step``),
    exactly as the kernels compute them: ``sq = max|q*step| / qmax``, ``qi = rint(q*step / sq)``."""
    qs = np.asarray(q, dtype=np.float32) * step
    sq = (np.abs(qs).max(axis=1) / np.float32(query_max(nbits))).astype(np.float32)
    safe = np.where(sq > 0, sq, np.float32(1.0)).astype(np.float32)
    top = query_max(nbits)
    qi = np.clip(np.rint(qs / safe[:, None]), -top, top).astype(np.int32)  # subnormal scales could round past
    return qi, sq
