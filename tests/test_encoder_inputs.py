"""Every accepted batch form gives exactly what the list-of-arrays form gives; FDEConfig basics."""

from __future__ import annotations

import json

import numpy as np
import pytest

import muvera
from muvera import PRESETS, FDEConfig, FDEEncoder

D = 12
LENGTHS = [5, 0, 9, 1, 14, 3]  # mixed, with an empty item

_CONFIGS = {
    "identity": FDEConfig(dimension=D, num_repetitions=3, num_simhash_projections=3, seed=17),
    "ams_fill_final": FDEConfig(dimension=D, num_repetitions=2, num_simhash_projections=4, seed=-4,
                                projection_type="ams_sketch", projection_dimension=5,
                                fill_empty_partitions=True, final_projection_dimension=77),
}


@pytest.fixture(params=list(_CONFIGS), scope="module")
def enc(request):
    return FDEEncoder(_CONFIGS[request.param], num_threads=2)


@pytest.fixture(scope="module")
def items():
    rng = np.random.default_rng(2024)
    return [rng.standard_normal((n, D)).astype(np.float32) for n in LENGTHS]


def _both(enc, batch, **kw):
    return enc.encode_queries(batch, **kw), enc.encode_documents(batch, **kw)


def _assert_same(got, expected):
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])


def _padded(items, L=None, fill=np.nan):
    L = max(len(x) for x in items) if L is None else L
    out = np.full((len(items), L, D), fill, dtype=np.float32)
    mask = np.zeros((len(items), L), dtype=bool)
    for i, x in enumerate(items):
        out[i, : len(x)] = x
        mask[i, : len(x)] = True
    return out, mask


# ---------------------------------------------------------------------------
# NumPy forms
# ---------------------------------------------------------------------------


def test_list_and_tuple_and_single(enc, items):
    expected = _both(enc, items)
    assert expected[0].shape == (len(items), enc.output_dimension)
    _assert_same(_both(enc, tuple(items)), expected)
    for i, x in enumerate(items):
        np.testing.assert_array_equal(enc.encode_query(x), expected[0][i])
        np.testing.assert_array_equal(enc.encode_document(x), expected[1][i])


def test_packed_lengths_and_offsets(enc, items):
    expected = _both(enc, items)
    packed = np.concatenate(items)
    lengths = np.array(LENGTHS)
    offsets = np.concatenate(([0], np.cumsum(lengths)))
    _assert_same(_both(enc, packed, lengths=lengths), expected)
    _assert_same(_both(enc, packed, lengths=list(LENGTHS)), expected)
    _assert_same(_both(enc, packed, lengths=lengths.astype(np.int32)), expected)
    _assert_same(_both(enc, packed, lengths=lengths.astype(np.uint8)), expected)
    _assert_same(_both(enc, packed, offsets=offsets), expected)
    _assert_same(_both(enc, packed, offsets=offsets.tolist()), expected)


def test_padded_prefix_mask_and_no_mask(enc, items):
    expected = _both(enc, items)
    # Padding is NaN: it must never be read.
    padded, mask = _padded(items, L=16)
    _assert_same(_both(enc, padded, mask=mask), expected)
    _assert_same(_both(enc, padded, mask=mask.astype(np.int64)), expected)   # 0/1 ints
    _assert_same(_both(enc, padded, mask=mask.astype(np.float32)), expected)  # 0./1. floats
    _assert_same(_both(enc, padded, mask=mask[:, :, None]), expected)         # (n, L, 1)
    _assert_same(_both(enc, padded, mask=mask.tolist()), expected)
    # Without a mask every row of every item counts.
    full = [np.random.default_rng(i).standard_normal((7, D)).astype(np.float32) for i in range(4)]
    _assert_same(_both(enc, np.stack(full)), _both(enc, full))
    # L = 0: every item is empty.
    empty = _both(enc, np.zeros((3, 0, D), np.float32))
    assert empty[0].shape == (3, enc.output_dimension)
    assert not empty[0].any() and not empty[1].any()


def test_padded_mask_with_holes(enc, items):
    rng = np.random.default_rng(3)
    L = 15
    padded = rng.standard_normal((len(items), L, D)).astype(np.float32)
    mask = rng.random((len(items), L)) < 0.5
    mask[1] = False  # an empty item
    mask[2] = True   # a full one
    mask[3, 0] = False
    mask[3, -1] = True  # hole at the front
    assert not (mask == (np.arange(L) < mask.sum(1)[:, None])).all()
    expected = _both(enc, [padded[i][mask[i]] for i in range(len(items))])
    _assert_same(_both(enc, padded, mask=mask), expected)
    _assert_same(_both(enc, padded, mask=mask[:, :, None].astype(np.int8)), expected)
    # Non-contiguous padded array with holes.
    wide = np.zeros((len(items), L, D + 5), np.float32)
    wide[:, :, 2:2 + D] = padded
    _assert_same(_both(enc, wide[:, :, 2:2 + D], mask=mask), expected)


def test_padded_non_contiguous(enc, items):
    expected = _both(enc, items)
    padded, mask = _padded(items, fill=np.inf)
    wide = np.full(padded.shape[:2] + (D + 3,), np.nan, np.float32)
    wide[:, :, 1:1 + D] = padded
    view = wide[:, :, 1:1 + D]
    assert not view.flags.c_contiguous
    _assert_same(_both(enc, view, mask=mask), expected)
    # Items interleaved with junk items: every other item of a padded batch.
    junk = np.full_like(padded, np.nan)
    inter = np.stack([padded, junk], axis=1).reshape(-1, *padded.shape[1:])[::2]
    _assert_same(_both(enc, inter, mask=mask), expected)
    # Tokens every other position (stride-2 along L).
    sparse = np.repeat(padded, 2, axis=1)[:, ::2]
    _assert_same(_both(enc, sparse, mask=mask), expected)


def test_non_contiguous_rows(enc, items):
    expected = _both(enc, items)
    # Slices of a wider array: rows contiguous but strided.
    wides = []
    for x in items:
        w = np.full((len(x), D + 7), np.nan, np.float32)
        w[:, 3:3 + D] = x
        wides.append(w[:, 3:3 + D])
    _assert_same(_both(enc, wides), expected)
    for v, i in zip(wides, range(len(items))):
        np.testing.assert_array_equal(enc.encode_query(v), expected[0][i])
    # Every other row of a doubled array.
    doubled = [np.repeat(x, 2, axis=0)[::2] for x in items]
    _assert_same(_both(enc, doubled), expected)
    # Strided columns, reversed rows, Fortran order (copied internally).
    _assert_same(_both(enc, [np.repeat(x, 2, axis=1)[:, ::2] for x in items]), expected)
    _assert_same(_both(enc, [np.asfortranarray(x) for x in items]), expected)
    rev = _both(enc, [x[::-1] for x in items])
    _assert_same(_both(enc, [x[::-1].copy() for x in items]), rev)
    # Packed array as a slice of a wider one, and every other row of a packed array.
    packed = np.concatenate(items)
    w = np.full((len(packed), D + 4), np.nan, np.float32)
    w[:, :D] = packed
    _assert_same(_both(enc, w[:, :D], lengths=LENGTHS), expected)
    _assert_same(_both(enc, np.repeat(packed, 2, axis=0)[::2], lengths=LENGTHS), expected)


def test_row_stride_not_a_multiple_of_itemsize(enc, items):
    # A field of a packed structured array: row stride 4*D + 1 bytes.
    x = items[2]
    s = np.zeros(len(x), dtype=[("tag", "u1"), ("v", "f4", (D,))])
    s["v"] = x
    v = s["v"]
    assert v.strides[0] % 4 != 0
    np.testing.assert_array_equal(enc.encode_query(v), enc.encode_query(x))
    np.testing.assert_array_equal(enc.encode_documents([v, x])[0], enc.encode_document(x))
    np.testing.assert_array_equal(enc.encode_documents(v, lengths=[len(x)])[0], enc.encode_document(x))


def test_broadcast_rows(enc):
    x = np.broadcast_to(np.linspace(-1, 1, D, dtype=np.float32), (6, D))
    assert x.strides[0] == 0
    np.testing.assert_array_equal(enc.encode_document(x), enc.encode_document(np.ascontiguousarray(x)))


def test_float64_and_float16(enc, items):
    rng = np.random.default_rng(8)
    x64 = [rng.standard_normal((n, D)) for n in LENGTHS]  # not representable in float32
    exp64 = _both(enc, [x.astype(np.float32) for x in x64])
    _assert_same(_both(enc, x64), exp64)
    for i, x in enumerate(x64):
        np.testing.assert_array_equal(enc.encode_query(x), exp64[0][i])
        np.testing.assert_array_equal(enc.encode_document(x), exp64[1][i])
    _assert_same(_both(enc, np.concatenate(x64), lengths=LENGTHS), exp64)

    x16 = [x.astype(np.float16) for x in items]
    exp16 = _both(enc, [x.astype(np.float32) for x in x16])
    _assert_same(_both(enc, x16), exp16)
    for i, x in enumerate(x16):
        np.testing.assert_array_equal(enc.encode_document(x), exp16[1][i])
    _assert_same(_both(enc, np.concatenate(x16), offsets=np.r_[0, np.cumsum(LENGTHS)]), exp16)
    padded, mask = _padded(x16, fill=0)
    _assert_same(_both(enc, padded.astype(np.float16), mask=mask), exp16)

    # Mixed precisions in one list are fine too.
    mixed = [x16[0], x64[1], items[2], x64[3], x16[4], items[5]]
    exp_mixed = _both(enc, [x.astype(np.float32) for x in mixed])
    _assert_same(_both(enc, mixed), exp_mixed)


def test_python_nested_lists(enc, items):
    x = items[2]
    np.testing.assert_array_equal(enc.encode_query(x.tolist()), enc.encode_query(x))
    np.testing.assert_array_equal(enc.encode_documents([x.tolist(), items[0]]),
                                  enc.encode_documents([x, items[0]]))
    # Plain Python ints are accepted (converted to float32); NumPy integer arrays are not.
    ints = [[int(v) for v in row] for row in np.round(x * 3)]
    np.testing.assert_array_equal(enc.encode_query(ints),
                                  enc.encode_query(np.array(ints, dtype=np.float32)))


# ---------------------------------------------------------------------------
# torch
# ---------------------------------------------------------------------------


def test_torch_float32_float16_bfloat16(enc, items):
    torch = pytest.importorskip("torch")
    expected = _both(enc, items)
    t = [torch.from_numpy(x.copy()) for x in items]
    _assert_same(_both(enc, t), expected)
    np.testing.assert_array_equal(enc.encode_query(t[0]), expected[0][0])
    packed = torch.cat(t)
    _assert_same(_both(enc, packed, lengths=torch.tensor(LENGTHS)), expected)
    _assert_same(_both(enc, packed, offsets=torch.tensor(np.r_[0, np.cumsum(LENGTHS)])), expected)
    # requires_grad tensors are detached, not rejected.
    g = [x.clone().requires_grad_(True) for x in t]
    _assert_same(_both(enc, g), expected)

    h = [x.half() for x in t]
    exp_h = _both(enc, [x.float().numpy() for x in h])
    _assert_same(_both(enc, h), exp_h)
    _assert_same(_both(enc, torch.cat(h), lengths=LENGTHS), exp_h)

    b = [x.bfloat16() for x in t]
    exp_b = _both(enc, [x.float().numpy() for x in b])
    assert not np.array_equal(exp_b[1], expected[1])  # bf16 really is coarser
    _assert_same(_both(enc, b), exp_b)
    for i, x in enumerate(b):
        np.testing.assert_array_equal(enc.encode_query(x), exp_b[0][i])
        np.testing.assert_array_equal(enc.encode_document(x), exp_b[1][i])
    _assert_same(_both(enc, torch.cat(b), lengths=LENGTHS), exp_b)
    # bf16 mixed with float32 in one list.
    mixed = [b[0], t[1], b[2], t[3], t[4], b[5]]
    _assert_same(_both(enc, mixed), _both(enc, [x.float().numpy() for x in mixed]))
    # float64 tensors
    d64 = [x.double() * 1.000001 for x in t]
    _assert_same(_both(enc, d64), _both(enc, [x.float().numpy() for x in d64]))


def test_torch_non_contiguous(enc, items):
    torch = pytest.importorskip("torch")
    expected = _both(enc, items)
    views = []
    for x in items:
        w = torch.full((len(x), D + 5), float("nan"))
        w[:, 2:2 + D] = torch.from_numpy(x)
        views.append(w[:, 2:2 + D])
    _assert_same(_both(enc, views), expected)
    bviews = [v.bfloat16() for v in views]
    wide_b = [torch.cat([v.bfloat16(), torch.zeros(len(v), 3, dtype=torch.bfloat16)], 1)[:, :D] for v in views]
    assert not wide_b[0].is_contiguous()
    _assert_same(_both(enc, wide_b), _both(enc, [v.float().numpy() for v in bviews]))
    transposed = [torch.from_numpy(x.T.copy()).T for x in items]  # column-major
    _assert_same(_both(enc, transposed), expected)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("mask_kind", ["n_L_1", "n_L", "bool", "none"])
def test_torch_colbert_padded(enc, items, dtype, mask_kind):
    torch = pytest.importorskip("torch")
    tdtype = getattr(torch, dtype)
    padded, mask = _padded(items, L=16, fill=0.0)
    if mask_kind == "none":
        padded = padded[:, : max(LENGTHS)]
        mask = np.ones(padded.shape[:2], bool)
    tp = torch.from_numpy(padded).to(tdtype)
    # colbert-ai: docs (n, L, d) and a (n, L, 1) or (n, L) float/bool mask.
    m = torch.from_numpy(mask)
    tmask = {"n_L_1": m[:, :, None].float(), "n_L": m.long(), "bool": m, "none": None}[mask_kind]
    ref_items = [tp[i].float().numpy()[mask[i]] for i in range(len(items))]
    expected = _both(enc, ref_items)
    _assert_same(_both(enc, tp, mask=tmask), expected)


# ---------------------------------------------------------------------------
# FDEConfig
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name, dim", [("1280", 1280), ("2560", 2560), ("5120", 5120), ("10240", 10240)])
def test_preset_output_dims(name, dim):
    cfg = FDEConfig.preset(name, dimension=128)
    assert cfg.output_dimension == cfg.fde_dimension == dim
    assert cfg.projection_type == "ams_sketch" and cfg.fill_empty_partitions
    assert cfg.num_repetitions == PRESETS[name]["num_repetitions"]
    enc = FDEEncoder(cfg)
    assert enc.output_dimension == dim
    assert enc.encode_document(np.ones((3, 128), np.float32)).shape == (dim,)
    # Presets are independent of the token dimension, and accept an int name.
    assert FDEConfig.preset(int(name), dimension=7).output_dimension == dim
    assert FDEConfig.preset(name, dimension=128, final_projection_dimension=99).output_dimension == 99


def test_config_dimensions():
    cfg = FDEConfig(dimension=10, num_repetitions=3, num_simhash_projections=2)
    assert cfg.block_width == 10 and cfg.fde_dimension == cfg.output_dimension == 120
    cfg = FDEConfig(dimension=10, num_repetitions=3, num_simhash_projections=2, projection_type="ams",
                    projection_dimension=4, final_projection_dimension=33)
    assert cfg.projection_type == "ams_sketch"
    assert cfg.block_width == 4 and cfg.fde_dimension == 48 and cfg.output_dimension == 33
    assert FDEConfig(dimension=3, projection_type="DEFAULT_IDENTITY").projection_type == "identity"


_JSON_CONFIGS = [
    FDEConfig(dimension=5),
    FDEConfig.preset("10240", dimension=128),
    FDEConfig.preset("1280", dimension=96, seed=-(2**31), final_projection_dimension=512),
    FDEConfig(dimension=33, num_repetitions=7, num_simhash_projections=0, seed=2**31 - 1,
              projection_type="ams_sketch", projection_dimension=3, fill_empty_partitions=True),
]


@pytest.mark.parametrize("cfg", _JSON_CONFIGS, ids=range(len(_JSON_CONFIGS)))
def test_config_json_round_trip(cfg):
    d = cfg.to_dict()
    assert set(d) == {"dimension", "num_repetitions", "num_simhash_projections", "seed", "projection_type",
                      "projection_dimension", "fill_empty_partitions", "final_projection_dimension"}
    text = json.dumps(d)
    back = FDEConfig.from_dict(json.loads(text))
    assert back == cfg
    assert hash(back) == hash(cfg)
    assert back.to_dict() == d
    # Same config, same encodings.
    x = np.random.default_rng(0).standard_normal((9, cfg.dimension)).astype(np.float32)
    np.testing.assert_array_equal(FDEEncoder(back).encode_document(x), FDEEncoder(cfg).encode_document(x))


def test_config_equality_and_immutability():
    a = FDEConfig(dimension=8, num_repetitions=2, seed=3)
    assert a == FDEConfig(dimension=8, num_repetitions=2, seed=3)
    assert a != FDEConfig(dimension=8, num_repetitions=2, seed=4)
    assert a != FDEConfig(dimension=8, num_repetitions=2, seed=3, fill_empty_partitions=True)
    # Aliases and NumPy ints normalise to the same config.
    assert FDEConfig(dimension=np.int64(8), num_repetitions=np.int32(2), seed=3) == a
    assert (FDEConfig(dimension=8, projection_type="ams", projection_dimension=4)
            == FDEConfig(dimension=8, projection_type="ams_sketch", projection_dimension=4))
    assert FDEConfig(dimension=8, projection_type="identity", projection_dimension=0) == FDEConfig(dimension=8)
    assert len({a, FDEConfig(dimension=8, num_repetitions=2, seed=3)}) == 1
    with pytest.raises(Exception):
        a.seed = 5  # frozen
    enc = FDEEncoder(a)
    assert enc.config == a and "FDEEncoder" in repr(enc)


def test_from_dict_rejects_unknown_and_non_mapping():
    with pytest.raises(ValueError, match="data"):
        FDEConfig.from_dict({"dimension": 4, "bogus": 1})
    with pytest.raises(TypeError, match="data"):
        FDEConfig.from_dict([("dimension", 4)])
    with pytest.raises(ValueError, match="preset"):
        FDEConfig.preset("999", dimension=4)


def test_module_exports():
    assert muvera.FDEConfig is FDEConfig and muvera.FDEEncoder is FDEEncoder
    assert set(PRESETS) == {"1280", "2560", "5120", "10240"}
