"""Lattice geometry for the Ising model: couplings, walls, site fields and named regions.

Energy convention (used by every sampler and every exact oracle in spectro):

    H(s) = - sum_<ij> J_ij s_i s_j - sum_i h_i s_i ,    p(s) ∝ exp(-beta H(s)),

with s_i in {-1, +1}. Bonds are stored as two [H, W] arrays:

* ``j_right[r, c]`` couples (r, c) with (r, c+1); with open boundaries the last column is 0,
  with periodic boundaries it couples (r, W-1) with (r, 0).
* ``j_down[r, c]`` couples (r, c) with (r+1, c); same rule for the last row.

A wall is nothing but removed bonds (J = 0). Regions are boolean [H, W] masks; the
magnetization of a region is ``M_R(s) = sum_{i in R} s_i``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

__all__ = ["Lattice", "Rect", "walled_lattice", "open_lattice", "periodic_lattice", "LatticeError"]


class LatticeError(ValueError):
    """Bad lattice geometry or bad region (the message names the problem)."""


@dataclass(frozen=True)
class Rect:
    """Half-open rectangle of sites: rows ``r0 .. r1-1``, columns ``c0 .. c1-1``."""

    r0: int
    r1: int
    c0: int
    c1: int

    @classmethod
    def parse(cls, text: str) -> "Rect":
        """Parse ``"R0:R1,C0:C1"`` (half-open ranges), e.g. ``"0:4,2:6"``."""
        try:
            rows, cols = text.split(",")
            r0, r1 = (int(x) for x in rows.split(":"))
            c0, c1 = (int(x) for x in cols.split(":"))
        except ValueError:
            raise LatticeError(
                f"probe {text!r} is not of the form R0:R1,C0:C1 (half-open row and column ranges, e.g. 0:4,2:6)"
            ) from None
        return cls(r0, r1, c0, c1)

    def __str__(self) -> str:
        return f"{self.r0}:{self.r1},{self.c0}:{self.c1}"

    def mask(self, height: int, width: int) -> np.ndarray:
        """Boolean [height, width] mask; raises if the rectangle is empty or leaves the lattice."""
        if self.r1 <= self.r0 or self.c1 <= self.c0:
            raise LatticeError(f"probe rectangle {self} is empty (need R0 < R1 and C0 < C1)")
        if self.r0 < 0 or self.c0 < 0 or self.r1 > height or self.c1 > width:
            raise LatticeError(
                f"probe rectangle {self} lies outside the {height}x{width} lattice "
                f"(rows must be within 0:{height}, columns within 0:{width})"
            )
        m = np.zeros((height, width), dtype=bool)
        m[self.r0 : self.r1, self.c0 : self.c1] = True
        return m


@dataclass(frozen=True, eq=False)
class Lattice:
    """An Ising lattice: couplings, site fields, boundary condition and named regions.

    Attributes:
        j_right: [H, W] float couplings to the right neighbour (see module docstring).
        j_down:  [H, W] float couplings to the neighbour below.
        field:   [H, W] site fields h_i (default 0).
        periodic: whether the last row/column wraps around.
        regions: name -> boolean [H, W] mask (chambers, probes...).
    """

    j_right: np.ndarray
    j_down: np.ndarray
    field: np.ndarray
    periodic: bool = False
    regions: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        shape = np.shape(self.j_right)
        if len(shape) != 2 or shape[0] < 1 or shape[1] < 1:
            raise LatticeError(f"j_right must be a non-empty 2-D [H, W] array, got shape {shape}")
        for name in ("j_down", "field"):
            if np.shape(getattr(self, name)) != shape:
                raise LatticeError(f"{name} has shape {np.shape(getattr(self, name))}, expected {shape} like j_right")
        for name in ("j_right", "j_down", "field"):
            if not np.all(np.isfinite(getattr(self, name))):
                raise LatticeError(f"{name} contains NaN or Inf")
        if not self.periodic:
            if np.any(self.j_right[:, -1] != 0) or np.any(self.j_down[-1, :] != 0):
                raise LatticeError("open lattice must have zero couplings in the last column of j_right and last row of j_down")
        for rname, m in self.regions.items():
            if np.shape(m) != shape:
                raise LatticeError(f"region {rname!r} mask has shape {np.shape(m)}, expected {shape}")
            if not np.any(m):
                raise LatticeError(f"region {rname!r} is empty")

    @property
    def height(self) -> int:
        return int(self.j_right.shape[0])

    @property
    def width(self) -> int:
        return int(self.j_right.shape[1])

    @property
    def n_sites(self) -> int:
        return self.height * self.width

    @property
    def has_field(self) -> bool:
        return bool(np.any(self.field != 0))

    def with_regions(self, **regions: np.ndarray) -> "Lattice":
        """A copy with extra named regions (boolean masks)."""
        return replace(self, regions={**self.regions, **{k: np.asarray(v, dtype=bool) for k, v in regions.items()}})

    def with_field(self, field: np.ndarray | float) -> "Lattice":
        """A copy with site fields replaced (scalar broadcast to every site)."""
        return replace(self, field=np.broadcast_to(np.asarray(field, dtype=np.float64), self.j_right.shape).copy())

    def with_region_field(self, region: np.ndarray, h: float) -> "Lattice":
        """A copy with ``h`` added to the site field on ``region``: ``H_h = H - h * M_region``."""
        return replace(self, field=self.field + h * np.asarray(region, dtype=np.float64))

    def rect(self, rect: Rect | str) -> np.ndarray:
        """Mask of a half-open rectangle (``Rect`` or ``"R0:R1,C0:C1"``), validated against this lattice."""
        if isinstance(rect, str):
            rect = Rect.parse(rect)
        return rect.mask(self.height, self.width)

    def energy(self, spins: np.ndarray) -> np.ndarray:
        """H(s) for spins of shape [..., H, W] (reference implementation, NumPy)."""
        s = np.asarray(spins, dtype=np.float64)
        right = np.roll(s, -1, axis=-1)
        down = np.roll(s, -1, axis=-2)
        bonds = (self.j_right * s * right).sum(axis=(-1, -2)) + (self.j_down * s * down).sum(axis=(-1, -2))
        return -bonds - (self.field * s).sum(axis=(-1, -2))

    def magnetization(self, spins: np.ndarray, region: str | np.ndarray) -> np.ndarray:
        """M_R(s) = sum of spins in the region, for spins [..., H, W]."""
        m = self.regions[region] if isinstance(region, str) else np.asarray(region, dtype=bool)
        return (np.asarray(spins) * m).sum(axis=(-1, -2))


def open_lattice(height: int, width: int, coupling: float = 1.0) -> Lattice:
    """Uniform ferromagnet with open (free) boundaries: hard outer walls."""
    _check_size(height, width)
    jr = np.full((height, width), float(coupling))
    jd = np.full((height, width), float(coupling))
    jr[:, -1] = 0.0
    jd[-1, :] = 0.0
    return Lattice(jr, jd, np.zeros((height, width)), periodic=False)


def periodic_lattice(height: int, width: int, coupling: float = 1.0) -> Lattice:
    """Uniform ferromagnet on a torus (needs H, W >= 3 so that every bond is distinct)."""
    _check_size(height, width)
    if height < 3 or width < 3:
        raise LatticeError(f"periodic lattice needs height and width >= 3, got {height}x{width}")
    return Lattice(
        np.full((height, width), float(coupling)),
        np.full((height, width), float(coupling)),
        np.zeros((height, width)),
        periodic=True,
    )


def walled_lattice(height: int, width: int, wall_depth: int | None = None, coupling: float = 1.0) -> Lattice:
    """The walled lattice of the design: three chambers separated by walls.

    Hard outer walls (open boundary) and an internal wall from the top that removes the
    horizontal bonds between columns W/2-1 and W/2 for rows 0 .. wall_depth-1
    (default ``wall_depth = round(2H/3)``). Regions (chambers):

    * ``left``  = rows < wall_depth, cols < W/2
    * ``right`` = rows < wall_depth, cols >= W/2
    * ``lower`` = rows >= wall_depth (the whole width)
    """
    _check_size(height, width)
    if width % 2:
        raise LatticeError(f"walled lattice needs an even width (the wall sits between columns W/2-1 and W/2), got width {width}")
    if width < 2:
        raise LatticeError("walled lattice needs width >= 2")
    if wall_depth is None:
        wall_depth = int(round(2 * height / 3))
    if not isinstance(wall_depth, (int, np.integer)):
        raise LatticeError(f"wall depth must be an integer, got {wall_depth!r}")
    if wall_depth < 1:
        raise LatticeError(f"wall depth must be >= 1, got {wall_depth}")
    if wall_depth >= height:
        raise LatticeError(
            f"wall depth {wall_depth} must be smaller than the height {height} (the lower chamber needs at least one row)"
        )
    lat = open_lattice(height, width, coupling)
    half = width // 2
    lat.j_right[:wall_depth, half - 1] = 0.0
    rows = np.arange(height)[:, None]
    cols = np.arange(width)[None, :]
    return lat.with_regions(
        left=(rows < wall_depth) & (cols < half),
        right=(rows < wall_depth) & (cols >= half),
        lower=np.broadcast_to(rows >= wall_depth, (height, width)),
    )


def _check_size(height: int, width: int) -> None:
    for name, v in (("height", height), ("width", width)):
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise LatticeError(f"lattice {name} must be a positive integer, got {v!r}")


CHAMBERS = ("left", "right", "lower")
