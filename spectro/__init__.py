"""spectro: neural-network spectroscopy with susceptibilities (and the walled Ising model as ground truth)."""

__version__ = "0.1.0"
