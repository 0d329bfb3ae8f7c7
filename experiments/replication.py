#!/usr/bin/env python
"""The pre-registered replication of docs/preregistration.md, one sub-command per stage.

    python experiments/replication.py detect  --models runs/replication/models --seeds 101 102 103
    python experiments/replication.py study   --models runs/replication/models --seed 101 --sgld-seed 0
    python experiments/replication.py dataset --models runs/replication/models --seed 101
    python experiments/replication.py decide

Every stage writes its record under ``docs/results/replication/`` (``--records``) with the command,
the machine and the seconds it took; job folders go to ``runs/replication/jobs/``. Stages are
independent pieces that each finish within a session (docs/preregistration.md §8).

* ``detect`` (§3, §5 b): the attention detector on repeated random sequences — per head induction
  and previous-token scores ± stderr over sequences, the copying gain ± stderr — the detector's
  induction heads I_m, and the mean-ablation baseline: per head, the increase of the second-copy
  loss when the head's output z·W_O is replaced by its mean over held-out natural text. No
  susceptibility code is used.
* ``study`` (§4): one per-token job (Baker's restricted χ of every head + full) with the
  pre-registered settings; the record keeps χ, its stderr, the covariance part and its stderr, the
  offset part, E_C[φ], flags, R-hat/ESS summaries and the LLCs; the token table goes to a CSV.
* ``dataset`` (§7): the independent dataset-level job (subset fields on other sequences).
* ``decide`` (§6): S1, S2 and the baselines from the records, the decision and its figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from itertools import combinations
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
RECORDS = ROOT / "docs" / "results" / "replication"

# docs/preregistration.md §3-§4 (fixed before any record existed)
DETECT_SEQS, DETECT_LEN, DETECT_SEED = 256, 50, 0
INDUCTION_MIN, INDUCTION_LOWER_MIN = 0.10, 0.05
ABLATION_WINDOWS_PER_DOMAIN = 16
SETTINGS = {"epsilon": 3e-4, "gamma": 1000.0, "nbeta": 30.0, "batch_size": 8, "chains": 4, "draws": 100,
            "burn_in": 20, "steps_per_draw": 2}
PROBES = {"base": 16, "per_domain": 4, "split": "validation"}
CONTEXT, TRAIN_SEQUENCES = 32, 256


def machine() -> dict:
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line.split(":", 1)[1]
                break
    except OSError:
        pass
    isa = sorted(f for f in flags.split() if f.startswith(("avx", "amx", "fma", "sse4")))
    model = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                  if l.startswith("model name")), platform.processor())
    return {"cpu": model, "isa": isa, "logical_cpus": os.cpu_count(),
            "torch": torch.__version__, "python": platform.python_version()}


def write_record(name: str, record: dict, records: Path) -> Path:
    from spectro.io import write_json

    records.mkdir(parents=True, exist_ok=True)
    record = {"command": "python " + shlex.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
              "machine": machine(), **record}
    path = records / name
    write_json(path, record)
    print(f"wrote {path}")
    return path


def final_checkpoint(models: Path, seed: int) -> Path:
    run = models / f"seed_{seed}"  # a train_transformer.py run (checkpoints/step_*) or the committed copy (step_*)
    steps = sorted([*(run / "checkpoints").glob("step_*"), *run.glob("step_*")], key=lambda p: int(p.name.split("_")[1]))
    if not steps:
        raise SystemExit(f"replication: no checkpoints under {models}/seed_{seed}")
    return steps[-1]


# ------------------------------------------------------------------ detect
def head_outputs(model, tokens: torch.Tensor, ablate: dict[tuple[int, int], torch.Tensor] | None = None) -> tuple[torch.Tensor, list]:
    """Logits with optional per-head output replacement, and each layer's per-head outputs [B, H, T, d].

    ``ablate[(layer, head)] = o`` replaces that head's output z·W_O by ``o`` ([d] broadcast over
    batch and positions) — mean ablation."""
    x = model.residual_input(tokens)
    outs = []
    for l, block in enumerate(model.blocks):
        attn = block.attn
        pattern, v = attn.pattern(block.ln1(x))
        z = torch.matmul(pattern, v)  # [B, H, T, e]
        o = torch.einsum("bhte,hed->bhtd", z, attn.W_O)  # [B, H, T, d]
        outs.append(o)
        if ablate:
            o = o.clone()
            for (al, ah), mean in ablate.items():
                if al == l:
                    o[:, ah] = mean
        x = x + o.sum(dim=1) + attn.b_O
    logits = torch.matmul(model.ln_final(x), model.unembed.W_U) + model.unembed.b_U
    return logits, outs


def _mean_se(x: torch.Tensor) -> tuple[float, float]:
    x = x.double()
    return float(x.mean()), float(x.std(unbiased=True) / math.sqrt(x.numel()))


@torch.no_grad()
def detect_model(folder: Path, corpus: Path) -> dict:
    from spectro.data import load_corpus
    from spectro.models.attention_only import load_checkpoint, next_token_loss
    from spectro.models.induction import induction_report, repeated_random_tokens
    from spectro.models.training import TokenizedCorpus

    model, tok, meta = load_checkpoint(folder)
    model.eval()
    cfg = model.cfg
    L, H, T = cfg.n_layers, cfg.n_heads, DETECT_LEN
    tokens = repeated_random_tokens(DETECT_SEQS, T, cfg.vocab_size, low=1, seed=DETECT_SEED)
    # per-sequence scores, so that every score has a standard error over sequences
    pats = model.attention_patterns(tokens)  # [L, B, H, S, S]
    q = torch.arange(T, 2 * T)
    ind_seq = pats[..., q, q - T + 1].mean(dim=-1)  # [L, B, H]
    prev_seq = pats[..., q, q - 1].mean(dim=-1)
    rep = induction_report(model, cfg.vocab_size, seq_len=T, n_seqs=DETECT_SEQS, seed=DETECT_SEED)
    assert torch.allclose(rep.induction, ind_seq.mean(dim=1), atol=1e-6), "per-sequence scores disagree with the detector"
    base_logits, _ = head_outputs(model, tokens)
    loss = next_token_loss(base_logits, tokens)  # [B, 2T-1]
    first, second = loss[:, : T - 1].mean(dim=1), loss[:, T:].mean(dim=1)
    gain = _mean_se(first - second)
    # mean ablation: each head's output replaced by its mean over held-out natural text
    ds = load_corpus(corpus)
    tc = TokenizedCorpus.from_datasets(ds, tok)
    win = tc.eval_windows(cfg.n_ctx, ABLATION_WINDOWS_PER_DOMAIN, "validation")
    natural = torch.cat([win[d] for d in sorted(win)])
    _, outs = head_outputs(model, natural)
    means = {(l, h): outs[l][:, h].mean(dim=(0, 1)) for l in range(L) for h in range(H)}
    ablation = np.zeros((L, H)), np.zeros((L, H))
    for l in range(L):
        for h in range(H):
            logits, _ = head_outputs(model, tokens, {(l, h): means[(l, h)]})
            d = next_token_loss(logits, tokens)[:, T:].mean(dim=1) - second
            ablation[0][l, h], ablation[1][l, h] = _mean_se(d)
    ind_mean, ind_se = ind_seq.mean(dim=1).double(), ind_seq.double().std(dim=1) / math.sqrt(DETECT_SEQS)
    prev_mean, prev_se = prev_seq.mean(dim=1).double(), prev_seq.double().std(dim=1) / math.sqrt(DETECT_SEQS)
    heads = [f"l{l}h{h}" for l in range(L) for h in range(H)]
    induction_heads = [heads[l * H + h] for l in range(L) for h in range(H)
                       if ind_mean[l, h] >= INDUCTION_MIN and ind_mean[l, h] - 2 * ind_se[l, h] >= INDUCTION_LOWER_MIN]
    return {"checkpoint": str(folder), "step": int(folder.name.split("_")[1]), "heads": heads,
            "seq_len": T, "n_seqs": DETECT_SEQS, "uniform_baseline": rep.uniform_baseline,
            "induction": ind_mean.flatten().tolist(), "induction_stderr": ind_se.flatten().tolist(),
            "previous_token": prev_mean.flatten().tolist(), "previous_token_stderr": prev_se.flatten().tolist(),
            "loss_first_copy": _mean_se(first), "loss_second_copy": _mean_se(second),
            "copying_gain": gain[0], "copying_gain_stderr": gain[1],
            "ablation_increase": ablation[0].flatten().tolist(), "ablation_increase_stderr": ablation[1].flatten().tolist(),
            "ablation_reference": f"{len(natural)} held-out windows of {cfg.n_ctx} tokens ({ABLATION_WINDOWS_PER_DOMAIN} per domain)",
            "induction_heads": induction_heads, "k": len(induction_heads),
            "training_failure": not induction_heads,
            "final_validation_mean": (json.loads((folder.parent.parent / "summary.json").read_text()).get("final_validation_mean")
                                      if (folder.parent.parent / "summary.json").is_file() else None)}


def cmd_detect(args) -> None:
    t0 = time.perf_counter()
    out = {}
    for s in args.seeds:
        folder = final_checkpoint(args.models, s)
        print(f"detector: seed {s} ({folder})", flush=True)
        out[f"seed_{s}"] = detect_model(folder, args.corpus)
        r = out[f"seed_{s}"]
        print(f"  induction heads {r['induction_heads']}  copying gain {r['copying_gain']:.2f} ± {r['copying_gain_stderr']:.2f}", flush=True)
    write_record("detector.json", {"preregistration": "docs/preregistration.md §3, §5(b)", "models": out,
                                   "seconds": time.perf_counter() - t0}, args.records)


# ------------------------------------------------------------------ study / dataset jobs
def job_config(checkpoint: Path, sgld_seed: int, corpus: Path, *, dataset: bool, draws: int) -> dict:
    from spectro.jobs.nn_job import DEMO_CONFIG

    import copy

    cfg = copy.deepcopy(DEMO_CONFIG)
    cfg["name"] = f"replication/{checkpoint.parent.parent.name}-{'dataset' if dataset else 'tokens'}-sgld{sgld_seed}"
    cfg["description"] = "pre-registered replication (docs/preregistration.md)"
    cfg["model"] = {"checkpoint": str(checkpoint.resolve())}
    cfg["data"].update({"corpus": str(corpus.resolve()), "context": CONTEXT, "train_sequences": TRAIN_SEQUENCES})
    cfg["probes"] = dict(PROBES)
    if dataset:
        cfg["probes"]["split"] = "train"
        cfg["fields"] = ["subset"]
    cfg["sampler"].update({**SETTINGS, "draws": draws, "seed": sgld_seed})
    cfg["threads"] = 1
    cfg["export"] = {"devinterp": True, "max_mb": 2048.0}
    return cfg


def run_job(cfg: dict, out: Path) -> None:
    """Run the job through ``spectro run`` (the stable entry point: resume, locks, atomic commit)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    cfg_path = out.parent / f"{out.name}.config.json"
    cfg_path.write_text(json.dumps(cfg, indent=1))
    cmd = [sys.executable, "-m", "spectro", "run", str(cfg_path), "--out", str(out)]
    if (out / "summary.json").is_file():
        print(f"{out}: finished job found, not re-run")
        return
    if out.exists():
        cmd.append("--resume")
    print("running:", shlex.join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def study_record(folder: Path, label: str, records: Path) -> dict:
    """The job's per-token arrays into ``records/<label>_tokens.npz``; summaries into the returned dict."""
    from spectro.analysis.token_table import load_token_table

    table = load_token_table(folder, draws=True)
    summary = json.loads((folder / "summary.json").read_text())
    arrays = {k: getattr(table, k) for k in ("chi", "stderr", "ess", "rhat", "offset", "offset_stderr", "cov_stderr",
                                              "noise", "subset_chi", "subset_stderr", "subset_cov", "subset_cov_stderr",
                                              "e_phi", "domain", "sample", "position", "token_id", "induction")
              if getattr(table, k, None) is not None}
    arrays["domain"] = np.asarray(table.domain).astype(str)  # strings, never object arrays (loadable without pickle)
    arrays["cls"] = np.asarray(table.cls).astype(str)
    arrays["components"] = np.asarray(table.components)
    arrays["domains"] = np.asarray(table.domains)
    records.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(records / f"{label}_tokens.npz", **arrays)
    from spectro.engine import Susceptibility

    reliable = {}
    for c in table.components:  # share of flagged (token field, phi_C) entries per component
        r = Susceptibility.load(folder / f"chi_{c}.npz")
        i = r.observables.index("phi_C") if "phi_C" in r.observables else 0
        tok = [a for a, f in enumerate(r.fields) if f.startswith("tok:")]
        reliable[c] = float(np.mean(~r.reliable[i, tok])) if tok else None
    comps = summary["components"]
    return {"folder": str(folder), "tokens_file": f"{label}_tokens.npz", "components": list(table.components),
            "n_tokens": int(table.chi.shape[0]), "domains": list(table.domains),
            "base_loss_at_w_star": summary["run"]["base_loss_at_w_star"],
            "flagged_share": reliable,
            "per_component": {c: {k: comps[c].get(k) for k in ("llc", "llc_stderr", "llc_dof", "loss_trace_rhat", "init_loss",
                                                              "chi_min_ess", "chi_median_ess", "chi_max_rhat", "chi_median_rhat",
                                                              "chi_entries", "chi_unreliable", "chi_warning", "domains",
                                                              "full_run_variance_share", "seconds", "chains", "draws")}
                              for c in comps},
            "draws_check": table.meta.get("draws_check"),
            "run": summary["run"], "job_seconds": summary.get("seconds"), "versions": summary.get("versions")}


def dataset_record(folder: Path) -> dict:
    """§7: the dataset-level χ of every component (fields dL:<domain>), its covariance part and offset.

    Baker's χ^C = cov + offset with offset = −E_C[φ]·(E_C[ψ_D] − E_full[ψ_D]) (the ``full`` row is the
    plain −Cov: no offset), from the stored posterior means, as ``spectro.analysis.token_table`` does
    per token.
    """
    from spectro.analysis.token_table import _component_order, row_estimator
    from spectro.engine import Susceptibility

    summary = json.loads((folder / "summary.json").read_text())
    files = {p.name[4:-4]: p for p in folder.glob("chi_*.npz")}
    names = _component_order(files)
    res = {c: Susceptibility.load(files[c]) for c in names}
    full = res["full"]
    fields = [f for f in full.fields if f.startswith("dL:")]
    cols = [full.fields.index(f) for f in fields]
    chi, se, offset, flagged = (np.zeros((len(names), len(fields))) for _ in range(4))
    for k, c in enumerate(names):
        r = res[c]
        row = r.observables.index("phi_C")
        chi[k], se[k] = r.chi[row, cols], r.stderr[row, cols]
        flagged[k] = ~r.reliable[row, cols]
        if row_estimator(r, row) == "baker2025":
            offset[k] = -r.observable_mean[row] * (r.field_mean[cols] - full.field_mean[cols])
    comps = summary["components"]
    return {"folder": str(folder), "components": names, "fields": fields, "chi": chi.tolist(), "stderr": se.tolist(),
            "offset": offset.tolist(), "covariance_part": (chi - offset).tolist(), "flagged": flagged.astype(bool).tolist(),
            "per_component": {c: {k: comps[c].get(k) for k in ("llc", "llc_stderr", "init_loss", "chi_min_ess", "chi_max_rhat",
                                                              "chi_unreliable", "chi_warning", "seconds")} for c in comps},
            "run": summary["run"], "job_seconds": summary.get("seconds"), "versions": summary.get("versions")}


def cmd_study(args, *, dataset: bool = False) -> None:
    t0 = time.perf_counter()
    ckpt = final_checkpoint(args.models, args.seed)
    sgld = 100 if dataset else args.sgld_seed
    label = f"seed_{args.seed}-{'dataset' if dataset else 'tokens'}-sgld{sgld}"
    out = args.jobs / label
    run_job(job_config(ckpt, sgld, args.corpus, dataset=dataset, draws=args.draws), out)
    rec = dataset_record(out) if dataset else study_record(out, label, args.records)
    rec.update({"preregistration": "docs/preregistration.md §7" if dataset else "docs/preregistration.md §4",
                "model_seed": args.seed, "sgld_seed": sgld, "settings": {**SETTINGS, "draws": args.draws},
                "seconds": time.perf_counter() - t0})
    write_record(f"{label}.json", rec, args.records)


# ------------------------------------------------------------------ decide
FLAG_LIMIT = 0.20  # §6: a case whose S1 entries are > 20 % flagged is not valid


def _topk(values: np.ndarray, names: list[str], k: int) -> list[str]:
    order = np.argsort(-np.asarray(values, dtype=np.float64), kind="stable")
    return sorted(names[i] for i in order[:k])


def _auc(score: np.ndarray, positive: np.ndarray) -> float | None:
    pos, neg = score[positive], score[~positive]
    if pos.size == 0 or neg.size == 0:
        return None
    return float(np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg]))


def _load_tokens(records: Path, label: str) -> dict | None:
    path = records / f"{label}_tokens.npz"
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def decide_model(records: Path, seed: int, det: dict) -> dict:
    from spectro.analysis.principal_components import pca

    heads = det["heads"]
    layer1 = [h for h in heads if h.startswith("l1")]
    I = sorted(det["induction_heads"])
    k = len(I)
    is_ind = np.asarray([h in I for h in layer1])
    abl = dict(zip(heads, det["ablation_increase"]))
    out = {"induction_heads": I, "k": k,
           "baseline_b_ablation": {"top_k": _topk([abl[h] for h in layer1], layer1, k),
                                   "auc": _auc(np.asarray([abl[h] for h in layer1]), is_ind)},
           "baseline_c_random_probability": 1 / math.comb(len(layer1), k) if k else None, "seeds": {}}
    out["baseline_b_ablation"]["recovers"] = out["baseline_b_ablation"]["top_k"] == I
    cov = {}
    for s in (0, 1):
        label = f"seed_{seed}-tokens-sgld{s}"
        t = _load_tokens(records, label)
        rec_path = records / f"{label}.json"
        if t is None or not rec_path.is_file():
            continue
        rec = json.loads(rec_path.read_text())
        comps = [str(c) for c in t["components"]]
        cols = [comps.index(h) for h in layer1]
        chi = t["chi"]
        offset = t["offset"]
        x_cov = (chi - offset)[:, cols]
        cov[s] = x_cov
        p1 = pca(x_cov, names=layer1)
        a = np.abs(p1.loadings[0])
        all_cols = [comps.index(h) for h in heads]
        p_all = pca(chi[:, all_cols], names=heads)
        b2 = np.abs(p_all.loadings[1])
        e_phi = t["e_phi"][cols]
        flagged = float(np.mean([rec["flagged_share"][h] for h in layer1]))
        # phi's reference: spectro's L_base(w*) vs devinterp's init-loss mean (training loss at w*)
        c_ref = rec["base_loss_at_w_star"] - rec["per_component"]["full"]["init_loss"]
        e_phi_all = t["e_phi"][cols]
        gap = -offset[:, cols] / e_phi_all  # E_C[psi] - E_full[psi]
        conv = {}
        for name, shift in (("spectro", 0.0), ("devinterp", c_ref)):
            chi_c = chi[:, cols] - shift * gap
            off_c = -(e_phi_all + shift) * gap
            pc_chi, pc_off = pca(chi_c, names=layer1), pca(off_c, names=layer1)
            r = float(np.corrcoef(pc_chi.scores[:, 0], pc_off.scores[:, 0])[0, 1])
            conv[name] = {"phi_shift": shift, "pc1_ratio_chi": float(pc_chi.explained_ratio[0]),
                          "abs_r_pc1_scores_chi_vs_offset": abs(r),
                          "median_var_offset_over_var_chi": float(np.median(off_c.var(axis=0) / chi_c.var(axis=0)))}
        out["seeds"][str(s)] = {
            "S1": {"pc1_ratio": float(p1.explained_ratio[0]), "loadings": dict(zip(layer1, p1.loadings[0].tolist())),
                   "top_k": _topk(a, layer1, k), "auc": _auc(a, is_ind)},
            "S2": {"pc2_loadings": dict(zip(heads, p_all.loadings[1].tolist())), "top_k": _topk(b2, heads, k),
                   "pc_ratios": p_all.explained_ratio[:3].tolist()},
            "baseline_a_e_phi": {"e_phi": dict(zip(layer1, e_phi.tolist())), "top_k": _topk(e_phi, layer1, k),
                                 "auc": _auc(e_phi, is_ind)},
            "flagged_share_layer1": flagged, "valid": flagged <= FLAG_LIMIT,
            "phi_reference": conv,
            "llc_full": [rec["per_component"]["full"]["llc"], rec["per_component"]["full"]["llc_stderr"]],
        }
    if len(cov) == 2:
        from spectro.analysis.principal_components import replicate_noise_floor

        floor = replicate_noise_floor((cov[0] - cov[1]) / math.sqrt(2), n=200, seed=0)["pc1"]["q95"]
        out["replicate_floor_pc1_95"] = floor
        for s, e in out["seeds"].items():
            e["S1"]["above_floor"] = e["S1"]["pc1_ratio"] > floor
            e["S1"]["recovers"] = bool(e["valid"] and e["S1"]["above_floor"] and e["S1"]["top_k"] == I)
            e["S2"]["recovers"] = e["S2"]["top_k"] == I
            e["baseline_a_e_phi"]["recovers"] = e["baseline_a_e_phi"]["top_k"] == I
    return out


def dataset_comparison(records: Path, seed: int, n_boot: int = 2000) -> dict | None:
    """§7: r(dataset-level χ of the independent job, per-token aggregate of seed 0) over 16 heads × 4 domains."""
    rec_path = records / f"seed_{seed}-dataset-sgld100.json"
    t = _load_tokens(records, f"seed_{seed}-tokens-sgld0")
    if t is None or not rec_path.is_file():
        return None
    rec = json.loads(rec_path.read_text())
    heads = [c for c in rec["components"] if c != "full"]
    domains = [f[3:] for f in rec["fields"]]
    rows = [rec["components"].index(h) for h in heads]
    ds_chi, ds_cov = np.asarray(rec["chi"])[rows], np.asarray(rec["covariance_part"])[rows]
    comps = [str(c) for c in t["components"]]
    cols = [comps.index(h) for h in heads]
    dom = t["domain"].astype(str)
    agg = np.stack([t["chi"][dom == d][:, cols].mean(axis=0) for d in domains], axis=1)
    agg_cov = np.stack([(t["chi"] - t["offset"])[dom == d][:, cols].mean(axis=0) for d in domains], axis=1)
    rng = np.random.default_rng(0)

    def r_with_interval(a: np.ndarray, b: np.ndarray) -> dict:
        r = float(np.corrcoef(a.ravel(), b.ravel())[0, 1])
        boot = []
        for _ in range(n_boot):
            i = rng.integers(0, len(heads), len(heads))
            boot.append(np.corrcoef(a[i].ravel(), b[i].ravel())[0, 1])
        lo, hi = np.nanquantile(boot, [0.025, 0.975])
        return {"r": r, "ci95_bootstrap_heads": [float(lo), float(hi)]}

    def rank1_share(m: np.ndarray) -> float:
        sv = np.linalg.svd(m, compute_uv=False)
        return float(sv[0] ** 2 / np.sum(sv**2))

    flagged = np.asarray(rec["flagged"])[rows]
    return {"heads": heads, "domains": domains, "chi": r_with_interval(ds_chi, agg),
            "covariance_part": r_with_interval(ds_cov, agg_cov),
            "rank1_share": {"dataset_chi": rank1_share(ds_chi), "dataset_covariance_part": rank1_share(ds_cov),
                            "per_token_aggregate_chi": rank1_share(agg), "per_token_aggregate_covariance_part": rank1_share(agg_cov)},
            "dataset_flagged_share": float(flagged.mean()), "baker_reported_r": 0.958}


def _save(fig, path: Path) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def figures(records: Path, det: dict, models: dict) -> list[str]:
    """The decision's figures: PC1 loadings per head with the floor, detector score vs loading, χ along a probe."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    keys = [k for k in models if models[k]["seeds"]]
    if not keys:
        return written
    fig, axes = plt.subplots(len(keys), 2, figsize=(10, 2.6 * len(keys)), squeeze=False)
    for row, key in enumerate(keys):
        m = models[key]
        for col in range(2):
            ax = axes[row][col]
            e = m["seeds"].get(str(col))
            if e is None:
                ax.set_axis_off()
                ax.set_title(f"{key}, SGLD seed {col}: not run", fontsize=9)
                continue
            heads = list(e["S1"]["loadings"])
            a = np.abs(np.asarray(list(e["S1"]["loadings"].values())))
            colours = ["#c0392b" if h in m["induction_heads"] else "#7f8c8d" for h in heads]
            ax.bar(heads, a, color=colours)
            abl = np.asarray([det[key]["ablation_increase"][det[key]["heads"].index(h)] for h in heads])
            ax.plot(heads, abl / abl.max() * a.max(), "k^", ms=5, label="mean-ablation increase (scaled)")
            floor = m.get("replicate_floor_pc1_95")
            txt = f"PC1 {e['S1']['pc1_ratio']:.2f}" + (f" vs floor {floor:.2f}" if floor is not None else " (floor needs both seeds)")
            ax.set_title(f"{key}, SGLD seed {col}: |PC1 loading| of the covariance part; {txt}", fontsize=8)
            ax.tick_params(labelsize=7)
            if row == 0 and col == 0:
                ax.legend(fontsize=7, loc="upper right")
    fig.suptitle("S1 (red: detector's induction heads; triangles: baseline (b))", fontsize=10)
    written.append(_save(fig, records / "fig_loadings.png"))

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for (key, marker), colour in zip(zip(keys, "osD^v"), ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b")):
        d = det[key]
        for s, e in models[key]["seeds"].items():
            heads = list(e["S1"]["loadings"])
            score = [d["induction"][d["heads"].index(h)] for h in heads]
            ax.scatter(score, np.abs(list(e["S1"]["loadings"].values())), marker=marker, s=22, edgecolors=colour,
                       facecolors="none" if s == "1" else colour, label=f"{key}, SGLD seed {s}")
    ax.axhline(1 / math.sqrt(8), color="grey", lw=0.8, ls=":", label="equal loadings (1/√8)")
    ax.axvline(INDUCTION_MIN, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("detector induction score (layer-1 heads)")
    ax.set_ylabel("|PC1 loading| of the covariance part")
    ax.legend(fontsize=7)
    written.append(_save(fig, records / "fig_detector_vs_loading.png"))

    key = keys[0]
    t = _load_tokens(records, f"{key}-tokens-sgld0")
    if t is not None and models[key]["induction_heads"]:
        comps = [str(c) for c in t["components"]]
        dom, samp = t["domain"].astype(str), t["sample"]
        ind = t["induction"].astype(bool)
        groups = sorted({(d, int(i)) for d, i in zip(dom, samp)}, key=lambda g: -ind[(dom == g[0]) & (samp == g[1])].sum())
        g = groups[0]
        rows = np.flatnonzero((dom == g[0]) & (samp == g[1]))
        rows = rows[np.argsort(t["position"][rows])]
        ih = models[key]["induction_heads"][0]
        other = min((h for h in comps if h.startswith("l1") and h not in models[key]["induction_heads"]),
                    key=lambda h: abs(models[key]["seeds"]["0"]["S1"]["loadings"].get(h, 0.0)))
        fig, ax = plt.subplots(figsize=(9, 3.2))
        cov = t["chi"] - t["offset"]
        for h, c in ((ih, "#c0392b"), (other, "#7f8c8d")):
            k = comps.index(h)
            ax.errorbar(t["position"][rows], cov[rows, k], yerr=2 * t["cov_stderr"][rows, k] if "cov_stderr" in t else None,
                        color=c, lw=0.8, ms=2, marker="o", capsize=0, label=f"{h}")
        for x in t["position"][rows][ind[rows]]:
            ax.axvspan(x - 0.5, x + 0.5, color="#f5b041", alpha=0.3, lw=0)
        ax.set_xlabel(f"position in probe sequence {g[0]}[{g[1]}] (shaded: tokens an induction pattern predicts)")
        ax.set_ylabel("per-token χ, covariance part (±2 se)")
        ax.set_title(f"{key}, SGLD seed 0", fontsize=9)
        ax.legend(fontsize=7)
        written.append(_save(fig, records / "fig_tokens.png"))
    return written


def decision_markdown(d: dict) -> str:
    """The decision's tables as markdown (decision.md), every number straight from decision.json."""
    c = d["counts"]
    lines = [f"**Verdict: {d['verdict']}** — S1 {c['S1'][0]}/{c['S1'][1]}, baseline (a) E_C[φ] "
             f"{c['baseline_a_e_phi'][0]}/{c['baseline_a_e_phi'][1]}, baseline (b) mean ablation "
             f"{c['baseline_b_ablation'][0]}/{c['baseline_b_ablation'][1]}; Baker's S2 {c['S2_baker'][0]}/{c['S2_baker'][1]}.", "",
             "| model | I_m (detector) | SGLD seed | S1 top-k | S1 PC1 ratio | floor (95 %) | AUC of abs(a) | flagged (layer 1) "
             "| S1 recovers | S2 (Baker PC2) top-k | (a) E_C[φ] top-k | (b) ablation top-k |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    fmt = lambda x, f=".3f": "—" if x is None else format(x, f)
    for m, r in d["models"].items():
        for s, e in r["seeds"].items():
            lines.append(f"| {m} | {', '.join(r['induction_heads'])} | {s} | {', '.join(e['S1']['top_k'])} | "
                         f"{fmt(e['S1']['pc1_ratio'])} | {fmt(r.get('replicate_floor_pc1_95'))} | {fmt(e['S1']['auc'], '.2f')} | "
                         f"{100 * e['flagged_share_layer1']:.1f} % | {e['S1'].get('recovers', '—')} | {', '.join(e['S2']['top_k'])} | "
                         f"{', '.join(e['baseline_a_e_phi']['top_k'])} | {', '.join(r['baseline_b_ablation']['top_k'])} |")
    lines += ["", "φ's reference (§4): PC1 explained ratio of Baker's χ (layer 1) and |r| of its PC1 scores with the offset "
              "part's, with φ referenced as spectro does (L̄_base(w*)) and as devinterp/Baker do (the init-loss mean).", "",
              "| model | SGLD seed | spectro: PC1 ratio | spectro: abs r(PC1, offset) | devinterp: PC1 ratio | devinterp: abs r(PC1, offset) |",
              "|---|---|---|---|---|---|"]
    for m, r in d["models"].items():
        for s, e in r["seeds"].items():
            a, b = e["phi_reference"]["spectro"], e["phi_reference"]["devinterp"]
            lines.append(f"| {m} | {s} | {a['pc1_ratio_chi']:.4f} | {a['abs_r_pc1_scores_chi_vs_offset']:.4f} | "
                         f"{b['pc1_ratio_chi']:.4f} | {b['abs_r_pc1_scores_chi_vs_offset']:.4f} |")
    ds = {m: v for m, v in d["dataset_level_section7"].items() if v}
    if ds:
        lines += ["", "§7 dataset-level χ (independent job, SGLD seed 100) against the per-token aggregate of seed 0, "
                  "16 heads × 4 domains; 95 % bootstrap over heads; Baker report r = 0.958.", "",
                  "| model | r (χ) | 95 % | r (covariance part) | 95 % | rank-1 share: dataset χ | dataset cov. part | flagged |",
                  "|---|---|---|---|---|---|---|---|"]
        for m, v in ds.items():
            lines.append(f"| {m} | {v['chi']['r']:.3f} | {v['chi']['ci95_bootstrap_heads'][0]:.3f}–{v['chi']['ci95_bootstrap_heads'][1]:.3f} | "
                         f"{v['covariance_part']['r']:.3f} | {v['covariance_part']['ci95_bootstrap_heads'][0]:.3f}–"
                         f"{v['covariance_part']['ci95_bootstrap_heads'][1]:.3f} | {v['rank1_share']['dataset_chi']:.4f} | "
                         f"{v['rank1_share']['dataset_covariance_part']:.3f} | {100 * v['dataset_flagged_share']:.1f} % |")
    return "\n".join(lines) + "\n"


def cmd_decide(args) -> None:
    det = json.loads((args.records / "detector.json").read_text())["models"]
    models = {}
    for key, d in det.items():
        if d["training_failure"]:
            continue
        models[key] = decide_model(args.records, int(key.split("_")[1]), d)
    cases = [(m, s, e) for m, r in models.items() for s, e in r["seeds"].items() if "recovers" in e["S1"]]
    n_models = len(models)
    complete = n_models >= 3 and len(cases) == 2 * n_models
    s1 = sum(e["S1"]["recovers"] for _, _, e in cases)
    s2 = sum(e["S2"]["recovers"] for _, _, e in cases)
    a = sum(e["baseline_a_e_phi"]["recovers"] for _, _, e in cases)
    b = sum(r["baseline_b_ablation"]["recovers"] for r in models.values())
    if not complete:
        verdict = f"incomplete: {n_models} models with induction heads, {len(cases)} of {2 * max(n_models, 3)} cases measured"
    else:
        ok = s1 == len(cases) and a < len(cases) and b < n_models
        verdict = "H1 replicated" if ok else "H1 not replicated"
    invalid = [f"{m} sgld{s}" for m, r in models.items() for s, e in r["seeds"].items() if not e["valid"]]
    dataset = {m: dataset_comparison(args.records, int(m.split("_")[1])) for m in models}
    written = figures(args.records, det, models)
    write_record("decision.json", {"preregistration": "docs/preregistration.md §6", "verdict": verdict,
                                   "counts": {"S1": [s1, len(cases)], "S2_baker": [s2, len(cases)],
                                              "baseline_a_e_phi": [a, len(cases)], "baseline_b_ablation": [b, n_models]},
                                   "invalid_cases_rerun_with_twice_the_draws": invalid,
                                   "dataset_level_section7": dataset, "figures": written,
                                   "models": models}, args.records)
    md = decision_markdown(json.loads((args.records / "decision.json").read_text()))
    (args.records / "decision.md").write_text(md)
    print(md)


# ------------------------------------------------------------------ main
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", type=Path, default=RECORDS)
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("detect")
    d.add_argument("--models", type=Path, default=RECORDS / "models")
    d.add_argument("--seeds", type=int, nargs="+", default=[101, 102, 103])
    d.add_argument("--corpus", type=Path, default=Path("runs/corpus"))
    for name in ("study", "dataset"):
        s = sub.add_parser(name)
        s.add_argument("--models", type=Path, default=RECORDS / "models")
        s.add_argument("--seed", type=int, required=True)
        s.add_argument("--corpus", type=Path, default=Path("runs/corpus"))
        s.add_argument("--jobs", type=Path, default=Path("runs/replication/jobs"))
        s.add_argument("--draws", type=int, default=SETTINGS["draws"])
        if name == "study":
            s.add_argument("--sgld-seed", type=int, required=True)
    sub.add_parser("decide")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    torch.set_num_threads(1)
    if args.cmd == "detect":
        cmd_detect(args)
    elif args.cmd == "study":
        cmd_study(args)
    elif args.cmd == "dataset":
        cmd_study(args, dataset=True)
    else:
        cmd_decide(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
