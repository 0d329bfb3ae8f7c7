"""Where the time of one SGLD step goes on the bench_vs_devinterp job (spectro side only).

Builds the job of ``benchmarks/bench_vs_devinterp.py`` (``--quick`` size by default: 512
training sequences, 25 AdamW steps, 4 chains, minibatch 16, shared minibatches), and for each
restriction (full + the job's heads) and precision times, per step, with the default CPU
execution (loop mode, 2 worker threads of one intra-op thread each):

* ``step``: the whole ``LocalizedPosterior._step`` (what sampling runs);
* ``index``: drawing the minibatch (permutation when an epoch ends, index into the data);
* ``fwd+bwd``: the chains' minibatch losses and gradients (``_block_loss_and_grad``, all blocks);
* ``noise``: the chains' N(0, I) noise, one generator per chain (all blocks);
* ``update``: the elementwise SGLD update after the gradient (drift, mask, Langevin step; all blocks);
* ``probe``: one draw's probe evaluation (the job's observables: 16 + 16 sequences per chain),
  which the job runs once per draw on top of the step.

Each piece is timed on its own over ``--steps`` repetitions (median), interleaved piece by piece
so load affects all; "rest" = step − (index + fwd+bwd + noise + update) is the health check,
allocation and Python overhead. The load average is printed with every table.

    python benchmarks/profile_step.py                 # fp32 and bf16, quick job
    python benchmarks/profile_step.py --precision fp32 --steps 30

``--compare eager,fused,compiled`` instead times whole steps of one posterior per
``SamplerConfig.step`` mode, interleaved (ABCABC..., ``--rounds`` rounds of 5 steps each; the
ratio is paired within each round), and the update alone per mode; ``--method both`` does SGLD
and RMSProp-SGLD. ``--compile-cost`` adds the compile seconds of step="compiled" for the job's
posteriors in a fresh process on an empty (cold) and then on the filled (warm) inductor cache.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_vs_devinterp as bench  # noqa: E402

from spectro.nn import LocalizedPosterior, ProbeSet, Restriction, SamplerConfig  # noqa: E402
from spectro.devices import cpu_isa  # noqa: E402
from spectro.nn import kernels  # noqa: E402
from spectro.nn.posterior import _index  # noqa: E402


def _median_ms(fn, reps: int) -> float:
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(ts)


def profile(setup, job, precision: str, component: str, steps: int) -> dict[str, float]:
    cfg = SamplerConfig(method="sgld", epsilon=job.epsilon, gamma=job.gamma, nbeta=job.nbeta, chains=job.chains,
                        draws=10_000, batch_size=job.batch_size, eval_batch_size=64, precision=precision)
    restr = None if component == "full" else Restriction.from_devinterp(setup.model, component)
    post = LocalizedPosterior(setup.model, bench.token_loss, setup.train_data, cfg, restr, shared_batches=True)
    probe = ProbeSet({"train": setup.base, "probe": setup.probe})
    C, D = cfg.chains, post.dim
    out: dict[str, float] = {"D": D, "n_free": post.n_free}
    with post.running():
        state = post.start()
        for _ in range(3):  # warm-up (allocator, oneDNN, memo)
            post._step(state)
        # distinct minibatches, cycled: a repeated batch would let the frozen-module memo skip
        # the frozen prefix, which a real step cannot
        batches = [_index(post.train_data, state.perm[0, i * job.batch_size:(i + 1) * job.batch_size]) for i in range(8)]
        turn = [0]
        W = state.W.clone()
        G = torch.randn_like(W) * 1e-2
        noise = torch.empty_like(W)
        gens = state.noise_gens

        def index():
            perm = torch.stack([torch.randperm(post.n, generator=g) for g in state.data_gens])
            _index(post.train_data, perm[0, :job.batch_size])

        def index_no_perm():
            _index(post.train_data, state.perm[0, :job.batch_size])

        def fwd_bwd():
            batch = batches[turn[0] % len(batches)]
            turn[0] += 1
            post._run_blocks(lambda k, sl: post._block_loss_and_grad(k, W[sl], batch, None, True), C)

        def gen_noise():
            def work(k, sl):
                for c in range(sl.start, sl.stop):
                    noise[c].normal_(generator=gens[c])
            post._run_blocks(work, C)

        def update():
            W_new = torch.empty_like(W)

            def work(k, sl):  # the registered method's kernel on this block (LocalizedPosterior._update)
                ks = type(state.kernel)(*(x[sl] if isinstance(x, torch.Tensor) else x for x in state.kernel))
                W_new[sl] = post._update(ks, G[sl], noise[sl]).w
            post._run_blocks(work, C)

        def step():
            post._step(state)

        def probe_eval():
            probe.evaluate(post, state.W)

        pieces = {"step": step, "index": index_no_perm, "perm": index, "fwd+bwd": fwd_bwd, "noise": gen_noise,
                  "update": update, "probe": probe_eval}
        times: dict[str, list[float]] = {k: [] for k in pieces}
        rounds = max(1, steps // 5)
        for _ in range(rounds):  # interleaved blocks of 5 repetitions
            for k, fn in pieces.items():
                times[k].append(_median_ms(fn, 5))
        for k, v in times.items():
            out[k] = statistics.median(v)
    # the permutation is drawn once per epoch (n / batch steps): amortise it
    out["perm"] = max(out["perm"] - out["index"], 0.0) * job.batch_size / post.n
    out["rest"] = out["step"] - out["index"] - out["perm"] - out["fwd+bwd"] - out["noise"] - out["update"]
    return out


def _update_fn(post, mode: str, W, G, v, noise):
    """The update part of ``_step`` alone (after gradient and noise), chain block by chain block
    over the posterior's workers, as ``_step`` runs it in ``mode``."""
    cfg = post.config
    W_new = torch.empty_like(W)
    v_new = torch.empty_like(v) if v is not None else None

    def work(k, sl):
        args = (W[sl], G[sl], None if v is None else v[sl], noise[sl], post.w_star, post.mask, cfg.epsilon, post.nbeta,
                cfg.gamma, cfg.rmsprop_alpha, cfg.rmsprop_delta)
        if mode == "fused":
            kernels.fused_update_(*args, W_new[sl], None if v_new is None else v_new[sl])
        elif mode == "compiled":
            W_new[sl], vk = kernels.compiled_update(*args)
            if v_new is not None:
                v_new[sl] = vk
        else:  # the eager path of LocalizedPosterior._step: the registered method's pure kernel
            new = post.method.step(post.method.init(W[sl], post.hyper)._replace(**({} if v is None else {"v": v[sl]})),
                                   G[sl], noise[sl], post.hyper)
            W_new[sl] = new.w
            if v_new is not None:
                v_new[sl] = new.v

    return lambda: post._run_blocks(work, W.shape[0])


def compare(setup, job, precision: str, component: str, method: str, modes: list[str], rounds: int, block: int = 5) -> dict:
    """ms per ``_step`` of each step mode (one posterior each, same seed), timed in interleaved
    blocks of ``block`` steps (ABCABC...), ``rounds`` blocks each: the medians, and the median
    (min–max) over rounds of the paired ratio first mode / mode. Also the update alone ("upd",
    ms per step, interleaved the same way, 20 repetitions per block)."""
    posts = {}
    for mode in modes:
        cfg = SamplerConfig(method=method, epsilon=job.epsilon, gamma=job.gamma, nbeta=job.nbeta, chains=job.chains,
                            draws=10_000, batch_size=job.batch_size, eval_batch_size=64, precision=precision, step=mode)
        restr = None if component == "full" else Restriction.from_devinterp(setup.model, component)
        posts[mode] = LocalizedPosterior(setup.model, bench.token_loss, setup.train_data, cfg, restr, shared_batches=True)
    times: dict[str, list[float]] = {m: [] for m in modes}
    upd: dict[str, list[float]] = {m: [] for m in modes}
    with contextlib.ExitStack() as stack:
        states, updates = {}, {}
        for m, post in posts.items():
            stack.enter_context(post.running())
            states[m] = post.start()
            for _ in range(3):  # warm-up (compiles for "compiled")
                post._step(states[m])
            g = torch.Generator().manual_seed(0)
            W = states[m].W.clone()
            G = 1e-2 * torch.randn(W.shape, generator=g)
            v = torch.rand(W.shape, generator=g) * 1e-4 if method == "rmsprop_sgld" else None
            updates[m] = _update_fn(post, m, W, G, v, torch.randn(W.shape, generator=g))
            updates[m]()
        for _ in range(rounds):
            for m, post in posts.items():
                t0 = time.perf_counter()
                for _ in range(block):
                    post._step(states[m])
                times[m].append(1e3 * (time.perf_counter() - t0) / block)
            for m in modes:
                upd[m].append(_median_ms(updates[m], 20))
        final = {m: states[m].W for m in modes}
    out = {m: statistics.median(t) for m, t in times.items()}
    out["ratio"] = {m: [a / b for a, b in zip(times[modes[0]], times[m])] for m in modes}
    out["upd"] = {m: statistics.median(t) for m, t in upd.items()}
    out["max_rel_diff"] = {m: float(((final[m] - final[modes[0]]).abs().max() / final[modes[0]].abs().max())) for m in modes}
    return out


def compile_once(cache_dir: str, precision: str, method: str, quick: bool) -> None:
    """(subprocess) In a fresh process with inductor's cache at ``cache_dir``: build the job's
    posteriors with step="compiled" and take one step of each; print the compile seconds (JSON)."""
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache_dir
    torch.set_num_threads(2)
    warnings.filterwarnings("ignore")
    job = _job(quick, 2)
    model, data = bench.make_model(job.seed), bench.synthetic_corpus(64, job.seed + 1)  # the shapes, untrained
    t0 = time.perf_counter()
    for comp in ["full", *job.components]:
        cfg = SamplerConfig(method=method, epsilon=job.epsilon, gamma=job.gamma, nbeta=job.nbeta, chains=job.chains, draws=4,
                            batch_size=job.batch_size, precision=precision, step="compiled")
        restr = None if comp == "full" else Restriction.from_devinterp(model, comp)
        post = LocalizedPosterior(model, bench.token_loss, data, cfg, restr, shared_batches=True)
        with post.running():
            post._step(post.start())
    total = time.perf_counter() - t0
    secs = kernels.compile_seconds()
    print(json.dumps({"graphs": len(secs), "compile_s": sum(secs.values()), "first_steps_s": total,
                      "per_graph_s": [round(v, 2) for v in secs.values()]}))


def compile_cost(precision: str = "fp32", method: str = "sgld", quick: bool = True) -> dict:
    """Compile cost of step="compiled" for the job's posteriors, each in a fresh process: ``cold``
    (an empty inductor cache) and ``warm`` (the cache the cold run filled). Seconds of the first
    call of every graph (tracing, compiling or loading, one run; dynamo/inductor imports included)."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="spectro-inductor-") as tmp:
        for name in ("cold", "warm"):
            cmd = [sys.executable, __file__, "--compile-once", tmp, "--precision", precision, "--method", method]
            if not quick:
                cmd.append("--full-job")
            r = subprocess.run(cmd, capture_output=True, text=True, check=True)
            out[name] = json.loads(r.stdout.strip().splitlines()[-1])
    return out


def _job(quick: bool, threads: int):
    if quick:
        return bench.Job(components=["l0h1", "l1h0"], draws=20, n_train=512, train_steps=25, threads=threads)
    return bench.Job(threads=threads)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--precision", choices=["fp32", "bf16", "both"], default="both")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--full-job", action="store_true", help="the full job's data (4096 sequences, 200 training steps)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compare", default=None, help="comma-separated step modes to time against each other, e.g. eager,fused,compiled")
    ap.add_argument("--method", default="sgld", help="sgld, rmsprop_sgld, or both (with --compare)")
    ap.add_argument("--rounds", type=int, default=4, help="--compare: interleaved blocks of 5 steps per mode")
    ap.add_argument("--compile-cost", action="store_true", help="also measure step='compiled' compile seconds, cold and warm cache")
    ap.add_argument("--compile-once", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.compile_once:
        compile_once(args.compile_once, args.precision, args.method, not args.full_job)
        return 0
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    job = _job(not args.full_job, args.threads)
    print(f"command: python benchmarks/profile_step.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, ISA {cpu_isa()}, "
          f"load {bench.load_average()}")
    setup = bench.Setup(job)
    precs = ["fp32", "bf16"] if args.precision == "both" else [args.precision]
    if args.compare:
        modes = args.compare.split(",")
        methods = ["sgld", "rmsprop_sgld"] if args.method == "both" else [args.method]
        for prec in precs:
            for method in methods:
                print(f"\nprecision {prec}, {method}: ms per step ({job.chains} chains, 2 workers), {args.rounds} interleaved "
                      f"rounds of 5 steps per mode; (x: median, min-max over rounds of the paired ratio {modes[0]}/mode); "
                      f"load {bench.load_average()}")
                for comp in ["full", *job.components]:
                    r = compare(setup, job, prec, comp, method, modes, args.rounds)
                    ratio = {m: sorted(r["ratio"][m]) for m in modes}
                    print(f"  {comp:<6} step: " + ", ".join(
                        f"{m} {r[m]:.2f}" + ("" if m == modes[0] else
                                             f" ({statistics.median(ratio[m]):.3f}x, {ratio[m][0]:.2f}-{ratio[m][-1]:.2f})")
                        for m in modes)
                        + "; update alone: " + ", ".join(f"{m} {r['upd'][m]:.3f}" for m in modes)
                        + f" ({r['upd'][modes[0]] / r['upd'][modes[-1]]:.2f}x {modes[-1]}); max |W - W_{modes[0]}| / max |W| "
                        "after the run: " + ", ".join(f"{r['max_rel_diff'][m]:.1e}" for m in modes[1:])
                        + f"; load {bench.load_average()}", flush=True)
            if args.compile_cost and "compiled" in modes:
                for method in methods:
                    c = compile_cost(prec, method, not args.full_job)
                    print(f"  compile cost ({prec}, {method}; fresh process each, dynamo/inductor imports included): "
                          f"cold cache {c['cold']['compile_s']:.1f} s for {c['cold']['graphs']} graphs "
                          f"({', '.join(map(str, c['cold']['per_graph_s']))}), warm cache {c['warm']['compile_s']:.1f} s "
                          f"({', '.join(map(str, c['warm']['per_graph_s']))}); load {bench.load_average()}", flush=True)
        return 0
    cols = ["step", "index", "perm", "fwd+bwd", "noise", "update", "rest", "probe"]
    for prec in precs:
        print(f"\nprecision {prec}: ms per step ({job.chains} chains, 2 workers), median of {args.steps}; "
              f"'probe' = one draw's probe evaluation; load {bench.load_average()}")
        print(f"  {'restriction':<11} {'D':>7} {'free':>7} " + " ".join(f"{c:>8}" for c in cols) + "   update/step noise/step")
        for comp in ["full", *job.components]:
            r = profile(setup, job, prec, comp, args.steps)
            print(f"  {comp:<11} {r['D']:>7} {r['n_free']:>7} " + " ".join(f"{r[c]:>8.2f}" for c in cols)
                  + f"   {100 * r['update'] / r['step']:>5.1f}%   {100 * r['noise'] / r['step']:>5.1f}%", flush=True)
        print(f"  load {bench.load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
