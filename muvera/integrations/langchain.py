"""LangChain: a retriever and a vector store over a :class:`muvera.Retriever` (the ``langchain``
extra: ``langchain-core``).

>>> from muvera import Retriever
>>> from muvera.integrations.langchain import MuveraRetriever, MuveraVectorStore
>>> store = MuveraVectorStore.from_texts(["Paris is in France.", "The Nile is in Egypt."],
...                                      metadatas=[{"lang": "en"}, {"lang": "en"}], ids=["p", "n"])
>>> store.similarity_search_with_score("Which river?", k=1, filter={"lang": "en"})
>>> retriever = store.as_retriever(search_kwargs={"k": 2})        # or MuveraRetriever(retriever=...)

Texts are encoded by muvera's own multi-vector token model (the ``Retriever``'s; the embedded
MiniLM by default), not by a LangChain ``Embeddings``: a multi-vector model gives a set of vectors
per text, which LangChain's single-vector interface cannot carry. Scores are Chamfer (MaxSim)
similarities, higher is better. ``filter`` is a dict of metadata equalities, run as a bound SQL
``where`` condition (``{"lang": "en", "year": 2020}`` -> ``lang = ? AND year = ?``).
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from .._optional import require

require("langchain_core", "langchain", "muvera.integrations.langchain")

from langchain_core.callbacks import CallbackManagerForRetrieverRun  # noqa: E402
from langchain_core.documents import Document  # noqa: E402
from langchain_core.retrievers import BaseRetriever  # noqa: E402
from langchain_core.vectorstores import VectorStore  # noqa: E402

from ._filters import filter_to_where  # noqa: E402

__all__ = ["MuveraRetriever", "MuveraVectorStore", "filter_to_where"]

def _document(hit: Any) -> Document:
    meta = dict(hit.metadata or {})
    meta.setdefault("id", hit.id)
    return Document(page_content=hit.text or "", metadata=meta, id=str(hit.id))


class MuveraRetriever(BaseRetriever):
    """A LangChain retriever: documents (with their metadata, ``id`` and ``score``) for a question.

    Parameters
    ----------
    retriever : muvera.Retriever
    k : int, default 4
    search_kwargs : dict
        Passed to :meth:`muvera.Retriever.search` (``candidates``, ``where``, ``where_params``).
    filter : dict, optional
        Metadata equalities (see :func:`filter_to_where`).
    """

    retriever: Any
    k: int = 4
    search_kwargs: Dict[str, Any] = {}
    filter: Optional[Dict[str, Any]] = None

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> List[Document]:
        kwargs = dict(self.search_kwargs)
        if self.filter:
            kwargs["where"], kwargs["where_params"] = filter_to_where(self.filter)
        out = []
        for hit in self.retriever.search(query, k=self.k, **kwargs):
            doc = _document(hit)
            doc.metadata["score"] = hit.score
            out.append(doc)
        return out


class MuveraVectorStore(VectorStore):
    """A LangChain vector store over a :class:`muvera.Retriever` (multi-vector: FDE candidates,
    exact Chamfer rerank).

    Parameters
    ----------
    retriever : muvera.Retriever, optional
        Default: ``muvera.Retriever()`` (the embedded MiniLM, the default index).
    """

    def __init__(self, retriever: Any = None):
        from ..retriever import Retriever  # noqa: PLC0415

        self.retriever = retriever if retriever is not None else Retriever(progress=False)

    @property
    def embeddings(self) -> None:
        return None  # muvera encodes with its own multi-vector model

    def add_texts(self, texts: Iterable[str], metadatas: Optional[List[Dict[str, Any]]] = None, *,
                  ids: Optional[List[str]] = None, **kwargs: Any) -> List[str]:
        texts = list(texts)
        added = self.retriever.add(texts, ids=ids, metadata=metadatas)
        return [str(x) for x in added]

    def delete(self, ids: Optional[List[str]] = None, **kwargs: Any) -> Optional[bool]:
        if not ids:
            raise ValueError("ids: give the ids to delete")
        self.retriever.index.remove(self._keys(ids))
        return True

    def get_by_ids(self, ids: Sequence[str], /) -> List[Document]:
        keys = self._keys(ids)
        present = [x for x in keys if x in self.retriever.index]
        metas = self.retriever.index.metadata(present) if present else []
        from ..retriever import TEXT_KEY  # noqa: PLC0415

        out = []
        for key, meta in zip(present, metas):
            meta = dict(meta or {})
            text = meta.pop(TEXT_KEY, "")
            meta.setdefault("id", key)
            out.append(Document(page_content=text or "", metadata=meta, id=str(key)))
        return out

    def _keys(self, ids: Sequence[Any]) -> List[Any]:
        """LangChain passes ids as strings; an int-id index gets them back as ints."""
        if self.retriever.index.id_kind == "int":
            return [int(x) if isinstance(x, str) and x.isdigit() else x for x in ids]
        return list(ids)

    def similarity_search_with_score(self, query: str, k: int = 4, filter: Optional[Dict[str, Any]] = None,
                                     **kwargs: Any) -> List[Tuple[Document, float]]:
        where, params = filter_to_where(filter)
        hits = self.retriever.search(query, k=k, where=where, where_params=params, **kwargs)
        return [(_document(h), float(h.score)) for h in hits]

    def similarity_search(self, query: str, k: int = 4, filter: Optional[Dict[str, Any]] = None,
                          **kwargs: Any) -> List[Document]:
        return [doc for doc, _ in self.similarity_search_with_score(query, k=k, filter=filter, **kwargs)]

    @classmethod
    def from_texts(cls, texts: List[str], embedding: Any = None, metadatas: Optional[List[Dict[str, Any]]] = None,
                   *, ids: Optional[List[str]] = None, retriever: Any = None, **kwargs: Any) -> "MuveraVectorStore":
        """A store holding ``texts``. ``embedding`` must be None: muvera encodes with its own
        multi-vector model (give a ``muvera.Retriever(model=...)`` as ``retriever`` to choose it)."""
        if embedding is not None:
            raise ValueError("embedding: muvera encodes texts with its own multi-vector token model; pass "
                             "retriever=muvera.Retriever(model=...) instead of a LangChain Embeddings")
        store = cls(retriever)
        store.add_texts(texts, metadatas=metadatas, ids=ids)
        return store

    def save(self, path: Any) -> None:
        """Persist (the retriever's index directory, atomically)."""
        self.retriever.save(path)

    @classmethod
    def load(cls, path: Any, **kwargs: Any) -> "MuveraVectorStore":
        from ..retriever import Retriever  # noqa: PLC0415

        return cls(Retriever.load(path, **kwargs))
