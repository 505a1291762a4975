"""The index composes parts it does not know: a backend defined here alone is added, searched,
filtered, saved and loaded; filters reach every backend as one allowed-rows bitmap."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import pytest

from muvera import FDEConfig, MuveraIndex
from muvera.backends import Backend, as_allowed, make_backend, register_backend, registered_backends, topk
from muvera.durable import write_npy
from muvera.index_format import load_npy

D = 8
CONFIG = FDEConfig.preset("1280", dimension=D, seed=3)


class ToyBackend(Backend):
    """Brute force in float64, its own file name: nothing in muvera knows this class."""

    kind = "toy"

    def __init__(self, options: str, dimension: Optional[int]):
        self.scale = float(options or 1.0)
        self._dim = dimension
        self._vecs = np.zeros((0, dimension or 0))
        self.searches = 0

    @property
    def name(self) -> str:
        return f"toy:{self.scale}"

    @property
    def dimension(self) -> Optional[int]:
        return self._dim

    @property
    def ntotal(self) -> int:
        return len(self._vecs)

    @property
    def nbytes(self) -> int:
        return self._vecs.nbytes

    def add(self, vectors: np.ndarray) -> None:
        self._vecs = np.concatenate([self._vecs.reshape(-1, vectors.shape[1]), vectors.astype(np.float64)])

    def search(self, queries: np.ndarray, k: int, *, params: Optional[Mapping[str, Any]] = None,
               allowed: Optional[np.ndarray] = None):
        self.check_params(params)
        self.searches += 1
        s = (queries.astype(np.float64) @ self._vecs.T * self.scale).astype(np.float32)
        mask = as_allowed(allowed, self.ntotal)
        if mask is not None:
            s[:, ~mask] = -np.inf
        return topk(s, k)

    def reset(self) -> None:
        self._vecs = self._vecs[:0]

    def empty_copy(self) -> "ToyBackend":
        return ToyBackend(str(self.scale), self._dim)

    def save(self, directory: Path):
        return {"backend.toy.npy": write_npy(Path(directory) / "backend.toy.npy", self._vecs)}

    def load(self, directory: Path, entries, mmap: bool) -> "ToyBackend":
        self._vecs = np.array(load_npy(Path(directory) / "backend.toy.npy", mmap))
        return self


@pytest.fixture(autouse=True, scope="module")
def _registered():
    register_backend("toy", ToyBackend, replace=True)
    yield
    from muvera import backends

    backends._REGISTRY.pop("toy", None)


def _docs(n, seed=0, lo=2, hi=9):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(int(m), D)).astype(np.float32) for m in rng.integers(lo, hi, size=n)]


DOCS = _docs(300)
QUERIES = _docs(6, seed=1, lo=2, hi=5)


def test_toy_backend_through_the_whole_index(tmp_path):
    assert "toy" in registered_backends() and make_backend("toy:2", 16).name == "toy:2.0"
    idx = MuveraIndex(CONFIG, backend="toy:2")
    ref = MuveraIndex(CONFIG, backend="exact")
    ids = [f"d{i}" for i in range(len(DOCS))]
    idx.add(DOCS, ids=ids)
    ref.add(DOCS, ids=ids)
    idx.remove(ids[::5])
    ref.remove(ids[::5])
    for kw in ({}, {"filter_ids": ids[1::3]}):
        a, b = idx.search(QUERIES, k=5, candidates=30, **kw), ref.search(QUERIES, k=5, candidates=30, **kw)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    idx.save(tmp_path / "toy")
    m = json.loads((tmp_path / "toy" / "manifest.json").read_text())
    assert m["backend"] == {"spec": "toy:2.0", "ntotal": 300, "files": ["backend.toy.npy"]}
    loaded = MuveraIndex.load(tmp_path / "toy")
    assert isinstance(loaded.backend, ToyBackend) and loaded.backend.scale == 2.0
    np.testing.assert_array_equal(loaded.search(QUERIES, k=5, candidates=30)[0],
                                  idx.search(QUERIES, k=5, candidates=30)[0])
    # Rebuilding into another backend re-encodes from the stored tokens: the same FDEs.
    as_exact = MuveraIndex.load(tmp_path / "toy", backend="exact")
    np.testing.assert_array_equal(as_exact.search(QUERIES, k=5, candidates=30)[0],
                                  ref.search(QUERIES, k=5, candidates=30)[0])
    loaded.compact()
    assert loaded.backend.ntotal == len(loaded) == 240


def test_register_backend_errors():
    with pytest.raises(ValueError, match="already registered"):
        register_backend("exact", ToyBackend)
    with pytest.raises(ValueError, match="kind"):
        register_backend("Bad Name", ToyBackend)
    with pytest.raises(ValueError, match="unknown backend kind"):
        make_backend("nosuch:thing")


@pytest.mark.parametrize("backend", ["exact", "HNSW16", "IVF8,Flat", "PQ8x8", "toy"])
def test_filtered_search_equals_search_over_only_the_allowed(backend):
    if backend != "exact" and backend != "toy":
        pytest.importorskip("faiss")
    idx = MuveraIndex(CONFIG, backend=backend)
    idx.add(DOCS)
    allowed = list(range(3, 300, 4))  # 75 documents
    sub = MuveraIndex(CONFIG, backend="exact")
    sub.add([DOCS[i] for i in allowed], ids=allowed)
    params = {"nprobe": 8} if "IVF" in backend else ({"efSearch": 300} if "HNSW" in backend else None)
    got = idx.search(QUERIES, k=5, candidates=20, filter_ids=allowed, params=params)
    assert set(got[0].ravel().tolist()) <= set(allowed) and (got[0] >= 0).all()
    if backend in ("exact", "toy", "IVF8,Flat"):  # exact candidate scores: identical to a sub-index
        want = sub.search(QUERIES, k=5, candidates=20)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    # A filter no larger than `candidates` is reranked whole: exact Chamfer.
    few = allowed[:10]
    ids, scores = idx.search(QUERIES, k=5, candidates=10, filter_ids=few, params=params)
    eids, escores = idx.search_exact(QUERIES, k=5, filter_ids=few)
    np.testing.assert_array_equal(ids, eids)
    np.testing.assert_array_equal(scores, escores)


def test_tombstones_reach_the_backend_without_overfetch():
    idx = MuveraIndex(CONFIG, backend="toy")
    idx.add(DOCS)
    gone = list(range(0, 300, 2))
    idx.remove(gone)
    before = idx.backend.searches
    ids, _ = idx.search(QUERIES, k=5, candidates=20)
    assert idx.backend.searches == before + 1  # one backend call, not a doubling loop
    assert not set(ids.ravel().tolist()) & set(gone) and (ids >= 0).all()


def test_searches_run_while_compact_rebuilds():
    """compact() builds the new backend aside: a search during the rebuild is answered at once."""
    import threading

    from muvera.backends import ExactBackend

    release, building = threading.Event(), threading.Event()

    class SlowExact(ExactBackend):
        def __init__(self, options="", dimension=None):
            super().__init__(dimension)

        @property
        def name(self):
            return "slowexact"

        def empty_copy(self):
            return SlowExact("", self.dimension)

        def add(self, vectors):
            if self.ntotal == 0 and len(vectors) == 150:  # the rebuild after removing half
                building.set()
                assert release.wait(30), "the search never ran during compact"
            super().add(vectors)

    register_backend("slowexact", SlowExact, replace=True)
    idx = MuveraIndex(CONFIG, backend="slowexact")
    idx.add(DOCS)
    idx.remove(list(range(0, 300, 2)))
    before = idx.search(QUERIES, k=5, candidates=20)
    t = threading.Thread(target=idx.compact)
    t.start()
    assert building.wait(30)
    during = idx.search(QUERIES, k=5, candidates=20)  # would block if compact held the write lock
    release.set()
    t.join(30)
    assert not t.is_alive() and len(idx.store) == 150
    np.testing.assert_array_equal(during[0], before[0])
    np.testing.assert_array_equal(idx.search(QUERIES, k=5, candidates=20)[0], before[0])


def test_concurrent_searches_limit_shared_pools():
    """While several searches run, BLAS/OpenMP pools are held to one thread, then restored."""
    pytest.importorskip("threadpoolctl")
    from threadpoolctl import threadpool_info

    from muvera._threads import SEARCH_GATE

    before = [(i["internal_api"], i["num_threads"]) for i in threadpool_info()]
    with SEARCH_GATE.enter() as shared_a:
        with SEARCH_GATE.enter() as shared_b:
            assert not shared_a and shared_b
            assert all(i["num_threads"] == 1 for i in threadpool_info())
    assert [(i["internal_api"], i["num_threads"]) for i in threadpool_info()] == before


def _toy_codec_class():
    """A codec defined here alone (pure Python, NumPy scoring): tokens rounded to a grid of
    ``1 / steps`` and kept as int16."""
    from muvera.codecs import TokenCodec
    from muvera.maxsim import chamfer_reference

    class Grid(TokenCodec):
        kind = "grid"

        def __init__(self, options: str, dimension: int):
            super().__init__(dimension)
            self.steps = int(options or 64)

        @property
        def name(self) -> str:
            return f"grid:{self.steps}"

        @property
        def code_dtype(self) -> np.dtype:
            return np.dtype(np.int16)

        def encode(self, tokens: np.ndarray) -> np.ndarray:
            return np.clip(np.rint(np.asarray(tokens, np.float32) * self.steps), -32767, 32767).astype(np.int16)

        def decode(self, codes: np.ndarray) -> np.ndarray:
            return np.asarray(codes, np.float32) / self.steps

        def rerank(self, query_tokens, query_offsets, codes, offsets, k, candidates, allowed, num_threads):
            nq, n = len(query_offsets) - 1, len(offsets) - 1
            rows = np.full((nq, k), -1, np.int64)
            scores = np.full((nq, k), -np.inf, np.float32)
            for i in range(nq):
                q = query_tokens[query_offsets[i]: query_offsets[i + 1]]
                pool = np.arange(n) if candidates is None else candidates[i][candidates[i] >= 0]
                if allowed is not None:
                    pool = pool[allowed[pool] != 0]
                s = np.array([chamfer_reference(q, self.decode(codes[offsets[r]: offsets[r + 1]])) for r in pool],
                             np.float32)
                top = np.argsort(-s, kind="stable")[:k]
                rows[i, :len(top)], scores[i, :len(top)] = pool[top], s[top]
            return rows, scores

    return Grid


def test_toy_codec_through_the_whole_index(tmp_path):
    """A pure-Python codec made in this file: registered with one line, then added, searched
    (filtered), saved and loaded like the built-in ones."""
    from muvera.codecs import make_codec, register_codec

    Grid = _toy_codec_class()
    register_codec("grid", Grid, replace=True)  # the one registration line
    assert make_codec("grid:32", D).name == "grid:32"
    rng = np.random.default_rng(0)
    docs = [rng.standard_normal((int(rng.integers(2, 9)), D)).astype(np.float32) for _ in range(60)]
    index = MuveraIndex(CONFIG, backend="exact", token_codec="grid:32")
    index.add(docs, ids=[f"d{i}" for i in range(60)])
    ids, scores = index.search(docs[:5], k=3)
    assert [row[0] for row in ids] == [f"d{i}" for i in range(5)]  # each document finds itself
    want = [max(((float(np.sum((docs[i] @ (np.rint(d * 32) / 32).T).max(axis=1))), f"d{j}")
                 for j, d in enumerate(docs)))[1] for i in range(5)]
    assert [row[0] for row in ids] == want
    only, _ = index.search(docs[:1], k=2, filter_ids=["d7", "d9"])
    assert set(only[0]) == {"d7", "d9"}
    index.save(tmp_path / "idx")
    back = MuveraIndex.load(tmp_path / "idx")
    assert back.store.codec.name == "grid:32"
    np.testing.assert_array_equal(back.search(docs[:5], k=3)[0], ids)


def test_the_index_imports_no_outer_layer():
    """muvera/index.py imports nothing of the layers built on it, not even inside a function:
    integrations, distributed, serving, the Retriever, the CLI, build."""
    import ast

    import muvera.index

    outer = {"integrations", "distributed", "serve", "client", "retriever", "cli", "build", "eval", "models"}
    tree = ast.parse(Path(muvera.index.__file__).read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level >= 1:
            names = [node.module or ""] + ([a.name for a in node.names] if not node.module else [])
            found += [n.split(".")[0] for n in names]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("muvera."):
            found.append(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found += [a.name.split(".")[1] for a in node.names if a.name.startswith("muvera.")]
    assert found and not set(found) & outer, sorted(set(found) & outer)


def test_a_new_manifest_section_is_one_registration(tmp_path, monkeypatch):
    """A new optional manifest field: one register_section line; write_index writes it and
    read_index hands it back, checksummed with the rest of the manifest."""
    from muvera import index_format
    from muvera.metadata import MetadataStore

    monkeypatch.setattr(index_format, "SECTIONS", dict(index_format.SECTIONS))  # the test's alone
    index_format.register_section("provenance", "where the documents came from")  # the one line
    idx = MuveraIndex(FDEConfig(dimension=8, num_repetitions=2, num_simhash_projections=2), "exact")
    idx.add([np.ones((2, 8), np.float32)], ids=["a"])
    parts = index_format.IndexParts(idx.config.to_dict(), None, idx.id_map, idx.store, idx.backend,
                                    MetadataStore(), sections={"provenance": {"source": "unit test"}})
    index_format.save_directory(tmp_path / "i", index_format.FORMAT_NAME,
                                lambda tmp: index_format.write_index(tmp, parts, "test"))
    f = index_format.read_index(tmp_path / "i")
    assert f.sections == {"provenance": {"source": "unit test"}} and f.tuned is None
    assert MuveraIndex.load(tmp_path / "i").ids == ["a"]  # the index reads past a section it does not use
    with pytest.raises(ValueError, match="not registered"):
        index_format.write_index(tmp_path, index_format.IndexParts(
            idx.config.to_dict(), None, idx.id_map, idx.store, idx.backend, MetadataStore(),
            sections={"unknown": {}}), "test")
    with pytest.raises(ValueError, match="manifest field"):
        index_format.register_section("files", "clash")
