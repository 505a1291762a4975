"""Concurrent searches without oversubscription.

BLAS (OpenBLAS) and OpenMP (faiss) pools are process-wide and spin while they wait: when several
Python threads each run a search that asks them for every core, the searches together run
slower than one after another. :class:`SearchGate` counts the searches in flight; while more than
one runs, the pools are limited to one thread (threadpoolctl, when installed) and each search's
own C++ rerank uses one thread, so the searches share the cores instead of fighting over them.
The original limits come back when the last concurrent search ends.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from typing import Any, Iterator, Optional

__all__ = ["SearchGate", "SEARCH_GATE"]


class SearchGate:
    """Counts searches in flight across every index of the process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active = 0
        self._limiter: Optional[Any] = None

    @property
    def active(self) -> int:
        """Searches running now."""
        return self._active

    @contextlib.contextmanager
    def enter(self) -> Iterator[bool]:
        """Context for one search; yields True when other searches run concurrently."""
        with self._lock:
            self._active += 1
            shared = self._active > 1
            if shared and self._limiter is None:
                self._limiter = _limit_pools()
        try:
            yield shared
        finally:
            with self._lock:
                self._active -= 1
                if self._active == 0 and self._limiter is not None:
                    with contextlib.suppress(Exception):
                        self._limiter.restore_original_limits()
                    self._limiter = None


_CONTROLLER: Any = None
_MODULES_SEEN = 0


def _limit_pools() -> Optional[Any]:
    """Limit every BLAS/OpenMP pool to one thread; returns the limiter (restore_original_limits).

    The controller (which scans the loaded libraries, ~1 ms) is built once and rebuilt only when
    new modules were imported since, so entering concurrency costs ~0.05 ms.
    """
    global _CONTROLLER, _MODULES_SEEN
    try:
        from threadpoolctl import ThreadpoolController  # noqa: PLC0415 (optional dependency)
    except ImportError:  # pragma: no cover - the search extra installs it
        return None
    if _CONTROLLER is None or len(sys.modules) != _MODULES_SEEN:
        _CONTROLLER, _MODULES_SEEN = ThreadpoolController(), len(sys.modules)
    return _CONTROLLER.limit(limits=1)


SEARCH_GATE = SearchGate()
