"""1024² matmul rate per dtype on this CPU (torch's default threads), mean of 10 after one warm-up."""
import time

import torch

for dt in (torch.float32, torch.bfloat16, torch.float16):
    a, b = torch.randn(1024, 1024, dtype=dt), torch.randn(1024, 1024, dtype=dt)
    a @ b
    t = time.perf_counter()
    for _ in range(10):
        a @ b
    print(dt, round(2 * 1024**3 * 10 / (time.perf_counter() - t) / 1e9, 1), "GFLOP/s")
