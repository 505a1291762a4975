"""The centroid-interaction prune between the FDE candidates and the rerank.

With residual token codes every stored token carries the id of its k-means centroid, so a
document's *bag* -- its distinct centroid ids -- is known for free. PLAID scores a bag against a
query as ``sum_i max_{c in bag} <q_i, c>`` (Chamfer with every document token moved to its
centroid): a far better proxy of Chamfer than an FDE inner product, read from ~1 byte per token.
The index therefore asks the FDE backend for ``prune_factor`` times the candidates, keeps the best
``candidates`` of them by bag score (:meth:`muvera.store.TokenStore.prune`), and reranks those.
It replaces the SQ8 FDE refine for residual codecs: no 1-byte-per-FDE-dimension codes to store,
and more of exact Chamfer's top-10 reaches the rerank (bench/bench_prune.py).

``params={"prune_factor": f}`` sets the width per search (``1``: no prune).
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple

__all__ = ["PRUNE_KEY", "DEFAULT_PRUNE_FACTOR", "MAX_PRUNE_FACTOR", "split_prune", "check_prune_codec",
           "check_prune_factor"]

#: The search parameter naming the prune width.
PRUNE_KEY = "prune_factor"
#: FDE candidates fetched per reranked candidate when the store can prune and the backend does
#: not refine (bench/bench_prune.py: 4 keeps most of what 8 gains on NFCorpus and SciFact).
DEFAULT_PRUNE_FACTOR = 4
MAX_PRUNE_FACTOR = 64


def split_prune(params: Optional[Mapping[str, Any]]) -> Tuple[Optional[int], Optional[Dict[str, Any]]]:
    """``(prune_factor or None, the backend's params or None)`` of a search's ``params``.

    Raises
    ------
    TypeError
        ``params`` is not a mapping.
    ValueError
        ``prune_factor`` is not an int in ``[1, MAX_PRUNE_FACTOR]``.
    """
    if params is None:
        return None, None
    if not isinstance(params, Mapping):
        raise TypeError(f"params: expected a dict of search parameters, got {type(params).__name__}")
    if PRUNE_KEY not in params:
        return None, dict(params) if params else None
    rest = {k: v for k, v in params.items() if k != PRUNE_KEY}
    return check_prune_factor(params[PRUNE_KEY], f"params: {PRUNE_KEY}"), rest or None


def check_prune_factor(f: Any, name: str = PRUNE_KEY) -> int:
    """``f`` as an int in ``[1, MAX_PRUNE_FACTOR]``; ValueError naming ``name`` otherwise."""
    if isinstance(f, bool) or not isinstance(f, int) or not 1 <= f <= MAX_PRUNE_FACTOR:
        raise ValueError(f"{name}: expected an int in [1, {MAX_PRUNE_FACTOR}] (1: no prune), got {f!r}")
    return int(f)


def check_prune_codec(prune: Optional[int], codec: Any) -> None:
    """Raise ValueError when a search asks to prune (``prune_factor`` > 1) with a token codec
    whose codes carry no centroid ids (anything but residual codes)."""
    if prune is not None and prune > 1 and getattr(codec, "kind", None) != "residual":
        raise ValueError(f"params: prune_factor needs centroid ids in the token codes (a residual codec); "
                         f"{getattr(codec, 'name', codec)!r} has none (use 1 or leave it out)")
