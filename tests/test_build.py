"""build_index from token shard directories (cache, encode_dataset, .npy pairs), resume, bounded
memory; backend="auto" choices."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import muvera
from muvera.backends import AutoBackend
from muvera.build import build_index, token_shards

DIM = 16
CFG = muvera.FDEConfig.preset("1280", dimension=DIM)


def _docs(n, seed=0, lo=3, hi=12):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((int(rng.integers(lo, hi)), DIM)).astype(np.float32) for _ in range(n)]


def _write_npy_shards(root, docs, per_shard, ids=None):
    root.mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(range(0, len(docs), per_shard)):
        part = docs[s: s + per_shard]
        np.save(root / f"part-{i:03d}.tokens.npy", np.concatenate(part).astype(np.float16))
        np.save(root / f"part-{i:03d}.lengths.npy", np.array([len(d) for d in part], np.int64))
        if ids is not None:
            (root / f"part-{i:03d}.ids.json").write_text(json.dumps(ids[s: s + per_shard]))
    return root


def _same(a, b):
    assert a.ids == b.ids
    np.testing.assert_array_equal(a.store.tokens, b.store.tokens)
    np.testing.assert_array_equal(a.store.offsets, b.store.offsets)
    rows = np.arange(a.backend.ntotal)
    np.testing.assert_array_equal(a.backend.reconstruct(rows), b.backend.reconstruct(rows))


def test_build_from_npy_equals_one_shot(tmp_path):
    docs = _docs(90)
    src = _write_npy_shards(tmp_path / "src", docs, 25)
    built = build_index(src, tmp_path / "idx", CFG, progress=False)
    one = muvera.MuveraIndex(CFG)
    one.add(docs)
    _same(one, built)
    assert built.backend.active == "exact"
    q = _docs(2, seed=5)
    for x, y in zip(one.search(q, k=5), built.search(q, k=5)):
        np.testing.assert_array_equal(x, y)


def test_build_from_embedding_cache(tmp_path):
    from muvera.eval.cache import encode_cached

    docs = _docs(40, seed=1)
    texts = [f"t{i}" for i in range(40)]
    lookup = dict(zip(texts, docs))
    encode_cached(tmp_path / "cache", texts, lambda b: [lookup[t] for t in b], shard_size=16, progress=False)
    shards = token_shards(tmp_path / "cache")
    assert (shards.kind, len(shards), shards.num_documents) == ("embedding-cache", 3, 40)
    built = build_index(shards, tmp_path / "idx", CFG, progress=False)
    one = muvera.MuveraIndex(CFG)
    one.add(docs)
    _same(one, built)


def test_build_from_encoded_output_uses_its_config_and_ids(tmp_path):
    from muvera.distributed.encode import _ShardWriter, ENCODED_FORMAT, ENCODED_FORMAT_VERSION
    from muvera.index_format import write_manifest

    docs = _docs(30, seed=2)
    ids = [f"doc{i}" for i in range(30)]
    enc = muvera.FDEEncoder(CFG)
    root = tmp_path / "enc"
    root.mkdir()
    w = _ShardWriter(root, 12, CFG.output_dimension, DIM)
    tok = np.concatenate(docs).astype(np.float16)
    lens = np.array([len(d) for d in docs], np.int64)
    w.add(ids, enc.encode_documents(tok, lengths=lens), tok, lens)
    w.close()
    write_manifest(root, {"format": ENCODED_FORMAT, "format_version": ENCODED_FORMAT_VERSION,
                          "config": CFG.to_dict(), "num_rows": 30, "num_tokens": int(lens.sum()),
                          "shards": w.shards})
    built = build_index(root, tmp_path / "idx", progress=False)
    assert built.config == CFG and built.ids == ids
    one = muvera.MuveraIndex(CFG)
    one.add(docs, ids=ids)
    _same(one, built)


def test_build_resumes_after_interruption(tmp_path, monkeypatch):
    docs = _docs(100, seed=3)
    src = _write_npy_shards(tmp_path / "src", docs, 10, ids=[f"d{i}" for i in range(100)])
    shards = token_shards(src)
    calls = {"n": 0}
    real = shards.batch

    def flaky(i):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt  # a crash after six shards (checkpoints after every shard)
        return real(i)

    monkeypatch.setattr(shards, "batch", flaky)
    with pytest.raises(KeyboardInterrupt):
        build_index(shards, tmp_path / "idx", CFG, progress=False, checkpoint_seconds=0)
    partial = muvera.MuveraIndex.load(tmp_path / "idx")
    assert len(partial) == 60 and partial._build_state["shards_done"] == 6
    monkeypatch.setattr(shards, "batch", real)
    seen = []
    monkeypatch.setattr(shards, "batch", lambda i: seen.append(i) or real(i))
    resumed = build_index(shards, tmp_path / "idx", CFG, progress=False, checkpoint_seconds=0)
    assert seen == [6, 7, 8, 9]  # only the shards after the checkpoint
    one = muvera.MuveraIndex(CFG)
    one.add(docs, ids=[f"d{i}" for i in range(100)])
    _same(one, resumed)
    assert resumed._build_state["complete"]
    # a finished build is loaded as is
    again = build_index(shards, tmp_path / "idx", CFG, progress=False)
    assert len(again) == 100


def test_resume_refuses_other_settings_or_source(tmp_path):
    docs = _docs(20, seed=4)
    src = _write_npy_shards(tmp_path / "src", docs, 10)
    build_index(src, tmp_path / "idx", CFG, progress=False)
    other_cfg = muvera.FDEConfig.preset("2560", dimension=DIM)
    with pytest.raises(ValueError, match="other settings.*config"):
        build_index(src, tmp_path / "idx", other_cfg, progress=False)
    with pytest.raises(ValueError, match="other settings.*token_codec"):
        build_index(src, tmp_path / "idx", CFG, token_codec="int8", progress=False)
    src2 = _write_npy_shards(tmp_path / "src2", _docs(30, seed=5), 10)
    with pytest.raises(ValueError, match="another source"):
        build_index(src2, tmp_path / "idx", CFG, progress=False)
    plain = muvera.MuveraIndex(CFG)
    plain.add(docs)
    plain.save(tmp_path / "plain")
    with pytest.raises(ValueError, match="did not make"):
        build_index(src, tmp_path / "plain", CFG, progress=False)


@pytest.mark.parametrize("damage, match", [
    (lambda r: (r / "part-001.lengths.npy").unlink(), "no matching part-001.lengths.npy"),
    (lambda r: np.save(r / "part-001.lengths.npy", np.array([3, 4], np.int64)), "lengths sum"),
    (lambda r: np.save(r / "part-001.tokens.npy", np.zeros((5, DIM + 2), np.float16)), "dimension"),
    (lambda r: [p.unlink() for p in list(r.iterdir())], "no manifest.json and no"),
    (lambda r: (r / "manifest.json").write_text('{"format": "nope"}'), "neither"),
])
def test_bad_shard_directories(tmp_path, damage, match):
    src = _write_npy_shards(tmp_path / "src", _docs(30, seed=6), 10)
    damage(src)
    with pytest.raises(ValueError, match=match):
        build_index(src, tmp_path / "idx", CFG, progress=False)


def test_bad_cache_and_config(tmp_path):
    from muvera.eval.cache import encode_cached

    docs = _docs(40, seed=7)
    texts = [f"t{i}" for i in range(40)]
    lookup = dict(zip(texts, docs))
    encode_cached(tmp_path / "cache", texts, lambda b: [lookup[t] for t in b], shard_size=16, progress=False)
    with pytest.raises(ValueError, match="config: required"):
        build_index(tmp_path / "cache", tmp_path / "idx", progress=False)
    with pytest.raises(ValueError, match="dimension 32"):
        build_index(tmp_path / "cache", tmp_path / "idx", muvera.FDEConfig.preset("1280", dimension=32),
                    progress=False)
    (tmp_path / "cache" / "shard-00001.npz").unlink()
    with pytest.raises(ValueError, match="shard-00001.npz is missing"):
        build_index(tmp_path / "cache", tmp_path / "idx", CFG, progress=False)


def test_build_with_exact_tier_spilled_and_residual_codec(tmp_path):
    docs = _docs(120, seed=8, lo=10, hi=20)
    src = _write_npy_shards(tmp_path / "src", docs, 40)
    built = build_index(src, tmp_path / "idx", CFG, token_codec="residual:2:k=16", keep_exact=True,
                        progress=False)
    assert built.exact_tier is not None and built.exact_tier.is_memory_mapped
    np.testing.assert_array_equal(built.exact_tier.tokens, np.concatenate(docs).astype(np.float16))
    q = _docs(3, seed=9)
    ids, scores = built.search(q, k=5, rescore=20)
    assert ids.shape == (3, 5) and np.isfinite(scores).all()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".muvera-spill")]


def test_spilled_exact_tier_stays_out_of_ram(tmp_path):
    index = muvera.MuveraIndex(CFG, token_codec="int8", keep_exact=True, exact_spill_dir=tmp_path)
    docs = _docs(50, seed=10)
    index.add(docs)
    assert index.exact_tier.is_memory_mapped
    np.testing.assert_array_equal(index.exact_tier.tokens, np.concatenate(docs).astype(np.float16))
    assert index.nbytes < index.store.nbytes + index.backend.nbytes + 10_000
    index.remove([1, 7, 30])
    assert index.compact() == 3
    kept = [d for i, d in enumerate(docs) if i not in (1, 7, 30)]
    assert index.exact_tier.is_spilled
    np.testing.assert_array_equal(index.exact_tier.tokens, np.concatenate(kept).astype(np.float16))
    with pytest.raises(ValueError, match="exact_spill_dir"):
        muvera.MuveraIndex(CFG, exact_spill_dir=tmp_path)
    with pytest.raises(ValueError, match="not a directory"):
        muvera.MuveraIndex(CFG, token_codec="int8", keep_exact=True, exact_spill_dir=tmp_path / "nope")


# -- backend="auto" ----------------------------------------------------------------------------
def test_auto_is_the_default_and_upgrades_as_the_corpus_grows(tmp_path):
    from muvera.backends.auto import IVF_AT, PQ_AT, phase_for

    assert (phase_for(0), phase_for(PQ_AT - 1), phase_for(PQ_AT), phase_for(IVF_AT - 1), phase_for(IVF_AT)) == (
        "exact", "exact", "pq", "pq", "ivf")
    index = muvera.MuveraIndex(CFG)
    assert index.backend.name == "auto" and index.backend.active == "exact"
    index._backend = AutoBackend(CFG.output_dimension, pq_at=700, ivf_at=1200, nlist=8, nprobe=4)
    docs = _docs(1500, seed=11)
    index.add(docs[:650])
    assert index.backend.active == "exact"
    index.add(docs[650:800])  # crosses 700: refilled from the store into flat PQ fast-scan
    assert index.backend.active == "faiss:PQ160x4fs,Refine(SQ8)" and index.backend.ntotal == 800
    index.add(iter([docs[800:1100], docs[1100:]]), progress=False)  # crosses 1200 inside a stream
    assert index.backend.active == "faiss:IVF8,PQ160x4fs,Refine(SQ8)" and index.backend.ntotal == 1500
    assert index.backend.inner.nprobe == 4
    ids, _ = index.search(docs[:20], k=1, candidates=50)
    assert np.mean(ids[:, 0] == np.arange(20)) >= 0.9
    # the same documents in one add reach the same backend, bit for bit
    one = muvera.MuveraIndex(CFG)
    one._backend = AutoBackend(CFG.output_dimension, pq_at=700, ivf_at=1200, nlist=8, nprobe=4)
    one.add(docs)
    assert one.backend.active == index.backend.active
    index.save(tmp_path / "i")
    back = muvera.MuveraIndex.load(tmp_path / "i")
    assert back.backend.name == "auto" and back.backend.active == index.backend.active
    for x, y in zip(index.search(docs[:5], k=3), back.search(docs[:5], k=3)):
        np.testing.assert_array_equal(x, y)
    index.remove([0, 1, 2])
    assert index.compact() == 3 and index.backend.active == "faiss:IVF8,PQ160x4fs,Refine(SQ8)"
    # a load into "auto" from another backend picks the phase for the corpus size
    flat = muvera.MuveraIndex(CFG, backend="exact")
    flat.add(_docs(2100, seed=12))
    flat.save(tmp_path / "flat")
    assert muvera.MuveraIndex.load(tmp_path / "flat", backend="auto").backend.active == "faiss:PQ160x4fs,Refine(SQ8)"


def test_auto_on_an_empty_index(tmp_path):
    index = muvera.MuveraIndex(CFG)
    ids, scores = index.search(_docs(1), k=3)
    assert ids.shape == (1, 1) and ids[0, 0] == -1 and scores[0, 0] == -np.inf
    index.save(tmp_path / "e")
    back = muvera.MuveraIndex.load(tmp_path / "e")
    assert back.backend.active == "exact" and len(back) == 0
    back.add(_docs(5))
    assert len(back) == 5
    with pytest.raises(ValueError, match="takes one option, refine="):
        muvera.MuveraIndex(CFG, backend="auto:fast")
    with pytest.raises(ValueError, match="refine: expected one of"):
        muvera.MuveraIndex(CFG, backend="auto:refine=PQ8")


def test_auto_refine_option_round_trips(tmp_path):
    docs = _docs(900, seed=5)
    index = muvera.MuveraIndex(CFG, backend="auto:refine=none")
    index._backend._pq_at = 700  # a small crossing for the test
    index.add(docs)
    assert index.backend.name == "auto:refine=none" and index.backend.active == "faiss:PQ160x4fs"
    index.save(tmp_path / "n")
    back = muvera.MuveraIndex.load(tmp_path / "n")
    assert back.backend.name == "auto:refine=none" and back.backend.active == "faiss:PQ160x4fs"
    assert muvera.MuveraIndex(CFG).backend.refine == "SQ8"


@pytest.mark.skipif(bool(os.environ.get("MUVERA_ASAN")), reason="sanitizer shadow memory inflates RSS")
def test_build_peak_memory_is_bounded(tmp_path):
    """A corpus about four times a set RSS budget builds within it (the exact tier on disk)."""
    script = textwrap.dedent(f"""
        import resource, sys, numpy as np
        import muvera
        from muvera.build import build_index
        rng = np.random.default_rng(0)
        src = sys.argv[1]
        import os, pathlib
        root = pathlib.Path(src); root.mkdir()
        for i in range(16):  # 16 shards x 2,000 docs x 64 tokens x 128 d float16 = 512 MB of tokens
            np.save(root / f"s{{i:02d}}.tokens.npy", rng.standard_normal((2000 * 64, 128)).astype(np.float16))
            np.save(root / f"s{{i:02d}}.lengths.npy", np.full(2000, 64, np.int64))
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        muvera.MuveraIndex.STREAM_TRAIN_DOCS = 4000  # train on the first two shards
        cfg = muvera.FDEConfig.preset("1280", dimension=128)
        idx = build_index(root, root.parent / "idx", cfg, backend="IVF64,PQ160x4fs",
                          token_codec="residual:2:k=64", keep_exact=True, progress=False)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(len(idx), base // 1024, peak // 1024)
    """)
    # A fresh interpreter outside the checkout (whose muvera/ folder would shadow the install).
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "src")], capture_output=True, text=True,
                         timeout=600, env={**os.environ, "OMP_NUM_THREADS": "2"}, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    n, base_mb, peak_mb = map(int, out.stdout.split())
    assert n == 32_000
    # Tokens: 512 MB float16 (on disk, exact tier spilled). In RAM: 2,048,000 codes x 34 bytes
    # = 70 MB, the IVF-PQ index ~3 MB, one shard in flight.
    print("peak above base MB", peak_mb - base_mb)
    assert peak_mb - base_mb < 400, (base_mb, peak_mb)


def test_auto_without_faiss_stays_exact(monkeypatch, caplog):
    from muvera.backends import auto

    monkeypatch.setattr(auto, "_faiss_available", lambda: False)
    monkeypatch.setattr(auto, "_WARNED", False)
    index = muvera.MuveraIndex(CFG)
    index._backend = AutoBackend(CFG.output_dimension, pq_at=10, ivf_at=20)
    with caplog.at_level("WARNING", logger="muvera"):
        index.add(_docs(30, seed=13))
    assert index.backend.active == "exact" and "faiss is not installed" in caplog.text


def test_a_same_size_rewrite_of_a_shard_is_another_source(tmp_path):
    """Shards are fingerprinted by content (sampled hash, lengths hashed), not by name and size:
    rewriting a shard with other values of the same size must not resume into a mixed index."""
    docs = _docs(20, seed=4)
    src = _write_npy_shards(tmp_path / "src", docs, 10)
    build_index(src, tmp_path / "idx", CFG, progress=False)
    tok = src / "part-001.tokens.npy"
    size = tok.stat().st_size
    np.save(tok, -np.load(tok))
    assert tok.stat().st_size == size
    with pytest.raises(ValueError, match="another source"):
        build_index(src, tmp_path / "idx", CFG, progress=False)


def test_an_empty_shard_adds_nothing_and_fails_nothing(tmp_path):
    docs = _docs(30, seed=8)
    src = _write_npy_shards(tmp_path / "src", docs, 10)
    np.save(src / "part-001b.tokens.npy", np.zeros((0, DIM), np.float16))
    np.save(src / "part-001b.lengths.npy", np.zeros(0, np.int64))
    built = build_index(src, tmp_path / "idx", CFG, progress=False)
    one = muvera.MuveraIndex(CFG)
    one.add(docs)
    _same(one, built)


@pytest.mark.parametrize("damage, match", [
    (lambda r: np.save(r / "part-001.lengths.npy", np.array([3, 0, 4, 5, 6, 7, 8, 9, 10, 11], np.int64)),
     "part-001.tokens.npy: document 1 has length 0"),
    (lambda r: (r / "part-001.tokens.npy").write_bytes(b"\x93NUMPY\x01\x00garbage"), "part-001.tokens.npy"),
    (lambda r: (r / "part-001.ids.json").write_text("[" * 100_000 + "]" * 100_000), "nested too deeply"),
])
def test_bad_shards_are_named(tmp_path, damage, match):
    src = _write_npy_shards(tmp_path / "src", _docs(30, seed=6), 10, ids=list(range(30)))
    damage(src)
    with pytest.raises(ValueError, match=match):
        build_index(src, tmp_path / "idx", CFG, progress=False)


@pytest.mark.parametrize("shards, match", [
    ([{"file": "shard-00000.npz"}], "lacks a valid count/rows"),
    (["shard-00000.npz"], "'shards' must be a list of objects"),
])
def test_a_malformed_cache_manifest_is_named(tmp_path, shards, match):
    root = tmp_path / "cache"
    root.mkdir()
    np.savez(root / "shard-00000.npz", tokens=np.zeros((3, DIM), np.float16), lengths=np.array([3]))
    (root / "manifest.json").write_text(json.dumps({"format": "muvera-embeddings", "count": 1, "shard_size": 10,
                                                    "dim": DIM, "shards": shards}))
    with pytest.raises(ValueError, match=match):
        build_index(root, tmp_path / "idx", CFG, progress=False)
