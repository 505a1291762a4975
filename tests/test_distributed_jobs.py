"""Ray block jobs: packed batches in and shards out (encode_packed), texts with the model in the
workers (index_texts), a worker killed mid-job, a driver killed and resumed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

ray = pytest.importorskip("ray")

import muvera  # noqa: E402
from muvera.distributed import encode_packed, index_from_encoded, index_texts, load_encoded  # noqa: E402

DIM = 16
CONFIG = muvera.FDEConfig.preset("1280", dimension=DIM, seed=7)
BIG = muvera.FDEConfig.preset("10240", dimension=128)


@pytest.fixture(scope="module")
def ray_session(tmp_path_factory):
    started = not ray.is_initialized()
    if started:
        cwd = os.getcwd()  # workers put the driver's cwd on sys.path: not the checkout's muvera/
        os.chdir(tmp_path_factory.mktemp("ray-cwd"))
        try:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        finally:
            os.chdir(cwd)
    yield
    if started:
        ray.shutdown()


def packed(n, dim=DIM, seed=0, lo=2, hi=12):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(lo, hi, size=n).astype(np.int64)
    return rng.standard_normal((int(lengths.sum()), dim)).astype(np.float32), lengths


def test_packed_blocks_equal_the_in_process_encoder_bit_for_bit(ray_session, tmp_path):
    tokens, lengths = packed(300)
    ids = [f"d{i}" for i in range(300)]
    out = encode_packed(tokens, lengths, CONFIG, tmp_path / "enc", ids=ids, shard_rows=64, num_workers=2)
    got_ids, fdes, tok16, lens = load_encoded(out)
    ref16 = tokens.astype(np.float16)
    assert got_ids == ids
    np.testing.assert_array_equal(lens, lengths)
    np.testing.assert_array_equal(tok16, ref16)
    np.testing.assert_array_equal(fdes, muvera.FDEEncoder(CONFIG).encode_documents(ref16, lengths=lengths))
    names = sorted(p.name for p in out.iterdir())
    assert names.count("manifest.json") == 1 and not [n for n in names if n.startswith(("entry-", "job"))]
    assert len([n for n in names if n.startswith("fdes-")]) == 5  # ceil(300 / 64) blocks = shards
    # the index built from them equals one built in this process
    single = muvera.MuveraIndex(CONFIG, backend="exact")
    single.add(tokens, ids=ids, lengths=lengths)
    built = index_from_encoded(out, backend="exact")
    q, ql = packed(4, seed=9)
    for a, b in zip(built.search(q, k=5, lengths=ql), single.search(q, k=5, lengths=ql)):
        np.testing.assert_array_equal(a, b)


def test_packed_blocks_refuse_bad_input(ray_session, tmp_path):
    tokens, lengths = packed(20)
    with pytest.raises(ValueError, match="lengths"):
        encode_packed(tokens, lengths + 1, CONFIG, tmp_path / "a")
    with pytest.raises(ValueError, match="at least one token"):
        encode_packed(tokens, np.r_[0, lengths[1:], lengths[0]], CONFIG, tmp_path / "a")
    with pytest.raises(ValueError, match="duplicate|unique"):
        encode_packed(tokens, lengths, CONFIG, tmp_path / "a", ids=[1] * 20)
    with pytest.raises(TypeError, match="config"):
        encode_packed(tokens, lengths, {"dimension": DIM}, tmp_path / "a")
    with pytest.raises(ValueError, match="more than this Ray cluster has"):  # would never start: no hang
        encode_packed(tokens, lengths, CONFIG, tmp_path / "a", num_workers=3)
    bad = tokens.copy()
    bad[int(lengths[:7].sum())] = np.nan  # document 7, in the second block
    with pytest.raises(ValueError, match="document 'x7'.*NaN"):
        encode_packed(bad, lengths, CONFIG, tmp_path / "b", ids=[f"x{i}" for i in range(20)], shard_rows=5)
    assert not (tmp_path / "b" / "manifest.json").exists()
    encode_packed(tokens, lengths, CONFIG, tmp_path / "c", shard_rows=8)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        encode_packed(tokens, lengths, CONFIG, tmp_path / "c")
    encode_packed(tokens[: int(lengths[:10].sum())], lengths[:10], CONFIG, tmp_path / "c", overwrite=True)
    assert len(load_encoded(tmp_path / "c")[0]) == 10
    with pytest.raises(ValueError, match="other settings"):  # a finished job cannot be resumed as another
        encode_packed(tokens, lengths, CONFIG, tmp_path / "b", shard_rows=6, resume=True)


def _worker_pids():
    out = subprocess.run(["pgrep", "-f", "ray::_ShardWorker"], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def test_a_worker_killed_mid_job_loses_and_doubles_nothing(ray_session, tmp_path):
    tokens, lengths = packed(6000, dim=128, lo=16, hi=48)
    box = {}

    def run():
        try:
            box["out"] = encode_packed(tokens, lengths, BIG, tmp_path / "enc", shard_rows=100, num_workers=2)
        except BaseException as exc:  # noqa: BLE001
            box["error"] = exc

    job = threading.Thread(target=run)
    job.start()
    killed = None
    deadline = time.time() + 60
    while job.is_alive() and time.time() < deadline and killed is None:
        entries = list((tmp_path / "enc").glob("entry-*.json")) if (tmp_path / "enc").exists() else []
        pids = _worker_pids()
        if len(entries) >= 2 and pids:
            os.kill(pids[0], signal.SIGKILL)
            killed = pids[0]
        time.sleep(0.005)
    job.join(120)
    assert killed is not None, "the job ended before a worker could be killed: make it longer"
    assert "error" not in box, box.get("error")
    ids, fdes, tok16, lens = load_encoded(box["out"])
    assert ids == list(range(6000))  # every document once, in order
    np.testing.assert_array_equal(lens, lengths)
    ref16 = tokens.astype(np.float16)
    np.testing.assert_array_equal(tok16, ref16)
    np.testing.assert_array_equal(fdes[::97], muvera.FDEEncoder(BIG).encode_documents(
        ref16, lengths=lengths)[::97])


DRIVER = textwrap.dedent("""
    import sys, numpy as np, ray, muvera
    from muvera.distributed import encode_packed
    ray.init(address=sys.argv[2], log_to_driver=False)
    rng = np.random.default_rng(0)
    lengths = rng.integers(16, 48, size=6000).astype(np.int64)
    tokens = rng.standard_normal((int(lengths.sum()), 128)).astype(np.float32)
    encode_packed(tokens, lengths, muvera.FDEConfig.preset("10240", dimension=128), sys.argv[1],
                  shard_rows=100, num_workers=1, resume=len(sys.argv) > 3)
    print("done", flush=True)
""")


def test_a_killed_driver_resumes_encoding_only_what_is_missing(ray_session, tmp_path):
    out = tmp_path / "enc"
    address = ray.get_runtime_context().gcs_address
    env = {**os.environ, "PYTHONPATH": ""}
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(out), address], cwd=str(tmp_path), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    deadline = time.time() + 90
    while time.time() < deadline and proc.poll() is None:
        if out.exists() and len(list(out.glob("entry-*.json"))) >= 4:
            break
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    assert not (out / "manifest.json").exists(), "the job ended before the kill: make it longer"
    kept = {p.name: p.stat().st_mtime_ns for p in out.glob("fdes-*.npy")
            if (out / p.name.replace("fdes-", "entry-").replace(".npy", ".json")).exists()}
    assert len(kept) >= 4
    res = subprocess.run([sys.executable, "-c", DRIVER, str(out), address, "resume"], cwd=str(tmp_path), env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "done" in res.stdout, res.stderr[-2000:]
    for name, mtime in kept.items():  # the blocks done before the kill were not encoded again
        assert (out / name).stat().st_mtime_ns == mtime
    ids, fdes, tok16, lens = load_encoded(out)
    rng = np.random.default_rng(0)
    lengths = rng.integers(16, 48, size=6000).astype(np.int64)
    tokens = rng.standard_normal((int(lengths.sum()), 128)).astype(np.float32)
    assert ids == list(range(6000))
    np.testing.assert_array_equal(tok16, tokens.astype(np.float16))
    np.testing.assert_array_equal(fdes[::131], muvera.FDEEncoder(BIG).encode_documents(
        tokens.astype(np.float16), lengths=lengths)[::131])


def test_index_texts_equals_a_retriever_build(ray_session, tmp_path):
    pytest.importorskip("transformers")
    from muvera import Retriever

    texts = [f"Document {i} is about {topic} and {i % 7} other things." for i, topic in
             enumerate(["cells", "proteins", "rivers", "planets", "music", "law"] * 5)]
    ids = [f"doc-{i}" for i in range(len(texts))]
    meta = [{"topic": t.split()[4], "n": i} for i, t in enumerate(texts)]
    out = index_texts(texts, tmp_path / "enc", model="default", config="1280", ids=ids, metadata=meta,
                      shard_rows=8, batch_size=8, model_workers=1)
    built = index_from_encoded(out, backend="exact")
    ref = Retriever("default", config="1280", backend="exact", batch_size=8, progress=False)
    ref.add(texts, ids=ids, metadata=meta)
    assert built.ids == ref.index.ids
    assert built.metadata(ids) == ref.index.metadata(ids)  # with the kept text
    assert built.model == "default"
    a, b = built.store.tokens, ref.index.store.tokens
    np.testing.assert_allclose(a.astype(np.float32), b.astype(np.float32), atol=2e-3)  # the model's determinism
    _, fdes, tok16, lens = load_encoded(out)  # FDEs are the encoder's of the shard's tokens, bit for bit
    np.testing.assert_array_equal(fdes, muvera.FDEEncoder(built.config).encode_documents(tok16, lengths=lens))
    q = ref.model.encode_queries(["proteins and cells", "rivers"])
    for x, y in zip(built.search(q, k=3)[0], ref.index.search(q, k=3)[0]):
        assert list(x) == list(y)
    # BM25 over the kept texts works on the built index
    hits = built.search(q[:1], k=3, lexical=["proteins"])[0][0]
    assert any(str(h).startswith("doc-") for h in hits)
    with pytest.raises(ValueError, match="reserved"):
        index_texts(texts[:2], tmp_path / "x", metadata=[{"muvera.text": 1}, {}], config="1280")
    with pytest.raises(ValueError, match="more than this Ray cluster has"):
        index_texts(texts[:2], tmp_path / "x", config="1280", num_gpus=1)
    with pytest.raises(FileNotFoundError, match="no such file"):  # a string is a path to documents
        index_texts("one string", tmp_path / "x")
    with pytest.raises(TypeError, match="texts"):
        index_texts(7, tmp_path / "x")


def test_index_texts_reads_files_and_datasets(ray_session, tmp_path):
    pytest.importorskip("transformers")
    import json

    corpus = tmp_path / "corpus.jsonl"
    rows = [{"_id": f"c{i}", "title": f"Title {i}", "text": f"Body text number {i} about rivers."} for i in range(12)]
    corpus.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    built = index_from_encoded(index_texts(corpus, tmp_path / "f", config="1280", shard_rows=5), backend="exact")
    assert built.ids == [f"c{i}" for i in range(12)]
    m = built.metadata(["c3"])[0]
    assert m["title"] == "Title 3" and m["muvera.text"] == "Title 3 Body text number 3 about rivers."
    ds = ray.data.from_items([{"id": i, "text": f"Short text {i}.", "metadata": {"k": i}} for i in range(7)])
    built = index_from_encoded(index_texts(ds, tmp_path / "d", config="1280", keep_text=False), backend="exact")
    assert built.ids == list(range(7)) and built.metadata([4]) == [{"k": 4}]


MULTI_NODE = textwrap.dedent("""
    import sys, numpy as np, ray, muvera
    from ray.cluster_utils import Cluster
    from muvera.distributed import ShardedIndex, encode_packed, load_encoded
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        cfg = muvera.FDEConfig.preset("1280", dimension=16, seed=7)
        rng = np.random.default_rng(0)
        lengths = rng.integers(2, 12, size=400).astype(np.int64)
        tokens = rng.standard_normal((int(lengths.sum()), 16)).astype(np.float32)
        # two 1-CPU workers on two 1-CPU nodes: one on each
        ids, fdes, tok16, lens = load_encoded(encode_packed(tokens, lengths, cfg, sys.argv[1], shard_rows=50,
                                                            num_workers=2))
        ref16 = tokens.astype(np.float16)
        assert ids == list(range(400)) and np.array_equal(tok16, ref16)
        assert np.array_equal(fdes, muvera.FDEEncoder(cfg).encode_documents(ref16, lengths=lengths))
        sharded = ShardedIndex(cfg, 2, backend="exact", actor_options={"num_cpus": 1})  # a shard per node
        sharded.add(tokens, ids=list(range(400)), lengths=lengths)
        single = muvera.MuveraIndex(cfg, backend="exact")
        single.add(tokens, ids=list(range(400)), lengths=lengths)
        q = tokens[:20]
        a, b = sharded.search(q, k=5, lengths=[10, 10]), single.search(q, k=5, lengths=[10, 10])
        assert np.array_equal(a[0], b[0]) and np.allclose(a[1], b[1])
        sharded.close()
        print("ok", flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()
""")


def test_a_two_node_cluster_encodes_and_serves(tmp_path):
    """A real multi-node Ray cluster on this machine (two raylets), in its own process."""
    pytest.importorskip("ray.cluster_utils")
    res = subprocess.run([sys.executable, "-c", MULTI_NODE, str(tmp_path / "enc")], cwd=str(tmp_path),
                         env={**os.environ, "PYTHONPATH": ""}, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr[-3000:]
