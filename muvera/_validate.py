"""Argument checks shared by the public entry points (one of each, named in every message)."""

from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

__all__ = ["positive_int", "MAX_THREADS"]

MAX_THREADS = 1024


def positive_int(value: Any, name: str, upper: Optional[int] = None) -> int:
    """``value`` as an int in ``[1, upper]``: TypeError for non-ints (bools too), ValueError outside."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected a positive int, got {type(value).__name__} {value!r}")
    if value <= 0:
        raise ValueError(f"{name}: expected a positive int, got {value}")
    if upper is not None and value > upper:
        raise ValueError(f"{name}: expected at most {upper}, got {value}")
    return int(value)


def check_search_args(k: Any, candidates: Any = None, rescore: Any = None
                      ) -> Tuple[int, Optional[int], Optional[int]]:
    """``k``, ``candidates`` and ``rescore`` as every search front door takes them: positive
    ints, ``candidates`` and ``rescore`` (when given) at least ``k``. The one copy of these rules
    (``MuveraIndex``, ``ShardedIndex``, ``Retriever`` and the vector-database searchers)."""
    k = positive_int(k, "k")
    if candidates is not None:
        candidates = positive_int(candidates, "candidates")
        if candidates < k:
            raise ValueError(f"candidates: expected >= k ({k}), got {candidates}")
    if rescore is not None:
        rescore = positive_int(rescore, "rescore")
        if rescore < k:
            raise ValueError(f"rescore: expected >= k ({k}), got {rescore}")
    return k, candidates, rescore
