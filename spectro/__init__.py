"""spectro: neural-network spectroscopy with susceptibilities (and the walled Ising model as ground truth)."""

import os as _os

# numba's default OpenMP threading layer spin-waits; on a shared 2-core machine it ran ~3x slower
# than 'workqueue' (benchmarks/bench_ising.py). Respect an explicit user choice.
_os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")

__version__ = "0.1.0"
