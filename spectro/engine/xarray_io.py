"""A :class:`~spectro.engine.Susceptibility` as an ``xarray.Dataset``, and in devinterp's layout.

:func:`to_xarray` / :func:`from_xarray` convert exactly both ways. :func:`to_devinterp_dataset`
writes per-token χ in the layout of devinterp 2.0.1's ``compute_susceptibilities`` (its
``SusceptibilitiesV2`` ``/susceptibilities`` node, devinterp/slt/susceptibilities.py). xarray is
imported only when one of these is called (``pip install xarray``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np

from .coords import Axis, EstimatorInfo
from .susceptibility import FORMAT, Flags, Susceptibility

__all__ = ["to_xarray", "from_xarray", "to_devinterp_dataset"]

DIMS = ("observable", "field")
_ENTRY = ("chi", "stderr", "stderr_chains", "ess", "rhat", "dof", "flags")  # [observable, field]
_ROW = ("observable_mean", "observable_stderr")
_COL = ("field_mean", "field_stderr")
_DERIVED = ("reliable", "chi_lower", "chi_upper")  # recomputed from the others; not read back


def _xarray():
    try:
        import xarray as xr
    except ImportError:
        raise ImportError("converting a susceptibility to xarray needs xarray: pip install xarray") from None
    return xr


def to_xarray(sus: Susceptibility):
    """``xarray.Dataset`` with dims (observable, field), the axis labels as their index.

    Data variables: ``chi``, ``stderr``, ``stderr_chains``, ``ess``, ``rhat``, ``dof``, ``flags``
    (CF ``flag_masks``/``flag_meanings``), ``reliable`` (bool), ``chi_lower``/``chi_upper`` (the
    95 % t interval), ``noise`` when present; ``observable_mean``/``observable_stderr`` on
    observable, ``field_mean``/``field_stderr`` on field. Every axis column is a non-dimension
    coordinate on its dimension, under its own name, or ``<axis>_<name>`` when both axes have
    it or a data variable is so named (``attrs["axis_columns"]`` maps coordinates to columns). Attributes: ``format``, ``scale``,
    ``n_chains``, ``n_draws``, and JSON strings ``estimator`` and ``meta`` (netCDF attributes
    must be scalars or strings).
    """
    xr = _xarray()
    dims = {name: (DIMS, getattr(sus, name)) for name in _ENTRY}
    lo, hi = sus.interval(0.95)
    dims.update(reliable=(DIMS, sus.reliable), chi_lower=(DIMS, lo), chi_upper=(DIMS, hi))
    if sus.noise is not None:
        dims["noise"] = (DIMS, sus.noise)
    dims.update({name: ("observable", getattr(sus, name)) for name in _ROW})
    dims.update({name: ("field", getattr(sus, name)) for name in _COL})
    coords = {"observable": np.asarray(sus.observables, dtype=str), "field": np.asarray(sus.fields, dtype=str)}
    shared = set(sus.observable_axis.columns) & set(sus.field_axis.columns)
    columns = {}  # coordinate name -> [axis, column]
    for ax in (sus.observable_axis, sus.field_axis):
        for key, col in ax.columns.items():
            name = f"{ax.name}_{key}" if (key in shared or key in dims or key in DIMS) else key
            if name in coords or name in dims:
                raise ValueError(f"column {key!r} of axis {ax.name!r} clashes with coordinate or data variable "
                                 f"{name!r} of the dataset: rename the column")
            coords[name] = (ax.name, col)
            columns[name] = [ax.name, key]
    ds = xr.Dataset(dims, coords=coords, attrs={
        "format": FORMAT,
        "scale": sus.scale,
        "n_chains": sus.n_chains,
        "n_draws": sus.n_draws,
        "estimator": json.dumps(sus.estimator.to_dict() if sus.estimator is not None else None),
        "meta": json.dumps(sus.meta, default=str),
        "axis_columns": json.dumps(columns),
    })
    ds["flags"].attrs = {"flag_masks": [int(f) for f in Flags],
                         "flag_meanings": " ".join(f.name.lower() for f in Flags)}
    ds["chi_lower"].attrs = ds["chi_upper"].attrs = {"level": 0.95}
    return ds


def from_xarray(ds) -> Susceptibility:
    """The :class:`Susceptibility` that :func:`to_xarray` made ``ds`` from (derived variables are recomputed)."""
    missing = [n for n in _ENTRY + _ROW + _COL if n not in ds.data_vars]
    if missing or ds.attrs.get("format") != FORMAT:
        raise ValueError(f"not a spectro susceptibility dataset (format {ds.attrs.get('format')!r}, "
                         f"missing variables {missing})")
    if ds["chi"].dims != DIMS:
        raise ValueError(f"chi has dims {ds['chi'].dims}, expected {DIMS}")
    labels = {d: [str(x) for x in ds[d].values] for d in DIMS}
    columns = json.loads(ds.attrs.get("axis_columns", "{}"))  # coordinate name -> [axis, column]
    axes = {d: Axis(d, tuple(labels[d]), {columns.get(str(k), [d, str(k)])[1]: c.values for k, c in ds.coords.items()
                                          if k not in DIMS and c.dims == (d,)}) for d in DIMS}
    estimator = json.loads(ds.attrs["estimator"])
    return Susceptibility(
        **{name: ds[name].values for name in _ENTRY + _ROW + _COL},
        noise=ds["noise"].values if "noise" in ds.data_vars else None,
        observables=labels["observable"],
        fields=labels["field"],
        scale=float(ds.attrs["scale"]),
        n_chains=int(ds.attrs["n_chains"]),
        n_draws=int(ds.attrs["n_draws"]),
        meta=json.loads(ds.attrs["meta"]),
        observable_axis=axes["observable"],
        field_axis=axes["field"],
        estimator=EstimatorInfo.from_dict(estimator) if estimator is not None else None,
    )


def to_devinterp_dataset(results: Mapping[str, Susceptibility], observable: str | None = None):
    """Per-token χ of ``observable`` for weight restrictions ``results`` (name → result) in devinterp's layout.

    devinterp 2.0.1 (``devinterp.slt.susceptibilities.compute_susceptibilities``, its
    ``_build_output``) returns a DataTree with ``/susceptibilities``: ``sus`` (sus_flat, wr),
    coordinates ``dataset_id``, ``batch``, ``target_position`` on ``sus_flat`` (entries ordered by
    dataset_id, then batch, then target_position), ``wr`` the restriction names, and
    ``attrs["dataset_id_to_name"]`` the sorted probe-dataset ids (``to_obs_id`` of the group). This
    returns that node as a Dataset, plus our ``sus_stderr`` (sus_flat, wr) and ``convention``.

    The field axis must have the columns ``group`` (str), ``sample`` (int, devinterp's batch) and
    ``position`` (int, the predicted position t: devinterp's ``target_position`` = t + 1); with a
    ``kind`` column only the fields of kind ``"token"`` are taken. Every result must have the same
    fields. ``observable`` defaults to the only observable. Not provided, because an estimate does
    not hold them: devinterp's ``/context`` node (the probe ``input_ids``: see
    :func:`spectro.jobs.export.write_susceptibilities`) and anything per chain or per draw (devinterp's
    ``sample()`` stores; :func:`spectro.jobs.export.write_samples`). The numbers are ours: devinterp's
    own estimate differs by its φ offset (init_loss, :mod:`spectro.jobs.export`).
    """
    xr = _xarray()
    if not results:
        raise ValueError("need at least one result")
    wr_order = list(results)
    first = results[wr_order[0]]
    for wr, r in results.items():
        if r.field_axis != first.field_axis:
            raise ValueError(f"result {wr!r} has different fields (or field columns) from {wr_order[0]!r}")
    ax = first.field_axis
    need = [c for c in ("group", "sample", "position") if c not in ax.columns]
    if need:
        raise ValueError(f"the field axis has no column(s) {need}: a devinterp layout needs group, sample and position "
                         f"(columns: {list(ax.columns)})")
    take = np.flatnonzero(ax.column("kind") == "token") if "kind" in ax.columns else np.arange(len(ax))
    if take.size == 0:
        raise ValueError("no per-token fields (kind 'token') to export")
    obs_id = np.asarray([to_obs_id(str(g)) for g in ax.column("group")[take]])
    names = sorted(set(obs_id.tolist()))
    dataset_id = np.searchsorted(names, obs_id)
    sample, position = ax.column("sample")[take], ax.column("position")[take]
    order = np.lexsort((position, sample, dataset_id))  # devinterp's order: dataset_id, batch, target_position
    cols = take[order]
    sus, se = [], []
    for r in results.values():
        row = _observable_row(r, observable)
        sus.append(r.chi[row, cols])
        se.append(r.stderr[row, cols])
    coords = xr.Coordinates({"dataset_id": ("sus_flat", dataset_id[order]), "batch": ("sus_flat", sample[order]),
                             "target_position": ("sus_flat", position[order] + 1)}, indexes={})
    return xr.Dataset(
        {"sus": (("sus_flat", "wr"), np.stack(sus, axis=-1)), "sus_stderr": (("sus_flat", "wr"), np.stack(se, axis=-1))},
        coords=coords.merge(xr.Coordinates({"wr": wr_order})),
        attrs={"dataset_id_to_name": names, "observable": first.observables[_observable_row(first, observable)],
               "convention": first.estimator.convention if first.estimator is not None else ""},
    )


def to_obs_id(name: str) -> str:
    """devinterp 2.0.1's ``devinterp.slt.observables.to_obs_id`` (copied: importing devinterp takes seconds)."""
    out = "".join(c if c.isalnum() or c == "_" else "_" for c in name)
    if out and out[0].isdigit():
        out = "_" + out
    return out or "_"


def _observable_row(r: Susceptibility, observable: str | None) -> int:
    if observable is None:
        if len(r.observables) != 1:
            raise ValueError(f"the result has {len(r.observables)} observables {r.observables}: name one (observable=...)")
        return 0
    return r.observable_axis.index(observable)
