"""`muvera serve`: a real server process on localhost, spoken to over HTTP (the Client and raw
requests): search, durable adds and removes, metadata, stats, checkpoint, errors and auth."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from muvera import FDEConfig, MuveraIndex  # noqa: E402
from muvera.client import Client, ServerError  # noqa: E402

CFG = FDEConfig(dimension=16, num_repetitions=4, num_simhash_projections=3)


def _docs(n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((6, 16)).astype(np.float32) for _ in range(n)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, index_path, *extra, env=None):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "muvera.cli", "serve", str(index_path), "--port",
                                      str(self.port), *extra], stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, **(env or {})},
                                     cwd=Path(index_path).parent)  # not the checkout (no built extension)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.url + "/health", timeout=1).read()
                return
            except (urllib.error.URLError, ConnectionError, OSError):
                if self.proc.poll() is not None:
                    raise RuntimeError(self.proc.stderr.read())
                time.sleep(0.1)
        raise RuntimeError("the server did not start")

    def kill(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)
        self.proc.wait(timeout=30)


@pytest.fixture
def served(tmp_path):
    index = MuveraIndex(CFG, backend="exact")
    docs = _docs(30)
    index.add(docs, ids=[f"d{i}" for i in range(30)], metadata=[{"year": 2000 + i % 5} for i in range(30)])
    index.save(tmp_path / "idx")
    server = Server(tmp_path / "idx")
    yield server, docs, tmp_path / "idx"
    if server.proc.poll() is None:
        server.kill()


def test_search_add_remove_metadata_and_durability(served):
    server, docs, path = served
    c = Client(server.url)
    ids, scores = c.search(docs[:2], k=3)
    local = MuveraIndex.load(path)
    want_ids, want_scores = local.search(docs[:2], k=3)
    assert ids.tolist() == want_ids.tolist()
    np.testing.assert_allclose(scores, want_scores, rtol=1e-6)
    ids, _ = c.search(docs[:1], k=30, where="year = ?", where_params=(np.int64(2001),))
    assert sorted(x for x in ids[0] if x is not None) == sorted(f"d{i}" for i in range(1, 30, 5))
    assert c.add(_docs(2, seed=9), ids=["new1", "new2"], metadata=[{"year": 1999}, {"year": 1998}]) == ["new1", "new2"]
    assert c.remove(["d0"]) == 1
    assert c.metadata(["new2"]) == [{"year": 1998}]
    assert c.add(_docs(1, seed=5), ids=["d2"], metadata=[{"year": 1}], upsert=True) == ["d2"]
    assert c.metadata(["d2"]) == [{"year": 1}]
    stats = c.stats()
    assert stats["documents"] == 31 and stats["deleted"] == 2 and stats["backend"] == "exact"  # d0 and old d2
    assert stats["durable_writes"] is True
    server.kill(signal.SIGKILL)  # acknowledged writes are in the log
    back = MuveraIndex.load(path)
    assert len(back) == 31 and "new1" in back and "d0" not in back and back.metadata(["d2"]) == [{"year": 1}]


def test_group_commit_serves_concurrent_durable_writes(tmp_path):
    """`muvera serve --group-commit`: concurrent clients add at once; after a kill -9 every
    acknowledged document is in the log."""
    index = MuveraIndex(CFG, backend="exact")
    index.add(_docs(3), ids=["a", "b", "c"])
    index.save(tmp_path / "idx")
    server = Server(tmp_path / "idx", "--group-commit")
    try:
        from concurrency import run_concurrently

        acked = []

        def writer(t):
            c = Client(server.url)
            for i in range(6):
                x = f"w{t}-{i}"
                c.add(_docs(1, seed=100 * t + i), ids=[x])
                acked.append(x)

        errors = run_concurrently(writer, 4)
        assert errors == [] and len(acked) == 24
        assert Client(server.url).stats()["documents"] == 27
        server.kill(signal.SIGKILL)
        back = MuveraIndex.load(tmp_path / "idx")
        assert set(acked) <= set(back.ids) and len(back) == 27
    finally:
        if server.proc.poll() is None:
            server.kill()


def test_errors_are_4xx_json_with_the_librarys_message(served):
    server, docs, _ = served
    c = Client(server.url)
    with pytest.raises(ValueError, match="dimension|16"):
        c.search([np.ones((3, 5))], k=3)
    with pytest.raises(ValueError, match="candidates"):
        c.search(docs[:1], k=10, candidates=5)
    with pytest.raises(ValueError, match="no text model"):
        c.search(["a text query"], k=3)
    with pytest.raises(ValueError, match="where"):
        c.search(docs[:1], k=3, where="nonsense ((")
    with pytest.raises(ValueError, match="already in the index"):
        c.add(_docs(1), ids=["d1"])
    with pytest.raises(KeyError):
        c.metadata(["nope"])
    with pytest.raises(KeyError):
        c.remove(["nope"])
    plain = json.dumps({"tokens": [docs[0].tolist()], "k": 2}).encode()  # the plain JSON form works too
    req = urllib.request.Request(server.url + "/search", data=plain, method="POST",
                                 headers={"Content-Type": "application/json"})
    assert json.loads(urllib.request.urlopen(req, timeout=10).read())["ids"][0][0] == "d0"
    with pytest.raises(ValueError, match="exactly one of"):
        c._call("POST", "/search", {"tokens": [docs[0].tolist()], **Client._tokens([docs[0]])})
    req = urllib.request.Request(server.url + "/search", data=b"{not json", method="POST",
                                 headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 422
    assert len(MuveraIndex.load(served[2])) == 30  # nothing half-added


def test_api_key_body_limit_and_openapi(tmp_path):
    index = MuveraIndex(CFG, backend="exact")
    index.add(_docs(5))
    index.save(tmp_path / "idx")
    server = Server(tmp_path / "idx", "--max-body-mb", "1", env={"MUVERA_API_KEY": "s3cret"})
    try:
        assert Client(server.url).health()["status"] == "ok"  # health needs no key
        with pytest.raises(ServerError) as err:
            Client(server.url).stats()
        assert err.value.status == 401
        with pytest.raises(ServerError) as err:
            Client(server.url, api_key="wrong").stats()
        assert err.value.status == 401
        c = Client(server.url, api_key="s3cret")
        assert c.stats()["documents"] == 5
        with pytest.raises(ServerError) as err:
            c.add([np.zeros((20_000, 16))])  # ~2 MB of JSON
        assert err.value.status == 413
        schema = json.loads(urllib.request.urlopen(urllib.request.Request(
            server.url + "/openapi.json", headers={"Authorization": "Bearer s3cret"}), timeout=10).read())
        assert {"/search", "/documents", "/documents/{doc_id}", "/stats", "/checkpoint"} <= set(schema["paths"])
        c.add(_docs(2, seed=4))
        c.checkpoint()
        assert (tmp_path / "idx" / "wal.log").stat().st_size == 0 and len(MuveraIndex.load(tmp_path / "idx")) == 7
    finally:
        server.kill()


def test_text_queries_with_the_index_model(tmp_path, monkeypatch):
    """An index that records its model (the embedded MiniLM, offline) takes texts."""
    pytest.importorskip("torch")
    from muvera import Retriever

    r = Retriever()
    r.add(["Paris is the capital of France.", "The Nile flows north through Egypt."], ids=["paris", "nile"])
    r.save(tmp_path / "r")
    server = Server(tmp_path / "r")
    try:
        ids, _ = Client(server.url).search(["Which river flows north?"], k=1)
        assert ids[0, 0] == "nile"
        assert Client(server.url).add(["Rome is in Italy."], ids=["rome"]) == ["rome"]
        ids, _ = Client(server.url).search("Italian capital", k=1)
        assert ids[0, 0] == "rome"
    finally:
        server.kill()
