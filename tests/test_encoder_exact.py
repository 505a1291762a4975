"""The C++ encoder (every kernel set) against the golden vectors, the NumPy oracle and muvfde.

* Golden vectors from muvfde 0.0.9: identity cases bit for bit, AMS cases within 1e-5
  (the reference's Eigen GEMM sums in another order).
* ``muvera.reference``: bit for bit on random configs and inputs, AMS included (both sum the
  sketch sequentially over input coordinates).
* Determinism: across encoder instances, calls, thread counts and batch vs single-item calls.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import muvera
from muvera import FDEConfig, FDEEncoder
from muvera import reference as ref
from oracles import GOLDEN, GOLDEN_CASES, HAVE_GOLDEN, LIVE_CASES, muvfde_encode

ISAS = muvera.supported_isas()

# ---------------------------------------------------------------------------
# Golden vectors (same lookup as tests/test_reference.py)
# ---------------------------------------------------------------------------


_HAVE_GOLDEN, _CASES = HAVE_GOLDEN, GOLDEN_CASES


@pytest.fixture(scope="module")
def golden():
    if not _HAVE_GOLDEN:
        pytest.skip(f"golden vectors not found under {GOLDEN}")
    with np.load(GOLDEN / "muvfde_golden.npz") as z:
        return {k: z[k] for k in z.files}


def _config(d, k, R, seed, *, proj=None, fill=False, final=None) -> FDEConfig:
    return FDEConfig(dimension=d, num_repetitions=R, num_simhash_projections=k, seed=seed,
                     projection_type="ams_sketch" if proj else "identity",
                     projection_dimension=proj, fill_empty_partitions=fill,
                     final_projection_dimension=final)


def _encode_one(enc: FDEEncoder, x: np.ndarray, is_document: bool) -> np.ndarray:
    return enc.encode_document(x) if is_document else enc.encode_query(x)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("case", _CASES, ids=[c["name"] for c in _CASES])
def test_golden(case, isa, golden):
    cfg = _config(case["d"], case["k"], case["R"], case["seed"], proj=case["proj"], fill=case["fill"],
                  final=case["final"])
    enc = FDEEncoder(cfg, isa=isa)
    x = golden[case["name"] + "__input"]
    expected = golden[case["name"] + "__fde"]
    assert enc.output_dimension == case["out_dim"] == expected.shape[0]

    got = _encode_one(enc, x, case["doc"])
    assert got.dtype == np.float32 and got.shape == expected.shape
    if case["exact"]:
        np.testing.assert_array_equal(got, expected)
    else:
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    # And exactly the oracle, AMS included.
    np.testing.assert_array_equal(got, ref.encode(x, cfg, is_query=not case["doc"]))

    # The batch path gives the same row.
    batch = enc.encode_documents([x, x]) if case["doc"] else enc.encode_queries([x, x])
    np.testing.assert_array_equal(batch[0], got)
    np.testing.assert_array_equal(batch[1], got)


# ---------------------------------------------------------------------------
# Property test: C++ == reference, bit for bit
# ---------------------------------------------------------------------------

# The reference's sequential scatter-add costs O(N^2 / final) for an N-float FDE; keep N/final
# at most this, so no single example is slow.
_MAX_FOLD = 2000


@st.composite
def configs(draw) -> FDEConfig:
    d = draw(st.integers(1, 70))
    R = draw(st.integers(1, 5))
    k = draw(st.integers(0, 7))
    seed = draw(st.integers(-(2**31), 2**31 - 1))
    proj = draw(st.one_of(st.none(), st.integers(1, 40)))
    fill = draw(st.booleans())
    width = proj if proj is not None else d
    fde = R * (1 << k) * width
    lo = max(1, -(-fde // _MAX_FOLD))
    final = draw(st.one_of(st.none(), st.integers(lo, 300))) if lo <= 300 else None
    return _config(d, k, R, seed, proj=proj, fill=fill, final=final)


@st.composite
def batches(draw, d: int):
    n_items = draw(st.integers(1, 5))
    lengths = draw(st.lists(st.integers(0, 40), min_size=n_items, max_size=n_items))
    kind = draw(st.sampled_from(["normal", "zeros", "rounded"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    items = []
    for n in lengths:
        x = rng.standard_normal((n, d)).astype(np.float32)
        if kind == "zeros":  # many exact zeros, some whole-zero rows, some -0.0
            x[rng.random(x.shape) < 0.6] = 0.0
            if n:
                x[rng.integers(0, n)] = 0.0
            x[rng.random(x.shape) < 0.05] = -0.0
        elif kind == "rounded":  # small integers: many zeros and exact ties
            x = np.round(x * 1.5).astype(np.float32)
        items.append(x)
    return items


@settings(max_examples=8 if os.environ.get("MUVERA_ASAN") else 50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_matches_reference_exactly(data):
    cfg = data.draw(configs(), label="config")
    items = data.draw(batches(cfg.dimension), label="items")
    exp_q = np.stack([ref.encode_query(x, cfg) for x in items])
    exp_d = np.stack([ref.encode_document(x, cfg) for x in items])
    assert np.isfinite(exp_q).all() and np.isfinite(exp_d).all()
    for isa in ISAS:
        enc = FDEEncoder(cfg, num_threads=2, isa=isa)
        got_q = enc.encode_queries(items)
        got_d = enc.encode_documents(items)
        assert got_q.shape == got_d.shape == (len(items), cfg.output_dimension)
        np.testing.assert_array_equal(got_q, exp_q, err_msg=f"queries, isa={isa}, {cfg}")
        np.testing.assert_array_equal(got_d, exp_d, err_msg=f"documents, isa={isa}, {cfg}")
        np.testing.assert_array_equal(enc.encode_query(items[0]), exp_q[0])
        np.testing.assert_array_equal(enc.encode_document(items[-1]), exp_d[-1])


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("preset", ["1280", "10240"])
def test_presets_match_reference_colbert_sized(preset, isa):
    # d = 128, many tokens: exercises the wide SIMD paths the small property cases may not.
    cfg = FDEConfig.preset(preset, dimension=128, seed=7)
    rng = np.random.default_rng(11)
    items = [rng.standard_normal((n, 128)).astype(np.float32) for n in (1, 31, 80)]
    enc = FDEEncoder(cfg, isa=isa)
    np.testing.assert_array_equal(enc.encode_documents(items),
                                  np.stack([ref.encode_document(x, cfg) for x in items]))
    np.testing.assert_array_equal(enc.encode_queries(items),
                                  np.stack([ref.encode_query(x, cfg) for x in items]))


# ---------------------------------------------------------------------------
# Live oracle: muvfde (reference C++), if installed
# ---------------------------------------------------------------------------



@pytest.mark.parametrize("n, d, k, R, seed, doc, fill, proj, final", LIVE_CASES)
def test_live_muvfde(n, d, k, R, seed, doc, fill, proj, final):
    rng = np.random.default_rng(abs(seed) + 31 * n + d)
    x = rng.standard_normal((n, d)).astype(np.float32)
    expected = muvfde_encode(x, k, R, seed, doc, fill, proj, final)
    cfg = _config(d, k, R, seed, proj=proj, fill=fill, final=final)
    for isa in ISAS:
        got = _encode_one(FDEEncoder(cfg, isa=isa), x, doc)
        assert got.shape == expected.shape
        if proj is None:
            np.testing.assert_array_equal(got, expected)
        else:
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------
# Determinism and batch consistency
# ---------------------------------------------------------------------------


def _ragged(rng, d, lengths):
    return [rng.standard_normal((n, d)).astype(np.float32) for n in lengths]


_DET_CONFIGS = [
    FDEConfig(dimension=24, num_repetitions=3, num_simhash_projections=4, seed=9),
    FDEConfig(dimension=24, num_repetitions=3, num_simhash_projections=4, seed=9,
              fill_empty_partitions=True, final_projection_dimension=97),
    FDEConfig.preset("2560", dimension=40, seed=-3),
    FDEConfig(dimension=33, num_repetitions=2, num_simhash_projections=0, projection_type="ams_sketch",
              projection_dimension=5),
]


@pytest.mark.parametrize("cfg", _DET_CONFIGS, ids=range(len(_DET_CONFIGS)))
def test_deterministic_across_instances_calls_threads(cfg):
    rng = np.random.default_rng(5)
    items = _ragged(rng, cfg.dimension, [3, 0, 17, 1, 40, 8, 25, 2, 0, 12, 30, 5])
    first = None
    for isa in ISAS:
        for threads in (1, 2):
            enc = FDEEncoder(cfg, num_threads=threads, isa=isa)
            assert enc.num_threads == threads
            for _ in range(2):
                out = (enc.encode_queries(items), enc.encode_documents(items))
                if first is None:
                    first = out
                np.testing.assert_array_equal(out[0], first[0])
                np.testing.assert_array_equal(out[1], first[1])
    # Default encoder (best ISA, all cores) agrees too.
    enc = FDEEncoder(cfg)
    np.testing.assert_array_equal(enc.encode_queries(items), first[0])
    np.testing.assert_array_equal(enc.encode_documents(items), first[1])


@pytest.mark.parametrize("cfg", _DET_CONFIGS, ids=range(len(_DET_CONFIGS)))
def test_batch_row_equals_single_item(cfg):
    rng = np.random.default_rng(6)
    items = _ragged(rng, cfg.dimension, [4, 0, 19, 1, 33, 7])
    enc = FDEEncoder(cfg, num_threads=2)
    q = enc.encode_queries(items)
    d = enc.encode_documents(items)
    assert q.shape == d.shape == (len(items), cfg.output_dimension)
    assert q.dtype == d.dtype == np.float32
    for i, x in enumerate(items):
        np.testing.assert_array_equal(q[i], enc.encode_query(x))
        np.testing.assert_array_equal(d[i], enc.encode_document(x))
        # A batch of one, too.
        np.testing.assert_array_equal(q[i], enc.encode_queries([x])[0])
        np.testing.assert_array_equal(d[i], enc.encode_documents([x])[0])


def test_different_seeds_differ():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((20, 16)).astype(np.float32)
    a = FDEEncoder(FDEConfig(dimension=16, num_repetitions=2, num_simhash_projections=3, seed=1))
    b = FDEEncoder(FDEConfig(dimension=16, num_repetitions=2, num_simhash_projections=3, seed=2))
    assert not np.array_equal(a.encode_query(x), b.encode_query(x))


def test_supported_isas_and_active():
    isas = muvera.supported_isas()
    assert "generic" in isas
    levels = ["generic", "avx2", "avx512", "avx512vnni"]
    assert isas == [lv for lv in levels if lv in isas]  # lowest first, no unknown names
    assert muvera.active_isa() in isas
    if not os.environ.get("MUVERA_ISA"):
        assert muvera.active_isa() == isas[-1]  # one table: the best level is chosen for every kernel


def test_muvera_isa_forces_one_level_for_every_kernel(tmp_path):
    # MUVERA_ISA picks a row of the one dispatch table: the name the process reports is that level
    # (the residual and int8 kernels no longer choose on their own).
    import subprocess
    import sys

    for level in muvera.supported_isas():
        env = dict(os.environ, MUVERA_ISA=level)
        out = subprocess.run([sys.executable, "-c", "import muvera; print(muvera.active_isa())"], env=env,
                             capture_output=True, text=True, check=True,
                             cwd=tmp_path)  # outside any checkout: its muvera/ has no built extension
        assert out.stdout.strip() == level, (level, out.stderr)
