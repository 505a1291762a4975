"""MuveraIndex: search vs exact Chamfer, ids, removal, compaction, filters, ball carving, threads,
and bad input (the index must stay usable after every error)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import muvera
from muvera import FDEConfig, MuveraIndex, ball_carve
from muvera.maxsim import chamfer_reference

from concurrency import run_concurrently

D = 32


def clustered_docs(n_docs, seed=0, n_centers=40, lo=8, hi=24):
    """Unit token vectors around a few topic centres per document (ColBERT-like structure)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_centers, D))
    docs = []
    for _ in range(n_docs):
        topics = rng.choice(n_centers, size=3, replace=False)
        n = int(rng.integers(lo, hi))
        t = centers[rng.choice(topics, size=n)] + 0.3 * rng.normal(size=(n, D))
        docs.append((t / np.linalg.norm(t, axis=1, keepdims=True)).astype(np.float32))
    return docs


def queries_from(docs, nq, seed=1, m=6):
    """Noisy subsets of random documents' tokens."""
    rng = np.random.default_rng(seed)
    out = []
    for j in rng.choice(len(docs), size=nq, replace=False):
        t = docs[j][rng.choice(len(docs[j]), size=min(m, len(docs[j])), replace=False)]
        t = t + 0.1 * rng.normal(size=t.shape)
        out.append((t / np.linalg.norm(t, axis=1, keepdims=True)).astype(np.float32))
    return out


def recall(found, truth):
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / len(b) for a, b in zip(found, truth)]))


CONFIG = FDEConfig.preset("1280", dimension=D)
DOCS = clustered_docs(300)
QUERIES = queries_from(DOCS, 25)


@pytest.fixture()
def index():
    idx = MuveraIndex(CONFIG)
    idx.add(DOCS)
    return idx


# -- search quality ------------------------------------------------------------------------------
def test_search_with_all_candidates_equals_search_exact(index):
    ids, scores = index.search(QUERIES, k=10, candidates=len(DOCS))
    eids, escores = index.search_exact(QUERIES, k=10)
    np.testing.assert_array_equal(ids, eids)
    np.testing.assert_array_equal(scores, escores)
    assert ids.dtype == np.int64 and scores.dtype == np.float32 and ids.shape == (25, 10)


def test_search_exact_is_chamfer_ground_truth(index):
    ids, scores = index.search_exact(QUERIES[:3], k=5)
    for q, row, sc in zip(QUERIES[:3], ids, scores):
        ref = np.array([chamfer_reference(q, d.astype(np.float16)) for d in DOCS])
        np.testing.assert_allclose(sc, np.sort(ref)[::-1][:5], rtol=1e-4)
        np.testing.assert_allclose(ref[row], sc, rtol=1e-4)


def test_recall_against_exact_is_high(index):
    truth, _ = index.search_exact(QUERIES, k=10)
    ids, _ = index.search(QUERIES, k=10, candidates=60)
    assert recall(ids, truth) >= 0.9
    ids, _ = index.search(QUERIES, k=10, candidates=30)
    assert recall(ids, truth) >= 0.7


@pytest.mark.parametrize("backend", ["Flat", "HNSW16", "IVF4,Flat"])
def test_faiss_backends_give_high_recall(backend):
    idx = MuveraIndex(CONFIG, backend=backend)
    idx.add(DOCS)
    truth, _ = idx.search_exact(QUERIES, k=10)
    ids, _ = idx.search(QUERIES, k=10, candidates=60, params={"nprobe": 4} if "IVF" in backend else None)
    assert recall(ids, truth) >= 0.85


def test_input_forms_and_float32_tokens():
    idx = MuveraIndex(CONFIG, token_dtype="float32")
    packed = np.concatenate(DOCS[:20])
    idx.add(packed, lengths=[len(d) for d in DOCS[:20]])
    ref = MuveraIndex(CONFIG, token_dtype="float32")
    ref.add(DOCS[:20])
    q = np.concatenate(QUERIES[:4])
    qlens = [len(x) for x in QUERIES[:4]]
    a = idx.search(q, k=5, candidates=8, lengths=qlens)
    b = ref.search(QUERIES[:4], k=5, candidates=8)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(idx.get_tokens(3), DOCS[3])


# -- ids -----------------------------------------------------------------------------------------
def test_string_ids_round_trip_and_object_results():
    idx = MuveraIndex(CONFIG)
    names = [f"doc-{i}" for i in range(40)]
    assert idx.add(DOCS[:40], ids=names) == names
    ids, scores = idx.search(QUERIES[:3], k=5, candidates=40)
    exact, _ = idx.search_exact(QUERIES[:3], k=5)
    assert ids.dtype == object and all(isinstance(x, str) for x in ids.ravel())
    np.testing.assert_array_equal(ids, exact)
    assert idx.ids == names and "doc-7" in idx and len(idx) == 40
    np.testing.assert_array_equal(idx.get_tokens("doc-7"), DOCS[7].astype(np.float16))
    ids, scores = idx.search(QUERIES[:1], k=50, candidates=60)  # k is capped at the 40 documents
    assert ids.shape == (1, 40) and None not in ids.tolist()[0]
    ids, scores = idx.search(QUERIES[:1], k=10, filter_ids=names[:3])  # padding: None / -inf
    assert ids[0, 3:].tolist() == [None] * 7 and np.isneginf(scores[0, 3:]).all()
    assert idx.search(QUERIES[:1], k=5 * 10**7, candidates=10**8)[0].shape == (1, 40)  # never a (1, 5e7) allocation


def test_int_ids_padding_and_default_ids_continue():
    idx = MuveraIndex(CONFIG)
    assert idx.add(DOCS[:2], ids=[10, np.int64(20)]) == [10, 20]
    assert idx.add(DOCS[2:4]) == [21, 22]
    ids, scores = idx.search(QUERIES[:2], k=6, filter_ids=[10, 20, 21])
    assert ids.shape == (2, 4) and ids.dtype == np.int64  # k capped at the 4 live documents
    assert set(ids[:, :3].ravel().tolist()) <= {10, 20, 21}
    assert (ids[:, 3:] == -1).all() and np.isneginf(scores[:, 3:]).all()
    with pytest.raises(TypeError, match="holds int ids"):
        idx.add(DOCS[4:5], ids=["x"])  # one id kind per index
    with pytest.raises(ValueError, match="2..63"):
        idx.add(DOCS[4:5], ids=[-3])  # -1 pads int results: ids are non-negative
    assert idx.search(QUERIES[:1], k=6)[0].dtype == np.int64
    assert idx.add(DOCS[5:6]) == [23]
    idx.remove([10, 20, 21, 22, 23])
    assert idx.search(QUERIES[:1], k=2)[0].tolist() == [[-1]]  # the kind outlives its ids


def test_string_id_index_keeps_object_results_when_emptied():
    idx = MuveraIndex(CONFIG)
    idx.add(DOCS[:2], ids=["a", "b"])
    idx.remove(["a", "b"])
    ids, scores = idx.search(QUERIES[:1], k=2)
    assert ids.dtype == object and ids.tolist() == [[None]] and np.isneginf(scores).all()
    with pytest.raises(TypeError, match="str ids"):
        idx.add(DOCS[:1])  # default ids are ints


def test_empty_index_search():
    idx = MuveraIndex(CONFIG)
    ids, scores = idx.search(QUERIES[:2], k=3)
    assert (ids == -1).all() and np.isneginf(scores).all()
    assert len(idx) == 0 and idx.ids == []


# -- remove / compact ----------------------------------------------------------------------------
def test_removed_documents_never_come_back(index):
    truth, _ = index.search_exact(QUERIES, k=5)
    gone = sorted(set(truth[:, :3].ravel().tolist()))  # the best hits of every query
    assert index.remove(gone) == len(gone)
    assert len(index) == len(DOCS) - len(gone) and index.num_deleted == len(gone)
    for c in (5, 20, 300):
        ids, scores = index.search(QUERIES, k=5, candidates=c)
        assert not set(ids.ravel().tolist()) & set(gone)
        assert (ids >= 0).all()  # over-fetch still fills k results
    ids, scores = index.search(QUERIES, k=5, candidates=len(DOCS))
    eids, escores = index.search_exact(QUERIES, k=5)
    np.testing.assert_array_equal(ids, eids)
    np.testing.assert_array_equal(scores, escores)
    with pytest.raises(KeyError, match="not in the index"):
        index.get_tokens(gone[0])


def test_remove_then_re_add_same_id(index):
    index.remove(0)
    assert 0 not in index
    index.add([DOCS[0]], ids=[0])
    ids, _ = index.search([DOCS[0]], k=1, candidates=10)
    assert ids[0, 0] == 0


@pytest.mark.parametrize("backend", ["exact", "Flat", "IVF4,Flat"])
def test_compact_keeps_results(backend):
    idx = MuveraIndex(CONFIG, backend=backend)
    idx.add(DOCS, ids=[f"d{i}" for i in range(len(DOCS))])
    idx.remove([f"d{i}" for i in range(0, len(DOCS), 3)])
    params = {"nprobe": 4} if "IVF" in backend else None
    before = idx.search(QUERIES, k=10, candidates=50, params=params)
    assert idx.compact() == 100
    assert len(idx.store) == len(idx) == 200 and idx.num_deleted == 0
    after = idx.search(QUERIES, k=10, candidates=50, params=params)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])
    assert idx.compact() == 0
    idx.add(DOCS[:1], ids=["d0"])  # adds after compaction get the next row
    assert idx.search([DOCS[0]], k=1, candidates=20, params=params)[0][0, 0] == "d0"


# -- filters -------------------------------------------------------------------------------------
def test_filter_ids(index):
    allowed = list(range(0, 300, 7))  # 43 documents
    eids, escores = index.search_exact(QUERIES, k=5, filter_ids=allowed)
    assert set(eids.ravel().tolist()) <= set(allowed)
    ids, scores = index.search(QUERIES, k=5, candidates=len(allowed), filter_ids=allowed)
    np.testing.assert_array_equal(ids, eids)  # candidates cover the filter: exact
    ids, _ = index.search(QUERIES, k=5, candidates=15, filter_ids=allowed)  # the backend's bitmap
    assert set(ids.ravel().tolist()) <= set(allowed) and (ids >= 0).all()
    assert recall(ids, eids) >= 0.8
    # Unknown / removed ids in the filter are ignored; an empty filter gives padding.
    index.remove([0, 7])
    ids, _ = index.search(QUERIES, k=3, candidates=10, filter_ids=[0, 7, 14, 999])
    assert set(ids.ravel().tolist()) <= {14, -1} and (ids[:, 0] == 14).all()
    ids, scores = index.search(QUERIES[:2], k=3, filter_ids=[])
    assert (ids == -1).all() and np.isneginf(scores).all()
    with pytest.raises(TypeError, match="filter_ids"):
        index.search(QUERIES[:1], filter_ids=5)


# -- ball carving --------------------------------------------------------------------------------
def _packed(queries):
    tokens = np.concatenate(queries)
    offsets = np.concatenate(([0], np.cumsum([len(q) for q in queries]))).astype(np.int64)
    return tokens, offsets


def test_ball_carve_sums_clusters():
    q = np.array([[1, 0], [0.9, np.sqrt(1 - 0.81)], [0, 1], [1, 0]], np.float32)
    tokens, offsets = ball_carve(q, np.array([0, 4], np.int64), 0.7)
    assert offsets.tolist() == [0, 2]
    np.testing.assert_allclose(tokens[0], q[0] + q[1] + q[3], rtol=1e-6)
    np.testing.assert_allclose(tokens[1], q[2])
    same, off = ball_carve(q, np.array([0, 4], np.int64), 1.01)
    np.testing.assert_array_equal(same, q)  # nothing merges above 1 with unit vectors


def test_ball_carving_tau_above_one_equals_no_carving(index):
    plain = index.search(QUERIES, k=10, candidates=50)
    carved = index.search(QUERIES, k=10, candidates=50, ball_carving=1.01)
    np.testing.assert_array_equal(plain[0], carved[0])
    np.testing.assert_array_equal(plain[1], carved[1])


def test_ball_carving_shrinks_queries_and_keeps_results_close(index):
    queries = queries_from(DOCS, 25, seed=3, m=16)
    tokens, offsets = _packed(queries)
    _, carved_off = ball_carve(tokens, offsets, 0.7)
    assert carved_off[-1] < offsets[-1] * 0.7  # clustered tokens merge
    plain, _ = index.search(queries, k=10, candidates=60)
    carved, _ = index.search(queries, k=10, candidates=60, ball_carving=0.7)
    assert recall(carved, plain) >= 0.7
    assert np.mean(carved[:, 0] == plain[:, 0]) >= 0.8
    default, _ = index.search(queries, k=10, candidates=60, ball_carving=True)
    np.testing.assert_array_equal(default, carved)


# -- threads -------------------------------------------------------------------------------------
def test_concurrent_search_equals_sequential(index):
    expected = [index.search([q], k=10, candidates=40) for q in QUERIES]
    results = {}

    def worker(t):
        for _ in range(3):
            for i in range(t, len(QUERIES), 4):
                results[i] = index.search([QUERIES[i]], k=10, candidates=40)

    assert not run_concurrently(worker, 4)
    for i, (ids, scores) in enumerate(expected):
        np.testing.assert_array_equal(results[i][0], ids)
        np.testing.assert_array_equal(results[i][1], scores)


def test_search_during_adds_and_removes_is_consistent():
    idx = MuveraIndex(CONFIG, backend="Flat")
    idx.add(DOCS[:100])
    errors = []
    stop = threading.Event()

    def searcher():
        try:
            while not stop.is_set():
                ids, scores = idx.search(QUERIES[:5], k=5, candidates=20)
                assert (ids >= 0).all() and np.isfinite(scores).all()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=searcher) for _ in range(3)]
    for th in threads:
        th.start()
    for start in range(100, 300, 20):
        idx.add(DOCS[start:start + 20])
        idx.remove([start - 100 + j for j in range(5)])
    idx.compact()
    stop.set()
    for th in threads:
        th.join()
    assert not errors and len(idx) == 250


# -- bad input -----------------------------------------------------------------------------------
def _assert_usable(idx, expected):
    ids, scores = idx.search(QUERIES[:3], k=5, candidates=30)
    np.testing.assert_array_equal(ids, expected[0])
    np.testing.assert_array_equal(scores, expected[1])


def test_bad_search_arguments(index):
    expected = index.search(QUERIES[:3], k=5, candidates=30)
    bad_calls = [
        (ValueError, "k", dict(k=0)),
        (ValueError, "k", dict(k=-3)),
        (TypeError, "k", dict(k=2.5)),
        (TypeError, "k", dict(k=True)),
        (ValueError, "candidates", dict(k=10, candidates=5)),
        (ValueError, "candidates", dict(candidates=0)),
        (ValueError, "ball_carving", dict(ball_carving=float("nan"))),
        (ValueError, "params", dict(candidates=5, k=5, params={"efSearch": 10})),
    ]
    for exc, match, kwargs in bad_calls:
        with pytest.raises(exc, match=match):
            index.search(QUERIES[:3], **kwargs)
        _assert_usable(index, expected)
    nan_query = QUERIES[1].copy()
    nan_query[0, 0] = np.nan
    for exc, match, queries in [
        (ValueError, r"queries\[1\].*NaN", [QUERIES[0], nan_query]),
        (ValueError, "queries", [np.ones((3, D + 1), np.float32)]),
        (ValueError, "queries", []),
        (ValueError, r"queries\[0\].*at least one token", [np.ones((0, D), np.float32)]),
        (TypeError, "queries", "not an array"),
    ]:
        with pytest.raises(exc, match=match):
            index.search(queries, k=5)
        with pytest.raises(exc, match=match):
            index.search_exact(queries, k=5)
        _assert_usable(index, expected)
    with pytest.raises(ValueError, match="k"):
        index.search_exact(QUERIES[:1], k=0)


def test_bad_add_and_remove_leave_index_unchanged(index):
    expected = index.search(QUERIES[:3], k=5, candidates=30)
    n, rows = len(index), len(index.store)
    nan_doc = DOCS[0].copy()
    nan_doc[2, 3] = np.inf
    bad_adds = [
        (ValueError, "documents", dict(documents=[np.ones((3, D + 1), np.float32)])),
        (ValueError, "documents", dict(documents=[])),
        (ValueError, r"documents\[1\].*at least one token", dict(documents=[DOCS[0], np.ones((0, D))])),
        (ValueError, r"documents\[1\].*NaN or Inf", dict(documents=[DOCS[0], nan_doc])),
        (ValueError, "duplicate", dict(documents=DOCS[:2], ids=[400, 400])),
        (ValueError, "already in the index", dict(documents=DOCS[:2], ids=[401, 5])),
        (ValueError, "expected 2 ids", dict(documents=DOCS[:2], ids=[402])),
        (TypeError, "ints or strings", dict(documents=DOCS[:1], ids=[["list"]])),
        (TypeError, "ints or strings", dict(documents=DOCS[:1], ids=[float("nan")])),
        (TypeError, "holds int ids", dict(documents=DOCS[:1], ids=["a"])),
        (TypeError, "None", dict(documents=DOCS[:1], ids=[None])),
        (TypeError, "sequence", dict(documents=DOCS[:1], ids="a")),
    ]
    for exc, match, kwargs in bad_adds:
        with pytest.raises(exc, match=match):
            index.add(**kwargs)
        assert len(index) == n and len(index.store) == rows and index.backend.ntotal == rows
        _assert_usable(index, expected)
    with pytest.raises(KeyError, match="nope"):
        index.remove([1, 2, "nope"])
    assert 1 in index and 2 in index and len(index) == n
    _assert_usable(index, expected)
    assert index.add(DOCS[:1]) == [300]  # still accepts good input


def test_failed_faiss_training_leaves_index_unchanged():
    idx = MuveraIndex(CONFIG, backend="IVF64,Flat")
    with pytest.raises(ValueError, match="too few to train"):
        idx.add(DOCS[:10])
    assert len(idx) == 0 and len(idx.store) == 0
    assert idx.add(DOCS[:200])[:2] == [0, 1]  # default ids did not advance
    ids, _ = idx.search(QUERIES[:2], k=3, candidates=20, params={"nprobe": 64})
    assert (ids >= 0).all()


def test_bad_constructor_arguments():
    with pytest.raises(TypeError, match="config"):
        MuveraIndex({"dimension": D})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="factory"):
        MuveraIndex(CONFIG, backend="NoSuchIndex")
    with pytest.raises(ValueError, match="multiple"):
        MuveraIndex(CONFIG, backend="PQ7x8")  # 1280 is not a multiple of 7
    with pytest.raises(ValueError, match="token_codec"):
        MuveraIndex(CONFIG, token_dtype="int7")
