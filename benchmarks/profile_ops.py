"""Which operators one chain's forward + backward spends its time in, fp32 vs bf16 (torch.profiler).

The bench_vs_devinterp job's model (``--quick`` size), the full restriction, one chain, one
minibatch of 16 sequences, one intra-op thread (as each of spectro's CPU worker threads runs):
10 profiled calls of ``LocalizedPosterior.loss_and_grad`` after 3 warm-up calls, operators
sorted by self CPU time. Shows how much of a step is matmul (``mm``/``addmm``/``bmm``) and how
much memory-bound elementwise work, which reduced precision does not speed up as much.

    python benchmarks/profile_ops.py
"""

from __future__ import annotations

import platform
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_vs_devinterp as bench  # noqa: E402

MATMUL = ("aten::mm", "aten::addmm", "aten::bmm")


def main() -> int:
    warnings.filterwarnings("ignore")
    from spectro.devices import cpu_isa
    from spectro.nn import LocalizedPosterior, SamplerConfig

    torch.set_num_threads(1)
    job = bench.Job(components=["l0h1", "l1h0"], draws=20, n_train=512, train_steps=25)
    setup = bench.Setup(job)
    print(f"machine: {platform.machine()}, torch {torch.__version__}, ISA {cpu_isa()}; load {bench.load_average()}")
    for precision in ("fp32", "bf16"):
        cfg = SamplerConfig(method="sgld", epsilon=job.epsilon, gamma=job.gamma, nbeta=job.nbeta, chains=1, draws=2,
                            batch_size=job.batch_size, precision=precision)
        post = LocalizedPosterior(setup.model, bench.token_loss, setup.train_data, cfg, None, chain_mode="loop",
                                  workers=1, init_loss=1.0)
        W, batch = post.w_star.unsqueeze(0).clone(), setup.train_data[: job.batch_size]
        with post.running():
            for _ in range(3):
                post.loss_and_grad(W, batch, shared_batch=True)
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                for _ in range(10):
                    post.loss_and_grad(W, batch, shared_batch=True)
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events)
        mm = sum(e.self_cpu_time_total for e in events if e.key in MATMUL)
        print(f"\n{precision}: {total / 10 / 1e3:.1f} ms per forward+backward (one chain, {job.batch_size} sequences, "
              f"1 thread); matmul {100 * mm / total:.0f} %, everything else {100 * (total - mm) / total:.0f} %")
        print(events.table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=36))
    return 0


if __name__ == "__main__":
    sys.exit(main())
