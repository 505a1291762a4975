"""muvera.eval.cache: float16 shards + manifest, reuse, resume, checksums and repair."""

import hashlib
import json

import numpy as np
import pytest

from muvera.eval.cache import encode_cached, load_cached

DIM = 8
TEXTS = [" ".join(f"w{(i * 7 + j) % 23}" for j in range(1 + i % 5)) for i in range(23)]  # 23 texts, 1-5 words


def _vec(word):
    seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
    v = np.random.default_rng(seed).standard_normal(DIM)
    return (v / np.linalg.norm(v)).astype(np.float32)


def _reference(texts):
    return [np.stack([_vec(w) for w in t.split()]) for t in texts]


class CountingEncoder:
    """texts -> one unit vector per word; counts calls and texts; can fail on the n-th call."""

    def __init__(self, fail_on_call=None):
        self.calls = 0
        self.texts = []
        self.fail_on_call = fail_on_call

    def __call__(self, texts):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise KeyboardInterrupt("simulated interruption")
        self.texts.extend(texts)
        return _reference(texts)


def _expected(texts):
    vecs = _reference(texts)
    offsets = np.zeros(len(vecs) + 1, np.int64)
    np.cumsum([len(v) for v in vecs], out=offsets[1:])
    return np.concatenate(vecs).astype(np.float16), offsets


def _check(tokens, offsets, texts=TEXTS):
    exp_tok, exp_off = _expected(texts)
    assert tokens.dtype == np.float16 and offsets.dtype == np.int64
    np.testing.assert_array_equal(offsets, exp_off)
    np.testing.assert_array_equal(tokens, exp_tok)


def test_writes_shards_and_manifest(tmp_path):
    enc = CountingEncoder()
    tokens, offsets = encode_cached(tmp_path / "c", TEXTS, enc, fingerprint="fake", shard_size=5, progress=False)
    _check(tokens, offsets)
    assert enc.calls == 5 and enc.texts == TEXTS
    m = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert m["format"] == "muvera-embeddings" and m["count"] == 23 and m["shard_size"] == 5
    assert m["dim"] == DIM and m["fingerprint"] == "fake"
    assert sorted(s["file"] for s in m["shards"]) == [f"shard-{i:05d}.npz" for i in range(5)]
    assert [s["count"] for s in sorted(m["shards"], key=lambda s: s["file"])] == [5, 5, 5, 5, 3]
    for s in m["shards"]:
        assert hashlib.sha256((tmp_path / "c" / s["file"]).read_bytes()).hexdigest() == s["sha256"]
        with np.load(tmp_path / "c" / s["file"]) as z:
            assert z["tokens"].dtype == np.float16 and z["tokens"].shape == (s["rows"], DIM)
            assert len(z["lengths"]) == s["count"]
    assert not list((tmp_path / "c").glob("*.tmp"))
    # load_cached gives the same arrays.
    t2, o2 = load_cached(tmp_path / "c")
    _check(t2, o2)


def test_second_call_reuses(tmp_path):
    encode_cached(tmp_path, TEXTS, CountingEncoder(), fingerprint="fake", shard_size=4, progress=False)
    enc = CountingEncoder()
    tokens, offsets = encode_cached(tmp_path, TEXTS, enc, fingerprint="fake", shard_size=4, progress=False)
    assert enc.calls == 0
    _check(tokens, offsets)


def test_single_shard_and_progress_bar(tmp_path):
    enc = CountingEncoder()
    tokens, offsets = encode_cached(tmp_path, TEXTS[:3], enc, shard_size=256, progress=True)
    assert enc.calls == 1
    _check(tokens, offsets, TEXTS[:3])


def test_resume_after_interruption(tmp_path):
    enc = CountingEncoder(fail_on_call=3)
    with pytest.raises(KeyboardInterrupt):
        encode_cached(tmp_path, TEXTS, enc, fingerprint="fake", shard_size=5, progress=False)
    assert enc.texts == TEXTS[:10]
    with pytest.raises(ValueError, match="incomplete"):
        load_cached(tmp_path)
    enc2 = CountingEncoder()
    tokens, offsets = encode_cached(tmp_path, TEXTS, enc2, fingerprint="fake", shard_size=5, progress=False)
    assert enc2.calls == 3 and enc2.texts == TEXTS[10:]  # only shards 2, 3, 4
    _check(tokens, offsets)


def test_manifest_lost_shard_is_reencoded(tmp_path):
    encode_cached(tmp_path, TEXTS, CountingEncoder(), shard_size=5, progress=False)
    (tmp_path / "shard-00001.npz").unlink()
    with pytest.raises(ValueError, match="incomplete"):
        load_cached(tmp_path)
    enc = CountingEncoder()
    tokens, offsets = encode_cached(tmp_path, TEXTS, enc, shard_size=5, progress=False)
    assert enc.texts == TEXTS[5:10]
    _check(tokens, offsets)


def _flip_byte(path, pos=None):
    data = bytearray(path.read_bytes())
    pos = len(data) // 2 if pos is None else pos
    data[pos] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corrupt_shard_detected_and_repaired(tmp_path):
    encode_cached(tmp_path, TEXTS, CountingEncoder(), fingerprint="fake", shard_size=5, progress=False)
    _flip_byte(tmp_path / "shard-00002.npz")
    enc = CountingEncoder()
    with pytest.raises(ValueError, match="checksum") as info:
        encode_cached(tmp_path, TEXTS, enc, fingerprint="fake", shard_size=5, progress=False)
    assert "shard-00002.npz" in str(info.value)
    assert enc.calls == 0
    with pytest.raises(ValueError, match="checksum"):
        load_cached(tmp_path)
    tokens, offsets = encode_cached(tmp_path, TEXTS, enc, fingerprint="fake", shard_size=5, progress=False,
                                    repair=True)
    assert enc.calls == 1 and enc.texts == TEXTS[10:15]
    _check(tokens, offsets)
    _check(*load_cached(tmp_path))


@pytest.mark.parametrize("change", [
    dict(fingerprint="other-model"),
    dict(shard_size=4),
    dict(texts=TEXTS[:-1]),
    dict(texts=TEXTS[:-1] + ["a different last text"]),  # same count, other content
])
def test_mismatch_rejected(tmp_path, change):
    encode_cached(tmp_path, TEXTS, CountingEncoder(), fingerprint="fake", shard_size=5, progress=False)
    kw = dict(fingerprint="fake", shard_size=5, progress=False)
    kw.update(change)
    texts = kw.pop("texts", TEXTS)
    enc = CountingEncoder()
    with pytest.raises(ValueError, match="other texts|fingerprint"):
        encode_cached(tmp_path, texts, enc, **kw)
    assert enc.calls == 0


def test_not_a_cache(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "something-else", "shards": []}))
    with pytest.raises(ValueError, match="not a muvera embedding cache"):
        encode_cached(tmp_path, TEXTS, CountingEncoder(), progress=False)


def test_load_cached_missing_manifest(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_cached(tmp_path)


def test_empty_texts(tmp_path):
    enc = CountingEncoder()
    tokens, offsets = encode_cached(tmp_path, [], enc, progress=False)
    assert enc.calls == 0 and tokens.shape[0] == 0 and offsets.tolist() == [0]


def test_manifest_without_texts_checksum_still_loads(tmp_path):
    # entries written before "texts_sha256" existed are reused as they are
    encode_cached(tmp_path, TEXTS, CountingEncoder(), fingerprint="fake", shard_size=5, progress=False)
    m = json.loads((tmp_path / "manifest.json").read_text())
    edited = dict(m, count=m["count"])
    edited["fingerprint"] = "edited"
    (tmp_path / "manifest.json").write_text(json.dumps(edited))
    with pytest.raises(ValueError, match="checksum mismatch"):  # a version-2 manifest is checksummed
        load_cached(tmp_path)
    # a version-1 manifest (muvera <= 0.5.0: "version": 1, no checksum, no texts_sha256)
    for key in ("texts_sha256", "checksum", "format_version"):
        del m[key]
    m["version"] = 1
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    enc = CountingEncoder()
    _check(*encode_cached(tmp_path, TEXTS, enc, fingerprint="fake", shard_size=5, progress=False))
    assert enc.calls == 0


def test_bad_shard_size_and_wrong_encode_count(tmp_path):
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="shard_size"):
            encode_cached(tmp_path / "c", TEXTS, CountingEncoder(), shard_size=bad, progress=False)

    def short(texts):
        return CountingEncoder()(texts)[:-1]

    with pytest.raises(ValueError, match="encode: returned 4 arrays for 5 texts"):
        encode_cached(tmp_path / "d", TEXTS, short, fingerprint="x", shard_size=5, progress=False)
    assert not list((tmp_path / "d").glob("shard-*"))  # nothing misaligned was cached


def test_orphan_temporaries_removed_and_others_kept(tmp_path):
    root = tmp_path / "c"
    root.mkdir()
    orphan = root / ".shard-00001.npz.tmp-0badc0de"
    orphan.write_bytes(b"half a shard")
    mine = root / "notes.tmp-0badc0de"
    mine.write_text("not the cache's")
    tokens, offsets = encode_cached(root, TEXTS, CountingEncoder(), fingerprint="f", shard_size=5, progress=False)
    _check(tokens, offsets)
    assert not orphan.exists() and mine.exists()
