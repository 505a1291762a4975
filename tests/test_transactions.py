"""Every change all or nothing: a failed add leaves every part of the index (ids, token store,
exact tier, backend, metadata) as it was, and the next add, search, save and load work."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import muvera
from muvera import FDEConfig, MuveraIndex

CFG = FDEConfig(dimension=16, num_repetitions=4, num_simhash_projections=3)


def _docs(n, seed=0, tokens=6):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((tokens, 16)).astype(np.float32) for _ in range(n)]


def _parts(index):
    """Rows held by each part: all equal in a consistent index."""
    out = {"ids": index._ids.num_rows, "store": len(index._store), "backend": index.backend.ntotal}
    if index._exact is not None:
        out["exact"] = len(index._exact)
    return out


def _assert_consistent(index, n):
    assert set(_parts(index).values()) == {n}, _parts(index)


def test_spilled_exact_tier_on_a_full_disk_rolls_back_every_part(tmp_path):
    """The issue's reproduction: the spill file capped with RLIMIT_FSIZE, batches added until
    OSError; then the parts agree, the next add, rescore search, save and load work."""
    script = textwrap.dedent(f"""
        import resource, signal, sys
        import numpy as np
        import muvera
        cfg = muvera.FDEConfig(dimension=16, num_repetitions=4, num_simhash_projections=3)
        index = muvera.MuveraIndex(cfg, backend="exact", token_codec="int8", keep_exact=True,
                                   exact_spill_dir={str(tmp_path)!r})
        rng = np.random.default_rng(0)
        batch = lambda: [rng.standard_normal((40, 16)).astype(np.float32) for _ in range(5)]
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG as an OSError, not a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, resource.RLIM_INFINITY))
        failed = False
        for _ in range(20):
            try:
                index.add(batch())
            except OSError:
                failed = True
                break
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        assert failed, "the capped spill file never filled"
        n = len(index)
        parts = {{"ids": index._ids.num_rows, "store": len(index._store), "exact": len(index._exact),
                 "backend": index.backend.ntotal}}
        assert set(parts.values()) == {{n}}, parts
        index.add(batch())
        q = [rng.standard_normal((8, 16)).astype(np.float32)]
        ids, _ = index.search(q, k=3, rescore=5)
        assert (ids >= 0).all()
        index.save({str(tmp_path / "idx")!r})
        back = muvera.MuveraIndex.load({str(tmp_path / "idx")!r})
        assert np.array_equal(back.search(q, k=3, rescore=5)[0], ids)
        print("ok", n)
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)  # outside the checkout, whose muvera/ has no built extension
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.startswith("ok")


def test_default_id_past_int64_is_refused_before_any_part_grows():
    index = MuveraIndex(CFG, backend="exact")
    index.add(_docs(1), ids=[2**63 - 1])
    with pytest.raises(ValueError, match="2\\*\\*63 - 1"):
        index.add(_docs(1, seed=1))
    _assert_consistent(index, 1)
    ids, _ = index.search([_docs(1)[0]], k=1)
    assert ids[0, 0] == 2**63 - 1
    index.add(_docs(1, seed=2), ids=[5])  # explicit ids still go in
    _assert_consistent(index, 2)


@pytest.mark.parametrize("first, second", [
    ({"year": 1}, {"Year": 2}),
    ({"lang": "en"}, {"LANG": "de"}),
])
def test_metadata_keys_differing_in_case_are_refused_and_nothing_changes(first, second):
    index = MuveraIndex(CFG, backend="exact")
    index.add(_docs(2), metadata=[first, first])
    with pytest.raises(ValueError, match="differs only in case"):
        index.add(_docs(1, seed=1), ids=[7], metadata=[second])
    _assert_consistent(index, 2)
    assert 7 not in index
    index.add(_docs(1, seed=1), ids=[7], metadata=[first])  # the same id goes in afterwards
    assert index.metadata([7]) == [first]


@pytest.mark.parametrize("meta", [{"a": 1, "A": 2}, {"_ROW": 1}, {"_Json": "x"}])
def test_metadata_case_clashes_within_one_batch_are_refused(meta):
    index = MuveraIndex(CFG, backend="exact")
    with pytest.raises(ValueError, match="metadata\\[0\\]"):
        index.add(_docs(1), metadata=[meta])
    assert len(index) == 0 and _parts(index)["store"] == 0


@pytest.mark.parametrize("backend", ["exact", "faiss:Flat", "faiss:HNSW16", "auto:refine=SQ8"])
def test_a_failure_after_the_backend_grew_rolls_everything_back(monkeypatch, backend):
    """An error after the backend took the new FDEs (here: the token store refusing the
    append) takes them out again: truncated where the backend can, rebuilt where it cannot."""
    index = MuveraIndex(CFG, backend=backend)
    docs = _docs(60)
    index.add(docs[:50], metadata=[{"i": i} for i in range(50)])
    q = [docs[3][:4]]
    before = index.search(q, k=5, candidates=20)

    def boom(*a, **k):
        raise MemoryError("simulated")

    monkeypatch.setattr(index._store, "append_codes", boom)
    with pytest.raises(MemoryError):
        index.add(docs[50:], metadata=[{"i": i} for i in range(50, 60)])
    monkeypatch.undo()
    _assert_consistent(index, 50)
    assert index.metadata([0])[0] == {"i": 0} and len(index.search(q, k=60, where="i >= 50")[0][0]) >= 1
    assert (index.search(q, k=60, where="i >= 50")[0] == -1).all()
    after = index.search(q, k=5, candidates=20)
    np.testing.assert_array_equal(after[0], before[0])
    index.add(docs[50:])
    _assert_consistent(index, 60)


def test_a_failed_first_add_leaves_an_untrained_backend(monkeypatch):
    """The crossing's training belongs to the add: an add that fails leaves no training behind."""
    index = MuveraIndex(CFG, backend="faiss:PQ8x4fs")
    assert index.backend.needs_training
    docs = _docs(300)
    monkeypatch.setattr(index._store, "append_codes", lambda *a, **k: (_ for _ in ()).throw(OSError("disk")))
    with pytest.raises(OSError):
        index.add(docs)
    monkeypatch.undo()
    assert index.backend.needs_training and len(index) == 0
    index.add(docs)
    _assert_consistent(index, 300)


def test_a_crossing_that_fails_keeps_the_old_backend(monkeypatch):
    index = MuveraIndex(CFG, backend="auto")
    docs = _docs(2100, tokens=4)
    index.add(docs[:1990])
    old = index.backend.active
    monkeypatch.setattr(index._store, "append_codes", lambda *a, **k: (_ for _ in ()).throw(OSError("disk")))
    with pytest.raises(OSError):
        index.add(docs[1990:])
    monkeypatch.undo()
    assert index.backend.active == old == "exact"
    _assert_consistent(index, 1990)
    index.add(docs[1990:])
    assert index.backend.active.startswith("faiss:PQ")
    _assert_consistent(index, 2100)


def test_where_params_take_numpy_scalars():
    index = MuveraIndex(CFG, backend="exact")
    index.add(_docs(4), metadata=[{"year": 2000 + i, "score": 0.5 * i, "ok": i % 2 == 0} for i in range(4)])
    q = [_docs(1)[0]]
    for value in (np.int64(2001), np.int32(2001), np.uint16(2001)):
        ids, _ = index.search(q, k=4, where="year = ?", where_params=(value,))
        assert ids[0].tolist().count(1) == 1 and (ids[0] >= 0).sum() == 1
    ids, _ = index.search(q, k=4, where="score = ?", where_params=(np.float32(1.0),))
    assert (ids[0] >= 0).sum() == 1
    ids, _ = index.search(q, k=4, where="ok = ?", where_params=(np.bool_(True),))
    assert (ids[0] >= 0).sum() == 2


def test_a_runaway_where_is_stopped_and_holds_no_lock(monkeypatch):
    import threading
    import time

    from muvera.metadata import MetadataStore

    monkeypatch.setattr(MetadataStore, "WHERE_TIME_LIMIT", 1.0)
    index = MuveraIndex(CFG, backend="exact")
    index.add(_docs(300, tokens=2), metadata=[{"y": i} for i in range(300)])
    q = [_docs(1)[0]]
    errors = []

    def runaway():
        try:
            index.search(q, k=3, where="(SELECT count(*) FROM meta a, meta b, meta c, meta d) > 0")
        except ValueError as exc:
            errors.append(str(exc))

    t = threading.Thread(target=runaway)
    t0 = time.monotonic()
    t.start()
    time.sleep(0.1)
    ids, _ = index.search(q, k=3)  # the index lock is not held by the runaway condition
    searched = time.monotonic() - t0
    t.join(10)
    assert searched < 0.9 and (ids >= 0).all()
    assert errors and "WHERE_TIME_LIMIT" in errors[0] and "1 s" in errors[0]


@pytest.mark.parametrize("name", ["h#tag", "what?x=1", "per%20cent", "all#?%"])
def test_index_paths_with_uri_characters_round_trip(tmp_path, name):
    index = MuveraIndex(CFG, backend="exact")
    index.add(_docs(3), metadata=[{"k": i} for i in range(3)])
    path = tmp_path / name / "idx"
    index.save(path)
    back = MuveraIndex.load(path)
    assert back.metadata([0, 2]) == [{"k": 0}, {"k": 2}]
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no stray file beside it
    assert sorted(p.name for p in (tmp_path / name).iterdir()) == ["idx"]


@pytest.mark.parametrize("case", ["residual", "auto"])
def test_huge_finite_values_give_a_value_error_not_an_abort(case, tmp_path):
    """faiss throws inside OpenMP on overflowing distances, which terminates the process: the
    values are bounded before any training. Run in a subprocess, where an abort would show."""
    script = textwrap.dedent(f"""
        import numpy as np, muvera
        cfg = muvera.FDEConfig(dimension=16, num_repetitions=4, num_simhash_projections=3)
        rng = np.random.default_rng(0)
        if {case!r} == "residual":
            index = muvera.MuveraIndex(cfg, backend="exact", token_codec="residual:2")
            docs = [rng.standard_normal((600, 16)).astype(np.float32) * 1e19]
        else:
            index = muvera.MuveraIndex(cfg, backend="auto", token_codec="float32")
            docs = [rng.standard_normal((4, 16)).astype(np.float32) for _ in range(2100)]
            docs[5] = docs[5] * 1e20
        try:
            index.add(docs)
        except ValueError as exc:
            assert len(index) == 0
            print("refused:", exc)
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)  # outside the checkout, whose muvera/ has no built extension
    assert res.returncode == 0, res.stderr[-2000:]
    assert "refused:" in res.stdout and ("scale the token" in res.stdout)


def test_ball_carving_memory_is_linear_in_the_query_length():
    """A long query is carved in blocks of similarity rows, never the n x n Gram matrix
    (6,000 tokens: 144 MB as a Gram matrix), and the clusters equal the Gram-matrix greedy's."""
    import tracemalloc

    from muvera import ball_carve

    rng = np.random.default_rng(0)
    q = rng.standard_normal((6000, 16)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    tracemalloc.start()
    carved, off = ball_carve(q, np.array([0, len(q)], dtype=np.int64), 0.7)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 40e6, peak
    small = q[:300]
    gram = small @ small.T
    remaining, want = np.ones(300, dtype=bool), []
    while remaining.any():
        seed = int(np.argmax(remaining))
        members = remaining & (gram[seed] >= 0.7)
        members[seed] = True
        want.append(small[members].sum(axis=0))
        remaining &= ~members
    got, _ = ball_carve(small, np.array([0, 300], dtype=np.int64), 0.7)
    np.testing.assert_allclose(got, np.array(want), rtol=0, atol=0)
    assert off[-1] == len(carved) <= len(q)


def _small_index(n=200, seed=0):
    index = MuveraIndex(CFG, backend="exact")
    index.add(_docs(n, seed=seed), metadata=[{"n": n} for _ in range(n)])
    return index


def test_loads_during_another_process_saves_get_the_old_or_the_new_index(tmp_path):
    """A writer process saves the same path over and over (alternating 200 and 300 documents);
    every load here meanwhile succeeds and sees one whole version, never a mix or an error."""
    path = tmp_path / "idx"
    _small_index().save(path)
    writer = textwrap.dedent(f"""
        import numpy as np, muvera, time
        cfg = muvera.FDEConfig(dimension=16, num_repetitions=4, num_simhash_projections=3)
        rng = np.random.default_rng(1)
        versions = []
        for n in (200, 300):
            index = muvera.MuveraIndex(cfg, backend="exact")
            index.add([rng.standard_normal((6, 16)).astype(np.float32) for _ in range(n)],
                      metadata=[{{"n": n}} for _ in range(n)])
            versions.append(index)
        end = time.monotonic() + 4.0
        i = 0
        while time.monotonic() < end:
            versions[i % 2].save({str(path)!r})
            i += 1
        print("saves", i)
    """)
    proc = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path)
    loads, seen = 0, set()
    try:
        while proc.poll() is None:
            index = MuveraIndex.load(path)
            n = len(index)
            assert index.metadata([0])[0] == {"n": n} and n in (200, 300)
            seen.add(n)
            loads += 1
    finally:
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    assert loads > 5 and int(out.split()[-1]) > 5
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_a_second_writer_is_refused_and_a_live_save_is_never_cleaned(tmp_path):
    """A live save's temporary directory (its marker locked by another process) is neither
    deleted by a save or load here nor overtaken: the second writer gets a clear error. Once
    the first writer is gone, its leftovers are stale and the next save removes them."""
    path = tmp_path / "idx"
    _small_index().save(path)
    holder = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from muvera import index_format
        tmp = Path({str(path)!r} + ".tmp-feedbeefcafe")
        tmp.mkdir()
        claim = index_format._claim(tmp, "idx")
        (tmp / "tokens.npy").write_bytes(b"partial")
        print("claimed", flush=True)
        sys.stdin.readline()
    """)
    proc = subprocess.Popen([sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=tmp_path,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "claimed"
        MuveraIndex.load(path)  # loads clean stale temporaries: this one is live
        with pytest.raises(ValueError, match="is being saved by pid"):
            _small_index(seed=3).save(path)
        assert (tmp_path / "idx.tmp-feedbeefcafe" / "tokens.npy").exists()
        assert len(MuveraIndex.load(path)) == 200  # the refused save changed nothing
    finally:
        proc.stdin.write("\n")
        proc.stdin.close()
        proc.wait(timeout=30)
    _small_index(n=250, seed=3).save(path)  # the holder is gone: its leftovers are stale now
    assert not (tmp_path / "idx.tmp-feedbeefcafe").exists()
    assert len(MuveraIndex.load(path)) == 250


def test_a_users_own_file_in_an_index_directory_is_never_deleted(tmp_path):
    path = tmp_path / "idx"
    _small_index().save(path)
    (path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="notes.txt"):
        _small_index(seed=2).save(path)
    assert (path / "notes.txt").read_text() == "mine"
    assert len(MuveraIndex.load(path)) == 200


def test_an_unmarked_empty_leftover_is_removed_once_old(tmp_path):
    import os

    from muvera import index_format

    path = tmp_path / "idx"
    _small_index().save(path)
    fresh, old = tmp_path / "idx.tmp-000000000001", tmp_path / "idx.tmp-000000000002"
    fresh.mkdir()
    old.mkdir()
    past = os.stat(old).st_mtime - 2 * index_format.UNMARKED_GRACE_S
    os.utime(old, (past, past))
    _small_index().save(path)
    assert fresh.exists() and not old.exists()  # a young one may be a live save before its marker


def test_stream_batches_with_a_string_for_ids_or_metadata_twice_are_refused():
    toks = np.ones((6, 16), np.float32)
    index = MuveraIndex(CFG, backend="exact")
    with pytest.raises(TypeError, match="'ids' must be a sequence"):
        index.add(iter([{"tokens": toks, "lengths": [3, 3], "ids": "ab"}]))
    with pytest.raises(ValueError, match="carries metadata and metadata= was given"):
        index.add(iter([{"tokens": toks, "lengths": [3, 3], "metadata": [{"a": 1}] * 2}]), metadata=[{"b": 2}] * 2)
    assert len(index) == 0

    def broken():
        yield [toks[:3]]
        raise ValueError("reader broke")

    with pytest.raises(ValueError, match="batch 1 failed"):
        index.add(broken())
    assert len(index) == 1


def test_a_flipped_npy_header_without_verification_is_a_value_error(tmp_path):
    index = _small_index(20)
    index.save(tmp_path / "idx")
    path = tmp_path / "idx" / "tokens.npy"
    raw = bytearray(path.read_bytes())
    raw[20] ^= 0x5A
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="tokens.npy: unreadable array file"):
        MuveraIndex.load(tmp_path / "idx", verify=False)


def test_deeply_nested_metadata_is_a_value_error():
    index = MuveraIndex(CFG, backend="exact")
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(ValueError, match="metadata\\[0\\]"):
        index.add(_docs(1), metadata=[{"x": deep}])
    assert len(index) == 0


def test_a_compact_that_fails_changes_nothing(monkeypatch):
    index = _small_index(50)
    index.remove(list(range(0, 50, 5)))
    q = [_docs(1, seed=9)[0]]
    before = index.search(q, k=5)

    def boom(keep):
        raise MemoryError("simulated")

    monkeypatch.setattr(index._meta, "compact", boom)
    with pytest.raises(MemoryError):
        index.compact()
    monkeypatch.undo()
    assert index.num_deleted == 10 and _parts(index)["store"] == 50
    np.testing.assert_array_equal(index.search(q, k=5)[0], before[0])
    assert index.compact() == 10
    _assert_consistent(index, 40)
    np.testing.assert_array_equal(index.search(q, k=5)[0], before[0])
    assert index.metadata([1])[0] == {"n": 50}


def test_parts_from_elsewhere_must_agree():
    """MuveraIndex.from_parts (encode_dataset's door into an index) refuses misaligned parts, and
    the exact tier can be replaced only by a store of the same rows."""
    from muvera import ExactBackend, IdMap, TokenStore

    tokens = np.concatenate(_docs(3)).astype(np.float16)
    store = TokenStore.from_arrays(tokens, np.array([0, 6, 12, 18]), "float16")
    ids = IdMap()
    ids.append(ids.check_new(None, 3))
    backend = ExactBackend(CFG.output_dimension).set_vectors(np.zeros((2, CFG.output_dimension), np.float32))
    with pytest.raises(ValueError, match="must agree"):
        MuveraIndex.from_parts(CFG, ids=ids, store=store, backend=backend)
    index = MuveraIndex(CFG, backend="exact")
    with pytest.raises(ValueError, match="keep_exact"):
        index.exact_tier = store
    with pytest.raises(TypeError, match="build_state"):
        index.build_state = "done"
