"""Buffers the parts of an index grow into."""

from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

__all__ = ["Growable"]


class Growable:
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

    def truncate(self, n: int) -> None:
        """Keep the first ``n`` rows (the rollback of a failed append)."""
        self._n = min(self._n, int(n))

    def writable(self) -> np.ndarray:
        """A writeable view of the used part (copies a read-only buffer into memory once)."""
        self._reserve(self._n)
        return self._buf[: self._n]

    def file_location(self) -> Optional[Tuple[str, int]]:
        """``(path, byte offset of row 0)`` when the rows are a memory map of a file (a loaded
        index), else None."""
        name = getattr(self._buf, "filename", None)
        return None if name is None else (str(name), int(getattr(self._buf, "offset", 0)))
