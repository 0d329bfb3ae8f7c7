import sys, time, warnings, contextlib, statistics
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[4] / "benchmarks"))
import torch
import bench_vs_devinterp as bench
import spectro.nn.posterior as P
from spectro.nn import LocalizedPosterior, SamplerConfig
warnings.filterwarnings("ignore")
torch.set_num_threads(1)
job = bench.Job(components=["l0h1"], draws=20, n_train=512, train_steps=25)
setup = bench.Setup(job)
new_eval = P._eval_mode
@contextlib.contextmanager
def old_eval(model):
    was = model.training; model.eval()
    try: yield
    finally: model.train(was)
prec = sys.argv[1]
cfg = SamplerConfig(method="sgld", epsilon=job.epsilon, gamma=job.gamma, nbeta=job.nbeta, chains=1, draws=2, batch_size=16, precision=prec)
post = LocalizedPosterior(setup.model, bench.token_loss, setup.train_data, cfg, None, chain_mode="loop", workers=1, init_loss=1.0)
W = post.w_star.unsqueeze(0).clone(); batch = setup.train_data[:16]
res = {"old": [], "new": []}; outs = {}
one = post._one_cast
with post.running():
    for r in range(12):
        for name in ("old", "new"):
            P._eval_mode = old_eval if name == "old" else new_eval
            post._one_cast = False if name == "old" else one
            post.loss_and_grad(W, batch, shared_batch=True)
            t = time.perf_counter()
            for _ in range(10): outs[name] = post.loss_and_grad(W, batch, shared_batch=True)
            res[name].append((time.perf_counter() - t) / 10 * 1e3)
ratios = [o / n for o, n in zip(res["old"], res["new"])]
print(prec, "old", statistics.median(res["old"]), "new", statistics.median(res["new"]), "paired ratio median", statistics.median(ratios), "min/max", min(ratios), max(ratios))
print("loss equal", bool(torch.equal(outs["old"][0], outs["new"][0])), "grad max abs diff", float((outs["old"][1]-outs["new"][1]).abs().max()))
