"""FDEEncoder: the Python face of the C++ FDE kernels."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from . import _core
from ._validate import MAX_THREADS, positive_int
from .batch import int_vector, as_matrix, as_token_batch
from .config import FDEConfig

__all__ = ["FDEEncoder", "active_isa", "supported_isas"]


def active_isa() -> str:
    """Name of the ISA level chosen for this CPU: ``"avx512vnni"``, ``"avx512"``, ``"avx2"`` or ``"generic"``.

    One level selects every kernel (FDE, Chamfer, fastembed, residual and int8 rerank); the VNNI
    level differs from ``"avx512"`` in the integer rerank kernels only.
    """
    return _core.active_isa()


def supported_isas() -> list:
    """Every ISA level this CPU can run, lowest first (for parity tests and benchmarks)."""
    return list(_core.supported_isas())


class FDEEncoder:
    """Encodes token-vector sets into Fixed Dimensional Encodings.

    The random matrices (SimHash, AMS sketch, count-sketch) are drawn once, when the encoder is
    built; every call reuses them. Batches run on ``num_threads`` C++ threads with the GIL
    released, so encoders may also be shared between Python threads.

    Parameters
    ----------
    config : FDEConfig
    num_threads : int, optional
        Threads for batch calls; default: every core.
    isa : str, optional
        Force an ISA level (one of :func:`supported_isas`); default: the best supported.

    Notes
    -----
    * ``config.variant == "fastembed"``: encodings equal ``fastembed.postprocess.Muvera``'s
      ``process_document`` / ``process_query`` rounded to float32 (see :class:`FDEConfig` for the
      field mapping and ``muvera.reference_fastembed`` for the algorithm); the rest of this list
      describes the reference variant, except the last two points, which hold for both.
    * Queries are summed per partition and never filled; documents are averaged and, with
      ``fill_empty_partitions``, empty partitions take the nearest projected token.
    * An empty item (zero tokens) encodes to all zeros, never NaN (the reference returns NaN for
      a ``k = 0`` document and reads out of bounds for a filled one).
    * Items holding NaN or Inf raise ValueError.

    Examples
    --------
    >>> import numpy as np, muvera
    >>> enc = muvera.FDEEncoder(muvera.FDEConfig.preset("10240", dimension=128))
    >>> docs = [np.random.rand(n, 128).astype(np.float32) for n in (30, 120)]
    >>> enc.encode_documents(docs).shape
    (2, 10240)
    """

    def __init__(self, config: FDEConfig, num_threads: Optional[int] = None, isa: Optional[str] = None):
        if not isinstance(config, FDEConfig):
            raise TypeError(f"config: expected an FDEConfig, got {type(config).__name__}")
        if num_threads is not None:
            num_threads = positive_int(num_threads, "num_threads", MAX_THREADS)
        if isa is not None and isa not in _core.supported_isas():
            raise ValueError(f"isa: expected one of {_core.supported_isas()} on this CPU, got {isa!r}")
        self._config = config
        self._num_threads = num_threads or _core.default_num_threads()
        self._isa = isa or ""
        if config.variant == "fastembed":
            # fastembed's own random draws (NumPy's Generator), made once here; the C++ kernel keeps
            # its copies for every later call.
            from .reference_fastembed import matrices_for

            simhash, projection = matrices_for(config)
            self._core = _core.FastembedEncoder(
                simhash, None if projection is None else projection.astype(np.float64),
                config.fill_empty_partitions)
        else:
            self._core = _core.FdeEncoder(
                config.dimension, config.num_repetitions, config.num_simhash_projections, config.seed,
                config.projection_type == "ams_sketch", config.projection_dimension or 0,
                config.fill_empty_partitions, config.final_projection_dimension or 0)

    @property
    def config(self) -> FDEConfig:
        """The configuration this encoder was built from."""
        return self._config

    @property
    def output_dimension(self) -> int:
        """Dimension of every encoding."""
        return self._config.output_dimension

    @property
    def num_threads(self) -> int:
        """Threads used by batch calls."""
        return self._num_threads

    def __repr__(self) -> str:
        return f"FDEEncoder({self._config!r}, num_threads={self._num_threads})"

    # -- single items -------------------------------------------------------------------------
    def encode_query(self, query: Any) -> np.ndarray:
        """Encode one query, an ``(n_tokens, dimension)`` array; returns ``(output_dimension,)``."""
        return self._encode_one(query, False, "query")

    def encode_document(self, document: Any) -> np.ndarray:
        """Encode one document, an ``(n_tokens, dimension)`` array; returns ``(output_dimension,)``."""
        return self._encode_one(document, True, "document")

    def _encode_one(self, x: Any, is_document: bool, name: str) -> np.ndarray:
        arr, _ = as_matrix(x, self._config.dimension, name)
        try:
            out = self._core.encode_list([arr], is_document, 1, self._isa, name)
        except ValueError as exc:  # the core names items "name[i]"; there is only one here
            raise ValueError(str(exc).replace(f"{name}[0]", name, 1)) from None
        return out[0]

    # -- batches ------------------------------------------------------------------------------
    def encode_queries(self, queries: Any, *, lengths: Any = None, offsets: Any = None,
                       mask: Any = None) -> np.ndarray:
        """Encode a batch of queries; returns ``(n_queries, output_dimension)`` float32.

        Parameters
        ----------
        queries : list of 2-D arrays, packed 2-D array, or padded 3-D array (NumPy or torch)
        lengths, offsets : array-like of int, optional
            Item boundaries of a packed ``(total_tokens, d)`` array (exactly one of them).
        mask : array-like of bool, optional
            ``(n, L)`` validity mask of a padded ``(n, L, d)`` array.
        """
        return self._encode_batch(queries, False, "queries", lengths, offsets, mask)

    def encode_documents(self, documents: Any, *, lengths: Any = None, offsets: Any = None,
                         mask: Any = None) -> np.ndarray:
        """Encode a batch of documents; returns ``(n_documents, output_dimension)`` float32.

        Accepts the same forms as :meth:`encode_queries`.
        """
        return self._encode_batch(documents, True, "documents", lengths, offsets, mask)

    def encode_spans(self, tokens: np.ndarray, starts: Any, lengths: Any, *, is_document: bool) -> np.ndarray:
        """Encode items that are row spans ``tokens[starts[i] : starts[i] + lengths[i]]`` of one
        2-D array (spans may leave gaps or repeat); used to re-encode rows of a token store.
        """
        arr, _ = as_matrix(tokens, self._config.dimension, "tokens")
        starts, lengths = int_vector(starts, "starts"), int_vector(lengths, "lengths")
        if starts.shape != lengths.shape:
            raise ValueError(f"starts/lengths: expected equal lengths, got {starts.shape} and {lengths.shape}")
        return self._core.encode_packed(arr, starts, lengths, is_document, self._num_threads, self._isa,
                                        "documents" if is_document else "queries")

    def _encode_batch(self, batch: Any, is_document: bool, name: str, lengths: Any, offsets: Any,
                      mask: Any) -> np.ndarray:
        tb = as_token_batch(batch, self._config.dimension, lengths=lengths, offsets=offsets, mask=mask,
                            name=name)
        if tb.arrays is not None:
            return self._core.encode_list(tb.arrays, is_document, self._num_threads, self._isa, name)
        return self._core.encode_packed(tb.tokens, tb.starts, tb.lengths, is_document, self._num_threads,
                                        self._isa, name)
