"""Qdrant (qdrant-client's embedded local mode): export, then FDE prefetch + MAX_SIM search that
ranks exactly like MuveraIndex.search; bad input and failed exports."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

qdrant_client = pytest.importorskip("qdrant_client")
from qdrant_client import QdrantClient, models  # noqa: E402

from muvera import FDEConfig, MuveraIndex  # noqa: E402
from muvera.integrations import ExportError  # noqa: E402
from muvera.integrations.qdrant import QdrantSearcher, point_id, to_qdrant  # noqa: E402

D = 16
N = 120
CFG = FDEConfig.preset("1280", dimension=D)
RNG = np.random.default_rng(3)
DOCS = [RNG.standard_normal((int(n), D)).astype(np.float32) for n in RNG.integers(3, 16, size=N)]
META = [{"lang": ["en", "fr", "de"][i % 3], "year": 2000 + i % 10} for i in range(N)]
QUERIES = [RNG.standard_normal((6, D)).astype(np.float32) for _ in range(5)]


def _ids(kind, n=N, start=0):
    return [f"doc/{i}" for i in range(start, start + n)] if kind == "str" else list(range(start, start + n))


def _index(kind="str", n=N, start=0, config=CFG):
    idx = MuveraIndex(config)
    idx.add(DOCS[:n], ids=_ids(kind, n, start), metadata=META[:n])
    return idx


@pytest.fixture()
def client():
    c = QdrantClient(":memory:")
    yield c
    c.close()


def _close(a, b):
    """Scores within float16 rounding of the stored tokens (both sides rank the same tokens)."""
    finite = np.isfinite(a)
    np.testing.assert_array_equal(finite, np.isfinite(b))
    np.testing.assert_allclose(a[finite], b[finite], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["int", "str"])
def test_same_results_as_muvera_index(client, kind):
    idx = _index(kind)
    idx.remove(_ids(kind)[:2])  # tombstones are not exported
    assert to_qdrant(idx, client, "docs", batch_size=32) == N - 2
    searcher = QdrantSearcher(client, "docs", idx.config)
    assert len(searcher) == N - 2
    for k, c in ((10, 30), (5, 5), (300, 300)):
        want = idx.search(QUERIES, k=k, candidates=c)
        got = searcher.search(QUERIES, k=k, candidates=c)
        assert got[0].dtype == want[0].dtype and got[1].dtype == np.float32
        assert got[0].shape == want[0].shape == (5, min(k, N - 2))
        np.testing.assert_array_equal(got[0], want[0])
        _close(got[1], want[1])


def test_metadata_filter_and_padding(client):
    idx = _index("int")
    to_qdrant(idx, client, "docs")
    searcher = QdrantSearcher(client, "docs", CFG)
    want = idx.search(QUERIES, k=10, candidates=30, where="lang = ?", where_params=("fr",))
    got = searcher.search(QUERIES, k=10, candidates=30, where={"lang": "fr"})
    np.testing.assert_array_equal(got[0], want[0])
    _close(got[1], want[1])
    # four documents qualify (13, 43, 73, 103): rows padded with -1 / -inf, like MuveraIndex
    got = searcher.search(QUERIES, k=6, candidates=10, where={"year": 2003, "lang": ["fr", "xx"]})
    want = idx.search(QUERIES, k=6, candidates=10, where="year = 2003 AND lang IN ('fr', 'xx')")
    np.testing.assert_array_equal(got[0], want[0])
    assert sorted(got[0][0, :4].tolist()) == [13, 43, 73, 103]
    assert (got[0][:, 4:] == -1).all() and np.isneginf(got[1][:, 4:]).all()
    flt = models.Filter(must=[models.FieldCondition(key="metadata.lang", match=models.MatchValue(value="de"))])
    assert set(searcher.search(QUERIES, k=3, where=flt)[0].ravel().tolist()) <= set(range(2, N, 3))


def test_str_ids_are_uuid5_with_payload(client):
    to_qdrant(_index("str"), client, "docs")
    pid = point_id("doc/7")
    assert pid == point_id("doc/7") and str(uuid.UUID(pid)) == pid and pid != point_id("doc/8")
    (point,) = client.retrieve("docs", [pid], with_payload=True, with_vectors=True)
    assert point.payload == {"muvera_id": "doc/7", "metadata": META[7]}
    assert len(point.vector["fde"]) == CFG.output_dimension and len(point.vector["tokens"]) == len(DOCS[7])
    np.testing.assert_array_equal(np.asarray(point.vector["tokens"], np.float32),
                                  _index("str").get_tokens("doc/7").astype(np.float32))  # the stored float16 values


def test_append_and_duplicates(client):
    to_qdrant(_index("int", 60), client, "docs")
    more = MuveraIndex(CFG)
    more.add(DOCS[60:], ids=_ids("int", N - 60, 60), metadata=META[60:])
    assert to_qdrant(more, client, "docs") == N - 60
    np.testing.assert_array_equal(QdrantSearcher(client, "docs", CFG).search(QUERIES, k=5, candidates=40)[0],
                                  _index("int").search(QUERIES, k=5, candidates=40)[0])
    with pytest.raises(ValueError, match=r"ids already there: \[60, 61"):
        to_qdrant(more, client, "docs")
    assert client.count("docs").count == N
    assert to_qdrant(more, client, "docs", overwrite=True) == N - 60
    assert client.count("docs").count == N
    with pytest.raises(ValueError, match="holds int ids, the index has str ids"):
        to_qdrant(_index("str", 5, 500), client, "docs")


def test_config_and_vector_mismatch(client):
    to_qdrant(_index("int", 20), client, "docs")
    other = FDEConfig.from_dict({**CFG.to_dict(), "seed": 7})
    with pytest.raises(ValueError, match="another config.*seed: stored 42, given 7"):
        QdrantSearcher(client, "docs", other)
    with pytest.raises(ValueError, match="another config"):
        to_qdrant(_index("int", 5, 100, config=other), client, "docs")
    with pytest.raises(ValueError, match="vector 'fde' has size 1280, the config's FDEs have 2560"):
        QdrantSearcher(client, "docs", FDEConfig.preset("2560", dimension=D))
    client.create_collection("plain", vectors_config={
        "fde": models.VectorParams(size=1280, distance=models.Distance.DOT),
        "tokens": models.VectorParams(size=8, distance=models.Distance.DOT)})
    with pytest.raises(ValueError, match="vector 'tokens' has size 8, the config's tokens have 16"):
        QdrantSearcher(client, "plain", CFG)
    client.create_collection("single", vectors_config=models.VectorParams(size=4, distance=models.Distance.DOT))
    with pytest.raises(ValueError, match="expected named vectors 'fde' and 'tokens'"):
        to_qdrant(_index("int", 5), client, "single")
    with pytest.raises(ValueError, match="not found"):
        QdrantSearcher(client, "nope", CFG)


def test_unreachable_database():
    client = QdrantClient(url="http://127.0.0.1:1", timeout=1, check_compatibility=False)
    with pytest.raises(ConnectionError, match="qdrant: cannot reach the database"):
        to_qdrant(_index("int", 5), client, "docs")
    with pytest.raises(ConnectionError, match="cannot reach"):
        QdrantSearcher(client, "docs", CFG)


def _failing_upsert(client, monkeypatch, fail_at):
    real, calls = client.upsert, []

    def upsert(*args, **kwargs):
        calls.append(1)
        if len(calls) == fail_at:
            raise RuntimeError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(client, "upsert", upsert)


def test_failed_export_leaves_no_new_collection(client, monkeypatch):
    _failing_upsert(client, monkeypatch, fail_at=2)
    with pytest.raises(ExportError, match="failed after 20 of 120 points.*disk full.*deleted") as info:
        to_qdrant(_index("str"), client, "docs", batch_size=20)
    assert info.value.written == []
    assert not client.collection_exists("docs")


def test_failed_append_says_what_was_written(client, monkeypatch):
    to_qdrant(_index("int", 30), client, "docs")
    more = MuveraIndex(CFG)
    more.add(DOCS[30:], ids=_ids("int", N - 30, 30))
    _failing_upsert(client, monkeypatch, fail_at=3)
    with pytest.raises(ExportError, match="append .* failed after 40 of 90 points") as info:
        to_qdrant(more, client, "docs", batch_size=20)
    assert info.value.written == list(range(30, 70))
    assert client.count("docs").count == 70


def test_bad_arguments(client):
    idx = _index("int", 10)
    with pytest.raises(TypeError, match="index: expected a muvera.MuveraIndex"):
        to_qdrant("idx", client, "docs")
    with pytest.raises(TypeError, match="client: expected a qdrant_client.QdrantClient"):
        to_qdrant(idx, object(), "docs")
    with pytest.raises(TypeError, match="collection: expected a non-empty collection name"):
        to_qdrant(idx, client, "")
    with pytest.raises(ValueError, match="batch_size: expected a positive int"):
        to_qdrant(idx, client, "docs", batch_size=0)
    with pytest.raises(TypeError, match="overwrite: expected a bool"):
        to_qdrant(idx, client, "docs", overwrite="yes")
    assert not client.collection_exists("docs")  # nothing was created by a refused call
    to_qdrant(idx, client, "docs")
    searcher = QdrantSearcher(client, "docs", CFG)
    with pytest.raises(TypeError, match="config: expected an FDEConfig"):
        QdrantSearcher(client, "docs", {"dimension": D})
    with pytest.raises(ValueError, match=r"candidates: expected >= k \(10\), got 5"):
        searcher.search(QUERIES, k=10, candidates=5)
    with pytest.raises(ValueError, match="queries"):
        searcher.search([np.ones((3, D + 1), np.float32)])
    with pytest.raises(TypeError, match=r"where\['year'\]: expected a str, int or bool"):
        searcher.search(QUERIES, where={"year": 2.5})
    with pytest.raises(TypeError, match="where: expected a non-empty dict"):
        searcher.search(QUERIES, where="lang = 'en'")


def test_collection_from_an_empty_index_takes_the_first_ids_kind(client):
    assert to_qdrant(MuveraIndex(CFG), client, "docs") == 0
    searcher = QdrantSearcher(client, "docs", CFG)
    ids, scores = searcher.search(QUERIES[:1], k=3)
    assert ids.tolist() == [[-1]] and np.isneginf(scores).all()  # like an empty MuveraIndex
    to_qdrant(_index("str", 10), client, "docs")
    ids, _ = searcher.search(QUERIES[:1], k=3)
    assert ids.dtype == object and ids.tolist() == _index("str", 10).search(QUERIES[:1], k=3)[0].tolist()
