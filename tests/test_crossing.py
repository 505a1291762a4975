"""auto's large crossings build the next backend on a background thread: the crossing add and
the adds after it go on into the current backend, and the new one is swapped in, caught up with
the rows added meanwhile, when it is ready."""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest

import muvera
from muvera.backends import AutoBackend

DIM = 16
CFG = muvera.FDEConfig.preset("1280", dimension=DIM)
PQ = "faiss:PQ160x4fs,Refine(SQ8)"
IVF = "faiss:IVF8,PQ160x4fs,Refine(SQ8)"


def _docs(n, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        x = rng.standard_normal((int(rng.integers(4, 9)), DIM)).astype(np.float32)
        out.append(x / np.linalg.norm(x, axis=1, keepdims=True))
    return out


def _index(background):
    index = muvera.MuveraIndex(CFG)
    index.BACKGROUND_CROSSING_ROWS = 0 if background else None
    index._backend = AutoBackend(CFG.output_dimension, pq_at=200, ivf_at=600, nlist=8, nprobe=4)
    return index


def _gated(monkeypatch, index):
    """Hold the background build at a gate (set it to let the build go on); returns the gate and
    the index's own fill."""
    gate = threading.Event()
    real = index._fill_backend

    def gated(target, rows, source, store=None):
        if threading.current_thread().name == "muvera-crossing":
            gate.wait(10)  # the build holds no lock: writers and readers carry on
        return real(target, rows, source, store)

    monkeypatch.setattr(index, "_fill_backend", gated)
    return gate, real


def test_a_background_crossing_equals_the_crossing_inside_one_add():
    docs = _docs(900, seed=3)
    bg = _index(True)
    bg.add(docs[:300])  # crosses 200: built in the background, the exact scan serves meanwhile
    assert bg.wait_for_backend() and bg.backend.active == PQ and bg.backend.ntotal == 300
    bg.add(docs[300:700])  # crosses 600: the IVF phase, trained on the 700 rows once committed
    assert bg.wait_for_backend() and bg.backend.active == IVF and bg.backend.ntotal == 700
    inline = _index(False)
    inline.add(docs[:700])  # exact -> IVF in one add: trained on the same 700 FDEs
    assert inline.backend.active == IVF
    for x, y in zip(bg.search(docs[:30], k=5, candidates=40), inline.search(docs[:30], k=5, candidates=40)):
        np.testing.assert_array_equal(x, y)
    bg.add(docs[700:])
    assert bg.backend.ntotal == 900 and bg.wait_for_backend(timeout=0)
    for bad in (-1, float("nan"), float("inf"), "1", True):
        with pytest.raises(ValueError, match="timeout"):
            bg.wait_for_backend(timeout=bad)


def test_adds_and_searches_go_on_while_the_backend_builds(monkeypatch):
    index = _index(True)
    docs = _docs(800, seed=4)
    index.add(docs[:250])
    gate, _ = _gated(monkeypatch, index)
    index.add(docs[250:400])  # crosses 200 while the last crossing was already swapped
    assert index.wait_for_backend(timeout=5)
    index.add(docs[400:650])  # crosses 600: the IVF build waits at the gate
    assert index.backend.active == PQ and not index.wait_for_backend(timeout=0.05)
    index.add(docs[650:700])  # into the PQ backend meanwhile
    ids, _ = index.search(docs[660:670], k=1, candidates=50)
    assert np.mean(ids[:, 0] == np.arange(660, 670)) >= 0.8
    gate.set()
    assert index.wait_for_backend(timeout=30)
    assert index.backend.active == IVF and index.backend.ntotal == 700  # caught up with 650-699
    ids, _ = index.search(docs[690:700], k=1, candidates=50)
    assert np.mean(ids[:, 0] == np.arange(690, 700)) >= 0.8


def test_a_compaction_drops_the_build_and_a_failed_build_keeps_the_backend(monkeypatch, caplog):
    index = _index(True)
    docs = _docs(800, seed=5)
    index.add(docs[:150])
    gate, real = _gated(monkeypatch, index)
    index.add(docs[150:300])  # crosses 200: the build waits at the gate
    index.remove(list(range(10)))
    assert index.compact() == 10  # renumbers the rows: the build's snapshot is stale
    gate.set()
    assert index.wait_for_backend(timeout=30)
    assert index.backend.active == "exact" and len(index) == 290
    index.add(docs[300:320])  # the next add crosses again, from the compacted rows
    assert index.wait_for_backend(timeout=30) and index.backend.active == PQ and index.backend.ntotal == 310

    def failing(target, rows, source, store=None):
        if threading.current_thread().name == "muvera-crossing":
            raise MemoryError("no room for the IVF lists")
        return real(target, rows, source, store)

    monkeypatch.setattr(index, "_fill_backend", failing)
    with caplog.at_level(logging.WARNING, logger="muvera"):
        index.add(docs[320:610])  # crosses 600: the build fails
        assert index.wait_for_backend(timeout=30)
    assert index.backend.active == PQ and "background build" in caplog.text and len(index) == 600
    index.add(docs[610:620])  # not retried at once
    assert index.wait_for_backend(timeout=0) and index.backend.active == PQ
    monkeypatch.setattr(index, "_fill_backend", real)
    index.add(docs[620:780])  # 25% more rows than at the failure: tried again, and built
    assert index.wait_for_backend(timeout=30) and index.backend.active == IVF and index.backend.ntotal == 770


def test_save_waits_for_a_background_build(tmp_path, monkeypatch):
    index = _index(True)
    docs = _docs(300, seed=6)
    gate, _ = _gated(monkeypatch, index)
    index.add(docs)
    assert index.backend.active == "exact"  # the build waits at the gate
    threading.Timer(0.2, gate.set).start()
    index.save(tmp_path / "i")  # waits for it: the saved index holds the new backend
    assert index.backend.active == PQ
    back = muvera.MuveraIndex.load(tmp_path / "i")
    assert back.backend.active == PQ and len(back) == 300
    for x, y in zip(index.search(docs[:5], k=3), back.search(docs[:5], k=3)):
        np.testing.assert_array_equal(x, y)


def test_a_failed_catch_up_fails_no_add(monkeypatch, caplog):
    index = _index(True)
    docs = _docs(320, seed=7)
    gate, real = _gated(monkeypatch, index)
    index.add(docs[:250])  # crosses 200: the build waits at the gate
    index.add(docs[250:300])  # rows the swap must catch up with

    def catch_up_fails(target, rows, source, store=None):
        if len(rows) and rows[0] == 250:  # the catch-up, on whichever thread swaps
            raise MemoryError("no room to catch up")
        return real(target, rows, source, store)

    monkeypatch.setattr(index, "_fill_backend", catch_up_fails)
    gate.set()
    with caplog.at_level(logging.WARNING, logger="muvera"):
        assert index.wait_for_backend(timeout=30)
    assert "no room to catch up" in caplog.text and index.backend.active == "exact"
    index.add(docs[300:])  # the add itself goes through
    assert len(index) == 320 and index.backend.ntotal == 320
