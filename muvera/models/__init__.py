"""Multi-vector text encoders: text in, ragged per-token vectors out (padding masked out).

Optional dependencies are imported where they are used: ``transformers``/``torch`` for
:class:`HFTokenEncoder`.
"""

from .base import TokenEncoder
from .hf import HFTokenEncoder, default_model_path

__all__ = ["TokenEncoder", "HFTokenEncoder", "default_model_path"]
