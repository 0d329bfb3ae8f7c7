"""The one chain-seeding function shared by every system (spectro.engine.seeding)."""

from spectro.engine.seeding import chain_seed, run_seed


def test_chain_seeds_distinct_over_seed_chain_and_stream():
    keys = {chain_seed(seed, c, s) for seed in range(20) for c in range(100) for s in range(3)}
    assert len(keys) == 20 * 100 * 3
    assert all(0 <= k < 2**63 for k in keys)  # fits torch.Generator.manual_seed and a 64-bit key


def test_golden_values():
    # changing the seeding scheme silently would break reproducibility of every recorded run
    assert chain_seed(0, 0) == 0x587A3C5FDB2CD7E7
    assert chain_seed(12345, 7) == 0x0AD8FC1EB4A04719
    assert chain_seed(0, 0, 1) == 0x722DBFE178082392
    assert run_seed(0, "l0h0") == 641753500


def test_run_seeds_differ_by_name():
    assert len({run_seed(3, name) for name in ("full", "l0h0", "l0h1", "l1h0")}) == 4
