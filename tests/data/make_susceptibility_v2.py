"""Regenerate susceptibility_v2.npz: a small result saved by the format-/2 code of commit f301453.

    git show f301453:spectro/engine/susceptibility.py > /tmp/sus_v2.py
    .venv/bin/python tests/data/make_susceptibility_v2.py /tmp/sus_v2.py

tests/test_coords.py rebuilds the same accumulator (``accumulator()``) to check that the file loads
and that today's estimate still gives the stored numbers.
"""

import importlib.util
import sys
from pathlib import Path

import torch

import spectro.engine  # noqa: F401  (parent package of the old module's relative imports)
from spectro.engine.moments import MomentAccumulator

OBSERVABLES = ["phi_C", "0:2,0:2"]
FIELDS = ["tok:D[0,1]", "tok:D[0,2]", "dL:D"]
META = {"component": "l0h0", "estimator": "-Cov(phi, psi)"}


def accumulator() -> MomentAccumulator:
    g = torch.Generator().manual_seed(7)
    C, m, k, T = 2, 2, 3, 16
    acc = MomentAccumulator(C, m, k, T)
    for _ in range(T):
        phi = torch.randn(C, m, generator=g, dtype=torch.float64)
        psi = phi[:, :1] * 0.5 + torch.randn(C, k, generator=g, dtype=torch.float64)
        acc.update(phi, psi)
    return acc


if __name__ == "__main__":
    spec = importlib.util.spec_from_file_location("spectro.engine._sus_v2", sys.argv[1])
    old = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = old
    spec.loader.exec_module(old)
    assert old.FORMAT == "spectro.susceptibility/2", old.FORMAT
    res = old.estimate_susceptibility(accumulator(), -1.0, OBSERVABLES, FIELDS, meta=dict(META))
    res.meta["versions"] = {"spectro": "0.1.0 (f301453)"}
    res.save(Path(__file__).with_name("susceptibility_v2.npz"))
