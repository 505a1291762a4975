"""LanceDB (embedded, on a temporary directory): export, then FDE candidates + multivector MaxSim
that rank exactly like MuveraIndex.search; bad input and failed exports."""

from __future__ import annotations

import numpy as np
import pytest

lancedb = pytest.importorskip("lancedb")

from muvera import FDEConfig, MuveraIndex  # noqa: E402
from muvera.integrations import ExportError  # noqa: E402
from muvera.integrations.lancedb import LanceDBSearcher, to_lancedb  # noqa: E402

D = 16
N = 100
CFG = FDEConfig.preset("1280", dimension=D)
RNG = np.random.default_rng(4)
DOCS = [RNG.standard_normal((int(n), D)).astype(np.float32) for n in RNG.integers(3, 16, size=N)]
META = [{"lang": ["en", "fr", "de"][i % 3], "year": 2000 + i % 10} for i in range(N)]
QUERIES = [RNG.standard_normal((6, D)).astype(np.float32) for _ in range(4)]


def _ids(kind, n=N, start=0):
    return [f"it's {i}" for i in range(start, start + n)] if kind == "str" else list(range(start, start + n))


def _index(kind="str", n=N, start=0, config=CFG):
    idx = MuveraIndex(config)
    idx.add(DOCS[start:start + n], ids=_ids(kind, n, start), metadata=META[start:start + n])
    return idx


@pytest.fixture()
def db(tmp_path):
    return lancedb.connect(str(tmp_path / "lance"))


def _close(a, b):
    finite = np.isfinite(a)
    np.testing.assert_array_equal(finite, np.isfinite(b))
    np.testing.assert_allclose(a[finite], b[finite], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["int", "str"])
def test_same_results_as_muvera_index(db, kind):
    idx = _index(kind)
    idx.remove(_ids(kind)[5:7])
    assert to_lancedb(idx, db, "docs", batch_size=32) == N - 2
    searcher = LanceDBSearcher(db, "docs", CFG)
    assert len(searcher) == N - 2
    for k, c in ((10, 30), (200, 200)):
        want = idx.search(QUERIES, k=k, candidates=c)
        got = searcher.search(QUERIES, k=k, candidates=c)
        assert got[0].dtype == want[0].dtype and got[1].dtype == np.float32
        assert got[0].shape == want[0].shape
        np.testing.assert_array_equal(got[0], want[0])
        _close(got[1], want[1])
    # filters on the typed metadata columns, as SQL in LanceDB's dialect
    want = idx.search(QUERIES, k=5, candidates=20, where="lang = ? AND year >= ?", where_params=("fr", 2005))
    got = searcher.search(QUERIES, k=5, candidates=20, where="lang = 'fr' AND year >= 2005")
    np.testing.assert_array_equal(got[0], want[0])
    _close(got[1], want[1])


def test_table_holds_the_arrow_layout(db, tmp_path):
    to_lancedb(_index("str"), str(tmp_path / "lance"), "docs")  # a path connects
    tbl = db.open_table("docs")
    assert tbl.schema.names == ["id", "fde", "tokens", "metadata", "lang", "year"]
    from muvera.integrations.arrow import from_arrow

    back = from_arrow(tbl.to_arrow())  # the neutral format: LanceDB -> MuveraIndex again
    assert back.ids == _ids("str") and back.metadata("it's 3") == META[3]
    np.testing.assert_array_equal(back.get_tokens("it's 3"), _index("str").get_tokens("it's 3"))


def test_append_duplicates_and_mismatch(db):
    to_lancedb(_index("int", 50), db, "docs")
    rest = _index("int", N - 50, 50)
    assert to_lancedb(rest, db, "docs") == N - 50
    np.testing.assert_array_equal(LanceDBSearcher(db, "docs", CFG).search(QUERIES, k=5, candidates=40)[0],
                                  _index("int").search(QUERIES, k=5, candidates=40)[0])
    with pytest.raises(ValueError, match=r"ids already there: \[50, 51"):
        to_lancedb(rest, db, "docs")
    assert db.open_table("docs").count_rows() == N
    assert to_lancedb(rest, db, "docs", overwrite=True) == N - 50
    assert db.open_table("docs").count_rows() == N
    with pytest.raises(ValueError, match="holds int ids, the index has str ids"):
        to_lancedb(_index("str", 3, 90), db, "docs")
    other = FDEConfig.from_dict({**CFG.to_dict(), "seed": 9})
    with pytest.raises(ValueError, match="another config.*seed: stored 42, given 9"):
        LanceDBSearcher(db, "docs", other)
    with pytest.raises(ValueError, match="column 'fde' holds .*2560"):
        LanceDBSearcher(db, "docs", FDEConfig.preset("2560", dimension=D))
    with pytest.raises(ValueError, match="not found"):
        LanceDBSearcher(db, "nope", CFG)


def _failing_add(monkeypatch, fail_at):
    from lancedb.table import LanceTable

    real, calls = LanceTable.add, []

    def add(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == fail_at:
            raise OSError("disk full")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(LanceTable, "add", add)


def test_failed_export_drops_new_table(db, monkeypatch):
    _failing_add(monkeypatch, 2)
    with pytest.raises(ExportError, match="failed after 30 of 100 rows.*disk full.*dropped"):
        to_lancedb(_index("int"), db, "docs", batch_size=30)
    assert "docs" not in list(getattr(db.list_tables(), "tables", db.list_tables()))


def test_failed_append_rolls_back(db, monkeypatch):
    to_lancedb(_index("int", 40), db, "docs")
    _failing_add(monkeypatch, 3)
    with pytest.raises(ExportError, match="failed after 40 of 60 rows.*restored to version") as info:
        to_lancedb(_index("int", N - 40, 40), db, "docs", batch_size=20)
    assert info.value.written == []
    assert db.open_table("docs").count_rows() == 40


def test_bad_arguments(db):
    idx = _index("int", 10)
    with pytest.raises(TypeError, match="db: expected a lancedb connection or a directory path"):
        to_lancedb(idx, 42, "docs")
    with pytest.raises(TypeError, match="table: expected a non-empty table name"):
        to_lancedb(idx, db, " ")
    with pytest.raises(ValueError, match="batch_size"):
        to_lancedb(idx, db, "docs", batch_size=-1)
    to_lancedb(idx, db, "docs")
    searcher = LanceDBSearcher(db, "docs", CFG)
    with pytest.raises(ValueError, match=r"candidates: expected >= k"):
        searcher.search(QUERIES, k=10, candidates=3)
    with pytest.raises(TypeError, match="where: expected a LanceDB SQL filter string"):
        searcher.search(QUERIES, where={"lang": "en"})
    with pytest.raises(ValueError, match="where: "):
        searcher.search(QUERIES, where="no_such_column = 1")
