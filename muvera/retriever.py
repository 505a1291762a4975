"""Text in, ranked hits out: a model, an FDE config and an index behind four calls.

>>> from muvera import Retriever                                    # doctest: +SKIP
>>> r = Retriever()                                  # the embedded all-MiniLM-L6-v2, 10240-d FDEs
>>> r.add(["Paris is the capital of France.", "The Nile flows north."], metadata=[{"lang": "en"}] * 2)
>>> r.search("Which river flows north?", k=1)
[Hit(id=1, score=..., metadata={'lang': 'en'}, text='The Nile flows north.')]
>>> r.save("my-index"); r = Retriever.load("my-index")  # the model spec is stored with the index

Queries are encoded with the model the index records (``MuveraIndex.model``), so a loaded
retriever ranks exactly as the one that was saved.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from ._progress import progress as _progress
from ._validate import check_search_args, positive_int
from .config import PRESETS, FDEConfig
from .index import MuveraIndex
from .metadata import MetadataStore

__all__ = ["Retriever", "Hit", "TEXT_KEY"]

#: Metadata key under which the document text is kept (not an SQL identifier, so it is stored in
#: the JSON only and never becomes an indexed column).
TEXT_KEY = "muvera.text"
PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class Hit:
    """One search result.

    Attributes
    ----------
    id : int or str
    score : float
        Chamfer (MaxSim) similarity of the query and document tokens.
    metadata : dict or None
        The document's metadata (without the kept text).
    text : str or None
        The document text, when the retriever keeps texts.
    """

    id: Union[int, str]
    score: float
    metadata: Optional[Dict[str, Any]]
    text: Optional[str]


def resolve_model(model: Any) -> Any:
    from .models.base import TokenEncoder  # noqa: PLC0415 (no optional dependency at import)

    if isinstance(model, TokenEncoder):
        return model
    if not isinstance(model, str):
        raise TypeError(f"model: expected a model spec such as 'default' or a TokenEncoder, got {type(model).__name__}")
    from .models import load_model  # noqa: PLC0415

    try:
        return load_model(model)
    except (ValueError, TypeError, ImportError) as exc:
        raise type(exc)(f"model {model!r}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 (hub/IO errors of many kinds: all mean "cannot load")
        raise ValueError(f"model {model!r}: cannot load it ({type(exc).__name__}: {exc})") from None


def config_for(config: Any, dim: int) -> FDEConfig:
    if config is None:
        return FDEConfig.preset("10240", dimension=dim)
    if isinstance(config, str):
        if config not in PRESETS:
            raise ValueError(f"config: expected an FDEConfig or a preset name {sorted(PRESETS, key=int)}, "
                             f"got {config!r}")
        return FDEConfig.preset(config, dimension=dim)
    if not isinstance(config, FDEConfig):
        raise TypeError(f"config: expected an FDEConfig, a preset name or None, got {type(config).__name__}")
    if config.dimension != dim:
        raise ValueError(f"config: dimension {config.dimension} differs from the model's {dim}-d token vectors")
    return config


def check_texts(texts: Any, name: str) -> List[str]:
    if isinstance(texts, str):
        raise TypeError(f"{name}: expected a list of strings, got one string (wrap it in a list)")
    if isinstance(texts, (bytes, dict)) or not isinstance(texts, Sequence):
        raise TypeError(f"{name}: expected a list of strings, got {type(texts).__name__}")
    out = list(texts)
    if not out:
        raise ValueError(f"{name}: expected at least one text")
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"{name}[{i}]: expected a string, got {type(t).__name__}")
        if not t.strip():
            raise ValueError(f"{name}[{i}]: empty text (nothing to encode)")
    return out


def is_index_dir(path: Path) -> bool:
    return (path / "manifest.json").is_file() or Path(f"{path}.bak", "manifest.json").is_file()


class Retriever:
    """Index texts and search them with text: model -> tokens -> FDE index -> Chamfer rerank.

    Parameters
    ----------
    model : str or TokenEncoder, default "default"
        A :func:`muvera.models.load_model` spec (``"default"``: the embedded all-MiniLM-L6-v2;
        ``"onnx:minilm"``, ``"hf:PATH"``, ``"colbert:PATH"``, ``"pylate:PATH"``) or an encoder
        object. A spec is recorded with the index; an object records nothing (pass it to
        :meth:`load` again).
    config : FDEConfig or str, optional
        FDE settings, or a preset name (``"1280"`` ... ``"10240"``); default the ``"10240"``
        preset at the model's dimension.
    backend : str, default "auto"
        :class:`~muvera.MuveraIndex` backend spec (``"exact"``, ``"HNSW32"``, ...).
    path : str or path, optional
        Where :meth:`save` writes by default. An index already there is opened (its model,
        config and backend are used; a different ``model`` spec is refused).
    token_codec : str, default "float16"
        Token store encoding.
    keep_text : bool, default True
        Keep each document's text with the index (returned in :attr:`Hit.text`).
    batch_size : int, default 256
        Texts encoded per model call during :meth:`add`.
    progress : bool, default True
        Progress bar while adding more than one batch.
    num_threads : int, optional
        Threads for FDE encoding and reranking.
    """

    def __init__(self, model: Any = "default", config: Any = None, backend: str = "auto",
                 path: Optional[PathLike] = None, *, token_codec: str = "float16", keep_text: bool = True,
                 batch_size: int = 256, progress: bool = True, num_threads: Optional[int] = None):
        if path is not None and not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path: expected a directory path or None, got {type(path).__name__}")
        if not isinstance(keep_text, (bool, np.bool_)):
            raise TypeError(f"keep_text: expected a bool, got {type(keep_text).__name__}")
        if not isinstance(progress, (bool, np.bool_)):
            raise TypeError(f"progress: expected a bool, got {type(progress).__name__}")
        self.batch_size = positive_int(batch_size, "batch_size")
        self.keep_text = bool(keep_text)
        self.progress = bool(progress)
        self.path = None if path is None else Path(path)
        if self.path is not None and is_index_dir(self.path):
            index = MuveraIndex.load(self.path, num_threads=num_threads)
            if isinstance(model, str) and index.model is not None and model != index.model:
                raise ValueError(f"model: {model!r} differs from the model the index at {self.path} was built with "
                                 f"({index.model!r}); use Retriever.load({str(self.path)!r})")
            if config is not None and config_for(config, index.config.dimension) != index.config:
                raise ValueError(f"config: differs from the config of the index at {self.path}")
            self._index = index
            self._model = resolve_model(model if not isinstance(model, str) or index.model is None else index.model)
            self._check_dim()
            return
        self._model = resolve_model(model)
        cfg = config_for(config, int(self._model.dim))
        spec = model if isinstance(model, str) else None
        self._index = MuveraIndex(cfg, backend=backend, token_codec=token_codec, model=spec,
                                  num_threads=num_threads)

    @classmethod
    def load(cls, path: PathLike, model: Any = None, *, keep_text: bool = True, batch_size: int = 256,
             progress: bool = True, num_threads: Optional[int] = None, mmap: bool = True) -> "Retriever":
        """Open a retriever saved by :meth:`save` (or any index saved with a model spec).

        Parameters
        ----------
        path : str or path
        model : str or TokenEncoder, optional
            Default: the model spec recorded with the index.

        Raises
        ------
        FileNotFoundError
            No index at ``path``.
        ValueError
            The index records no model and none is given, or the model's dimension differs.
        """
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path: expected a directory path, got {type(path).__name__}")
        index = MuveraIndex.load(path, mmap=mmap, num_threads=num_threads)
        if model is None:
            if index.model is None:
                raise ValueError(f"model: the index at {os.fspath(path)} records no model spec; pass model=")
            model = index.model
        self = cls.__new__(cls)
        self.batch_size = positive_int(batch_size, "batch_size")
        self.keep_text, self.progress, self.path = bool(keep_text), bool(progress), Path(path)
        self._index = index
        self._model = resolve_model(model)
        self._check_dim()
        return self

    def _check_dim(self) -> None:
        if int(self._model.dim) != self._index.config.dimension:
            raise ValueError(f"model: gives {self._model.dim}-d token vectors but the index holds "
                             f"{self._index.config.dimension}-d ones; use the model the index was built with")

    # -- properties ----------------------------------------------------------------------------
    @property
    def index(self) -> MuveraIndex:
        """The underlying :class:`~muvera.MuveraIndex`."""
        return self._index

    @property
    def model(self) -> Any:
        """The text encoder (:class:`~muvera.models.TokenEncoder`)."""
        return self._model

    @property
    def config(self) -> FDEConfig:
        """The FDE configuration."""
        return self._index.config

    def __len__(self) -> int:
        return len(self._index)

    def __repr__(self) -> str:
        return (f"Retriever(model={self._index.model!r}, documents={len(self)}, "
                f"fde_dimension={self.config.output_dimension}, backend={self._index.backend.name!r})")

    # -- add / search --------------------------------------------------------------------------
    def add(self, texts: Sequence[str], ids: Optional[Sequence[Any]] = None,
            metadata: Optional[Sequence[Dict[str, Any]]] = None) -> List[Any]:
        """Encode and index documents; returns their ids.

        Parameters
        ----------
        texts : list of str
        ids : list of int or str, optional
            Default: consecutive ints.
        metadata : list of dict, optional
            One JSON-serialisable dict per text (filterable with ``search(where=...)``).

        Raises
        ------
        TypeError, ValueError
            Bad texts (named by position), ids or metadata; checked before anything is encoded.
            If encoding fails part way, the documents of this call already added are removed
            again, so the retriever holds none of them.
        """
        texts = check_texts(texts, "texts")
        n = len(texts)
        items = [{} for _ in range(n)] if metadata is None else MetadataStore.check(metadata, n)
        if self.keep_text:
            for i, m in enumerate(items):
                if TEXT_KEY in m:
                    raise ValueError(f"metadata[{i}]: the key {TEXT_KEY!r} is reserved for the kept text")
            items = [{**m, TEXT_KEY: t} for m, t in zip(items, texts)]
        new_ids = self._index.id_map.check_new(ids, n)
        with_meta = metadata is not None or self.keep_text
        added: List[Any] = []
        bar = _progress(n, "adding", enabled=self.progress and n > self.batch_size)
        try:
            for s in range(0, n, self.batch_size):
                e = min(n, s + self.batch_size)
                vecs = self._model.encode_documents(texts[s:e])
                for i, v in enumerate(vecs):
                    if len(v) == 0:
                        raise ValueError(f"texts[{s + i}]: the model gives no tokens for it")
                # Kept texts are also indexed for BM25 (search(..., hybrid=...)).
                self._index.add(vecs, ids=new_ids[s:e], metadata=items[s:e] if with_meta else None,
                                texts=texts[s:e] if self.keep_text else None)
                added += new_ids[s:e]
                bar.update(e - s)
        except BaseException:
            if added:
                self._index.remove(added)
            raise
        finally:
            bar.close()
        return new_ids

    def search(self, query: Union[str, Sequence[str]], k: int = 10, candidates: Optional[int] = None, *,
               where: Optional[str] = None, where_params: Sequence[Any] = (),
               filter_ids: Optional[Sequence[Any]] = None, hybrid: Optional[str] = None,
               lexical_weight: float = 0.3) -> Union[List[Hit], List[List[Hit]]]:
        """The best ``k`` documents for a question (or for each of a list of questions).

        Parameters
        ----------
        query : str or list of str
        k : int, default 10
        candidates : int, optional
            FDE candidates reranked with exact Chamfer (>= k); default as
            :meth:`muvera.MuveraIndex.search` (the tuned setting, else ``max(200, k)``).
        where, where_params, filter_ids
            As :meth:`muvera.MuveraIndex.search` (metadata SQL condition with bound values).
        hybrid : {"weighted", "rrf"}, optional
            Fuse BM25 over the kept texts (SQLite FTS5) with the multi-vector results; the
            filters apply to both, and the hits' scores are then the fused scores.
        lexical_weight : float, default 0.3
            The BM25 side's weight in the fusion (see :meth:`muvera.MuveraIndex.search`).

        Returns
        -------
        list of Hit
            Best first (fewer than ``k`` when fewer documents qualify); a list of such lists
            for a list of questions.
        """
        single = isinstance(query, str)
        queries = check_texts([query] if single else query, "query")
        k, candidates, _ = check_search_args(k, candidates)
        if len(self._index) == 0:
            return [] if single else [[] for _ in queries]
        vecs = self._model.encode_queries(queries)
        for i, v in enumerate(vecs):
            if len(v) == 0:
                raise ValueError(f"query{'' if single else f'[{i}]'}: the model gives no tokens for it")
        lexical = dict(lexical=queries, fusion=hybrid, lexical_weight=lexical_weight) if hybrid is not None else {}
        ids, scores = self._index.search(vecs, k=k, candidates=candidates, where=where, where_params=where_params,
                                         filter_ids=filter_ids, **lexical)
        out = [self._hits(row, sc) for row, sc in zip(ids, scores)]
        return out[0] if single else out

    def _hits(self, row: np.ndarray, scores: np.ndarray) -> List[Hit]:
        keep = [j for j, x in enumerate(row.tolist()) if x is not None and x != -1]
        found = [row[j].item() if hasattr(row[j], "item") else row[j] for j in keep]
        metas = self._index.metadata(found) if found else []
        hits = []
        for doc_id, j, m in zip(found, keep, metas):
            text = None
            if m is not None and TEXT_KEY in m:
                m = dict(m)
                text = m.pop(TEXT_KEY)
            hits.append(Hit(doc_id, float(scores[j]), m, text))
        return hits

    # -- persistence ---------------------------------------------------------------------------
    def save(self, path: Optional[PathLike] = None) -> Path:
        """Save the index (with the model spec) to ``path`` (default: the ``path`` given at
        construction); returns the directory."""
        if path is None:
            if self.path is None:
                raise ValueError("path: give a directory (this retriever was made without path=)")
            path = self.path
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path: expected a directory path, got {type(path).__name__}")
        self._index.save(path)
        self.path = Path(path)
        return self.path
