"""Token vectors of a BEIR dataset through a model, cached on disk, with an optional fixed PCA."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from .beir import BeirDataset, load_beir
from .cache import default_cache_root, encode_cached


@dataclass
class EmbeddedDataset:
    """A dataset's packed token vectors (documents and queries) plus its judgements."""

    data: BeirDataset
    doc_tokens: np.ndarray     # (total, dim), float16 or float32
    doc_offsets: np.ndarray    # (n_docs + 1,)
    query_tokens: np.ndarray
    query_offsets: np.ndarray

    @property
    def dim(self) -> int:
        return int(self.doc_tokens.shape[1])


def embed_beir(dataset_dir: os.PathLike, model=None, *, cache_root: Optional[os.PathLike] = None,
               split: str = "test", max_queries: Optional[int] = None, progress: bool = True) -> EmbeddedDataset:
    """Encode (or load from the cache) a BEIR folder's corpus and judged queries.

    Parameters
    ----------
    dataset_dir : path
        BEIR-layout folder.
    model : TokenEncoder, optional
        Default: :class:`muvera.models.HFTokenEncoder` (the embedded MiniLM).
    cache_root : path, optional
        Default ``$MUVERA_CACHE`` or ``~/.cache/muvera``; never inside the repository.
    """
    if model is None:
        from ..models import HFTokenEncoder

        model = HFTokenEncoder()
    data = load_beir(dataset_dir, split=split)
    root = Path(cache_root or default_cache_root()) / data.name / f"{type(model).__name__}-{model.fingerprint()}"
    # queries depend on the split (only judged ones are kept); "queries" stays the test split's entry
    qdir = root / ("queries" if split == "test" else f"queries-{split}")
    qt, qo = encode_cached(qdir, data.query_texts, model.encode_queries, fingerprint=model.fingerprint(),
                           progress=progress, description=f"{data.name} queries")
    dt, do = encode_cached(root / "docs", data.doc_texts, model.encode_documents, fingerprint=model.fingerprint(),
                           progress=progress, description=f"{data.name} documents")
    if max_queries is not None and max_queries < len(data.query_ids):
        data.query_ids, data.query_texts = data.query_ids[:max_queries], data.query_texts[:max_queries]
        qt, qo = qt[: qo[max_queries]], qo[: max_queries + 1]
    return EmbeddedDataset(data, dt, do, qt, qo)


def fit_pca(tokens: np.ndarray, dim: int, *, sample: int = 200_000, seed: int = 0) -> np.ndarray:
    """A fixed PCA projection ``(tokens.shape[1], dim)`` fitted on a sample of token vectors."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(tokens), size=min(sample, len(tokens)), replace=False)
    x = tokens[np.sort(idx)].astype(np.float64)
    x -= x.mean(axis=0)
    cov = x.T @ x / len(x)
    vals, vecs = np.linalg.eigh(cov)
    return np.ascontiguousarray(vecs[:, ::-1][:, :dim], dtype=np.float32)


def project(tokens: np.ndarray, projection: np.ndarray, *, normalize: bool = True,
            chunk: int = 262_144) -> np.ndarray:
    """tokens @ projection in chunks (float32 out), optionally re-normalised to unit length."""
    out = np.empty((len(tokens), projection.shape[1]), dtype=np.float32)
    for s in range(0, len(tokens), chunk):
        y = tokens[s:s + chunk].astype(np.float32) @ projection
        if normalize:
            y /= np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
        out[s:s + chunk] = y
    return out
