"""Per-kernel CPU times over one [16, 64, 512] tensor (GPT-2 MLP activation of the bench job), 1 thread."""
import time

import torch
import torch.nn.functional as F

torch.set_num_threads(1)


def bench(f, x, n=50):
    for _ in range(3):
        f(x)
    t = time.perf_counter()
    for _ in range(n):
        f(x)
    return (time.perf_counter() - t) / n * 1e6


for dt in (torch.float32, torch.bfloat16):
    x = torch.randn(16, 64, 512, dtype=dt)
    print(dt, "gelu tanh", round(bench(lambda x: F.gelu(x, approximate="tanh"), x)), "us;", "gelu erf", round(bench(F.gelu, x)),
          "us;", "tanh", round(bench(torch.tanh, x)), "us;", "mul", round(bench(lambda x: x * x, x)), "us")
    print(dt, "sigmoid", round(bench(torch.sigmoid, x)), "exp", round(bench(torch.exp, x)), "erf", round(bench(torch.erf, x)))
