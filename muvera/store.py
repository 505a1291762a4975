"""TokenStore: every document's token vectors packed in one array, for Chamfer reranking.

Documents are rows; row ``i`` owns ``tokens[offsets[i]:offsets[i+1]]``. Deleting only clears the
row's ``alive`` flag (a tombstone) so row numbers stay stable for the MIPS backend;
:meth:`TokenStore.compact` drops tombstoned rows and returns the renumbering.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple, Union

import numpy as np

from .batch import DTYPE_CODES, as_token_batch

__all__ = ["TokenStore", "pack_tokens"]

_STORE_DTYPES = (np.dtype(np.float16), np.dtype(np.float32))
_CHECK_ROWS = 1 << 16  # finite check in blocks: bounds the temporary boolean array


class _Growable:
    """An array that grows along axis 0 with amortised doubling.

    The buffer may start as a read-only array (a memory map); the first write copies it into
    memory. Views handed out earlier stay valid: growth allocates a new buffer instead of
    resizing in place.
    """

    def __init__(self, tail: Tuple[int, ...], dtype: Any, data: Optional[np.ndarray] = None):
        self._tail = tuple(tail)
        self._dtype = np.dtype(dtype)
        if data is None:
            data = np.empty((0,) + self._tail, dtype=self._dtype)
        self._buf = data
        self._n = len(data)

    def __len__(self) -> int:
        return self._n

    @property
    def view(self) -> np.ndarray:
        return self._buf[: self._n]

    @property
    def nbytes(self) -> int:
        return int(self._buf.nbytes)

    @property
    def is_memmap(self) -> bool:
        return isinstance(self._buf, np.memmap) or not self._buf.flags.writeable

    def _reserve(self, total: int) -> None:
        cap = len(self._buf)
        if total <= cap and self._buf.flags.writeable and not isinstance(self._buf, np.memmap):
            return
        new_cap = max(total, 2 * cap, 16) if total > cap else cap
        buf = np.empty((new_cap,) + self._tail, dtype=self._dtype)
        buf[: self._n] = self._buf[: self._n]
        self._buf = buf

    def extend(self, values: np.ndarray) -> None:
        m = len(values)
        self._reserve(self._n + m)
        self._buf[self._n: self._n + m] = values
        self._n += m

    def writable(self) -> np.ndarray:
        """A writeable view of the used part (copies a read-only buffer into memory once)."""
        self._reserve(self._n)
        return self._buf[: self._n]


def _as_dtype(dtype: Any, name: str = "dtype") -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"{name}: expected 'float16' or 'float32', got {dtype!r}") from exc
    if dt not in _STORE_DTYPES:
        raise ValueError(f"{name}: expected 'float16' or 'float32', got {dt}")
    return dt


def _offsets_of(lengths: np.ndarray) -> np.ndarray:
    off = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=off[1:])
    return off


def _check_finite(tokens: np.ndarray, offsets: np.ndarray, name: str, dtype: np.dtype) -> None:
    for r0 in range(0, len(tokens), _CHECK_ROWS):
        ok = np.isfinite(tokens[r0: r0 + _CHECK_ROWS]).all(axis=1)
        if not ok.all():
            row = r0 + int(np.argmin(ok))
            item = int(np.searchsorted(offsets, row, side="right")) - 1
            extra = " (or values beyond the float16 range)" if dtype == np.float16 else ""
            raise ValueError(f"{name}[{item}]: contains NaN or Inf values{extra}")


def pack_tokens(batch: Any, dimension: int, dtype: Any = np.float32, *, lengths: Any = None,
                offsets: Any = None, mask: Any = None,
                name: str = "documents") -> Tuple[np.ndarray, np.ndarray]:
    """Any batch form -> ``(tokens (T, dimension) in dtype, lengths (n,) int64)``, validated.

    Parameters
    ----------
    batch : list of 2-D arrays, packed 2-D array (with lengths/offsets) or padded 3-D array
    dimension : int
    dtype : {"float32", "float16"}
    lengths, offsets, mask : optional
        As in :func:`muvera.batch.as_token_batch`.
    name : str
        Argument name used in error messages (``documents[i]: ...``).

    Returns
    -------
    tokens : (T, dimension) ndarray
        C-contiguous. It may share memory with ``batch`` when no conversion was needed.
    lengths : (n,) int64

    Raises
    ------
    ValueError
        Wrong dimension, an empty batch, an item with zero tokens, NaN/Inf (also values that
        overflow float16).
    TypeError
        Unsupported input types.
    """
    target = _as_dtype(dtype)
    tb = as_token_batch(batch, dimension, lengths=lengths, offsets=offsets, mask=mask, name=name)
    if tb.arrays is not None:
        lens = np.fromiter((len(a) for a in tb.arrays), dtype=np.int64, count=len(tb.arrays))
    else:
        lens = np.asarray(tb.lengths, dtype=np.int64)
    if lens.size == 0:
        raise ValueError(f"{name}: expected at least one item")
    if (lens == 0).any():
        raise ValueError(f"{name}[{int(np.argmin(lens))}]: expected at least one token, got 0")
    offs = _offsets_of(lens)
    total = int(offs[-1])
    if tb.arrays is not None:
        src = tb.arrays[0] if len(tb.arrays) == 1 else np.concatenate(tb.arrays, axis=0)
    elif total == len(tb.tokens) and np.array_equal(tb.starts, offs[:-1]):
        src = tb.tokens  # already packed: no copy
    else:
        # Padded or gapped input: one vectorised gather of the valid rows.
        idx = np.repeat(tb.starts - offs[:-1], lens) + np.arange(total, dtype=np.int64)
        src = tb.tokens[idx]
    if tb.dtype_code == DTYPE_CODES["bfloat16"]:
        src = (src.astype(np.uint32) << 16).view(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported as Inf below
        out = np.ascontiguousarray(src, dtype=target)
    _check_finite(out, offs, name, target)
    return out, lens


class TokenStore:
    """All documents' token vectors, packed contiguously, with tombstones.

    Parameters
    ----------
    dimension : int
        Token vector dimension.
    dtype : {"float16", "float32"}, default "float16"
        Storage precision. float16 halves memory; Chamfer scores then differ from float32 ones by
        about 1e-3 relative.

    Notes
    -----
    ``len(store)`` counts rows, tombstoned ones included; :attr:`num_live` counts live rows.
    The store is not locked: :class:`muvera.MuveraIndex` serialises writers.

    Examples
    --------
    >>> import numpy as np
    >>> store = TokenStore(4)
    >>> store.append([np.ones((3, 4)), np.ones((2, 4))]).tolist()
    [0, 1]
    >>> store.offsets.tolist()
    [0, 3, 5]
    """

    def __init__(self, dimension: int, dtype: Union[str, np.dtype] = "float16"):
        if isinstance(dimension, bool) or not isinstance(dimension, (int, np.integer)) or dimension < 1:
            raise ValueError(f"dimension: expected a positive int, got {dimension!r}")
        self._dim = int(dimension)
        self._dtype = _as_dtype(dtype)
        self._tokens = _Growable((self._dim,), self._dtype)
        self._offsets = _Growable((), np.int64, np.zeros(1, dtype=np.int64))
        self._alive = _Growable((), np.uint8)

    @classmethod
    def from_arrays(cls, tokens: np.ndarray, offsets: np.ndarray,
                    alive: Optional[np.ndarray] = None) -> "TokenStore":
        """A store over existing arrays (no copy; read-only memory maps are fine).

        Raises
        ------
        ValueError
            If the arrays are inconsistent (offsets not 0..len(tokens), non-monotone, empty
            documents, alive of the wrong length or not 0/1).
        """
        tokens = np.asarray(tokens) if not isinstance(tokens, np.memmap) else tokens
        if tokens.ndim != 2 or not tokens.flags.c_contiguous:
            raise ValueError(f"tokens: expected a C-contiguous 2-D array, got shape {tokens.shape}")
        store = cls(tokens.shape[1], tokens.dtype)
        offsets = np.asarray(offsets)
        if offsets.ndim != 1 or offsets.dtype != np.int64 or len(offsets) < 1:
            raise ValueError("offsets: expected a 1-D int64 array of n_documents + 1 values")
        if offsets[0] != 0 or offsets[-1] != len(tokens) or (np.diff(offsets) <= 0).any():
            raise ValueError(f"offsets: expected a strictly increasing sequence from 0 to {len(tokens)}")
        n = len(offsets) - 1
        if alive is None:
            alive = np.ones(n, dtype=np.uint8)
        alive = np.asarray(alive)
        if alive.shape != (n,) or alive.dtype != np.uint8 or (alive > 1).any():
            raise ValueError(f"alive: expected ({n},) uint8 flags of 0/1")
        store._tokens = _Growable((store._dim,), store._dtype, tokens)
        store._offsets = _Growable((), np.int64, offsets)
        store._alive = _Growable((), np.uint8, alive)
        return store

    # -- properties ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._alive)

    def __repr__(self) -> str:
        return (f"TokenStore(rows={len(self)}, live={self.num_live}, tokens={self.num_tokens}, "
                f"dimension={self._dim}, dtype={self._dtype.name})")

    @property
    def dimension(self) -> int:
        """Token vector dimension."""
        return self._dim

    @property
    def dtype(self) -> np.dtype:
        """Storage dtype (float16 or float32)."""
        return self._dtype

    @property
    def tokens(self) -> np.ndarray:
        """``(num_tokens, dimension)`` view of every stored token (tombstoned rows included)."""
        return self._tokens.view

    @property
    def offsets(self) -> np.ndarray:
        """``(len(self) + 1,)`` int64 view: row ``i`` owns ``tokens[offsets[i]:offsets[i+1]]``."""
        return self._offsets.view

    @property
    def lengths(self) -> np.ndarray:
        """``(len(self),)`` token counts per row."""
        return np.diff(self._offsets.view)

    @property
    def alive(self) -> np.ndarray:
        """``(len(self),)`` uint8 view: 1 for live rows, 0 for tombstones. Do not write to it."""
        return self._alive.view

    @property
    def num_tokens(self) -> int:
        """Stored tokens, tombstoned rows included."""
        return len(self._tokens)

    @property
    def num_live(self) -> int:
        """Rows not tombstoned."""
        return int(np.count_nonzero(self._alive.view))

    @property
    def nbytes(self) -> int:
        """Bytes held by the buffers (allocated capacity; a memory map counts its file size)."""
        return self._tokens.nbytes + self._offsets.nbytes + self._alive.nbytes

    @property
    def is_memory_mapped(self) -> bool:
        """True while the tokens are a read-only memory map (before the first append/compact)."""
        return self._tokens.is_memmap

    # -- mutation ------------------------------------------------------------------------------
    def append(self, batch: Any, *, lengths: Any = None, offsets: Any = None, mask: Any = None,
               name: str = "documents") -> np.ndarray:
        """Append documents in any batch form; returns their new rows ``(n,)`` int64.

        Values are converted to the store dtype. Nothing is appended if validation fails.

        Raises
        ------
        ValueError
            Wrong dimension, empty batch, a document with zero tokens (``documents[i]``),
            NaN/Inf values.
        """
        tokens, lens = pack_tokens(batch, self._dim, self._dtype, lengths=lengths, offsets=offsets,
                                   mask=mask, name=name)
        return self.append_packed(tokens, lens, validate=False)

    def append_packed(self, tokens: np.ndarray, lengths: np.ndarray, *,
                      validate: bool = True) -> np.ndarray:
        """Append already packed ``tokens`` ``(T, d)`` split by ``lengths`` ``(n,)``; returns rows.

        ``validate=False`` skips the checks for data that came from :func:`pack_tokens`.
        """
        lens = np.asarray(lengths, dtype=np.int64)
        if validate:
            tokens, lens = pack_tokens(tokens, self._dim, self._dtype, lengths=lens)
        start = len(self)
        base = int(self._offsets.view[-1])
        self._tokens.extend(tokens)
        self._offsets.extend(base + np.cumsum(lens))
        self._alive.extend(np.ones(len(lens), dtype=np.uint8))
        return np.arange(start, start + len(lens), dtype=np.int64)

    def delete(self, rows: Any) -> None:
        """Tombstone ``rows`` (idempotent). Raises IndexError for rows outside ``[0, len)``."""
        r = np.atleast_1d(np.asarray(rows))
        if r.size == 0:
            return
        if r.dtype.kind not in "iu":
            raise TypeError(f"rows: expected integers, got {r.dtype}")
        if (r < 0).any() or (r >= len(self)).any():
            bad = r[(r < 0) | (r >= len(self))]
            raise IndexError(f"rows: {bad[:10].tolist()} outside [0, {len(self)})")
        self._alive.writable()[r] = 0

    def compact(self) -> np.ndarray:
        """Drop tombstoned rows; returns ``mapping`` ``(old_len,)`` int64: new row or -1."""
        keep = self._alive.view.astype(bool)
        mapping = np.full(len(keep), -1, dtype=np.int64)
        mapping[keep] = np.arange(int(keep.sum()), dtype=np.int64)
        lens = self.lengths
        # One boolean gather over tokens (no per-document loop).
        tokens = self._tokens.view[np.repeat(keep, lens)]
        self._tokens = _Growable((self._dim,), self._dtype, np.ascontiguousarray(tokens))
        self._offsets = _Growable((), np.int64, _offsets_of(lens[keep]))
        self._alive = _Growable((), np.uint8, np.ones(int(keep.sum()), dtype=np.uint8))
        return mapping

    def get(self, row: int) -> np.ndarray:
        """The ``(n_tokens, dimension)`` tokens of one row (a view)."""
        if not 0 <= row < len(self):
            raise IndexError(f"row: {row} outside [0, {len(self)})")
        off = self._offsets.view
        return self._tokens.view[off[row]: off[row + 1]]
