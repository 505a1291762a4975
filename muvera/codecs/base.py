"""The token-codec interface: how a :class:`~muvera.store.TokenStore` encodes the tokens it holds
and how Chamfer reranking reads them back.

A codec turns float tokens into *codes* -- one fixed-width row per token (``code_width`` values
of ``code_dtype``) -- and scores queries against candidate documents straight from the codes.
Codecs that learn something (centroids, bucket cutoffs) train on a sample and save that state in
their own files; the store saves the codes themselves.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any, ClassVar, Dict, Optional, Tuple

import numpy as np

__all__ = ["TokenCodec", "Entries"]

Entries = Dict[str, Dict[str, Any]]


class TokenCodec(abc.ABC):
    """Encodes ``(T, d)`` token rows into codes and reranks candidates on the codes.

    Parameters
    ----------
    dimension : int
        Token dimension ``d``.
    """

    #: The registry name (``"float16"``, ``"float32"``, ...).
    kind: ClassVar[str] = ""

    def __init__(self, dimension: int):
        self.dimension = int(dimension)

    @property
    def name(self) -> str:
        """The spec :func:`~muvera.codecs.make_codec` rebuilds this codec from."""
        return self.kind

    @property
    @abc.abstractmethod
    def code_dtype(self) -> np.dtype:
        """dtype of the stored code rows."""

    @property
    def code_width(self) -> int:
        """Values per stored token row."""
        return self.dimension

    @property
    def input_dtype(self) -> np.dtype:
        """The dtype :func:`~muvera.store.pack_tokens` should produce for :meth:`encode`.

        FDEs are computed from tokens in this dtype, so for the float codecs (whose codes *are*
        these tokens) they are a pure function of what is stored.
        """
        return np.dtype(np.float32)

    @property
    def stores_tokens(self) -> bool:
        """True when the codes *are* the tokens (float codecs): FDEs read them directly."""
        return False

    def fde_source(self, codes: np.ndarray) -> np.ndarray:
        """The float tokens FDEs are computed from, given stored codes: the decoded tokens, so
        that FDEs stay a pure function of the store (a rebuild re-encodes them bit for bit)."""
        return codes if self.stores_tokens else self.decode(codes)

    @property
    def needs_training(self) -> bool:
        """Whether :meth:`train` must run before :meth:`encode`."""
        return False

    def stream_training_tokens(self) -> Optional[int]:
        """Tokens a stream gathers before training this codec (None: the index's
        ``STREAM_TRAIN_DOCS`` documents), so a long build holds no more than training uses."""
        return None

    def train(self, tokens: np.ndarray) -> None:  # noqa: B027 (optional hook)
        """Learn the codec's state from a sample of tokens (a no-op for stateless codecs)."""

    def untrain(self) -> None:  # noqa: B027 (optional hook)
        """Forget learned state (an add that failed after training); a no-op when stateless."""

    @property
    def state_nbytes(self) -> int:
        """Bytes of learned tables held in memory (centroids, levels); 0 when stateless."""
        return 0

    def check_codes(self, codes: np.ndarray) -> None:  # noqa: B027 (optional hook)
        """Raise ValueError if loaded code rows disagree with the codec's state."""

    @abc.abstractmethod
    def encode(self, tokens: np.ndarray) -> np.ndarray:
        """``(T, d)`` tokens in :attr:`input_dtype` -> ``(T, code_width)`` codes (may be a view)."""

    @abc.abstractmethod
    def decode(self, codes: np.ndarray) -> np.ndarray:
        """``(T, code_width)`` codes -> ``(T, d)`` float32 tokens (the reference for tests)."""

    @abc.abstractmethod
    def rerank(self, query_tokens: np.ndarray, query_offsets: np.ndarray, codes: np.ndarray,
               offsets: np.ndarray, k: int, candidates: Optional[np.ndarray],
               allowed: Optional[np.ndarray], num_threads: int) -> Tuple[np.ndarray, np.ndarray]:
        """Chamfer top-``k`` of packed float32 queries over candidate documents of the codes.

        ``candidates`` is ``(nq, C)`` int64 rows (``-1`` skipped, no repeats: the caller
        guarantees it) or None for every row; ``allowed`` a ``(rows,)`` uint8 bitmap or None.
        Returns ``(rows (nq, k) int64, scores (nq, k) float32)``, ``-1`` / ``-inf`` padded.
        """

    def save(self, directory: Path) -> Entries:
        """Write learned state into ``directory`` (names start with ``codec``); returns entries."""
        return {}

    def load(self, directory: Path, entries: Entries, mmap: bool) -> "TokenCodec":
        """Read what :meth:`save` wrote (already checked against ``entries``)."""
        return self

    def state_fields(self) -> Dict[str, Any]:
        """Small settings recorded in the manifest (beside the name)."""
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dimension={self.dimension})"
