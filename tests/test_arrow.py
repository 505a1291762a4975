"""Arrow / Parquet export and import: a neutral format that round-trips an index bit for bit."""

from __future__ import annotations

import json

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from muvera import FDEConfig, MuveraIndex  # noqa: E402
from muvera.integrations.arrow import SCHEMA_KEY, from_arrow, read_parquet, to_arrow, write_parquet  # noqa: E402

D = 16
CFG = FDEConfig.preset("1280", dimension=D)
RNG = np.random.default_rng(11)
DOCS = [RNG.standard_normal((int(n), D)).astype(np.float32) for n in RNG.integers(2, 12, size=80)]
META = [{"year": 2000 + i % 25, "lang": ["en", "fr"][i % 2], "nested": {"i": i}} for i in range(80)]
QUERIES = [RNG.standard_normal((5, D)).astype(np.float32) for _ in range(4)]


def _index(codec="float16", kind="str"):
    idx = MuveraIndex(CFG, token_codec=codec, model="hf:/some/model")
    ids = [f"doc-{i}" for i in range(80)] if kind == "str" else list(range(100, 180))
    idx.add(DOCS, ids=ids, metadata=META)
    idx.remove(ids[3:6])  # tombstones are not exported
    return idx


def _assert_same(a, b):
    assert a.ids == b.ids and a.id_kind == b.id_kind and a.model == b.model
    assert a.config.to_dict() == b.config.to_dict()
    for doc_id in a.ids[:20]:
        ta, tb = a.get_tokens(doc_id), b.get_tokens(doc_id)
        assert ta.dtype == tb.dtype and ta.tobytes() == tb.tobytes()
    rows_a = np.flatnonzero(a.id_map.alive)
    fa = a.backend.reconstruct(rows_a)
    fb = b.backend.reconstruct(np.arange(len(b)))
    assert fa.tobytes() == fb.tobytes()
    assert a.metadata(a.ids) == b.metadata(b.ids)
    for kw in ({"k": 10, "candidates": 30}, {"k": 5, "candidates": 200}):
        ia, sa = a.search(QUERIES, **kw)
        ib, sb = b.search(QUERIES, **kw)
        np.testing.assert_array_equal(ia, ib)
        assert sa.tobytes() == sb.tobytes()


@pytest.mark.parametrize("codec,kind", [("float16", "str"), ("float32", "int")])
def test_round_trip_bit_for_bit(codec, kind):
    idx = _index(codec, kind)
    table = to_arrow(idx)
    assert table.num_rows == len(idx) == 77
    assert table.column_names[:4] == ["id", "fde", "tokens", "metadata"]
    assert {"year", "lang"} <= set(table.column_names) and "nested" not in table.column_names
    value = pa.float16() if codec == "float16" else pa.float32()
    assert table.schema.field("tokens").type == pa.list_(pa.list_(value, D))
    assert table.schema.field("fde").type == pa.list_(pa.float32(), CFG.output_dimension)
    assert table.schema.field("id").type == (pa.string() if kind == "str" else pa.int64())
    header = json.loads(table.schema.metadata[SCHEMA_KEY])
    assert header["config"] == CFG.to_dict() and header["id_kind"] == kind and header["token_codec"] == codec
    back = from_arrow(table)
    assert back.store.codec.name == codec
    _assert_same(idx, back)
    assert not hasattr(MuveraIndex, "to_arrow") and not hasattr(MuveraIndex, "from_arrow")  # removed in 0.7.0


def test_compressed_store_exports_decoded_float32():
    idx = _index("int8")
    table = to_arrow(idx)
    assert table.schema.field("tokens").type.value_type.value_type == pa.float32()
    back = from_arrow(table)
    assert back.store.codec.name == "float32"
    np.testing.assert_array_equal(back.get_tokens(idx.ids[0]), idx.get_tokens(idx.ids[0]))
    # int8 FDEs are encoded from the decoded tokens, so the candidates agree exactly; the int8
    # rerank (integer dot products, the query rounded to int8) scores within that rounding
    a, b = idx.search(QUERIES, k=10, candidates=30), back.search(QUERIES, k=10, candidates=30)
    np.testing.assert_array_equal(a[0][:, 0], b[0][:, 0])
    np.testing.assert_allclose(a[1], b[1], rtol=0.01, atol=0.05)
    every_a = idx.search(QUERIES, k=len(idx), candidates=len(idx))[0]
    every_b = back.search(QUERIES, k=len(back), candidates=len(back))[0]
    assert sorted(every_a[0].tolist()) == sorted(every_b[0].tolist())  # the same documents


def test_parquet_round_trip(tmp_path):
    idx = _index()
    path = tmp_path / "docs.parquet"
    assert write_parquet(idx, path, batch_size=16) == 77
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs.parquet"]  # no temporary left
    schema = pq.read_schema(path)
    assert json.loads(schema.metadata[SCHEMA_KEY])["config"] == CFG.to_dict()
    assert pq.ParquetFile(path).metadata.num_row_groups == 5
    _assert_same(idx, read_parquet(path))


def test_empty_index_round_trips(tmp_path):
    empty = MuveraIndex(CFG)
    assert to_arrow(empty).num_rows == 0
    assert len(from_arrow(to_arrow(empty))) == 0
    write_parquet(empty, tmp_path / "e.parquet")
    assert len(read_parquet(tmp_path / "e.parquet")) == 0


def test_foreign_table_needs_config_and_uses_plain_columns():
    idx = _index()
    plain = to_arrow(idx).select(["id", "tokens", "year", "lang"]).replace_schema_metadata(None)
    with pytest.raises(ValueError, match="config=FDEConfig"):
        from_arrow(plain)
    back = from_arrow(plain, CFG)
    assert back.ids == idx.ids
    assert back.metadata(idx.ids[0]) == {"year": META[0]["year"], "lang": "en"}
    assert back.search(QUERIES, k=3, where="lang = ?", where_params=("fr",))[0].shape == (4, 3)


def test_other_config_reencodes():
    other = FDEConfig.preset("2560", dimension=D)
    back = from_arrow(to_arrow(_index()), other)
    assert back.config == other and back.backend.reconstruct(np.arange(1)).shape == (1, 2560)


def test_bad_tables():
    table = to_arrow(_index())
    with pytest.raises(TypeError, match="table: expected a pyarrow.Table"):
        from_arrow({"id": [1]})
    with pytest.raises(TypeError, match="config: expected an FDEConfig"):
        from_arrow(table, "10240")
    with pytest.raises(ValueError, match="the config's dimension"):
        from_arrow(table, FDEConfig.preset("1280", dimension=8))
    with pytest.raises(ValueError, match="no 'tokens' column"):
        from_arrow(table.drop_columns(["tokens"]))
    ids = table.column("id").to_pylist()
    ids[2] = None
    with pytest.raises(ValueError, match="column 'id' has 1 null"):
        from_arrow(table.set_column(0, "id", pa.array(ids, pa.string())))
    # FDEs that the config does not produce (another encoder variant, edited values)
    fde = table.column("fde").combine_chunks()
    flat = fde.flatten().to_numpy().copy()
    flat[0] += 1.0
    edited = table.set_column(1, table.schema.field("fde"),
                              pa.FixedSizeListArray.from_arrays(pa.array(flat), CFG.output_dimension))
    with pytest.raises(ValueError, match="'fde' column differs"):
        from_arrow(edited)
    assert len(from_arrow(edited, verify=False)) == 77
    bad_meta = table.set_column(3, "metadata", pa.array(["[1]"] * table.num_rows))
    with pytest.raises(ValueError, match=r"metadata\[0\] must be a JSON object"):
        from_arrow(bad_meta)
    newer = table.replace_schema_metadata({SCHEMA_KEY: json.dumps({"format": "muvera-export", "version": 99})})
    with pytest.raises(ValueError, match="newer than this release reads"):
        from_arrow(newer)


def test_bad_files(tmp_path):
    idx = _index()
    with pytest.raises(FileNotFoundError, match="no such Parquet file"):
        read_parquet(tmp_path / "missing.parquet")
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(ValueError, match="not a readable Parquet file"):
        read_parquet(tmp_path / "junk.parquet")
    with pytest.raises(ValueError, match="is a directory"):
        write_parquet(idx, tmp_path)
    with pytest.raises(TypeError, match="path: expected a file path"):
        write_parquet(idx, 3)
    with pytest.raises(TypeError, match="index: expected a muvera.MuveraIndex"):
        to_arrow("index")
    with pytest.raises(ValueError, match="batch_size"):
        to_arrow(idx, batch_size=0)


def test_cli_export_import(tmp_path, capsys):
    from muvera import cli

    idx = _index()
    idx.save(tmp_path / "idx")
    assert cli.main(["export", str(tmp_path / "idx"), str(tmp_path / "out.parquet"), "--batch-size", "32"]) == 0
    assert "exported 77 documents" in capsys.readouterr().out
    assert cli.main(["import", str(tmp_path / "out.parquet"), "-o", str(tmp_path / "back")]) == 0
    assert "imported 77 documents" in capsys.readouterr().out
    _assert_same(idx, MuveraIndex.load(tmp_path / "back"))
    assert cli.main(["export", str(tmp_path / "idx"), str(tmp_path / "out.csv")]) == 1
    assert "output: expected a .parquet file path" in capsys.readouterr().err
    assert cli.main(["import", str(tmp_path / "none.parquet"), "-o", str(tmp_path / "x")]) == 1
    assert "no such Parquet file" in capsys.readouterr().err
