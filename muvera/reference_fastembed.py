"""Pure-NumPy oracle of fastembed's MUVERA postprocessor (``variant="fastembed"``).

fastembed (``fastembed/postprocess/muvera.py``, class ``Muvera``) implements its own FDE, not the
google/graph-mining reference one (``FDE-SPEC.md`` section 8 lists the differences). This module
restates its algorithm in vectorised NumPy, as the test oracle for the C++ kernel
(``cpp/fde_fastembed.cc``), and draws the random matrices for :class:`muvera.FDEEncoder`:

1. **Random draws** -- one ``numpy.random.default_rng(random_seed)`` stream: for each repetition
   ``r`` in order a ``(dim, k_sim)`` standard normal SimHash matrix, then one ``(r_reps, dim,
   dim_proj)`` array of -1/+1 (``Generator.choice([-1, 1], ...)``).
2. **Partition ids** -- ``((x @ G_r) > 0) @ (1 << arange(k_sim))``: bit ``j`` of the id is set when
   the float64 dot product with column ``j`` is positive (plain binary, least significant bit
   first; no Gray code).
3. **Aggregation** -- float64 sums of the tokens of each partition, in token order; documents
   divide non-empty partitions by their count, queries keep the sums.
4. **Fill** (documents, when asked) -- an empty partition takes the *first* token (lowest index) of
   the non-empty partition nearest to it in Hamming distance between partition ids, the lowest id
   on ties. Not averaged, not projected before the step below.
5. **Projection** -- if ``dim_proj < dim``: ``(1 / sqrt(dim_proj)) * (centers @ S_r)``; if
   ``dim_proj == dim`` nothing.
6. **Layout** -- repetitions, then partitions, then coordinates: ``out[r*B*p + b*p + j]``.

fastembed returns float64 and raises on an empty token set; :func:`encode` returns the same
float64 values (bit for bit: it calls the same NumPy operations in the same order) and zeros for an
empty set, which is this project's convention. :class:`muvera.FDEEncoder` returns these values
rounded to float32.

This module imports nothing from the compiled extension.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

__all__ = ["fastembed_matrices", "matrices_for", "partition_ids", "encode", "encode_query", "encode_document"]


def fastembed_matrices(dimension: int, num_repetitions: int, num_simhash_projections: int,
                       projection_dimension: int, seed: int) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Draw fastembed's random matrices exactly as ``Muvera.__init__`` does.

    Parameters
    ----------
    dimension, num_repetitions, num_simhash_projections, projection_dimension, seed : int
        fastembed's ``dim``, ``r_reps``, ``k_sim``, ``dim_proj`` and ``random_seed``.

    Returns
    -------
    simhash : ndarray, float64, shape (num_repetitions, dimension, num_simhash_projections)
        ``simhash[r]`` is ``Muvera.simhash_projections[r].simhash_vectors``.
    projection : ndarray of int64 (-1/+1), shape (num_repetitions, dimension, projection_dimension), or None
        ``Muvera.dim_reduction_projections``; None when ``projection_dimension == dimension``
        (fastembed draws it but never applies it; it is the stream's last draw, so skipping it
        changes nothing else).
    """
    if projection_dimension > dimension:
        raise ValueError(f"projection_dimension: cannot exceed dimension ({projection_dimension} > {dimension})")
    if seed < 0:
        raise ValueError(f"seed: numpy.random.default_rng needs a seed >= 0, got {seed}")
    generator = np.random.default_rng(seed)
    simhash = np.empty((num_repetitions, dimension, num_simhash_projections), dtype=np.float64)
    for r in range(num_repetitions):
        simhash[r] = generator.normal(size=(dimension, num_simhash_projections))
    if projection_dimension == dimension:
        return simhash, None
    projection = generator.choice([-1, 1], size=(num_repetitions, dimension, projection_dimension))
    return simhash, projection


def matrices_for(config: Any) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """:func:`fastembed_matrices` for a ``variant="fastembed"`` :class:`muvera.FDEConfig`."""
    return fastembed_matrices(config.dimension, config.num_repetitions, config.num_simhash_projections,
                              config.block_width, config.seed)


def _popcount(v: np.ndarray) -> np.ndarray:
    v = v.astype(np.uint64)
    count = np.zeros(v.shape, dtype=np.int64)
    while v.any():
        count += (v & np.uint64(1)).astype(np.int64)
        v = v >> np.uint64(1)
    return count


def partition_ids(tokens: np.ndarray, simhash_r: np.ndarray) -> np.ndarray:
    """Partition id of every token for one repetition's ``(d, k)`` SimHash matrix (int64)."""
    k = simhash_r.shape[1]
    return ((tokens @ simhash_r) > 0) @ (1 << np.arange(k))


def encode(tokens: Any, simhash: np.ndarray, projection: Optional[np.ndarray], *, is_document: bool,
           fill_empty_partitions: bool = True) -> np.ndarray:
    """fastembed's FDE of one token set, float64.

    Parameters
    ----------
    tokens : array-like, shape (n, d)
        Used with its own dtype (fastembed does not convert: float32 tokens meet the float64
        matrices in float64 arithmetic).
    simhash, projection : ndarray
        From :func:`fastembed_matrices`.
    is_document : bool
        True: ``Muvera.process(x, fill_empty_clusters=fill_empty_partitions, normalize_by_count=True)``
        (``process_document`` when filling); False: ``process_query`` (sums, no fill).
    fill_empty_partitions : bool, default True
        Documents only.

    Returns
    -------
    ndarray, float64, shape (R * 2**k * p,)
        Zeros for an empty token set (fastembed raises there).
    """
    x = np.asarray(tokens)
    R, d, k = simhash.shape
    if x.ndim != 2 or x.shape[1] != d:
        raise ValueError(f"tokens: expected shape (n, {d}), got {x.shape}")
    B = 1 << k
    p = d if projection is None else projection.shape[2]
    if x.shape[0] == 0:
        return np.zeros(R * B * p, dtype=np.float64)
    n = x.shape[0]
    fill = is_document and fill_empty_partitions
    all_ids = np.arange(B)
    blocks = []
    for r in range(R):
        ids = partition_ids(x, simhash[r])
        centers = np.zeros((B, d), dtype=np.float64)
        np.add.at(centers, ids, x)  # unbuffered: token order, one addition at a time
        counts = np.bincount(ids, minlength=B)
        occupied = counts > 0
        if is_document:
            centers[occupied] /= counts[occupied][:, None]
        if fill and not occupied.all():
            occupied_ids, empty_ids = all_ids[occupied], all_ids[~occupied]
            distance = _popcount(empty_ids[:, None] ^ occupied_ids[None, :])
            nearest = occupied_ids[np.argmin(distance, axis=1)]  # first minimum: the lowest id
            first = np.full(B, n, dtype=np.int64)
            np.minimum.at(first, ids, np.arange(n))
            centers[empty_ids] = x[first[nearest]]
        if projection is not None:
            centers = (1 / np.sqrt(p)) * (centers @ projection[r])
        blocks.append(centers.reshape(-1))
    return np.concatenate(blocks)


def encode_query(tokens: Any, simhash: np.ndarray, projection: Optional[np.ndarray]) -> np.ndarray:
    """``Muvera.process_query``: :func:`encode` with ``is_document=False``."""
    return encode(tokens, simhash, projection, is_document=False)


def encode_document(tokens: Any, simhash: np.ndarray, projection: Optional[np.ndarray], *,
                    fill_empty_partitions: bool = True) -> np.ndarray:
    """``Muvera.process_document`` (or ``process`` without fill): :func:`encode` for documents."""
    return encode(tokens, simhash, projection, is_document=True, fill_empty_partitions=fill_empty_partitions)
