import sys, time, warnings, copy
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[4] / "benchmarks"))
import torch
import bench_vs_devinterp as bench
from spectro.nn import LocalizedPosterior, SamplerConfig
from transformers.activations import GELUTanh
warnings.filterwarnings("ignore")
torch.set_num_threads(1)
job = bench.Job(components=["l0h1"], draws=20, n_train=512, train_steps=25)
setup = bench.Setup(job)

def variant(gelu, sdpa):
    m = copy.deepcopy(setup.model)
    if gelu:
        for blk in m.transformer.h:
            blk.mlp.act = GELUTanh()
    m.config._attn_implementation = "sdpa" if sdpa else "eager"
    return m

def timeit(model, precision, n=20):
    cfg = SamplerConfig(method="sgld", epsilon=job.epsilon, gamma=job.gamma, nbeta=job.nbeta, chains=1, draws=2,
                        batch_size=job.batch_size, precision=precision)
    post = LocalizedPosterior(model, bench.token_loss, setup.train_data, cfg, None, chain_mode="loop", workers=1, init_loss=1.0)
    W, batch = post.w_star.unsqueeze(0).clone(), setup.train_data[: job.batch_size]
    with post.running():
        for _ in range(3):
            post.loss_and_grad(W, batch, shared_batch=True)
        best = []
        for rep in range(3):
            t = time.perf_counter()
            for _ in range(n):
                l, g = post.loss_and_grad(W, batch, shared_batch=True)
            best.append((time.perf_counter() - t) / n)
    return min(best) * 1e3, l, g

for prec in ("fp32", "bf16"):
    ref = None
    for gelu, sdpa in [(False, False), (True, False), (False, True), (True, True)]:
        ms, l, g = timeit(variant(gelu, sdpa), prec)
        if ref is None: ref = (ms, l, g)
        rel = float((g - ref[2]).norm() / ref[2].norm())
        print(f"{prec} gelu_fused={gelu} sdpa={sdpa}: {ms:.1f} ms  speedup {ref[0]/ms:.2f}  loss diff {float(l-ref[1]):.2e} grad rel diff {rel:.2e}", flush=True)
