"""TokenStore: packing every batch form, codecs, validation, compaction, mmap, save/load."""

from __future__ import annotations

import os

import numpy as np
import pytest

from muvera.store import TokenStore, pack_tokens

D = 8


def _docs(lengths, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n, D)).astype(dtype) for n in lengths]


def _rows(store, i):
    return store.tokens[store.offsets[i]: store.offsets[i + 1]]


def test_append_list_converts_to_float16_by_default():
    store = TokenStore(D)
    docs = _docs([3, 1, 4])
    rows = store.append(docs)
    assert rows.tolist() == [0, 1, 2]
    assert store.dtype == np.float16 and store.tokens.dtype == np.float16
    assert store.offsets.tolist() == [0, 3, 4, 8]
    assert store.lengths.tolist() == [3, 1, 4]
    assert len(store) == 3 and store.num_tokens == 8 and store.codec.name == "float16"
    for i, doc in enumerate(docs):
        np.testing.assert_array_equal(_rows(store, i), doc.astype(np.float16))
        np.testing.assert_array_equal(store.get_tokens(i), doc.astype(np.float16).astype(np.float32))


def test_float32_store_keeps_values_exactly():
    store = TokenStore(D, "float32")
    docs = _docs([2, 5], dtype=np.float64)
    store.append(docs)
    assert store.tokens.dtype == np.float32
    np.testing.assert_array_equal(store.get(1), docs[1].astype(np.float32))


def test_packed_and_padded_forms_match_list_form():
    docs = _docs([3, 2, 4])
    packed = np.concatenate(docs)
    a, b, c, e = (TokenStore(D, "float32") for _ in range(4))
    a.append(docs)
    b.append(packed, lengths=[3, 2, 4])
    c.append(packed, offsets=[0, 3, 5, 9])
    padded = np.zeros((3, 4, D), np.float32)
    mask = np.zeros((3, 4), bool)
    for i, doc in enumerate(docs):  # holes in the mask: valid tokens not a prefix
        slots = [0, 2, 3][: len(doc)] if i == 1 else list(range(len(doc)))
        padded[i, slots] = doc
        mask[i, slots] = True
    e.append(padded, mask=mask)
    for s in (b, c, e):
        np.testing.assert_array_equal(s.tokens, a.tokens)
        np.testing.assert_array_equal(s.offsets, a.offsets)


def test_append_grows_amortised_and_old_views_stay_valid():
    store = TokenStore(D, "float32")
    store.append(_docs([2]))
    snapshot_tokens, snapshot_offsets = store.tokens, store.offsets
    before = snapshot_tokens.copy()
    for i in range(200):
        store.append(_docs([1 + i % 3], seed=i + 1))
    assert len(store) == 201
    np.testing.assert_array_equal(snapshot_tokens, before)
    assert snapshot_offsets.tolist() == [0, 2]
    assert store.nbytes >= store.tokens.nbytes


def test_zero_token_document_rejected_and_store_unchanged():
    store = TokenStore(D)
    store.append(_docs([2]))
    with pytest.raises(ValueError, match=r"documents\[1\].*at least one token"):
        store.append([np.ones((2, D)), np.ones((0, D)), np.ones((1, D))])
    with pytest.raises(ValueError, match=r"documents\[0\]"):
        store.append(np.ones((3, D)), lengths=[0, 3])
    assert len(store) == 1 and store.num_tokens == 2


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_rejected(bad):
    store = TokenStore(D)
    docs = _docs([2, 3, 2])
    docs[2][1, 4] = bad
    with pytest.raises(ValueError, match=r"documents\[2\].*NaN or Inf"):
        store.append(docs)
    assert len(store) == 0


def test_float16_overflow_rejected():
    store = TokenStore(D)
    with pytest.raises(ValueError, match=r"documents\[0\].*float16"):
        store.append([np.full((1, D), 1e6, np.float32)])
    TokenStore(D, "float32").append([np.full((1, D), 1e6, np.float32)])  # fine in float32


def test_wrong_dimension_empty_batch_and_bad_types():
    store = TokenStore(D)
    with pytest.raises(ValueError, match="documents"):
        store.append([np.ones((2, D + 1))])
    with pytest.raises(ValueError, match="documents"):
        store.append([])
    with pytest.raises(TypeError):
        store.append([np.ones((2, D), dtype=np.complex64)])
    with pytest.raises(ValueError, match="token_codec"):
        TokenStore(D, "int7")
    with pytest.raises(TypeError, match="token_codec"):
        TokenStore(D, 3)
    with pytest.raises(ValueError, match="dimension"):
        TokenStore(0)
    assert len(store) == 0


def test_compact_keeps_rows():
    store = TokenStore(D, "float32")
    docs = _docs([2, 3, 1, 4])
    store.append(docs)
    mapping = store.compact(np.array([True, False, True, False]))
    assert mapping.tolist() == [0, -1, 1, -1]
    assert len(store) == 2
    np.testing.assert_array_equal(store.get(0), docs[0])
    np.testing.assert_array_equal(store.get(1), docs[2])
    assert store.offsets.tolist() == [0, 2, 3]
    store.append(_docs([2], seed=9))  # still appendable after compaction
    assert store.offsets.tolist() == [0, 2, 3, 5]
    with pytest.raises(ValueError, match="keep"):
        store.compact(np.ones(2, bool))


def test_memory_mapped_store_copies_on_append(tmp_path):
    src = TokenStore(D)
    src.append(_docs([2, 3]))
    np.save(tmp_path / "t.npy", src.tokens)
    tokens = np.load(tmp_path / "t.npy", mmap_mode="r")
    store = TokenStore.from_arrays(tokens, src.offsets.copy())
    assert store.is_memory_mapped and not store.tokens.flags.writeable
    new = _docs([4], seed=5)
    store.append(new)
    assert not store.is_memory_mapped
    np.testing.assert_array_equal(store.get(2), new[0].astype(np.float16))
    np.testing.assert_array_equal(np.load(tmp_path / "t.npy"), src.tokens)  # file untouched


@pytest.mark.parametrize("codec", ["float16", "float32"])
def test_save_load_round_trip(tmp_path, codec):
    store = TokenStore(D, codec)
    store.append(_docs([2, 5, 1]))
    fields, entries = store.save(tmp_path)
    assert fields["token_codec"] == codec and set(entries) == {"tokens.npy", "offsets.npy"}
    for mmap in (False, True):
        back = TokenStore.load(tmp_path, fields, entries, D, 3, mmap)
        assert back.codec.name == codec and back.is_memory_mapped == mmap
        np.testing.assert_array_equal(back.tokens, store.tokens)
        np.testing.assert_array_equal(back.offsets, store.offsets)
    with pytest.raises(ValueError, match="offsets.npy"):
        TokenStore.load(tmp_path, fields, entries, D, 4, False)  # the manifest says 4 rows
    with pytest.raises(ValueError, match="token_codec"):
        TokenStore.load(tmp_path, {**fields, "token_codec": "nope"}, entries, D, 3, False)


def test_from_arrays_validates():
    t = np.zeros((5, D), np.float16)
    with pytest.raises(ValueError, match="offsets"):
        TokenStore.from_arrays(t, np.array([0, 2, 4], np.int64))
    with pytest.raises(ValueError, match="offsets"):
        TokenStore.from_arrays(t, np.array([0, 2, 2, 5], np.int64))
    with pytest.raises(ValueError, match="tokens"):
        TokenStore.from_arrays(t, np.array([0, 2, 5], np.int64), "float32")


def test_pack_tokens_float32_for_queries():
    docs = _docs([2, 3], dtype=np.float16)
    tokens, lens = pack_tokens(docs, D, np.float32, name="queries")
    assert tokens.dtype == np.float32 and lens.tolist() == [2, 3]
    docs[1][0, 0] = np.nan
    with pytest.raises(ValueError, match=r"queries\[1\]"):
        pack_tokens(docs, D, np.float32, name="queries")


def test_bfloat16_torch_input():
    torch = pytest.importorskip("torch")
    x = torch.randn(4, D).to(torch.bfloat16)
    store = TokenStore(D, "float32")
    store.append([x])
    np.testing.assert_array_equal(store.tokens, x.float().numpy())


def test_prefetch_hints_file_backed_rows_and_changes_no_result(tmp_path, monkeypatch):
    """prefetch() asks the OS to read the given documents' rows of a memory-mapped (or spilled)
    store; in memory it does nothing. Rescored searches are the same with and without it."""
    import muvera
    from muvera import FDEConfig, MuveraIndex

    rng = np.random.default_rng(3)
    docs = [rng.standard_normal((int(rng.integers(3, 40)), 16)).astype(np.float32) for _ in range(300)]
    index = MuveraIndex(FDEConfig.preset("1280", dimension=16), backend="exact", token_codec="int8", keep_exact=True)
    index.add(docs)
    assert index.exact_tier.prefetch(np.arange(10)) == 0  # in memory: nothing to read
    index.save(tmp_path / "idx")
    loaded = MuveraIndex.load(tmp_path / "idx", mmap=True)
    tier = loaded.exact_tier
    assert tier.prefetch(np.array([5, 6, 7])) == 1  # adjacent rows: one merged range
    assert tier.prefetch(np.array([[-1, 299], [0, 10_000]])) >= 1  # padding and strays ignored
    assert tier.prefetch(np.array([-1])) == 0
    calls = []
    real = os.posix_fadvise
    monkeypatch.setattr(os, "posix_fadvise", lambda fd, off, n, adv: calls.append((off, n)) or real(fd, off, n, adv))
    q = docs[:4]
    with_hint = loaded.search(q, k=5, candidates=60, rescore=20)
    assert calls  # the rescore hinted its rows
    monkeypatch.setattr(MuveraIndex, "PREFETCH_EXACT", False)
    without = loaded.search(q, k=5, candidates=60, rescore=20)
    for a, b in zip(with_hint, without):
        np.testing.assert_array_equal(a, b)
    spill = muvera.TokenStore.spilled(16, "float16", tmp_path)
    spill.append_codes(np.ones((12, 16), np.float16), np.array([4, 4, 4]))
    assert spill.prefetch(np.array([0, 2])) >= 1


@pytest.mark.parametrize("codec", ["float16", "int8"])
def test_tokens_of_returns_tokens_and_fde_source_and_checks_rows(codec):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((30, 8)).astype(np.float32)
    store = TokenStore(8, codec)
    store.append(x, lengths=[10, 5, 15])
    tokens, source, lens = store.tokens_of(np.array([2, 0]))
    assert lens.tolist() == [15, 10] and len(tokens) == len(source) == 25
    assert tokens.dtype == store.token_dtype
    np.testing.assert_allclose(tokens.astype(np.float32), np.concatenate([x[15:], x[:10]]), atol=0.05)
    with pytest.raises(ValueError, match="rows"):
        store.tokens_of(np.array([3]))
    with pytest.raises(TypeError, match="rows"):
        store.tokens_of(np.array([0.5]))
