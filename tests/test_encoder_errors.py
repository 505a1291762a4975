"""Bad configs and inputs raise ValueError/TypeError naming the argument; empty items give zeros."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import muvera
from muvera import FDEConfig, FDEEncoder

D = 8
ISAS = muvera.supported_isas()


@pytest.fixture(scope="module")
def enc():
    return FDEEncoder(FDEConfig(dimension=D, num_repetitions=2, num_simhash_projections=3, seed=11,
                                fill_empty_partitions=True), num_threads=2)


def _x(n=4, d=D, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(dtype)


def _still_works(enc):
    items = [_x(3), _x(0), _x(5, seed=1)]
    q = enc.encode_queries(items)
    d = enc.encode_documents(items)
    assert q.shape == d.shape == (3, enc.output_dimension)
    assert np.isfinite(q).all() and np.isfinite(d).all()
    np.testing.assert_array_equal(q[2], enc.encode_query(items[2]))
    np.testing.assert_array_equal(d[0], enc.encode_document(items[0]))


# ---------------------------------------------------------------------------
# FDEConfig validation
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(num_simhash_projections=-1), ValueError, "num_simhash_projections"),
    (dict(num_simhash_projections=31), ValueError, "num_simhash_projections"),
    (dict(projection_type="ams_sketch", projection_dimension=0), ValueError, "projection_dimension"),
    (dict(projection_type="ams_sketch", projection_dimension=-4), ValueError, "projection_dimension"),
    (dict(projection_type="ams_sketch"), ValueError, "projection_dimension"),
    (dict(projection_type="identity", projection_dimension=4), ValueError, "projection_dimension"),
    (dict(num_repetitions=0), ValueError, "num_repetitions"),
    (dict(num_repetitions=-3), ValueError, "num_repetitions"),
    (dict(dimension=0), ValueError, "dimension"),
    (dict(dimension=-1), ValueError, "dimension"),
    (dict(dimension=8.0), TypeError, "dimension"),
    (dict(dimension="8"), TypeError, "dimension"),
    (dict(dimension=True), TypeError, "dimension"),
    (dict(dimension=None), TypeError, "dimension"),
    (dict(num_repetitions=2.0), TypeError, "num_repetitions"),
    (dict(num_repetitions="2"), TypeError, "num_repetitions"),
    (dict(num_repetitions=True), TypeError, "num_repetitions"),
    (dict(num_simhash_projections=3.0), TypeError, "num_simhash_projections"),
    (dict(num_simhash_projections=False), TypeError, "num_simhash_projections"),
    (dict(seed=1.5), TypeError, "seed"),
    (dict(seed="1"), TypeError, "seed"),
    (dict(seed=True), TypeError, "seed"),
    (dict(seed=2**31), ValueError, "seed"),
    (dict(seed=-(2**31) - 1), ValueError, "seed"),
    (dict(projection_type="ams_sketch", projection_dimension=4.0), TypeError, "projection_dimension"),
    (dict(projection_type="ams_sketch", projection_dimension="4"), TypeError, "projection_dimension"),
    (dict(projection_type="ams_sketch", projection_dimension=True), TypeError, "projection_dimension"),
    (dict(projection_type="gaussian"), ValueError, "projection_type"),
    (dict(projection_type=""), ValueError, "projection_type"),
    (dict(projection_type=1), TypeError, "projection_type"),
    (dict(projection_type=None), TypeError, "projection_type"),
    (dict(fill_empty_partitions=1), TypeError, "fill_empty_partitions"),
    (dict(fill_empty_partitions="yes"), TypeError, "fill_empty_partitions"),
    (dict(final_projection_dimension=0), ValueError, "final_projection_dimension"),
    (dict(final_projection_dimension=-5), ValueError, "final_projection_dimension"),
    (dict(final_projection_dimension=64.0), TypeError, "final_projection_dimension"),
    (dict(final_projection_dimension=True), TypeError, "final_projection_dimension"),
    (dict(num_repetitions=2**20, num_simhash_projections=30), ValueError, "num_repetitions"),
])
def test_bad_config(kwargs, exc, match):
    full = dict(dimension=D)
    full.update(kwargs)
    with pytest.raises(exc, match=match):
        FDEConfig(**full)


def test_valid_config_edges():
    assert FDEConfig(dimension=D, num_simhash_projections=0).fde_dimension == D
    assert FDEConfig(dimension=1, num_simhash_projections=24).fde_dimension == 2**24
    with pytest.raises(ValueError, match="exceeds"):  # 4 GiB per encoding: refused, not allocated
        FDEConfig(dimension=1, num_simhash_projections=30)
    with pytest.raises(ValueError, match="final_projection_dimension"):
        FDEConfig(dimension=D, final_projection_dimension=2**31)
    assert FDEConfig(dimension=D, seed=-(2**31)).seed == -(2**31)
    assert FDEConfig(dimension=D, fill_empty_partitions=np.bool_(True)).fill_empty_partitions is True
    assert FDEConfig(dimension=np.int16(D)).dimension == D and type(FDEConfig(dimension=np.int16(D)).dimension) is int


def test_bad_encoder_args():
    cfg = FDEConfig(dimension=D)
    for bad in (0, -1, 10**6):
        with pytest.raises(ValueError, match="num_threads"):
            FDEEncoder(cfg, num_threads=bad)
    for bad in (True, 1.5, "2"):
        with pytest.raises(TypeError, match="num_threads"):
            FDEEncoder(cfg, num_threads=bad)
    with pytest.raises(ValueError, match="isa"):
        FDEEncoder(cfg, isa="sse9")
    with pytest.raises(TypeError, match="config"):
        FDEEncoder(cfg.to_dict())


# ---------------------------------------------------------------------------
# Shapes
# ---------------------------------------------------------------------------


def test_wrong_token_dimension(enc):
    with pytest.raises(ValueError, match="query"):
        enc.encode_query(_x(d=D + 1))
    with pytest.raises(ValueError, match="document"):
        enc.encode_document(_x(d=D - 1))
    with pytest.raises(ValueError, match=r"queries\[1\]"):
        enc.encode_queries([_x(), _x(d=D + 1)])
    with pytest.raises(ValueError, match=r"documents\[0\]"):
        enc.encode_documents([_x(0, d=3), _x()])
    with pytest.raises(ValueError, match="documents"):
        enc.encode_documents(_x(6, d=D + 2), lengths=[6])
    with pytest.raises(ValueError, match="queries"):
        enc.encode_queries(np.zeros((2, 3, D + 1), np.float32))
    _still_works(enc)


def test_wrong_ndim_for_single_item(enc):
    with pytest.raises(ValueError, match="query"):
        enc.encode_query(np.zeros(D, np.float32))
    with pytest.raises(ValueError, match="query"):
        enc.encode_query(np.zeros((1, 3, D), np.float32))
    with pytest.raises(ValueError, match="document"):
        enc.encode_document(np.zeros((2, 3, D), np.float32))
    with pytest.raises(ValueError, match="document"):
        enc.encode_document(np.float32(1.0))
    with pytest.raises(ValueError, match=r"queries\[1\]"):
        enc.encode_queries([_x(), np.zeros(D, np.float32)])
    with pytest.raises(ValueError, match=r"documents\[0\]"):
        enc.encode_documents([np.zeros((1, 2, D), np.float32)])
    with pytest.raises(ValueError, match="queries"):
        enc.encode_queries(np.zeros(D, np.float32))
    with pytest.raises(ValueError, match="documents"):
        enc.encode_documents(np.zeros((1, 1, 2, D), np.float32))
    _still_works(enc)


# ---------------------------------------------------------------------------
# Non-finite values
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values(bad, isa):
    cfg = FDEConfig(dimension=D, num_repetitions=2, num_simhash_projections=2, projection_type="ams",
                    projection_dimension=3, fill_empty_partitions=True, final_projection_dimension=10)
    enc = FDEEncoder(cfg, isa=isa, num_threads=2)
    x = _x(5)
    x[3, 6] = bad
    with pytest.raises(ValueError, match="query"):
        enc.encode_query(x)
    with pytest.raises(ValueError, match="document"):
        enc.encode_document(x)
    with pytest.raises(ValueError, match=r"queries\[2\]"):
        enc.encode_queries([_x(), _x(0), x, _x()])
    with pytest.raises(ValueError, match=r"documents\[1\]"):
        enc.encode_documents([_x(), x])
    with pytest.raises(ValueError, match=r"documents\[1\]"):
        enc.encode_documents(np.concatenate([_x(2), x]), lengths=[2, 5])
    with pytest.raises(ValueError, match=r"queries\[0\]"):
        enc.encode_queries(x[None])
    # float16 and float64 carry the same values.
    with pytest.raises(ValueError, match="query"):
        enc.encode_query(x.astype(np.float16))
    with pytest.raises(ValueError, match=r"documents\[0\]"):
        enc.encode_documents([x.astype(np.float16)])
    with pytest.raises(ValueError, match="document"):
        enc.encode_document(x.astype(np.float64))
    _still_works(enc)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_non_finite_after_conversion(enc):
    # float16 overflow to inf at the source, and float64 values beyond float32's range.
    x16 = _x().astype(np.float16)
    x16[1, 1] = np.float16(np.inf)
    with pytest.raises(ValueError, match="query"):
        enc.encode_query(x16)
    x64 = _x().astype(np.float64)
    x64[0, 0] = 1e39  # finite in float64, inf in float32
    with pytest.raises(ValueError, match="document"):
        enc.encode_document(x64)
    with pytest.raises(ValueError, match=r"queries\[1\]"):
        enc.encode_queries([_x(), x64])
    _still_works(enc)


def test_non_finite_torch(enc):
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(_x())
    x[2, 2] = float("nan")
    for t in (x, x.half(), x.bfloat16()):
        with pytest.raises(ValueError, match="query"):
            enc.encode_query(t)
        with pytest.raises(ValueError, match=r"documents\[1\]"):
            enc.encode_documents(torch.stack([torch.zeros_like(t), t]))
    _still_works(enc)


def test_non_finite_in_masked_out_padding_is_ignored(enc):
    padded = np.full((2, 6, D), np.nan, np.float32)
    padded[0, :3] = _x(3)
    padded[1, :1] = _x(1, seed=3)
    mask = np.zeros((2, 6), bool)
    mask[0, :3] = mask[1, :1] = True
    out = enc.encode_documents(padded, mask=mask)
    assert np.isfinite(out).all()
    with pytest.raises(ValueError, match="documents"):
        enc.encode_documents(padded)  # without the mask the NaN padding is data


@settings(max_examples=8 if os.environ.get("MUVERA_ASAN") else 30, deadline=None)
@given(n_items=st.integers(1, 6), data=st.data())
def test_non_finite_reports_first_bad_item(n_items, data):
    enc = FDEEncoder(FDEConfig(dimension=5, num_repetitions=2, num_simhash_projections=2), num_threads=2)
    lengths = data.draw(st.lists(st.integers(1, 9), min_size=n_items, max_size=n_items))
    bad = data.draw(st.sets(st.integers(0, n_items - 1), min_size=1))
    items = [np.ones((n, 5), np.float32) for n in lengths]
    for i in bad:
        r = data.draw(st.integers(0, lengths[i] - 1))
        c = data.draw(st.integers(0, 4))
        items[i][r, c] = data.draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    # Some item with a bad value is named; we ask for the first one only when there is one.
    with pytest.raises(ValueError, match=r"documents\[(\d+)\]") as info:
        enc.encode_documents(items)
    named = int(info.value.args[0].split("[")[1].split("]")[0])
    assert named in bad
    if len(bad) == 1:
        assert named == next(iter(bad))
    assert np.isfinite(enc.encode_documents([np.ones((2, 5), np.float32)])).all()


# ---------------------------------------------------------------------------
# Batch structure
# ---------------------------------------------------------------------------


def test_mask_shape_mismatch(enc):
    padded = np.zeros((3, 5, D), np.float32)
    for bad in (np.ones((3, 4), bool), np.ones((2, 5), bool), np.ones((3, 5, 2), bool), np.ones(15, bool),
                np.ones((5, 3), bool)):
        with pytest.raises(ValueError, match="mask"):
            enc.encode_documents(padded, mask=bad)
    with pytest.raises(TypeError, match="mask"):
        enc.encode_documents(padded, mask=np.full((3, 5), 0.5))
    with pytest.raises(TypeError, match="mask"):
        enc.encode_documents(padded, mask=np.full((3, 5), 2))
    # A mask on a packed array or a list is an error too.
    with pytest.raises(ValueError, match="mask"):
        enc.encode_documents(np.zeros((4, D), np.float32), mask=np.ones((1, 4), bool))
    with pytest.raises(ValueError, match="mask"):
        enc.encode_documents([np.zeros((4, D), np.float32)], mask=np.ones((1, 4), bool))
    # lengths/offsets on a padded array.
    with pytest.raises(ValueError, match="mask"):
        enc.encode_documents(padded, lengths=[5, 5, 5])
    _still_works(enc)


def test_lengths_and_offsets_errors(enc):
    packed = _x(10)
    with pytest.raises(ValueError, match="lengths"):
        enc.encode_queries(packed, lengths=[3, 3])           # sums to 6, not 10
    with pytest.raises(ValueError, match="lengths"):
        enc.encode_queries(packed, lengths=[3, 3, 5])        # sums to 11
    with pytest.raises(ValueError, match="lengths"):
        enc.encode_queries(packed, lengths=[12, -2])         # negative
    with pytest.raises(ValueError, match="lengths"):
        enc.encode_queries(packed, lengths=[])
    with pytest.raises(ValueError, match="lengths"):
        enc.encode_queries(packed, lengths=[[10]])
    with pytest.raises(TypeError, match="lengths"):
        enc.encode_queries(packed, lengths=[4.0, 6.0])
    with pytest.raises(TypeError, match="lengths"):
        enc.encode_queries(packed, lengths=np.array([True] * 10))
    with pytest.raises(ValueError, match="offsets"):
        enc.encode_queries(packed, offsets=[1, 10])          # does not start at 0
    with pytest.raises(ValueError, match="offsets"):
        enc.encode_queries(packed, offsets=[0, 6, 4, 10])    # decreasing
    with pytest.raises(ValueError, match="offsets"):
        enc.encode_queries(packed, offsets=[0, 4, 9])        # does not end at the row count
    with pytest.raises(ValueError, match="offsets"):
        enc.encode_queries(packed, offsets=[0, 4, 11])
    with pytest.raises(ValueError, match="offsets"):
        enc.encode_queries(packed, offsets=[0])
    with pytest.raises(TypeError, match="offsets"):
        enc.encode_queries(packed, offsets=[0.0, 10.0])
    with pytest.raises(ValueError, match="lengths=.*offsets="):
        enc.encode_queries(packed, lengths=[10], offsets=[0, 10])  # both
    with pytest.raises(ValueError, match="lengths=.*offsets="):
        enc.encode_documents(packed)                             # neither
    _still_works(enc)


def test_empty_and_malformed_lists(enc):
    with pytest.raises(ValueError, match="queries"):
        enc.encode_queries([])
    with pytest.raises(ValueError, match="documents"):
        enc.encode_documents(())
    with pytest.raises(ValueError, match="documents"):
        enc.encode_documents(np.zeros((0, 4, D), np.float32))
    with pytest.raises(TypeError, match=r"queries\[1\]"):
        enc.encode_queries([_x(), "tokens"])
    with pytest.raises(TypeError, match=r"queries\[0\]"):
        enc.encode_queries([None])
    with pytest.raises(TypeError, match=r"documents\[1\]"):
        enc.encode_documents([_x(), [[1.0] * D, [1.0] * (D - 1)]])  # ragged rows
    with pytest.raises(TypeError, match=r"documents\[0\]"):
        enc.encode_documents([{"a": 1}])
    with pytest.raises(ValueError, match=r"documents\[0\]"):
        enc.encode_documents([[1.0] * D, [1.0] * D])  # a list of rows is a list of 1-D items
    with pytest.raises(TypeError, match="document"):
        enc.encode_document("abc")
    with pytest.raises((TypeError, ValueError), match="queries"):
        enc.encode_queries(None)
    with pytest.raises(ValueError, match="queries"):
        enc.encode_queries(3.0)
    _still_works(enc)


def test_integer_and_other_dtypes(enc):
    # NumPy/torch arrays must hold floating-point values: integer, bool and complex arrays are
    # rejected (no silent conversion) ...
    xi = np.ones((3, D), np.int32)
    for bad in (xi, xi.astype(np.int64), xi.astype(np.uint8), xi.astype(bool), xi.astype(np.complex64)):
        with pytest.raises(TypeError, match="query"):
            enc.encode_query(bad)
        with pytest.raises(TypeError, match=r"documents\[0\]"):
            enc.encode_documents([bad])
        with pytest.raises(TypeError, match="documents"):
            enc.encode_documents(bad, lengths=[3])
        with pytest.raises(TypeError, match="queries"):
            enc.encode_queries(bad[None])
    # ... but nested Python lists of numbers are converted to float32.
    ints = [[1, 2, 3, 4, 5, 6, 7, 8], [0, -1, 0, 1, 0, 2, 0, 3]]
    np.testing.assert_array_equal(enc.encode_query(ints), enc.encode_query(np.array(ints, np.float32)))
    np.testing.assert_array_equal(enc.encode_documents([ints]),
                                  enc.encode_documents([np.array(ints, np.float32)]))
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="query"):
        enc.encode_query(torch.ones(3, D, dtype=torch.int64))
    _still_works(enc)


# ---------------------------------------------------------------------------
# Empty items encode to zeros (never NaN)
# ---------------------------------------------------------------------------

_EMPTY_CONFIGS = {
    "query_k3": FDEConfig(dimension=D, num_repetitions=2, num_simhash_projections=3),
    "doc_k0": FDEConfig(dimension=D, num_repetitions=2, num_simhash_projections=0),  # reference: NaN
    "fill_k3": FDEConfig(dimension=D, num_repetitions=2, num_simhash_projections=3,
                         fill_empty_partitions=True),  # reference: reads row -1
    "fill_k0_ams": FDEConfig(dimension=D, num_repetitions=3, num_simhash_projections=0, projection_type="ams",
                             projection_dimension=4, fill_empty_partitions=True),
    "final": FDEConfig(dimension=D, num_repetitions=2, num_simhash_projections=2, projection_type="ams",
                       projection_dimension=4, fill_empty_partitions=True, final_projection_dimension=7),
    "final_k0": FDEConfig(dimension=D, num_simhash_projections=0, final_projection_dimension=3),
}


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("name", list(_EMPTY_CONFIGS))
def test_empty_item_is_zeros(name, isa):
    cfg = _EMPTY_CONFIGS[name]
    enc = FDEEncoder(cfg, isa=isa, num_threads=2)
    empty = np.zeros((0, D), np.float32)
    outs = [enc.encode_query(empty), enc.encode_document(empty),
            enc.encode_query(empty.astype(np.float16)), enc.encode_document(empty.astype(np.float64)),
            *enc.encode_queries([_x(3), empty, _x(2)])[1:2],
            *enc.encode_documents([_x(3), empty, _x(2)])[1:2],
            *enc.encode_documents(_x(5), lengths=[3, 0, 2])[1:2],
            *enc.encode_documents(_x(5), offsets=[0, 0, 5])[:1],
            *enc.encode_documents(np.zeros((2, 4, D), np.float32), mask=np.zeros((2, 4), bool))]
    for out in outs:
        assert out.shape == (cfg.output_dimension,) and out.dtype == np.float32
        assert np.isfinite(out).all()
        assert not out.any()
    # Non-empty neighbours are unaffected.
    both = enc.encode_documents([_x(3), empty, _x(2)])
    np.testing.assert_array_equal(both[0], enc.encode_document(_x(3)))
    np.testing.assert_array_equal(both[2], enc.encode_document(_x(2)))
    assert both[0].any()
