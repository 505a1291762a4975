"""Per-document metadata: stored with the index (SQLite), filtered with parameterised WHERE
clauses through the allowed-rows bitmap, kept consistent by remove/compact/save/load."""

from __future__ import annotations

import numpy as np
import pytest

from muvera import FDEConfig, MuveraIndex

D = 8
CFG = FDEConfig.preset("1280", dimension=D)
RNG = np.random.default_rng(5)
DOCS = [RNG.normal(size=(int(n), D)).astype(np.float32) for n in RNG.integers(2, 10, size=200)]
META = [{"year": 1990 + i % 40, "lang": ["en", "fr", "de"][i % 3], "score": i / 10, "tags": [i % 5]}
        for i in range(200)]
QUERIES = [d[:3] + 0.01 for d in DOCS[:6]]


@pytest.fixture()
def index():
    idx = MuveraIndex(CFG, backend="exact")
    idx.add(DOCS, ids=[f"d{i}" for i in range(200)], metadata=META)
    return idx


def _expected_rows(pred):
    return [f"d{i}" for i in range(200) if pred(META[i])]


@pytest.mark.parametrize("backend", ["exact", "HNSW16"])
def test_where_equals_filter_ids(backend):
    if backend != "exact":
        pytest.importorskip("faiss")
    idx = MuveraIndex(CFG, backend=backend)
    idx.add(DOCS, ids=[f"d{i}" for i in range(200)], metadata=META)
    want = _expected_rows(lambda m: m["year"] >= 2020 and m["lang"] == "en")
    a = idx.search(QUERIES, k=5, candidates=20, where="year >= ? AND lang = ?", where_params=(2020, "en"))
    b = idx.search(QUERIES, k=5, candidates=20, filter_ids=want)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert set(a[0].ravel().tolist()) <= set(want) | {None}
    e = idx.search_exact(QUERIES, k=5, where="score < ?", where_params=(3,))
    assert set(e[0].ravel().tolist()) <= set(_expected_rows(lambda m: m["score"] < 3))


def test_metadata_read_back_and_kept_consistent(index, tmp_path):
    assert index.metadata("d7") == META[7]
    assert index.metadata(["d3", "d4"]) == [META[3], META[4]]
    index.add([DOCS[0]], ids=["plain"])  # no metadata: None
    assert index.metadata("plain") is None
    index.remove(["d3", "d5"])
    with pytest.raises(KeyError, match="d3"):
        index.metadata("d3")
    before = index.search(QUERIES, k=5, where="lang = ?", where_params=("fr",))
    assert not {"d3", "d5"} & set(before[0].ravel().tolist())
    index.compact()
    assert index.metadata(["d4", "d6", "d199"]) == [META[4], META[6], META[199]]
    after = index.search(QUERIES, k=5, where="lang = ?", where_params=("fr",))
    np.testing.assert_array_equal(before[0], after[0])
    index.save(tmp_path / "i")
    loaded = MuveraIndex.load(tmp_path / "i")
    assert loaded.metadata("d199") == META[199] and loaded.metadata("plain") is None
    np.testing.assert_array_equal(loaded.search(QUERIES, k=5, where="lang = ?", where_params=("fr",))[0], after[0])
    loaded.add([DOCS[1]], ids=["new"], metadata=[{"year": 3000, "venue": "x"}])  # a new column after load
    ids, _ = loaded.search(QUERIES[:1], k=1, where="venue = ?", where_params=("x",))
    assert ids[0, 0] == "new"
    assert MuveraIndex.load(tmp_path / "i").metadata("d199") == META[199]  # the saved file is untouched


@pytest.mark.parametrize("clause,params,needle", [
    ("year >>> 3", (), "syntax error"),
    ("nosuch = 1", (), "no such column: nosuch"),
    ("1); DELETE FROM meta; --", (), "one statement"),
    ("year = ?", (), "bindings"),
    ("", (), "where"),
])
def test_malformed_where_is_a_value_error_and_changes_nothing(index, clause, params, needle):
    with pytest.raises((ValueError, TypeError), match=needle):
        index.search(QUERIES, k=3, where=clause, where_params=params)
    assert index.metadata("d1") == META[1] and len(index) == 200


def test_injection_attempts_cannot_write(index):
    for clause in ["year = 1 OR (SELECT count(*) FROM meta) > 0", "year IN (SELECT _row FROM meta)"]:
        index.search(QUERIES[:1], k=3, where=clause)  # reading is fine
    for clause in ["year = 1; DROP TABLE meta", "lang = 'en') UNION SELECT 1 --",
                   "year = (SELECT 1 FROM pragma_table_info('meta'))"]:
        try:
            index.search(QUERIES[:1], k=3, where=clause)
        except ValueError:
            pass
    assert index.metadata("d1") == META[1] and len(index.metadata([f"d{i}" for i in range(200)])) == 200
    # values are bound, never formatted: a quote in a parameter is just a string
    ids, _ = index.search(QUERIES[:1], k=3, where="lang = ?", where_params=("en' OR '1'='1",))
    assert (ids == None).all()  # noqa: E711 (object array)


def test_bad_metadata_leaves_the_index_unchanged(index):
    for bad, exc, needle in [
        ([{"a": 1}], ValueError, "expected 2 dicts"),
        ([{"a": 1}, "x"], TypeError, r"metadata\[1\]"),
        ([{"a": float("nan")}, {}], ValueError, r"metadata\[0\].*JSON"),
        ([{"a": object()}, {}], ValueError, r"metadata\[0\]"),
        ([{"_row": 1}, {}], ValueError, "keys"),
        ({"a": 1}, TypeError, "metadata"),
    ]:
        with pytest.raises(exc, match=needle):
            index.add(DOCS[:2], ids=["x1", "x2"], metadata=bad)
        assert len(index) == 200 and "x1" not in index
