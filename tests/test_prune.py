"""The centroid-interaction prune (muvera.prune): bags kept in step with the residual codes, the
C++ bag scores against a NumPy reference on every ISA, the binding's checks, and the index using
it by default for residual codecs (and not otherwise)."""

from __future__ import annotations

import numpy as np
import pytest

import muvera
from muvera import FDEConfig, MuveraIndex, _core
from muvera.prune import DEFAULT_PRUNE_FACTOR, split_prune

RNG = np.random.default_rng(5)
ISAS = muvera.supported_isas()


def _clustered_docs(n_docs: int, d: int, rng, lo: int = 3, hi: int = 30):
    centres = rng.normal(size=(30, d))
    lens = rng.integers(lo, hi, size=n_docs)
    x = centres[rng.integers(0, 30, int(lens.sum()))] + 0.4 * rng.normal(size=(int(lens.sum()), d))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return np.split(x, np.cumsum(lens)[:-1])


def _bags_of(ids: np.ndarray, off: np.ndarray):
    return [np.unique(ids[off[j]:off[j + 1]]) for j in range(len(off) - 1)]


def _reference_prune(q, qoff, cent32, bags, cand, keep):
    """Bag scores in float64 and the kept rows, best first, ties to the lower row."""
    rows_out, scores_out = [], []
    for i in range(len(qoff) - 1):
        t = q[qoff[i]:qoff[i + 1]].astype(np.float64) @ cent32.T.astype(np.float64)
        score = {int(j): float(t[:, bags[j]].max(axis=1).sum()) for j in cand[i] if j >= 0}
        best = sorted(score, key=lambda j: (-score[j], j))[:keep]
        rows_out.append(best)
        scores_out.append([score[j] for j in best])
    return rows_out, scores_out


NBITS = 2


def _synthetic_bags(rng, K, d, n_docs):
    """Residual code rows (random ids and levels) of n_docs documents, and the codec tables."""
    cent = rng.standard_normal((K, d)).astype(np.float16)
    lens = rng.integers(1, 60, n_docs)
    off = np.r_[0, np.cumsum(lens)].astype(np.int64)
    ids = rng.integers(0, K, int(off[-1])).astype(np.uint16)
    plane = (d * NBITS + 7) // 8
    codes = rng.integers(0, 256, (int(off[-1]), 2 + plane)).astype(np.uint8)
    if (d * NBITS) % 8:  # bits past d stay zero, as the codec writes them
        codes[:, -1] &= (1 << ((d * NBITS) % 8)) - 1
    codes[:, :2] = ids.astype("<u2").view(np.uint8).reshape(-1, 2)
    return cent, off, ids, codes


def _tables(d):
    return np.zeros(d, np.float32), np.full(d, 0.05, np.float32)


def _prune(q, qoff, cent, codes, off, bid, boff, cand, keep, k=0, threads=1, isa=""):
    lo, step = _tables(q.shape[1])
    return _core.residual_prune_topk(q, qoff, codes, off, cand, bid, boff, cent, lo, step, NBITS, keep, k,
                                     threads, isa)


def test_bags_are_each_documents_distinct_ids_ascending():
    cent, off, ids, codes = _synthetic_bags(RNG, 300, 8, 120)
    bid, blen = _core.centroid_bags(codes, off, 0, 120, 300)
    boff = np.r_[0, np.cumsum(blen)]
    for j, ref in enumerate(_bags_of(ids, off)):
        np.testing.assert_array_equal(bid[boff[j]:boff[j + 1]], ref)
    # a range of documents gives that range's bags
    part, plen = _core.centroid_bags(codes, off, 40, 70, 300)
    np.testing.assert_array_equal(part, bid[boff[40]:boff[70]])
    np.testing.assert_array_equal(plen, blen[40:70])


def test_bags_refuse_ids_past_the_codebook_and_empty_documents():
    cent, off, ids, codes = _synthetic_bags(RNG, 300, 8, 20)
    with pytest.raises(ValueError, match="centroid id >= 200"):
        _core.centroid_bags(codes, off, 0, 20, 200)
    with pytest.raises(ValueError, match="has no tokens"):
        _core.centroid_bags(codes, np.r_[off[:3], off[2:]].astype(np.int64), 0, 20, 300)
    with pytest.raises(ValueError, match="begin, end"):
        _core.centroid_bags(codes, off, 5, 30, 300)


def _setup(rng, K, d, n_docs):
    cent, off, ids, codes = _synthetic_bags(rng, K, d, n_docs)
    bid, blen = _core.centroid_bags(codes, off, 0, n_docs, K)
    return cent, off, ids, codes, bid, np.r_[0, np.cumsum(blen)].astype(np.int64)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("d", [3, 40, 128])
def test_bag_scores_equal_numpy_on_every_isa(isa, d):
    rng = np.random.default_rng(d)
    K, n_docs = 500, 150
    cent, off, ids, codes, bid, boff = _setup(rng, K, d, n_docs)
    qlens = [1, 2, 5, 8, 9, 16, 17, 33]  # one and several table chunks of 8 and 16
    qoff = np.r_[0, np.cumsum(qlens)].astype(np.int64)
    q = rng.standard_normal((int(qoff[-1]), d)).astype(np.float32)
    cand = np.stack([rng.permutation(n_docs)[:90] for _ in qlens]).astype(np.int64)
    cand[:, -7:] = -1  # a coarse search's padding
    cand[1, :] = -1    # a query with no candidates at all
    bags = _bags_of(ids, off)
    ref_rows, ref_scores = _reference_prune(q, qoff, cent.astype(np.float32), bags, cand, 40)
    for threads in (1, 3):
        rows, scores = _prune(q, qoff, cent, codes, off, bid, boff, cand, 40, 0, threads, isa)
        assert rows.shape == scores.shape == (len(qlens), 40)
        for i in range(len(qlens)):
            n = len(ref_rows[i])
            assert rows[i, :n].tolist() == ref_rows[i]
            np.testing.assert_allclose(scores[i, :n], ref_scores[i], rtol=2e-5, atol=2e-5 * d)
            assert (rows[i, n:] == -1).all() and np.isneginf(scores[i, n:]).all()


@pytest.mark.parametrize("isa", ISAS)
def test_prune_then_rerank_equals_the_rerank_of_the_kept_rows(isa):
    """One table serves both stages: the scores are residual_topk's over the kept rows, bit for bit."""
    rng = np.random.default_rng(9)
    d = 24
    cent, off, ids, codes, bid, boff = _setup(rng, 200, d, 120)
    qlens = [3, 12, 20]
    qoff = np.r_[0, np.cumsum(qlens)].astype(np.int64)
    q = rng.standard_normal((int(qoff[-1]), d)).astype(np.float32)
    cand = np.stack([rng.permutation(120)[:80] for _ in qlens]).astype(np.int64)
    kept, _ = _prune(q, qoff, cent, codes, off, bid, boff, cand, 30, 0, 1, isa)
    rows, scores = _prune(q, qoff, cent, codes, off, bid, boff, cand, 30, 10, 2, isa)
    lo, step = _tables(d)
    ref_rows, ref_scores = _core.residual_topk(q, qoff, codes, off, kept, None, cent, lo, step, NBITS, 10, 1, isa)
    np.testing.assert_array_equal(rows, ref_rows)
    np.testing.assert_array_equal(scores, ref_scores)


def test_keep_beyond_the_candidates_keeps_them_all_sorted():
    cent, off, ids, codes, bid, boff = _setup(RNG, 64, 16, 30)
    q = RNG.standard_normal((4, 16)).astype(np.float32)
    cand = np.array([[3, 7, 11, -1, 29]], np.int64)
    rows, scores = _prune(q, np.array([0, 4], np.int64), cent, codes, off, bid, boff, cand, 10)
    assert sorted(rows[0, :4].tolist()) == [3, 7, 11, 29] and (rows[0, 4:] == -1).all()
    assert (np.diff(scores[0, :4]) <= 0).all()


def test_prune_binding_checks_its_arguments():
    cent, off, ids, codes, bid, boff = _setup(RNG, 64, 16, 30)
    q = RNG.standard_normal((4, 16)).astype(np.float32)
    qoff = np.array([0, 4], np.int64)
    ok = np.array([[1, 2, 3]], np.int64)
    with pytest.raises(ValueError, match="not a document row"):
        _prune(q, qoff, cent, codes, off, bid, boff, np.array([[1, 30]], np.int64), 2)
    with pytest.raises(ValueError, match="keep"):
        _prune(q, qoff, cent, codes, off, bid, boff, ok, 0)
    with pytest.raises(ValueError, match="k: expected"):
        _prune(q, qoff, cent, codes, off, bid, boff, ok, 2, 3)
    with pytest.raises(ValueError, match="columns|values each"):
        _prune(q[:, :8], qoff, cent, codes, off, bid, boff, ok, 2)
    with pytest.raises(TypeError, match="float16"):
        _prune(q, qoff, cent.astype(np.float32), codes, off, bid, boff, ok, 2)
    bad_off = boff.copy()
    bad_off[3] = bad_off[2]  # document 2's bag empty
    with pytest.raises(ValueError, match="bag of document 2"):
        _prune(q, qoff, cent, codes, off, bid, bad_off, ok, 2)
    with pytest.raises(ValueError, match="bag_offsets: expected one offset per document"):
        _prune(q, qoff, cent, codes, off, bid, boff[:-1], ok, 2)
    for few in (np.array([[1]], np.int64), np.arange(30, dtype=np.int64)[None]):  # marked ids, whole table
        with pytest.raises(ValueError, match="outside the codec's 40 centroids"):
            _prune(q, qoff, cent[:40], codes, off, bid, boff, few, 1)
        with pytest.raises(ValueError, match="outside the codec's 40 centroids"):
            _prune(q, qoff, cent[:40], codes, off, bid, boff, few, 1, 1)
    with pytest.raises(ValueError, match="query_tokens"):
        bad_q = q.copy()
        bad_q[0, 0] = np.nan
        idx_store_prune_check(bad_q)
    with pytest.raises(ValueError, match="candidates"):
        _prune(q, qoff, cent, codes, off, bid, boff, np.array([1, 2], np.int64), 2)


def idx_store_prune_check(q):
    """A store's prune refuses non-finite query tokens before the kernel sees them."""
    idx, _, _ = _index(n_docs=80)
    idx.store.prune(q, np.array([0, len(q)], np.int64), np.array([[0, 1, 2]], np.int64), 2)


def test_prune_reads_only_the_candidates_bags():
    """The structure of the cost: bag offsets of documents that are not candidates are never
    read (here they are garbage), so a search's prune follows its candidates, not the corpus."""
    cent, off, ids, codes, bid, boff = _setup(RNG, 64, 16, 30)
    garbage = boff.copy()
    keep_docs = [4, 9, 20]
    for j in range(30):
        if j not in keep_docs and j + 1 not in keep_docs:
            garbage[j + 1] = -12345  # would fail any check or read
    q = RNG.standard_normal((3, 16)).astype(np.float32)
    qoff = np.array([0, 3], np.int64)
    cand = np.array([keep_docs], np.int64)
    a = _prune(q, qoff, cent, codes, off, bid, garbage, cand, 2)
    b = _prune(q, qoff, cent, codes, off, bid, boff, cand, 2)
    np.testing.assert_array_equal(a[0], b[0])


def _index(codec="residual:2", n_docs=220, d=16, backend="auto", seed=3, **kw):
    rng = np.random.default_rng(seed)
    docs = _clustered_docs(n_docs, d, rng)
    idx = MuveraIndex(FDEConfig(dimension=d, num_repetitions=4, num_simhash_projections=3, seed=1),
                      backend=backend, token_codec=codec, **kw)
    idx.add(docs)
    return idx, docs, rng


def _store_bags(store):
    ids, boff = store._bags
    return ids.view.copy(), boff.view.copy()


def test_store_bags_follow_appends_truncation_compaction_and_load(tmp_path):
    idx, docs, rng = _index()
    store = idx.store
    cid, _ = store.codec.split(store.tokens)
    ids, boff = _store_bags(store)
    for j, ref in enumerate(_bags_of(cid, store.offsets)):
        np.testing.assert_array_equal(ids[boff[j]:boff[j + 1]], ref)
    idx.add(_clustered_docs(15, 16, rng))  # appended in a second add: same as built at once
    full_ids, full_off = _core.centroid_bags(store.tokens, store.offsets, 0, len(store), store.codec.num_centroids)
    ids, boff = _store_bags(store)
    np.testing.assert_array_equal(ids, full_ids)
    np.testing.assert_array_equal(np.diff(boff), full_off)
    store.truncate(100)
    ids, boff = _store_bags(store)
    assert len(boff) == 101 and len(ids) == boff[-1]
    np.testing.assert_array_equal(ids, full_ids[:boff[-1]])
    keep = np.zeros(100, bool)
    keep[::3] = True
    store.compact(keep)
    cid, _ = store.codec.split(store.tokens)
    ids, boff = _store_bags(store)
    for j, ref in enumerate(_bags_of(cid, store.offsets)):
        np.testing.assert_array_equal(ids[boff[j]:boff[j + 1]], ref)
    # rebuilt on load (derived from the codes, never saved)
    idx2, _, _ = _index(seed=4)
    idx2.save(tmp_path / "i")
    loaded = MuveraIndex.load(tmp_path / "i")
    a, b = _store_bags(idx2.store), _store_bags(loaded.store)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not any(name.startswith("bag") for name in (p.name for p in (tmp_path / "i").iterdir()))


def test_residual_indexes_prune_by_default_and_others_do_not():
    idx, _, _ = _index()
    assert idx.backend.name == "auto:refine=none"  # no SQ8 refine codes beside residual codes
    assert idx.store.can_prune and idx.default_prune_factor == DEFAULT_PRUNE_FACTOR
    f16, _, _ = _index(codec="float16")
    assert not f16.store.can_prune and f16.default_prune_factor == 1
    assert f16.backend.name == "auto"
    # an explicit refine stage keeps its own re-scoring: no prune on top
    sq8, _, _ = _index(backend="auto:refine=SQ8")
    assert sq8.store.can_prune and sq8.default_prune_factor == 1


def test_default_search_reranks_the_pruned_candidates():
    idx, docs, rng = _index(backend="exact")
    q = _clustered_docs(6, 16, rng, 2, 9)
    c = 20
    qtok, qoff = idx.pack_queries(q)
    qfde = idx.encoder.encode_queries(qtok, offsets=qoff)
    ids, scores = idx.search(q, k=5, candidates=c)
    wide, _ = idx.backend.search(qfde, c * DEFAULT_PRUNE_FACTOR)
    kept = idx.store.prune(qtok, qoff, wide, c)
    rows, sc = idx.store.rerank(qtok, qoff, 5, kept, None)
    np.testing.assert_array_equal(ids, rows)  # added without ids: ids are rows
    np.testing.assert_array_equal(scores, sc)
    # prune_factor 1: the backend's own top c, as before
    ids, scores = idx.search(q, k=5, candidates=c, params={"prune_factor": 1})
    top, _ = idx.backend.search(qfde, c)
    rows, sc = idx.store.rerank(qtok, qoff, 5, top, None)
    np.testing.assert_array_equal(ids, rows)
    np.testing.assert_array_equal(scores, sc)


def test_pruned_search_with_an_exact_rescore():
    idx, docs, rng = _index(backend="exact", keep_exact=True)
    q = _clustered_docs(5, 16, rng, 2, 9)
    ids, scores = idx.search(q, k=5, candidates=20, rescore=10)
    qtok, qoff = idx.pack_queries(q)
    wide, _ = idx.backend.search(idx.encoder.encode_queries(qtok, offsets=qoff), 20 * DEFAULT_PRUNE_FACTOR)
    top, _ = idx.store.prune_rerank(qtok, qoff, wide, 20, 10)
    rows, sc = idx.exact_tier.rerank(qtok, qoff, 5, top, None)
    np.testing.assert_array_equal(ids, rows)
    np.testing.assert_array_equal(scores, sc)


def test_prune_recovers_true_neighbours_the_fde_misses():
    """On clustered data, exact Chamfer's top-10 is found at least as often with the prune as
    with the FDE top-c alone (the reason it exists), at the same rerank width."""
    idx, docs, rng = _index(n_docs=400, backend="exact")
    q = _clustered_docs(30, 16, rng, 3, 10)
    truth, _ = idx.search_exact(q, k=10)
    hits = {}
    for f in (1, 8):
        ids, _ = idx.search(q, k=10, candidates=20, params={"prune_factor": f})
        hits[f] = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids.tolist(), truth.tolist())])
    assert hits[8] >= hits[1] + 0.1  # here 0.55 against 0.23


def test_filters_hold_through_the_prune():
    idx, docs, rng = _index(backend="exact")
    q = _clustered_docs(4, 16, rng, 2, 9)
    allowed = list(range(0, 220, 7))
    ids, _ = idx.search(q, k=10, candidates=10, filter_ids=allowed)
    got = ids[ids >= 0]
    assert len(got) and set(got.tolist()) <= set(allowed)


def test_prune_factor_is_checked():
    idx, docs, rng = _index()
    q = _clustered_docs(2, 16, rng, 2, 9)
    for bad in (0, 65, 2.5, "4", True):
        with pytest.raises(ValueError, match="prune_factor"):
            idx.search(q, k=5, params={"prune_factor": bad})
    f16, _, _ = _index(codec="float16")
    with pytest.raises(ValueError, match="prune_factor"):
        f16.search(q, k=5, params={"prune_factor": 4})
    assert split_prune(None) == (None, None)
    assert split_prune({"prune_factor": 3, "nprobe": 8}) == (3, {"nprobe": 8})
    assert split_prune({"prune_factor": 3}) == (3, None)
    with pytest.raises(TypeError, match="params"):
        split_prune([("prune_factor", 3)])


def test_saved_residual_index_searches_alike_after_load(tmp_path):
    idx, docs, rng = _index()
    q = _clustered_docs(5, 16, rng, 2, 9)
    before = idx.search(q, k=8)
    idx.save(tmp_path / "r")
    after = MuveraIndex.load(tmp_path / "r").search(q, k=8)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])


def test_tune_tries_the_prune_width_and_keeps_it(tmp_path):
    idx, docs, rng = _index(n_docs=300)
    res = idx.tune(target_recall=0.999, k=5, num_queries=12, verbose=False)
    tried = {r["params"].get("prune_factor") for r in res.rows}
    assert tried == {2, 4, 8}
    assert idx.tuned["params"].get("prune_factor") in (2, 4, 8)
    idx.save(tmp_path / "t")
    assert MuveraIndex.load(tmp_path / "t").tuned["params"] == idx.tuned["params"]
    # a float16 index has no centroid ids: nothing to try
    f16, _, _ = _index(codec="float16")
    res = f16.tune(target_recall=0.9, k=5, num_queries=8, verbose=False)
    assert all("prune_factor" not in r["params"] for r in res.rows)


def test_the_prune_default_is_kept_by_save_and_old_indexes_do_not_prune(tmp_path):
    idx, docs, rng = _index()
    assert idx.default_prune_factor == DEFAULT_PRUNE_FACTOR
    idx.default_prune_factor = 8
    idx.save(tmp_path / "a")
    assert MuveraIndex.load(tmp_path / "a").default_prune_factor == 8
    for bad in (0, 65, 2.0, True, "8"):
        with pytest.raises(ValueError, match="default_prune_factor"):
            idx.default_prune_factor = bad
    # a manifest without the section (saved before 0.10.0) loads with 1: the results it gave then
    import json

    from muvera import index_format

    m = json.loads((tmp_path / "a" / "manifest.json").read_text())
    m.pop("checksum")
    assert m["search"] == {"prune_factor": 8}
    m["search"] = {"prune_factor": 0}
    index_format.write_manifest(tmp_path / "a", m)
    with pytest.raises(ValueError, match="manifest.json: search: prune_factor"):
        MuveraIndex.load(tmp_path / "a")
    del m["search"]
    index_format.write_manifest(tmp_path / "a", m)
    assert MuveraIndex.load(tmp_path / "a").default_prune_factor == 1
