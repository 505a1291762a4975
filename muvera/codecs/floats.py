"""Plain float token storage: float16 (the default; half the bytes, ~1e-3 relative score error)
and float32. The codes are the tokens themselves, scored by the C++ Chamfer kernel."""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from .. import _core
from .base import TokenCodec

__all__ = ["Float16Codec", "Float32Codec"]


class _FloatCodec(TokenCodec):
    _dtype: np.dtype

    @property
    def code_dtype(self) -> np.dtype:
        return self._dtype

    @property
    def input_dtype(self) -> np.dtype:
        return self._dtype

    @property
    def stores_tokens(self) -> bool:
        return True

    def encode(self, tokens: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(tokens, dtype=self._dtype)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        return np.asarray(codes, dtype=np.float32)

    def rerank(self, query_tokens: np.ndarray, query_offsets: np.ndarray, codes: np.ndarray,
               offsets: np.ndarray, k: int, candidates: Optional[np.ndarray],
               allowed: Optional[np.ndarray], num_threads: int) -> Tuple[np.ndarray, np.ndarray]:
        return _core.chamfer_topk(query_tokens, query_offsets, codes, offsets, candidates, allowed,
                                  int(k), int(num_threads), "")


class Float16Codec(_FloatCodec):
    """Tokens stored as IEEE float16 (2 bytes per value)."""

    kind = "float16"
    _dtype = np.dtype(np.float16)


class Float32Codec(_FloatCodec):
    """Tokens stored as float32 (4 bytes per value): scores equal float32 Chamfer."""

    kind = "float32"
    _dtype = np.dtype(np.float32)
