"""Run an NN susceptibility job: sample every component through the measurement driver
(:func:`spectro.engine.driver.measure_components` on :class:`~spectro.nn.system.PosteriorSystem`s),
estimate, and write the results folder atomically. Config schema and results folder:
:mod:`spectro.jobs.nn_config`. Usage::

    from spectro.jobs.nn_job import JobConfig, run_job
    run_job(JobConfig.load("job.toml"), "runs/my-job")
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .nn_config import _BASE, _SAMPLER_KEYS, DEMO_CONFIG, ConfigError, JobConfig
from .nn_prepare import _Prepared, _prepare

if TYPE_CHECKING:
    from .resume import JobCheckpointing

__all__ = ["ConfigError", "JobConfig", "DEMO_CONFIG", "run_job", "summary_table"]

# ============================================================================ running
def _versions() -> dict:
    import platform

    from ..engine.susceptibility import environment_versions

    v = environment_versions()
    for pkg in ("devinterp", "xarray", "zarr", "tokenizers"):
        try:
            from importlib.metadata import version

            v[pkg] = version(pkg)
        except Exception:  # noqa: BLE001
            v[pkg] = None
    v["machine"] = f"{platform.machine()} ({os.cpu_count()} logical CPUs)"
    return v


def run_job(config: "JobConfig | dict | str | os.PathLike", out_dir: str | os.PathLike, *, overwrite: bool = False,
            progress: bool = True, log=None, checkpoint: "JobCheckpointing | None" = None, world=None) -> Path:
    """Run a whole job and write its results folder (layout in the module docstring); return the folder.

    ``config``: a :class:`JobConfig`, a dict in the config schema, or a path to a .json/.toml file.
    Raises :class:`ConfigError` (nothing written) for an invalid config, problems of the
    checkpoint or data it names, and an output or checkpoint folder spectro may not use (see
    :mod:`spectro.outputs`: a file, a folder that is not spectro's, earlier results without
    ``overwrite``, a folder locked by another run); :class:`spectro.nn.DivergenceError` when a
    chain blows up (nothing written either). ``overwrite`` replaces only the files spectro wrote;
    the user's files in ``out_dir`` stay. The results folder is locked while the job runs.
    ``log`` receives progress lines (default: print to stderr).

    ``checkpoint``: snapshot the job periodically into ``checkpoint.folder`` (see
    :mod:`spectro.jobs.resume`); with ``checkpoint.resume`` a killed job continues where its last
    snapshot left off and gives bit-identical results. Spectro's files are removed from the
    folder when the job ends.

    ``world``: under ``torchrun`` (default: detected from the environment) every process runs
    this function; process r samples its contiguous block of the global chains (seeded as in
    one process), the moments, loss traces and devinterp records are combined across processes
    at the end of each component, and process 0 alone writes. The results equal the
    single-process ones (the per-chain arithmetic is the same and the merge adds zeros).
    """
    import torch

    from ..engine.distributed import any_rank, chain_block, current_world

    log = log or (lambda msg: print(msg, file=sys.stderr))
    cfg = config if isinstance(config, JobConfig) else (JobConfig.from_dict(config) if isinstance(config, dict) else JobConfig.load(config))
    out = _resolved(out_dir)  # symlinks and `..` resolved: the folder itself is checked, locked and written
    _check_output(out, overwrite, checkpoint)
    parent = out.resolve().parent
    threads = torch.get_num_threads()
    t_start = time.perf_counter()
    with contextlib.ExitStack() as held:  # the locks, released last
        try:
            if cfg.threads is not None:
                torch.set_num_threads(cfg.threads)
            device = cfg.sampler_config().device
            world = world or current_world(device)
            # process 0 prepares first (it may train and cache a builtin model); the others follow
            # once it succeeded, so they never race on the cache and never wait on a failed rank 0
            prep, failure = None, None
            if world.is_main:
                try:
                    prep = _prepare(cfg, progress, log)
                    _check_memory(prep)
                    if cfg.export.devinterp:
                        _check_export_size(prep)
                except ConfigError as e:
                    failure = e
            if any_rank(failure is not None, world, _rank_device(device, world)):
                raise failure if failure is not None else ConfigError("the job could not be prepared (process 0 says why)")
            if prep is None:
                prep = _prepare(cfg, False, lambda msg: None)
            try:
                chain_block(prep.sampler.chains, world)
            except ValueError as e:
                raise ConfigError(f"sampler.chains: {e}") from None
            created_parents: list[Path] = []
            created_out = False
            if world.is_main:
                try:
                    created_parents, created_out = _claim_output(out, overwrite, checkpoint, held)
                except ConfigError as e:
                    failure = e
            if any_rank(failure is not None, world, _rank_device(device, world)):
                raise failure if failure is not None else ConfigError("the output folder is not usable (process 0 says why)")
            _run_in_stage(prep, out, parent, checkpoint, progress, t_start, world, created_parents, created_out)
        finally:
            torch.set_num_threads(threads)
    return out


def _stage_path(out: Path) -> Path:
    """The stage of a checkpointed job: a hidden sibling of the results folder (resumable)."""
    return out.resolve().parent / f".{out.name}.partial"


def _resolved(out_dir) -> Path:
    from ..outputs import OutputError, resolve_target

    try:
        return resolve_target(Path(out_dir))
    except OutputError as e:
        raise ConfigError(str(e)) from None


def _check_output(out: Path, overwrite: bool, checkpoint) -> None:
    """Refuse a results or checkpoint folder spectro may not write (see :mod:`spectro.outputs`):
    a file, a foreign folder, earlier results without ``overwrite``, a result name held by a
    file spectro cannot verify as its own, folders inside one another."""
    import fnmatch

    from ..outputs import OutputError, blocked_names, check_folder, nested, owned_files
    from .resume import CHECKPOINT_KIND, RESULTS_FILES, RESULTS_KIND

    out = _resolved(out)
    try:
        previous = check_folder(out, RESULTS_KIND, "output folder")
        if checkpoint is not None:
            check_folder(Path(checkpoint.folder), CHECKPOINT_KIND, "checkpoint folder")
    except OutputError as e:
        raise ConfigError(str(e)) from None
    if previous is not None:
        ours = [p.name for p in out.iterdir() if any(fnmatch.fnmatchcase(p.name, n) for n in RESULTS_FILES)]
        blocked = blocked_names(out, ours, previous)
        if previous.get("results") is not None and (owned_files(out, previous) or blocked) and not overwrite:
            raise ConfigError(f"output folder {out} holds results of an earlier run; pass --overwrite (overwrite=True) "
                              "to replace them (only the files spectro wrote are replaced)")
        if blocked:
            raise ConfigError(f"{out / blocked[0]} was not written by spectro (or was changed since); spectro will not "
                              "replace it: move it away, or choose another --out")
    if checkpoint is not None:
        for other, name in ((out, "the results folder"), (_stage_path(out), "the stage folder")):
            if nested(Path(checkpoint.folder), other):
                raise ConfigError(f"checkpoint folder {checkpoint.folder} and {name} {other} must not lie inside one "
                                  "another; choose another --checkpoint")


def _claim_output(out: Path, overwrite: bool, checkpoint, held: contextlib.ExitStack) -> tuple[list[Path], bool]:
    """Process 0: create the parent folder, lock the results (and checkpoint) folder for the run
    (``held`` releases the locks), check again under the lock, complete a commit a killed run
    left half-done, and create the results folder with its marker — all before any sampling, so
    an unusable target (not writable, a mount point the stage cannot reach) fails now. Returns
    the parent folders created and whether the results folder was created."""
    from ..outputs import OutputError, claim_folder, locked, make_parents, recover, release_folder, remove_empty
    from .resume import RESULTS_FILES, RESULTS_KIND

    parent = out.resolve().parent
    try:
        created = make_parents(parent, out, "output folder")
    except OutputError as e:
        raise ConfigError(str(e)) from None
    try:
        if not os.access(parent, os.W_OK):
            raise ConfigError(f"cannot write into {parent}")
        resume = checkpoint is not None and checkpoint.resume  # continues a killed run: its stale lock is taken over
        held.enter_context(locked(out, *([] if checkpoint is None else [Path(checkpoint.folder)]), take_over_stale=resume))
        recover(out)
        _check_output(out, overwrite, checkpoint)  # again: another run may have written meanwhile
        _, made = claim_folder(out, RESULTS_KIND, "output folder", RESULTS_FILES)
        if os.stat(out).st_dev != os.stat(parent).st_dev:
            release_folder(out, made)
            raise ConfigError(f"output folder {out} is a mount point (another file system than {parent}); spectro "
                              "assembles the results beside it and moves them in: give a folder inside it as --out")
    except (ConfigError, OutputError) as e:
        held.close()
        remove_empty(created)
        raise (e if isinstance(e, ConfigError) else ConfigError(str(e))) from None
    return created, made


def _new_stage(out: Path) -> Path:
    """Process 0, no checkpointing: a fresh hidden stage beside ``out`` (same file system) with spectro's marker."""
    from ..outputs import new_stage
    from .resume import STAGE_KIND

    return new_stage(out.parent, f".{out.name}.tmp-", STAGE_KIND)


def _run_in_stage(prep: _Prepared, out: Path, parent: Path, checkpoint, progress: bool, t_start: float, world,
                  created_parents: list[Path], created_out: bool = False) -> None:
    """Sample and write into the stage, then move it into ``out``; clean up after a failure.

    An interrupted checkpointed job (Ctrl-C, SIGTERM, a full disk, a corrupt snapshot) keeps its
    stage and snapshots for ``--resume``; a failure that a resume would only repeat (a
    divergence, a bad config) and any failure without checkpointing leave nothing behind.
    """
    from ..engine.driver import SamplingStopped
    from ..outputs import CommitRefused, release_folder, remove_empty, remove_owned
    from ..nn.posterior import DivergenceError
    from .resume import JobState

    state, stage, started = None, None, False
    try:
        if checkpoint is not None:
            stage = _stage_path(out)
            fingerprint = {"config": _resolved_config(prep), "processes": world.size}
            state = JobState(checkpoint, fingerprint, stage, world)
            try:
                state.start()
            except ValueError as e:
                raise ConfigError(str(e)) from None
            started = True
        elif world.is_main:
            stage = _new_stage(out)
            started = True
        _run(prep, stage, progress, t_start, world, None if state is None else state.checkpointing())
        if world.is_main:
            _install_results(prep, stage, out)
        if state is not None:
            state.finish()
    except BaseException as e:
        discard = state is None or isinstance(e, (DivergenceError, SamplingStopped, ConfigError))
        if isinstance(e, CommitRefused):
            discard = False  # the finished results stay in the stage the message names
        if world.is_main and started and discard:
            remove_owned(stage)
            if state is not None:
                remove_owned(state.folder)
        if world.is_main:
            release_folder(out, created_out)  # the marker of a folder that got no results
        if world.is_main and (discard or not started):
            remove_empty(created_parents)
        raise


def _install_results(prep: _Prepared, stage: Path, out: Path) -> None:
    """Write report.html on the stage, then move the stage's files into ``out`` in one step
    (:func:`spectro.outputs.commit_results`: only spectro's verified files of an earlier run there
    are replaced)."""
    from ..outputs import commit_results, run_id
    from ..report import report_for_job
    from .resume import RESULTS_KIND

    report_for_job(stage, shown_as=out)  # report.html (a failure is a warning, never a lost run)
    commit_results(out, stage, RESULTS_KIND, run_id(_resolved_config(prep)))


def _rank_device(device: str, world) -> str:
    """One GPU per process under torchrun: "cuda" → "cuda:LOCAL_RANK"; anything else unchanged."""
    if world.size > 1 and device == "cuda":
        return f"cuda:{int(os.environ.get('LOCAL_RANK', world.rank))}"
    return device


def _check_memory(prep: _Prepared) -> None:
    """Refuse chains × parameters that cannot fit in this machine's memory (before allocating)."""
    from ..devices import check_memory

    s = prep.sampler
    n_params = sum(p.numel() for p in prep.model.parameters())
    width = 8 if str(s.master_dtype).endswith("64") else 4
    try:  # chain weights, RMSProp state, gradients and noise: a few [chains, parameters] tensors
        check_memory(6.0 * s.chains * n_params * width, f"sampler.chains: {s.chains} chains of a {n_params}-parameter model")
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _check_export_size(prep: _Prepared) -> None:
    s = prep.sampler
    per_run = s.chains * s.draws * prep.probe.size * (prep.context - 1) * 4
    total_mb = per_run * len(prep.components) / 2**20
    if total_mb > prep.cfg.export.max_mb:
        raise ConfigError(f"export.max_mb: the devinterp export would hold {total_mb:.0f} MB of per-draw probe losses "
                          f"(chains × draws × {prep.probe.size} probe sequences × {prep.context - 1} tokens × "
                          f"{len(prep.components)} components); raise export.max_mb, lower the sizes, or set export.devinterp false")


def _run(prep: _Prepared, stage: Path | None, progress: bool, t_start: float, world, checkpoint) -> None:
    """Sample every component through the driver (:func:`spectro.engine.driver.measure_components`:
    Baker's estimator on the ``component_loss`` rows, −Cov on the rest), estimate, and (process 0)
    write the results into ``stage``; ``checkpoint``: the driver's snapshots (resume)."""
    from ..analysis.traces import plot_traces
    from ..engine.distributed import chain_block
    from ..engine.driver import measure_components
    from ..io import write_json
    from ..models import next_token_loss
    from ..nn.observables import MeanLoss, mean_loss
    from ..engine.seeding import run_seed
    from ..nn.posterior import LocalizedPosterior
    from ..nn.system import PosteriorSystem, run_config

    cfg, s = prep.cfg, prep.sampler
    main = world.is_main
    start, stop = chain_block(s.chains, world)
    dev = _rank_device(s.device, world)
    local_s = replace(s, chains=stop - start, chain_offset=s.chain_offset + start, device=dev)  # this process's chains
    s_dev = replace(s, device=dev)  # all chains, on this process's device (the driver splits them)
    versions = _versions()
    n_pos = prep.context - 1
    if main:
        write_json(stage / "config.json", _resolved_config(prep))

    # L̄(w*) on the base group, L_n(w*) per token on the training windows (for the export)
    ref_post = LocalizedPosterior(prep.model, next_token_loss, prep.train, local_s, None)
    at_star = prep.probe.evaluate_at_w_star(ref_post)
    base_ref = float(mean_loss(at_star, prep.probe, _BASE)[0])
    if not math.isfinite(base_ref):
        raise ConfigError(f"model.checkpoint: the loss at w* (the checkpoint's own weights) on the base probes is "
                          f"{base_ref}: the weights or the data give a non-finite loss; no sampler setting can fix that")
    observables = [MeanLoss(_BASE, reference=base_ref) if o is None else o for o in prep.observables]
    obs_rows: list[str] = []  # observable kind per output row (component_loss rows take Baker's estimator)
    for o, kind in zip(observables, prep.observable_kinds):
        obs_rows += [kind] * len(o.names(prep.probe, n_pos))
    obs_names = ["phi_C" if kind == "component_loss" else n
                 for o, kind in zip(observables, prep.observable_kinds) for n in o.names(prep.probe, n_pos)]
    field_names = [n for f in prep.fields for n in f.names(prep.probe, n_pos)]
    train_token_loss = None
    if cfg.export.devinterp and main:
        train_token_loss = ref_post.losses_at_w_star(prep.train).mean(dim=0).double().cpu().numpy()  # [T]
        (stage / "devinterp").mkdir(exist_ok=True)
    started: dict[str, float] = {}

    def system(name: str, restriction):
        def build() -> PosteriorSystem:  # called by the driver when the component's run starts
            started[name] = time.perf_counter()
            run_s = s_dev if restriction is None else replace(s_dev, seed=run_seed(s.seed, name))  # independent streams
            return PosteriorSystem(prep.model, next_token_loss, prep.train, run_s, prep.probe, observables, prep.fields,
                                   restriction=restriction, name=name, names=(obs_names, field_names, n_pos),
                                   record=cfg.export.devinterp)
        return build

    def on_result(name: str, result, sampled) -> None:  # every process (the gathers), then process 0 writes
        res = sampled.system.result(sampled.gather)
        record = sampled.system.recorded(sampled.gather) if cfg.export.devinterp else None
        if not main:
            return
        result.meta = {"component": name, "job": cfg.name, "sampling": res.summary(), "loss_trace": res.loss_trace.tolist(),
                       "phi_reference_loss": base_ref, "seconds": time.perf_counter() - started[name],
                       "processes": world.size, "versions": versions}
        result.save(stage / f"chi_{name}.npz")
        if cfg.export.devinterp:
            from .export import write_samples

            write_samples(stage / "devinterp" / f"samples_{name}.zarr", losses=record, probe=prep.probe,
                          input_ids=prep.input_ids, init_token_loss=train_token_loss, loss_trace=res.loss_trace,
                          sampler=s, nbeta=res.nbeta, n_train=int(prep.train.shape[0]), component=name,
                          restriction_free=res.n_free, sampling_task=_BASE)

    phi_rows = [i for i, kind in enumerate(obs_rows) if kind == "component_loss"]
    heads = {name: system(name, r) for name, r in prep.components.items() if r is not None}
    common = dict(checkpoint=checkpoint, world=world, progress=progress, on_result=on_result)
    if phi_rows and heads:  # Baker's estimator for φ_C: the full run first (_prepare added it)
        results = measure_components(system("full", None), heads, run_config(s), rows=phi_rows, full_name="full",
                                     **common)
    else:
        results = measure_components(None, {name: system(name, r) for name, r in prep.components.items()},
                                     run_config(s), rows=[], **common)
    if not main:
        return

    results = {name: results[name] for name in prep.components}  # config order
    restricted = {n: r for n, r in results.items() if prep.components[n] is not None} or results
    per_token = any(f.startswith("tok:") for f in next(iter(restricted.values())).fields)
    if cfg.export.devinterp and "phi_C" in obs_names and per_token:  # SusceptibilitiesV2 is a per-token layout
        from .export import write_susceptibilities

        write_susceptibilities(stage / "devinterp" / "susceptibilities.zarr", restricted, prep.input_ids,
                               observable="phi_C")
    summaries = {name: _component_summary(result, prep) for name, result in results.items()}
    plot_traces(results, stage / "traces.png", domains=prep.domains,
                title=f"{cfg.name or 'spectro nn job'}: {cfg.model.checkpoint if cfg.model.checkpoint.startswith('builtin:') else prep.checkpoint}")
    summary = {
        "format": "spectro.nn_job/1",
        "name": cfg.name,
        "components": summaries,
        "run": {
            "checkpoint": str(prep.checkpoint),
            "model": prep.model_card or prep.model.cfg.to_dict(),
            "n_params": int(sum(p.numel() for p in prep.model.parameters())),
            "tokenizer": _fp(prep.tokenizer),
            "corpus": prep.corpus_root,
            "domains": prep.domains,
            "context": prep.context,
            "n_train": int(prep.train.shape[0]),
            "probe_sizes": {g: prep.probe.group_size(g) for g in prep.probe.groups},
            "nbeta": prep.nbeta,
            "base_loss_at_w_star": base_ref,
            "observables": obs_names,
            "n_fields": len(field_names),
            "processes": world.size,
            "estimator": "chi = -Cov(phi, psi), psi = L(q') - L(q); component_loss under a restricted component: "
                         "baker2025 -(E_C[phi*psi] - E_C[phi]*E_full[psi])",
        },
        "seconds": time.perf_counter() - t_start,
        "versions": versions,
        "files": sorted(p.name for p in stage.iterdir() if not p.name.startswith(".")) + ["summary.json"],
    }
    write_json(stage / "summary.json", summary)


def _fp(tokenizer) -> dict:
    from ..data.tokenizer import fingerprint

    return fingerprint(tokenizer).to_dict()


def _finite_or_none(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _component_summary(result, prep: _Prepared) -> dict:
    """The summary.json entry of a component, from its result (``meta["sampling"]``: the sampler's summary)."""
    res, seconds = result.meta["sampling"], result.meta["seconds"]
    domains = {}
    row = 0  # per-domain table on the first observable (phi_C when present)
    for d in prep.domains:
        name = f"dL:{d}"
        if name in result.fields:
            e = result.entry(result.observables[row], name)
            domains[d] = {"chi": _finite_or_none(e["mean"]), "stderr": _finite_or_none(e["stderr"]),
                          "ci95": [_finite_or_none(x) for x in e["ci95"]], "dof": _finite_or_none(e["dof"]),
                          "ess": _finite_or_none(e["ess"]), "rhat": _finite_or_none(e["rhat"]),
                          "reliable": e["reliable"], "why": e["why"]}
    with np.errstate(invalid="ignore"):
        return {
            "n_free": res["n_free"],
            "llc": _finite_or_none(res["llc"]),
            "llc_stderr": _finite_or_none(res["llc_stderr"]),
            "llc_dof": _finite_or_none(res["llc_dof"]),
            "llc_ess_bulk": _finite_or_none(res["llc_ess_bulk"]),
            "llc_ess_tail": _finite_or_none(res["llc_ess_tail"]),
            "llc_per_chain": [float(x) for x in res["llc_per_chain"]],
            "loss_trace_rhat": _finite_or_none(res["llc_rhat"]),
            "init_loss": res["init_loss"],
            "chi_min_ess": _finite_or_none(np.nanmin(result.ess)) if np.isfinite(result.ess).any() else None,
            "chi_max_rhat": _finite_or_none(np.nanmax(result.rhat)) if np.isfinite(result.rhat).any() else None,
            "chi_median_ess": _finite_or_none(np.nanmedian(result.ess)) if np.isfinite(result.ess).any() else None,
            "chi_median_rhat": _finite_or_none(np.nanmedian(result.rhat)) if np.isfinite(result.rhat).any() else None,
            "observable": result.observables[row],
            "chi_entries": int(result.chi.size),
            "chi_unreliable": int((~result.reliable).sum()),
            "chi_warning": result.warning(),
            "full_run_variance_share": result.meta.get("full_run_variance_share"),
            "domains": domains,
            "seconds": seconds,
            "chains": result.n_chains,
            "draws": result.n_draws,
        }


def _resolved_config(prep: _Prepared) -> dict:
    d = prep.cfg.to_dict()
    d["data"]["domains"] = list(prep.domains)
    d["data"]["context"] = prep.context
    d["model"]["checkpoint"] = prep.cfg.model.checkpoint if prep.cfg.model.checkpoint.startswith("builtin:") else str(Path(prep.checkpoint).resolve())
    sampler = prep.sampler.to_dict()
    d["sampler"] = {k: v for k, v in sampler.items() if k in _SAMPLER_KEYS and v is not None}
    if not d["sampler"]["control_variate"]:  # the default: left out, so older results keep their run id
        del d["sampler"]["control_variate"]
    d["sampler"].update(sampler["options"])  # a method's own settings are sampler keys (spectro.nn.samplers)
    return d


# ============================================================================ reading results
def summary_table(out_dir: str | os.PathLike) -> str:
    """A short text table of a results folder: per component × domain, mean χ ± stderr, plus LLC and diagnostics."""
    summary = json.loads((Path(out_dir) / "summary.json").read_text())
    comps = summary["components"]
    domains = summary["run"]["domains"]
    obs = next(iter(comps.values()))["observable"] if comps else ""
    head = (f"{'component':>9} " + " ".join(f"{d:>19}" for d in domains)
            + f" {'LLC':>14} {'R̂ loss':>7} {'ESS χ min/med':>14} {'R̂ χ med/max':>12} {'s':>5}")
    lines = [f"mean χ[{obs}] over each domain's tokens (± stderr; '?' = no trustworthy error bar); "
             f"χ > 0: up-weighting the domain raises {obs}", head]
    warnings_ = []
    for name, c in comps.items():
        cells = []
        for d in domains:
            e = c["domains"].get(d)
            mark = " " if e is None or e.get("reliable", True) else "?"
            cells.append(f"{'—':>19}" if e is None or e["chi"] is None else f"{e['chi']:>+10.4f} ± {e['stderr']:<6.4f}{mark}")
        if c.get("chi_warning"):
            warnings_.append(f"  {name}: {c['chi_warning']}")
        llc = "—" if c["llc"] is None else f"{c['llc']:.2f} ± {c['llc_stderr']:.2f}"
        fmt = lambda x, spec: "—" if x is None else format(x, spec)  # noqa: E731
        ess = f"{fmt(c['chi_min_ess'], '.0f')}/{fmt(c.get('chi_median_ess'), '.0f')}"
        rhat = f"{fmt(c.get('chi_median_rhat'), '.2f')}/{fmt(c['chi_max_rhat'], '.2f')}"
        lines.append(f"{name:>9} " + " ".join(cells) + f" {llc:>14} {fmt(c['loss_trace_rhat'], '.2f'):>7} "
                     f"{ess:>14} {rhat:>12} {c['seconds']:5.1f}")
    if warnings_:
        lines += ["unreliable χ entries (their stderr and interval cannot be trusted):", *warnings_]
    return "\n".join(lines)
