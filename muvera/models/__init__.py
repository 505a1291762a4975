"""Multi-vector text encoders: text in, ragged per-token vectors out (padding masked out).

Optional dependencies are imported where they are used, so ``import muvera.models`` needs none
of them:

* :class:`HFTokenEncoder` -- ``transformers``/``torch`` (extra ``models``);
* :class:`OnnxMiniLMEncoder` -- ``onnxruntime``/``tokenizers``, no torch (extra ``onnx``);
* :class:`ColBERTEncoder` -- ``colbert-ai`` (extra ``colbert``);
* :class:`PyLateEncoder` -- ``pylate`` (extra ``pylate``).

:func:`load_model` builds any of them from a short string spec.
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import TokenEncoder
from .hf import HFTokenEncoder, default_model_path

__all__ = ["TokenEncoder", "HFTokenEncoder", "default_model_path", "OnnxMiniLMEncoder", "default_onnx_model_path",
           "ColBERTEncoder", "colbert_padded_batch", "colbert_packed_to_list", "PyLateEncoder", "load_model"]

# name -> submodule; imported on first attribute access (module-level __getattr__, PEP 562).
_LAZY = {
    "OnnxMiniLMEncoder": "onnx",
    "default_onnx_model_path": "onnx",
    "ColBERTEncoder": "colbert",
    "colbert_padded_batch": "colbert",
    "colbert_packed_to_list": "colbert",
    "PyLateEncoder": "pylate",
}


def _resolve(name: str) -> Any:
    return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = _resolve(name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list:
    return sorted(set(globals()) | set(__all__))


def load_model(spec: str, **kwargs: Any) -> TokenEncoder:
    """A :class:`TokenEncoder` from a short spec.

    Parameters
    ----------
    spec : str
        * ``"default"`` or ``"minilm"``: :class:`HFTokenEncoder` on the embedded all-MiniLM-L6-v2;
        * ``"onnx:minilm"`` (or ``"onnx"``): :class:`OnnxMiniLMEncoder` (int8 ONNX, no torch);
          ``"onnx:<file.onnx>"``: that ONNX export with the MiniLM tokenizer unless
          ``tokenizer_path=`` is given;
        * ``"hf:<path-or-name>"``: :class:`HFTokenEncoder` on any Hugging Face encoder;
        * ``"colbert:<path-or-name>"``: :class:`ColBERTEncoder` (colbert-ai checkpoint);
        * ``"pylate:<path-or-name>"``: :class:`PyLateEncoder`.
    **kwargs
        Passed on to the encoder's constructor.

    Returns
    -------
    TokenEncoder
    """
    if not isinstance(spec, str):
        raise TypeError(f"spec: expected a string, got {type(spec).__name__}")
    s = spec.strip()
    if s.lower() in ("default", "minilm"):
        return HFTokenEncoder(**kwargs)
    kind, sep, arg = s.partition(":")
    kind = kind.lower()
    if sep and not arg and kind != "onnx":
        raise ValueError(f"spec {spec!r}: expected a model path or name after '{kind}:'")
    if kind == "onnx" and (not arg or arg.lower() == "minilm"):
        return _resolve("OnnxMiniLMEncoder")(**kwargs)
    if kind == "onnx":
        return _resolve("OnnxMiniLMEncoder")(model_path=arg, **kwargs)
    if kind == "hf":
        return HFTokenEncoder(arg, **kwargs)
    if kind == "colbert":
        return _resolve("ColBERTEncoder")(arg, **kwargs)
    if kind == "pylate":
        return _resolve("PyLateEncoder")(arg, **kwargs)
    raise ValueError(f"spec {spec!r}: expected 'default', 'minilm', 'onnx:minilm', 'hf:<model>', "
                     f"'colbert:<checkpoint>' or 'pylate:<model>'")
