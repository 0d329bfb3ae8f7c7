"""Typed axes and estimator records of a Susceptibility: validation, npz format /3, xarray, devinterp layout."""

import json
import re
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from spectro.engine import (
    Axis, EstimatorInfo, MomentAccumulator, Susceptibility, component_susceptibility_estimate, estimate_susceptibility,
)

DATA = Path(__file__).parent / "data"
sys.path.insert(0, str(DATA))
import make_susceptibility_v2 as v2  # noqa: E402

xr = pytest.importorskip("xarray")

FIELDS = ["tok:D[1,2]", "tok:D[0,3]", "tok:code[0,2]", "dL:D"]
FIELD_RECORDS = [
    {"kind": "token", "group": "D", "sample": 1, "position": 2, "weight": 0.5},
    {"kind": "token", "group": "D", "sample": 0, "position": 3, "weight": 1.0},
    {"kind": "token", "group": "code", "sample": 0, "position": 2, "weight": np.nan},
    {"kind": "dataset", "group": "D", "sample": -1, "position": -1, "weight": np.inf},
]


def accumulator(m: int, k: int, seed: int = 0, chains: int = 4, draws: int = 32) -> MomentAccumulator:
    g = torch.Generator().manual_seed(seed)
    acc = MomentAccumulator(chains, m, k, draws)
    for _ in range(draws):
        phi = torch.randn(chains, m, generator=g, dtype=torch.float64)
        acc.update(phi, phi[:, :1] + torch.randn(chains, k, generator=g, dtype=torch.float64))
    return acc


def typed_result() -> Susceptibility:
    obs = Axis.from_records("observable", ["phi_C", "0:2,0:2"],
                            [{"region": "", "row0": -1}, {"region": "chamber", "row0": 0}])
    fld = Axis.from_records("field", FIELDS, FIELD_RECORDS)
    est = EstimatorInfo(system="nn", sampler={"epsilon": 1e-3, "chains": 4, "shape": (2, 3)}, run={"draws": 32})
    return estimate_susceptibility(accumulator(2, 4), -1.0, meta={"component": "l0h0"},
                                   observable_axis=obs, field_axis=fld, estimator=est)


def assert_same(a: Susceptibility, b: Susceptibility) -> None:
    for name in Susceptibility._ARRAYS + ("dof", "flags", "noise"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.dtype == y.dtype and np.array_equal(x, y, equal_nan=True), name
    assert (a.observables, a.fields, a.scale, a.n_chains, a.n_draws) == (b.observables, b.fields, b.scale, b.n_chains, b.n_draws)
    assert a.observable_axis == b.observable_axis and a.field_axis == b.field_axis
    assert a.estimator == b.estimator
    assert a.meta == b.meta


# ----------------------------------------------------------------------------- Axis
@pytest.mark.parametrize("make, message", [
    (lambda: Axis("row", ("a",)), "axis name must be one of ('observable', 'field'), got 'row'"),
    (lambda: Axis("field", ("a", "b", "a")), "axis 'field' has duplicate label 'a' (entries 0 and 2)"),
    (lambda: Axis("field", ("a", 3)), "axis 'field': labels must be a sequence of strings, got ('a', 3)"),
    (lambda: Axis("field", ("a", "b"), {"sample": [0, 1, 2]}),
     "column 'sample' of axis 'field' has shape (3,), expected (2,): one value per label"),
    (lambda: Axis("field", ("a", "b"), {"sample": np.zeros((2, 1))}),
     "column 'sample' of axis 'field' has shape (2, 1), expected (2,): one value per label"),
    (lambda: Axis("field", ("a", "b"), {"group": np.array([1, "x"], dtype=object)}),
     "column 'group' of axis 'field' mixes types (int, str): one type per column"),
    (lambda: Axis("field", ("a", "b"), {"group": [1, "x"]}),
     "column 'group' of axis 'field' mixes types (int, str): one type per column"),
    (lambda: Axis("field", ("a",), {"when": np.array(["2024-01-01"], dtype="datetime64[D]")}),
     "column 'when' of axis 'field' has unsupported dtype datetime64[D]: only int, float, bool or str are supported"),
    (lambda: Axis("field", ("a",), {"x": [None]}),
     "column 'x' of axis 'field' holds NoneType values: only int, float, bool or str are supported"),
    (lambda: Axis("field", ("a",), {"field": [1]}),
     "column 'field' of axis 'field': 'field' is reserved for the dimension names (rename the column)"),
    (lambda: Axis.from_records("observable", ["a", "b"], [{"g": 1}]),
     "axis 'observable': 1 records for 2 labels (one per label)"),
    (lambda: Axis.from_records("observable", ["a", "b"], [{"g": 1}, {"h": 2}]),
     "axis 'observable': the record of 'b' has keys ['h'], expected ['g'] (differ in ['g', 'h'])"),
])
def test_axis_validation_messages(make, message):
    with pytest.raises(ValueError) as exc:
        make()
    assert str(exc.value) == message


def test_axis_columns_typed_and_read_only():
    ax = Axis.from_records("field", FIELDS, FIELD_RECORDS)
    assert [ax.column(c).dtype.kind for c in ("kind", "group", "sample", "position", "weight")] == ["U", "U", "i", "i", "f"]
    assert Axis("field", ("a", "b"), {"w": [1, 2.5]}).column("w").dtype == np.float64  # ints and floats mix to float
    with pytest.raises(ValueError):
        ax.column("sample")[0] = 5
    with pytest.raises(KeyError, match=re.escape("axis 'field' has no column 'layer' (columns: ['kind', 'group'")):
        ax.column("layer")
    src = np.array([3, 4])
    ax2 = Axis("field", ("a", "b"), {"s": src})
    src[0] = 99  # the axis holds a copy
    assert ax2.column("s").tolist() == [3, 4]


def test_select_keeps_columns_aligned():
    ax = Axis.from_records("field", FIELDS, FIELD_RECORDS)
    by_mask = ax.select(ax.column("kind") == "token")
    assert by_mask.labels == tuple(FIELDS[:3])
    by_index = ax.select([2, 0])
    assert by_index.labels == ("tok:code[0,2]", "tok:D[1,2]")
    for label, j in zip(by_index.labels, [2, 0]):
        i = by_index.labels.index(label)
        for key, col in by_index.columns.items():
            assert col[i] == FIELD_RECORDS[j][key] or (np.isnan(col[i]) and np.isnan(FIELD_RECORDS[j][key]))
    assert len(ax.select([])) == 0 and list(ax.select([]).columns) == list(ax.columns)
    with pytest.raises(ValueError, match=re.escape("mask has shape (2,), expected (4,)")):
        ax.select([True, False])
    with pytest.raises(ValueError, match="index out of range for 4 entries"):
        ax.select([4])


def test_axis_dict_round_trip_is_strict_json_and_exact():
    ax = Axis.from_records("field", FIELDS, FIELD_RECORDS)
    text = json.dumps(ax.to_dict(), allow_nan=False)  # NaN/inf encoded as strings
    back = Axis.from_dict(json.loads(text))
    assert back == ax
    assert np.isnan(back.column("weight")[2]) and back.column("weight")[3] == np.inf
    assert back != ax.select([0, 1, 2, 3][::-1])  # equality does look at labels and values
    assert Axis("field", ("a",), {"s": np.array([1], dtype=np.int32)}) != Axis("field", ("a",), {"s": np.array([1])})


def test_estimator_info_validation():
    with pytest.raises(ValueError, match=re.escape("estimator kind must be one of ('cov', 'baker2025'), got 'mle'")):
        EstimatorInfo(kind="mle")
    with pytest.raises(ValueError, match="estimator sampler must be a JSON-safe dict"):
        EstimatorInfo(sampler={"f": object()})
    assert EstimatorInfo(sampler={"shape": (2, 3)}).sampler == {"shape": [2, 3]}


# ----------------------------------------------------------------------------- Susceptibility
def test_estimates_fill_estimator_and_keep_numbers():
    plain = estimate_susceptibility(accumulator(2, 4), -1.0, ["phi_C", "0:2,0:2"], FIELDS)
    typed = typed_result()
    assert np.array_equal(plain.chi, typed.chi) and np.array_equal(plain.stderr, typed.stderr)
    assert typed.fields == FIELDS and typed.observables == ["phi_C", "0:2,0:2"]  # names from the axes
    assert typed.estimator.kind == "cov" and typed.estimator.scale == -1.0 and typed.estimator.system == "nn"
    assert plain.field_axis == Axis.from_labels("field", FIELDS) and plain.estimator.kind == "cov"
    baker = component_susceptibility_estimate(accumulator(1, 4, seed=1), accumulator(1, 4, seed=2), ["phi_C"],
                                              estimator=EstimatorInfo(kind="cov", scale=3.0, system="nn"),
                                              field_axis=typed.field_axis)
    assert (baker.estimator.kind, baker.estimator.scale, baker.estimator.system) == ("baker2025", -1.0, "nn")
    assert baker.estimator.convention.startswith("chi = -(E_C[phi*psi]")


def test_axis_must_match_names():
    acc = accumulator(2, 4)
    with pytest.raises(ValueError, match=re.escape("field_axis label 1 is 'b', but the field name is 'tok:D[0,3]'")):
        estimate_susceptibility(acc, -1.0, None, FIELDS, field_axis=Axis.from_labels("field", [FIELDS[0], "b", *FIELDS[2:]]))
    with pytest.raises(ValueError, match=re.escape("observable_axis has 1 labels, expected 2 (one per observable name)")):
        estimate_susceptibility(acc, -1.0, ["a", "b"], observable_axis=Axis.from_labels("observable", ["x"]))
    with pytest.raises(ValueError, match="field_axis must be an Axis named 'field'"):
        estimate_susceptibility(acc, -1.0, field_axis=Axis.from_labels("observable", FIELDS))


def test_npz_round_trip_exact(tmp_path):
    res = typed_result()
    res.save(tmp_path / "chi.npz")
    back = Susceptibility.load(tmp_path / "chi.npz")
    assert_same(res, back)
    with np.load(tmp_path / "chi.npz") as z:
        assert json.loads(str(z["header"]))["format"] == "spectro.susceptibility/3"
    with pytest.raises(AssertionError):
        assert_same(replace(res, estimator=replace(res.estimator, system="ising")), back)
    with pytest.raises(AssertionError):
        assert_same(replace(res, field_axis=res.field_axis.select([1, 0, 2, 3]), fields=[FIELDS[i] for i in (1, 0, 2, 3)]), back)
    res.fields = FIELDS[::-1]  # names edited after construction: the axis no longer matches
    with pytest.raises(ValueError, match=re.escape("field_axis label 0 is 'tok:D[1,2]', but the field name is 'dL:D'")):
        res.save(tmp_path / "stale.npz")


def test_v2_fixture_loads_with_axes_from_names():
    old = Susceptibility.load(DATA / "susceptibility_v2.npz")
    assert old.observables == v2.OBSERVABLES and old.fields == v2.FIELDS
    assert old.observable_axis == Axis.from_labels("observable", v2.OBSERVABLES)
    assert old.field_axis == Axis.from_labels("field", v2.FIELDS) and not old.field_axis.columns
    assert old.estimator is None and old.meta["component"] == "l0h0"
    now = estimate_susceptibility(v2.accumulator(), -1.0, v2.OBSERVABLES, v2.FIELDS)  # numbers unchanged since /2
    for name in Susceptibility._ARRAYS + ("dof", "flags", "noise"):
        assert np.array_equal(getattr(old, name), getattr(now, name), equal_nan=True), name


# ----------------------------------------------------------------------------- xarray
def test_xarray_round_trip_exact():
    res = typed_result()
    ds = res.to_xarray()
    assert ds["chi"].dims == ("observable", "field")
    assert ds["reliable"].dtype == bool and ds["flags"].dtype == np.int64
    assert json.loads(ds.attrs["estimator"])["system"] == "nn" and ds.attrs["n_draws"] == 32
    assert_same(res, Susceptibility.from_xarray(ds))
    lo, hi = res.interval(0.95)
    assert np.array_equal(ds["chi_lower"].values, lo) and np.array_equal(ds["chi_upper"].values, hi)
    ds2 = ds.copy(deep=True)
    ds2["chi"].values[0, 0] += 1.0
    with pytest.raises(AssertionError):
        assert_same(res, Susceptibility.from_xarray(ds2))


def test_xarray_coords_align_with_labels_and_sel_matches_entry():
    res = typed_result()
    ds = res.to_xarray()
    assert list(ds["field"].values) == FIELDS
    assert ds["sample"].dims == ("field",) and ds["region"].dims == ("observable",)
    for a, rec in enumerate(FIELD_RECORDS):
        one = ds.sel(field=FIELDS[a])
        assert str(one["group"].values) == rec["group"] and int(one["sample"]) == rec["sample"]
        e = res.entry("0:2,0:2", FIELDS[a])
        cell = one.sel(observable="0:2,0:2")
        assert float(cell["chi"]) == e["mean"] and float(cell["stderr"]) == e["stderr"]
        assert [float(cell["chi_lower"]), float(cell["chi_upper"])] == e["ci95"]
        assert bool(cell["reliable"]) == e["reliable"] and float(cell["dof"]) == e["dof"]
    code = ds.where(ds["group"] == "code", drop=True)
    assert list(code["field"].values) == ["tok:code[0,2]"]


def test_xarray_missing_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "xarray", None)  # import xarray now raises ImportError
    with pytest.raises(ImportError, match="needs xarray: pip install xarray"):
        typed_result().to_xarray()


def test_xarray_column_on_both_axes_is_prefixed_and_round_trips():
    res = typed_result()
    both = replace(res, observable_axis=Axis("observable", tuple(res.observables), {"group": ["a", "b"]}))
    ds = both.to_xarray()
    assert list(ds["observable_group"].values) == ["a", "b"] and ds["observable_group"].dims == ("observable",)
    assert list(ds["field_group"].values) == list(res.field_axis.column("group"))
    back = Susceptibility.from_xarray(ds)
    assert back.observable_axis == both.observable_axis and back.field_axis == both.field_axis


def test_devinterp_obs_ids():
    from spectro.engine.xarray_io import to_obs_id

    # devinterp.slt.observables.to_obs_id on the same names (devinterp 2.0.1)
    assert [to_obs_id(n) for n in ["code", "web-text", "3gram", "", "a.b c"]] == ["code", "web_text", "_3gram", "_", "a_b_c"]


def test_devinterp_layout():
    comp = {}
    for name, seed in (("l0h0", 1), ("l0h1", 2)):
        comp[name] = component_susceptibility_estimate(
            accumulator(1, 4, seed=seed), accumulator(1, 4, seed=9), ["phi_C"],
            field_axis=Axis.from_records("field", FIELDS, FIELD_RECORDS))
    from spectro.engine.xarray_io import to_devinterp_dataset

    ds = to_devinterp_dataset(comp)
    assert ds["sus"].dims == ("sus_flat", "wr") and list(ds["wr"].values) == ["l0h0", "l0h1"]
    assert ds.attrs["dataset_id_to_name"] == ["D", "code"]
    # devinterp's order: dataset_id, then batch (sample), then target_position = position + 1; dL:D left out
    assert ds["dataset_id"].values.tolist() == [0, 0, 1]
    assert ds["batch"].values.tolist() == [0, 1, 0] and ds["target_position"].values.tolist() == [4, 3, 3]
    for j, field_name in enumerate(["tok:D[0,3]", "tok:D[1,2]", "tok:code[0,2]"]):
        for w, r in comp.items():
            e = r.entry("phi_C", field_name)
            assert float(ds["sus"].sel(wr=w)[j]) == e["mean"] and float(ds["sus_stderr"].sel(wr=w)[j]) == e["stderr"]
    with pytest.raises(ValueError, match="a baker2025 result is a restricted component: name it"):
        comp["l0h0"].to_devinterp_dataset()
    assert comp["l0h0"].to_devinterp_dataset(wr="l0h0")["sus"].shape == (3, 1)
    with pytest.raises(ValueError, match=re.escape("the field axis has no column(s) ['group', 'sample', 'position']")):
        estimate_susceptibility(accumulator(1, 2), -1.0).to_devinterp_dataset()


@pytest.mark.slow  # imports devinterp (seconds)
def test_devinterp_layout_equals_the_nn_exporter(tmp_path):
    pytest.importorskip("zarr")
    from spectro.engine.xarray_io import to_devinterp_dataset
    from spectro.jobs.export import open_susceptibilities, write_susceptibilities

    fields = [f"tok:{g}[{i},{t}]" for g in ("web-text", "code") for i in (0, 2) for t in (1, 0, 3)]
    records = [{"group": f[4:f.index("[")], "sample": int(f[-4]), "position": int(f[-2])} for f in fields]
    res = {w: component_susceptibility_estimate(accumulator(1, len(fields), seed=s), accumulator(1, len(fields), seed=9),
                                                ["phi_C"], field_axis=Axis.from_records("field", fields, records))
           for w, s in (("l0h0", 1), ("l1h0", 2))}
    ids = {g: np.arange(15).reshape(3, 5) for g in ("web-text", "code")}
    theirs = open_susceptibilities(write_susceptibilities(tmp_path / "s.zarr", res, ids))["susceptibilities"].to_dataset()
    mine = to_devinterp_dataset(res)
    for k in ("sus", "sus_stderr", "dataset_id", "batch", "target_position", "wr"):
        assert mine[k].dims == theirs[k].dims and np.array_equal(mine[k].values, theirs[k].values.astype(mine[k].dtype)), k
    assert mine.attrs["dataset_id_to_name"] == list(theirs.attrs["dataset_id_to_name"]) == ["code", "web_text"]
