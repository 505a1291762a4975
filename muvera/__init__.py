"""muvera: MUVERA multi-vector retrieval with a C++/SIMD core.

Fixed Dimensional Encodings (FDEs) exact to the reference implementation, batch encoding of
ragged token-vector sets, exact Chamfer (MaxSim) scoring, MIPS backends and a persistent index.
"""

__version__ = "0.10.0"

import os as _os
import warnings as _warnings

try:
    from . import _core
except ImportError as _exc:  # the source folder without its built extension
    _here = _os.path.dirname(_os.path.abspath(__file__))
    raise ImportError(
        f"muvera's compiled extension (muvera._core) is missing from {_here}. If this is the source "
        "checkout, Python found the source folder before the installed package: run from another "
        "directory, or install for development with `pip install -e .` (the extension is then "
        "built and found from the checkout too)."
    ) from _exc

_isa = _os.environ.get("MUVERA_ISA")
if _isa is not None and _isa not in _core.supported_isas():
    _warnings.warn(f"MUVERA_ISA={_isa!r} is ignored: expected one of {_core.supported_isas()} on this CPU "
                   f"(using {_core.active_isa()!r})", RuntimeWarning, stacklevel=2)

from . import reference  # noqa: E402
from .config import PRESETS, FDEConfig  # noqa: E402
from .encoder import FDEEncoder, active_isa, supported_isas  # noqa: E402
from .maxsim import chamfer, chamfer_matrix  # noqa: E402

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

# Text first: the Retriever imports no model library until a model is loaded.
from .retriever import Hit, Retriever  # noqa: E402

__all__ += ["Retriever", "Hit"]
