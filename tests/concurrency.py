"""A test helper: run one function on several threads at once and collect what they raise."""

from __future__ import annotations

import threading
from typing import Any, Callable, List


def run_concurrently(fn: Callable[[int], Any], n: int) -> List[BaseException]:
    """Calls ``fn(0) .. fn(n - 1)`` on ``n`` threads started together; returns their exceptions."""
    errors: List[BaseException] = []

    def guarded(i: int) -> None:
        try:
            fn(i)
        except BaseException as exc:  # noqa: BLE001 (reported to the test)
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors
