"""int8 token storage: each token as d int8 codes and one float32 scale (``scale * code``).

Per token, ``scale = max|x| / 127`` and ``code = rint(x / scale)``: d + 4 bytes per token instead
of 2d (float16) or 4d (float32), with a relative error of at most half a step, ``scale / 2``, per
value.

The C++ rerank never decodes: each query token is quantised the same way (``sq = max|q| / 127``,
``qi = rint(q / sq)``), the integer dot product ``qi . code`` of every pair is computed exactly
(AVX2 / AVX-512 ``vpmaddubsw``, AVX-512 VNNI ``vpdpbusd``: four to eight times the multiply-adds
per instruction of float32), and a pair scores ``(sq * dot) * scale`` in float32. Scores equal
:func:`int8_chamfer_reference` bit for bit on every ISA; against float32 Chamfer over the decoded
tokens they differ by the query's own int8 rounding (about 0.1-0.5% of a score). Rescoring from
the float16 exact tier (``keep_exact=True``, ``rescore=``) makes the final top exact again.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from .. import _core
from .base import TokenCodec

__all__ = ["Int8Codec", "int8_chamfer_reference", "quantise_query"]


def quantise_query(query: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``(qi (n, d) int32 in [-127, 127], sq (n,) float32)``: each query token as the rerank
    kernel quantises it (the codec's own rule: ``sq = max|q| / 127``, ``qi = rint(q / sq)``)."""
    q = np.asarray(query, dtype=np.float32)
    peak = np.abs(q).max(axis=1) if len(q) else np.zeros(0, np.float32)
    sq = (peak / np.float32(127.0)).astype(np.float32)
    safe = np.where(sq > 0, sq, np.float32(1.0)).astype(np.float32)
    qi = np.clip(np.rint(q / safe[:, None]), -127, 127).astype(np.int32)
    return qi, sq


def int8_chamfer_reference(query: np.ndarray, rows: np.ndarray, dimension: int) -> np.float32:
    """The int8 rerank's score of one query against one document's stored rows, in NumPy: the
    plain reference the C++ kernels equal bit for bit."""
    qi, sq = quantise_query(query)
    rows = np.asarray(rows)
    codes = np.ascontiguousarray(rows[:, :dimension]).view(np.int8).astype(np.int64)
    scales = np.ascontiguousarray(rows[:, dimension:]).view("<f4").reshape(len(rows)).astype(np.float32)
    dot = (qi.astype(np.int64) @ codes.T).astype(np.float32)  # exact integers, then one rounding
    v = (sq[:, None] * dot).astype(np.float32) * scales[None, :]
    total = np.float32(0.0)
    for best in v.max(axis=1).astype(np.float32):  # in token order, as the kernel sums
        total = np.float32(total + best)
    return total


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
                                  int(k), int(num_threads), "", layout="int8")
