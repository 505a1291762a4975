"""The interface every text -> token-vector model follows."""

from __future__ import annotations

import abc
import hashlib
import json
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np


class TokenEncoder(abc.ABC):
    """Turns texts into ragged token vectors, one ``(n_tokens, dim)`` float32 array per text."""

    #: Dimension of every output token vector.
    dim: int

    @abc.abstractmethod
    def encode_documents(self, texts: Sequence[str]) -> List[np.ndarray]:
        """Token vectors of documents (special tokens and padding dropped)."""

    @abc.abstractmethod
    def encode_queries(self, texts: Sequence[str]) -> List[np.ndarray]:
        """Token vectors of queries."""

    def fingerprint(self) -> str:
        """A string that changes whenever the vectors would (cache keys)."""
        return type(self).__name__


class TransformerTokenEncoder(TokenEncoder):
    """A transformer's per-token outputs: documents and queries differ only in truncation.

    Subclasses set ``doc_max_length``, ``query_max_length``, ``batch_size``, ``normalize``,
    ``projection`` and implement ``_run(texts, max_length) -> (hidden, keep)`` for one batch.
    """

    doc_max_length: int
    query_max_length: int
    batch_size: int
    normalize: bool
    projection: Optional[np.ndarray]

    def encode_documents(self, texts: Sequence[str]) -> List[np.ndarray]:
        return self._encode(texts, self.doc_max_length)

    def encode_queries(self, texts: Sequence[str]) -> List[np.ndarray]:
        return self._encode(texts, self.query_max_length)

    def _encode(self, texts: Sequence[str], max_length: int) -> List[np.ndarray]:
        return encode_in_sorted_batches(texts, max_length, self.batch_size, self._run,
                                        normalize=self.normalize, projection=self.projection)

    @abc.abstractmethod
    def _run(self, texts: List[str], max_length: int) -> Tuple[np.ndarray, np.ndarray]:
        """``(hidden (B, L, H) float32, keep (B, L) bool)`` of one padded batch."""


def encode_in_sorted_batches(texts: Sequence[str], max_length: int, batch_size: int,
                             run: Callable[[List[str], int], Tuple[np.ndarray, np.ndarray]], *,
                             normalize: bool, projection: Optional[np.ndarray]) -> List[np.ndarray]:
    """Shared driver of the transformer encoders.

    ``run(texts, max_length)`` returns ``(hidden (B, L, H) float32, keep (B, L) bool)`` for one
    padded batch; the kept tokens of each text are L2-normalised and projected when asked.
    Texts are batched by length, which pads far less (CPU time otherwise goes to padding).
    """
    if isinstance(texts, str):
        raise TypeError("texts: expected a sequence of strings, got one string")
    texts = list(texts)
    out: List[Optional[np.ndarray]] = [None] * len(texts)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for b in range(0, len(order), batch_size):
        idx = order[b:b + batch_size]
        hidden, keep = run([texts[i] for i in idx], max_length)
        for row, i in enumerate(idx):
            vecs = hidden[row][keep[row]]
            if normalize:
                vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
            if projection is not None:
                vecs = vecs @ projection
            out[i] = np.ascontiguousarray(vecs, dtype=np.float32)
    return out  # type: ignore[return-value]


def module_digest(h: "hashlib._Hash", module: Any) -> None:
    """Feed a torch module's weights (names, shapes, dtypes, bytes) into ``h``: a content key that
    changes whenever any weight does, wherever the model was loaded from."""
    import torch  # noqa: PLC0415

    for name, t in module.state_dict().items():
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())


def tokenizer_digest(h: "hashlib._Hash", tokenizer: Any) -> None:
    """Feed a tokenizer's full definition (vocabulary, normaliser, special tokens) into ``h``."""
    backend = getattr(tokenizer, "backend_tokenizer", None) or tokenizer
    if hasattr(backend, "to_str"):
        spec = json.loads(backend.to_str())
        # Truncation and padding are per-call state (encoding a batch changes them), not the model.
        spec.pop("truncation", None)
        spec.pop("padding", None)
        h.update(json.dumps(spec, sort_keys=True).encode("utf-8"))
    else:  # slow tokenizers: vocabulary and special tokens
        h.update(json.dumps(tokenizer.get_vocab(), sort_keys=True).encode("utf-8"))
        h.update(json.dumps(getattr(tokenizer, "special_tokens_map", {}), sort_keys=True,
                            default=str).encode("utf-8"))
