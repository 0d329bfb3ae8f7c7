"""torch.compile of the model's forward + backward (not only the update): what it would buy.

One chain, the bench_vs_devinterp model (``--quick`` size), full restriction, 16 sequences, one
thread: median time of an eager and of a compiled forward+backward, the first compiled call
(compile time: on a cold cache when CACHE_DIR is new, warm when a previous run filled it), and the
relative difference of the two gradients. Run it twice with the same cache folder:

    D=$(mktemp -d); PREC=bf16 python benchmarks/compile_model.py $D; PREC=bf16 python benchmarks/compile_model.py $D
"""
import os, sys, time, tempfile, warnings, statistics
os.environ["TORCHINDUCTOR_CACHE_DIR"] = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp()
import torch
sys.path.insert(0, "benchmarks")
warnings.filterwarnings("ignore")
import bench_vs_devinterp as B
from spectro.nn import LocalizedPosterior, SamplerConfig
torch.set_num_threads(1)
job = B.Job(components=["l0h1", "l1h0"], draws=20, n_train=512, train_steps=25)
setup = B.Setup(job)
prec = os.environ.get("PREC", "bf16")
cfg = SamplerConfig(chains=1, draws=2, batch_size=16, precision=prec)
post = LocalizedPosterior(setup.model, B.token_loss, setup.train_data, cfg, None, chain_mode="loop", workers=1, init_loss=1.0)
batch = setup.train_data[:16]
w = post.w_star.clone()
def f(flat, b):
    return post._call(flat, b).mean()
def step(fn):
    x = w.clone().requires_grad_(True)
    loss = fn(x, batch); loss.backward(); return x.grad
with post.running():
    for _ in range(3): step(f)
    t = []
    for _ in range(15):
        t0 = time.perf_counter(); step(f); t.append(time.perf_counter() - t0)
    eager = statistics.median(t)
    cf = torch.compile(f, dynamic=False)
    t0 = time.perf_counter(); step(cf); first = time.perf_counter() - t0
    for _ in range(3): step(cf)
    t = []
    for _ in range(15):
        t0 = time.perf_counter(); step(cf); t.append(time.perf_counter() - t0)
    comp = statistics.median(t)
    g1, g2 = step(f), step(cf)
    rel = float((g1 - g2).norm() / g1.norm())
print(f"{prec}: eager {eager*1e3:.1f} ms, compiled {comp*1e3:.1f} ms ({eager/comp:.2f}x), first compiled call {first:.1f} s, grad rel diff {rel:.1e}")
