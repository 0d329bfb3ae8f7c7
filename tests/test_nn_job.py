"""`spectro nn run` / run_job: a whole job from a config file, its results folder, the devinterp export
(read back by devinterp's own analysis functions), strict config validation, and the CLI contract."""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from spectro.jobs.cli import main
from spectro.analysis.token_table import row_estimator
from spectro.engine import Susceptibility
from spectro.jobs.builtin import builtin_checkpoint
from spectro.jobs.nn_job import DEMO_CONFIG, ConfigError, JobConfig, run_job, summary_table

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """builtin:tiny trained for 8 steps into a temporary cache (tokenizer + model ≈ 2 s)."""
    cache = tmp_path_factory.mktemp("cache")
    path = builtin_checkpoint("tiny", cache, steps=8, progress=False, log=lambda m: None)
    return path


def base_config(ckpt) -> dict:
    return {
        "name": "test-job",
        "model": {"checkpoint": str(ckpt)},
        "data": {"corpus": "fixture", "domains": ["code", "prose"], "context": 12, "train_sequences": 32},
        "probes": {"base": 4, "per_domain": 2},
        "observables": ["component_loss", {"type": "mean_loss", "domain": "code"}],
        "fields": ["tokens", {"type": "upweight", "domain": "prose", "samples": [0]}],
        "components": ["l0h1", "full"],
        "sampler": {"chains": 2, "draws": 6, "batch_size": 8, "nbeta": 10.0, "gamma": 1000.0, "epsilon": 1e-4,
                    "n_batches": 4, "seed": 3},
        "threads": 1,
    }


@pytest.fixture(scope="module")
def job(ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("job") / "out"
    t0 = time.perf_counter()
    path = run_job(base_config(ckpt), out, progress=False, log=lambda m: None)
    return path, time.perf_counter() - t0


def test_builtin_checkpoint_is_cached(ckpt):
    t0 = time.perf_counter()
    again = builtin_checkpoint("tiny", ckpt.parents[2], steps=8, progress=False, log=lambda m: None)
    assert again == ckpt and time.perf_counter() - t0 < 2.0
    assert (ckpt.parents[1] / "ready.json").is_file() and (ckpt / "model.safetensors").is_file()


def test_job_writes_every_file_and_results_load(job):
    out, seconds = job
    names = {p.name for p in out.iterdir() if p.name != ".spectro-run.json"}  # the marker: spectro.outputs
    assert names == {"config.json", "chi_full.npz", "chi_l0h1.npz", "summary.json", "traces.png", "devinterp", "report.html"}
    assert {p.name for p in (out / "devinterp").iterdir()} == {"samples_full.zarr", "samples_l0h1.zarr", "susceptibilities.zarr"}
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "staging folder left behind"
    assert (out / "traces.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    res = {c: Susceptibility.load(out / f"chi_{c}.npz") for c in ("full", "l0h1")}
    r = res["l0h1"]
    n_tok = 2 * 2 * 11  # domains × sequences × predicted positions
    assert r.observables == ["phi_C", "mean_loss:code"]
    assert r.chi.shape == (2, n_tok + 1 + 2) and r.fields[:2] == ["tok:code[0,0]", "tok:code[0,1]"]
    assert r.fields[n_tok:] == ["up:prose[0]", "dL:code", "dL:prose"]
    assert np.all(np.isfinite(r.chi)) and np.all(r.stderr > 0)
    # the mean of a domain's per-token χ is its subset field's χ (both estimators are linear in ψ;
    # ψ is evaluated in float32, hence the tolerance)
    for res_c in res.values():
        for d, sl in (("code", slice(0, 22)), ("prose", slice(22, 44))):
            np.testing.assert_allclose(res_c.chi[:, sl].mean(1), res_c.chi[:, res_c.fields.index(f"dL:{d}")],
                                       rtol=1e-4, atol=1e-6 * np.abs(res_c.chi).max())
    assert list(r.observable_axis.column("estimator")) == ["baker2025", "cov"]  # typed, per row
    assert row_estimator(res["full"], 0) == "cov" and res["full"].estimator.kind == "cov"
    # every per-row array of the Baker row is Baker's own: its flags follow its R-hat (they once
    # stayed those of the plain restricted covariance)
    from spectro.engine.susceptibility import RHAT_MAX, Flags
    for res_c in res.values():
        with np.errstate(invalid="ignore"):
            np.testing.assert_array_equal((res_c.flags & int(Flags.UNMIXED)) != 0, res_c.rhat > RHAT_MAX)
    assert np.asarray(r.meta["loss_trace"]).shape == (2, 6) and r.meta["versions"]["devinterp"] == "2.0.1"

    summary = json.loads((out / "summary.json").read_text())
    for c in ("full", "l0h1"):
        s = summary["components"][c]
        assert {"llc", "llc_stderr", "loss_trace_rhat", "chi_min_ess", "chi_max_rhat", "seconds", "n_free"} <= set(s)
        assert set(s["domains"]) == {"code", "prose"} and s["domains"]["code"]["stderr"] > 0
        assert s["llc"] == pytest.approx(res[c].meta["sampling"]["llc"])
        # every domain χ carries its t interval and trust flag; the component its flagged-entry count
        code = s["domains"]["code"]
        assert code["ci95"][0] < code["chi"] < code["ci95"][1] and isinstance(code["reliable"], bool)
        assert s["chi_unreliable"] == int((~res[c].reliable).sum()) and s["chi_entries"] == res[c].chi.size
    assert summary["components"]["l0h1"]["n_free"] < summary["components"]["full"]["n_free"]
    assert summary["run"]["probe_sizes"] == {"base": 4, "code": 2, "prose": 2} and summary["run"]["nbeta"] == 10.0
    assert "torch" in summary["versions"] and summary["seconds"] > 0
    assert "l0h1" in summary_table(out) and "code" in summary_table(out)

    # config.json is the resolved config and runs as is
    resolved = JobConfig.load(out / "config.json")
    assert resolved.data.domains == ("code", "prose") and resolved.sampler["seed"] == 3
    assert JobConfig.from_dict(resolved.to_dict()) == resolved
    assert seconds < 30


def test_devinterp_reads_our_export(job):
    """devinterp's own readers and analysis functions run on the export and agree with our numbers."""
    from devinterp.slt.llc import compute_llc
    from devinterp.slt.susceptibilities import compute_susceptibilities

    from spectro.jobs.export import open_samples, open_susceptibilities

    out, _ = job
    trees = {c: open_samples(out / "devinterp" / f"samples_{c}.zarr") for c in ("full", "l0h1")}
    res = {c: Susceptibility.load(out / f"chi_{c}.npz") for c in trees}
    for c, tree in trees.items():
        assert tree.attrs["completed"] == 1 and tree.attrs["spectro"]["component"] == c
        assert tree["loss_base"].dims == ("chain", "draw", "batch_base", "token_pos")
        assert float(compute_llc(tree).llc_mean) == pytest.approx(res[c].meta["sampling"]["llc"], rel=1e-4, abs=1e-4)

    theirs = compute_susceptibilities(trees, "base")
    ours = open_susceptibilities(out / "devinterp" / "susceptibilities.zarr")
    for group, coords in (("susceptibilities", ("dataset_id", "batch", "target_position")), ("context", ("dataset_id", "batch", "position"))):
        assert theirs[group].attrs["dataset_id_to_name"] == list(ours[group].attrs["dataset_id_to_name"]) == ["code", "prose"]
        for k in coords:
            np.testing.assert_array_equal(theirs[group][k].values, ours[group][k].values)
    np.testing.assert_array_equal(theirs["context"]["input_ids"].values, ours["context"]["input_ids"].values)
    assert list(ours["susceptibilities"]["wr"].values) == list(theirs["susceptibilities"]["wr"].values) == ["l0h1"]

    # ours: φ = L̄(w) − L̄(w*); devinterp: φ = L̄(w) − mean(init_loss) = L̄(w) − L_n(w*). Exact relation:
    # χ_devinterp = χ_ours − δ·(E_C[ψ] − E_full[ψ]),  δ = L̄(w*) − L_n(w*)
    r, full = res["l0h1"], res["full"]
    tok = [i for i, f in enumerate(r.fields) if f.startswith("tok:")]
    delta = r.meta["phi_reference_loss"] - float(trees["full"]["init_loss"].values.mean())
    expected = r.chi[0, tok] - delta * (r.field_mean[tok] - full.field_mean[tok])
    got = theirs["susceptibilities"]["sus"].values[:, 0]
    np.testing.assert_allclose(got, expected, atol=2e-5 * max(1.0, np.abs(expected).max()))
    np.testing.assert_allclose(ours["susceptibilities"]["sus"].values[:, 0], r.chi[0, tok])
    np.testing.assert_allclose(ours["susceptibilities"]["sus_stderr"].values[:, 0], r.stderr[0, tok])


def test_cli_run_overwrite_and_toml(ckpt, tmp_path, capsys):
    cfg = base_config(ckpt)
    cfg["components"] = ["l1"]
    cfg["observables"] = [{"type": "per_token_loss", "domain": "code", "samples": [1], "positions": [0, 5]}]
    cfg["fields"] = [{"type": "subset", "domains": ["prose"]}]
    cfg["export"] = {"devinterp": False}
    path = tmp_path / "job.json"
    path.write_text(json.dumps(cfg))
    out = tmp_path / "out"
    assert main(["nn", "run", "--config", str(path), "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "wrote" in text and "l1" in text
    assert {p.name for p in out.iterdir()} == {"config.json", "chi_l1.npz", "summary.json", "traces.png", "report.html", ".spectro-run.json"}
    r = Susceptibility.load(out / "chi_l1.npz")
    assert r.observables == ["loss:code[1,0]", "loss:code[1,5]"] and r.fields == ["dL:prose"]
    assert row_estimator(r, 0) == "cov"
    before = (out / "chi_l1.npz").read_bytes()
    assert main(["nn", "run", "--config", str(path), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and "Traceback" not in err
    assert (out / "chi_l1.npz").read_bytes() == before
    assert main(["nn", "run", "--config", str(path), "--out", str(out), "--overwrite"]) == 0
    assert "step" in capsys.readouterr().err  # the progress bar (tqdm, on stderr)

    toml = tmp_path / "job.toml"
    toml.write_text(f"""
name = "test-job"
components = ["l1"]
observables = [{{type = "per_token_loss", domain = "code", samples = [1], positions = [0, 5]}}]
fields = [{{type = "subset", domains = ["prose"]}}]
threads = 1
[model]
checkpoint = "{ckpt}"
[data]
corpus = "fixture"
domains = ["code", "prose"]
context = 12
train_sequences = 32
[probes]
base = 4
per_domain = 2
[sampler]
chains = 2
draws = 6
batch_size = 8
nbeta = 10.0
gamma = 1000.0
epsilon = 1e-4
n_batches = 4
seed = 3
[export]
devinterp = false
""")
    assert JobConfig.load(toml) == JobConfig.load(path)
    # `spectro run CONFIG` with system = "nn" is the same job as `nn run`
    toml.write_text('system = "nn"\n' + toml.read_text())
    assert main(["run", str(toml), "--out", str(tmp_path / "via-run"), "--no-progress"]) == 0
    np.testing.assert_array_equal(Susceptibility.load(tmp_path / "via-run" / "chi_l1.npz").chi,
                                  Susceptibility.load(out / "chi_l1.npz").chi)
    # the results folder's config.json is the resolved job: `spectro run OUT/config.json` runs it again
    assert main(["run", str(out / "config.json"), "--out", str(tmp_path / "again"), "--no-progress"]) == 0
    np.testing.assert_array_equal(Susceptibility.load(tmp_path / "again" / "chi_l1.npz").chi,
                                  Susceptibility.load(out / "chi_l1.npz").chi)


def test_demo_config_file_matches_the_embedded_one():
    assert json.loads((REPO / "experiments/configs/nn_demo.json").read_text()) == DEMO_CONFIG
    cfg = JobConfig.from_dict(DEMO_CONFIG)
    assert cfg.model.checkpoint == "builtin:tiny" and cfg.components == ("heads", "full")


# ---------------------------------------------------------------------------- bad configs
def _set(cfg: dict, path: str, value) -> dict:
    keys = path.split(".")
    node = cfg
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    if value is _DEL:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return cfg


_DEL = object()

BAD = [
    ("sampeler", {"chains": 2}, "unknown key 'sampeler'"),
    ("sampler.step_size", 0.1, "sampler: unknown key 'step_size'"),
    ("sampler.chains", "4", "sampler.chains: expected an integer"),
    ("sampler.draws", 2.5, "sampler.draws: expected an integer"),
    ("components", _DEL, "missing required key 'components'"),
    ("model.checkpoint", _DEL, "model: missing required key 'checkpoint'"),
    ("sampler.epsilon", float("nan"), "sampler.epsilon: non-finite"),
    ("sampler.gamma", float("inf"), "sampler.gamma: non-finite"),
    ("sampler.epsilon", -1e-3, "epsilon"),
    ("model.checkpoint", "/nonexistent/ckpt", "does not exist"),
    ("model.checkpoint", "builtin:huge", "unknown built-in model"),
    ("model.dtype", "int8", "model.dtype must be"),
    ("sampler.chains", 0, "chains"),
    ("components", ["l5h0"], "layer 5 does not exist"),
    ("components", ["l0h9"], "head 9 does not exist"),
    ("components", ["head3"], "is not a component"),
    ("components", ["full", "all"], "names a component twice"),
    ("components", [], "components: empty list"),
    ("data.context", 64, "exceed the model's context"),
    ("data.domains", ["poetry"], "not in corpus"),
    ("data.corpus", "/nonexistent/corpus", "data.corpus"),
    ("fields", [{"type": "subset", "samples": []}], "empty selection"),
    ("fields", [{"type": "tokens", "samples": [5]}], "outside probe group"),
    ("fields", [{"type": "tokens", "positions": [11]}], "positions: [11] outside"),
    ("fields", [{"type": "dataset"}], "unknown field 'dataset'"),
    ("fields", [{"type": "tokens", "domains": ["base"]}], "is q itself"),
    ("observables", [{"type": "mean_loss"}], "missing required key 'domain'"),
    ("observables", [{"type": "mean_loss", "domain": "math"}], "unknown domain 'math'"),
    ("observables", ["loss"], "only 'component_loss'"),
    ("probes.per_domain", 1000, "fewer than the 1000 asked"),
    ("probes.per_domain", {"code": 2}, "missing ['prose']"),
    ("sampler.batch_size", 100, "sampler.batch_size: 100 exceeds"),
    ("sampler.master_dtype", "float16", "master_dtype"),
    ("sampler.precision", "int8", "precision must be one of ['fp32', 'bf16', 'fp16']"),
    ("model.dtype", "bfloat16", "needs sampler.precision = 'bf16'"),
    ("sampler.draws", 3, "at least 4 draws"),
    ("threads", True, "threads: expected an integer"),
    ("export.max_mb", 1e-6, "export.max_mb"),
]


@pytest.mark.parametrize("path,value,message", BAD, ids=[f"{p}={v!r}"[:40] for p, v, _ in BAD])
def test_bad_config_raises_config_error_and_writes_nothing(ckpt, tmp_path, path, value, message):
    cfg = _set(base_config(ckpt), path, value)
    out = tmp_path / "out"
    with pytest.raises(ConfigError) as e:
        run_job(cfg, out, progress=False, log=lambda m: None)
    assert message in str(e.value), str(e.value)
    assert "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == [], "nothing may be written for a bad config"


def _broken_checkpoint(ckpt, tmp_path) -> Path:
    bad = tmp_path / "bad_ckpt"
    shutil.copytree(ckpt, bad)
    meta = json.loads((bad / "config.json").read_text())
    meta["model"]["d_model"] = 32  # weights say 64
    (bad / "config.json").write_text(json.dumps(meta))
    return bad


def _other_tokenizer(tmp_path) -> Path:
    from spectro.data import save_tokenizer, train_tokenizer

    return save_tokenizer(train_tokenizer(["a completely different corpus of words"] * 50, 300), tmp_path / "tok.json")


@pytest.mark.parametrize("case", ["checkpoint_mismatch", "tokenizer_mismatch", "no_tokenizer", "out_not_empty", "bad_json"])
def test_bad_inputs_beyond_the_config(ckpt, tmp_path, case):
    work = tmp_path / "work"
    work.mkdir()
    cfg = base_config(ckpt)
    out = tmp_path / "out"
    if case == "checkpoint_mismatch":
        cfg["model"]["checkpoint"] = str(_broken_checkpoint(ckpt, work))
        message = "model.checkpoint:"
    elif case == "tokenizer_mismatch":
        cfg["data"]["tokenizer"] = str(_other_tokenizer(work))
        message = "data.tokenizer does not match the checkpoint's tokenizer"
    elif case == "no_tokenizer":
        bare = work / "bare"
        shutil.copytree(ckpt, bare)
        (bare / "tokenizer.json").unlink()
        meta = json.loads((bare / "config.json").read_text())
        meta.pop("tokenizer")
        (bare / "config.json").write_text(json.dumps(meta))
        cfg["model"]["checkpoint"] = str(bare)
        message = "has no tokenizer.json"
    elif case == "out_not_empty":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
        message = "not empty"
    else:
        bad = work / "bad.json"
        bad.write_text('{"model": {"checkpoint": "x"},, }')
        cfg = bad
        message = "not valid JSON"
    listing = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        run_job(cfg, out, progress=False, log=lambda m: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == listing
    if case == "out_not_empty":
        assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_cli_bad_configs_exit_2_without_traceback(ckpt, tmp_path, capsys):
    cases = [
        ({**base_config(ckpt), "components": ["l7"]}, "layer 7 does not exist"),
        ({**base_config(ckpt), "sampler": {"chains": -1}}, "sampler:"),
        ({**base_config(ckpt), "unknown": 1}, "unknown key 'unknown'"),
        # a chain that blows up: reported as a user error, nothing written
        ({**base_config(ckpt), "sampler": {**base_config(ckpt)["sampler"], "epsilon": 10.0, "max_loss_increase": 0.5}}, "diverged"),
    ]
    for i, (cfg, message) in enumerate(cases):
        path = tmp_path / f"c{i}.json"
        path.write_text(json.dumps(cfg))
        out = tmp_path / f"out{i}"
        assert main(["nn", "run", "--config", str(path), "--out", str(out), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("spectro: error: ") and message in err[0], err
        assert not out.exists()
    assert main(["nn", "run", "--config", str(tmp_path / "missing.json"), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_cli_subprocess_error_is_one_line(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"model": {"checkpoint": str(tmp_path / "none")}, "components": ["full"]}))
    p = subprocess.run([sys.executable, "-m", "spectro", "nn", "run", "--config", str(path), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, cwd=REPO)
    assert p.returncode == 2
    assert p.stderr.strip().startswith("spectro: error: model.checkpoint") and "Traceback" not in p.stderr


def test_components_expand_and_full_reference_is_added(ckpt):
    from spectro.jobs.nn_job import _prepare

    cfg = base_config(ckpt)
    cfg["components"] = ["heads", "l1"]
    prep = _prepare(JobConfig.from_dict(cfg), False, lambda m: None)
    # Baker's estimator of φ_C needs the unrestricted run: it is added (first) and written as chi_full
    assert list(prep.components) == ["full", "l0h0", "l0h1", "l0h2", "l0h3", "l1h0", "l1h1", "l1h2", "l1h3", "l1"]
    assert prep.components["full"] is None and prep.components["l1"].n_free(prep.model) > prep.components["l1h0"].n_free(prep.model)
    cfg["observables"] = [{"type": "mean_loss", "domain": "prose"}]  # no φ_C: no reference run
    assert "full" not in _prepare(JobConfig.from_dict(cfg), False, lambda m: None).components


def test_same_seed_gives_bitwise_identical_results_and_another_seed_does_not(ckpt, job, tmp_path):
    from spectro.engine import Susceptibility

    first = job[0]
    again = run_job(base_config(ckpt), tmp_path / "again", progress=False, log=lambda m: None)
    other_cfg = base_config(ckpt)
    other_cfg["sampler"]["seed"] = 4
    other = run_job(other_cfg, tmp_path / "other", progress=False, log=lambda m: None)
    for name in ("chi_l0h1.npz", "chi_full.npz"):
        a, b, c = (Susceptibility.load(p / name) for p in (first, again, other))
        for key in ("chi", "stderr", "ess", "rhat"):
            np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
        assert a.meta["loss_trace"] == b.meta["loss_trace"]
        assert not np.array_equal(a.chi, c.chi)


def test_dataset_fields_with_the_devinterp_export_finish_and_the_replication_reads_them(ckpt, tmp_path):
    """A job with subset fields only (the replication's §7 job) exports its samples and skips the per-token
    SusceptibilitiesV2 file instead of failing after sampling; replication.dataset_record reads the folder:
    its covariance part + offset is the file's χ, and the offset is Baker's −E_C[φ]·(E_C[ψ] − E_full[ψ])."""
    import importlib.util

    cfg = base_config(ckpt)
    cfg["observables"] = ["component_loss"]
    cfg["fields"] = ["subset"]
    cfg["export"] = {"devinterp": True}
    out = tmp_path / "out"
    run_job(cfg, out, progress=False, log=lambda m: None)
    assert (out / "devinterp" / "samples_l0h1.zarr").is_dir() and not (out / "devinterp" / "susceptibilities.zarr").exists()
    spec = importlib.util.spec_from_file_location("replication", Path(__file__).resolve().parent.parent / "experiments" / "replication.py")
    rep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rep)
    rec = rep.dataset_record(out)
    r, full = Susceptibility.load(out / "chi_l0h1.npz"), Susceptibility.load(out / "chi_full.npz")
    k = rec["components"].index("l0h1")
    cols = [r.fields.index(f) for f in rec["fields"]]
    assert rec["fields"] == ["dL:code", "dL:prose"]
    np.testing.assert_allclose(rec["chi"][k], r.chi[0, cols])
    np.testing.assert_allclose(rec["offset"][k], -r.observable_mean[0] * (r.field_mean[cols] - full.field_mean[cols]))
    np.testing.assert_allclose(np.add(rec["covariance_part"][k], rec["offset"][k]), r.chi[0, cols])
    assert rec["offset"][rec["components"].index("full")] == [0.0, 0.0]
