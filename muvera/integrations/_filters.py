"""Helpers shared by the framework integrations (no framework imported here)."""

from __future__ import annotations

import re
from typing import Any, Dict, Optional, Tuple

__all__ = ["filter_to_where"]

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def filter_to_where(flt: Optional[Dict[str, Any]]) -> Tuple[Optional[str], Tuple[Any, ...]]:
    """A dict of metadata equalities as ``(where, where_params)``; ValueError for keys that are
    not column names or values that are not scalars."""
    if not flt:
        return None, ()
    if not isinstance(flt, dict):
        raise TypeError(f"filter: expected a dict of metadata equalities, got {type(flt).__name__}")
    parts, params = [], []
    for key, value in flt.items():
        if not isinstance(key, str) or not _IDENT.match(key):
            raise ValueError(f"filter: {key!r} is not a metadata column name (letters, digits, _)")
        if not isinstance(value, (str, int, float, bool)) and value is not None:
            raise ValueError(f"filter: {key!r} must map to a str, number, bool or None, got {type(value).__name__}")
        if value is None:
            parts.append(f'"{key}" IS NULL')
        else:
            parts.append(f'"{key}" = ?')
            params.append(value)
    return " AND ".join(parts), tuple(params)
