"""muvera: MUVERA multi-vector retrieval with a C++/SIMD core.

Fixed Dimensional Encodings (FDEs) exact to the reference implementation, batch encoding of
ragged token-vector sets, and (in later modules) Chamfer reranking and MIPS search.
"""

from . import reference
from .config import PRESETS, FDEConfig
from .encoder import FDEEncoder, active_isa, supported_isas

__version__ = "0.1.0"

__all__ = ["FDEConfig", "FDEEncoder", "PRESETS", "active_isa", "supported_isas", "reference", "__version__"]
