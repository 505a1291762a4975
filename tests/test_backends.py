"""MIPS backends: exact vs faiss agreement, padding, training errors, params, save/load."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from muvera.backends import ExactBackend, FaissBackend, make_backend, topk

# Subprocesses start outside the repository root, whose muvera/ (no built extension) would
# shadow the installed package.
_HERE = os.path.dirname(os.path.abspath(__file__))

faiss = pytest.importorskip("faiss")


def _vectors(n, d=32, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def _recall(found, truth):
    return np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, truth)])


def test_import_muvera_does_not_import_faiss():
    code = "import sys, muvera; muvera.make_backend('exact'); assert 'faiss' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=_HERE, check=True)


def test_topk_order_ties_and_padding():
    scores = np.array([[1.0, 3.0, 3.0, 2.0]], np.float32)
    cols, vals = topk(scores, 3)
    assert cols.tolist() == [[1, 2, 3]] and vals.tolist() == [[3.0, 3.0, 2.0]]
    cols, vals = topk(scores, 6)
    assert cols.tolist() == [[1, 2, 3, 0, -1, -1]]
    assert np.isneginf(vals[0, 4:]).all()


def test_exact_matches_faiss_flat():
    x, q = _vectors(500), _vectors(20, seed=1)
    exact, flat = make_backend("exact"), make_backend("Flat")
    exact.add(x[:200])
    exact.add(x[200:])  # rows continue across calls
    flat.add(x)
    r1, s1 = exact.search(q, 10)
    r2, s2 = flat.search(q, 10)
    np.testing.assert_allclose(s1, s2, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(r1, r2)
    np.testing.assert_allclose(s1[:, 0], (q @ x.T).max(axis=1), rtol=1e-5)


@pytest.mark.parametrize("spec", ["exact", "Flat", "IVF4,Flat"])
def test_padding_when_k_exceeds_ntotal(spec):
    b = make_backend(spec, 32)
    q = _vectors(2, seed=3)
    rows, scores = b.search(q, 4)  # empty backend
    assert (rows == -1).all() and np.isneginf(scores).all()
    b.add(_vectors(50))
    rows, scores = b.search(q, 60)
    assert rows.shape == (2, 60) and rows.dtype == np.int64 and scores.dtype == np.float32
    assert (rows[:, 50:] == -1).all() and np.isneginf(scores[:, 50:]).all()


def test_hnsw_recall_and_ef_search():
    x, q = _vectors(1000), _vectors(30, seed=1)
    exact = ExactBackend()
    exact.add(x)
    truth, _ = exact.search(q, 10)
    hnsw = make_backend("faiss:HNSW32")
    hnsw.add(x)
    assert hnsw.name == "faiss:HNSW32" and isinstance(hnsw, FaissBackend)
    rows, _ = hnsw.search(q, 10, params={"efSearch": 128})
    assert _recall(rows, truth) > 0.9
    hnsw.ef_search = 64
    assert hnsw.ef_search == 64
    rows, _ = hnsw.search(q, 10)
    assert _recall(rows, truth) > 0.8


def test_ivf_flat_with_all_probes_is_exact():
    x, q = _vectors(800), _vectors(10, seed=2)
    exact = ExactBackend()
    exact.add(x)
    ivf = make_backend("IVF8,Flat")
    ivf.add(x)
    assert ivf.is_trained
    r1, _ = exact.search(q, 5)
    r2, _ = ivf.search(q, 5, params={"nprobe": 8})
    np.testing.assert_array_equal(r1, r2)
    ivf.nprobe = 8
    np.testing.assert_array_equal(ivf.search(q, 5)[0], r1)


def test_ivf_pq_smoke_and_empty_copy_keeps_training():
    x = _vectors(600, d=64)
    b = make_backend("IVF8,PQ8x8")
    b.add(x)
    rows, scores = b.search(x[:20], 10, params={"nprobe": 8})
    assert (rows >= 0).all() and np.isfinite(scores).all()
    assert np.mean(rows[:, 0] == np.arange(20)) > 0.5  # coarse codes, still finds itself often
    assert 0 < b.nbytes < x.nbytes
    empty = b.empty_copy()
    assert empty.ntotal == 0 and empty.is_trained
    empty.add(x)
    np.testing.assert_array_equal(empty.search(x[:20], 10, params={"nprobe": 8})[0], rows)


def test_too_few_vectors_to_train():
    b = make_backend("IVF64,Flat", 32)
    with pytest.raises(ValueError, match="too few to train"):
        b.add(_vectors(10))
    assert b.ntotal == 0 and not b.is_trained
    b.add(_vectors(200))  # the backend is still usable
    assert b.ntotal == 200


def test_make_backend_specs_and_errors():
    assert make_backend("exact").name == "exact"
    assert make_backend(" EXACT ").name == "exact"
    assert make_backend("HNSW32", 16).name == make_backend("faiss:HNSW32", 16).name == "faiss:HNSW32"
    assert make_backend("IVF1024,PQ1280x8", 10240).name == "faiss:IVF1024,PQ1280x8"
    assert not make_backend("PQ1280x8", 10240).is_trained
    with pytest.raises(ValueError, match="factory"):
        make_backend("NoSuchIndex", 16)
    with pytest.raises(ValueError, match="multiple"):
        make_backend("PQ7x8", 16)
    with pytest.raises(ValueError):
        make_backend("faiss:")
    with pytest.raises(TypeError):
        make_backend(42)  # type: ignore[arg-type]


def test_bad_vectors_and_params():
    b = make_backend("exact", 8)
    with pytest.raises(ValueError, match="8"):
        b.add(np.ones((3, 9), np.float32))
    with pytest.raises(ValueError, match="k"):
        b.search(np.ones((1, 8), np.float32), 0)
    with pytest.raises(ValueError, match="params"):
        b.search(np.ones((1, 8), np.float32), 1, params={"nprobe": 2})
    f = make_backend("Flat", 8)
    f.add(np.ones((3, 8), np.float32))
    with pytest.raises(ValueError, match="efSearch"):
        f.search(np.ones((1, 8), np.float32), 1, params={"efSearch": 2})
    with pytest.raises(ValueError, match="unknown"):
        f.search(np.ones((1, 8), np.float32), 1, params={"foo": 2})
    with pytest.raises(ValueError, match="nprobe"):
        f.nprobe = 3


@pytest.mark.parametrize("spec", ["exact", "Flat", "HNSW16", "IVF4,PQ8x8"])
def test_save_load_round_trip(tmp_path, spec):
    x, q = _vectors(400, d=64), _vectors(5, d=64, seed=1)
    b = make_backend(spec)
    b.add(x)
    entries = b.save(tmp_path)
    assert all((tmp_path / name).stat().st_size == e["bytes"] for name, e in entries.items())
    loaded = make_backend(spec).load(tmp_path, entries, mmap=False)
    assert loaded.ntotal == 400 and loaded.dimension == 64
    r1, s1 = b.search(q, 7)
    r2, s2 = loaded.search(q, 7)
    np.testing.assert_array_equal(r1, r2)
    np.testing.assert_array_equal(s1, s2)
    loaded.add(x[:3])  # loaded backends (even memory-mapped exact ones) accept adds
    assert loaded.ntotal == 403
    if spec == "exact":
        mm = ExactBackend().load(tmp_path, entries, mmap=True)
        np.testing.assert_array_equal(mm.search(q, 7)[0], r1)


def test_faiss_load_rejects_garbage_and_wrong_dimension(tmp_path):
    (tmp_path / "backend.faiss").write_bytes(b"not an index")
    entries = {"backend.faiss": {}}
    with pytest.raises(ValueError, match="faiss"):
        make_backend("Flat").load(tmp_path, entries, mmap=False)
    b = make_backend("Flat", 8)
    b.add(np.ones((2, 8), np.float32))
    entries = b.save(tmp_path)
    with pytest.raises(ValueError, match="dimension"):
        make_backend("Flat", 16).load(tmp_path, entries, mmap=False)


def test_reset():
    for spec in ("exact", "IVF4,Flat"):
        b = make_backend(spec)
        b.add(_vectors(300))
        b.reset()
        assert b.ntotal == 0
        b.add(_vectors(5))
        assert b.ntotal == 5
