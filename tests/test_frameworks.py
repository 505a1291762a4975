"""LangChain and LlamaIndex integrations, end to end on a small corpus with the offline model:
retrieval, metadata filters, deletes, persistence, async."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("torch")

from muvera import Retriever  # noqa: E402

TEXTS = ["Paris is the capital of France.", "The Nile flows north through Egypt.",
         "Berlin is the capital of Germany.", "The Amazon is the largest river by volume."]
META = [{"lang": "en", "kind": "city"}, {"lang": "en", "kind": "river"}, {"lang": "de", "kind": "city"},
        {"lang": "en", "kind": "river"}]
IDS = ["paris", "nile", "berlin", "amazon"]


@pytest.fixture(scope="module")
def retriever():
    r = Retriever(progress=False)
    r.add(TEXTS, ids=IDS, metadata=META)
    return r


def test_langchain_vector_store(tmp_path):
    pytest.importorskip("langchain_core")
    from muvera.integrations.langchain import MuveraVectorStore

    store = MuveraVectorStore.from_texts(TEXTS, metadatas=META, ids=IDS)
    docs = store.similarity_search_with_score("Which river flows north?", k=1)
    assert docs[0][0].id == "nile" and docs[0][0].page_content == TEXTS[1] and docs[0][1] > 0
    assert docs[0][0].metadata["kind"] == "river"
    cities = store.similarity_search("a capital city", k=4, filter={"kind": "city", "lang": "de"})
    assert [d.id for d in cities] == ["berlin"]
    assert {d.id for d in store.as_retriever(search_kwargs={"k": 2}).invoke("a river")} == {"nile", "amazon"}
    assert store.delete(["nile"]) is True
    assert [d.id for d in store.get_by_ids(["nile", "paris"])] == ["paris"]
    store.save(tmp_path / "s")
    back = MuveraVectorStore.load(tmp_path / "s")
    assert back.similarity_search("Which river flows north?", k=1)[0].id == "amazon"
    with pytest.raises(ValueError, match="embedding"):
        MuveraVectorStore.from_texts(TEXTS, embedding=object())
    with pytest.raises(ValueError, match="not a metadata column"):
        store.similarity_search("x", filter={"bad key": 1})


def test_langchain_retriever_sync_and_async(retriever):
    pytest.importorskip("langchain_core")
    from muvera.integrations.langchain import MuveraRetriever

    r = MuveraRetriever(retriever=retriever, k=2, filter={"kind": "river"})
    docs = r.invoke("a large river")
    assert {d.id for d in docs} == {"nile", "amazon"} and all("score" in d.metadata for d in docs)
    again = asyncio.run(r.ainvoke("a large river"))
    assert [d.id for d in again] == [d.id for d in docs]


def test_llamaindex_retriever(retriever):
    pytest.importorskip("llama_index.core")
    from muvera.integrations.llamaindex import MuveraLlamaRetriever

    nodes = MuveraLlamaRetriever(retriever, similarity_top_k=1).retrieve("Which river flows north?")
    assert nodes[0].node.node_id == "nile" and nodes[0].node.get_content() == TEXTS[1] and nodes[0].score > 0
    nodes = MuveraLlamaRetriever(retriever, similarity_top_k=4, filters={"lang": "de"}).retrieve("capital")
    assert [n.node.node_id for n in nodes] == ["berlin"]
    assert nodes[0].node.metadata == {"lang": "de", "kind": "city"}


def test_hybrid_bm25_and_multivector_fusion(retriever, tmp_path):
    """BM25 over the kept texts (FTS5) fused with the multi-vector results: a query that only a
    rare word matches lexically is found; filters apply to both sides; it survives save/load."""
    hits = retriever.search("Amazon volume", k=2, hybrid="rrf")
    assert hits[0].id == "amazon" and hits[0].score > 0
    assert retriever.search("Amazon volume", k=4, hybrid="weighted", where="kind = ?",
                            where_params=("city",))[0].id in ("paris", "berlin")
    assert {h.id for h in retriever.search("capital", k=4, hybrid="rrf", filter_ids=["berlin"])} == {"berlin"}
    retriever.save(tmp_path / "r")
    back = Retriever.load(tmp_path / "r")
    assert back.search("Amazon volume", k=1, hybrid="rrf")[0].id == "amazon"
    with pytest.raises(ValueError, match="fusion"):
        retriever.search("x", hybrid="max")
    with pytest.raises(ValueError, match="lexical_weight"):
        retriever.search("x", hybrid="rrf", lexical_weight=2)


def test_hybrid_needs_texts_and_survives_compaction_and_the_log(tmp_path):
    import numpy as np

    from muvera import FDEConfig, MuveraIndex

    rng = np.random.default_rng(0)
    docs = [rng.standard_normal((4, 16)).astype(np.float32) for _ in range(6)]
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]
    plain = MuveraIndex(FDEConfig(dimension=16, num_repetitions=2, num_simhash_projections=3), backend="exact")
    plain.add(docs)
    with pytest.raises(ValueError, match="holds no texts"):
        plain.search(docs[:1], k=2, lexical=["alpha"])
    live = MuveraIndex.open(tmp_path / "i", FDEConfig(dimension=16, num_repetitions=2, num_simhash_projections=3),
                            backend="exact")
    live.add(docs, texts=[f"document {w}" for w in words])
    live.remove([0, 1])
    back = MuveraIndex.load(tmp_path / "i")  # texts replayed from the log
    ids, _ = back.search(docs[5:6], k=1, lexical=["zeta"], lexical_weight=1.0)
    assert ids[0, 0] == 5
    live.compact()  # rows renumbered, FTS rows with them
    ids, _ = live.search(docs[2:3], k=4, lexical=["gamma"], lexical_weight=1.0)
    assert ids[0, 0] == 2 and 0 not in ids[0]
    with pytest.raises(ValueError, match="texts: expected 6"):
        plain.add(docs, texts=["one"])
