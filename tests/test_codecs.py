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
@pytest.mark.parametrize("d", [D, 7, 64, 130])
def test_int8_rerank_kernel_matches_numpy_on_every_isa(isa, d):
    """Integer dot products (vpmaddubsw / VNNI / plain C++) equal the NumPy reference bit for
    bit, on dimensions that are and are not multiples of four, query lengths across lane groups;
    and stay within the query's int8 rounding of float32 Chamfer over the decoded tokens."""
    from muvera.codecs.int8 import int8_chamfer_reference

    rng = np.random.default_rng(d)
    docs = [rng.standard_normal((n, d)).astype(np.float32) for n in (1, 2, 3, 4, 5, 9, 40)]
    queries = [rng.standard_normal((n, d)).astype(np.float32) for n in (1, 5, 16, 17, 33)]
    queries.append(np.zeros((3, d), np.float32))  # an all-zero query token: scale 0
    codec = make_codec("int8", d)
    dt, doff = _pack(docs)
    codes = codec.encode(dt)
    qt, qoff = _pack(queries)
    n = len(docs)
    cand = np.broadcast_to(np.arange(n, dtype=np.int64), (len(queries), n)).copy()
    got = _core.chamfer_scores(qt, qoff, codes, doff, cand, 2, isa, layout="int8")
    want = np.array([[int8_chamfer_reference(qt[qoff[i]:qoff[i + 1]], codes[doff[j]:doff[j + 1]], d)
                      for j in range(n)] for i in range(len(queries))], dtype=np.float32)
    np.testing.assert_array_equal(got, want)
    dec = codec.decode(codes)
    exact = np.array([[chamfer_reference(qt[qoff[i]:qoff[i + 1]], dec[doff[j]:doff[j + 1]]) for j in range(n)]
                      for i in range(len(queries))])
    scale = np.array([qoff[i + 1] - qoff[i] for i in range(len(queries))])[:, None] * np.sqrt(d)
    assert np.abs(got - exact).max() <= 0.01 * scale.max()


def test_int8_extreme_codes_stay_exact():
    """Codes of +-127 against query weights of +-127 (the vpmaddubsw pair bound: 2 * 127 * 127
    fits int16), and a stored -128 (outside the codec's range) still scored exactly."""
    from muvera.codecs.int8 import int8_chamfer_reference

    d = 64
    codec = make_codec("int8", d)
    rows = codec.encode(np.sign(np.random.default_rng(0).standard_normal((6, d))).astype(np.float32))
    rows[0, :d] = np.full(d, -128, np.int8).view(np.uint8)
    q = np.where(np.arange(d) % 2 == 0, 1.0, -1.0).astype(np.float32)[None].repeat(3, axis=0)
    for isa in muvera.supported_isas():
        got = _core.chamfer_scores(q, np.array([0, 3]), rows, np.array([0, 6]), None, 1, isa, layout="int8")
        assert got[0, 0] == int8_chamfer_reference(q, rows, d), isa


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


def test_int8_index_ranks_like_a_float32_index_over_decoded_tokens():
    """The same FDEs (encoded from the decoded tokens), the rerank on integer dot products: the
    top results agree with float32 Chamfer over the decoded tokens up to the query's int8
    rounding, at under a third of the bytes."""
    cfg = FDEConfig.preset("1280", dimension=D)
    a = MuveraIndex(cfg, token_codec="int8")
    a.add(DOCS)
    codec = a.store.codec
    b = MuveraIndex(cfg, token_codec="float32")
    b.add([codec.decode(codec.encode(d)) for d in DOCS])
    ra, rb = a.search(QUERIES, k=5, candidates=40), b.search(QUERIES, k=5, candidates=40)
    np.testing.assert_array_equal(ra[0][:, 0], rb[0][:, 0])
    np.testing.assert_allclose(ra[1], rb[1], rtol=0.01, atol=0.05)
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
