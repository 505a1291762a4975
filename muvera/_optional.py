"""Optional dependencies, imported where they are used, with an error naming the extra to install."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["require"]


def require(module: str, extra: str, purpose: str) -> Any:
    """Import ``module`` or raise ImportError saying which ``muvera-toolkit`` extra provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{purpose} needs the Python package {module.split('.')[0]!r}: "
                          f"pip install \"muvera-toolkit[{extra}]\"") from exc
