"""Pure-NumPy reference implementation of the MUVERA Fixed Dimensional Encoding.

This module is an independent test oracle for the C++ core. It follows
``FDE-SPEC.md`` sections 2 and 3a: ``std::mt19937`` plus the libstdc++
(GCC >= 11) distribution algorithms, re-created bit for bit. It is slow but
exact. It does not import the compiled extension or any other part of the
package, so it still works while the extension is broken or being rebuilt.

Project policy (which differs from the raw reference only where the
reference errors, is undefined or gives NaN, or leaves float summation order
to the implementation):

* Inputs are converted to float32 first.
* Queries are never filled: ``fill_empty_partitions`` applies only to
  documents. Setting it on a query is not an error.
* An empty point set (``n == 0``) encodes to all zeros in both modes. The
  reference gives NaN for a k=0 document and undefined behaviour for a filled
  document.
* SimHash sketches are computed in float64. Only the sign ``> 0`` is used.
* The AMS projection is a sequential float32 scatter-add over input
  coordinates in ascending order. The reference uses an Eigen GEMM instead,
  so AMS outputs match it only to about 1e-6.
* Aggregation is a sequential float32 sum over points, in order. Documents
  then divide non-empty partitions by the float32 count.
* The final Count-Sketch uses ``mt19937(uint32(seed))``, not ``seed + r``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from types import SimpleNamespace
from typing import Any, Tuple

import numpy as np

__all__ = [
    "mt19937_u32",
    "simhash_matrix",
    "ams_projection",
    "count_sketch",
    "partition_index",
    "encode",
    "encode_query",
    "encode_document",
    "output_dimension",
    "make_config",
]

_U32 = 1 << 32
_TWO_POW_M32 = np.float32(2.0**-32)
_ONE_BELOW_ONE_F32 = np.nextafter(np.float32(1.0), np.float32(0.0))

# libstdc++'s normal_distribution<float> calls logf. glibc's logf is not
# guaranteed to match numpy's float32 log to the last bit, so call the same
# C function here.
_libm_name = ctypes.util.find_library("m")
_libm = ctypes.CDLL(_libm_name) if _libm_name else ctypes.CDLL(None)
_logf = _libm.logf
_logf.restype = ctypes.c_float
_logf.argtypes = [ctypes.c_float]


# --------------------------------------------------------------------------
# Random number generation
# --------------------------------------------------------------------------


def mt19937_u32(seed: int, count: int) -> np.ndarray:
    """Return the first ``count`` outputs of ``std::mt19937(seed)``.

    Parameters
    ----------
    seed : int
        Seed. It is reduced modulo 2**32, as ``std::mt19937`` does with its
        ``uint_fast32_t`` seed, so negative int32 seeds work.
    count : int
        Number of 32-bit outputs.

    Returns
    -------
    numpy.ndarray
        uint32 array of shape ``(count,)``.
    """
    bg = np.random.MT19937()
    # _legacy_seeding is init_genrand, the same seeding std::mt19937 uses.
    bg._legacy_seeding(int(seed) & 0xFFFFFFFF)
    if count <= 0:
        return np.zeros(0, dtype=np.uint32)
    return bg.random_raw(int(count)).astype(np.uint32)


class _U32Stream:
    """Buffered std::mt19937 stream that supports peek and advance.

    The vectorised distributions below look ahead at a block of draws, then
    consume only as many as the sequential algorithm would have used.
    """

    def __init__(self, seed: int) -> None:
        self._bg = np.random.MT19937()
        self._bg._legacy_seeding(int(seed) & 0xFFFFFFFF)
        self._buf = np.zeros(0, dtype=np.uint64)
        self._pos = 0

    def peek(self, k: int) -> np.ndarray:
        avail = self._buf.size - self._pos
        if avail < k:
            extra = self._bg.random_raw(max(k - avail, 1024))
            self._buf = np.concatenate([self._buf[self._pos :], extra])
            self._pos = 0
        return self._buf[self._pos : self._pos + k]

    def advance(self, k: int) -> None:
        self._pos += k

    def next(self) -> int:
        v = int(self.peek(1)[0])
        self.advance(1)
        return v


def _canonical_f32(u: np.ndarray) -> np.ndarray:
    """Apply libstdc++ ``generate_canonical<float, 24>`` to one draw per element.

    The draw is rounded to float and divided by 2**32, which is an exact power
    of two. A result of 1.0 is clamped to the largest float below 1.
    """
    c = u.astype(np.float32) * _TWO_POW_M32
    return np.where(c >= np.float32(1.0), _ONE_BELOW_ONE_F32, c).astype(np.float32)


def _normals_f32(stream: _U32Stream, count: int) -> np.ndarray:
    """Draw ``count`` values from libstdc++ ``normal_distribution<float>(0, 1)``.

    The polar method: each attempt uses exactly two draws (x first, then y).
    An attempt is rejected when ``r2 > 1`` or ``r2 == 0``. An accepted pair
    yields ``y*m`` and then ``x*m``, the second being kept for the next call.
    Because every attempt costs exactly two draws, attempts can be evaluated
    in blocks.
    """
    out = np.empty(count, dtype=np.float32)
    filled = 0
    two = np.float32(2.0)
    one = np.float32(1.0)
    m2 = np.float32(-2.0)
    while filled < count:
        pairs_needed = (count - filled + 1) // 2
        attempts = pairs_needed + pairs_needed // 2 + 8  # acceptance is about pi/4
        raw = stream.peek(2 * attempts)
        x = two * _canonical_f32(raw[0::2]) - one
        y = two * _canonical_f32(raw[1::2]) - one
        # Two float32 products, then a float32 add (no FMA contraction).
        r2 = (x * x) + (y * y)
        ok = np.nonzero((r2 <= one) & (r2 != np.float32(0.0)))[0]
        use = ok[:pairs_needed]
        # Consume the draws up to and including the last accepted attempt
        # used (or the whole block if it did not yield enough pairs).
        consumed = (int(use[-1]) + 1) if use.size == pairs_needed else attempts
        stream.advance(2 * consumed)
        for a in use:
            r = np.float32(r2[a])
            lg = np.float32(_logf(float(r)))  # exact: c_float round-trips
            mult = np.sqrt((m2 * lg) / r, dtype=np.float32)
            first = np.float32(y[a] * mult)
            second = np.float32(x[a] * mult)
            out[filled] = first
            filled += 1
            if filled < count:
                out[filled] = second
                filled += 1
            # Otherwise the saved value is dropped with the distribution object.
    return out


def _uniform_int_scalar(stream: _U32Stream, n: int) -> int:
    """Draw from libstdc++ ``uniform_int_distribution(0, n-1)`` with a 32-bit URNG (Lemire)."""
    prod = stream.next() * n
    lo = prod & 0xFFFFFFFF
    if lo < n:
        threshold = (_U32 - n) % n
        while lo < threshold:
            prod = stream.next() * n
            lo = prod & 0xFFFFFFFF
    return prod >> 32


def _bernoulli_half(u1: np.ndarray, u2: np.ndarray) -> np.ndarray:
    """Apply libstdc++ ``bernoulli_distribution(0.5)`` to pairs of draws.

    ``generate_canonical<double, 53>`` uses two draws: ``sum = u1 + u2*2^32``
    rounded to double, divided by 2**64. The result is true iff it is below
    0.5, which is the same as ``sum < 2**63`` because scaling by 2**-64 is
    exact.
    """
    s = u1.astype(np.float64) + u2.astype(np.float64) * float(_U32)
    return s < 2.0**63


def _index_sign_pairs(seed: int, count: int, n: int) -> Tuple[np.ndarray, np.ndarray]:
    """Per item: index = uniform_int(0, n-1), then sign = 2*bernoulli(0.5) - 1.

    One mt19937(seed) is shared by the two distributions. Usually an item
    costs three draws. Lemire's method needs a redraw only when the low word
    is below ``n``, so items are processed in blocks, and a block falls back
    to the scalar path at the first item that might need one.
    """
    if n <= 0:
        raise ValueError("uniform_int range must be positive")
    stream = _U32Stream(seed)
    idx = np.empty(count, dtype=np.int64)
    sgn = np.empty(count, dtype=np.float32)
    done = 0
    n64 = np.uint64(n)
    mask = np.uint64(0xFFFFFFFF)
    while done < count:
        m = min(count - done, 1 << 16)
        raw = stream.peek(3 * m)
        prod = raw[0::3] * n64  # < 2**64, no overflow
        lo = prod & mask
        bad = np.nonzero(lo < n64)[0]
        take = int(bad[0]) if bad.size else m
        if take:
            idx[done : done + take] = (prod[:take] >> np.uint64(32)).astype(np.int64)
            coin = _bernoulli_half(raw[1 : 3 * take : 3], raw[2 : 3 * take : 3])
            sgn[done : done + take] = np.where(coin, 1.0, -1.0)
            stream.advance(3 * take)
            done += take
        if bad.size:
            # This item might redraw, so handle it one draw at a time.
            idx[done] = _uniform_int_scalar(stream, n)
            u1 = stream.next()
            u2 = stream.next()
            coin1 = _bernoulli_half(np.array([u1], np.uint64), np.array([u2], np.uint64))[0]
            sgn[done] = 1.0 if coin1 else -1.0
            done += 1
    return idx, sgn


# --------------------------------------------------------------------------
# Random matrices
# --------------------------------------------------------------------------


def simhash_matrix(seed: int, dimension: int, k: int) -> np.ndarray:
    """Gaussian SimHash matrix of one repetition.

    Parameters
    ----------
    seed : int
        Repetition seed (``uint32(int32(seed) + r)``), reduced mod 2**32.
    dimension : int
        Input dimension ``d``.
    k : int
        Number of SimHash projections.

    Returns
    -------
    numpy.ndarray
        float32 array of shape ``(dimension, k)``. Eigen fills the matrix in
        column-major order, so draw ``t`` goes to ``G[t % d, t // d]``.
    """
    if k == 0 or dimension == 0:
        return np.zeros((dimension, k), dtype=np.float32)
    z = _normals_f32(_U32Stream(seed), dimension * k)
    return np.ascontiguousarray(z.reshape(k, dimension).T)


def ams_projection(
    seed: int, dimension: int, projection_dimension: int
) -> Tuple[np.ndarray, np.ndarray]:
    """Sparse AMS projection of one repetition.

    Each input coordinate ``t`` gets one target column (drawn first) and one
    sign (drawn second) from a fresh ``mt19937(seed)``. The sketch has no
    ``1/sqrt(d_proj)`` scaling.

    Parameters
    ----------
    seed : int
        Repetition seed, reduced mod 2**32.
    dimension : int
        Input dimension ``d``.
    projection_dimension : int
        Output dimension ``d_proj`` (> 0).

    Returns
    -------
    tuple of numpy.ndarray
        ``(col, sign)``: int64 column per input coordinate, and float32 ±1
        per input coordinate, both of shape ``(dimension,)``.
    """
    return _index_sign_pairs(seed, dimension, projection_dimension)


def count_sketch(
    seed: int, input_dimension: int, output_dimension: int
) -> Tuple[np.ndarray, np.ndarray]:
    """Count-Sketch hash of the final projection.

    Parameters
    ----------
    seed : int
        The config seed (not ``seed + r``), reduced mod 2**32.
    input_dimension : int
        Length of the FDE before the final projection.
    output_dimension : int
        ``final_projection_dimension`` (> 0).

    Returns
    -------
    tuple of numpy.ndarray
        ``(index, sign)`` per input coordinate: int64 in
        ``[0, output_dimension)`` and float32 ±1.
    """
    return _index_sign_pairs(seed, input_dimension, output_dimension)


# --------------------------------------------------------------------------
# Partitioning helpers
# --------------------------------------------------------------------------


def _sign_patterns(sketches: np.ndarray) -> np.ndarray:
    """Raw sign patterns ``w``: bit ``k-1-j`` is ``S[:, j] > 0``, so projection 0 is the MSB."""
    s = np.asarray(sketches)
    n, k = s.shape
    w = np.zeros(n, dtype=np.int64)
    for j in range(k):
        w = (w << 1) | (s[:, j] > 0).astype(np.int64)  # NaN, 0 and -0 all give 0
    return w


def _gray_decode(w: np.ndarray) -> np.ndarray:
    """Gray-to-binary decode (prefix XOR from the MSB), valid for values below 2**32."""
    b = np.array(w, dtype=np.int64, copy=True)
    for sh in (1, 2, 4, 8, 16):
        b ^= b >> sh
    return b


def partition_index(sketches: np.ndarray) -> np.ndarray:
    """SimHash partition index of each row of a sketch matrix.

    Parameters
    ----------
    sketches : numpy.ndarray
        Shape ``(n, k)``. Bit ``j`` is ``sketches[:, j] > 0``.

    Returns
    -------
    numpy.ndarray
        int64 of shape ``(n,)``: the Gray decode of the sign pattern, with
        projection 0 as the most significant bit. This equals the
        reference's ``idx = (idx << 1) + (bit ^ (idx & 1))`` walk.
    """
    return _gray_decode(_sign_patterns(sketches))


def _popcount(v: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(v).astype(np.int64)
    v = np.asarray(v, dtype=np.int64)
    c = np.zeros(v.shape, dtype=np.int64)
    for _ in range(31):
        c += v & 1
        v = v >> 1
    return c


def _sequential_scatter_add(target: np.ndarray, index: np.ndarray, values: np.ndarray) -> None:
    """``for i: target[index[i]] += values[i]``, in increasing ``i`` for each target row.

    Round ``m`` adds the ``m``-th contribution of every target row at once.
    Within a round the indices are distinct, so fancy-index ``+=`` is safe,
    and the per-element float32 addition order is the sequential one.
    """
    if index.size == 0:
        return
    order = np.argsort(index, kind="stable")
    sorted_idx = index[order]
    starts = np.r_[0, np.nonzero(np.diff(sorted_idx))[0] + 1]
    group_len = np.diff(np.r_[starts, sorted_idx.size])
    rank = np.arange(sorted_idx.size) - np.repeat(starts, group_len)
    for m in range(int(rank.max()) + 1):
        sel = order[rank == m]
        target[index[sel]] += values[sel]


# --------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------


def _projection_kind(config: Any) -> str:
    pt = getattr(config, "projection_type", "identity")
    pt = getattr(pt, "value", pt)  # accept enums whose value is the string
    pt = str(pt).lower()
    if pt.endswith("identity"):
        return "identity"
    if pt.endswith("ams_sketch") or pt.endswith("ams"):
        return "ams_sketch"
    raise ValueError(f"unknown projection_type {pt!r}")


def _block_width(config: Any) -> int:
    if _projection_kind(config) == "identity":
        return int(config.dimension)
    p = getattr(config, "projection_dimension", None)
    if p is None or int(p) <= 0:
        raise ValueError("ams_sketch projection requires projection_dimension > 0")
    return int(p)


def output_dimension(config: Any) -> int:
    """Length of the encoding for ``config``.

    Parameters
    ----------
    config : object
        FDE configuration (see :func:`encode`).

    Returns
    -------
    int
        ``final_projection_dimension`` if set, else ``R * 2**k * p``.
    """
    final = getattr(config, "final_projection_dimension", None)
    if final is not None:
        return int(final)
    return int(config.num_repetitions) * (1 << int(config.num_simhash_projections)) * _block_width(config)


def encode(points: np.ndarray, config: Any, is_query: bool) -> np.ndarray:
    """Compute the MUVERA FDE of one point set (the reference algorithm, spec §2).

    Parameters
    ----------
    points : numpy.ndarray
        Shape ``(n, dimension)``. It is converted to float32. ``n`` may be 0.
        A 1-D array of length ``n * dimension`` is also accepted.
    config : object
        Any object with the attributes ``dimension``, ``num_repetitions``,
        ``num_simhash_projections``, ``seed``, ``projection_type``
        (``"identity"`` or ``"ams_sketch"``), ``projection_dimension``
        (int or None), ``fill_empty_partitions`` (bool) and
        ``final_projection_dimension`` (int or None; None turns it off).
    is_query : bool
        True: sum per partition, never filled. False: mean per partition,
        and empty partitions are filled if ``fill_empty_partitions`` is set.

    Returns
    -------
    numpy.ndarray
        float32 of shape ``(output_dimension(config),)``.

    Raises
    ------
    ValueError
        For an invalid configuration or a shape mismatch.

    Notes
    -----
    See the module docstring for where this project's policy differs from
    the raw reference: empty input gives zeros, queries are never filled,
    and the AMS and aggregation summation orders are sequential.
    """
    d = int(config.dimension)
    R = int(config.num_repetitions)
    k = int(config.num_simhash_projections)
    seed = int(config.seed)
    if d <= 0:
        raise ValueError("dimension must be positive")
    if R < 0:
        raise ValueError("num_repetitions must be >= 0")
    if not 0 <= k <= 30:
        raise ValueError("num_simhash_projections must be in [0, 30]")
    kind = _projection_kind(config)
    p = _block_width(config)
    final = getattr(config, "final_projection_dimension", None)
    if final is not None and int(final) <= 0:
        raise ValueError("final_projection_dimension must be positive or None")
    fill = bool(getattr(config, "fill_empty_partitions", False)) and not is_query

    X = np.asarray(points, dtype=np.float32)
    if X.ndim == 1:
        if X.size % d:
            raise ValueError("flat input length is not a multiple of dimension")
        X = X.reshape(-1, d)
    if X.ndim != 2 or X.shape[1] != d:
        raise ValueError(f"points must have shape (n, {d}); got {X.shape}")
    n = X.shape[0]
    B = 1 << k

    out_dim = output_dimension(config)
    if n == 0:
        return np.zeros(out_dim, dtype=np.float32)  # policy: empty input gives zeros

    fde = np.zeros((R, B, p), dtype=np.float32)
    X64 = X.astype(np.float64)
    for r in range(R):
        s = (seed + r) & 0xFFFFFFFF  # uint32(int32(seed) + r), wrapping
        if k > 0:
            G = simhash_matrix(s, d, k)
            S = X64 @ G.astype(np.float64)
            w = _sign_patterns(S)
            b = _gray_decode(w)
        else:
            w = np.zeros(n, dtype=np.int64)
            b = np.zeros(n, dtype=np.int64)

        if kind == "identity":
            Y = X
        else:
            col, sgn = ams_projection(s, d, p)
            Y = np.zeros((n, p), dtype=np.float32)
            # Ascending input coordinates: this is the summation order the C++ uses.
            for t in range(d):
                Y[:, col[t]] += sgn[t] * X[:, t]

        block = fde[r]
        _sequential_scatter_add(block, b, Y)
        if is_query:
            continue
        counts = np.bincount(b, minlength=B)
        nz = counts > 0
        block[nz] = block[nz] / counts[nz].astype(np.float32)[:, None]
        if fill and k > 0:
            empty = np.nonzero(~nz)[0]
            if empty.size:
                target = empty ^ (empty >> 1)  # binary-to-Gray gives the sign pattern
                dist = _popcount(w[None, :] ^ target[:, None])
                nearest = np.argmin(dist, axis=1)  # first minimum = lowest point index
                block[empty] = Y[nearest]

    flat = fde.reshape(-1)
    if final is None:
        return flat
    idx, sgn = count_sketch(seed & 0xFFFFFFFF, flat.size, int(final))
    out = np.zeros(int(final), dtype=np.float32)
    _sequential_scatter_add(out, idx, sgn * flat)
    return out


def encode_query(points: np.ndarray, config: Any) -> np.ndarray:
    """Query FDE: per-partition sums, never filled. See :func:`encode`."""
    return encode(points, config, is_query=True)


def encode_document(points: np.ndarray, config: Any) -> np.ndarray:
    """Document FDE: per-partition means, optionally filled. See :func:`encode`."""
    return encode(points, config, is_query=False)


def make_config(**kwargs: Any) -> SimpleNamespace:
    """Build a plain config namespace with the reference defaults, for tests and scripts.

    Returns
    -------
    types.SimpleNamespace
        Defaults: R=1, k=0, seed=1, identity projection, no fill and no
        final projection. ``dimension`` must be passed.
    """
    base = dict(
        dimension=None,
        num_repetitions=1,
        num_simhash_projections=0,
        seed=1,
        projection_type="identity",
        projection_dimension=None,
        fill_empty_partitions=False,
        final_projection_dimension=None,
    )
    unknown = set(kwargs) - set(base)
    if unknown:
        raise TypeError(f"unknown config fields: {sorted(unknown)}")
    base.update(kwargs)
    return SimpleNamespace(**base)
