"""Tests of the batched Ising samplers against exact oracles.

Oracles (all computed here, independently of the sampler code paths they check):

* Boltzmann distributions by brute-force enumeration with ``Lattice.energy``.
* The exact one-sweep checkerboard matrix ``checkerboard_transition_matrix`` is checked for
  ``p T = p`` to 1e-12; an exact Swendsen–Wang matrix is built in this file by enumerating
  bond subsets and cluster flips.
* The real samplers are tied to those matrices by running one sweep from a fixed state on
  many independent chains and comparing the next-state histogram with the matrix row.

Statistical criterion (``assert_multinomial``): n independent draws from a distribution q.
Cells with q = 0 must be empty; every cell has |z| = |count - n q| / sqrt(n q (1 - q)) below
``z_max``; and Pearson's chi-square over cells (those with expected count < 5 pooled into one)
stays below its 1 - alpha quantile (Wilson–Hilferty approximation), alpha = 1e-4. Seeds are
fixed, so every test is deterministic; the thresholds say how unlikely a failure of a correct
sampler would have been for a random seed.
"""

from __future__ import annotations

import itertools
from statistics import NormalDist

import numpy as np
import pytest

from spectro.ising import samplers as S
from spectro.ising.lattice import Lattice, open_lattice, periodic_lattice, walled_lattice
from spectro.ising.samplers import IsingSampler, SamplerConfig, checkerboard_transition_matrix

torch = pytest.importorskip("torch")

ALPHA = 1e-4


@pytest.fixture(autouse=True)
def _torch_single_thread():
    """Tensors here are tiny: one torch thread is faster and immune to oversubscription."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ================================================================================================
# helpers (independent of the sampler)
# ================================================================================================


def all_states(height: int, width: int) -> np.ndarray:
    """int8 [2**N, H, W]; state k has s_i = +1 iff bit i of k is set (i = r * W + c)."""
    n = height * width
    k = np.arange(1 << n)
    return (2 * ((k[:, None] >> np.arange(n)) & 1) - 1).astype(np.int8).reshape(-1, height, width)


def state_index(spins: np.ndarray) -> np.ndarray:
    """Inverse of ``all_states`` for spins [..., H, W]."""
    flat = (np.asarray(spins) > 0).reshape(*np.shape(spins)[:-2], -1).astype(np.int64)
    return (flat << np.arange(flat.shape[-1])).sum(-1)


def boltzmann(lattice: Lattice, beta: float) -> np.ndarray:
    energy = lattice.energy(all_states(lattice.height, lattice.width))
    w = np.exp(-beta * (energy - energy.min()))
    return w / w.sum()


def chi2_critical(df: int, alpha: float = ALPHA) -> float:
    """1 - alpha quantile of chi-square(df), Wilson–Hilferty approximation."""
    z = NormalDist().inv_cdf(1.0 - alpha)
    return df * (1.0 - 2.0 / (9.0 * df) + z * np.sqrt(2.0 / (9.0 * df))) ** 3


def multinomial_stats(counts: np.ndarray, q: np.ndarray) -> tuple[float, int, float]:
    """(chi-square, degrees of freedom, max |z|) of counts against probabilities q."""
    n = counts.sum()
    expected = n * q
    pos = q > 0
    z = (counts[pos] - expected[pos]) / np.sqrt(expected[pos] * (1.0 - q[pos]) + 1e-300)
    big = expected >= 5
    obs_cells = list(counts[big])
    exp_cells = list(expected[big])
    if (~big & pos).any():
        obs_cells.append(counts[~big].sum())
        exp_cells.append(expected[~big].sum())
    obs_cells, exp_cells = np.array(obs_cells, float), np.array(exp_cells, float)
    chi2 = float(((obs_cells - exp_cells) ** 2 / exp_cells).sum())
    return chi2, max(len(obs_cells) - 1, 1), float(np.abs(z).max(initial=0.0))


def assert_multinomial(counts: np.ndarray, q: np.ndarray, z_max: float = 4.0, label: str = "") -> None:
    counts = np.asarray(counts)
    assert counts.sum() > 0
    impossible = counts[q <= 0].sum()
    assert impossible == 0, f"{label}: {impossible} draws landed on states of probability 0"
    chi2, df, zmax = multinomial_stats(counts, q)
    crit = chi2_critical(df)
    assert zmax < z_max, f"{label}: max |z| = {zmax:.2f} >= {z_max}"
    assert chi2 < crit, f"{label}: chi2 = {chi2:.1f} >= {crit:.1f} (df = {df}, alpha = {ALPHA})"


def make_lattice(jr, jd, field, periodic=False) -> Lattice:
    return Lattice(np.array(jr, float), np.array(jd, float), np.array(field, float), periodic=periodic)


def random_lattice(height: int, width: int, seed: int, ferro: bool = False, with_field: bool = True) -> Lattice:
    """Open lattice with random couplings (signed unless ferro) and optional random fields."""
    g = np.random.default_rng(seed)
    lo = 0.2 if ferro else -1.0
    jr = g.uniform(lo, 1.0, (height, width))
    jd = g.uniform(lo, 1.0, (height, width))
    jr[:, -1] = 0.0
    jd[-1, :] = 0.0
    field = g.uniform(-0.5, 0.5, (height, width)) if with_field else np.zeros((height, width))
    return make_lattice(jr, jd, field)


SMALL_LATTICES = {
    "2x2-open-uniform": open_lattice(2, 2),
    "2x2-open-field-unequal": make_lattice([[0.7, 0], [-0.4, 0]], [[1.3, 0.5], [0, 0]], [[0.3, -0.2], [0.0, 0.5]]),
    "2x2-periodic-unequal": make_lattice([[0.7, 0.2], [0.4, 1.1]], [[1.3, 0.5], [0.6, -0.3]], [[0.1, 0], [0, -0.2]], True),
    "2x3-open-random": random_lattice(2, 3, seed=5),
}

# backend variants: (backend, force exp path instead of the acceptance table)
VARIANTS = [("numba", False), ("numba", True), ("torch", False)]
VARIANT_IDS = ["numba-table", "numba-exp", "torch"]


def make_sampler(lattice, beta, sampler, backend, force_exp, monkeypatch, **cfg) -> IsingSampler:
    if force_exp:
        monkeypatch.setattr(S, "MAX_TABLE_CLASSES", 0)
    smp = IsingSampler(lattice, beta, SamplerConfig(sampler=sampler, backend=backend, **cfg))
    if backend == "numba" and sampler != "swendsen-wang":
        assert smp._impl.use_table is (not force_exp)
    return smp


def set_spins(smp: IsingSampler, spins: np.ndarray) -> None:
    d = smp.state_dict()
    d["spins"] = np.broadcast_to(spins, d["spins"].shape).astype(np.int8)
    smp.load_state_dict(d)


# ================================================================================================
# random number generators: published known answers and chain keys
# ================================================================================================


def test_xoshiro256starstar_matches_reference_vector():
    from spectro.ising._kernels import xoshiro_outputs

    # published outputs of the reference implementation from state {1, 2, 3, 4}
    expected = [11520, 0, 1509978240, 1215971899390074240, 1216172134540287360, 607988272756665600]
    assert list(xoshiro_outputs(np.array([1, 2, 3, 4], dtype=np.uint64), 6)) == expected


@pytest.mark.parametrize(
    "ctr_key, expected",
    [
        ((0,) * 6, (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
        ((0xFFFFFFFF,) * 6, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
        (
            (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344, 0xA4093822, 0x299F31D0),
            (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
        ),
    ],
)
def test_philox4x32_10_known_answers(ctr_key, expected):
    # Random123 known-answer tests for philox4x32-10
    args = [np.array([v], dtype=np.int64) for v in ctr_key]
    assert tuple(int(w[0]) for w in S.philox4x32(*args)) == expected
    targs = [torch.tensor([v], dtype=torch.int64) for v in ctr_key]
    assert tuple(int(w[0]) for w in S.philox4x32(*targs)) == expected


def test_splitmix64_finaliser_reference():
    # SplitMix64 from state 0: first outputs 0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4
    assert S._splitmix64_mix(S._GOLDEN) == 0xE220A8397B1DCDAF
    assert S._splitmix64_mix(2 * S._GOLDEN % 2**64) == 0x6E789E6AA1B965F4


# ================================================================================================
# exact kernels: stationarity
# ================================================================================================


@pytest.mark.parametrize("rule", ["metropolis", "heatbath"])
@pytest.mark.parametrize("name", list(SMALL_LATTICES))
def test_checkerboard_transition_matrix_is_stationary(name, rule):
    lat = SMALL_LATTICES[name]
    for beta in (0.0, 0.35, 1.2):
        T = checkerboard_transition_matrix(lat, beta, rule)
        p = boltzmann(lat, beta)
        assert T.min() >= 0
        np.testing.assert_allclose(T.sum(1), 1.0, atol=1e-12)
        np.testing.assert_allclose(p @ T, p, atol=1e-12, rtol=0)


def test_checkerboard_transition_matrix_is_not_trivially_stationary():
    # the oracle must be able to fail: a kernel for the wrong beta does not preserve p
    lat = SMALL_LATTICES["2x2-open-field-unequal"]
    T = checkerboard_transition_matrix(lat, 0.8, "metropolis")
    assert np.abs(boltzmann(lat, 0.7) @ T - boltzmann(lat, 0.7)).max() > 1e-3


def sw_transition_matrix(lattice: Lattice, beta: float) -> np.ndarray:
    """Exact Swendsen–Wang matrix by enumerating activated-bond subsets and cluster flips."""
    H, W = lattice.height, lattice.width
    n = H * W
    bonds = []  # (i, j, p) with duplicates kept (periodic side of length 2 has two bonds)
    for r, c in itertools.product(range(H), range(W)):
        for j, J in (((r * W + (c + 1) % W), lattice.j_right[r, c]), ((((r + 1) % H) * W + c), lattice.j_down[r, c])):
            if J > 0:
                bonds.append((r * W + c, j, 1.0 - np.exp(-2.0 * beta * J)))
    T = np.zeros((1 << n, 1 << n))
    for x in range(1 << n):
        up = [(x >> i) & 1 for i in range(n)]
        sat = [b for b in bonds if up[b[0]] == up[b[1]]]
        for active in itertools.product((0, 1), repeat=len(sat)):
            w = np.prod([p if a else 1.0 - p for a, (_, _, p) in zip(active, sat)])
            label = list(range(n))  # naive cluster labelling
            for a, (i, j, _) in zip(active, sat):
                if a:
                    li, lj = label[i], label[j]
                    label = [li if v == lj else v for v in label]
            clusters = sorted(set(label))
            masks = [sum(1 << i for i in range(n) if label[i] == cl) for cl in clusters]
            for flips in itertools.product((0, 1), repeat=len(masks)):
                y = x
                for f, m in zip(flips, masks):
                    if f:
                        y ^= m
                T[x, y] += w / 2 ** len(masks)
    return T


SW_LATTICES = {
    "2x3-open-ferro": random_lattice(2, 3, seed=11, ferro=True, with_field=False),
    "2x2-periodic-ferro": make_lattice([[0.7, 0.2], [0.4, 1.1]], [[1.3, 0.5], [0.6, 0.0]], np.zeros((2, 2)), True),
}


@pytest.mark.parametrize("name", list(SW_LATTICES))
def test_swendsen_wang_exact_kernel_is_stationary(name):
    lat = SW_LATTICES[name]
    for beta in (0.3, 0.9):
        T = sw_transition_matrix(lat, beta)
        p = boltzmann(lat, beta)
        np.testing.assert_allclose(T.sum(1), 1.0, atol=1e-12)
        np.testing.assert_allclose(p @ T, p, atol=1e-12, rtol=0)


# ================================================================================================
# the real samplers against the exact matrices: one sweep from a fixed state
# ================================================================================================

N_ROW = 20_000


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("rule", ["metropolis", "heatbath"])
@pytest.mark.parametrize("name", list(SMALL_LATTICES))
def test_one_sweep_matches_exact_transition_row(name, rule, variant, monkeypatch):
    backend, force_exp = variant
    lat = SMALL_LATTICES[name]
    beta = 0.6
    T = checkerboard_transition_matrix(lat, beta, rule)
    states = all_states(lat.height, lat.width)
    for x0 in (0b0110, (1 << lat.n_sites) - 2):
        smp = make_sampler(lat, beta, rule, backend, force_exp, monkeypatch, chains=N_ROW, seed=17 + x0)
        set_spins(smp, states[x0])
        smp.sweep(1)
        counts = np.bincount(state_index(smp.spins), minlength=len(states))
        assert_multinomial(counts, T[x0], label=f"{name} {rule} {backend} from state {x0}")


@pytest.mark.parametrize("name", list(SW_LATTICES))
def test_swendsen_wang_one_update_matches_exact_row(name):
    lat = SW_LATTICES[name]
    beta = 0.5
    T = sw_transition_matrix(lat, beta)
    states = all_states(lat.height, lat.width)
    for x0 in (0, 0b0101):
        smp = IsingSampler(lat, beta, SamplerConfig(sampler="swendsen-wang", chains=N_ROW, seed=3 + x0))
        set_spins(smp, states[x0])
        smp.sweep(1)
        counts = np.bincount(state_index(smp.spins), minlength=len(states))
        assert_multinomial(counts, T[x0], label=f"SW {name} from state {x0}")


@pytest.mark.parametrize("name", list(SW_LATTICES))
def test_swendsen_wang_preserves_boltzmann_empirically(name):
    # start N chains from exact Boltzmann draws; after one update they must still be Boltzmann
    lat = SW_LATTICES[name]
    beta = 0.7
    p = boltzmann(lat, beta)
    states = all_states(lat.height, lat.width)
    start = np.random.default_rng(0).choice(len(p), size=N_ROW, p=p)
    smp = IsingSampler(lat, beta, SamplerConfig(sampler="swendsen-wang", chains=N_ROW, seed=9))
    set_spins(smp, states[start])
    smp.sweep(1)
    counts = np.bincount(state_index(smp.spins), minlength=len(p))
    assert_multinomial(counts, p, label=f"SW stationarity {name}")


# ================================================================================================
# long-run distributions on 3x3 lattices (one draw per independent chain after burn-in)
# ================================================================================================

# Burn-in: for these lattices the second-largest eigenvalue modulus of the exact one-sweep
# matrix is below 0.6 (metropolis/heat bath, beta = 0.5), so after 60 sweeps the distance to
# Boltzmann is < 0.6**60 ~ 5e-14 per unit of initial distance: invisible at this sample size.
BURN_IN = 60
N_DIST = 20_000
LAT_3x3 = random_lattice(3, 3, seed=2024)
LAT_3x3_FERRO = random_lattice(3, 3, seed=7, ferro=True, with_field=False)


def test_burn_in_is_long_enough():
    for rule in ("metropolis", "heatbath"):
        T = checkerboard_transition_matrix(LAT_3x3, 0.5, rule)
        slem = np.sort(np.abs(np.linalg.eigvals(T)))[-2]
        assert slem ** BURN_IN < 1e-10, (rule, slem)


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("rule", ["metropolis", "heatbath"])
def test_long_run_matches_boltzmann_3x3(rule, variant, monkeypatch):
    backend, force_exp = variant
    beta = 0.5
    smp = make_sampler(LAT_3x3, beta, rule, backend, force_exp, monkeypatch, chains=N_DIST, seed=123)
    smp.sweep(BURN_IN)
    counts = np.bincount(state_index(smp.spins), minlength=512)
    assert_multinomial(counts, boltzmann(LAT_3x3, beta), z_max=4.75, label=f"3x3 {rule} {backend}")


@pytest.mark.parametrize(
    "lattice",
    [LAT_3x3_FERRO, Lattice(np.full((3, 3), 0.6), np.full((3, 3), 0.45), np.zeros((3, 3)), periodic=True)],
    ids=["3x3-open-random-ferro", "3x3-periodic"],
)
def test_swendsen_wang_long_run_matches_boltzmann(lattice):
    beta = 0.8
    # random starts (this test's 30 sweeps were sized for them; the default all-up/all-down starts
    # begin farther from Boltzmann)
    smp = IsingSampler(lattice, beta, SamplerConfig(sampler="swendsen-wang", chains=N_DIST, seed=5, init="random"))
    smp.sweep(30)
    counts = np.bincount(state_index(smp.spins), minlength=512)
    assert_multinomial(counts, boltzmann(lattice, beta), z_max=4.75, label="SW 3x3")


def test_distribution_check_has_power():
    # the same criterion rejects the sampler's output against Boltzmann at a 10% different beta
    beta = 0.5
    smp = IsingSampler(LAT_3x3, beta, SamplerConfig(chains=N_DIST, seed=123))
    smp.sweep(BURN_IN)
    counts = np.bincount(state_index(smp.spins), minlength=512)
    chi2, df, _ = multinomial_stats(counts, boltzmann(LAT_3x3, 1.1 * beta))
    assert chi2 > chi2_critical(df)


@pytest.mark.parametrize("sampler", ["metropolis", "swendsen-wang"])
def test_periodic_4x4_energy_matches_kaufman(sampler):
    # docs/design.md §5: periodic 4x4 at beta = 0.4 has energy -1.37911648226 per spin
    lat = periodic_lattice(4, 4)
    smp = IsingSampler(lat, 0.4, SamplerConfig(sampler=sampler, chains=N_DIST, seed=1))
    smp.sweep(200)
    e = lat.energy(smp.spins) / 16
    z = (e.mean() - (-1.37911648226)) / (e.std(ddof=1) / np.sqrt(len(e)))
    assert abs(z) < 4, z


def test_periodic_4x4_energy_torch():
    lat = periodic_lattice(4, 4)
    smp = IsingSampler(lat, 0.4, SamplerConfig(backend="torch", chains=8000, seed=1))
    smp.sweep(60)
    e = lat.energy(smp.spins) / 16
    z = (e.mean() - (-1.37911648226)) / (e.std(ddof=1) / np.sqrt(len(e)))
    assert abs(z) < 4, z


# ================================================================================================
# region magnetizations
# ================================================================================================


def test_region_boxes_reconstruct_masks():
    g = np.random.default_rng(0)
    H, W = 7, 9
    masks = [np.zeros((H, W)) for _ in range(5)]
    masks[0][1:4, 2:7] = 1.0  # rectangle
    masks[1][:] = g.integers(0, 2, (H, W))  # arbitrary boolean
    masks[2][:] = g.choice([0.0, 0.5, -2.0], (H, W))  # piecewise-constant weights
    masks[3][:] = g.normal(size=(H, W))  # dense weights
    masks[4][2:5, 0:3] = 3.0  # a rectangle plus an L shape of another weight
    masks[4][5:7, 0:8] = 3.0
    masks = np.stack(masks)
    region, rc, w = S._region_boxes(masks)
    rebuilt = np.zeros_like(masks)
    for k, (r0, r1, c0, c1), wk in zip(region, rc, w):
        assert np.all(rebuilt[k, r0:r1, c0:c1] == 0), "boxes overlap"
        rebuilt[k, r0:r1, c0:c1] = wk
    np.testing.assert_array_equal(rebuilt, masks)
    assert np.sum(region == 0) == 1  # a rectangle is a single box


@pytest.mark.parametrize("backend", ["numba", "torch"])
@pytest.mark.parametrize("sampler", ["metropolis", "heatbath", "swendsen-wang"])
def test_sample_regions_equals_sweeps_then_magnetization(backend, sampler):
    if backend == "torch" and sampler == "swendsen-wang":
        pytest.skip("swendsen-wang is numba-only")
    lat = walled_lattice(12, 10)
    g = np.random.default_rng(1)
    masks = np.stack(
        [lat.regions[k].astype(float) for k in ("left", "right", "lower")]
        + [lat.rect("2:7,3:9").astype(float), g.integers(0, 2, (12, 10)).astype(float), g.normal(size=(12, 10))]
    )
    cfg = SamplerConfig(sampler=sampler, backend=backend, chains=5, seed=4)
    a = IsingSampler(lat, 0.45, cfg)
    b = IsingSampler(lat, 0.45, cfg)
    M = a.sample_regions(masks, n_draws=4, thin=3)
    assert M.shape == (4, 5, 6) and M.dtype == np.float64
    for d in range(4):
        b.sweep(3)
        expected = np.einsum("chw,rhw->cr", b.spins.astype(float), masks)
        np.testing.assert_allclose(M[d], expected, rtol=1e-12, atol=1e-9)
    np.testing.assert_array_equal(a.spins, b.spins)
    # boolean masks give the same numbers as their float version
    c = IsingSampler(lat, 0.45, cfg)
    np.testing.assert_array_equal(c.sample_regions(masks[:5] > 0, n_draws=4, thin=3), M[..., :5])


# ================================================================================================
# determinism, chain independence, resume
# ================================================================================================

ALL_COMBOS = [
    ("numba", "metropolis"),
    ("numba", "heatbath"),
    ("numba", "swendsen-wang"),
    ("torch", "metropolis"),
    ("torch", "heatbath"),
]


@pytest.mark.parametrize("backend, sampler", ALL_COMBOS)
def test_same_seed_bit_identical(backend, sampler):
    lat = walled_lattice(10, 8)
    masks = np.stack([lat.regions[k] for k in ("left", "right", "lower")])
    runs = []
    for _ in range(2):
        smp = IsingSampler(lat, 0.4, SamplerConfig(sampler=sampler, backend=backend, chains=4, seed=99))
        smp.sweep(7)
        runs.append((smp.spins, smp.sample_regions(masks, 5, 2)))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    other = IsingSampler(lat, 0.4, SamplerConfig(sampler=sampler, backend=backend, chains=4, seed=100))
    other.sweep(7)
    assert not np.array_equal(other.spins, runs[0][0])


@pytest.mark.parametrize("backend, sampler", ALL_COMBOS)
@pytest.mark.parametrize("init", ["random", "up"])
def test_chain_trajectory_independent_of_number_of_chains(backend, sampler, init):
    lat = walled_lattice(9, 6) if sampler == "swendsen-wang" else open_lattice(9, 7)
    masks = np.ones((1, lat.height, lat.width), dtype=bool)
    out = {}
    for chains in (2, 5):
        smp = IsingSampler(lat, 0.5, SamplerConfig(sampler=sampler, backend=backend, chains=chains, seed=3, init=init))
        smp.sweep(4)
        out[chains] = (smp.spins, smp.sample_regions(masks, 3, 2))
    np.testing.assert_array_equal(out[2][0], out[5][0][:2])
    np.testing.assert_array_equal(out[2][1], out[5][1][:, :2])
    assert not np.array_equal(out[5][0][0], out[5][0][1])  # chains differ from each other


@pytest.mark.parametrize("backend, sampler", ALL_COMBOS)
def test_state_dict_resume_is_bit_identical(backend, sampler):
    lat = walled_lattice(8, 8)
    masks = np.stack([lat.regions[k] for k in ("left", "right", "lower")])
    cfg = SamplerConfig(sampler=sampler, backend=backend, chains=3, seed=21)
    full = IsingSampler(lat, 0.44, cfg)
    full.sweep(10)
    expected = full.sample_regions(masks, 6, 1)

    first = IsingSampler(lat, 0.44, cfg)
    first.sweep(10)
    state = first.state_dict()
    first.sweep(50)  # must not affect the saved copy
    resumed = IsingSampler(lat, 0.44, SamplerConfig(sampler=sampler, backend=backend, chains=3, seed=777))
    resumed.load_state_dict(state)
    np.testing.assert_array_equal(resumed.sample_regions(masks, 6, 1), expected)
    np.testing.assert_array_equal(resumed.spins, full.spins)
    assert resumed.sweeps_done == full.sweeps_done == 16


def test_init_up_and_spins_copy():
    lat = open_lattice(4, 5)
    smp = IsingSampler(lat, 0.3, SamplerConfig(init="up", chains=2))
    s = smp.spins
    assert s.dtype == np.int8 and s.shape == (2, 4, 5) and np.all(s == 1)
    s[...] = -1
    assert np.all(smp.spins == 1)


def test_beta_zero_limits():
    # beta = 0: Metropolis accepts every flip (each sweep flips every spin); heat bath draws fair coins
    lat = walled_lattice(6, 6)
    smp = IsingSampler(lat, 0.0, SamplerConfig(sampler="metropolis", chains=3, init="up"))
    smp.sweep(3)
    assert np.all(smp.spins == -1)
    smp = IsingSampler(lat, 0.0, SamplerConfig(sampler="heatbath", chains=400, seed=2, init="up"))
    smp.sweep(1)
    assert abs(smp.spins.astype(float).mean()) < 4 * np.sqrt(1 / smp.spins.size)


# ================================================================================================
# input validation
# ================================================================================================


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(sampler="gibbs"), "unknown sampler"),
        (dict(backend="jax"), "unknown backend"),
        (dict(init="down"), "unknown init"),
        (dict(chains=0), "chains must be"),
        (dict(chains=2.5), "chains must be"),
        (dict(seed=-1), "seed must be"),
        (dict(seed=2**64), "seed must be"),
    ],
)
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SamplerConfig(**kwargs)


@pytest.mark.parametrize("beta", [-0.1, float("nan"), float("inf"), "hot"])
def test_bad_beta(beta):
    with pytest.raises(ValueError, match="beta"):
        IsingSampler(open_lattice(4, 4), beta, SamplerConfig())


@pytest.mark.parametrize("sampler", ["metropolis", "heatbath"])
def test_periodic_odd_rejected_for_checkerboard(sampler):
    with pytest.raises(ValueError, match="periodic lattice with odd height/width cannot use the checkerboard"):
        IsingSampler(periodic_lattice(5, 4), 0.4, SamplerConfig(sampler=sampler))
    with pytest.raises(ValueError, match="odd height/width"):
        IsingSampler(periodic_lattice(4, 3), 0.4, SamplerConfig(sampler=sampler, backend="torch"))
    IsingSampler(open_lattice(5, 3), 0.4, SamplerConfig(sampler=sampler))  # open: any size
    IsingSampler(periodic_lattice(5, 3), 0.4, SamplerConfig(sampler="swendsen-wang"))  # SW: any size


def test_swendsen_wang_preconditions():
    lat = open_lattice(4, 4)
    with pytest.raises(ValueError, match="zero site fields"):
        IsingSampler(lat.with_field(0.1), 0.4, SamplerConfig(sampler="swendsen-wang"))
    with pytest.raises(ValueError, match="J >= 0"):
        IsingSampler(open_lattice(4, 4, coupling=-1.0), 0.4, SamplerConfig(sampler="swendsen-wang"))
    with pytest.raises(ValueError, match="numba backend only"):
        IsingSampler(lat, 0.4, SamplerConfig(sampler="swendsen-wang", backend="torch"))


def test_numba_backend_rejects_gpu_device():
    with pytest.raises(ValueError, match="CPU only"):
        IsingSampler(open_lattice(4, 4), 0.4, SamplerConfig(backend="numba", device="cuda"))
    assert SamplerConfig(device="cuda").resolved_backend() == "torch"
    assert SamplerConfig(device="cpu").resolved_backend() == "numba"


def test_bad_sampling_arguments():
    lat = open_lattice(4, 4)
    smp = IsingSampler(lat, 0.4, SamplerConfig(chains=2))
    with pytest.raises(ValueError, match=r"masks must have shape \[R, 4, 4\]"):
        smp.sample_regions(np.ones((4, 4), bool), 3)
    with pytest.raises(ValueError, match="masks must have shape"):
        smp.sample_regions(np.ones((1, 4, 5), bool), 3)
    with pytest.raises(ValueError, match="NaN"):
        smp.sample_regions(np.full((1, 4, 4), np.nan), 3)
    with pytest.raises(ValueError, match="thin must be"):
        smp.sample_regions(np.ones((1, 4, 4), bool), 3, thin=0)
    with pytest.raises(ValueError, match="n_draws must be"):
        smp.sample_regions(np.ones((1, 4, 4), bool), -1)
    with pytest.raises(ValueError, match="n_sweeps must be"):
        smp.sweep(-2)
    assert smp.sample_regions(np.ones((2, 4, 4), bool), 0).shape == (0, 2, 2)
    assert smp.sample_regions(np.ones((0, 4, 4), bool), 2).shape == (2, 2, 0)


def test_bad_state_dict():
    lat = open_lattice(4, 4)
    smp = IsingSampler(lat, 0.4, SamplerConfig(chains=2))
    d = smp.state_dict()
    with pytest.raises(ValueError, match="expected"):
        smp.load_state_dict({**d, "spins": np.ones((3, 4, 4), np.int8)})
    with pytest.raises(ValueError, match="-1 or \\+1"):
        smp.load_state_dict({**d, "spins": np.zeros((2, 4, 4), np.int8)})
    with pytest.raises(ValueError, match="backend"):
        smp.load_state_dict({**d, "backend": "torch"})
    with pytest.raises(ValueError, match="rng"):
        smp.load_state_dict({**d, "rng": np.zeros((2, 3), np.uint64)})


# ================================================================================================
# slow: the walled 8x8 reference covariances of docs/design.md §5
# ================================================================================================


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["metropolis", "swendsen-wang"])
def test_walled_8x8_covariances_match_reference(sampler):
    # docs/design.md §5 reference (transfer matrix): walled 8x8, beta = 0.4, wall depth 5
    ref = {
        ("left", "left"): 116.88192696,
        ("left", "right"): 5.08641255,
        ("left", "lower"): 36.81437903,
        ("lower", "lower"): 141.25634747,
    }
    lat = walled_lattice(8, 8, wall_depth=5)
    names = ["left", "right", "lower"]
    masks = np.stack([lat.regions[k] for k in names])
    chains, n_draws = 64, 20_000
    smp = IsingSampler(lat, 0.4, SamplerConfig(sampler=sampler, chains=chains, seed=8))
    smp.sweep(500)
    M = smp.sample_regions(masks, n_draws, thin=1)  # [D, C, 3]
    # exact means are 0 (no field, spin-flip symmetry), so Cov = E[M_a M_b]; per-chain means of
    # products over a long run are independent across chains -> standard error across chains
    for (a, b), value in ref.items():
        prod = M[:, :, names.index(a)] * M[:, :, names.index(b)]
        per_chain = prod.mean(0)
        z = (per_chain.mean() - value) / (per_chain.std(ddof=1) / np.sqrt(chains))
        assert abs(z) < 4.5, (a, b, per_chain.mean(), value, z)
