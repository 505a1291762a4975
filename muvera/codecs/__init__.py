"""Token codecs: how the token store encodes tokens for Chamfer reranking.

``make_codec("float16", d)`` / ``"float32"`` / ``"int8"`` / ``"residual:2"`` / ``"residual:4"``
(``"residual:<nbits>[:k=<centroids>]"``); a new encoding is one module with a
:class:`TokenCodec` subclass plus one :func:`register_codec` call.
"""

from __future__ import annotations

from typing import Callable, Dict

from .base import TokenCodec
from .floats import Float16Codec, Float32Codec
from .int8 import Int8Codec
from .residual import ResidualCodec, parse_residual_options

__all__ = ["TokenCodec", "Float16Codec", "Float32Codec", "Int8Codec", "ResidualCodec", "make_codec", "register_codec", "registered_codecs"]

_REGISTRY: Dict[str, Callable[[str, int], TokenCodec]] = {}


def register_codec(kind: str, builder: Callable[[str, int], TokenCodec], *, replace: bool = False) -> None:
    """Make ``make_codec("<kind>[:<options>]", d)`` build a codec via ``builder(options, d)``."""
    if not isinstance(kind, str) or not kind.isidentifier() or kind != kind.lower():
        raise ValueError(f"kind: expected a lower-case identifier, got {kind!r}")
    if kind in _REGISTRY and not replace:
        raise ValueError(f"kind: a token codec {kind!r} is already registered (pass replace=True)")
    _REGISTRY[kind] = builder


def registered_codecs() -> Dict[str, Callable[[str, int], TokenCodec]]:
    """A copy of the registry: kind -> builder."""
    return dict(_REGISTRY)


def make_codec(spec: str, dimension: int) -> TokenCodec:
    """Build a token codec from its spec (``"float16"``, ``"float32"``, ``"<kind>:<options>"``).

    Raises
    ------
    TypeError
        ``spec`` is not a string.
    ValueError
        An unknown codec name or bad options.
    """
    if not isinstance(spec, str):
        raise TypeError(f"token_codec: expected a codec name such as 'float16', got {type(spec).__name__}")
    kind, _, rest = spec.strip().partition(":")
    key = kind.strip().lower()
    if key not in _REGISTRY:
        raise ValueError(f"token_codec: unknown codec {spec!r} (known: {sorted(_REGISTRY)})")
    return _REGISTRY[key](rest.strip(), int(dimension))


def _no_options(cls: Callable[[int], TokenCodec]) -> Callable[[str, int], TokenCodec]:
    def build(options: str, dimension: int) -> TokenCodec:
        if options:
            raise ValueError(f"token_codec: {cls.kind!r} takes no options, got {options!r}")  # type: ignore[attr-defined]
        return cls(dimension)
    return build


register_codec("float16", _no_options(Float16Codec))
register_codec("float32", _no_options(Float32Codec))
register_codec("int8", _no_options(Int8Codec))


def _residual(options: str, dimension: int) -> TokenCodec:
    nbits, k = parse_residual_options(options)
    return ResidualCodec(dimension, nbits, k)


register_codec("residual", _residual)
