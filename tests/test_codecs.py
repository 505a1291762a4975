"""Token codecs: round trips against the NumPy decoder, the C++ rerank on codes on every ISA,
persistence, and an index over each codec."""

from __future__ import annotations

import numpy as np
import pytest

import muvera
from muvera import FDEConfig, MuveraIndex, _core
from muvera.codecs import Int8Codec, make_codec
from muvera.maxsim import chamfer_reference

D = 16
RNG = np.random.default_rng(3)
DOCS = [RNG.normal(size=(int(n), D)).astype(np.float32) for n in RNG.integers(1, 30, size=120)]
QUERIES = [RNG.normal(size=(int(n), D)).astype(np.float32) for n in RNG.integers(1, 9, size=7)]


def _pack(items):
    off = np.zeros(len(items) + 1, np.int64)
    np.cumsum([len(x) for x in items], out=off[1:])
    return np.ascontiguousarray(np.concatenate(items), dtype=np.float32), off


def test_int8_round_trip_and_layout():
    codec = make_codec("int8", D)
    assert isinstance(codec, Int8Codec) and codec.code_width == D + 4 and codec.code_dtype == np.uint8
    x = np.concatenate(DOCS)
    x[0] = 0.0  # an all-zero token: scale 0, decodes to zeros (never NaN)
    codes = codec.encode(x)
    c, s = codec.split(codes)
    np.testing.assert_array_equal(s, (np.abs(x).max(axis=1) / np.float32(127)).astype(np.float32))
    assert np.abs(c).max() <= 127 and (c[0] == 0).all() and s[0] == 0
    dec = codec.decode(codes)
    np.testing.assert_array_equal(dec, c.astype(np.float32) * s[:, None])
    assert np.isfinite(dec).all()
    # at most half a quantisation step per value
    assert (np.abs(dec - x) <= s[:, None] / 2 * (1 + 1e-6) + 1e-30).all()
    np.testing.assert_array_equal(codec.encode(dec), codes)  # decoded tokens re-encode to the same codes


@pytest.mark.parametrize("isa", muvera.supported_isas())
def test_int8_rerank_kernel_matches_numpy_on_every_isa(isa):
    codec = make_codec("int8", D)
    dt, doff = _pack(DOCS)
    codes = codec.encode(dt)
    qt, qoff = _pack(QUERIES)
    n = len(DOCS)
    cand = np.broadcast_to(np.arange(n, dtype=np.int64), (len(QUERIES), n)).copy()
    got = _core.chamfer_scores(qt, qoff, codes, doff, cand, 2, isa)
    dec = codec.decode(codes)
    want = np.array([[chamfer_reference(qt[qoff[i]:qoff[i + 1]], dec[doff[j]:doff[j + 1]]) for j in range(n)]
                     for i in range(len(QUERIES))])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)  # float32 sums in another order
    # bit for bit: the same kernel over a float32 store holding the decoded tokens
    np.testing.assert_array_equal(got, _core.chamfer_scores(qt, qoff, dec, doff, cand, 2, isa))


@pytest.mark.parametrize("codec", ["float16", "float32", "int8", "residual:2", "residual:4:k=32"])
def test_index_over_each_codec_round_trips(tmp_path, codec):
    cfg = FDEConfig.preset("1280", dimension=D)
    idx = MuveraIndex(cfg, token_codec=codec)
    idx.add(DOCS, ids=[f"d{i}" for i in range(len(DOCS))])
    idx.remove(["d3", "d4"])
    before = idx.search(QUERIES, k=5, candidates=30)
    idx.save(tmp_path / "i")
    for mmap in (True, False):
        loaded = MuveraIndex.load(tmp_path / "i", mmap=mmap)
        assert loaded.store.codec.name == codec
        after = loaded.search(QUERIES, k=5, candidates=30)
        np.testing.assert_array_equal(before[0], after[0])
        np.testing.assert_array_equal(before[1], after[1])
    idx.compact()  # rebuild from the stored codes: the same FDEs, the same results
    np.testing.assert_array_equal(idx.search(QUERIES, k=5, candidates=30)[1], before[1])
    tokens = idx.get_tokens("d7")
    assert tokens.shape == DOCS[7].shape
    if codec.startswith("residual"):  # a lossy code: get_tokens is the codec's decoding
        row = int(idx.id_map.rows_of(["d7"])[0])
        np.testing.assert_array_equal(tokens, idx.store.codec.decode(idx.store.get(row)))
    else:
        assert np.abs(tokens.astype(np.float32) - DOCS[7]).max() < 0.05


def test_int8_index_equals_float32_index_over_decoded_tokens():
    cfg = FDEConfig.preset("1280", dimension=D)
    a = MuveraIndex(cfg, token_codec="int8")
    a.add(DOCS)
    codec = a.store.codec
    b = MuveraIndex(cfg, token_codec="float32")
    b.add([codec.decode(codec.encode(d)) for d in DOCS])
    ra, rb = a.search(QUERIES, k=5, candidates=40), b.search(QUERIES, k=5, candidates=40)
    np.testing.assert_array_equal(ra[0], rb[0])
    np.testing.assert_array_equal(ra[1], rb[1])
    assert a.store.nbytes < b.store.nbytes / 3  # (d + 4) bytes per token against 4d


def test_codec_errors():
    with pytest.raises(ValueError, match="token_codec"):
        make_codec("int8:7", D)  # takes no options
    with pytest.raises(ValueError, match="token_codec"):
        MuveraIndex(FDEConfig.preset("1280", dimension=D), token_codec="residual:3")
    with pytest.raises(TypeError, match="doc_tokens"):
        _core.chamfer_scores(*_pack(QUERIES), np.zeros((4, D + 4), np.int8), np.array([0, 4]), None, 1, "")


def test_exact_tier_rescore_gives_float16_chamfer(tmp_path):
    cfg = FDEConfig.preset("1280", dimension=D)
    idx = MuveraIndex(cfg, token_codec="int8", keep_exact=True)
    idx.add(DOCS)
    ref = MuveraIndex(cfg, token_codec="float16")  # the same tokens, stored exactly in float16
    ref.add(DOCS)
    ids, scores = idx.search(QUERIES, k=5, candidates=60, rescore=15)
    for i, q in enumerate(QUERIES):
        want = muvera.chamfer_matrix([q], [DOCS[j].astype(np.float16) for j in ids[i]])[0]
        np.testing.assert_allclose(scores[i], want, rtol=1e-5)
    # Rescoring every candidate on every document: the float16 store's exact answer.
    full_ids, full_scores = idx.search(QUERIES, k=5, candidates=len(DOCS), rescore=len(DOCS))
    eids, escores = ref.search_exact(QUERIES, k=5)
    np.testing.assert_array_equal(full_ids, eids)
    np.testing.assert_array_equal(full_scores, escores)
    # Saved and loaded: the exact tier is memory-mapped even when the codes are read into RAM.
    idx.save(tmp_path / "i")
    loaded = MuveraIndex.load(tmp_path / "i", mmap=False)
    assert loaded.exact_tier.is_memory_mapped and not loaded.store.is_memory_mapped
    np.testing.assert_array_equal(loaded.search(QUERIES, k=5, candidates=60, rescore=15)[1], scores)
    loaded.remove([0, 1])
    loaded.compact()
    assert len(loaded.exact_tier) == len(loaded.store) == len(DOCS) - 2
    np.testing.assert_array_equal(loaded.exact_tier.get(0), DOCS[2].astype(np.float16))


def test_exact_tier_bad_input():
    cfg = FDEConfig.preset("1280", dimension=D)
    plain = MuveraIndex(cfg, token_codec="int8")
    plain.add(DOCS[:20])
    with pytest.raises(ValueError, match="rescore: needs an exact tier"):
        plain.search(QUERIES, k=5, rescore=10)
    with pytest.raises(ValueError, match="keep_exact"):
        MuveraIndex(cfg, token_codec="float16", keep_exact=True)
    with pytest.raises(TypeError, match="keep_exact"):
        MuveraIndex(cfg, token_codec="int8", keep_exact="yes")
    idx = MuveraIndex(cfg, token_codec="int8", keep_exact=True)
    idx.add(DOCS[:20])
    with pytest.raises(ValueError, match="rescore: expected >= k"):
        idx.search(QUERIES, k=5, rescore=3)
    with pytest.raises(ValueError, match="float16 range"):
        idx.add([np.full((2, D), 1e6, np.float32)])
    assert len(idx) == 20 and len(idx.exact_tier) == len(idx.store) == 20  # unchanged
