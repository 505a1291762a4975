"""int8 token storage: each token as d int8 codes and one float32 scale (``scale * code``).

Per token, ``scale = max|x| / 127`` and ``code = rint(x / scale)``: d + 4 bytes per token instead
of 2d (float16) or 4d (float32), with a relative error of at most half a step, ``scale / 2``, per
value. The C++ rerank decodes one document at a time into its per-thread scratch and scores it
with the float kernel, so scores equal float32 Chamfer over :meth:`Int8Codec.decode`'s tokens.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from .. import _core
from .base import TokenCodec

__all__ = ["Int8Codec"]


class Int8Codec(TokenCodec):
    """Tokens as int8 codes with a per-token float32 scale; rows of ``d + 4`` bytes (``uint8``)."""

    kind = "int8"

    @property
    def code_dtype(self) -> np.dtype:
        return np.dtype(np.uint8)

    @property
    def code_width(self) -> int:
        return self.dimension + 4

    def encode(self, tokens: np.ndarray) -> np.ndarray:
        x = np.asarray(tokens, dtype=np.float32)
        d = self.dimension
        peak = np.abs(x).max(axis=1) if len(x) else np.zeros(0, np.float32)
        scale = (peak / np.float32(127.0)).astype(np.float32)
        safe = np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)
        codes = np.clip(np.rint(x / safe[:, None]), -127, 127).astype(np.int8)
        out = np.empty((len(x), d + 4), dtype=np.uint8)
        out[:, :d] = codes.view(np.uint8)
        out[:, d:] = scale.astype("<f4").view(np.uint8).reshape(len(x), 4)
        return out

    def split(self, codes: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """``(codes (T, d) int8, scales (T,) float32)`` views of stored rows."""
        d = self.dimension
        c = np.ascontiguousarray(codes[:, :d]).view(np.int8)
        s = np.ascontiguousarray(codes[:, d:]).view("<f4").reshape(len(codes)).astype(np.float32)
        return c, s

    def decode(self, codes: np.ndarray) -> np.ndarray:
        c, s = self.split(np.asarray(codes))
        return c.astype(np.float32) * s[:, None]  # one float32 multiply per value, as in C++

    def rerank(self, query_tokens: np.ndarray, query_offsets: np.ndarray, codes: np.ndarray,
               offsets: np.ndarray, k: int, candidates: Optional[np.ndarray],
               allowed: Optional[np.ndarray], num_threads: int) -> Tuple[np.ndarray, np.ndarray]:
        return _core.chamfer_topk(query_tokens, query_offsets, codes, offsets, candidates, allowed,
                                  int(k), int(num_threads), "")
