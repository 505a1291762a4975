"""The pybind11 layer: converted arguments live for the whole call, dtypes are inferred, and bad
buffers raise instead of reaching the kernels. Run under ASan/UBSan in CI (.ci/asan.sh)."""

from __future__ import annotations

import numpy as np
import pytest

from muvera import FDEConfig, FDEEncoder, _core
from muvera.maxsim import chamfer_reference

D = 8
RNG = np.random.default_rng(0)
DOCS = RNG.normal(size=(400, D)).astype(np.float32)
DOFF = np.arange(0, 401, 4, dtype=np.int64)  # 100 documents of 4 tokens
QT = RNG.normal(size=(6, D)).astype(np.float32)
QOFF = np.array([0, 2, 6], dtype=np.int64)


def _expected(cand):
    out = np.zeros(cand.shape, np.float64)
    for qi in range(2):
        q = QT[QOFF[qi]: QOFF[qi + 1]]
        for j, c in enumerate(cand[qi]):
            out[qi, j] = chamfer_reference(q, DOCS[DOFF[c]: DOFF[c + 1]])
    return out


@pytest.mark.parametrize("dtype", [np.int32, np.uint64, np.int16])
@pytest.mark.parametrize("layout", ["C", "F", "strided"])
def test_candidates_of_any_integer_dtype_and_layout(dtype, layout):
    base = RNG.permutation(100)[:60].reshape(2, 30)
    cand = base.astype(dtype)
    if layout == "F":
        cand = np.asfortranarray(cand)
    elif layout == "strided":
        wide = np.zeros((2, 60), dtype)
        wide[:, ::2] = cand
        cand = wide[:, ::2]
    want = _expected(base)
    for _ in range(3):  # a freed conversion would show up as garbage (or an ASan report)
        got = _core.chamfer_scores(QT, QOFF, DOCS, DOFF, cand, 1, "")
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        rows, scores = _core.chamfer_topk(QT, QOFF, DOCS, DOFF, cand, None, 5, 1, "")
        np.testing.assert_allclose(scores, np.sort(want, axis=1)[:, ::-1][:, :5], rtol=1e-5, atol=1e-5)


def test_offsets_queries_and_alive_are_converted_and_kept():
    qoff32 = QOFF.astype(np.int32)
    qt_f = np.asfortranarray(QT)  # converted to a C-ordered copy for the call
    alive = np.ones(100, dtype=bool)
    alive[::2] = False
    rows, _ = _core.chamfer_topk(qt_f, qoff32, DOCS, DOFF.astype(np.uint32), None, alive, 10, 2, "")
    assert (rows % 2 == 1).all()


def test_bad_candidates_raise():
    with pytest.raises(ValueError, match="candidates"):
        _core.chamfer_scores(QT, QOFF, DOCS, DOFF, np.array([[0, 100]]), 1, "")
    with pytest.raises(ValueError, match="candidates"):
        _core.chamfer_topk(QT, QOFF, DOCS, DOFF, np.array([[0, -2], [1, 2]]), None, 2, 1, "")
    with pytest.raises(ValueError, match="k"):
        _core.chamfer_topk(QT, QOFF, DOCS, DOFF, None, None, 2**62, 1, "")
    with pytest.raises(TypeError):
        _core.chamfer_topk(QT, QOFF, DOCS.astype(np.float64), DOFF, None, None, 2, 1, "")


def test_encoder_infers_dtypes_and_refuses_unaligned_buffers():
    enc = FDEEncoder(FDEConfig.preset("1280", dimension=D))
    x = DOCS[:40]
    ref = enc.encode_spans(x, np.arange(0, 40, 8), np.full(5, 8), is_document=True)
    np.testing.assert_allclose(enc._core.encode_packed(x.astype(np.float64), np.arange(0, 40, 8, dtype=np.int32),
                                                       np.full(5, 8, np.uint16), True, 1, "", "documents"),
                               ref, rtol=1e-5, atol=1e-5)
    half = x.astype(np.float16)  # read as float16 by the kernel: equals encoding the widened values
    np.testing.assert_array_equal(enc._core.encode_packed(half, np.arange(0, 40, 8), np.full(5, 8), True, 1, "",
                                                          "documents"),
                                  enc.encode_spans(half.astype(np.float32), np.arange(0, 40, 8), np.full(5, 8),
                                                   is_document=True))
    raw = np.zeros(40 * D * 4 + 1, np.uint8)
    unaligned = raw[1:].view(np.float32).reshape(40, D)
    unaligned[:] = x
    assert not unaligned.flags.aligned
    with pytest.raises(ValueError, match="aligned"):
        enc._core.encode_packed(unaligned, np.array([0]), np.array([40]), True, 1, "", "documents")
    # The public API copies such views instead (muvera.batch), with the same result.
    np.testing.assert_array_equal(enc.encode_documents([unaligned]), enc.encode_documents([x]))
    with pytest.raises(TypeError, match="float32, float64, float16"):
        enc._core.encode_packed(x.astype(np.int32), np.array([0]), np.array([40]), True, 1, "", "documents")


def test_huge_spans_give_a_clean_error():
    enc = FDEEncoder(FDEConfig.preset("1280", dimension=D))
    big = np.iinfo(np.int64).max
    with pytest.raises(ValueError, match="outside"):
        enc._core.encode_packed(DOCS[:4], np.array([3]), np.array([big]), True, 1, "", "documents")


def test_the_store_layout_is_named_never_guessed():
    """uint8 rows are int8 codes only when the caller says layout='int8' (finding 8 of the
    composition review): the kernel layer does not infer a codec from a dtype."""
    codes = np.zeros((len(DOCS), DOCS.shape[1] + 4), dtype=np.uint8)
    with pytest.raises(TypeError, match="layout"):
        _core.chamfer_topk(QT, QOFF, codes, DOFF, None, None, 2, 1, "")
    rows, _ = _core.chamfer_topk(QT, QOFF, codes, DOFF, None, None, 2, 1, "", layout="int8")
    assert rows.shape == (len(QOFF) - 1, 2)
    with pytest.raises(TypeError, match="do not hold layout 'int8'"):
        _core.chamfer_topk(QT, QOFF, DOCS, DOFF, None, None, 2, 1, "", layout="int8")
    with pytest.raises(ValueError, match="layout: expected"):
        _core.chamfer_scores(QT, QOFF, DOCS, DOFF, None, 1, "", layout="bogus")


def test_the_shared_thread_pool_sums_rethrows_and_survives_threads_and_forks():
    import os

    n = 10_000
    assert _core.parallel_check(n, 1) == (n * (n - 1) // 2, 1)
    total, used = _core.parallel_check(n, 4)
    assert total == n * (n - 1) // 2 and 1 <= used <= 4
    with pytest.raises(RuntimeError, match="task 77 failed"):  # a worker's exception reaches Python
        _core.parallel_check(n, 4, 77)
    with pytest.raises(RuntimeError, match="task 0 failed"):  # and the caller's own
        _core.parallel_check(n, 1, 0)
    from concurrency import run_concurrently

    def hammer(seed):  # concurrent calls share the pool (the GIL is released)
        for i in range(50):
            m = 1 + (seed * 37 + i * 11) % 3000
            assert _core.parallel_check(m, 3)[0] == m * (m - 1) // 2

    errors = run_concurrently(hammer, 6)
    assert not errors, errors[:1]
    pid = os.fork()
    if pid == 0:  # the child has none of the parent's pool threads: it makes its own
        ok = _core.parallel_check(n, 4)[0] == n * (n - 1) // 2
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
