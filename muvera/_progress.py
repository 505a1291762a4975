"""Progress bars: tqdm when it is installed (extra ``eval``), else a one-line counter on a
terminal's stderr; nothing when switched off."""

from __future__ import annotations

import sys
import time
from typing import Any, Optional

__all__ = ["progress"]


class _Null:
    def update(self, n: int = 1) -> None:
        """Ignore progress."""

    def close(self) -> None:
        """Nothing to close."""

    def __enter__(self) -> "_Null":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _Counter(_Null):
    """``desc: done/total`` rewritten in place at most 5 times a second (terminals only)."""

    def __init__(self, total: Optional[int], desc: str, unit: str):
        self.total, self.desc, self.unit, self.done, self._last = total, desc, unit, 0, 0.0

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last >= 0.2 or self.done == self.total:
            self._last = now
            of = f"/{self.total}" if self.total is not None else ""
            sys.stderr.write(f"\r{self.desc}: {self.done}{of} {self.unit}")
            sys.stderr.flush()

    def close(self) -> None:
        if self.done:
            sys.stderr.write("\n")
            sys.stderr.flush()


def progress(total: Optional[int], desc: str, *, enabled: bool = True, unit: str = "doc") -> Any:
    """A progress bar with ``update(n)`` and ``close()`` (also a context manager).

    Parameters
    ----------
    total : int, optional
    desc : str
    enabled : bool, default True
        False gives a bar that shows nothing.
    unit : str
    """
    if not enabled:
        return _Null()
    try:
        from tqdm.auto import tqdm  # noqa: PLC0415
    except ImportError:
        return _Counter(total, desc, unit) if sys.stderr.isatty() else _Null()
    return tqdm(total=total, desc=desc, unit=unit)
