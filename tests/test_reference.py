"""Tests for the pure-NumPy oracle ``muvera.reference``.

It is checked against the golden vectors from muvfde 0.0.9, against
hand-computed RNG edge cases, and, if ``muvfde`` is installed, against the
reference C++ on random configs.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from muvera import reference as ref
from oracles import GOLDEN, GOLDEN_CASES, HAVE_GOLDEN, LIVE_CASES, muvfde_encode

# ---------------------------------------------------------------------------
# Golden vectors
# ---------------------------------------------------------------------------


_HAVE_GOLDEN, _CASES = HAVE_GOLDEN, GOLDEN_CASES


def _cfg(d, k, R, seed, *, proj=None, fill=False, final=None) -> SimpleNamespace:
    return SimpleNamespace(
        dimension=d,
        num_repetitions=R,
        num_simhash_projections=k,
        seed=seed,
        projection_type="ams_sketch" if proj else "identity",
        projection_dimension=proj,
        fill_empty_partitions=fill,
        final_projection_dimension=final,
    )


@pytest.fixture(scope="module")
def golden():
    if not _HAVE_GOLDEN:
        pytest.skip(f"golden vectors not found under {GOLDEN}")
    with np.load(GOLDEN / "muvfde_golden.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.mark.parametrize("case", _CASES, ids=[c["name"] for c in _CASES])
def test_golden(case, golden):
    cfg = _cfg(case["d"], case["k"], case["R"], case["seed"],
               proj=case["proj"], fill=case["fill"], final=case["final"])
    x = golden[case["name"] + "__input"]
    expected = golden[case["name"] + "__fde"]
    got = ref.encode(x, cfg, is_query=not case["doc"])
    assert got.dtype == np.float32
    assert got.shape == (case["out_dim"],) == expected.shape
    if case["exact"]:
        np.testing.assert_array_equal(got, expected)
    else:
        # The AMS cases differ only in float summation order (the reference uses an Eigen GEMM).
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------
# RNG primitives
# ---------------------------------------------------------------------------


def test_mt19937_10000th():
    # The C++ standard requires this value ([rand.predef]).
    assert int(ref.mt19937_u32(5489, 10000)[-1]) == 4123659995


def test_mt19937_negative_seed_is_mod_2_32():
    np.testing.assert_array_equal(ref.mt19937_u32(-5, 8), ref.mt19937_u32(2**32 - 5, 8))


class _FakeStream:
    def __init__(self, draws):
        self.draws = list(draws)
        self.used = 0

    def next(self):
        v = self.draws[self.used]
        self.used += 1
        return v


@pytest.mark.parametrize(
    "n, draws, expected, used",
    [
        (1, [123456789, 5], 0, 1),             # n == 1 still consumes one draw
        (3, [2**32 - 1], 2, 1),                # prod = 3*2^32 - 3, high word 2
        (3, [0, 1], 0, 2),                     # lo = 0 < threshold (2^32-3)%3 = 1: redraw; 3 is accepted
        (3, [0, 0, 0x55555556], 1, 3),         # two rejections, then 3*0x55555556 = 2^32 + 2
        (2**31 + 1, [1], 0, 1),                # lo = n exactly: not below n, accepted at once
        (2**31 + 1, [0, 2, 2**31], 2**30, 3),  # threshold 2^31-1: lo 0 and 2 rejected
        (2**31 + 1, [2**31], 2**30, 1),        # lo = 2^31 < n, but not below the threshold
    ],
)
def test_uniform_int_lemire(n, draws, expected, used):
    s = _FakeStream(draws)
    assert ref._uniform_int_scalar(s, n) == expected
    assert s.used == used


@pytest.mark.parametrize(
    "u1, u2, expected",
    [
        (0, 0, True),
        (2**32 - 1, 2**31 - 2, True),
        (2**32 - 513, 2**31 - 1, True),   # 2^63-513 rounds down to 2^63-1024
        (2**32 - 512, 2**31 - 1, False),  # 2^63-512 is a tie, rounds to even 2^63: not < 0.5
        (2**32 - 1, 2**31 - 1, False),
        (0, 2**31, False),
        (2**32 - 1, 2**32 - 1, False),
    ],
)
def test_bernoulli_half_edges(u1, u2, expected):
    got = ref._bernoulli_half(np.array([u1], np.uint64), np.array([u2], np.uint64))[0]
    assert bool(got) is expected


def _scalar_index_sign(seed, count, n):
    """Draw by draw, with no vectorisation, as libstdc++ does it."""
    draws = iter(int(v) for v in ref.mt19937_u32(seed, 4 * count + 64))

    class S:
        def next(self):
            return next(draws)

    s = S()
    idx, sgn = [], []
    for _ in range(count):
        idx.append(ref._uniform_int_scalar(s, n))
        u1, u2 = s.next(), s.next()
        sgn.append(1.0 if float(u1) + float(u2) * 2.0**32 < 2.0**63 else -1.0)
    return np.array(idx), np.array(sgn, np.float32)


@pytest.mark.parametrize("n", [1, 3, 16, 1000, 2**31 + 1, 3 * 2**30, 2**32 - 1])
def test_index_sign_pairs_vectorised_matches_scalar(n):
    # Large n makes Lemire redraws frequent, which exercises the fallback path.
    i1, s1 = ref.count_sketch(12345, 300, n)
    i2, s2 = _scalar_index_sign(12345, 300, n)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(s1, s2)
    assert i1.min() >= 0 and i1.max() < n


def _scalar_normals(seed, count):
    """Marsaglia polar method, one step at a time in float32 (libstdc++)."""
    draws = iter(int(v) for v in ref.mt19937_u32(seed, 8 * count + 64))
    f = np.float32

    def canon():
        c = f(next(draws)) * f(2.0**-32)
        return c if c < f(1) else np.nextafter(f(1), f(0))

    out, saved = [], None
    while len(out) < count:
        if saved is not None:
            out.append(saved)
            saved = None
            continue
        while True:
            x = f(2) * canon() - f(1)
            y = f(2) * canon() - f(1)
            r2 = f(x * x) + f(y * y)
            if not (r2 > 1 or r2 == 0):
                break
        mult = np.sqrt(f(f(-2) * f(ref._logf(float(r2)))) / r2)
        saved = f(x * mult)
        out.append(f(y * mult))
    return np.array(out, np.float32)


@pytest.mark.parametrize("seed, d, k", [(1, 16, 3), (42, 33, 4), (2**32 - 5, 7, 3)])
def test_simhash_matrix_column_major_and_polar(seed, d, k):
    g = ref.simhash_matrix(seed, d, k)
    assert g.shape == (d, k) and g.dtype == np.float32
    z = _scalar_normals(seed, d * k)
    # Draw t goes to G[t % d, t // d] (Eigen column-major fill); y*m is returned before x*m.
    np.testing.assert_array_equal(g.T.reshape(-1), z)


def test_ams_projection_shape_and_signs():
    col, sgn = ref.ams_projection(7, 33, 8)
    assert col.shape == sgn.shape == (33,)
    assert col.dtype == np.int64 and sgn.dtype == np.float32
    assert set(np.unique(sgn)) <= {-1.0, 1.0}
    # Same stream as the count-sketch helper: index first, then sign, for every coordinate.
    c2, s2 = ref.count_sketch(7, 33, 8)
    np.testing.assert_array_equal(col, c2)
    np.testing.assert_array_equal(sgn, s2)


def _walk_index(row):
    idx = 0
    for v in row:
        bit = 1 if v > 0 else 0
        idx = (idx << 1) + (bit ^ (idx & 1))
    return idx


def test_partition_index_gray_decode():
    s = np.array([[1.0, -1.0, -1.0],   # w=0b100 -> 0b111
                  [0.0, -0.0, np.nan],  # zeros and NaN are bit 0
                  [1.0, 1.0, 1.0],      # w=0b111 -> 0b101
                  [-1.0, 1.0, 0.0]])    # w=0b010 -> 0b011
    np.testing.assert_array_equal(ref.partition_index(s), [7, 0, 5, 3])
    rng = np.random.default_rng(0)
    s = rng.standard_normal((200, 9))
    s[rng.random(s.shape) < 0.1] = 0.0
    np.testing.assert_array_equal(ref.partition_index(s), [_walk_index(r) for r in s])


# ---------------------------------------------------------------------------
# Project policy
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("k", [0, 3])
@pytest.mark.parametrize("is_query", [True, False])
def test_empty_input_is_zeros(k, is_query):
    cfg = _cfg(8, k, 2, 1, fill=True)
    out = ref.encode(np.zeros((0, 8), np.float32), cfg, is_query=is_query)
    assert out.shape == (2 * 2**k * 8,)
    assert not out.any() and np.isfinite(out).all()
    cfg = _cfg(8, k, 2, 1, proj=4, final=10)
    assert not ref.encode(np.zeros((0, 8)), cfg, is_query=is_query).any()


def test_query_ignores_fill():
    x = np.random.default_rng(1).standard_normal((3, 8)).astype(np.float32)
    a = ref.encode_query(x, _cfg(8, 4, 2, 5, fill=True))
    b = ref.encode_query(x, _cfg(8, 4, 2, 5, fill=False))
    np.testing.assert_array_equal(a, b)


def test_fill_uses_projected_row_of_nearest_lowest_index_point():
    # A single point fills every partition with itself (distance ties go to the lowest index).
    x = np.random.default_rng(2).standard_normal((1, 8)).astype(np.float32)
    out = ref.encode_document(x, _cfg(8, 3, 1, 9, fill=True)).reshape(8, 8)
    np.testing.assert_array_equal(out, np.broadcast_to(x, (8, 8)))
    # With two copies of the same point, the mean equals the point, and fill copies row 0.
    x2 = np.vstack([x, x])
    out2 = ref.encode_document(x2, _cfg(8, 3, 1, 9, fill=True)).reshape(8, 8)
    np.testing.assert_array_equal(out2, out)


def test_seed_wraparound_per_repetition():
    # Repetition r uses uint32(int32(seed) + r): with seed = 2^31 - 1, repetition 1 is
    # seeded with 2^31, which equals repetition 0 of seed -2^31.
    x = np.random.default_rng(3).standard_normal((6, 8)).astype(np.float32)
    a = ref.encode_query(x, _cfg(8, 3, 2, 2**31 - 1)).reshape(2, -1)
    b = ref.encode_query(x, _cfg(8, 3, 1, -(2**31)))
    np.testing.assert_array_equal(a[1], b)


def test_invalid_configs():
    x = np.zeros((2, 8), np.float32)
    with pytest.raises(ValueError):
        ref.encode(x, _cfg(8, 31, 1, 1), True)
    with pytest.raises(ValueError):
        ref.encode(x, _cfg(8, -1, 1, 1), True)
    with pytest.raises(ValueError):
        ref.encode(x, _cfg(4, 2, 1, 1), True)
    bad = _cfg(8, 2, 1, 1)
    bad.projection_type = "ams_sketch"
    with pytest.raises(ValueError):
        ref.encode(x, bad, True)


# ---------------------------------------------------------------------------
# Live oracle: muvfde (the reference C++ behind a nanobind binding)
# ---------------------------------------------------------------------------



@pytest.mark.parametrize("n, d, k, R, seed, doc, fill, proj, final", LIVE_CASES)
def test_live_muvfde(n, d, k, R, seed, doc, fill, proj, final):
    rng = np.random.default_rng(abs(seed) + 1000 * n + d)
    x = rng.standard_normal((n, d)).astype(np.float32)
    expected = muvfde_encode(x, k, R, seed, doc, fill, proj, final)
    got = ref.encode(x, _cfg(d, k, R, seed, proj=proj, fill=fill, final=final), is_query=not doc)
    assert got.shape == expected.shape
    if proj is None:
        np.testing.assert_array_equal(got, expected)
    else:
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
