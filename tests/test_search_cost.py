"""Per-query cost follows the work: a search touches the candidates and the allowed rows, never
an array with one entry per document (checked by what the kernels receive and by counting the
per-row passes, not by timing); refined candidates match the exact FDE scan."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import muvera
from muvera import _core
from muvera.idmap import IdMap

CFG = muvera.FDEConfig(dimension=8, num_repetitions=2, num_simhash_projections=2)


def _tiny_index(n, backend="exact", seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.normal(size=(n, 8)).astype(np.float32)
    tokens /= np.linalg.norm(tokens, axis=1, keepdims=True)  # unit tokens: each document is its own best match
    index = muvera.MuveraIndex(CFG, backend=backend)
    index.add(tokens, lengths=np.ones(n, dtype=np.int64))
    return index, tokens


def test_chamfer_binding_checks_only_the_candidates_offsets():
    rng = np.random.default_rng(1)
    toks = rng.normal(size=(40, 8)).astype(np.float32)
    off = np.arange(0, 41, 4, dtype=np.int64)  # 10 documents of 4 tokens
    bad = off.copy()
    bad[7] = 39  # document 7's span runs backwards (6's overlaps 7's rows: harmless to read)
    q = rng.normal(size=(3, 8)).astype(np.float32)
    qo = np.array([0, 3], dtype=np.int64)
    cand = np.array([[0, 1, 2]], dtype=np.int64)
    good_rows, good_scores = _core.chamfer_topk(q, qo, toks, off, cand, None, 3, 1, "")
    rows, scores = _core.chamfer_topk(q, qo, toks, bad, cand, None, 3, 1, "")  # never reads 6 or 7
    np.testing.assert_array_equal(rows, good_rows)
    np.testing.assert_array_equal(scores, good_scores)
    _core.chamfer_topk(q, qo, toks, bad, np.array([[0, 6]], np.int64), None, 2, 1, "")
    with pytest.raises(ValueError, match="doc_offsets: the span of document 7"):
        _core.chamfer_topk(q, qo, toks, bad, np.array([[7, 1]], np.int64), None, 2, 1, "")
    worse = off.copy()
    worse[3] = 400  # past the token rows
    with pytest.raises(ValueError, match="doc_offsets: the span of document 2"):
        _core.chamfer_topk(q, qo, toks, worse, np.array([[2]], np.int64), None, 1, 1, "")
    with pytest.raises(ValueError, match="doc_offsets: must not decrease"):  # every document read
        _core.chamfer_topk(q, qo, toks, bad, None, None, 2, 1, "")


class _PerRowPasses:
    """Counts NumPy passes over arrays with at least ``n`` entries (one per document)."""

    NAMES = ("count_nonzero", "flatnonzero", "packbits", "unique", "zeros", "full", "ones", "nonzero")

    def __init__(self, monkeypatch, n):
        self.calls = []
        for name in self.NAMES:
            real = getattr(np, name)

            def spy(*args, _real=real, _name=name, **kw):
                out = _real(*args, **kw)
                sizes = [np.size(a) for a in args if isinstance(a, np.ndarray)]
                shape = args[0] if _name in ("zeros", "full", "ones") and args else None
                if shape is not None:
                    sizes.append(int(np.prod(shape)))
                if any(s >= n for s in sizes):
                    self.calls.append(_name)
                return out

            monkeypatch.setattr(np, name, spy)


@pytest.mark.parametrize("backend", ["exact", "faiss:Flat"])
def test_filtered_search_touches_no_per_document_array(monkeypatch, backend):
    n = 60_000
    index, tokens = _tiny_index(n, backend)
    index.remove(list(range(0, n, 7)))  # tombstones: the live bitmap is in play
    allowed = [i for i in range(1, 5_000, 100) if i % 7][:50]
    query = [tokens[allowed[3]][None] + 0.01]
    index.search(query, k=5, candidates=100, filter_ids=allowed)  # warm: lazy imports, tables
    counter = _PerRowPasses(monkeypatch, n)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        ids, scores = index.search(query, k=5, candidates=100, filter_ids=allowed)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    monkeypatch.undo()
    assert counter.calls == []
    assert peak < n // 2, f"a filtered search allocated {peak} bytes (an O(n) array?)"
    assert ids[0, 0] == allowed[3] and set(ids[0].tolist()) <= set(allowed)
    exact_ids, exact_scores = index.search_exact(query, k=5, filter_ids=allowed)
    np.testing.assert_array_equal(ids, exact_ids)


def test_tombstone_only_search_reuses_the_kept_bitmap(monkeypatch):
    n = 40_000
    index, tokens = _tiny_index(n, "faiss:HNSW16")
    index.remove(list(range(0, n, 3)))
    index.search([tokens[1][None]], k=5, candidates=20)
    counter = _PerRowPasses(monkeypatch, n)
    ids, _ = index.search([tokens[1][None]], k=5, candidates=20)
    monkeypatch.undo()
    assert counter.calls == []  # no count, no packbits, no copy of the alive flags
    assert ids[0, 0] == 1 and all(i % 3 for i in ids[0].tolist())


def test_where_filter_is_found_from_its_rows():
    n = 3_000
    index, tokens = _tiny_index(n)
    index2 = muvera.MuveraIndex(CFG, backend="exact")
    index2.add(tokens, lengths=np.ones(n, dtype=np.int64),
               metadata=[{"bucket": i % 10, "even": i % 2 == 0} for i in range(n)])
    index2.remove([5, 15])
    ids, _ = index2.search([tokens[25][None]], k=3, candidates=50, where="bucket = ?", where_params=(5,))
    assert ids[0, 0] == 25 and all(i % 10 == 5 and i not in (5, 15) for i in ids[0].tolist())
    ids2, _ = index2.search([tokens[25][None]], k=3, candidates=50, where="bucket = ?", where_params=(5,),
                            filter_ids=[25, 35, 36, 15])
    assert ids2[0, 0] == 25 and set(ids2[0].tolist()) == {25, 35, -1}  # 15 removed, 36 in bucket 6


def test_idmap_tables_stay_in_step_with_changes():
    rng = np.random.default_rng(3)
    m = IdMap()
    live = {}
    next_row = 0
    for step in range(40):
        if rng.random() < 0.6 or not live:
            new = [int(x) for x in rng.choice(5_000, size=20, replace=False) if int(x) not in live]
            for x in new:
                live[x] = next_row
                next_row += 1
            m.append(m.check_new(new, len(new)))
        else:
            gone = [int(x) for x in rng.choice(sorted(live), size=min(10, len(live)), replace=False)]
            m.remove(gone)
            for x in gone:
                del live[x]
        if step == 25:
            m.compact()
            live = {x: r for r, x in enumerate(sorted(live, key=live.get))}
            next_row = len(live)
        probe = rng.choice(5_000, size=300)
        want = sorted({live[int(x)] for x in probe if int(x) in live})
        assert m.live_rows(probe).tolist() == want
        assert m.live_rows(probe.tolist()).tolist() == want
        np.testing.assert_array_equal(np.unpackbits(m.alive_packed, bitorder="little")[: m.num_rows], m.alive)
    m2 = IdMap()
    m2.append(m2.check_new([10**15, 3], 2))  # sparse ids: dict lookups, same answers
    assert m2.live_rows([3, 10**15, 7]).tolist() == [0, 1]


def test_refined_candidates_equal_the_exact_fde_scan():
    cfg = muvera.FDEConfig.preset("1280", dimension=16)
    rng = np.random.default_rng(7)
    docs = [rng.normal(size=(int(rng.integers(4, 12)), 16)).astype(np.float32) for _ in range(2_500)]
    index = muvera.MuveraIndex(cfg)  # auto: flat 4-bit PQ fast-scan, refined with SQ8 FDE codes
    index.add(docs)
    assert index.backend.active.endswith(",Refine(SQ8)")
    queries = [rng.normal(size=(6, 16)).astype(np.float32) for _ in range(20)]
    qfde = index.encoder.encode_queries(queries)
    fdes = index.encoder.encode_documents(docs)
    exact = qfde @ fdes.T
    c = 50
    # A k_factor that lets every row through the 4-bit stage: what is left is the refine code's
    # own rounding, so the refined top-c is the exact scan's up to near-ties.
    full, _ = index.backend.search(qfde, c, params={"k_factor": len(docs) // c})
    coded = qfde @ index.backend.reconstruct(np.arange(len(docs))).T  # scores on the SQ8 codes
    for i in range(len(queries)):
        order = np.sort(exact[i])[::-1]
        cth = order[c - 1]
        eps = 2 * float(np.abs(coded[i] - exact[i]).max()) + 1e-6  # the code's own rounding, measured
        must = set(np.flatnonzero(exact[i] > cth + eps).tolist())
        may = set(np.flatnonzero(exact[i] >= cth - eps).tolist())
        got = set(full[i].tolist())
        assert must <= got <= may
    cand, _ = index.backend.search(qfde, c)  # the default k_factor
    # The 4-bit codes alone lose some of them; the default k_factor restores them.
    plain = muvera.MuveraIndex(cfg, backend="auto:refine=none")
    plain.add(docs)
    cand_plain, _ = plain.backend.search(qfde, c)
    top = np.argsort(-exact, axis=1)[:, :c]
    overlap = lambda a: np.mean([len(set(a[i]) & set(top[i])) / c for i in range(len(queries))])  # noqa: E731
    assert overlap(cand) >= overlap(cand_plain) + 0.25 and overlap(cand) >= 0.8  # random tokens: PQ's worst case


def test_only_k_given_makes_candidates_follow_it():
    index, tokens = _tiny_index(300)
    ids, _ = index.search([tokens[0][None]], k=250)
    assert ids.shape == (1, 250) and ids[0, 0] == 0
    ids, _ = index.search([tokens[0][None]], k=1000)
    assert ids.shape == (1, 300)
    with pytest.raises(ValueError, match="candidates: expected >= k"):
        index.search([tokens[0][None]], k=250, candidates=100)


def _sq8_case(seed=11, n=300, dim=96, nq=5, k_base=40):
    """SQ8 codes in faiss's layout, queries zero outside a few 16-wide blocks (as a query FDE of a
    few tokens is), candidate rows with -1 padding."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 256, size=(n, dim), dtype=np.uint8)
    vmin = rng.normal(size=dim).astype(np.float32)
    vdiff = rng.uniform(0.1, 2.0, size=dim).astype(np.float32)
    q = rng.normal(size=(nq, dim)).astype(np.float32)
    for i in range(nq):
        keep = rng.choice(dim // 16, size=2, replace=False)
        mask = np.zeros(dim, dtype=bool)
        for b in keep:
            mask[b * 16:(b + 1) * 16] = True
        mask[rng.integers(dim)] = True  # and a lone value: runs of any length
        q[i, ~mask] = 0.0
    rows = np.stack([rng.choice(n, size=k_base, replace=False) for _ in range(nq)]).astype(np.int64)
    rows[0, -7:] = -1  # a short candidate list
    return q, rows, codes, vmin, vdiff


@pytest.mark.parametrize("isa", muvera.supported_isas())
def test_sparse_sq8_refine_equals_numpy_on_the_decoded_codes(isa):
    q, rows, codes, vmin, vdiff = _sq8_case()
    decoded = vmin + (codes.astype(np.float32) + 0.5) / 255.0 * vdiff  # faiss's QT_8bit decoder
    k = 10
    got_rows, got_scores = _core.code8_refine_topk(q, rows, codes, vmin, vdiff, k, 1, isa)
    for i in range(len(q)):
        valid = rows[i][rows[i] >= 0]
        want = decoded[valid].astype(np.float64) @ q[i].astype(np.float64)
        order = np.argsort(-want, kind="stable")[:k]
        np.testing.assert_allclose(got_scores[i], want[order], rtol=1e-5, atol=1e-4)
        assert got_rows[i].tolist() == valid[order].tolist()  # random codes: no near-ties here
    all_zero = np.zeros_like(q[:1])  # a zero query: every score is 0, the lower rows first
    r, s = _core.code8_refine_topk(all_zero, rows[1:2], codes, vmin, vdiff, 3, 1, isa)
    assert s.tolist() == [[0.0, 0.0, 0.0]] and r[0].tolist() == sorted(rows[1])[:3]


def test_sparse_sq8_refine_checks_its_arguments():
    q, rows, codes, vmin, vdiff = _sq8_case()
    bad = rows.copy()
    bad[0, 0] = len(codes)
    with pytest.raises(ValueError, match="rows: expected values in"):
        _core.code8_refine_topk(q, bad, codes, vmin, vdiff, 5)
    bad[0, 0] = -2
    with pytest.raises(ValueError, match="rows: expected values in"):
        _core.code8_refine_topk(q, bad, codes, vmin, vdiff, 5)
    with pytest.raises(ValueError, match="codes: expected"):
        _core.code8_refine_topk(q, rows, codes[:, :-1], vmin, vdiff, 5)
    with pytest.raises(ValueError, match="vmin, vdiff"):
        _core.code8_refine_topk(q, rows, codes, vmin[:-1], vdiff, 5)
    with pytest.raises(ValueError, match="rows: expected a 2-D"):
        _core.code8_refine_topk(q, rows[:-1], codes, vmin, vdiff, 5)
    with pytest.raises(ValueError, match="k: expected"):
        _core.code8_refine_topk(q, rows, codes, vmin, vdiff, 0)


def test_sparse_refine_ranks_as_faiss_refine(monkeypatch):
    """The auto backend's refine stage, scored by muvera's sparse kernel, against faiss's own
    refine on the same index: the same candidates up to float rounding of near-ties."""
    from muvera.backends.faiss_backend import FaissBackend

    cfg = muvera.FDEConfig.preset("1280", dimension=16)
    rng = np.random.default_rng(5)
    docs = [rng.normal(size=(int(rng.integers(4, 12)), 16)).astype(np.float32) for _ in range(2_200)]
    index = muvera.MuveraIndex(cfg)
    index.add(docs)
    queries = [rng.normal(size=(int(rng.integers(2, 6)), 16)).astype(np.float32) for _ in range(16)]
    qfde = index.encoder.encode_queries(queries)
    assert (qfde == 0).mean() > 0.3  # short queries: most of the FDE is zero, which the kernel skips
    for params in (None, {"k_factor": 2}):
        ours_rows, ours = index.backend.search(qfde, 30, params=params)
        monkeypatch.setattr(FaissBackend, "SPARSE_REFINE", False)
        theirs_rows, theirs = index.backend.search(qfde, 30, params=params)
        monkeypatch.setattr(FaissBackend, "SPARSE_REFINE", True)
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)
        for i in range(len(queries)):
            same = len(set(ours_rows[i]) & set(theirs_rows[i]))
            assert same >= 29  # at most one near-tie swapped at the boundary
