"""Ising model: walled lattices, batched samplers, exact oracles, susceptibilities."""

from .lattice import CHAMBERS, Lattice, LatticeError, Rect, open_lattice, periodic_lattice, walled_lattice

__all__ = ["CHAMBERS", "Lattice", "LatticeError", "Rect", "open_lattice", "periodic_lattice", "walled_lattice"]
