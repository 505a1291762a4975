"""Residual token codes: layout round trips, the C++ rerank on the codes against the NumPy
reference on every ISA (bit for bit), training, two-tier rescore, persistence and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from muvera import FDEConfig, MuveraIndex, _core
from muvera.codecs import ResidualCodec, make_codec
from muvera.codecs.residual import pack_planes, plaid_num_centroids, train_num_centroids, unpack_planes

RNG = np.random.default_rng(11)


def _clustered(n_tokens: int, d: int, rng=RNG) -> np.ndarray:
    """Unit tokens around 40 directions: like real token clouds, unlike isotropic noise."""
    centres = rng.normal(size=(40, d))
    x = centres[rng.integers(0, 40, n_tokens)] + 0.35 * rng.normal(size=(n_tokens, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _docs(n_docs: int, d: int, lo: int = 3, hi: int = 40, rng=RNG):
    lens = rng.integers(lo, hi, size=n_docs)
    x = _clustered(int(lens.sum()), d, rng)
    return np.split(x, np.cumsum(lens)[:-1])


def _pack(items):
    off = np.zeros(len(items) + 1, np.int64)
    np.cumsum([len(x) for x in items], out=off[1:])
    return np.ascontiguousarray(np.concatenate(items), dtype=np.float32), off


@pytest.mark.parametrize("nbits", [1, 2, 4, 8])
@pytest.mark.parametrize("d", [5, 13, 16])
def test_bit_planes_round_trip(nbits, d):
    levels = RNG.integers(0, 1 << nbits, size=(37, d)).astype(np.uint8)
    plane = (d * nbits + 7) // 8
    packed = pack_planes(levels, nbits, plane)
    assert packed.shape == (37, plane)
    np.testing.assert_array_equal(unpack_planes(packed, nbits, d), levels)
    # byte j, bits k*nbits.. hold dimension k*P + j
    per = 8 // nbits
    for k in range(per):
        for j in range(plane):
            if k * plane + j < d:
                np.testing.assert_array_equal((packed[:, j] >> (k * nbits)) & ((1 << nbits) - 1),
                                              levels[:, k * plane + j])


def test_plaid_centroid_count():
    assert plaid_num_centroids(256) == 256
    assert plaid_num_centroids(1000) == 256          # 16 * sqrt(1000) = 506 -> 2^8
    assert plaid_num_centroids(1_240_000) == 16384   # SciFact-sized
    assert plaid_num_centroids(10**12) == 65536      # uint16 ids cap it
    # what training uses: PLAID's count, at most N / 16 (small samples keep points per centroid)
    assert train_num_centroids(3000) == 128 and train_num_centroids(1_240_000) == 16384


@pytest.mark.parametrize("nbits", [1, 2, 4, 8])
def test_round_trip_and_error_shrinks_with_bits(nbits):
    d = 24
    x = _clustered(3000, d)
    codec = make_codec(f"residual:{nbits}", d)
    assert isinstance(codec, ResidualCodec) and codec.needs_training
    codec.train(x)
    assert not codec.needs_training and codec.num_centroids == train_num_centroids(3000) == 128
    codes = codec.encode(x)
    assert codes.dtype == np.uint8 and codes.shape == (3000, 2 + (d * nbits + 7) // 8)
    cid, levels = codec.split(codes)
    assert cid.max() < codec.num_centroids and levels.max() < (1 << nbits)
    dec = codec.decode(codes)
    np.testing.assert_array_equal(dec, codec._centroids32[cid] + (codec.lo + codec.step * levels.astype(np.float32)))
    np.testing.assert_array_equal(codec.encode(x), codes)  # deterministic
    err = float(np.linalg.norm(dec - x, axis=1).mean())
    limit = {1: 0.35, 2: 0.2, 4: 0.06, 8: 0.01}[nbits]
    assert err < limit, err


@pytest.mark.parametrize("isa", _core.supported_isas())
# shapes: odd d, planes of >= 32 bytes (the SIMD unpack), int16 chunks crossed (4 bits, d > 32)
@pytest.mark.parametrize("nbits,d", [(1, 16), (2, 13), (2, 64), (4, 7), (4, 32), (8, 12), (2, 128), (4, 128),
                                     (8, 40), (2, 130), (1, 256), (4, 72)])
def test_rerank_kernel_equals_numpy_reference_bit_for_bit(isa, nbits, d):
    docs = _docs(60, d)
    x, off = _pack(docs)
    codec = make_codec(f"residual:{nbits}:k=64", d)
    codec.train(x)
    codes = codec.encode(x)
    # query lengths across the 8/16-lane groups (AVX-512 takes 256-bit vectors up to 8 tokens),
    # including a single token and > 16 tokens
    queries = [RNG.normal(size=(n, d)).astype(np.float32) for n in (1, 7, 8, 9, 16, 17, 33)]
    qtok, qoff = _pack(queries)
    got = _core.residual_scores(qtok, qoff, codes, off, None, codec.centroids, codec.lo, codec.step, nbits, 2, isa)
    ref = np.array([[codec.reference_chamfer(q, codes[off[j]:off[j + 1]]) for j in range(len(docs))]
                    for q in queries], dtype=np.float32)
    np.testing.assert_array_equal(got, ref)
    # and it approximates float Chamfer over the decoded tokens (the int8 query rounding only)
    dec = codec.decode(codes)
    exact = np.array([[(q @ dec[off[j]:off[j + 1]].T).max(axis=1).sum() for j in range(len(docs))]
                      for q in queries], dtype=np.float32)
    scale = np.abs(exact).max()
    assert np.abs(got - exact).max() <= 0.02 * scale


def _trained_residual2(n_docs, k, query_lengths, d=16):
    """A trained residual:2 codec's codes over random documents, two packed queries, and the
    codec's tables as the binding takes them."""
    x, off = _pack(_docs(n_docs, d))
    codec = make_codec(f"residual:2:k={k}", d)
    codec.train(x)
    q, qoff = _pack([RNG.normal(size=(n, d)).astype(np.float32) for n in query_lengths])
    return codec.encode(x), off, q, qoff, (codec.centroids, codec.lo, codec.step, 2)


@pytest.mark.parametrize("isa", _core.supported_isas())
def test_topk_candidates_and_flags(isa):
    codes, off, q, qoff, args = _trained_residual2(80, 32, (5, 20))
    full = _core.residual_scores(q, qoff, codes, off, None, *args, 1, isa)
    cand = np.array([RNG.permutation(80)[:30] for _ in range(2)], dtype=np.int64)
    cand[0, 3] = -1
    alive = np.ones(80, np.uint8)
    alive[cand[1, :5]] = 0
    rows, scores = _core.residual_topk(q, qoff, codes, off, cand, alive, *args, 10, 2, isa)
    for i in range(2):
        ok = [r for r in cand[i] if r >= 0 and alive[r]]
        want = sorted(ok, key=lambda r: (-full[i, r], r))[:10]
        assert rows[i].tolist() == want
        np.testing.assert_array_equal(scores[i], full[i, want])


def test_corrupt_centroid_ids_raise_instead_of_reading_out_of_bounds():
    d = 8
    x = _clustered(600, d)
    codec = make_codec("residual:2:k=16", d)
    codec.train(x)
    codes = codec.encode(x)
    codes[5, :2] = [0xFF, 0xFF]  # id 65535 >= 16
    off = np.array([0, 300, 600], np.int64)
    q = np.ones((3, d), np.float32)
    with pytest.raises(ValueError, match="centroid id"):
        _core.residual_scores(q, np.array([0, 3], np.int64), codes, off, None, codec.centroids, codec.lo,
                              codec.step, 2, 1, "")
    with pytest.raises(ValueError, match="codes"):
        _core.residual_scores(q, np.array([0, 3], np.int64), codes[:, :-1], off, None, codec.centroids,
                              codec.lo, codec.step, 2, 1, "")
    with pytest.raises(TypeError, match="float16"):
        _core.residual_scores(q, np.array([0, 3], np.int64), codes, off, None, codec._centroids32,
                              codec.lo, codec.step, 2, 1, "")


@pytest.mark.parametrize("spec", ["residual:2", "residual:4"])
def test_index_two_tiers_rescore_equals_exact_float16(tmp_path, spec):
    d = 16
    docs = _docs(150, d)
    config = FDEConfig.preset("1280", dimension=d)
    index = MuveraIndex(config, token_codec=spec, keep_exact=True)
    index.add(docs)
    assert index.store.codec.name == spec and index.store.codec.num_centroids > 0
    ref = MuveraIndex(config)  # float16 tokens: what the exact tier holds
    ref.add(docs)
    queries = [RNG.normal(size=(6, d)).astype(np.float32) for _ in range(6)]
    # candidates cover every document: the rescore of the best 40 on the codes must find the
    # float16 index's exact top 5 and return its scores exactly
    ids, scores = index.search(queries, k=5, candidates=150, rescore=40)
    want_ids, want_scores = ref.search_exact(queries, k=5)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(scores, want_scores)
    # without rescore: the scores are the codes' own rerank scores
    ids2, scores2 = index.search(queries, k=5, candidates=150)
    codec = index.store.codec
    for qi, q in enumerate(queries):
        for rank, doc in enumerate(ids2[qi]):
            row = index.id_map.rows_of([int(doc)])[0]
            assert scores2[qi, rank] == np.float32(codec.reference_chamfer(q, index.store.get(int(row))))
    # persistence: codes + tables saved; the exact tier memory-mapped on load
    index.save(tmp_path / "ix")
    manifest = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    assert "codec_centroids.npy" in json.dumps(manifest) and spec in json.dumps(manifest)
    loaded = MuveraIndex.load(tmp_path / "ix")
    assert loaded.store.codec.name == spec and loaded.exact_tier.is_memory_mapped
    for kwargs in ({}, {"rescore": 40}):
        a = index.search(queries, k=5, candidates=150, **kwargs)
        b = loaded.search(queries, k=5, candidates=150, **kwargs)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    # later adds encode with the trained tables (no re-clustering)
    before = loaded.store.codec.centroids.copy()
    loaded.add(_docs(5, d))
    np.testing.assert_array_equal(loaded.store.codec.centroids, before)
    assert len(loaded) == 155


def test_explicit_train_then_small_adds():
    d = 12
    config = FDEConfig.preset("1280", dimension=d)
    index = MuveraIndex(config, token_codec="residual:4")
    with pytest.raises(ValueError, match="at least 512 tokens"):
        index.add([_clustered(10, d)])  # a small first add cannot train
    assert len(index) == 0 and index.store.codec.needs_training  # unchanged
    index.train(_docs(40, d))
    centroids = index.store.codec.centroids.copy()
    index.add([_clustered(3, d)])
    index.add([_clustered(4, d)])
    np.testing.assert_array_equal(index.store.codec.centroids, centroids)
    with pytest.raises(ValueError, match="trained already"):
        index.train(_docs(40, d))
    with pytest.raises(ValueError, match="needs no training|trained already"):
        MuveraIndex(config).train(_docs(40, d))


def test_failed_first_add_leaves_the_codec_untrained():
    d = 12
    config = FDEConfig.preset("1280", dimension=d)
    index = MuveraIndex(config, backend="IVF4,Flat", token_codec="residual:2")
    with pytest.raises(ValueError):
        index.add(_docs(3, d, lo=200, hi=201))  # trains the codec, then the IVF cannot train on 3 FDEs
    assert len(index) == 0 and index.store.codec.needs_training


def test_failure_inside_training_leaves_the_codec_untrained(monkeypatch):
    import muvera.codecs.residual as residual

    d = 12
    index = MuveraIndex(FDEConfig.preset("1280", dimension=d), token_codec="residual:2")
    docs = _docs(60, d)

    def boom(*args, **kwargs):
        raise MemoryError("simulated")

    monkeypatch.setattr(residual, "fit_levels", boom)
    with pytest.raises(MemoryError):
        index.add(docs)
    assert len(index) == 0 and index.store.codec.needs_training and index.store.codec.lo is None
    with pytest.raises(MemoryError):
        index.train(docs)
    assert index.store.codec.needs_training
    monkeypatch.undo()
    index.add(docs)  # works afterwards
    assert len(index) == 60


def test_extreme_levels_and_queries_stay_exact():
    """Every level at its maximum and queries at the int8 limit in every dimension: the int16
    sums of vpmaddubsw are at their bound and must not saturate."""
    for nbits, d in ((1, 256), (2, 128), (4, 128), (8, 64)):
        x = _clustered(2000, d)
        codec = make_codec(f"residual:{nbits}:k=16", d)
        codec.train(x)
        codes = codec.encode(x[:40])
        codes[:, 2:] = 0xFF  # every level = 2**nbits - 1
        off = np.array([0, 40], np.int64)
        q = np.where(np.arange(d) % 2 == 0, 1.0, -1.0).astype(np.float32)[None, :] / codec.step
        q = np.concatenate([q, -q, q * 1e-3]).astype(np.float32)
        qoff = np.array([0, 3], np.int64)
        for isa in _core.supported_isas():
            got = _core.residual_scores(q, qoff, codes, off, None, codec.centroids, codec.lo, codec.step, nbits, 1,
                                        isa)
            assert got[0, 0] == np.float32(codec.reference_chamfer(q, codes)), (nbits, d, isa)


def test_small_training_sample_warns(caplog):
    codec = make_codec("residual:2", 8)
    with caplog.at_level("WARNING", logger="muvera.codecs.residual"):
        codec.train(_clustered(600, 8))
    assert "training on only 600 tokens" in caplog.text
    assert codec.num_centroids == train_num_centroids(600) == 32


def test_bad_input():
    d = 8
    for spec in ("residual", "residual:3", "residual:16", "residual:2:k=0", "residual:2:k=70000",
                 "residual:2:q=4", "residual:x"):
        with pytest.raises(ValueError, match="token_codec"):
            make_codec(spec, d)
    config = FDEConfig.preset("1280", dimension=d)
    index = MuveraIndex(config, token_codec="residual:2")
    index.add(_docs(60, d))
    with pytest.raises(ValueError, match="keep_exact"):
        index.search([_clustered(3, d)], k=2, rescore=10)
    with pytest.raises(ValueError, match="already holds documents|trained already"):
        index.train(_docs(60, d))
    with pytest.raises(ValueError, match="num_centroids"):
        ResidualCodec(8, 2, 0)
    with pytest.raises(ValueError, match="num_centroids"):
        ResidualCodec(8, 2, 70000)


def test_codes_and_config_that_disagree_on_load(tmp_path):
    d = 8
    config = FDEConfig.preset("1280", dimension=d)
    index = MuveraIndex(config, token_codec="residual:2")
    index.add(_docs(60, d))
    index.save(tmp_path / "ix")
    from muvera.index_format import FORMAT_NAME, FORMAT_VERSION, read_manifest, write_manifest

    def edit(path, change):
        m = read_manifest(path, FORMAT_NAME, FORMAT_VERSION)
        m.pop("checksum", None)
        change(m)
        write_manifest(path, m)

    # a manifest saying 4 bits over 2-bit rows
    edit(tmp_path / "ix", lambda m: m["tokens"].update(token_codec="residual:4"))
    with pytest.raises(ValueError, match="tokens.npy|codec"):
        MuveraIndex.load(tmp_path / "ix")
    # codec_state that disagrees with the tables
    index.save(tmp_path / "ix2")
    edit(tmp_path / "ix2", lambda m: m["tokens"]["codec_state"].update(num_centroids=3))
    with pytest.raises(ValueError, match="codec_state"):
        MuveraIndex.load(tmp_path / "ix2")
    # a centroid id beyond the table in the saved codes (checksums updated: a deliberate edit)
    index.save(tmp_path / "ix3")
    from muvera.durable import write_npy

    tokens = np.load(tmp_path / "ix3" / "tokens.npy")
    tokens[3, :2] = [0xFF, 0xFF]
    entry = write_npy(tmp_path / "ix3" / "tokens.npy", tokens)
    edit(tmp_path / "ix3", lambda m: m["files"].update({"tokens.npy": entry}))
    with pytest.raises(ValueError, match="centroid id"):
        MuveraIndex.load(tmp_path / "ix3")


def test_empty_index_saves_and_loads_untrained(tmp_path):
    index = MuveraIndex(FDEConfig.preset("1280", dimension=8), token_codec="residual:2")
    index.save(tmp_path / "e")
    loaded = MuveraIndex.load(tmp_path / "e")
    assert loaded.store.codec.needs_training and len(loaded) == 0
    loaded.add(_docs(60, 8))
    assert len(loaded) == 60


def test_residual_without_faiss_says_what_to_install(monkeypatch):
    """An install that lost faiss gets an ImportError naming it, not a bare ModuleNotFoundError."""
    import sys

    from muvera.codecs.residual import _faiss

    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(ImportError, match="needs faiss-cpu"):
        _faiss()


@pytest.mark.parametrize("isa", _core.supported_isas())
def test_few_candidates_compute_only_their_centroids_rows_and_score_the_same(isa):
    """With candidates holding fewer tokens than 4 K, only the query x centroid rows their tokens
    use are computed; the scores equal the full table's bit for bit."""
    codes, off, q, qoff, args = _trained_residual2(300, 256, (7, 17))
    full = _core.residual_scores(q, qoff, codes, off, None, *args, 1, isa)  # every centroid's row
    cand = np.array([[5, 17, 200, -1], [9, 9 + 1, 250, 299]], dtype=np.int64)
    few = _core.residual_scores(q, qoff, codes, off, cand, *args, 2, isa)
    for i in range(2):
        for c, r in enumerate(cand[i]):
            if r >= 0:
                assert few[i, c] == full[i, r], (i, c, r)
            else:
                assert few[i, c] == -np.inf
