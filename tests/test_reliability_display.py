"""Unreliable entries are shown, not hidden: plots cross them out and say why."""

import numpy as np

from spectro.analysis.ising_maps import plot_chi_maps
from spectro.engine import Flags, Susceptibility
from spectro.ising import walled_lattice
from spectro.ising.susceptibility import probe_grid


def _result(lat, flags):
    probes = list(probe_grid(lat, 3))
    m, k = 3, len(probes)
    ones = np.ones((m, k))
    return Susceptibility(chi=ones, stderr=0.1 * ones, stderr_chains=0.1 * ones, ess=100 * ones, rhat=ones,
                          observable_mean=np.zeros(m), observable_stderr=np.zeros(m), field_mean=np.zeros(k),
                          field_stderr=np.zeros(k), observables=["left", "right", "lower"], fields=probes, scale=1.0,
                          n_chains=4, n_draws=100, flags=flags)


def test_map_title_names_the_flagged_probes(tmp_path, monkeypatch):
    import matplotlib.figure

    lat = walled_lattice(12, 12)
    flags = np.zeros((3, 16), dtype=np.int64)
    flags[1, [2, 5]] = int(Flags.UNMIXED)
    titles = []
    monkeypatch.setattr(matplotlib.figure.Figure, "suptitle", lambda self, t, **kw: titles.append(t))
    plot_chi_maps(_result(lat, flags), lat, tmp_path / "m.png")
    assert "2 of 16 probes crossed out" in titles[0] and "R-hat > 1.1" in titles[0]
    titles.clear()
    plot_chi_maps(_result(lat, np.zeros((3, 16), dtype=np.int64)), lat, tmp_path / "ok.png")
    assert "crossed out" not in titles[0]
    assert (tmp_path / "m.png").stat().st_size > 0
