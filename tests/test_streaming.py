"""Streaming adds: an iterator of batches equals one add of the same documents, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

import muvera

DIM = 16


def _docs(n, seed=0, lo=3, hi=12):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((int(rng.integers(lo, hi)), DIM)).astype(np.float32) for _ in range(n)]


def _batches(docs, size):
    for s in range(0, len(docs), size):
        yield docs[s: s + size]


def _same(a: muvera.MuveraIndex, b: muvera.MuveraIndex) -> None:
    assert a.ids == b.ids
    np.testing.assert_array_equal(a.store.tokens, b.store.tokens)
    np.testing.assert_array_equal(a.store.offsets, b.store.offsets)
    rows = np.arange(a.backend.ntotal)
    if a.backend.can_reconstruct:
        np.testing.assert_array_equal(a.backend.reconstruct(rows), b.backend.reconstruct(rows))


CFG = muvera.FDEConfig.preset("1280", dimension=DIM)


@pytest.mark.parametrize("size", [1, 7, 64])
def test_stream_equals_one_shot_exact(size):
    docs = _docs(150)
    one = muvera.MuveraIndex(CFG)
    one.add(docs)
    streamed = muvera.MuveraIndex(CFG)
    ids = streamed.add(_batches(docs, size), progress=False)
    assert ids == list(range(150))
    _same(one, streamed)
    q = _docs(3, seed=9)
    for x, y in zip(one.search(q, k=5), streamed.search(q, k=5)):
        np.testing.assert_array_equal(x, y)


def test_stream_equals_one_shot_trained_backend(monkeypatch):
    """A backend that trains gathers the first STREAM_TRAIN_DOCS documents: same training sample."""
    monkeypatch.setattr(muvera.MuveraIndex, "STREAM_TRAIN_DOCS", 400)
    docs = _docs(600, seed=1)
    spec = "IVF8,PQ16x4fs"
    one = muvera.MuveraIndex(CFG, backend=spec)
    one.add(docs[:400])
    one.add(docs[400:])
    streamed = muvera.MuveraIndex(CFG, backend=spec)
    streamed.add(_batches(docs, 50), progress=False)
    import faiss
    a = faiss.serialize_index(one.backend.index)
    b = faiss.serialize_index(streamed.backend.index)
    np.testing.assert_array_equal(a, b)
    _same(one, streamed)


def test_stream_residual_codec_trained_first():
    docs = _docs(300, seed=2, lo=8, hi=20)
    sample = docs[:200]
    one = muvera.MuveraIndex(CFG, token_codec="residual:2:k=16")
    one.train(sample)
    one.add(docs)
    streamed = muvera.MuveraIndex(CFG, token_codec="residual:2:k=16")
    streamed.train(sample)
    streamed.add(_batches(docs, 33), progress=False)
    _same(one, streamed)


def test_stream_forms_ids_and_metadata():
    docs = _docs(30, seed=3)
    lens = np.array([len(d) for d in docs])

    def gen():
        yield {"tokens": np.concatenate(docs[:10]), "lengths": lens[:10], "ids": [f"d{i}" for i in range(10)],
               "metadata": [{"year": i} for i in range(10)]}
        yield {"documents": docs[10:20], "ids": [f"d{i}" for i in range(10, 20)]}
        pad = np.zeros((10, 12, DIM), np.float32)
        mask = np.zeros((10, 12), bool)
        for i, d in enumerate(docs[20:]):
            pad[i, : len(d)] = d
            mask[i, : len(d)] = True
        yield {"tokens": pad, "mask": mask, "ids": [f"d{i}" for i in range(20, 30)]}

    index = muvera.MuveraIndex(CFG)
    assert index.add(gen(), progress=False) == [f"d{i}" for i in range(30)]
    one = muvera.MuveraIndex(CFG)
    one.add(docs, ids=[f"d{i}" for i in range(30)])
    _same(one, index)
    assert index.metadata("d3") == {"year": 3}
    assert index.metadata("d15") is None
    # (tokens, lengths) pairs and ids= / metadata= for the whole stream
    pairs = muvera.MuveraIndex(CFG)
    got = pairs.add(iter([(np.concatenate(docs[:15]), lens[:15]), (np.concatenate(docs[15:]), lens[15:])]),
                    ids=range(100, 130), metadata=[{"i": i} for i in range(30)], progress=False)
    assert got == list(range(100, 130))
    assert pairs.metadata(129) == {"i": 29}


def test_stream_bad_batch_halfway_keeps_earlier_batches():
    docs = _docs(40, seed=4)

    def gen():
        yield docs[:10]
        yield docs[10:20]
        yield [np.ones((4, DIM + 1), np.float32)]  # wrong dimension
        yield docs[20:]

    index = muvera.MuveraIndex(CFG)
    with pytest.raises(ValueError, match=r"batch 2.*20 documents before it were added"):
        index.add(gen(), progress=False)
    assert len(index) == 20
    one = muvera.MuveraIndex(CFG)
    one.add(docs[:20])
    _same(one, index)


def test_stream_bad_batch_while_gathering_for_training(monkeypatch):
    monkeypatch.setattr(muvera.MuveraIndex, "STREAM_TRAIN_DOCS", 10_000)
    docs = _docs(300, seed=5)

    def gen():
        yield docs[:250]
        yield [np.full((3, DIM), np.nan, np.float32)]

    index = muvera.MuveraIndex(CFG, backend="IVF4,Flat")
    with pytest.raises(ValueError, match=r"batch 1.*250 documents before it were added"):
        index.add(gen(), progress=False)
    assert len(index) == 250


@pytest.mark.parametrize("bad, match", [
    (lambda d: iter([d[:5], {"tokens": np.concatenate(d[5:]), "lengths": [len(x) for x in d[5:9]]}]), "lengths"),
    (lambda d: iter([d[:5], {"tokens": d[5:8], "documents": d[8:]}]), "exactly one"),
    (lambda d: iter([d[:5], {"tokens": d[5:], "bogus": 1}]), "unknown keys"),
    (lambda d: iter([d[:5], 42]), "batch 1"),
    (lambda d: iter([{"documents": d[:5], "ids": [1, 2, 3, 4, 5]}, {"documents": d[5:], "ids": [5, 6, 7, 8, 9]}]),
     "already in the index|duplicate"),
])
def test_stream_bad_inputs(bad, match):
    docs = _docs(10, seed=6)
    index = muvera.MuveraIndex(CFG)
    with pytest.raises((ValueError, TypeError), match=match):
        index.add(bad(docs), progress=False)
    assert len(index) == 5  # the first batch stays


def test_stream_ids_count_mismatch_and_lengths_argument():
    docs = _docs(10, seed=7)
    index = muvera.MuveraIndex(CFG)
    with pytest.raises(ValueError, match="ids"):
        index.add(_batches(docs, 4), ids=range(5), progress=False)
    with pytest.raises(ValueError, match="per batch"):
        muvera.MuveraIndex(CFG).add(_batches(docs, 4), lengths=[1, 2])


def test_empty_stream_adds_nothing():
    index = muvera.MuveraIndex(CFG)
    assert index.add(iter([]), progress=False) == []
    assert len(index) == 0


def test_stream_fixed_size_codec_trains_on_what_it_uses(monkeypatch):
    """residual:2:k=16 gathers only its stream_training_tokens(), then trains and adds as it goes."""
    from muvera.codecs.residual import ResidualCodec

    monkeypatch.setattr(ResidualCodec, "stream_training_tokens", lambda self: 600)
    docs = _docs(200, seed=12, lo=8, hi=12)
    seen = []

    def gen():
        for s in range(0, 200, 20):
            seen.append(s)
            yield docs[s: s + 20]

    index = muvera.MuveraIndex(CFG, token_codec="residual:2:k=16")
    it = index.add(gen(), progress=False)
    assert len(it) == 200 and not index.store.codec.needs_training
    one = muvera.MuveraIndex(CFG, token_codec="residual:2:k=16")
    m = 20  # the gathered batches: the first ones holding >= 600 tokens
    while sum(len(d) for d in docs[:m]) < 600:
        m += 20
    one.train(docs[:m])
    one.add(docs)
    _same(one, index)


def test_stream_torch_pairs_and_error_kinds():
    torch = pytest.importorskip("torch")
    docs = _docs(12, seed=14)
    lens = torch.tensor([len(d) for d in docs])
    index = muvera.MuveraIndex(CFG)
    index.add(iter([(torch.from_numpy(np.concatenate(docs)), lens)]), progress=False)
    one = muvera.MuveraIndex(CFG)
    one.add(docs)
    _same(one, index)
    with pytest.raises(TypeError, match="exact_spill_dir"):
        muvera.MuveraIndex(CFG, token_codec="int8", keep_exact=True, exact_spill_dir=3)
