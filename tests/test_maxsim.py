"""The C++ Chamfer (MaxSim) kernel against a NumPy brute force, on every ISA."""

import numpy as np
import pytest

import muvera
from muvera import _core
from muvera.maxsim import chamfer_reference, rerank

ISAS = muvera.supported_isas()


def _ragged(rng, lengths, d):
    return [rng.standard_normal((n, d)).astype(np.float32) for n in lengths]


def _pack(items):
    off = np.zeros(len(items) + 1, dtype=np.int64)
    np.cumsum([len(x) for x in items], out=off[1:])
    return np.concatenate(items).astype(np.float32), off


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("d", [1, 7, 16, 33, 128])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_scores_match_numpy(isa, d, dtype):
    rng = np.random.default_rng(d)
    queries = _ragged(rng, [1, 5, 16, 17, 32, 40], d)
    docs = _ragged(rng, [1, 2, 5, 6, 7, 13, 64, 181], d)
    qt, qo = _pack(queries)
    dt, do = _pack(docs)
    dt = dt.astype(dtype)
    got = _core.chamfer_scores(qt, qo, dt, do, None, 2, isa)
    want = np.array([[chamfer_reference(q, dt[do[j]:do[j + 1]].astype(np.float32)) for j in range(len(docs))]
                     for q in queries])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4 * np.sqrt(d))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("d", [3, 12, 64, 384])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_short_queries_sum_their_tokens_scores_bit_for_bit(isa, d, dtype):
    """Short queries take the pair layout (lanes along the dimension, float16 rows converted in
    registers): every (query token, document token) pair is summed by the same arithmetic
    wherever it sits, and Chamfer is the float32 sum of per-token maxima in token order, so an
    n-token score equals the sum of its n one-token scores exactly, at every document length
    (full and partial blocks) and every width (d below, at and past a multiple of the vector width)."""
    rng = np.random.default_rng(d)
    docs = _ragged(rng, [1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 200], d)
    if dtype == np.float16:
        docs = [x.astype(np.float16).astype(np.float32) for x in docs]  # exact in both forms
    dt, do = _pack(docs)
    dt = dt.astype(dtype)
    q = rng.standard_normal((12, d)).astype(np.float32)
    for n in (2, 3, 5, 8):  # every ISA's pair layout: one pass, or two (the generic build's 4 + 4)
        whole = _core.chamfer_scores(q[:n], np.array([0, n], dtype=np.int64), dt, do, None, 1, isa)[0]
        singles = _core.chamfer_scores(q[:n], np.arange(n + 1, dtype=np.int64), dt, do, None, 1, isa)
        total = np.zeros(len(docs), dtype=np.float32)
        for row in singles:
            total = (total + row).astype(np.float32)
        np.testing.assert_array_equal(total, whole)
    for nq in (1, 2, 3, 4, 5, 7, 11):  # every register tiling, against NumPy
        got = _core.chamfer_scores(q[:nq], np.array([0, nq], dtype=np.int64), dt, do, None, 1, isa)[0]
        want = [chamfer_reference(q[:nq], x) for x in docs]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4 * np.sqrt(d))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_a_documents_layout_never_changes_its_score(isa, dtype):
    """Which layout scores a document can depend on its length (query lanes for a few tokens,
    document tokens in the lanes for many). Appending a copy of one of its tokens changes no
    Chamfer score mathematically, and must change none bit for bit: for every query length
    (each layout, each pass boundary) and document lengths around every block size, where the
    choice flips."""
    d = 24
    rng = np.random.default_rng(7)
    q = rng.standard_normal((40, d)).astype(np.float32)
    base = [x.astype(np.float16).astype(np.float32) for x in _ragged(rng, list(range(1, 70)), d)]
    longer = [np.concatenate([x, x[:1]]) for x in base]
    dt, do = _pack(base + longer)
    dt = dt.astype(dtype)
    lengths = np.arange(1, 41)
    qo = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=qo[1:])
    queries = np.concatenate([q[:n] for n in lengths])
    scores = _core.chamfer_scores(queries, qo, dt, do, None, 1, isa)
    np.testing.assert_array_equal(scores[:, :len(base)], scores[:, len(base):])


@pytest.mark.parametrize("isa", ISAS)
def test_topk_candidates_alive_and_ties(isa):
    rng = np.random.default_rng(3)
    docs = _ragged(rng, rng.integers(1, 40, size=60), 24)
    docs[7] = docs[3].copy()  # an exact tie: the lower row wins
    dt, do = _pack(docs)
    queries = _ragged(rng, [8, 20], 24)
    queries[0] = docs[3][:5].copy()
    qt, qo = _pack(queries)
    full = np.array([[chamfer_reference(q, d) for d in docs] for q in queries])
    rows, scores = rerank(qt, qo, dt, do, k=10, num_threads=1, isa=isa)
    for i in range(2):
        order = sorted(range(len(docs)), key=lambda j: (-np.float32(full[i, j]), j))[:10]
        assert rows[i].tolist() == order or np.allclose(np.sort(full[i, rows[i]]), np.sort(full[i, order]), rtol=1e-5)
        np.testing.assert_allclose(scores[i], full[i, rows[i]], rtol=1e-5, atol=1e-4)
    assert rows[0].tolist().index(3) < rows[0].tolist().index(7)
    # Candidates with -1 holes, a tombstone mask, and k larger than what qualifies.
    cand = np.array([[5, -1, 9, 3, 40], [0, 1, 2, -1, -1]], dtype=np.int64)
    alive = np.ones(len(docs), dtype=np.uint8)
    alive[9] = 0
    rows, scores = rerank(qt, qo, dt, do, k=6, candidates=cand, alive=alive, isa=isa)
    assert set(rows[0][rows[0] >= 0].tolist()) == {5, 3, 40}
    assert (rows[0][3:] == -1).all() and np.isneginf(scores[0][3:]).all()
    assert set(rows[1][:3].tolist()) == {0, 1, 2}


def test_public_helpers_and_errors():
    rng = np.random.default_rng(0)
    q, d = rng.standard_normal((4, 8)), rng.standard_normal((6, 8))
    assert muvera.chamfer(q, d) == pytest.approx(chamfer_reference(q, d), rel=1e-5)
    m = muvera.chamfer_matrix([q, q[:2]], [d, d[:1]])
    assert m.shape == (2, 2) and m[1, 1] == pytest.approx(chamfer_reference(q[:2], d[:1]), rel=1e-5)
    bad = q.copy()
    bad[1, 2] = np.inf
    with pytest.raises(ValueError, match="query"):
        muvera.chamfer(bad, d)
    with pytest.raises(ValueError, match="document"):
        muvera.chamfer(q, d[:0])
    with pytest.raises(ValueError, match="document"):
        muvera.chamfer(q, d[:, :5])
    qt, qo = _pack([q.astype(np.float32)])
    dt, do = _pack([d.astype(np.float32)])
    with pytest.raises(ValueError, match="k"):
        rerank(qt, qo, dt, do, k=0)
    with pytest.raises(ValueError, match="candidates"):
        rerank(qt, qo, dt, do, k=1, candidates=np.array([[5]]))
    with pytest.raises(ValueError, match="repeats"):
        rerank(qt, qo, dt, do, k=1, candidates=np.array([[0, -1, 0]]))
    with pytest.raises(ValueError, match="doc_offsets"):
        rerank(qt, qo, dt, np.array([0, 99]), k=1)
    with pytest.raises(ValueError, match="query_tokens"):
        rerank(np.full_like(qt, np.nan), qo, dt, do, k=1)
    with pytest.raises(TypeError, match="doc_tokens"):
        rerank(qt, qo, dt.astype(np.float64), do, k=1)


def test_chamfer_forms_and_overflow():
    rng = np.random.default_rng(1)
    q, d = rng.standard_normal((4, 8)).astype(np.float32), rng.standard_normal((6, 8)).astype(np.float32)
    want = chamfer_reference(q, d)
    # packed + lengths, padded + mask: the same as lists
    m = muvera.chamfer_matrix(np.concatenate([q, q[:2]]), np.concatenate([d, d[:3]]), query_lengths=[4, 2],
                              doc_offsets=[0, 6, 9])
    padded = np.zeros((2, 6, 8), np.float32)
    padded[0], padded[1, :3] = d, d[:3]
    mask = np.zeros((2, 6), bool)
    mask[0], mask[1, :3] = True, True
    m2 = muvera.chamfer_matrix([q, q[:2]], padded, doc_mask=mask)
    np.testing.assert_array_equal(m, m2)
    assert m[0, 0] == pytest.approx(want, rel=1e-5)
    # values so large that products overflow float32: an error, not inf
    with pytest.raises(ValueError, match="overflow"):
        muvera.chamfer(q * 1e30, d * 1e30)
    with pytest.raises(ValueError, match="overflow"):
        muvera.chamfer_matrix([q * 1e30], [d * 1e30])
    with pytest.raises(TypeError, match="masked"):
        muvera.chamfer(np.ma.masked_array(q, mask=np.zeros_like(q, bool)), d)


def test_chamfer_takes_bfloat16_and_grad_tensors():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    q, d = rng.standard_normal((4, 8)).astype(np.float32), rng.standard_normal((6, 8)).astype(np.float32)
    tq = torch.tensor(q, requires_grad=True)
    assert muvera.chamfer(tq, torch.tensor(d)) == pytest.approx(chamfer_reference(q, d), rel=1e-5)
    bq, bd = torch.tensor(q).to(torch.bfloat16), torch.tensor(d).to(torch.bfloat16)
    got = muvera.chamfer(bq, bd)
    assert got == pytest.approx(chamfer_reference(bq.float().numpy(), bd.float().numpy()), rel=1e-5)
    m = muvera.chamfer_matrix(bq[None].expand(2, 4, 8), [bd], query_mask=torch.ones(2, 4, dtype=torch.bool))
    assert m.shape == (2, 1) and m[1, 0] == pytest.approx(got, rel=1e-5)
