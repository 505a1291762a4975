"""MIPS backends behind one interface (:class:`Backend`), built from spec strings by one factory.

* ``"auto"`` -- :class:`AutoBackend` (the index's default): exact, then 4-bit PQ fast-scan, then
  IVF + PQ fast-scan as the corpus grows.
* ``"exact"`` -- :class:`ExactBackend`, brute force with NumPy BLAS.
* ``"faiss:<factory>"`` or a bare faiss factory string (``"HNSW32"``, ``"IVF1024,PQ1280x8"``) --
  :class:`FaissBackend`.
* anything registered with :func:`register_backend` as ``"<kind>"`` or ``"<kind>:<options>"``.

A new backend is one module with a :class:`Backend` subclass plus one ``register_backend`` call;
:class:`muvera.MuveraIndex` saves and loads it through the interface without knowing its class.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional

from .base import AllowedRows, Backend, Entries, as_allowed, as_allowed_rows, topk
from .exact import ExactBackend
from .faiss_backend import FaissBackend, check_factory
from .auto import AutoBackend

__all__ = ["Backend", "AutoBackend", "ExactBackend", "FaissBackend", "make_backend", "register_backend",
           "registered_backends", "topk", "as_allowed", "as_allowed_rows", "AllowedRows", "check_factory", "Entries"]

#: kind -> builder(options after "kind:", dimension) -> Backend
_REGISTRY: Dict[str, Callable[[str, Optional[int]], Backend]] = {}


def register_backend(kind: str, builder: Callable[[str, Optional[int]], Backend], *,
                     replace: bool = False) -> None:
    """Make ``make_backend("<kind>")`` / ``make_backend("<kind>:<options>")`` build a backend.

    Parameters
    ----------
    kind : str
        Lower-case name, letters, digits and ``_`` only.
    builder : callable
        ``builder(options: str, dimension: int | None) -> Backend``; ``options`` is the text
        after ``"<kind>:"`` (empty when none). The backend's ``name`` must rebuild it.
    replace : bool
        Allow replacing an existing registration.
    """
    if not isinstance(kind, str) or not kind.isidentifier() or kind != kind.lower():
        raise ValueError(f"kind: expected a lower-case identifier, got {kind!r}")
    if kind in _REGISTRY and not replace:
        raise ValueError(f"kind: a backend {kind!r} is already registered (pass replace=True)")
    if not callable(builder):
        raise TypeError("builder: expected a callable (options, dimension) -> Backend")
    _REGISTRY[kind] = builder


def registered_backends() -> Dict[str, Callable[[str, Optional[int]], Backend]]:
    """A copy of the registry: kind -> builder."""
    return dict(_REGISTRY)


def make_backend(spec: str, dimension: Optional[int] = None) -> Backend:
    """Build a backend from a spec string.

    Parameters
    ----------
    spec : str
        ``"exact"``, ``"<kind>[:<options>]"`` for a registered kind, or a faiss factory string
        with or without a ``"faiss:"`` prefix (``"faiss:HNSW32"`` and ``"HNSW32"`` are the same).
    dimension : int, optional
        Vector dimension; lets the backend validate its options now.

    Raises
    ------
    TypeError
        ``spec`` is not a string.
    ValueError
        An unknown or malformed spec (checked before faiss sees it).

    Examples
    --------
    >>> make_backend("exact").name
    'exact'
    """
    if not isinstance(spec, str):
        raise TypeError(f"backend: expected a spec string such as 'exact' or 'HNSW32', got "
                        f"{type(spec).__name__}")
    s = spec.strip()
    if not s:
        raise ValueError("backend: expected 'exact' or a faiss factory string, got an empty string")
    kind, sep, rest = s.partition(":")
    key = kind.strip().lower()
    if key in _REGISTRY:
        backend = _REGISTRY[key](rest.strip() if sep else "", dimension)
        if not isinstance(backend, Backend):
            raise TypeError(f"backend: the builder of {key!r} returned {type(backend).__name__}, not a Backend")
        return backend
    if sep:
        raise ValueError(f"backend: unknown backend kind {kind!r} in {spec!r} (known: {sorted(_REGISTRY)})")
    return FaissBackend.from_spec(s, dimension)  # a bare faiss factory string


register_backend("exact", ExactBackend.from_spec)
register_backend("faiss", FaissBackend.from_spec)
register_backend("auto", AutoBackend.from_spec)
