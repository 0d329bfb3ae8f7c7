"""The one chain-seeding function of every system (docs/design.md §3, "Seeds").

Chain ``c`` of a run seeded ``seed`` draws its random numbers from streams keyed by
``chain_seed(seed, c, stream)`` alone: never from the number of chains, processes or threads, so
any block of chains can run anywhere (torchrun splits, resumed runs) and reproduce those chains
bit for bit. ``stream`` separates a chain's independent uses (the Ising lattice's sweeps, the
posterior's Langevin noise, its minibatch order). The key comes from NumPy's ``SeedSequence``
(well-mixed, documented entropy pooling) rather than a hand-written hash.
"""

from __future__ import annotations

import numpy as np

__all__ = ["chain_seed", "run_seed"]


def chain_seed(seed: int, chain: int, stream: int = 0) -> int:
    """A 63-bit seed for (base seed, global chain index, stream) via NumPy's ``SeedSequence``.

    Fits ``torch.Generator.manual_seed`` and a 64-bit counter-based generator key alike.
    """
    state = np.random.SeedSequence([int(seed), int(chain), int(stream)]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


def run_seed(seed: int, run: str) -> int:
    """The base seed of a named run (a weight component): independent streams for every run.

    Baker's estimator combines a component run with the full run; giving each run its own seed
    keeps their Monte Carlo errors independent, which its standard error assumes
    (:func:`spectro.engine.component_susceptibility_estimate`). The full run keeps ``seed``.
    """
    words = np.frombuffer(run.encode("utf-8"), dtype=np.uint8).astype(np.uint32).tolist()
    state = np.random.SeedSequence([int(seed), 0x5EED, *words]).generate_state(1, dtype=np.uint32)
    return int(state[0])
