"""PyLate ColBERT models (``pip install pylate``) as a multi-vector model.

``pylate`` is imported only when :class:`PyLateEncoder` is built. PyLate 1.6 pins
``sentence-transformers==5.3.0``; with sentence-transformers 6 it fails while building the model
(``KeyError: 'activation_function'`` in ``pylate.models.Dense.from_sentence_transformers``).
"""

from __future__ import annotations

import hashlib
import os
from typing import List, Optional, Sequence

import numpy as np

from .base import TokenEncoder, module_digest, tokenizer_digest
from .._optional import require

__all__ = ["PyLateEncoder"]


class PyLateEncoder(TokenEncoder):
    """Token vectors of a PyLate ``ColBERT`` model (``pylate.models.ColBERT(...).encode``).

    PyLate drops padding and, for documents, its skiplist (punctuation) tokens; queries keep the
    ``[MASK]`` query-expansion tokens up to ``query_length`` (they take part in MaxSim).
    Vectors are L2-normalised by PyLate.

    Parameters
    ----------
    model_name_or_path : str
        A local directory saved with ``ColBERT.save`` / ``save_pretrained`` (or a colbert-ai
        checkpoint, which PyLate converts), or a hub name (needs network).
    device : str
        torch device.
    batch_size : int
        Texts per forward pass.
    query_length, document_length : int, optional
        Override the model's truncation lengths (in tokens, prefix included).
    """

    def __init__(self, model_name_or_path: str, device: str = "cpu", batch_size: int = 32, *,
                 query_length: Optional[int] = None, document_length: Optional[int] = None):
        models = require("pylate.models", "pylate", "PyLateEncoder")

        path = str(model_name_or_path)
        local = os.path.isdir(path)
        self.model = models.ColBERT(model_name_or_path=path, device=device, local_files_only=local,
                                    query_length=query_length, document_length=document_length)
        self.model.eval()
        self.name = path
        self.device = device
        self.batch_size = int(batch_size)
        self.query_length = int(self.model.query_length)
        self.document_length = int(self.model.document_length)
        self.dim = int(self.model[-1].out_features)

    def fingerprint(self) -> str:
        cached = getattr(self, "_fingerprint", None)
        if cached is not None:
            return cached
        h = hashlib.sha256()
        h.update(f"pylate|{self.dim}|{self.document_length}|{self.query_length}|"
                 f"{self.model.do_query_expansion}".encode())
        module_digest(h, self.model)  # the weights by content, not the directory's name
        tokenizer_digest(h, self.model.tokenizer)
        self._fingerprint: Optional[str] = h.hexdigest()[:16]
        return self._fingerprint

    def encode_documents(self, texts: Sequence[str]) -> List[np.ndarray]:
        return self._encode(texts, is_query=False)

    def encode_queries(self, texts: Sequence[str]) -> List[np.ndarray]:
        return self._encode(texts, is_query=True)

    def _encode(self, texts: Sequence[str], is_query: bool) -> List[np.ndarray]:
        if isinstance(texts, str):
            raise TypeError("texts: expected a sequence of strings, got one string")
        texts = list(texts)
        if not texts:
            return []
        out = self.model.encode(texts, is_query=is_query, batch_size=self.batch_size, show_progress_bar=False,
                                convert_to_numpy=True, padding=False)
        return [np.ascontiguousarray(np.asarray(v, dtype=np.float32)) for v in out]
