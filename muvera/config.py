"""FDE configuration: the reference's fields and names, validated on construction."""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Dict, Mapping, Optional

__all__ = ["FDEConfig", "PRESETS"]

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_MAX_FDE_FLOATS = 2**24  # 64 MiB per encoding: far above any useful FDE, bounds allocations

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

    Raises
    ------
    TypeError, ValueError
        If a field has the wrong type or lies outside its range.
    """

    dimension: int
    num_repetitions: int = 1
    num_simhash_projections: int = 0
    seed: int = 1
    projection_type: str = "identity"
    projection_dimension: Optional[int] = None
    fill_empty_partitions: bool = False
    final_projection_dimension: Optional[int] = None

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
        if self.fde_dimension > _MAX_FDE_FLOATS:
            raise ValueError(
                f"num_repetitions * 2**num_simhash_projections * width = {self.fde_dimension} exceeds "
                f"{_MAX_FDE_FLOATS} floats per encoding")

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
        """A JSON-serialisable dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "FDEConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError."""
        if not isinstance(data, Mapping):
            raise TypeError(f"data: expected a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"data: unknown FDEConfig fields {sorted(unknown)}")
        return cls(**dict(data))
