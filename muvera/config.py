"""FDE configuration: the reference's fields and names, validated on construction."""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Dict, Mapping, Optional

__all__ = ["FDEConfig", "PRESETS"]

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_MAX_FDE_FLOATS = 2**24  # 64 MiB per encoding: far above any useful FDE, bounds allocations

_VARIANTS = ("reference", "fastembed")

_PROJECTION_ALIASES = {
    "identity": "identity",
    "default_identity": "identity",
    "ams_sketch": "ams_sketch",
    "ams": "ams_sketch",
}

#: The paper's Pareto-optimal (R, k, d_proj) settings, named by their output dimension.
PRESETS: Dict[str, Dict[str, int]] = {
    "1280": {"num_repetitions": 20, "num_simhash_projections": 3, "projection_dimension": 8},
    "2560": {"num_repetitions": 20, "num_simhash_projections": 4, "projection_dimension": 8},
    "5120": {"num_repetitions": 20, "num_simhash_projections": 5, "projection_dimension": 8},
    "10240": {"num_repetitions": 20, "num_simhash_projections": 5, "projection_dimension": 16},
}


def _check_int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    value = int(value)
    if not low <= value <= high:
        raise ValueError(f"{name}: expected an int in [{low}, {high}], got {value}")
    return value


@dataclasses.dataclass(frozen=True)
class FDEConfig:
    """Configuration of a Fixed Dimensional Encoding (MUVERA).

    Field names and defaults follow the reference ``FixedDimensionalEncodingConfig`` of
    google/graph-mining, so a configuration carries over unchanged; see :meth:`preset` for the
    paper's recommended settings.

    Parameters
    ----------
    dimension : int
        Dimension ``d`` of every token vector (required, > 0).
    num_repetitions : int, default 1
        Number of independent repetitions ``R`` (>= 1).
    num_simhash_projections : int, default 0
        SimHash bits ``k``; each repetition has ``2**k`` partitions (0 <= k <= 30).
    seed : int, default 1
        Base seed (int32). Queries and documents must be encoded with the same seed.
    projection_type : {"identity", "ams_sketch"}, default "identity"
        Inner projection of each token: none, or the reference's sparse +-1 AMS sketch.
    projection_dimension : int or None
        Width ``d_proj`` of the AMS sketch (required with ``"ams_sketch"``).
    fill_empty_partitions : bool, default False
        Documents only: an empty partition takes the projected token nearest to it in Hamming
        distance. Queries are never filled, as in the paper.
    final_projection_dimension : int or None
        If set, a final Count-Sketch to this many dimensions.
    variant : {"reference", "fastembed"}, default "reference"
        Which algorithm the fields describe. ``"reference"``: google/graph-mining's FDE
        (``FDE-SPEC.md``), bit-exact to it. ``"fastembed"``: the ``Muvera`` postprocessor of
        fastembed (``fastembed.postprocess.Muvera``), reproduced to float32 rounding with its own
        random draws, so that FDEs already stored by fastembed users (e.g. in Qdrant) stay valid;
        see :meth:`from_fastembed` and the mapping below.

    Raises
    ------
    TypeError, ValueError
        If a field has the wrong type or lies outside its range, or (``variant="fastembed"``) has
        no counterpart in fastembed.

    Notes
    -----
    With ``variant="fastembed"`` the fields map to ``Muvera(dim, k_sim, dim_proj, r_reps,
    random_seed)`` as follows:

    * ``dimension`` -> ``dim``.
    * ``num_simhash_projections`` -> ``k_sim``; bit ``j`` of a partition id is set when the token's
      dot product with SimHash vector ``j`` is ``> 0`` (plain binary ids, no Gray code).
    * ``num_repetitions`` -> ``r_reps``.
    * ``seed`` -> ``random_seed``; must be >= 0 (it seeds ``numpy.random.default_rng``).
    * ``projection_type="ams_sketch"`` with ``projection_dimension`` -> ``dim_proj =
      projection_dimension`` (<= ``dimension``): fastembed's dense random +-1 projection scaled by
      ``1/sqrt(dim_proj)`` (not the reference's sparse AMS sketch). fastembed skips the projection
      when ``dim_proj == dim``, and so does this variant.
    * ``projection_type="identity"`` -> ``dim_proj = dim`` (no projection).
    * ``fill_empty_partitions`` -> documents are ``Muvera.process(x,
      fill_empty_clusters=fill_empty_partitions, normalize_by_count=True)``; with ``True`` that is
      ``process_document``. Queries are always ``process_query`` (sums, no fill).
    * ``final_projection_dimension`` -> not supported (must be ``None``).

    The variant differs from fastembed in two places only: outputs are float32 (fastembed returns
    float64; ours equal its values to float32 rounding, see ``muvera.reference_fastembed``), and an
    empty token set encodes to zeros (fastembed raises ``ValueError``).
    """

    dimension: int
    num_repetitions: int = 1
    num_simhash_projections: int = 0
    seed: int = 1
    projection_type: str = "identity"
    projection_dimension: Optional[int] = None
    fill_empty_partitions: bool = False
    final_projection_dimension: Optional[int] = None
    variant: str = "reference"

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        set_("dimension", _check_int("dimension", self.dimension, 1, 2**20))
        set_("num_repetitions", _check_int("num_repetitions", self.num_repetitions, 1, 2**20))
        set_("num_simhash_projections",
             _check_int("num_simhash_projections", self.num_simhash_projections, 0, 30))
        set_("seed", _check_int("seed", self.seed, _INT32_MIN, _INT32_MAX))
        if not isinstance(self.projection_type, str):
            raise TypeError("projection_type: expected 'identity' or 'ams_sketch', got "
                            f"{type(self.projection_type).__name__}")
        kind = _PROJECTION_ALIASES.get(self.projection_type.lower())
        if kind is None:
            raise ValueError(f"projection_type: expected 'identity' or 'ams_sketch', got "
                             f"{self.projection_type!r}")
        set_("projection_type", kind)
        if kind == "ams_sketch":
            if self.projection_dimension is None:
                raise ValueError("projection_dimension: required (> 0) with projection_type='ams_sketch'")
            set_("projection_dimension",
                 _check_int("projection_dimension", self.projection_dimension, 1, 2**20))
        elif self.projection_dimension not in (None, 0):
            raise ValueError("projection_dimension: only used with projection_type='ams_sketch'; "
                             "leave it None for 'identity'")
        else:
            set_("projection_dimension", None)
        if not isinstance(self.fill_empty_partitions, (bool,)) and not (
                hasattr(self.fill_empty_partitions, "dtype") and self.fill_empty_partitions.dtype == bool):
            raise TypeError("fill_empty_partitions: expected a bool, got "
                            f"{type(self.fill_empty_partitions).__name__}")
        set_("fill_empty_partitions", bool(self.fill_empty_partitions))
        if self.final_projection_dimension is not None:
            set_("final_projection_dimension",
                 _check_int("final_projection_dimension", self.final_projection_dimension, 1, _MAX_FDE_FLOATS))
        if not isinstance(self.variant, str):
            raise TypeError(f"variant: expected 'reference' or 'fastembed', got {type(self.variant).__name__}")
        variant = self.variant.lower()
        if variant not in _VARIANTS:
            raise ValueError(f"variant: expected 'reference' or 'fastembed', got {self.variant!r}")
        set_("variant", variant)
        if variant == "fastembed":
            self._check_fastembed()
        if self.fde_dimension > _MAX_FDE_FLOATS:
            raise ValueError(
                f"num_repetitions * 2**num_simhash_projections * width = {self.fde_dimension} exceeds "
                f"{_MAX_FDE_FLOATS} floats per encoding")

    def _check_fastembed(self) -> None:
        """Reject what fastembed's ``Muvera`` has no counterpart for (variant="fastembed")."""
        if self.final_projection_dimension is not None:
            raise ValueError("final_projection_dimension: not supported with variant='fastembed' (fastembed's "
                             "Muvera has no final projection); leave it None")
        if self.seed < 0:
            raise ValueError(f"seed: expected an int >= 0 with variant='fastembed' (fastembed's random_seed "
                             f"seeds numpy.random.default_rng), got {self.seed}")
        if self.projection_type == "ams_sketch" and self.projection_dimension > self.dimension:
            raise ValueError(f"projection_dimension: fastembed cannot project to a higher dimension "
                             f"(projection_dimension={self.projection_dimension} > dimension={self.dimension})")

    @property
    def fastembed_params(self) -> Dict[str, int]:
        """The keyword arguments of the equivalent ``fastembed.postprocess.Muvera``.

        Only defined for ``variant="fastembed"``: ``Muvera(**config.fastembed_params)`` encodes as
        this configuration does (``process_document`` needs ``fill_empty_partitions=True``).

        Raises
        ------
        ValueError
            If the variant is not ``"fastembed"``.
        """
        if self.variant != "fastembed":
            raise ValueError(f"fastembed_params: only defined for variant='fastembed', not {self.variant!r}")
        return {"dim": self.dimension, "k_sim": self.num_simhash_projections, "dim_proj": self.block_width,
                "r_reps": self.num_repetitions, "random_seed": self.seed}

    @classmethod
    def from_fastembed(cls, dim: int, k_sim: int = 5, dim_proj: int = 16, r_reps: int = 20,
                       random_seed: int = 42, *, fill_empty_partitions: bool = True) -> "FDEConfig":
        """The ``variant="fastembed"`` configuration of ``fastembed.postprocess.Muvera``.

        Takes ``Muvera``'s parameters, names and defaults, so ``Muvera(dim=128, k_sim=6, dim_proj=32)``
        becomes ``FDEConfig.from_fastembed(dim=128, k_sim=6, dim_proj=32)``. Documents encode as
        ``Muvera.process_document`` and queries as ``Muvera.process_query``.

        Parameters
        ----------
        dim : int
            Token vector dimension (fastembed: the model's ``embedding_size``).
        k_sim : int, default 5
            SimHash bits; ``2**k_sim`` partitions.
        dim_proj : int, default 16
            Projected width (<= dim); ``dim_proj == dim`` means no projection.
        r_reps : int, default 20
            Repetitions.
        random_seed : int, default 42
            Seed of fastembed's ``numpy.random.default_rng`` (>= 0).
        fill_empty_partitions : bool, default True
            False gives ``Muvera.process(x, fill_empty_clusters=False)`` for documents.

        Examples
        --------
        >>> FDEConfig.from_fastembed(dim=128).output_dimension
        10240
        """
        dim_proj_ = _check_int("dim_proj", dim_proj, 1, 2**20)
        dim_ = _check_int("dim", dim, 1, 2**20)
        if dim_proj_ == dim_:
            return cls(dimension=dim_, num_repetitions=r_reps, num_simhash_projections=k_sim, seed=random_seed,
                       fill_empty_partitions=fill_empty_partitions, variant="fastembed")
        return cls(dimension=dim_, num_repetitions=r_reps, num_simhash_projections=k_sim, seed=random_seed,
                   projection_type="ams_sketch", projection_dimension=dim_proj_,
                   fill_empty_partitions=fill_empty_partitions, variant="fastembed")

    @property
    def block_width(self) -> int:
        """Width of one partition block: ``projection_dimension`` (AMS) or ``dimension``."""
        return self.projection_dimension if self.projection_type == "ams_sketch" else self.dimension

    @property
    def fde_dimension(self) -> int:
        """Dimension before the optional final projection: ``R * 2**k * block_width``."""
        return self.num_repetitions * (1 << self.num_simhash_projections) * self.block_width

    @property
    def output_dimension(self) -> int:
        """Dimension of the encodings this configuration produces."""
        if self.final_projection_dimension is not None:
            return self.final_projection_dimension
        return self.fde_dimension

    @classmethod
    def preset(cls, name: str, dimension: int, *, seed: int = 42,
               final_projection_dimension: Optional[int] = None) -> "FDEConfig":
        """One of the paper's Pareto-optimal settings, with fill on for documents.

        Parameters
        ----------
        name : {"1280", "2560", "5120", "10240"}
            The output dimension of the setting: (R, k, d_proj) = (20, 3, 8), (20, 4, 8),
            (20, 5, 8) and (20, 5, 16).
        dimension : int
            Token vector dimension.
        seed : int, default 42
        final_projection_dimension : int, optional

        Examples
        --------
        >>> FDEConfig.preset("10240", dimension=128).output_dimension
        10240
        """
        key = str(name)
        if key not in PRESETS:
            raise ValueError(f"preset: expected one of {sorted(PRESETS, key=int)}, got {name!r}")
        return cls(dimension=dimension, seed=seed, projection_type="ams_sketch",
                   fill_empty_partitions=True, final_projection_dimension=final_projection_dimension,
                   **PRESETS[key])

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-serialisable dict of every field.

        ``variant`` is left out when it is ``"reference"``, so reference configurations serialise
        exactly as before the field existed (and older readers of saved indexes still load them);
        :meth:`from_dict` reads a missing ``variant`` as ``"reference"``.
        """
        out = dataclasses.asdict(self)
        if out["variant"] == "reference":
            del out["variant"]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "FDEConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError, a missing ``variant`` is
        ``"reference"``."""
        if not isinstance(data, Mapping):
            raise TypeError(f"data: expected a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"data: unknown FDEConfig fields {sorted(unknown)}")
        return cls(**dict(data))
