"""Ray integration: distributed encoding and the sharded index against single-process muvera."""

from __future__ import annotations

import json
import re
import os
import subprocess
import sys
import time

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

import muvera  # noqa: E402
from muvera.distributed import (ShardedIndex, encode_dataset, index_from_encoded,  # noqa: E402
                                load_encoded, shard_of)

# Subprocesses start outside the repository root, whose muvera/ (no built extension) would
# shadow the installed package.
_HERE = os.path.dirname(os.path.abspath(__file__))

DIM = 16
CONFIG = muvera.FDEConfig.preset("1280", dimension=DIM, seed=7)
ACTORS = {"num_cpus": 0}  # shards must not hold the 2 CPUs Ray Data needs


@pytest.fixture(scope="module")
def ray_session(tmp_path_factory):
    started = not ray.is_initialized()
    if started:
        # Ray workers put the driver's working directory on sys.path: start them from a neutral
        # directory so that the repository's muvera/ (no built extension) cannot shadow the
        # installed package.
        cwd = os.getcwd()
        os.chdir(tmp_path_factory.mktemp("ray-cwd"))
        try:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        finally:
            os.chdir(cwd)
    ctx = ray.data.DataContext.get_current()
    saved = ctx.enable_progress_bars
    ctx.enable_progress_bars = False
    yield
    ctx.enable_progress_bars = saved
    if started:
        ray.shutdown()


def make_docs(n, seed=0, lo=3, hi=12):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(int(rng.integers(lo, hi)), DIM)).astype(np.float32) for _ in range(n)]


def packed_f16(docs):
    return (np.concatenate(docs).astype(np.float16),
            np.array([len(d) for d in docs], dtype=np.int64))


def assert_same(a, b):
    (ia, sa), (ib, sb) = a, b
    assert ia.dtype == ib.dtype
    np.testing.assert_array_equal(ia, ib)
    np.testing.assert_array_equal(sa, sb)


# -- routing ------------------------------------------------------------------------------------
def test_shard_of_is_stable_across_processes():
    ids = [0, 1, 12345, "doc-1", "7", 7]
    here = [shard_of(x, 5) for x in ids]
    code = ("from muvera.distributed import shard_of; "
            f"print([shard_of(x, 5) for x in {ids!r}])")
    other = subprocess.run([sys.executable, "-c", code], cwd=_HERE, capture_output=True, text=True,
                           env={**os.environ, "PYTHONHASHSEED": "123"}, check=True).stdout.strip()
    assert other == str(here)
    assert shard_of(12345, 8) == 2 and shard_of("doc-1", 8) == 7  # pinned: routing is persisted
    with pytest.raises(TypeError):
        shard_of(1.5, 3)


def test_import_does_not_pull_in_ray():
    code = "import sys, muvera, muvera.distributed; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=_HERE, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- distributed encoding -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def encoded(ray_session, tmp_path_factory):
    docs = make_docs(70, seed=1)
    ids = [1000 + i for i in range(len(docs))]
    ds = ray.data.from_items([{"id": i, "tokens": d} for i, d in zip(ids, docs)])
    out = encode_dataset(ds, CONFIG, tmp_path_factory.mktemp("enc"), shard_rows=25, batch_size=16,
                         num_workers=2)
    return out, docs, ids


def test_encode_dataset_equals_single_process(encoded):
    out, docs, ids = encoded
    got_ids, fdes, tokens, lengths = load_encoded(out)
    tok16, lens = packed_f16(docs)
    assert got_ids == ids  # input order is kept
    np.testing.assert_array_equal(lengths, lens)
    np.testing.assert_array_equal(tokens, tok16)
    want = muvera.FDEEncoder(CONFIG).encode_documents(tok16, lengths=lens)
    assert fdes.dtype == np.float32 and np.array_equal(fdes, want)  # bit-exact

    m = json.loads((out / "manifest.json").read_text())
    assert m["config"] == CONFIG.to_dict() and m["num_rows"] == 70
    assert [s["rows"] for s in m["shards"]] == [25, 25, 20]  # workers wrote shards of shard_rows
    listed = sorted(f["name"] for s in m["shards"] for f in s["files"].values())
    assert sorted(p.name for p in out.iterdir()) == sorted(["manifest.json"] + listed)
    assert len(listed) == 12 and all(re.fullmatch(r"(fdes|tokens|lengths)-\d+\.npy|ids-\d+\.json", n)
                                     for n in listed)
    assert all(len(f["sha256"]) == 64 for s in m["shards"] for f in s["files"].values())


def test_workers_writing_equals_driver_writing(encoded, ray_session, tmp_path):
    """The default (each worker writes its shards) and the driver-written output hold the same
    documents, FDEs and tokens; the driver-written one in shards of shard_rows too."""
    out, docs, ids = encoded
    ds = ray.data.from_items([{"id": i, "tokens": d} for i, d in zip(ids, docs)])
    driver = encode_dataset(ds, CONFIG, tmp_path / "driver", shard_rows=25, batch_size=16, num_workers=2,
                            write_in_workers=False)
    for a, b in zip(load_encoded(out), load_encoded(driver)):
        if isinstance(a, list):
            assert a == b
        else:
            np.testing.assert_array_equal(a, b)
    assert [s["rows"] for s in json.loads((driver / "manifest.json").read_text())["shards"]] == [25, 25, 20]


def test_encode_refuses_to_overwrite_and_detects_corruption(encoded, ray_session, tmp_path):
    out, _, _ = encoded
    with pytest.raises(FileExistsError):
        encode_dataset(ray.data.from_items([{"id": 1, "tokens": np.ones((2, DIM))}]), CONFIG, out)
    # Bad input surfaces on the driver with its own type, naming the document; nothing is left.
    rows = [{"id": i, "tokens": np.ones((2, DIM))} for i in range(30)] + [{"id": 30, "tokens": np.ones((2, 5))}]
    with pytest.raises(ValueError, match="document 30: expected 16 columns"):
        encode_dataset(ray.data.from_items(rows), CONFIG, tmp_path / "bad", shard_rows=10, batch_size=8)
    assert list((tmp_path / "bad").iterdir()) == []
    copy = tmp_path / "copy"
    copy.mkdir()
    for p in out.iterdir():
        (copy / p.name).write_bytes(p.read_bytes())
    name = json.loads((out / "manifest.json").read_text())["shards"][1]["files"]["fdes"]["name"]
    blob = bytearray((copy / name).read_bytes())
    blob[-1] ^= 0xFF
    (copy / name).write_bytes(bytes(blob))
    with pytest.raises(ValueError, match=f"{name}: SHA-256"):
        load_encoded(copy)


def test_encode_flat_lists_and_files(ray_session, tmp_path):
    docs = make_docs(12, seed=2)
    ids = [f"d{i}" for i in range(len(docs))]
    tok16, lens = packed_f16(docs)
    want = muvera.FDEEncoder(CONFIG).encode_documents(tok16, lengths=lens)

    # Flat row-major lists (how a Parquet list<float> column arrives), string ids.
    flat = ray.data.from_items([{"doc": i, "vec": d.ravel().tolist()} for i, d in zip(ids, docs)])
    out = encode_dataset(flat, CONFIG, tmp_path / "flat", tokens_column="vec", id_column="doc",
                         batch_size=5, num_workers=1)
    got_ids, fdes, _, _ = load_encoded(out)
    assert got_ids == ids and np.array_equal(fdes, want)

    # Files: .npy (one document, id = stem), packed .npz with ids, per-key .npz.
    files = []
    for i in range(4):
        np.save(tmp_path / f"d{i}.npy", docs[i])
        files.append(tmp_path / f"d{i}.npy")
    np.savez(tmp_path / "packed.npz", tokens=np.concatenate(docs[4:8]), lengths=lens[4:8],
             ids=np.array(ids[4:8]))
    np.savez(tmp_path / "named.npz", **{f"x{i}": docs[i] for i in range(8, 12)})
    files += [tmp_path / "packed.npz", tmp_path / "named.npz"]
    out = encode_dataset(files, CONFIG, tmp_path / "files", shard_rows=5, num_workers=2)
    got_ids, fdes, tokens, _ = load_encoded(out)
    assert got_ids == ids[:8] + [f"named:x{i}" for i in range(8, 12)]
    assert np.array_equal(fdes, want) and np.array_equal(tokens, tok16)


def test_index_from_encoded_equals_direct_index(encoded):
    out, docs, ids = encoded
    direct = muvera.MuveraIndex(CONFIG)
    direct.add(docs, ids=ids)
    queries = make_docs(6, seed=3, lo=2, hi=6)
    for kwargs in ({}, {"reencode": True}):
        built = index_from_encoded(out, **kwargs)
        assert built.ids == ids and len(built) == len(direct)
        np.testing.assert_array_equal(built.backend.inner.vectors, direct.backend.inner.vectors)
        assert_same(built.search(queries, k=5, candidates=10), direct.search(queries, k=5, candidates=10))
        assert_same(built.search_exact(queries, k=5), direct.search_exact(queries, k=5))


# -- sharded index ------------------------------------------------------------------------------
@pytest.mark.parametrize("string_ids", [False, True])
def test_sharded_equals_single_index(ray_session, string_ids):
    docs = make_docs(60, seed=4)
    ids = [f"doc-{i}" for i in range(60)] if string_ids else [3 * i + 1 for i in range(60)]
    single = muvera.MuveraIndex(CONFIG)
    single.add(docs, ids=ids)
    queries = make_docs(7, seed=5, lo=2, hi=6)
    with ShardedIndex(CONFIG, 3, num_threads=1, actor_options=ACTORS) as sharded:
        sharded.add(docs[:25], ids=ids[:25])
        tok, lens = packed_f16(docs[25:])  # packed input works too
        sharded.add(tok, ids=np.array(ids[25:]), lengths=lens)
        assert len(sharded) == 60 and sorted(sharded.ids, key=str) == sorted(ids, key=str)
        assert all(n > 0 for n in sharded.shard_sizes())
        want = single.search_exact(queries, k=8)
        assert want[0].dtype == (object if string_ids else np.int64)
        assert_same(sharded.search_exact(queries, k=8), want)
        assert_same(sharded.search(queries, k=8, candidates=60), want)  # exhaustive
        # k beyond the corpus pads like the single index does
        assert_same(sharded.search_exact(queries[:2], k=70), single.search_exact(queries[:2], k=70))
        # filters are routed to the shards that hold the ids
        keep = ids[::4]
        assert_same(sharded.search_exact(queries, k=5, filter_ids=keep),
                    single.search_exact(queries, k=5, filter_ids=keep))
        ids_approx, _ = sharded.search(queries, k=5, candidates=10)
        assert ids_approx.shape == (7, 5)


def test_sharded_add_remove_routing(ray_session):
    docs = make_docs(40, seed=6)
    ids = list(range(40))
    single = muvera.MuveraIndex(CONFIG)
    single.add(docs, ids=ids)
    with ShardedIndex(CONFIG, 4, num_threads=1, actor_options=ACTORS) as sharded:
        sharded.add(docs, ids=ids)
        per_shard = [ray.get(a.ids.remote()) for a in sharded.actors]
        for s, held in enumerate(per_shard):
            assert held == [x for x in ids if shard_of(x, 4) == s]
        with pytest.raises(ValueError, match="already in the index"):
            sharded.add(docs[:2], ids=[0, 100])
        with pytest.raises(TypeError, match="ids: required"):
            sharded.add(docs[:2], ids=None)
        with pytest.raises(KeyError):
            sharded.remove([1, 2, 999])
        assert len(sharded) == 40  # nothing changed by the failed calls
        assert sharded.remove([1, 2, 17]) == 3 and single.remove([1, 2, 17]) == 3
        assert 1 not in sharded and 3 in sharded
        np.testing.assert_array_equal(sharded.get_tokens(5), single.get_tokens(5))
        queries = make_docs(5, seed=7, lo=2, hi=6)
        assert_same(sharded.search_exact(queries, k=6), single.search_exact(queries, k=6))
        assert sharded.compact() == 3
        assert_same(sharded.search(queries, k=6, candidates=40), single.search_exact(queries, k=6))


def test_sharded_save_load_round_trip(ray_session, tmp_path):
    docs = make_docs(30, seed=8)
    ids = [f"s{i}" for i in range(30)]
    queries = make_docs(4, seed=9, lo=2, hi=6)
    with pytest.raises(ValueError, match="bogus"):
        ShardedIndex(CONFIG, 2, backend="bogus:x", num_threads=1, actor_options=ACTORS)
    with ShardedIndex(CONFIG, 2, num_threads=1, actor_options=ACTORS) as sharded:
        with pytest.raises(TypeError, match="one kind of id"):
            sharded.add(docs[:2], ids=["a", 1])
        sharded.add(docs, ids=ids)
        with pytest.raises(TypeError, match="one kind of id"):
            sharded.add(docs[:1], ids=[99])
        before = sharded.search_exact(queries, k=6)
        assert before[0].dtype == object
        sharded.save(tmp_path / "idx")
    m = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert m["num_shards"] == 2 and m["shards"] == ["shard-00000", "shard-00001"]
    assert "sha256" in m["checksum"]  # the sharded manifest is checksummed like an index's
    # each shard is an ordinary MuveraIndex directory
    assert len(muvera.MuveraIndex.load(tmp_path / "idx" / "shard-00000")) > 0
    with ShardedIndex.load(tmp_path / "idx", num_threads=1, actor_options=ACTORS) as again:
        assert len(again) == 30
        assert_same(again.search_exact(queries, k=6), before)
        assert_same(again.search(queries, k=6, candidates=30), before)


def test_dead_shard_reported_and_reloaded_without_loss(ray_session, tmp_path):
    docs = make_docs(50, seed=10)
    ids = list(range(50))
    queries = make_docs(5, seed=11, lo=2, hi=6)
    single = muvera.MuveraIndex(CONFIG)
    single.add(docs[:40], ids=ids[:40])
    single.remove([0, 1])
    sharded = ShardedIndex(CONFIG, 3, shard_dir=tmp_path / "live", num_threads=1, actor_options=ACTORS)
    try:
        sharded.add(docs[:30], ids=ids[:30])
        sharded.add(docs[30:40], ids=ids[30:40])  # after the first save: autosaved too
        sharded.remove([0, 1])
        before = sharded.search_exact(queries, k=7)
        assert_same(before, single.search_exact(queries, k=7))

        ray.kill(sharded.actors[1])
        deadline = time.time() + 30  # ray.kill is asynchronous: a call may still land before it
        while sharded.ping()[1] and time.time() < deadline:
            time.sleep(0.05)
        with pytest.raises(RuntimeError, match=r"shard 1 is unavailable \(.*\); call reload_shard\(1\)"):
            sharded.search(queries, k=7)
        on_dead = [x for x in range(40, 50) if shard_of(x, 3) == 1][:1]
        with pytest.raises(RuntimeError, match="shard 1 is unavailable"):
            sharded.add([docs[on_dead[0]]], ids=on_dead)
        assert sharded.ping() == [True, False, True]

        sharded.reload_shard(1)
        assert sharded.ping() == [True, True, True]
        assert len(sharded) == 38
        assert_same(sharded.search_exact(queries, k=7), before)
        assert_same(sharded.search(queries, k=7, candidates=50), before)
        sharded.add(docs[40:], ids=ids[40:])  # service resumes
        single.add(docs[40:], ids=ids[40:])
        assert_same(sharded.search_exact(queries, k=7), single.search_exact(queries, k=7))
    finally:
        sharded.close()
    with ShardedIndex.load(tmp_path / "live", num_threads=1, actor_options=ACTORS) as again:
        assert_same(again.search_exact(queries, k=7), single.search_exact(queries, k=7))
    with pytest.raises(FileExistsError):
        ShardedIndex(CONFIG, 3, shard_dir=tmp_path / "live")


def test_reload_needs_shard_dir(ray_session):
    with ShardedIndex(CONFIG, 2, actor_options=ACTORS) as sharded:
        with pytest.raises(RuntimeError, match="no shard_dir"):
            sharded.reload_shard(0)


def test_sharded_residual_codec_trains_per_shard_or_refuses_first(ray_session):
    docs = make_docs(200, seed=9, lo=20, hi=40)
    with ShardedIndex(CONFIG, 2, num_threads=1, actor_options=ACTORS, token_codec="residual:2") as sharded:
        with pytest.raises(ValueError, match="trains per shard"):
            sharded.add(docs[:4], ids=list(range(4)))  # too few tokens for a shard's first add
        assert len(sharded) == 0  # refused before any shard changed
        sharded.add(docs, ids=list(range(200)))
        assert len(sharded) == 200
        ids, scores = sharded.search(docs[:3], k=1, candidates=200)
        assert ids[:, 0].tolist() == [0, 1, 2]  # each document finds itself on the codes
        # the shards prune their candidates by centroid interaction; the width is a search param
        ids, _ = sharded.search(docs[:3], k=1, candidates=20, params={"prune_factor": 8})
        assert ids[:, 0].tolist() == [0, 1, 2]


def test_sharded_search_takes_metadata_where_and_rescore_like_one_index(ray_session):
    """Parity with MuveraIndex.search: metadata stored per shard, `where` filters, `rescore`
    from the float16 exact tier; results equal one index holding the same documents."""
    docs = make_docs(48, seed=9)
    ids = list(range(48))
    meta = [{"year": 2000 + i % 4, "lang": "en" if i % 3 else "fr"} for i in range(48)]
    single = muvera.MuveraIndex(CONFIG, token_codec="int8", keep_exact=True)
    single.add(docs, ids=ids, metadata=meta)
    queries = make_docs(5, seed=10, lo=2, hi=6)
    with ShardedIndex(CONFIG, 3, num_threads=1, actor_options=ACTORS, token_codec="int8",
                      keep_exact=True) as sharded:
        sharded.add(docs, ids=ids, metadata=meta)
        cond = dict(where="year >= ? AND lang = ?", where_params=(2002, "en"))
        assert_same(sharded.search_exact(queries, k=6, **cond), single.search_exact(queries, k=6, **cond))
        assert_same(sharded.search(queries, k=6, candidates=48, **cond), single.search(queries, k=6, candidates=48, **cond))
        assert_same(sharded.search(queries, k=5, candidates=48, rescore=10),
                    single.search(queries, k=5, candidates=48, rescore=10))
        with pytest.raises(ValueError, match="rescore: expected >= k"):
            sharded.search(queries, k=5, rescore=2)
        with pytest.raises(TypeError, match="where_params"):
            sharded.search(queries, k=5, where="year = ?", where_params="2001")
    with ShardedIndex(CONFIG, 2, num_threads=1, actor_options=ACTORS) as plain:
        plain.add(docs[:10], ids=ids[:10])
        with pytest.raises(ValueError, match="keep_exact"):
            plain.search(queries, k=2, rescore=5)
        with pytest.raises(ValueError, match="prune_factor"):  # float16 codes carry no centroid ids
            plain.search(queries, k=2, params={"prune_factor": 4})


def test_sharded_tune_stores_each_shards_setting_and_search_uses_it(ray_session, tmp_path):
    """tune() runs on every shard; search() then takes unset candidates/params from each shard's
    setting, as MuveraIndex.search does: one shard equals one tuned index exactly."""
    docs = make_docs(120, seed=11)
    ids = list(range(120))
    queries = make_docs(12, seed=12, lo=2, hi=6)
    single = muvera.MuveraIndex(CONFIG, backend="exact")
    single.add(docs, ids=ids)
    want = single.tune(queries, target_recall=0.9, k=5, verbose=False)
    with ShardedIndex(CONFIG, 1, backend="exact", num_threads=1, actor_options=ACTORS) as one:
        one.add(docs, ids=ids)
        assert one.tuned == [None]
        got = one.tune(queries, target_recall=0.9, k=5)
        assert got[0].chosen["candidates"] == want.chosen["candidates"]
        assert one.tuned[0]["candidates"] == single.tuned["candidates"]
        assert_same(one.search(queries, k=5), single.search(queries, k=5))  # the tuned candidates
    with ShardedIndex(CONFIG, 2, backend="exact", num_threads=1, actor_options=ACTORS,
                      shard_dir=str(tmp_path / "sh")) as two:
        two.add(docs, ids=ids)
        results = two.tune(queries, target_recall=0.9, k=5)
        assert len(results) == 2 and all(t is not None for t in two.tuned)
        cands = [t["candidates"] for t in two.tuned]
        ids_tuned, _ = two.search(queries, k=5)
        two.save()
    again = ShardedIndex.load(tmp_path / "sh", actor_options=ACTORS)
    try:
        assert [t["candidates"] for t in again.tuned] == cands  # saved with the shards
        np.testing.assert_array_equal(again.search(queries, k=5)[0], ids_tuned)
    finally:
        again.close()
