"""muvera.eval.beir: loading BEIR-layout folders and the offline behaviour of download_beir."""

import json
import time

import pytest

pytest.importorskip("numpy")

from muvera.eval import beir
from muvera.eval.beir import load_beir


def _write_beir(root, corpus, queries, qrels_lines, split="test"):
    root.mkdir(parents=True, exist_ok=True)
    (root / "qrels").mkdir(exist_ok=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(o) + "\n" for o in corpus))
    (root / "queries.jsonl").write_text("".join(json.dumps(o) + "\n" for o in queries))
    (root / "qrels" / f"{split}.tsv").write_text("".join(line + "\n" for line in qrels_lines))
    return root


@pytest.fixture
def tiny(tmp_path):
    corpus = [
        {"_id": "d1", "title": "Cats", "text": "cats purr"},
        {"_id": "d2", "title": "", "text": "dogs bark"},
        {"_id": 3, "text": "no title here"},            # numeric id, no title key
        {"_id": "d4", "title": "Only title", "text": None},
    ]
    queries = [
        {"_id": "q1", "text": "purring cats"},
        {"_id": "q2", "text": "unjudged query"},
        {"_id": "q3", "text": "barking dogs"},
        {"_id": "q4", "text": "titles"},
    ]
    qrels = ["query-id\tcorpus-id\tscore", "q1\td1\t1", "q3\td2\t2", "q3\t3\t0", "q4\td4\t1"]
    return _write_beir(tmp_path / "tiny", corpus, queries, qrels)


def test_load_tiny(tiny):
    ds = load_beir(tiny)
    assert ds.name == "tiny"
    assert ds.doc_ids == ["d1", "d2", "3", "d4"]
    assert ds.doc_texts == ["Cats cats purr", "dogs bark", "no title here", "Only title"]
    # q2 has no judgements: dropped; order of queries.jsonl kept.
    assert ds.query_ids == ["q1", "q3", "q4"]
    assert ds.query_texts == ["purring cats", "barking dogs", "titles"]
    assert ds.qrels == {"q1": {"d1": 1}, "q3": {"d2": 2, "3": 0}, "q4": {"d4": 1}}


def test_max_queries(tiny):
    ds = load_beir(tiny, max_queries=2)
    assert ds.query_ids == ["q1", "q3"]
    assert ds.query_texts == ["purring cats", "barking dogs"]
    assert len(ds.doc_ids) == 4


def test_qrels_without_header(tmp_path):
    root = _write_beir(tmp_path / "nohdr", [{"_id": "d", "text": "x"}], [{"_id": "q", "text": "y"}], ["q\td\t1"])
    assert load_beir(root).qrels == {"q": {"d": 1}}


def test_other_split(tmp_path):
    root = _write_beir(tmp_path / "dev", [{"_id": "d", "text": "x"}], [{"_id": "q", "text": "y"}],
                       ["q\td\t1"], split="dev")
    assert load_beir(root, split="dev").query_ids == ["q"]
    with pytest.raises(FileNotFoundError, match="test.tsv"):
        load_beir(root)


@pytest.mark.parametrize("missing", ["corpus.jsonl", "queries.jsonl", "qrels/test.tsv"])
def test_missing_file(tiny, missing):
    (tiny / missing).unlink()
    with pytest.raises(FileNotFoundError) as info:
        load_beir(tiny)
    assert missing.split("/")[-1] in str(info.value)


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="corpus.jsonl"):
        load_beir(tmp_path / "nope")


def test_malformed_json_line(tiny):
    lines = (tiny / "corpus.jsonl").read_text().splitlines()
    lines.insert(2, '{"_id": "broken", "text": ')
    (tiny / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError) as info:
        load_beir(tiny)
    assert "corpus.jsonl:3" in str(info.value)


def test_json_line_without_id(tiny):
    with open(tiny / "queries.jsonl", "a") as f:
        f.write(json.dumps({"text": "no id"}) + "\n")
    with pytest.raises(ValueError, match=r"queries.jsonl:5.*_id"):
        load_beir(tiny)


def test_blank_lines_skipped(tiny):
    text = (tiny / "corpus.jsonl").read_text()
    (tiny / "corpus.jsonl").write_text("\n" + text.replace("\n", "\n\n"))
    assert load_beir(tiny).doc_ids == ["d1", "d2", "3", "d4"]


def test_short_qrels_row(tiny):
    with open(tiny / "qrels" / "test.tsv", "a") as f:
        f.write("q1\td2\n")
    with pytest.raises(ValueError, match=r"test.tsv:6"):
        load_beir(tiny)


def test_non_integer_qrels_score(tiny):
    with open(tiny / "qrels" / "test.tsv", "a") as f:
        f.write("q1\td2\thigh\n")
    with pytest.raises(ValueError, match=r"test.tsv:6"):
        load_beir(tiny)


def test_blank_qrels_lines_skipped(tiny):
    with open(tiny / "qrels" / "test.tsv", "a") as f:
        f.write("\nq2\td2\t1\n\n")
    ds = load_beir(tiny)
    assert ds.query_ids == ["q1", "q2", "q3", "q4"]


def test_shipped_sample():
    from muvera.cli import SAMPLE

    ds = load_beir(SAMPLE)
    assert ds.name == "scifact-sample"
    assert len(ds.query_ids) == 50 and len(ds.query_texts) == 50
    assert len(ds.doc_ids) == 800 and len(set(ds.doc_ids)) == 800
    assert all(q in ds.qrels for q in ds.query_ids)
    docs = set(ds.doc_ids)
    assert all(d in docs for q in ds.query_ids for d in ds.qrels[q])  # every judged doc is in the sample
    assert all(t.strip() for t in ds.doc_texts)


def test_download_unreachable(tmp_path, monkeypatch):
    monkeypatch.setattr(beir, "BEIR_URL", "http://127.0.0.1:9/{name}.zip")
    t0 = time.perf_counter()
    with pytest.raises(ConnectionError) as info:
        beir.download_beir("scifact", tmp_path / "data", timeout=5)
    assert time.perf_counter() - t0 < 5
    assert "127.0.0.1:9" in str(info.value) and "scifact" in str(info.value)
    assert not list((tmp_path / "data").glob("*.part"))  # no partial download left behind


def test_download_existing_is_noop(tmp_path, monkeypatch):
    monkeypatch.setattr(beir, "BEIR_URL", "http://127.0.0.1:9/{name}.zip")
    (tmp_path / "scifact").mkdir()
    (tmp_path / "scifact" / "corpus.jsonl").write_text("")
    assert beir.download_beir("scifact", tmp_path) == tmp_path / "scifact"


def test_name_of_relative_path(tiny, monkeypatch):
    monkeypatch.chdir(tiny)
    assert load_beir(".").name == "tiny"
    monkeypatch.chdir(tiny / "qrels")
    assert load_beir("..").name == "tiny"


def test_malformed_first_qrels_line_is_not_taken_for_a_header(tmp_path):
    root = _write_beir(tmp_path / "t", [{"_id": "d1", "text": "x"}], [{"_id": "q1", "text": "y"}],
                       ["q1\td1\tone", "q1\td1\t1"])
    with pytest.raises(ValueError, match=r"test.tsv:1"):
        load_beir(root)


@pytest.mark.parametrize("bad_id", [None, "", "  ", True, 1.5])
def test_null_or_odd_ids_rejected(tmp_path, bad_id):
    root = _write_beir(tmp_path / "t", [{"_id": "d1", "text": "x"}, {"_id": bad_id, "text": "z"}],
                       [{"_id": "q1", "text": "y"}], ["q1\td1\t1"])
    with pytest.raises(ValueError, match=r"corpus.jsonl:2: '_id'"):
        load_beir(root)


@pytest.mark.parametrize("where", ["corpus", "queries"])
def test_duplicate_ids_rejected(tmp_path, where):
    docs = [{"_id": "d1", "text": "x"}, {"_id": "d1" if where == "corpus" else "d2", "text": "z"}]
    queries = [{"_id": "q1", "text": "y"}, {"_id": "q1" if where == "queries" else "q2", "text": "w"}]
    root = _write_beir(tmp_path / "t", docs, queries, ["q1\td1\t1"])
    with pytest.raises(ValueError, match=f"{where}.jsonl:2: duplicate _id"):
        load_beir(root)


def test_per_query_latency_takes_each_querys_median_over_passes():
    """repeats > 1: that many passes over all the queries, each query's median; bad counts refused."""
    import numpy as np

    from muvera.eval.bench import per_query_latency_ms

    qtok = np.zeros((6, 4), np.float32)
    qoff = np.array([0, 2, 3, 6], np.int64)
    seen = []

    def fn(q):
        seen.append(len(q))
        if len(seen) == 4:  # query 0 in the second pass: one slow call, dropped by the median
            time.sleep(0.05)

    lat = per_query_latency_ms(fn, qtok, qoff, repeats=3)
    assert seen == [2, 1, 3] * 3 and lat.shape == (3,)
    assert lat[0] < 40
    assert per_query_latency_ms(lambda q: None, qtok, qoff).shape == (3,)
    for bad in (0, -1, 1.5, True, "3"):
        with pytest.raises(ValueError, match="repeats"):
            per_query_latency_ms(lambda q: None, qtok, qoff, repeats=bad)
