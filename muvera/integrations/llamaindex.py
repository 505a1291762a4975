"""LlamaIndex: a retriever over a :class:`muvera.Retriever` (the ``llamaindex`` extra:
``llama-index-core``).

>>> from muvera import Retriever
>>> from muvera.integrations.llamaindex import MuveraLlamaRetriever
>>> r = Retriever(); r.add(["Paris is in France.", "The Nile is in Egypt."], ids=["p", "n"])
>>> nodes = MuveraLlamaRetriever(r, similarity_top_k=2).retrieve("Which river?")  # NodeWithScore

Only a retriever: LlamaIndex's vector-store interface hands the store one query embedding
(``VectorStoreQuery.query_embedding``), and a multi-vector index needs the query's token vectors,
which muvera's own model makes from the query text. The retriever takes the text and does both
stages (FDE candidates, exact Chamfer rerank). ``filters`` is a dict of metadata equalities.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from .._optional import require

require("llama_index.core", "llamaindex", "muvera.integrations.llamaindex")

from llama_index.core.retrievers import BaseRetriever  # noqa: E402
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode  # noqa: E402

from ._filters import filter_to_where  # noqa: E402

__all__ = ["MuveraLlamaRetriever"]


class MuveraLlamaRetriever(BaseRetriever):
    """A LlamaIndex retriever: ``NodeWithScore`` (text, metadata, Chamfer score) per hit.

    Parameters
    ----------
    retriever : muvera.Retriever
    similarity_top_k : int, default 4
    filters : dict, optional
        Metadata equalities, run as a bound SQL ``where`` condition.
    search_kwargs : dict, optional
        Passed to :meth:`muvera.Retriever.search` (``candidates``, ``where``, ``where_params``).
    """

    def __init__(self, retriever: Any, similarity_top_k: int = 4, filters: Optional[Dict[str, Any]] = None,
                 search_kwargs: Optional[Dict[str, Any]] = None, **kwargs: Any):
        self._retriever = retriever
        self._k = int(similarity_top_k)
        self._filters = filters
        self._search_kwargs = dict(search_kwargs or {})
        super().__init__(**kwargs)

    def _retrieve(self, query_bundle: QueryBundle) -> List[NodeWithScore]:
        kwargs = dict(self._search_kwargs)
        if self._filters:
            kwargs["where"], kwargs["where_params"] = filter_to_where(self._filters)
        out = []
        for hit in self._retriever.search(query_bundle.query_str, k=self._k, **kwargs):
            node = TextNode(text=hit.text or "", id_=str(hit.id), metadata=dict(hit.metadata or {}))
            out.append(NodeWithScore(node=node, score=float(hit.score)))
        return out
