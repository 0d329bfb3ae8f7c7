"""Export a job to devinterp 2.0.1's xarray/zarr result schemas, so its analysis functions read our runs.

Two stores per job (under ``OUT/devinterp/``):

``samples_<component>.zarr`` — the layout of ``devinterp.slt.sampling.sample()`` (created with
devinterp's own :class:`~devinterp.slt.zarr_schema.ZarrSchema`, so dtypes, fill values, chunking
and dimension names are the ones its readers expect); open with
``xr.open_datatree(path, engine="zarr", consolidated=False)``:

* ``loss_<group>`` (chain, draw, batch_<group>, token_pos) float32 — per-token probe losses of
  every chain at every draw, for each probe group (``base`` = the sampling task, one per domain);
* ``input_ids_<group>`` (batch_<group>, token) int64 — the probe sequences;
* ``init_loss`` (chain, token_pos) — per-position loss at w* averaged over the SGLD training
  sequences (its mean is L_n(w*), what devinterp's init_loss estimates from minibatches);
* ``sampling_loss_micro`` (chain, step, batch_sampling=1, token_pos) and ``sampling_loss``
  (chain, draw, batch=1, token_pos) — the chain's minibatch loss at each *recorded draw*,
  broadcast over token_pos. We stream the sampler and keep only per-draw minibatch means, so the
  ``step`` axis holds the recorded draws (burn-in and thinning steps are not stored) and there
  is no ``sampling_input_ids_micro``;
* root attributes ``metadata.config.sampler`` (devinterp's ``SamplerConfig`` fields: lr = ε,
  n_beta = nβ, localization = γ, ...), ``metadata.config.observables``, ``completed = 1``, and
  ``spectro`` (the notes above, the component, our estimator conventions).

With these, ``devinterp.slt.llc.compute_llc(tree)`` reproduces our LLC λ̂ = nβ·(E[L_m] − L_n(w*))
and ``devinterp.slt.susceptibilities.compute_susceptibilities({"full": …, "l0h0": …}, "base")``
runs devinterp's per-token susceptibility on our draws. It differs from our ``chi_<C>.npz``
only by devinterp's φ offset: devinterp takes φ = L̄(w) − mean(init_loss) = L̄(w) − L_n(w*),
we take φ_C = L̄(w) − L̄(w*) (zero at w*), so with δ = L̄(w*) − L_n(w*)::

    χ_devinterp = χ_spectro − δ·(E_C[ψ] − E_full[ψ])          (exact; tested)

``susceptibilities.zarr`` — *our* χ in devinterp's ``SusceptibilitiesV2`` layout (the output of
``compute_susceptibilities``): ``/susceptibilities`` with ``sus`` (sus_flat, wr) and coordinates
``dataset_id``, ``batch``, ``target_position`` (= predicted position + 1) on ``sus_flat``, plus
our ``sus_stderr`` (sus_flat, wr); ``/context`` with ``input_ids`` (ctx_flat) and coordinates
``dataset_id``, ``batch``, ``position``; both with ``attrs["dataset_id_to_name"]`` (sorted probe
domains). ``wr`` lists the restricted components (or ``full`` alone when there is none).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from einops import repeat

__all__ = ["write_samples", "write_susceptibilities", "open_samples", "open_susceptibilities", "token_field_grid"]

_TOKEN_FIELD = re.compile(r"tok:(?P<group>.+)\[(?P<i>\d+),(?P<t>\d+)\]")


def _obs_id(name: str) -> str:
    from devinterp.slt.observables import to_obs_id

    return to_obs_id(name)


def devinterp_sampler_dict(sampler: Any, nbeta: float, n_train: int) -> dict:
    """Our :class:`spectro.nn.SamplerConfig` as devinterp's ``SamplerConfig`` dump (plus the fields it adds).

    The method's devinterp name and kwargs come from the registry (:mod:`spectro.nn.samplers`); a
    method devinterp does not have is written as ``"spectro:<name>"`` with its own hyperparameters
    (and ``control_variate`` when set), so the dump never claims a devinterp method that did not run."""
    from devinterp.slt.config import SamplerConfig as DevSamplerConfig

    from ..nn.samplers import get

    method = get(sampler.method)
    values = method.values(sampler)
    name, kwargs = method.devinterp(values) if method.devinterp is not None else (None, {})
    if name is None or getattr(sampler, "control_variate", False):
        name, kwargs = None, {**values, **({"control_variate": True} if getattr(sampler, "control_variate", False) else {})}
    batch = sampler.batch_size if sampler.batch_size is not None else n_train
    cfg = DevSamplerConfig(
        lr=sampler.epsilon, n_beta=nbeta, batch_size=batch, num_chains=sampler.chains, num_draws=sampler.draws,
        num_burnin_steps=sampler.burn_in, num_steps_bw_draws=sampler.steps_per_draw,
        num_init_loss_batches=max(1, n_train // batch), init_seed=sampler.seed, localization=sampler.gamma,
        sampling_method=name or "sgmcmc_sgld", sampling_method_kwargs=kwargs if name else {}, shuffle=batch < n_train,
        match_sampling_input_ids_across_chains=False,
    )
    out = {**cfg.model_dump(), "scheduler_type": "constant", "scheduler_kwargs": None, "cores": 1, "online": False}
    if name is None:
        out["sampling_method"], out["sampling_method_kwargs"] = f"spectro:{sampler.method}", kwargs
    return out


def write_samples(path: str | Path, **kwargs) -> Path:
    """Write one component's draws as a devinterp ``sample()`` store (:func:`_write_samples`); a
    full disk is a one-line error naming the store."""
    from ..io import disk_errors

    with disk_errors(path):
        return _write_samples(path, **kwargs)


def _write_samples(
    path: str | Path,
    *,
    losses: np.ndarray,
    probe: Any,
    input_ids: Mapping[str, np.ndarray],
    init_token_loss: np.ndarray,
    loss_trace: np.ndarray,
    sampler: Any,
    nbeta: float,
    n_train: int,
    component: str,
    restriction_free: int,
    sampling_task: str = "base",
) -> Path:
    """Write one component's draws as a devinterp ``sample()`` store (see the module docstring).

    ``losses`` [C, draws, N, T]: per-token probe losses of the union ``probe`` (groups in its
    order); ``input_ids`` group → [n_g, T+1]; ``init_token_loss`` [T]; ``loss_trace`` [C, draws].
    """
    import zarr
    from devinterp.slt.zarr_schema import DataArraySpec, ZarrSchema
    from zarr.storage import LocalStore

    path = Path(path)
    C, D, N, T = losses.shape
    if loss_trace.shape != (C, D):
        raise ValueError(f"loss_trace has shape {loss_trace.shape}, expected {(C, D)}")
    chunk_d = min(50, D)
    arrays: dict[str, DataArraySpec] = {
        "init_loss": DataArraySpec(dtype_str="float32", dims=("chain", "token_pos"), shape=(C, T), chunks=(1, T)),
        "sampling_loss": DataArraySpec(dtype_str="float32", dims=("chain", "draw", "batch", "token_pos"),
                                       shape=(C, D, 1, T), chunks=(1, chunk_d, 1, T)),
        "sampling_loss_micro": DataArraySpec(dtype_str="float32", dims=("chain", "step", "batch_sampling", "token_pos"),
                                             shape=(C, D, 1, T), chunks=(1, chunk_d, 1, T)),
    }
    groups = list(probe.groups)
    for g in groups:
        oid = _obs_id(g)
        n = probe.group_size(g)
        arrays[f"loss_{oid}"] = DataArraySpec(dtype_str="float32", dims=("chain", "draw", f"batch_{oid}", "token_pos"),
                                              shape=(C, D, n, T), chunks=(1, chunk_d, n, T))
        arrays[f"input_ids_{oid}"] = DataArraySpec(dtype_str="int64", dims=(f"batch_{oid}", "token"), shape=(n, T + 1))
    attrs = {
        "metadata": {
            "config": {
                "sampler": devinterp_sampler_dict(sampler, nbeta, n_train),
                "observables": [{"type": "ObserveDifferentDataset", "obs_id": _obs_id(g), "batches_per_draw": 1} for g in groups],
                "chain_buffer_size": chunk_d,
                "shared_observable_dims": ["token", "token_pos"],
                "tokenizer_context_length": T + 1,
            }
        },
        "spectro": {
            "format": "spectro.devinterp_samples/1",
            "component": component,
            "n_free": int(restriction_free),
            "sampling_task": _obs_id(sampling_task),
            "n_train": int(n_train),
            "notes": "sampling_loss(_micro): per-draw minibatch mean loss broadcast over token_pos, batch axis of size 1; "
                     "the step axis holds the recorded draws only (no burn-in / thinning steps); no sampling_input_ids_micro. "
                     "init_loss: per-position loss at w* averaged over the n_train SGLD training sequences. "
                     "Losses evaluated in eval mode.",
        },
    }
    root, arrs = ZarrSchema(arrays_meta=arrays, group_attrs={"": attrs}).create_hierarchy(LocalStore(str(path)))
    arrs["init_loss"][...] = repeat(np.asarray(init_token_loss, dtype=np.float32), "token_pos -> chain token_pos", chain=C)
    trace = repeat(np.asarray(loss_trace, dtype=np.float32), "chain draw -> chain draw 1 token_pos", token_pos=T)
    arrs["sampling_loss"][...] = trace
    arrs["sampling_loss_micro"][...] = trace
    for g in groups:
        oid = _obs_id(g)
        sl = probe.slices[g]
        arrs[f"loss_{oid}"][...] = np.ascontiguousarray(losses[:, :, sl, :], dtype=np.float32)
        ids = np.asarray(input_ids[g], dtype=np.int64)
        if ids.shape != (probe.group_size(g), T + 1):
            raise ValueError(f"input_ids of group {g!r} have shape {ids.shape}, expected {(probe.group_size(g), T + 1)}")
        arrs[f"input_ids_{oid}"][...] = ids
    zarr.open_group(str(path)).attrs["completed"] = 1
    return path


def token_field_grid(result) -> dict[str, tuple[list[int], list[int], np.ndarray]]:
    """Per probe group: (sample ids, positions, index grid [samples, positions] into the fields) of
    ``result``'s per-token fields (its typed field axis; the ``tok:G[i,t]`` names of files before
    format /3). Raises ValueError when a group's tokens do not form a full grid."""
    by_group: dict[str, dict[tuple[int, int], int]] = {}
    ax = result.field_axis
    if {"kind", "group", "sample", "position"} <= set(ax.columns):
        for a in np.flatnonzero(ax.column("kind") == "token"):
            by_group.setdefault(str(ax.column("group")[a]), {})[
                (int(ax.column("sample")[a]), int(ax.column("position")[a]))] = int(a)
    for a, name in enumerate(result.fields if not by_group else []):
        m = _TOKEN_FIELD.fullmatch(name)
        if m:
            by_group.setdefault(m["group"], {})[(int(m["i"]), int(m["t"]))] = a
    out = {}
    for g, entries in by_group.items():
        samples = sorted({i for i, _ in entries})
        positions = sorted({t for _, t in entries})
        grid = np.full((len(samples), len(positions)), -1, dtype=np.int64)
        for (i, t), a in entries.items():
            grid[samples.index(i), positions.index(t)] = a
        if (grid < 0).any():
            raise ValueError(f"token fields of group {g!r} do not form a samples × positions grid")
        out[g] = (samples, positions, grid)
    return out


def write_susceptibilities(path: str | Path, results: Mapping[str, Any], input_ids: Mapping[str, np.ndarray],
                           observable: str = "phi_C") -> Path:
    """Write our per-token χ of ``observable`` for each component in devinterp's SusceptibilitiesV2 layout."""
    import xarray as xr

    path = Path(path)
    wr_order = list(results)
    first = results[wr_order[0]]
    grids = token_field_grid(first)
    if not grids:
        raise ValueError("no per-token (tok:…) fields to export")
    names = {_obs_id(g): g for g in grids}
    obs_order = sorted(names)
    sus_parts, se_parts, ids_parts = [], [], []
    sus_coords: dict[str, list] = {"dataset_id": [], "batch": [], "target_position": []}
    ctx_coords: dict[str, list] = {"dataset_id": [], "batch": [], "position": []}
    for did, oid in enumerate(obs_order):
        g = names[oid]
        samples, positions, grid = grids[g]
        cols_sus, cols_se = [], []
        for wr in wr_order:
            r = results[wr]
            if r.fields != first.fields:
                raise ValueError(f"component {wr!r} has different fields from {wr_order[0]!r}")
            row = r.observables.index(observable)
            cols_sus.append(r.chi[row][grid].ravel())
            cols_se.append(r.stderr[row][grid].ravel())
        sus_parts.append(np.stack(cols_sus, axis=-1))
        se_parts.append(np.stack(cols_se, axis=-1))
        bb, tt = np.meshgrid(np.asarray(samples), np.asarray(positions) + 1, indexing="ij")
        sus_coords["dataset_id"].append(np.full(bb.size, did))
        sus_coords["batch"].append(bb.ravel())
        sus_coords["target_position"].append(tt.ravel())
        ids = np.asarray(input_ids[g])[samples]
        ib, ip = np.meshgrid(np.asarray(samples), np.arange(ids.shape[1]), indexing="ij")
        ids_parts.append(ids.ravel())
        ctx_coords["dataset_id"].append(np.full(ib.size, did))
        ctx_coords["batch"].append(ib.ravel())
        ctx_coords["position"].append(ip.ravel())
    sus_c = xr.Coordinates({k: ("sus_flat", np.concatenate(v)) for k, v in sus_coords.items()}, indexes={})
    ctx_c = xr.Coordinates({k: ("ctx_flat", np.concatenate(v)) for k, v in ctx_coords.items()}, indexes={})
    tree = xr.DataTree.from_dict({
        "/susceptibilities": xr.Dataset(
            {"sus": xr.DataArray(np.concatenate(sus_parts), dims=["sus_flat", "wr"]),
             "sus_stderr": xr.DataArray(np.concatenate(se_parts), dims=["sus_flat", "wr"])},
            coords=sus_c.merge(xr.Coordinates({"wr": np.asarray(wr_order, dtype=object)})),  # variable-length strings: a stable zarr v3 dtype
            attrs={"dataset_id_to_name": obs_order, "observable": observable,
                   "convention": "spectro chi: -(E_C[phi*psi] - E_C[phi]*E_full[psi]), phi = Lbar(w) - Lbar(w*), "
                                 "psi = l_xy - Lbar (Baker et al. 2025); full: -Cov(phi, psi)"},
        ),
        "/context": xr.Dataset({"input_ids": xr.DataArray(np.concatenate(ids_parts), dims=["ctx_flat"])},
                               coords=ctx_c, attrs={"dataset_id_to_name": obs_order}),
    })
    from ..io import disk_errors

    with disk_errors(path):  # a full disk: one line naming the store
        tree.to_zarr(str(path), mode="w", consolidated=False)
    return path


def open_samples(path: str | Path):
    """A ``samples_<component>.zarr`` store as an ``xr.DataTree`` (what devinterp's ``sample()`` returns)."""
    import xarray as xr

    return xr.open_datatree(str(path), engine="zarr", consolidated=False)


def open_susceptibilities(path: str | Path):
    """``susceptibilities.zarr`` as an ``xr.DataTree`` (devinterp's SusceptibilitiesV2 layout)."""
    import xarray as xr

    return xr.open_datatree(str(path), engine="zarr", consolidated=False)
