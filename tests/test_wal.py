"""Durable writes between saves: MuveraIndex.open(path) logs every add and remove to wal.log
before applying it; load replays the log; checkpoint folds it in atomically."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from muvera import FDEConfig, MuveraIndex
from muvera.wal import WAL_FILE, WriteAheadLog

CFG = FDEConfig(dimension=16, num_repetitions=4, num_simhash_projections=3)


def _docs(n, seed=0, tokens=5):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((tokens, 16)).astype(np.float32) for _ in range(n)]


def _same(a, b, queries):
    assert sorted(a.ids, key=str) == sorted(b.ids, key=str)
    for x, y in zip(a.search(queries, k=5, candidates=20), b.search(queries, k=5, candidates=20)):
        np.testing.assert_array_equal(x, y)


def _bench_wal():
    """bench/bench_wal.py, whose crash trials the kill -9 tests run."""
    bench = Path(__file__).resolve().parent.parent / "bench"
    sys.path.insert(0, str(bench))
    try:
        import bench_wal
    finally:
        sys.path.remove(str(bench))
    return bench_wal


def test_logged_changes_replay_exactly(tmp_path):
    path = tmp_path / "idx"
    live = MuveraIndex.open(path, CFG, backend="exact")
    docs = _docs(40)
    live.add(docs[:10], metadata=[{"i": i} for i in range(10)])
    live.add(docs[10:25], ids=list(range(100, 115)))
    live.remove([3, 100])
    live.add(iter([docs[25:30], docs[30:40]]))  # a stream: one record per batch
    replayed = MuveraIndex.load(path)
    assert len(replayed) == len(live) == 38
    _same(live, replayed, docs[:3])
    assert replayed.metadata([5]) == [{"i": 5}]
    assert 3 not in replayed and 100 not in replayed


@pytest.mark.parametrize("codec, backend", [("residual:2", "exact"), ("float16", "faiss:PQ8x4fs")])
def test_a_stream_that_trains_replays_to_the_same_index(tmp_path, codec, backend):
    """The batches gathered to train are logged as one add, which trains exactly as the stream
    did: the replayed index equals the live one bit for bit."""
    path = tmp_path / "idx"
    live = MuveraIndex.open(path, CFG, backend=backend, token_codec=codec)
    docs = _docs(400, tokens=8)
    live.add(iter([docs[:150], docs[150:300], docs[300:]]), progress=False)
    replayed = MuveraIndex.load(path)
    np.testing.assert_array_equal(live.store.tokens, replayed.store.tokens)
    _same(live, replayed, docs[:4])


def test_a_failed_add_is_not_logged(tmp_path, monkeypatch):
    path = tmp_path / "idx"
    live = MuveraIndex.open(path, CFG, backend="exact")
    live.add(_docs(5))
    size = WriteAheadLog.read(path)[1]  # the records' bytes (zeros are written ahead of them)
    monkeypatch.setattr(live._store, "append_codes", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        live.add(_docs(3, seed=1))
    monkeypatch.undo()
    assert WriteAheadLog.read(path)[1] == size and live._wal.tell() == size
    with pytest.raises(KeyError):
        live.remove([99])  # refused before it is logged
    assert WriteAheadLog.read(path)[1] == size and live._wal.tell() == size
    assert len(MuveraIndex.load(path)) == 5


def test_a_torn_tail_is_dropped_and_a_bad_checksum_ends_the_log(tmp_path):
    path = tmp_path / "idx"
    live = MuveraIndex.open(path, CFG, backend="exact")
    for i in range(3):
        live.add(_docs(2, seed=i))
    live.close()
    log = path / WAL_FILE
    whole = log.read_bytes()
    log.write_bytes(whole + whole[:37])  # a record cut short
    records, good, dropped = WriteAheadLog.read(path)
    assert len(records) == 3 and good == len(whole) and dropped == 37
    reopened = MuveraIndex.open(path)
    assert len(reopened) == 6 and log.stat().st_size == len(whole)  # the tail is cut on open
    reopened.close()
    flipped = bytearray(whole)
    flipped[-3] ^= 0xFF  # the last record's payload: its checksum fails
    log.write_bytes(bytes(flipped))
    assert len(MuveraIndex.load(path)) == 4


def test_checkpoint_folds_the_log_in_and_a_failed_swap_keeps_it(tmp_path, monkeypatch):
    from muvera import index_format

    path = tmp_path / "idx"
    live = MuveraIndex.open(path, CFG, backend="exact")
    live.add(_docs(10))
    live.checkpoint()
    assert (path / WAL_FILE).stat().st_size == 0 and len(MuveraIndex.load(path)) == 10
    live.add(_docs(4, seed=2))

    def boom(tmp, target):
        raise OSError("crash before the swap")

    monkeypatch.setattr(index_format, "_swap_into_place", boom)
    with pytest.raises(OSError):
        live.checkpoint()
    monkeypatch.undo()
    assert len(MuveraIndex.load(path)) == 14  # the old directory and its log, whole
    live.add(_docs(1, seed=3))  # the log is still appended to
    assert len(MuveraIndex.load(path)) == 15
    live.checkpoint()
    assert (path / WAL_FILE).stat().st_size == 0 and len(MuveraIndex.load(path)) == 15


def test_one_writer_per_index_and_bad_opens(tmp_path):
    path = tmp_path / "idx"
    first = MuveraIndex.open(path, CFG, backend="exact")
    with pytest.raises(ValueError, match="open for writing"):
        MuveraIndex.open(path)
    with pytest.raises(ValueError, match="holds an index with config"):
        MuveraIndex.open(path, FDEConfig(dimension=16, num_repetitions=2, num_simhash_projections=3))
    with pytest.raises(ValueError, match="holds an index with backend 'exact', not 'auto'"):
        MuveraIndex.open(path, backend="auto")
    with pytest.raises(ValueError, match="keep_exact: .* options of a new index do not apply"):
        MuveraIndex.open(path, keep_exact=True)
    with pytest.raises(ValueError, match="give config"):
        MuveraIndex.open(tmp_path / "nothing")
    first.close()
    MuveraIndex.open(path).close()
    MuveraIndex.open(path, CFG, backend="exact").close()  # open-or-create: the same description is fine
    with pytest.raises(ValueError, match="no write-ahead log"):
        MuveraIndex.load(path).checkpoint()


def test_training_and_compaction_are_made_durable_by_a_checkpoint(tmp_path):
    path = tmp_path / "idx"
    live = MuveraIndex.open(path, CFG, backend="exact", token_codec="residual:2")
    docs = _docs(300, tokens=8)
    live.train(docs)
    assert MuveraIndex.load(path).store.codec.needs_training is False
    live.add(docs[:50])
    live.remove(list(range(10)))
    assert live.compact() == 10
    back = MuveraIndex.load(path)
    assert back.num_deleted == 0 and len(back) == 40
    _same(live, back, docs[20:22])


def test_kill_9_during_writes_loses_no_acknowledged_write(tmp_path):
    """A writer process is killed at a random moment, several times over the same index: after
    each kill every acknowledged document is there, whole (tokens and metadata re-derived from
    its id), and at most the add in flight beyond them. bench/bench_wal.py runs the same trials
    (this function) 100 times and measures what the log costs."""
    result = _bench_wal().crash_trials(6, tmp_path)
    assert result["failures"] == [] and result["documents"] > 6


def test_upsert_replaces_as_one_change_and_replays(tmp_path, monkeypatch):
    path = tmp_path / "idx"
    live = MuveraIndex.open(path, CFG, backend="exact")
    docs = _docs(6)
    live.add(docs[:4], ids=["a", "b", "c", "d"], metadata=[{"v": 1}] * 4)
    with pytest.raises(ValueError, match="already in the index"):
        live.add(docs[4:6], ids=["b", "e"])
    assert live.add(docs[4:6], ids=["b", "e"], metadata=[{"v": 2}] * 2, upsert=True) == ["b", "e"]
    assert len(live) == 5 and live.metadata(["b"]) == [{"v": 2}]
    np.testing.assert_allclose(live.get_tokens("b").astype(np.float32), docs[4], atol=1e-2)
    monkeypatch.setattr(live._store, "append_codes", lambda *a, **k: (_ for _ in ()).throw(OSError("disk")))
    with pytest.raises(OSError):
        live.add(docs[:1], ids=["c"], metadata=[{"v": 3}], upsert=True)
    monkeypatch.undo()
    assert live.metadata(["c"]) == [{"v": 1}] and len(live) == 5  # the old version is back
    back = MuveraIndex.load(path)
    assert sorted(back.ids) == ["a", "b", "c", "d", "e"] and back.metadata(["b", "c"]) == [{"v": 2}, {"v": 1}]
    _same(live, back, docs[:2])
    with pytest.raises(ValueError, match="upsert: give the ids"):
        live.add(docs[:1], upsert=True)


@pytest.mark.parametrize("overlap", [False, True])
def test_records_overwrite_zeros_written_ahead_and_replay_after_a_crash(tmp_path, monkeypatch, overlap):
    """The log is written ahead in zeros; records overwrite them (flushed inline, or on the log's
    own thread while the change is applied). A crash leaves the zeros: they are no torn tail,
    and the next open cuts them off."""
    import shutil

    from muvera import wal as wal_module

    if overlap:  # every record takes the overlapped path
        monkeypatch.setattr(wal_module, "_OVERLAP_BYTES", 0)
    path = tmp_path / "idx"
    live = MuveraIndex.open(path, CFG, backend="exact")
    docs = _docs(12)
    live.add(docs[:7], metadata=[{"i": i} for i in range(7)])
    live.remove([2])
    live.add(docs[7:])
    log = path / WAL_FILE
    end = live._wal.tell()
    assert log.stat().st_size > end and set(log.read_bytes()[end:]) == {0}
    crashed = tmp_path / "crashed"
    shutil.copytree(path, crashed)  # the directory as a crash would leave it: the zeros stay
    records, good, dropped = WriteAheadLog.read(crashed)
    assert [r.kind for r in records] == ["add", "remove", "add"] and good == end and dropped == 0
    _same(live, MuveraIndex.load(crashed), docs[:3])
    reopened = MuveraIndex.open(crashed)
    assert (crashed / WAL_FILE).stat().st_size == end  # cut on open
    reopened.add(docs[:1], ids=[99])
    reopened.close()
    assert (crashed / WAL_FILE).stat().st_size == WriteAheadLog.read(crashed)[1]  # and on close
    assert len(MuveraIndex.load(crashed)) == 12
    live.close()


@pytest.mark.parametrize("overlap", [False, True])
def test_a_failed_flush_fails_the_change(tmp_path, monkeypatch, overlap):
    from muvera import wal as wal_module

    path = tmp_path / "idx"
    live = MuveraIndex.open(path, CFG, backend="exact")
    live.add(_docs(4))
    end = live._wal.tell()
    if overlap:
        monkeypatch.setattr(wal_module, "_OVERLAP_BYTES", 0)

        class FailingWorker:
            def start(self, fd):
                pass

            def wait(self):
                raise OSError(5, "Input/output error")

        live._wal._flusher = FailingWorker()
    else:
        def failing(fd):
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(wal_module, "_datasync", failing)
    with pytest.raises(OSError, match="Input/output"):
        live.add(_docs(2, seed=5))
    assert len(live) == 4 and live._wal.tell() == end and WriteAheadLog.read(path)[1] == end
    monkeypatch.undo()
    live._wal._flusher = None
    live.add(_docs(1, seed=6))
    assert len(MuveraIndex.load(path)) == 5
    live.close()


def test_the_flush_worker_reports_errors_and_refuses_misuse(tmp_path):
    from muvera import _core

    worker = _core.DataSyncWorker()
    worker.wait()  # nothing started: nothing to wait for
    f = open(tmp_path / "x", "wb")  # noqa: SIM115
    f.write(b"abc")
    f.flush()
    worker.start(f.fileno())
    with pytest.raises(ValueError, match="not waited"):
        worker.start(f.fileno())
    worker.wait()
    f.close()
    with pytest.raises(ValueError, match="fd must be"):
        worker.start(-1)
    r, w = __import__("os").pipe()  # fdatasync of a pipe fails (EINVAL): the errno comes back
    worker.start(r)
    with pytest.raises(OSError):
        worker.wait()
    __import__("os").close(r)
    __import__("os").close(w)


# -- group commit --------------------------------------------------------------------------------
@pytest.mark.parametrize("large", [False, True])
def test_group_commit_shares_flushes_between_concurrent_writers(tmp_path, monkeypatch, large):
    """Eight threads adding one document at a time: every acknowledged add replays, and the
    flushes number fewer than the adds (a slow disk is simulated so that writers overlap).
    ``large``: every record counts as large, so each is flushed as without group commit (and
    marks the deferred ones before it durable)."""
    import time

    from concurrency import run_concurrently

    from muvera import wal as wal_module

    real = wal_module._datasync
    flushes = []

    def slow(fd):
        flushes.append(fd)
        time.sleep(0.002)
        real(fd)

    monkeypatch.setattr(wal_module, "_datasync", slow)
    if large:
        monkeypatch.setattr(wal_module, "_GROUP_MAX_BYTES", 0)
    path = tmp_path / "idx"
    live = MuveraIndex.open(path, CFG, backend="exact", group_commit=True)
    docs = _docs(80)
    acked = []

    def writer(t):
        for i in range(t, 80, 8):
            live.add([docs[i]], ids=[i], metadata=[{"i": i}])
            acked.append(i)

    errors = run_concurrently(writer, 8)
    assert errors == [] and sorted(acked) == list(range(80))
    record_flushes = len(flushes) - 1  # the zeros written ahead once
    assert record_flushes == 80 if large else 0 < record_flushes < 80, record_flushes
    replayed = MuveraIndex.load(path)
    assert sorted(replayed.ids) == list(range(80)) and replayed.metadata([7]) == [{"i": 7}]
    _same(live, replayed, docs[:3])
    live.remove([1, 2])
    live.checkpoint()  # the group log is swapped like the plain one
    live.add([docs[0]], ids=[1000])
    assert live._wal.group_commit
    again = MuveraIndex.load(path)
    assert 1 not in again and 1000 in again and len(again) == 79
    live.close()


def test_group_commit_cuts_a_failed_change_and_breaks_on_a_failed_flush(tmp_path, monkeypatch):
    from muvera import wal as wal_module

    path = tmp_path / "idx"
    live = MuveraIndex.open(path, CFG, backend="exact", group_commit=True)
    live.add(_docs(3))
    end = live._wal.tell()

    def refuse(*args, **kwargs):
        raise ValueError("refused")

    with monkeypatch.context() as m:  # the change fails after its record was written: cut again
        m.setattr(live, "_add_batch", refuse)
        with pytest.raises(ValueError, match="refused"):
            live.add(_docs(2, seed=4))
    assert live._wal.tell() == end and WriteAheadLog.read(path)[1] == end and len(live) == 3
    assert getattr(live._unflushed, "records", []) == []
    live.remove([0])
    assert len(MuveraIndex.load(path)) == 2

    def failing(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(wal_module, "_datasync", failing)
    with pytest.raises(OSError, match="may not be on disk"):
        live.add(_docs(1, seed=5))
    monkeypatch.undo()
    with pytest.raises(OSError, match="earlier flush failed"):  # the log refuses until reloaded
        live.add(_docs(1, seed=6))
    with pytest.raises(OSError, match="earlier flush failed"):
        live.remove([1])
    live.close()
    reopened = MuveraIndex.open(path, group_commit=True)  # what reached the file replays
    reopened.add(_docs(1, seed=7), ids=[50])
    assert 50 in MuveraIndex.load(path)
    reopened.close()


def test_group_commit_arguments(tmp_path):
    with pytest.raises(TypeError, match="group_commit"):
        MuveraIndex.open(tmp_path / "a", CFG, group_commit=1)
    with pytest.raises(ValueError, match="group_commit: only with wal=True"):
        MuveraIndex.open(tmp_path / "b", CFG, wal=False, group_commit=True)


def test_kill_9_with_group_commit_loses_no_acknowledged_write(tmp_path):
    """Four writer threads under group commit, killed at random moments (bench/bench_wal.py
    runs the same function 100 times)."""
    result = _bench_wal().crash_trials_group(5, tmp_path)
    assert result["failures"] == [] and result["documents"] > 5
