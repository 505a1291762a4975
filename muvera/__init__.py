"""muvera: MUVERA multi-vector retrieval with a C++/SIMD core.

Fixed Dimensional Encodings (FDEs) exact to the reference implementation, batch encoding of
ragged token-vector sets, exact Chamfer (MaxSim) scoring, MIPS backends and a persistent index.
"""

from . import reference
from .config import PRESETS, FDEConfig
from .encoder import FDEEncoder, active_isa, supported_isas
from .maxsim import chamfer, chamfer_matrix

__version__ = "0.2.0"

__all__ = ["FDEConfig", "FDEEncoder", "PRESETS", "active_isa", "supported_isas", "reference", "chamfer",
           "chamfer_matrix", "__version__"]

# Search layer: token store, MIPS backends (faiss imported lazily) and the index.
from .backends import Backend, ExactBackend, FaissBackend, make_backend, register_backend  # noqa: E402
from .codecs import TokenCodec, make_codec, register_codec  # noqa: E402
from .idmap import IdMap  # noqa: E402
from .index import MuveraIndex, ball_carve  # noqa: E402
from .store import TokenStore  # noqa: E402

__all__ += ["Backend", "ExactBackend", "FaissBackend", "make_backend", "register_backend", "TokenCodec",
            "make_codec", "register_codec", "IdMap", "MuveraIndex", "ball_carve", "TokenStore"]
