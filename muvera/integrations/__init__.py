"""Getting an index into other stores: Qdrant, LanceDB, Arrow/Parquet.

Each integration is its own module and imports its engine only when used, so ``import muvera``
never needs them:

* :mod:`muvera.integrations.qdrant` -- :func:`~muvera.integrations.qdrant.to_qdrant` and
  :class:`~muvera.integrations.qdrant.QdrantSearcher` (extra ``qdrant``);
* :mod:`muvera.integrations.lancedb` -- :func:`~muvera.integrations.lancedb.to_lancedb` and
  :class:`~muvera.integrations.lancedb.LanceDBSearcher` (extra ``lancedb``);
* :mod:`muvera.integrations.arrow` -- :func:`~muvera.integrations.arrow.to_arrow`,
  :func:`~muvera.integrations.arrow.from_arrow`, Parquet files (extra ``arrow``).

Every export holds the same things: the id, the document FDE exactly as the index's backend
scores it, the stored tokens (as the token store decodes them, so an engine reranks on the very
values :meth:`muvera.MuveraIndex.search` reranks on) and the metadata dict.
"""

__all__ = ["ExportError"]

from ._common import ExportError  # noqa: E402
