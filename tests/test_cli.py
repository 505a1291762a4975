"""The ``muvera`` command in-process (encode / index / search / bench) with a tiny fake encoder."""

import hashlib
import io
import json
import re

import numpy as np

import muvera
import pytest

pytest.importorskip("ir_measures")
pytest.importorskip("threadpoolctl")

from muvera import cli
from muvera.models.base import TokenEncoder

DIM = 16
N_DOCS = 150
VOCAB = [f"v{i}" for i in range(40)]


def _unit(key):
    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    v = np.random.default_rng(seed).standard_normal(DIM)
    return v / np.linalg.norm(v)


class FakeEncoder(TokenEncoder):
    """Words -> fixed random unit vectors; document tokens get a small text-specific jitter (no exact ties)."""

    dim = DIM

    def __init__(self):
        self.calls = {"documents": 0, "queries": 0}

    def encode_documents(self, texts):
        self.calls["documents"] += 1
        out = []
        for t in texts:
            rows = [_unit(w) + 0.1 * _unit(f"{t}|{p}") for p, w in enumerate(t.lower().split())]
            v = np.stack(rows)
            out.append((v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32))
        return out

    def encode_queries(self, texts):
        self.calls["queries"] += 1
        return [np.stack([_unit(w) for w in t.lower().split()]).astype(np.float32) for t in texts]

    def fingerprint(self):
        return "fake-hash-16"


def _tiny_dataset(root, n_docs=N_DOCS, n_queries=12):
    rng = np.random.default_rng(0)
    (root / "qrels").mkdir(parents=True)
    with open(root / "corpus.jsonl", "w") as f:
        for i in range(n_docs):
            words = [f"u{i}a", f"u{i}b"] + list(rng.choice(VOCAB, size=2 + i % 3, replace=False))
            f.write(json.dumps({"_id": f"doc{i}", "title": words[0], "text": " ".join(words[1:])}) + "\n")
    with open(root / "queries.jsonl", "w") as f, open(root / "qrels" / "test.tsv", "w") as q:
        q.write("query-id\tcorpus-id\tscore\n")
        for j in range(n_queries + 3):  # the last 3 queries have no judgements
            f.write(json.dumps({"_id": f"q{j}", "text": f"u{7 * j}a {VOCAB[j % len(VOCAB)]} u{7 * j + 1}b"}) + "\n")
            if j < n_queries:
                q.write(f"q{j}\tdoc{7 * j}\t1\n")
                q.write(f"q{j}\tdoc{7 * j + 1}\t{1 + j % 2}\n")
    return root


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return _tiny_dataset(tmp_path_factory.mktemp("data") / "tiny")


@pytest.fixture
def fake(monkeypatch):
    enc = FakeEncoder()
    specs = []

    def model(spec):
        specs.append(spec)
        return enc

    monkeypatch.setattr(cli, "_model", model)
    enc.specs = specs
    return enc


RUN_KEYS = {"candidates", "ndcg@10", "recall@100", "mrr@10", "fde_ndcg@10", "fde_recall@100", "exact_ndcg@10",
            "exact_recall@100", "recall@10_vs_exact", "latency_ms_p50", "latency_ms_p95", "qps", "bytes_per_doc"}


def test_bench(tiny, fake, tmp_path, capsys):
    out_json, out_png = tmp_path / "out.json", tmp_path / "out.png"
    rc = cli.main(["bench", str(tiny), "--cache", str(tmp_path / "cache"), "--preset", "1280",
                   "--candidates", "100,200", "--json", str(out_json), "--plot", str(out_png), "--quiet"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert fake.specs == ["default"]
    rep = json.loads(out_json.read_text())
    assert rep["dataset"] == "tiny" and rep["n_docs"] == N_DOCS and rep["n_queries"] == 12
    assert rep["dim"] == DIM and rep["fde_dimension"] == 1280 and rep["backend"] == "auto"
    assert [r["candidates"] for r in rep["runs"]] == [100, 200]
    for r in rep["runs"]:
        assert RUN_KEYS <= set(r), RUN_KEYS - set(r)
        for key in ("ndcg@10", "recall@100", "mrr@10", "exact_ndcg@10", "recall@10_vs_exact"):
            assert 0.0 <= r[key] <= 1.0
        assert r["latency_ms_p50"] > 0 and r["qps"] > 0 and r["bytes_per_doc"] > 0
        assert r["latency_ms_p95"] >= r["latency_ms_p50"]
    ex = rep["exact"]
    assert ex["ndcg@10"] > 0.5  # every query names its relevant documents' unique words
    # candidates >= corpus size: FDE + rerank is exact Chamfer over everything.
    full = rep["runs"][1]
    assert full["ndcg@10"] == pytest.approx(ex["ndcg@10"], abs=1e-12)
    assert full["recall@100"] == pytest.approx(ex["recall@100"], abs=1e-12)
    assert full["mrr@10"] == pytest.approx(ex["mrr@10"], abs=1e-12)
    assert full["exact_ndcg@10"] == ex["ndcg@10"]
    assert full["recall@10_vs_exact"] == 1.0
    # the printed table
    assert "candidates" in captured.out and "nDCG@10" in captured.out and "exact Chamfer" in captured.out
    table_rows = [line.split() for line in captured.out.splitlines() if line.split()[:1] in (["100"], ["200"])]
    assert [row[0] for row in table_rows] == ["100", "200"]
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob("*.tmp"))
    # the embeddings are in the given cache, not elsewhere; a second bench reuses them
    assert list((tmp_path / "cache" / "tiny").glob("*/docs/manifest.json"))
    calls = dict(fake.calls)
    assert cli.main(["bench", str(tiny), "--cache", str(tmp_path / "cache"), "--preset", "1280",
                     "--candidates", "200", "--max-queries", "5", "--quiet"]) == 0
    assert fake.calls == calls
    assert "tiny: 150 docs, 5 queries" in capsys.readouterr().out


def test_bench_candidates_below_100(tiny, fake, tmp_path, capsys):
    rc = cli.main(["bench", str(tiny), "--cache", str(tmp_path), "--preset", "1280", "--candidates", "50",
                   "--quiet"])
    assert rc == 1
    assert "candidates" in capsys.readouterr().err


def test_encode_index_search(tiny, fake, tmp_path, capsys, monkeypatch):
    cache = str(tmp_path / "cache")
    assert cli.main(["encode", str(tiny), "--cache", cache]) == 0
    out = capsys.readouterr().out
    assert "tiny: 150 documents" in out and "12 queries" in out and "16-d" in out
    calls = dict(fake.calls)

    index_dir = tmp_path / "idx"
    assert cli.main(["index", str(tiny), "--cache", cache, "-o", str(index_dir), "--preset", "1280",
                     "--model", "hf:/some/model"]) == 0
    assert fake.calls == calls  # the index reads the cached embeddings
    assert f"indexed {N_DOCS} documents" in capsys.readouterr().out
    assert index_dir.is_dir()
    assert muvera.MuveraIndex.load(index_dir).model == "hf:/some/model"

    fake.specs.clear()
    rc = cli.main(["search", str(index_dir), "-q", "u21a v3 u21b", "-q", "u35a", "-k", "5"])
    assert rc == 0
    assert fake.specs == ["hf:/some/model"]  # the model recorded in the index, without --model
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["query"] == "u21a v3 u21b" and second["query"] == "u35a"
    for res in (first, second):
        assert len(res["results"]) == 5
        scores = [r["score"] for r in res["results"]]
        assert scores == sorted(scores, reverse=True)
        assert all(isinstance(r["id"], str) and r["id"].startswith("doc") for r in res["results"])
    assert first["results"][0]["id"] == "doc21"
    assert first["results"][0]["title"] == "u21a" and "u21b" in first["results"][0]["snippet"]
    assert second["results"][0]["id"] == "doc35"

    # queries from stdin, one per line, blank lines skipped
    monkeypatch.setattr("sys.stdin", io.StringIO("u3a\n\nu4b\n"))
    assert cli.main(["search", str(index_dir), "-k", "3"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [d["query"] for d in lines] == ["u3a", "u4b"]
    assert [d["results"][0]["id"] for d in lines] == ["doc3", "doc4"]

    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    assert cli.main(["search", str(index_dir)]) == 2
    assert "no queries" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["bench", "encode", "index"])
def test_missing_dataset(fake, tmp_path, capsys, command):
    argv = [command, str(tmp_path / "no-such-dataset"), "--cache", str(tmp_path / "cache")]
    if command == "index":
        argv += ["-o", str(tmp_path / "idx")]
    rc = cli.main(argv)
    err = capsys.readouterr().err
    assert rc == 1
    assert f"muvera {command}: error" in err and "corpus.jsonl" in err and "no-such-dataset" in err
    assert not (tmp_path / "idx").exists()


def test_missing_index(fake, tmp_path, capsys):
    rc = cli.main(["search", str(tmp_path / "no-such-index"), "-q", "x"])
    assert rc == 1
    assert "muvera search: error" in capsys.readouterr().err


def test_sample_alias():
    assert cli._dataset("sample") == cli.SAMPLE and (cli.SAMPLE / "corpus.jsonl").is_file()
    assert str(cli._dataset("some/dir")) == "some/dir"


def test_parser_requires_command(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main([])
    assert info.value.code == 2


# --- embed_beir / fit_pca / project, which every command goes through -------------------------------------------


def test_embed_beir_cache_layout(tiny, tmp_path, monkeypatch):
    import shutil

    from muvera.eval.embed import embed_beir

    enc = FakeEncoder()
    emb = embed_beir(tiny, enc, cache_root=tmp_path / "cache", progress=False)
    assert emb.dim == DIM and emb.doc_tokens.dtype == np.float16
    assert len(emb.doc_offsets) == N_DOCS + 1 and len(emb.query_offsets) == 13
    assert emb.doc_offsets[-1] == len(emb.doc_tokens) and emb.query_offsets[-1] == len(emb.query_tokens)
    ref = enc.encode_queries(emb.data.query_texts[:1])[0].astype(np.float16)
    np.testing.assert_array_equal(emb.query_tokens[: emb.query_offsets[1]], ref)

    # max_queries slices the cached queries
    calls = dict(enc.calls)
    emb5 = embed_beir(tiny, enc, cache_root=tmp_path / "cache", max_queries=5, progress=False)
    assert enc.calls == calls
    assert emb5.data.query_ids == emb.data.query_ids[:5] and len(emb5.query_offsets) == 6
    np.testing.assert_array_equal(emb5.query_tokens, emb.query_tokens[: emb.query_offsets[5]])

    # another split of the same dataset: its own query entry, the documents are reused
    data = tmp_path / "tiny"
    shutil.copytree(tiny, data)
    (data / "qrels" / "dev.tsv").write_text("q13\tdoc3\t1\nq14\tdoc4\t1\n")
    dev = embed_beir(data, enc, cache_root=tmp_path / "cache", split="dev", progress=False)
    assert dev.data.query_ids == ["q13", "q14"] and len(dev.query_offsets) == 3
    assert enc.calls == {"documents": calls["documents"], "queries": calls["queries"] + 1}
    entry = next((tmp_path / "cache" / "tiny").iterdir())
    assert sorted(p.name for p in entry.iterdir()) == ["docs", "queries", "queries-dev"]

    # "." is named after the folder, so it shares the cache entry
    monkeypatch.chdir(tiny)
    here = embed_beir(".", enc, cache_root=tmp_path / "cache", progress=False)
    assert here.data.name == "tiny" and enc.calls["queries"] == calls["queries"] + 1


def test_fit_pca_and_project():
    from muvera.eval.embed import fit_pca, project

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2000, 8)) * np.array([10, 5, 1, 1, 1, 1, 1, 1])
    p = fit_pca(x.astype(np.float16), 2)
    assert p.shape == (8, 2) and p.dtype == np.float32
    np.testing.assert_allclose(p.T @ p, np.eye(2), atol=1e-5)
    np.testing.assert_allclose(np.abs(p[:2]), np.eye(2), atol=0.05)  # the two dominant axes, in order
    y = project(x, p, chunk=300)
    assert y.shape == (2000, 2) and y.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(project(x, p, normalize=False), x @ p, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("argv,needle", [
    (["search", "IDX", "-k", "0"], "argument -k: expected a positive integer, got 0"),
    (["search", "IDX", "--candidates", "-3"], "argument --candidates: expected a positive integer, got -3"),
    (["search", "IDX", "--candidates", "abc"], "argument --candidates: expected a positive integer, got 'abc'"),
    (["bench", "sample", "--candidates", "100,x"], "argument --candidates: expected a positive integer, got 'x'"),
    (["index", "sample", "-o", "x", "--preset", "999"], "argument --preset: expected one of"),
    (["bench", "sample", "--backend", "HNSW0"], "argument --backend: backend: 'HNSW0'"),
    (["bench", "sample", "--pca", "0"], "argument --pca"),
])
def test_arguments_checked_before_anything_loads(argv, needle, capsys, monkeypatch):
    def no_model(spec):
        raise AssertionError("the model must not load before the arguments are checked")

    monkeypatch.setattr(cli, "_model", no_model)
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert needle in capsys.readouterr().err


def test_search_candidates_below_k_refused_before_loading(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "_model", lambda spec: pytest.fail("model loaded"))
    assert cli.main(["search", str(tmp_path / "nowhere"), "-k", "20", "--candidates", "10"]) == 1
    assert "--candidates: expected >= -k (20), got 10" in capsys.readouterr().err


def test_model_loading_failure_is_one_line(tmp_path, capsys):
    assert cli.main(["encode", "sample", "--model", f"hf:{tmp_path / 'missing-model'}", "--cache",
                     str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("muvera encode: error: --model 'hf:")
    assert "Traceback" not in err


def test_version_and_help_show_defaults(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert capsys.readouterr().out.strip() == f"muvera {muvera.__version__}"
    with pytest.raises(SystemExit):
        cli.main(["search", "--help"])
    out = capsys.readouterr().out
    assert "(default: 10)" in out
    import inspect

    api_default = inspect.signature(muvera.MuveraIndex.search).parameters["candidates"].default
    assert api_default is None and "(default: None)" not in out  # the CLI and the API agree: tuned, else
    assert f"max({muvera.MuveraIndex.DEFAULT_CANDIDATES}, k)" in " ".join(out.split())  # max(200, k)


def test_bench_follows_beir_identical_ids_convention(tmp_path, fake, capsys):
    """ArguAna-style: a query is itself a document of the corpus. BEIR drops that hit."""
    root = _tiny_dataset(tmp_path / "argu")
    docs = [json.loads(line) for line in (root / "corpus.jsonl").read_text().splitlines()]
    queries = [json.loads(line) for line in (root / "queries.jsonl").read_text().splitlines()]
    # Query q0 becomes document "q0" with the same words: it would rank first for itself.
    docs.append({"_id": "q0", "title": "", "text": queries[0]["text"]})
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    reports = {}
    for keep in (False, True):
        out = tmp_path / f"rep-{keep}.json"
        argv = ["bench", str(root), "--cache", str(tmp_path / f"cache-{keep}"), "--preset", "1280",
                "--candidates", "200", "--quiet", "--json", str(out)] + (["--keep-identical-ids"] if keep else [])
        assert cli.main(argv) == 0
        reports[keep] = json.loads(out.read_text())
    assert reports[False]["ignore_identical_ids"] is True and reports[True]["ignore_identical_ids"] is False
    # Keeping the query's own document pushes its relevant documents down: lower MRR.
    assert reports[True]["exact"]["mrr@10"] < reports[False]["exact"]["mrr@10"]


def test_bench_and_index_take_a_token_codec(tiny, fake, tmp_path, capsys):
    out = tmp_path / "rep.json"
    assert cli.main(["bench", str(tiny), "--cache", str(tmp_path / "c"), "--preset", "1280", "--candidates",
                     "200", "--quiet", "--token-codec", "int8", "--json", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert rep["token_codec"] == "int8" and all(r["token_codec"] == "int8" for r in rep["runs"])
    # DIM int8 codes + a 4-byte scale per token, plus the offsets spread over the tokens
    assert DIM + 4 < rep["token_bytes_per_token"] < DIM + 4 + 8
    assert "tokens int8" in capsys.readouterr().out
    assert cli.main(["index", str(tiny), "--cache", str(tmp_path / "c"), "-o", str(tmp_path / "i"), "--preset",
                     "1280", "--token-codec", "int8"]) == 0
    assert muvera.MuveraIndex.load(tmp_path / "i").store.codec.name == "int8"
    with pytest.raises(SystemExit):
        cli.main(["index", str(tiny), "-o", "x", "--token-codec", "int3"])
    assert "argument --token-codec" in capsys.readouterr().err


def test_bench_rescore(tiny, fake, tmp_path, capsys):
    out = tmp_path / "rep.json"
    assert cli.main(["bench", str(tiny), "--cache", str(tmp_path / "c"), "--preset", "1280", "--candidates",
                     "200", "--quiet", "--token-codec", "int8", "--rescore", "150", "--json", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert rep["runs"][0]["rescore"] == 150 and rep["runs"][0]["token_codec"] == "int8"
    assert cli.main(["bench", str(tiny), "--rescore", "150"]) == 1  # float16 needs no rescore
    assert "--rescore" in capsys.readouterr().err


def test_residual_index_with_exact_tier_and_rescore(tiny, fake, tmp_path, capsys):
    cache = str(tmp_path / "c")
    assert cli.main(["index", str(tiny), "--cache", cache, "-o", str(tmp_path / "r"), "--preset", "1280",
                     "--token-codec", "residual:2", "--keep-exact", "--quiet"]) == 0
    index = muvera.MuveraIndex.load(tmp_path / "r")
    assert index.store.codec.name == "residual:2" and index.exact_tier is not None
    capsys.readouterr()
    assert cli.main(["search", str(tmp_path / "r"), "-q", "u21a v3 u21b", "-k", "3", "--rescore", "20"]) == 0
    hits = json.loads(capsys.readouterr().out.splitlines()[0])["results"]
    assert hits[0]["id"] == "doc21"
    # the rescored scores are float16 Chamfer: equal to a float16 index's exact scores
    f16 = muvera.MuveraIndex(index.config)
    f16.add([index.exact_tier.get(r).astype(np.float32) for r in range(len(index))], ids=index.ids)
    q = fake.encode_queries(["u21a v3 u21b"])
    want_ids, want_scores = f16.search_exact(q, k=3)
    assert [h["id"] for h in hits] == list(want_ids[0])
    np.testing.assert_allclose([h["score"] for h in hits], want_scores[0], rtol=0, atol=0)
    # --rescore needs an exact tier
    assert cli.main(["index", str(tiny), "--cache", cache, "-o", str(tmp_path / "n"), "--preset", "1280",
                     "--token-codec", "residual:2", "--quiet"]) == 0
    assert cli.main(["search", str(tmp_path / "n"), "-q", "u21a", "--rescore", "20"]) == 1
    assert "exact tier" in capsys.readouterr().err


@pytest.mark.parametrize("extra, match", [
    (["--backend", "hnsw32"], "--backend"),
    (["--keep-exact"], "--keep-exact: the float16 store is exact already"),
    (["-o", "EXISTING"], "exists and is not a muvera index"),
])
def test_index_refuses_bad_arguments_before_loading_the_model(tiny, tmp_path, capsys, monkeypatch, extra, match):
    def no_model(spec):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(cli, "_model", no_model)
    existing = tmp_path / "mine"
    existing.mkdir()
    (existing / "notes.txt").write_text("x")
    args = ["index", str(tiny), "--cache", str(tmp_path / "c"), "--preset", "1280"]
    extra = [str(existing) if a == "EXISTING" else a for a in extra]
    if "-o" not in extra:
        args += ["-o", str(tmp_path / "out")]
    assert cli.main(args + extra) == 1
    assert match in capsys.readouterr().err


def test_a_binary_jsonl_file_is_named_with_its_line(tmp_path, capsys, fake):
    bad = tmp_path / "docs.jsonl"
    bad.write_bytes(b'{"id": "a", "text": "fine"}\n\xff\xfe\x00binary\n')
    assert cli.main(["index", str(bad), "--cache", str(tmp_path / "c"), "-o", str(tmp_path / "i"),
                     "--preset", "1280"]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:2: not UTF-8 text" in err


def test_ctrl_c_prints_one_line(tiny, tmp_path, capsys, monkeypatch):
    def interrupted(spec):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_model", interrupted)
    assert cli.main(["index", str(tiny), "--cache", str(tmp_path / "c"), "-o", str(tmp_path / "i"),
                     "--preset", "1280"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "interrupted" in err[0] and "resume" in err[0]


def test_search_on_a_terminal_answers_each_line(tiny, fake, tmp_path, capsys, monkeypatch):
    cache = str(tmp_path / "cache")
    assert cli.main(["index", str(tiny), "--cache", cache, "-o", str(tmp_path / "idx"), "--preset", "1280"]) == 0
    capsys.readouterr()

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr("sys.stdin", Terminal("u21a v3 u21b\n\nu35a\n"))
    assert cli.main(["search", str(tmp_path / "idx"), "-k", "3"]) == 0
    captured = capsys.readouterr()
    assert "type a query" in captured.err and captured.err.count("query> ") == 4
    lines = [json.loads(x) for x in captured.out.strip().splitlines()]
    assert [x["query"] for x in lines] == ["u21a v3 u21b", "u35a"]
    assert lines[0]["results"][0]["id"] == "doc21"


def test_help_texts_show_defaults_once_and_readably(capsys):
    for command in ("index", "bench", "search", "import"):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        out = " ".join(capsys.readouterr().out.split())
        assert "(default: None)" not in out and "(default: False)" not in out
        if command == "search":  # a help text that states its default gets no second note
            assert "else max(200, k))" in out and "max(200, k)) (default:" not in out
        if command in ("index", "bench", "import"):
            assert "auto (by corpus size" in out
    with pytest.raises(SystemExit):
        cli.main(["bench", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: 100,200,500,1000)" in out and "[100, 200" not in out


def test_search_warns_about_another_model_and_names_a_non_index(tiny, fake, tmp_path, capsys):
    cache = str(tmp_path / "cache")
    assert cli.main(["index", str(tiny), "--cache", cache, "-o", str(tmp_path / "idx"), "--preset", "1280",
                     "--model", "hf:/some/model"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"indexed \d+ documents in [\d.]+ s \(added in [\d.]+ s after encoding\)", out)
    assert cli.main(["search", str(tmp_path / "idx"), "-q", "u3a", "--model", "hf:/other"]) == 0
    assert "not the model the index was built with ('hf:/some/model')" in capsys.readouterr().err
    plain = tmp_path / "plain"
    plain.mkdir()
    assert cli.main(["search", str(plain), "-q", "x"]) == 1
    assert "is not a muvera index" in capsys.readouterr().err
