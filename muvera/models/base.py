"""The interface every text -> token-vector model follows."""

from __future__ import annotations

import abc
from typing import List, Sequence

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
