"""The GPU benchmark stays runnable: its code paths, dry-run on the CPU (no GPU on CI machines)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"


def _dry_run(tmp_path, *sections: str, timeout: int = 600) -> dict:
    """Run bench_gpu.py --device cpu --quick on ``sections``; return its JSON record."""
    out = tmp_path / "gpu.json"
    p = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--sections", *sections, "--json", str(out)],
                       capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow  # 26 s of benchmark harness: keeps the default run under 10 minutes on 2 cores
def test_dry_run_on_cpu_writes_a_complete_record(tmp_path):
    out = tmp_path / "gpu.json"
    p = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--sections", "matmul", "nn_throughput",
                        "ising", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    rec = json.loads(out.read_text())
    assert rec["device"] == "cpu" and rec["matmul_gflops"]["fp32"] > 0
    rows = rec["nn_throughput"]
    assert {(r["dtype"], r["component"]) for r in rows} == {(d, c) for d in ("float32", "bfloat16") for c in ("full", "l1h0")}
    assert all(r["steps_per_s"] > 0 and 0 < r["fraction_of_matmul"] for r in rows)
    assert rec["ising"]["numba_cpu"] > 0 and rec["ising"]["torch_cpu"] > 0


@pytest.mark.slow
def test_dry_run_device_vs_cpu_section(tmp_path):
    rec = _dry_run(tmp_path, "device_vs_cpu")["device_vs_cpu"]
    assert rec["device"]["max_abs_z"] == 0.0  # the same device: the same numbers
    assert rec["device_bf16"]["agree"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_the_script_says_so():
    p = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "no CUDA device" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.slow  # ≈ 40 s: devinterp and spectro (fp32, bf16) on the quick job
def test_dry_run_vs_devinterp_section_in_each_precision(tmp_path):
    from spectro.devices import cpu_bf16_fast

    rec = _dry_run(tmp_path, "vs_devinterp")["vs_devinterp"]
    assert rec["fp32"]["agree"] and rec["ratio"] == rec["fp32"]["ratio"] > 0 and "fp16" not in rec  # fp16: CUDA only
    if cpu_bf16_fast() is False:  # bf16 matmul 1 GFLOP/s vs fp32 53 on a 2-vCPU AMD EPYC (avx2): the row says why it is absent
        assert "no bf16 matmul instructions" in rec["bf16"]["skipped"]
        return
    assert rec["bf16"]["agree"] and rec["bf16"]["spectro_s"] > 0
