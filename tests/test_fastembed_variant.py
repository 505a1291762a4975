"""FDEConfig(variant="fastembed"): equal to fastembed's ``Muvera`` postprocessor, live.

Three layers are checked against each other:

* fastembed itself (``fastembed.postprocess.Muvera``, float64 output), when installed;
* ``muvera.reference_fastembed``, the NumPy oracle: bit for bit equal to fastembed (same NumPy
  operations on the same random draws);
* the C++ kernel behind ``FDEEncoder`` (``cpp/fde_fastembed.cc``), float32 output.

Tolerance (C++ vs fastembed or the oracle): ``|ours - theirs| <= 2**-23 * |theirs| + 1e-12 * max|theirs|``.
Both sides compute in float64 and differ only in summation order (fastembed: BLAS GEMMs; ours:
register-tiled sums), which moves a value by about ``d * 2**-53`` of the sum of the magnitudes of
its terms; ours is then rounded to float32 once (at most half a float32 ulp, ``2**-24``
relative). ``2**-23`` relative is one float32 ulp, i.e. "equal to float32 rounding"; the absolute
term only matters for values that cancel to near zero. Partition ids are compared exactly (a wrong
id would move whole blocks, far outside the tolerance).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import muvera
from muvera import FDEConfig, FDEEncoder, MuveraIndex
from muvera import reference_fastembed as rf

try:  # the live comparison needs fastembed (the `fastembed` and `test` extras install it)
    from fastembed.postprocess import Muvera
except ImportError:  # pragma: no cover - exercised only without the extra
    Muvera = None

live = pytest.mark.skipif(Muvera is None, reason="fastembed is not installed (pip install 'muvera-toolkit[fastembed]')")

ISAS = muvera.supported_isas()

# (dim, k_sim, dim_proj, r_reps, random_seed): fastembed's default, its test's small one, no
# SimHash (one partition), no projection (dim_proj == dim), odd sizes, many partitions for few
# tokens (most partitions filled), a large seed.
CONFIGS = [
    (128, 5, 16, 20, 42),
    (4, 2, 2, 3, 42),
    (32, 0, 8, 3, 1),
    (24, 3, 24, 4, 5),
    (7, 4, 3, 5, 2**31 - 1),
    (48, 8, 5, 2, 0),
    (96, 6, 32, 7, 1234),
]
LENGTHS = [1, 2, 3, 17, 180, 301]


def _tokens(n, d, seed, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype(dtype)


def assert_fastembed_close(ours, theirs):
    ours = np.asarray(ours)
    theirs = np.asarray(theirs, dtype=np.float64)
    assert ours.dtype == np.float32 and ours.shape == theirs.shape
    scale = float(np.abs(theirs).max()) if theirs.size else 0.0
    err = np.abs(ours.astype(np.float64) - theirs)
    bound = 2.0**-23 * np.abs(theirs) + 1e-12 * scale
    worst = int(np.argmax(err - bound)) if err.size else 0
    assert (err <= bound).all(), (f"max excess at {worst}: ours {ours.ravel()[worst]!r}, fastembed "
                                  f"{theirs.ravel()[worst]!r}")


def _config(dim, k, p, r, seed, fill=True):
    return FDEConfig.from_fastembed(dim=dim, k_sim=k, dim_proj=p, r_reps=r, random_seed=seed,
                                    fill_empty_partitions=fill)


# -- the oracle against fastembed, bit for bit ----------------------------------------------------
@live
@pytest.mark.parametrize("cfg", CONFIGS)
def test_oracle_draws_and_encodings_equal_fastembed_bitwise(cfg):
    dim, k, p, r, seed = cfg
    m = Muvera(dim=dim, k_sim=k, dim_proj=p, r_reps=r, random_seed=seed)
    simhash, projection = rf.fastembed_matrices(dim, r, k, p, seed)
    for i, sh in enumerate(m.simhash_projections):
        np.testing.assert_array_equal(simhash[i], sh.simhash_vectors)
    if p < dim:
        np.testing.assert_array_equal(projection, m.dim_reduction_projections)
    else:
        assert projection is None
    for n in (1, 5, 40):
        for dtype in (np.float32, np.float64):
            x = _tokens(n, dim, n, dtype)
            np.testing.assert_array_equal(rf.encode_document(x, simhash, projection), m.process_document(x))
            np.testing.assert_array_equal(rf.encode_query(x, simhash, projection), m.process_query(x))
            np.testing.assert_array_equal(
                rf.encode_document(x, simhash, projection, fill_empty_partitions=False),
                m.process(x, fill_empty_clusters=False, normalize_by_count=True))


# -- the encoder against fastembed -----------------------------------------------------------------
@live
@pytest.mark.parametrize("cfg", CONFIGS)
def test_encoder_equals_fastembed(cfg):
    dim, k, p, r, seed = cfg
    config = _config(*cfg)
    assert config.fastembed_params == {"dim": dim, "k_sim": k, "dim_proj": p, "r_reps": r, "random_seed": seed}
    m = Muvera(**config.fastembed_params)
    assert config.output_dimension == m.embedding_size
    enc = FDEEncoder(config)
    items = [_tokens(n, dim, 100 + n) for n in LENGTHS]
    docs, queries = enc.encode_documents(items), enc.encode_queries(items)
    for i, x in enumerate(items):
        assert_fastembed_close(docs[i], m.process_document(x))
        assert_fastembed_close(queries[i], m.process_query(x))
        assert_fastembed_close(enc.encode_document(x), m.process_document(x))
        assert_fastembed_close(enc.encode_query(x), m.process_query(x))
    # Most values round to exactly fastembed's value in float32 (differences are rare ties).
    x = items[-2]
    assert np.mean(enc.encode_document(x) == m.process_document(x).astype(np.float32)) > 0.99


@live
def test_encoder_without_fill_equals_fastembed_process():
    config = _config(64, 6, 16, 5, 3, fill=False)
    m = Muvera(**config.fastembed_params)
    enc = FDEEncoder(config)
    for n in (1, 4, 9, 70):
        x = _tokens(n, 64, n)
        assert_fastembed_close(enc.encode_document(x), m.process(x, fill_empty_clusters=False,
                                                                 normalize_by_count=True))


@live
@pytest.mark.parametrize("dtype", [np.float64, np.float16])
def test_other_input_dtypes_equal_fastembed(dtype):
    config = _config(128, 5, 16, 20, 42)
    m = Muvera(**config.fastembed_params)
    enc = FDEEncoder(config)
    items = [_tokens(n, 128, n, dtype) for n in (1, 31, 180)]
    out = enc.encode_documents(items)
    for i, x in enumerate(items):
        assert_fastembed_close(out[i], m.process_document(x))


@live
def test_empty_partition_fill_and_ties_equal_fastembed():
    # k = 7 (128 partitions) and few tokens: nearly every partition is filled, with many ties in
    # Hamming distance; duplicated and zero tokens (a zero dot product is not > 0).
    config = _config(16, 7, 4, 6, 11)
    m = Muvera(**config.fastembed_params)
    enc = FDEEncoder(config)
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 6):
        x = rng.standard_normal((n, 16)).astype(np.float32)
        x = np.concatenate([x, x[:1], np.zeros((1, 16), np.float32)])
        assert_fastembed_close(enc.encode_document(x), m.process_document(x))
        assert_fastembed_close(enc.encode_query(x), m.process_query(x))


@live
def test_signs_near_zero_take_the_float64_path():
    # Tokens nearly orthogonal to a SimHash column: the float32 pass cannot tell the sign of their
    # dot products, so they are redone in float64 and must still give fastembed's partitions.
    dim, k, r = 64, 4, 6
    config = _config(dim, k, 8, r, 5)
    m = Muvera(**config.fastembed_params)
    enc = FDEEncoder(config)
    simhash, _ = rf.matrices_for(config)
    rng = np.random.default_rng(1)
    rows = []
    for i in range(200):
        g = simhash[i % r][:, (i // r) % k]
        x = rng.standard_normal(dim)
        x -= (x @ g) / (g @ g) * g  # exact dot product ~1e-16 * |x||g| before rounding to float32
        rows.append(x)
    x = np.asarray(rows, dtype=np.float32)
    # The targeted dot products are ambiguous in float32: a float32 evaluation gets many signs wrong.
    exact = np.array([x[i].astype(np.float64) @ simhash[i % r][:, (i // r) % k] for i in range(200)])
    in_f32 = np.array([np.float32(np.dot(x[i], simhash[i % r][:, (i // r) % k].astype(np.float32)))
                       for i in range(200)])
    assert np.mean(np.sign(exact) != np.sign(in_f32)) > 0.1
    ids = [rf.partition_ids(x, simhash[i]) for i in range(r)]
    assert all(len(np.unique(i)) > 1 for i in ids)
    assert_fastembed_close(enc.encode_document(x), m.process_document(x))
    assert_fastembed_close(enc.encode_query(x), m.process_query(x))
    for i in range(0, 200, 7):
        assert_fastembed_close(enc.encode_query(x[i:i + 1]), m.process_query(x[i:i + 1]))


@live
def test_fastembed_canonical_values_live():
    # fastembed's own test (tests/test_postprocess.py): default_rng(42).random((10, 128)) float64.
    multivector = np.random.default_rng(42).random((10, 128))
    enc = FDEEncoder(FDEConfig.from_fastembed(dim=128, k_sim=5, dim_proj=16, r_reps=20, random_seed=42))
    m = Muvera(dim=128, k_sim=5, dim_proj=16, r_reps=20, random_seed=42)
    assert_fastembed_close(enc.encode_document(multivector), m.process_document(multivector))
    assert_fastembed_close(enc.encode_query(multivector), m.process_query(multivector))


# -- without fastembed: its published values, and the C++ kernel against the oracle -----------------
def test_fastembed_published_values():
    # The constants asserted by fastembed's tests/test_postprocess.py (np.allclose there).
    canonical = [-2.61810007e-04, 1.89005750e00, -2.32070747e00]
    canonical_query = [-0.85783903, 1.1077204, -0.09522747]
    multivector = np.random.default_rng(42).random((10, 128))
    enc = FDEEncoder(FDEConfig.from_fastembed(dim=128))
    doc, query = enc.encode_document(multivector), enc.encode_query(multivector)
    assert doc.shape == (10240,) and query.shape == (10240,)
    np.testing.assert_allclose(doc[:3], canonical, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(query[np.nonzero(query)][:3], canonical_query, rtol=1e-6)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("cfg", CONFIGS)
def test_kernel_equals_oracle(cfg, isa):
    config = _config(*cfg)
    simhash, projection = rf.matrices_for(config)
    items = [_tokens(n, config.dimension, 7 * n) for n in LENGTHS]
    for threads in (1, 2):
        enc = FDEEncoder(config, num_threads=threads, isa=isa)
        docs, queries = enc.encode_documents(items), enc.encode_queries(items)
        for i, x in enumerate(items):
            assert_fastembed_close(docs[i], rf.encode_document(x, simhash, projection))
            assert_fastembed_close(queries[i], rf.encode_query(x, simhash, projection))


@settings(max_examples=8 if os.environ.get("MUVERA_ASAN") else 40, deadline=None)
@given(dim=st.integers(1, 70), k=st.integers(0, 8), r=st.integers(1, 4), seed=st.integers(0, 2**31 - 1),
       data=st.data())
def test_kernel_equals_oracle_random_configs(dim, k, r, seed, data):
    p = data.draw(st.integers(1, dim), label="dim_proj")
    fill = data.draw(st.booleans(), label="fill")
    lengths = data.draw(st.lists(st.integers(0, 40), min_size=1, max_size=5), label="lengths")
    isa = data.draw(st.sampled_from(ISAS), label="isa")
    dtype = data.draw(st.sampled_from([np.float32, np.float64]), label="dtype")
    config = _config(dim, k, p, r, seed, fill=fill)
    simhash, projection = rf.matrices_for(config)
    items = [_tokens(n, dim, seed % 1000 + n, dtype) for n in lengths]
    enc = FDEEncoder(config, num_threads=2, isa=isa)
    docs, queries = enc.encode_documents(items), enc.encode_queries(items)
    for i, x in enumerate(items):
        assert_fastembed_close(docs[i], rf.encode_document(x, simhash, projection, fill_empty_partitions=fill))
        assert_fastembed_close(queries[i], rf.encode_query(x, simhash, projection))


@pytest.mark.parametrize("isa", ISAS)
def test_isas_and_threads_agree(isa):
    config = _config(128, 5, 16, 20, 42)
    items = [_tokens(n, 128, n) for n in range(1, 60, 3)]
    one = FDEEncoder(config, num_threads=1, isa=isa).encode_documents(items)
    many = FDEEncoder(config, num_threads=3, isa=isa).encode_documents(items)
    np.testing.assert_array_equal(one, many)
    base = FDEEncoder(config, num_threads=1, isa="generic").encode_documents(items)
    assert_fastembed_close(one, base.astype(np.float64))


def test_batch_forms_and_dtypes_agree():
    config = _config(32, 4, 8, 6, 9)
    enc = FDEEncoder(config)
    simhash, projection = rf.matrices_for(config)
    lengths = [3, 0, 11, 1, 25]
    items = [_tokens(n, 32, n) for n in lengths]
    as_list = enc.encode_documents(items)
    packed = np.concatenate(items)
    np.testing.assert_array_equal(enc.encode_documents(packed, lengths=lengths), as_list)
    np.testing.assert_array_equal(enc.encode_documents(packed, offsets=np.cumsum([0] + lengths)), as_list)
    padded = np.zeros((len(items), 25, 32), np.float32)
    mask = np.zeros((len(items), 25), bool)
    for i, x in enumerate(items):
        padded[i, :len(x)], mask[i, :len(x)] = x, True
    np.testing.assert_array_equal(enc.encode_documents(padded, mask=mask), as_list)
    starts = np.cumsum([0] + lengths)[:-1]
    np.testing.assert_array_equal(enc.encode_spans(packed, starts, lengths, is_document=True), as_list)
    # An empty item encodes to zeros (fastembed raises there).
    assert not as_list[1].any()
    # float16 and bfloat16 tokens are read exactly (as their float32 values).
    half = [x.astype(np.float16) for x in items]
    out16 = enc.encode_documents(half)
    for i, x in enumerate(half):
        assert_fastembed_close(out16[i], rf.encode_document(x.astype(np.float32), simhash, projection))
    torch = pytest.importorskip("torch")
    bf = [torch.from_numpy(x).to(torch.bfloat16) for x in items]
    outbf = enc.encode_documents(bf)
    for i, t in enumerate(bf):
        assert_fastembed_close(outbf[i], rf.encode_document(t.float().numpy(), simhash, projection))


# -- configuration ---------------------------------------------------------------------------------
def test_config_mapping_and_round_trip():
    c = FDEConfig.from_fastembed(dim=128)
    assert (c.variant, c.num_repetitions, c.num_simhash_projections, c.projection_dimension, c.seed,
            c.fill_empty_partitions) == ("fastembed", 20, 5, 16, 42, True)
    assert c.output_dimension == 10240
    assert FDEConfig.from_dict(c.to_dict()) == c and c.to_dict()["variant"] == "fastembed"
    same = FDEConfig(dimension=128, num_repetitions=20, num_simhash_projections=5, seed=42,
                     projection_type="ams_sketch", projection_dimension=16, fill_empty_partitions=True,
                     variant="FastEmbed")
    assert same == c
    ident = FDEConfig.from_fastembed(dim=24, k_sim=3, dim_proj=24)
    assert ident.projection_type == "identity" and ident.fastembed_params["dim_proj"] == 24
    # dim_proj == dim given as a projection: fastembed applies none, neither do we.
    explicit = FDEConfig(dimension=24, num_repetitions=20, num_simhash_projections=3, seed=42,
                         projection_type="ams_sketch", projection_dimension=24, fill_empty_partitions=True,
                         variant="fastembed")
    x = _tokens(9, 24, 0)
    np.testing.assert_array_equal(FDEEncoder(explicit).encode_document(x), FDEEncoder(ident).encode_document(x))


def test_reference_configs_serialise_as_before():
    # No `variant` key for the reference variant: manifests stay readable by older versions, and
    # old manifests (no key) read back as "reference".
    c = FDEConfig.preset("10240", dimension=128)
    assert "variant" not in c.to_dict() and c.variant == "reference"
    legacy = {k: v for k, v in c.to_dict().items()}
    assert FDEConfig.from_dict(legacy) == c


@pytest.mark.parametrize("kwargs, match", [
    (dict(final_projection_dimension=64), "final_projection_dimension"),
    (dict(seed=-1), "seed"),
    (dict(projection_type="ams_sketch", projection_dimension=33), "projection_dimension"),
    (dict(variant="colbert"), "variant"),
])
def test_config_rejects_what_fastembed_lacks(kwargs, match):
    base = dict(dimension=32, num_repetitions=2, num_simhash_projections=3, variant="fastembed")
    base.update(kwargs)
    with pytest.raises(ValueError, match=match):
        FDEConfig(**base)


def test_config_errors():
    with pytest.raises(TypeError, match="variant"):
        FDEConfig(dimension=8, variant=1)
    with pytest.raises(ValueError, match="fastembed_params"):
        FDEConfig(dimension=8).fastembed_params
    with pytest.raises(ValueError, match="dim_proj"):
        FDEConfig.from_fastembed(dim=8, dim_proj=0)
    with pytest.raises(ValueError, match="projection_dimension"):
        FDEConfig.from_fastembed(dim=8, dim_proj=9)
    with pytest.raises(ValueError, match="seed"):
        FDEConfig.from_fastembed(dim=8, random_seed=-5)


# -- bad input -------------------------------------------------------------------------------------
def test_bad_tokens():
    enc = FDEEncoder(_config(16, 3, 4, 2, 1))
    good = _tokens(4, 16, 0)
    with pytest.raises(ValueError, match="columns"):
        enc.encode_document(_tokens(4, 15, 0))
    bad = good.copy()
    bad[2, 3] = np.nan
    with pytest.raises(ValueError, match=r"documents\[1\] contains NaN or Inf"):
        enc.encode_documents([good, bad])
    bad[2, 3] = np.inf
    with pytest.raises(ValueError, match="query contains NaN or Inf"):
        enc.encode_query(bad)
    with pytest.raises(ValueError, match="overflows float32"):  # finite float64 whose FDE is not
        enc.encode_query(np.full((3, 16), 1e300))
    with pytest.raises(TypeError):
        enc.encode_document(np.zeros((3, 16), dtype=np.int8).astype(object))


def test_core_checks_its_arguments():
    core = muvera._core.FastembedEncoder
    simhash, projection = rf.fastembed_matrices(8, 2, 3, 4, 0)
    proj = projection.astype(np.float64)
    with pytest.raises(ValueError, match="simhash"):
        core(simhash[0], proj, True)
    with pytest.raises(ValueError, match="projection"):
        core(simhash, proj[:1], True)
    with pytest.raises(ValueError, match="projection"):
        core(simhash, np.ones((2, 8, 9)), True)
    bad = simhash.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        core(bad, proj, True)
    enc = core(simhash, proj, True)
    assert enc.output_dimension == 2 * 8 * 4
    tokens = _tokens(10, 8, 0)
    with pytest.raises(ValueError, match="outside"):
        enc.encode_packed(tokens, np.array([0, 8]), np.array([5, 5]), True)
    with pytest.raises(ValueError, match="outside"):
        enc.encode_packed(tokens, np.array([-1]), np.array([2]), True)
    with pytest.raises(ValueError, match="equal length"):
        enc.encode_packed(tokens, np.array([0, 1]), np.array([2]), True)
    with pytest.raises(ValueError, match="columns"):
        enc.encode_packed(_tokens(10, 7, 0), np.array([0]), np.array([2]), True)
    with pytest.raises(TypeError, match="NumPy array"):
        enc.encode_list([tokens, [[1.0] * 8]], True)
    with pytest.raises(ValueError, match="isa"):
        enc.encode_list([tokens], True, 1, "sse9")
    out = enc.encode_packed(tokens, np.array([0, 3]), np.array([3, 7]), False)
    np.testing.assert_array_equal(out[1], enc.encode_list([tokens[3:]], False)[0])


# -- the index: add, save, load ----------------------------------------------------------------------
def test_index_round_trip_keeps_the_variant(tmp_path):
    config = _config(16, 4, 8, 6, 3)
    rng = np.random.default_rng(0)
    docs = [rng.standard_normal((n, 16)).astype(np.float32) for n in rng.integers(1, 30, size=40)]
    queries = [d[:3] + 0.01 for d in docs[:5]]
    idx = MuveraIndex(config)
    idx.add(docs, ids=[f"d{i}" for i in range(len(docs))])
    idx.save(tmp_path / "idx")
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["config"]["variant"] == "fastembed"
    loaded = MuveraIndex.load(tmp_path / "idx")
    assert loaded.config == config and loaded.config.variant == "fastembed"
    np.testing.assert_array_equal(loaded.encoder.encode_queries(queries), idx.encoder.encode_queries(queries))
    np.testing.assert_array_equal(loaded.encoder.encode_documents(docs), idx.encoder.encode_documents(docs))
    a, b = idx.search(queries, k=5, candidates=20), loaded.search(queries, k=5, candidates=20)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[0][0, 0] == "d0"
    # The stored FDEs are fastembed's documents of the stored (float16) tokens.
    stored = loaded.backend.reconstruct(np.arange(len(docs)))
    simhash, projection = rf.matrices_for(config)
    for i in (0, 7, 39):
        tokens16 = docs[i].astype(np.float16).astype(np.float32)
        assert_fastembed_close(stored[i], rf.encode_document(tokens16, simhash, projection))


def test_old_manifests_load_as_reference():
    from pathlib import Path

    fixture = Path(__file__).parent / "fixtures" / "v1_int"
    assert "variant" not in json.loads((fixture / "manifest.json").read_text())["config"]
    assert MuveraIndex.load(fixture).config.variant == "reference"


# -- fastembed + Qdrant: switching the ingest without re-indexing --------------------------------------
@live
def test_qdrant_collection_from_fastembed_is_served_by_the_variant():
    qdrant_client = pytest.importorskip("qdrant_client")
    models = qdrant_client.models
    config = FDEConfig.from_fastembed(dim=32, k_sim=4, dim_proj=8, r_reps=10, random_seed=7)
    m, enc = Muvera(**config.fastembed_params), FDEEncoder(config)
    rng = np.random.default_rng(3)
    docs = [rng.standard_normal((n, 32)).astype(np.float32) for n in rng.integers(5, 60, size=50)]
    queries = [rng.standard_normal((8, 32)).astype(np.float32) for _ in range(4)]
    client = qdrant_client.QdrantClient(":memory:")
    ingests = {"by_fastembed": [m.process_document(x) for x in docs], "by_muvera": enc.encode_documents(docs)}
    for name, fdes in ingests.items():
        client.create_collection(name, vectors_config={
            "fde": models.VectorParams(size=config.output_dimension, distance=models.Distance.DOT)})
        client.upsert(name, points=[models.PointStruct(id=i, vector={"fde": np.asarray(f).tolist()})
                                    for i, f in enumerate(fdes)])
    # What Qdrant stored (float32) from either ingest agrees to float32 rounding.
    a = client.retrieve("by_fastembed", ids=list(range(len(docs))), with_vectors=True)
    b = client.retrieve("by_muvera", ids=list(range(len(docs))), with_vectors=True)
    for pa, pb in zip(sorted(a, key=lambda p: p.id), sorted(b, key=lambda p: p.id)):
        assert_fastembed_close(np.asarray(pb.vector["fde"], np.float32), np.asarray(pa.vector["fde"], np.float64))

    def scores(collection, query_fde):
        hits = client.query_points(collection, query=np.asarray(query_fde).tolist(), using="fde",
                                   limit=len(docs)).points
        return {p.id: p.score for p in hits}

    for q in queries:
        reference = scores("by_fastembed", m.process_query(q))  # fastembed end to end
        scale = max(abs(s) for s in reference.values())
        for collection in ingests:  # our query FDEs, on either ingest
            ours = scores(collection, enc.encode_query(q))
            assert ours.keys() == reference.keys()
            assert all(abs(ours[i] - reference[i]) <= 1e-5 * scale for i in reference)
