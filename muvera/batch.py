"""Normalise the ways users hold multi-vector batches into what the C++ core reads.

Accepted forms (NumPy arrays or torch CPU tensors, float32/float64/float16/bfloat16):

* a list (or tuple) of 2-D ``(n_i, d)`` arrays;
* a packed ``(total_tokens, d)`` array with ``lengths=`` (n,) or ``offsets=`` (n + 1,);
* a padded ``(n, L, d)`` array, optionally with a boolean ``mask=`` of shape ``(n, L)``
  (colbert-ai's padded output and its mask work as they are).

Buffers are passed to C++ as views whenever the layout allows (rows contiguous, one dtype);
conversion to float32 happens per item inside the kernels, so no batch-sized copy is made.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional

import numpy as np

__all__ = ["TokenBatch", "as_token_batch", "as_matrix", "DTYPE_CODES"]

#: Python-side dtype tags (the C++ core infers dtypes from the arrays; bfloat16 travels as uint16 bits).
DTYPE_CODES = {"float32": 0, "float64": 1, "float16": 2, "bfloat16": 3}


@dataclass
class TokenBatch:
    """A batch ready for the core: either ``arrays`` (list) or ``tokens`` + ``starts`` + ``lengths``."""

    dtype_code: int
    count: int
    tokens: Optional[np.ndarray] = None
    starts: Optional[np.ndarray] = None
    lengths: Optional[np.ndarray] = None
    arrays: Optional[List[np.ndarray]] = None


def is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def _to_numpy(x: Any, name: str) -> "tuple[np.ndarray, int]":
    """A NumPy view of x and its dtype code; bfloat16 tensors are viewed as uint16 bits."""
    if is_torch(x):
        import torch

        if x.device.type != "cpu":
            raise ValueError(f"{name}: expected a CPU tensor, got one on {x.device}; call .cpu() first")
        t = x.detach()
        if t.dtype == torch.bfloat16:
            return t.view(torch.int16).numpy().view(np.uint16), DTYPE_CODES["bfloat16"]
        arr = t.numpy()
    elif isinstance(x, np.ma.MaskedArray):
        raise TypeError(f"{name}: NumPy masked arrays are not read (their mask would be ignored); pass "
                        "a padded (n, L, d) array with mask= (True = a valid token), or drop the masked rows")
    elif isinstance(x, np.ndarray):
        arr = x
    else:
        try:
            arr = np.asarray(x)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"{name}: expected an array of token vectors, got {type(x).__name__}") from exc
        if arr.dtype == object:
            raise TypeError(f"{name}: expected an array of token vectors, got a ragged/object sequence")
        if arr.dtype.kind in "iub":  # plain Python lists of numbers
            arr = arr.astype(np.float32)
    if arr.dtype == np.float32:
        return arr, DTYPE_CODES["float32"]
    if arr.dtype == np.float64:
        return arr, DTYPE_CODES["float64"]
    if arr.dtype == np.float16:
        return arr, DTYPE_CODES["float16"]
    raise TypeError(f"{name}: expected float32, float64, float16 or bfloat16 values, got {arr.dtype}")


def _rows_contiguous(a: np.ndarray) -> np.ndarray:
    """a itself if it is aligned and each row is contiguous with a positive row stride (a multiple
    of the item size), else a C-contiguous copy: the kernels read rows as plain typed arrays."""
    rows_ok = a.shape[0] <= 1 or (a.strides[0] > 0 and a.strides[0] % a.itemsize == 0)
    if a.ndim == 2 and a.flags.aligned and (a.shape[1] <= 1 or a.strides[1] == a.itemsize) and rows_ok:
        return a
    # np.ascontiguousarray would hand back an unaligned but contiguous array unchanged.
    return np.array(a, order="C", copy=True)


def as_matrix(x: Any, dimension: int, name: str) -> "tuple[np.ndarray, int]":
    """One item as a 2-D ``(n, dimension)`` view and its dtype code; raises on any other shape."""
    arr, code = _to_numpy(x, name)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array of shape (n_tokens, {dimension}), "
                         f"got shape {tuple(arr.shape)}")
    if arr.shape[1] != dimension:
        raise ValueError(f"{name}: expected {dimension} columns (the config's dimension), "
                         f"got shape {tuple(arr.shape)}")
    return _rows_contiguous(arr), code


def int_vector(values: Any, name: str) -> np.ndarray:
    arr = values.detach().cpu().numpy() if is_torch(values) else np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of integers, got shape {tuple(arr.shape)}")
    if arr.size and arr.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected integers, got {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def as_token_batch(batch: Any, dimension: int, *, lengths: Any = None, offsets: Any = None,
                   mask: Any = None, name: str = "batch") -> TokenBatch:
    """Validate a batch in any accepted form and describe it for the C++ core.

    Parameters
    ----------
    batch : list of arrays, packed 2-D array or padded 3-D array (NumPy or torch)
    dimension : int
        Expected token dimension.
    lengths, offsets : array-like of int, optional
        Item boundaries of a packed 2-D array (give exactly one).
    mask : array-like of bool, optional
        ``(n, L)`` validity mask of a padded 3-D array.
    name : str
        Argument name used in error messages.

    Raises
    ------
    TypeError, ValueError
        On any malformed input, naming ``name`` and what was expected.
    """
    if isinstance(batch, (list, tuple)):
        if lengths is not None or offsets is not None or mask is not None:
            raise ValueError(f"{name}: lengths/offsets/mask apply to packed or padded arrays, not to a list")
        if len(batch) == 0:
            raise ValueError(f"{name}: expected at least one item, got an empty list")
        arrays, codes = [], set()
        for i, item in enumerate(batch):
            arr, code = as_matrix(item, dimension, f"{name}[{i}]")
            arrays.append(arr)
            codes.add(code)
        if len(codes) > 1:  # mixed precisions: bring everything to float32 once
            arrays = [_as_float32(a, c) for a, c in ((a, _code_of(a)) for a in arrays)]
            return TokenBatch(DTYPE_CODES["float32"], len(arrays), arrays=arrays)
        return TokenBatch(codes.pop(), len(arrays), arrays=arrays)

    arr, code = _to_numpy(batch, name)
    if arr.ndim == 2:
        if mask is not None:
            raise ValueError(f"{name}: mask applies to a padded 3-D array; a packed 2-D array takes "
                             "lengths= or offsets=")
        if (lengths is None) == (offsets is None):
            raise ValueError(f"{name}: a packed 2-D array needs exactly one of lengths= or offsets= "
                             "(for a single item use encode_query/encode_document)")
        if arr.shape[1] != dimension:
            raise ValueError(f"{name}: expected {dimension} columns (the config's dimension), "
                             f"got shape {tuple(arr.shape)}")
        rows = arr.shape[0]
        if lengths is not None:
            lens = int_vector(lengths, "lengths")
            if lens.size == 0:
                raise ValueError("lengths: expected at least one item, got an empty array")
            if (lens < 0).any():
                raise ValueError("lengths: expected non-negative values")
            if int(lens.sum()) != rows:
                raise ValueError(f"lengths: sum is {int(lens.sum())} but {name} has {rows} rows")
            starts = np.concatenate(([0], np.cumsum(lens)[:-1])).astype(np.int64)
        else:
            offs = int_vector(offsets, "offsets")
            if offs.size < 2:
                raise ValueError("offsets: expected n_items + 1 >= 2 values")
            if offs[0] != 0 or offs[-1] != rows or (np.diff(offs) < 0).any():
                raise ValueError(f"offsets: expected a non-decreasing sequence from 0 to {rows} "
                                 f"(the rows of {name})")
            starts, lens = offs[:-1].copy(), np.diff(offs)
        return TokenBatch(code, len(lens), tokens=_rows_contiguous(arr), starts=starts,
                          lengths=np.ascontiguousarray(lens, dtype=np.int64))

    if arr.ndim == 3:
        if lengths is not None or offsets is not None:
            raise ValueError(f"{name}: a padded 3-D array takes mask=, not lengths=/offsets=")
        n, L, d = arr.shape
        if d != dimension:
            raise ValueError(f"{name}: expected token dimension {dimension} (the config's), "
                             f"got shape {tuple(arr.shape)}")
        if n == 0:
            raise ValueError(f"{name}: expected at least one item, got shape {tuple(arr.shape)}")
        if mask is None:
            lens = np.full(n, L, dtype=np.int64)
            valid_prefix = True
        else:
            m = mask.detach().cpu().numpy() if is_torch(mask) else np.asarray(mask)
            if m.ndim == 3 and m.shape[2] == 1:  # colbert-ai returns (n, L, 1) masks
                m = m[:, :, 0]
            if m.shape != (n, L):
                raise ValueError(f"mask: expected shape ({n}, {L}) to match {name}, got {tuple(m.shape)}")
            if m.dtype != bool:
                if m.dtype.kind not in "iuf" or not np.isin(m, (0, 1)).all():
                    raise TypeError("mask: expected booleans (or 0/1)")
                m = m.astype(bool)
            lens = m.sum(axis=1).astype(np.int64)
            valid_prefix = bool((m == (np.arange(L)[None, :] < lens[:, None])).all())
        if valid_prefix:
            flat = arr.reshape(n * L, d) if arr.flags.c_contiguous else None
            if flat is not None:
                starts = np.arange(n, dtype=np.int64) * L
                return TokenBatch(code, n, tokens=flat, starts=starts, lengths=lens)
            return TokenBatch(code, n, arrays=[_rows_contiguous(arr[i, : lens[i]]) for i in range(n)])
        # Holes inside the mask: gather the valid tokens (one copy).
        packed = np.ascontiguousarray(arr[m])
        starts = np.concatenate(([0], np.cumsum(lens)[:-1])).astype(np.int64)
        return TokenBatch(code, n, tokens=packed, starts=starts, lengths=lens)

    raise ValueError(f"{name}: expected a list of 2-D arrays, a packed 2-D array with lengths/offsets, "
                     f"or a padded 3-D array; got a {arr.ndim}-D array")


def _code_of(a: np.ndarray) -> int:
    if a.dtype == np.uint16:
        return DTYPE_CODES["bfloat16"]
    return {np.dtype(np.float32): 0, np.dtype(np.float64): 1, np.dtype(np.float16): 2}[a.dtype]


def _as_float32(a: np.ndarray, code: int) -> np.ndarray:
    if code == DTYPE_CODES["bfloat16"]:
        return (a.astype(np.uint32) << 16).view(np.float32)
    return np.ascontiguousarray(a, dtype=np.float32)
