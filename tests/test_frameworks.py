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
