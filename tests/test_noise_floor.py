"""Noise floors from the real Monte Carlo noise: correlated noise has a high PC1 the
independent-noise floor cannot see."""

import numpy as np

from spectro.analysis.principal_components import noise_floor, replicate_noise_floor


def test_replicate_floor_sees_noise_shared_across_components():
    rng = np.random.default_rng(0)
    T, K = 400, 6
    shared = rng.normal(size=(T, 1)) * np.ones((1, K))  # e.g. the full run's error entering every head
    noise = shared + 0.2 * rng.normal(size=(T, K))
    se = np.full((T, K), noise.std())
    indep = noise_floor(se, n=100, seed=1)["pc1"]["median"]
    real = replicate_noise_floor(noise, n=100, seed=1)["pc1"]["median"]
    # independent columns: PC1 ≈ 1/K + O(sqrt(K/T)); shared noise: ≈ 1/(1 + 0.04) ≈ 0.96
    assert indep < 1 / K + 3 * np.sqrt(K / T) / K + 0.05
    assert real > 0.9
