"""spectro.report: the HTML report of a results folder, its numbers against the result files
they come from, ownership of the page, the compare page's differences against their closed form,
and the page in a real browser (headless Debian chromium driven by Playwright; skipped, with the
reason, when either is missing — .ci/run installs both)."""

import json
import math
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from spectro.engine import Susceptibility
from spectro.engine.susceptibility import ADVICE, Flags
from spectro.jobs.cli import main
from spectro.report import REPORT_NAME, ReportError, collect, is_spectro_page, render, write_compare, write_report
from spectro.report.collect import r4

CHROMIUM = Path("/usr/bin/chromium")


# ---------------------------------------------------------------------------- synthetic results folders
def _result(obs, fields, chi, stderr, flags=None, meta=None, dof=50.0):
    m, k = chi.shape
    return Susceptibility(chi=chi, stderr=stderr, stderr_chains=stderr, ess=np.full((m, k), 100.0), rhat=np.full((m, k), 1.01),
                          observable_mean=np.full(m, 0.05), observable_stderr=np.full(m, 0.01), field_mean=np.zeros(k),
                          field_stderr=np.full(k, 0.01), observables=list(obs), fields=list(fields), scale=-1.0, n_chains=4,
                          n_draws=100, meta=meta or {}, dof=np.full((m, k), dof), flags=flags)


def nn_folder(path: Path, *, seqs=4, ctx=8, comps=("l0h0", "l0h1", "l1h0", "l1h1", "full"), shift=0.0, seed=0,
              flag_token=3) -> Path:
    """A results folder as an nn job writes it (chi_<C>.npz + summary.json), with known numbers:
    token fields tok:D[i,t] of two domains, domain fields dL:D, token ``flag_token`` flagged UNMIXED
    in l0h1. No tokenizer or probe export: the page shows token positions."""
    path.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    doms = ["code", "prose"]
    fields = [f"tok:{d}[{i},{t}]" for d in doms for i in range(seqs // 2) for t in range(ctx - 1)] + [f"dL:{d}" for d in doms]
    for k, c in enumerate(comps):
        chi = rng.normal(size=(1, len(fields))) + shift
        se = np.abs(rng.normal(0.2, 0.05, size=(1, len(fields))))
        flags = np.zeros((1, len(fields)), dtype=np.int64)
        if c == "l0h1":
            flags[0, flag_token] = int(Flags.UNMIXED)
        trace = 3.0 + 0.01 * rng.normal(size=(4, 100))
        meta = {"sampling": {"llc": 10.0 + k + shift, "llc_stderr": 0.5, "llc_dof": 30.0, "llc_rhat": 1.01,
                             "llc_ess_bulk": 200.0, "init_loss": 2.9, "n_free": 100,
                             "sampler": {"burn_in": 0, "steps_per_draw": 1}},
                "loss_trace": trace.tolist(), "versions": {"machine": "test"}}
        _result(["phi_C"], fields, chi, se, flags, meta).save(path / f"chi_{c}.npz")
    (path / "summary.json").write_text(json.dumps({"format": "spectro.nn_job/1", "name": path.name, "components": {}}))
    return path


def ising_folder(path: Path, *, H=8, W=8, size=2, shift=0.0, seed=0, exact=True) -> Path:
    """A results folder as ``spectro ising map`` writes it (chi_map.npz, summary.json, config.json),
    plus the demo's exact_check.json with known Monte Carlo and exact values."""
    from spectro.ising import walled_lattice
    from spectro.ising.susceptibility import probe_grid

    path.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    lattice = walled_lattice(H, W)
    fields = list(probe_grid(lattice, size, size))
    chi = rng.uniform(0, 2, size=(3, len(fields))) + shift
    se = rng.uniform(0.05, 0.1, size=(3, len(fields)))
    flags = np.zeros((3, len(fields)), dtype=np.int64)
    flags[1, 2] = int(Flags.FROZEN)
    _result(["left", "right", "lower"], fields, chi, se, flags, {"beta": 0.4}).save(path / "chi_map.npz")
    (path / "summary.json").write_text(json.dumps({"format": "spectro.ising_job/1", "beta": 0.4, "height": H, "width": W}))
    (path / "config.json").write_text(json.dumps({"system": "ising", "beta": 0.4, "lattice": {"height": H, "width": W}}))
    if exact:
        entries = {f"{o}|{f}": {"mc": float(chi[i, a]), "stderr": float(se[i, a]), "exact": float(chi[i, a] - 2 * se[i, a]),
                                "reliable": not (i == 0 and a == 0)}
                   for i, o in enumerate(["left", "right", "lower"]) for a, f in enumerate(fields)}
        (path / "exact_check.json").write_text(json.dumps({"lattice": f"walled {H}x{W}", "beta": 0.4, "entries": entries,
                                                           "rms_z": 2.0, "max_abs_z": 2.0, "covered_by_95_interval": 0}))
    return path


def page_data(html: str) -> dict:
    m = re.search(r'<script type="application/json" id="data">(.*?)</script>', html, re.S)
    return json.loads(m.group(1).replace("<\\/", "</"))


# ---------------------------------------------------------------------------- numbers on the page
def test_nn_page_carries_each_tokens_value_interval_and_flag(tmp_path):
    folder = nn_folder(tmp_path / "run")
    page = write_report(folder)
    assert page == folder / REPORT_NAME and is_spectro_page(page)
    d = page_data(page.read_text())
    r = Susceptibility.load(folder / "chi_l0h1.npz")
    lo, hi = r.interval(0.95)
    k = d["components"].index("l0h1")
    tok = [a for a, f in enumerate(r.fields) if f.startswith("tok:")]
    assert d["tokens"]["n_tokens"] == len(tok) == len(d["tokens"]["text"])
    np.testing.assert_allclose(d["tokens"]["chi"][k], r.chi[0, tok], rtol=1e-3)  # the page rounds to 4 digits
    np.testing.assert_allclose(d["tokens"]["lo"][k], lo[0, tok], rtol=1e-3)
    np.testing.assert_allclose(d["tokens"]["hi"][k], hi[0, tok], rtol=1e-3)
    assert [a for a, f in enumerate(d["tokens"]["flag"][k]) if f] == [3] and d["tokens"]["flag"][k][3] == int(Flags.UNMIXED)
    assert d["flag_text"][str(int(Flags.UNMIXED))] == ADVICE[Flags.UNMIXED]
    assert d["flagged"] == {"entries": 1, "total": 5 * len(r.fields), "warnings": {"l0h1": r.warning()}}
    # components × domains: the dL:D fields with their own intervals
    e = d["domains"]["rows"][k][d["domains"]["domains"].index("prose")]
    a = r.fields.index("dL:prose")
    assert d["domains"]["kind"] == "fields"
    np.testing.assert_allclose([e["chi"], *e["ci95"]], [r.chi[0, a], lo[0, a], hi[0, a]], rtol=1e-3)
    # LLC interval: t_{dof} quantile of the recorded LLC stderr
    llc = d["llc"][k]
    assert llc["llc"] == 11.0 and llc["ci95"] == r4([11.0 - 0.5 * 2.042272456, 11.0 + 0.5 * 2.042272456])
    assert len(llc["trace"]) == 4 and len(llc["steps"]) == 100
    # PCA from spectro.analysis, per layer, with the noise floor
    assert d["pca"]["available"] and set(d["pca"]["layers"]) == {"layer0", "layer1", "all_heads"}
    assert abs(sum(d["pca"]["layers"]["layer0"]["explained_ratio"]) - 1) < 1e-3
    assert d["notes"] and "positions" in d["notes"][0]


def test_token_mean_domain_table_equals_the_domain_field(nn_job):
    """Without dL:D fields the table shows the mean of the domain's per-token χ. χ is linear in the
    field, and the dL:D field is the mean of its tokens' fields, so on a real job the two agree to
    the page's rounding."""
    folder = nn_job
    d = collect(folder)
    assert d["domains"]["kind"] == "fields"
    from spectro.analysis.token_table import load_token_table
    from spectro.report.collect import _domain_table

    results = {c: Susceptibility.load(folder / f"chi_{c}.npz") for c in d["components"]}
    stripped = {c: Susceptibility(**{**r.__dict__, "fields": [f.replace("dL:", "xx:") for f in r.fields], "field_axis": None})
                for c, r in results.items()}
    table = load_token_table(folder)
    mean = _domain_table(stripped, d["components"], "phi_C", table)
    assert mean["kind"] == "token-mean"
    for k, c in enumerate(d["components"]):
        for j, dom in enumerate(mean["domains"]):
            exact = d["domains"]["rows"][k][d["domains"]["domains"].index(dom)]
            got = mean["rows"][k][j]
            assert got["chi"] == pytest.approx(exact["chi"], rel=2e-3, abs=1e-12)
            assert got["n_tokens"] == int((table.domain == dom).sum())


def test_earlier_format_folder_still_gives_a_report(tmp_path):
    """A folder of susceptibility format /1 (no dof, flags or axes; no summary or config) still
    gives a page: names parsed from the fields, every entry reliable by that format's definition."""
    folder = nn_folder(tmp_path / "run")
    (folder / "summary.json").unlink()
    for p in folder.glob("chi_*.npz"):
        with np.load(p) as z:
            arrays = {k: z[k] for k in z.files if k not in ("dof", "flags", "noise") and "_axis." not in k}
        header = json.loads(str(arrays.pop("header")))
        header = {"format": "spectro.susceptibility/1", **{k: header[k] for k in ("scale", "n_chains", "n_draws", "meta")}}
        np.savez(p, header=np.asarray(json.dumps(header)), **arrays)
    d = collect(folder)
    assert d["format"] == "(no summary.json)" and d["tokens"]["n_tokens"] == 4 // 2 * 2 * 7
    assert d["flagged"]["entries"] == 0
    page_data(render(d))


def test_ising_page_maps_lattice_and_exact_z(tmp_path):
    from spectro.ising import walled_lattice

    folder = ising_folder(tmp_path / "map")
    d = collect(folder)
    r = Susceptibility.load(folder / "chi_map.npz")
    assert d["kind"] == "ising" and d["chambers"] == ["left", "right", "lower"] and len(d["probes"]) == 16
    np.testing.assert_allclose(d["chi"], r.chi, rtol=1e-3)
    assert d["flag"][1][2] == int(Flags.FROZEN) and d["flagged"]["entries"] == 1
    lat = walled_lattice(8, 8)
    n_walls = int((lat.j_right[:, :7] == 0).sum() + (lat.j_down[:7, :] == 0).sum())
    assert len(d["lattice"]["walls"]) == n_walls > 0
    assert sorted({v for row in d["lattice"]["region"] for v in row}) == [0, 1, 2]
    # z = (MC − exact) / stderr = 2 by construction; the unreliable entry keeps a marker
    np.testing.assert_allclose(np.asarray(d["exact"]["z"], dtype=float), 2.0, rtol=1e-3)
    assert d["exact"]["flag"][0][0] != 0 and sum(map(sum, d["exact"]["flag"])) == d["exact"]["flag"][0][0]


def test_compare_difference_and_combined_error(tmp_path):
    """B = A's structure with χ shifted by 0.25 and independent stderrs: the page's A − B per token
    is the difference of the files, its interval ±1.96·√(se_A² + se_B²); flags of either run carry over."""
    a = nn_folder(tmp_path / "a", seed=1)
    b = nn_folder(tmp_path / "b", seed=2, shift=0.25, flag_token=5)
    page = write_compare(a, b, tmp_path / "cmp.html")
    d = page_data(page.read_text())
    assert d["kind"] == "compare"
    c = d["compare"]
    k = c["components"].index("l0h1")
    ra, rb = Susceptibility.load(a / "chi_l0h1.npz"), Susceptibility.load(b / "chi_l0h1.npz")
    tok = [j for j, f in enumerate(ra.fields) if f.startswith("tok:")]
    diff = ra.chi[0, tok] - rb.chi[0, tok]
    se = np.hypot(ra.stderr[0, tok], rb.stderr[0, tok])
    np.testing.assert_allclose(c["tokens"]["diff"][k], diff, rtol=1e-3)
    np.testing.assert_allclose(c["tokens"]["hi"][k], diff + 1.959964 * se, rtol=1e-3)
    assert [j for j, f in enumerate(c["tokens"]["flag"][k]) if f] == [3, 5]
    # LLC: 10 + k vs 10 + k + 0.25, each ± 0.5: difference −0.25 ± 0.5·√2
    row = next(e for e in c["llc"] if e["label"] == "l0h1 A−B")
    assert row["v"] == pytest.approx(-0.25) and row["hi"] - row["v"] == pytest.approx(1.959964 * 0.5 * math.sqrt(2), rel=1e-3)


def test_compare_ising_z_and_refusals(tmp_path):
    a, b = ising_folder(tmp_path / "a", seed=1), ising_folder(tmp_path / "b", seed=2, shift=0.1)
    d = page_data(write_compare(a, b, tmp_path / "c.html").read_text())
    ra, rb = Susceptibility.load(a / "chi_map.npz"), Susceptibility.load(b / "chi_map.npz")
    np.testing.assert_allclose(d["compare"]["z"], (ra.chi - rb.chi) / np.hypot(ra.stderr, rb.stderr), rtol=2e-3)
    assert d["compare"]["flag"][1][2] == int(Flags.FROZEN)
    with pytest.raises(ReportError, match="cannot compare a ising run"):
        write_compare(a, nn_folder(tmp_path / "n"), tmp_path / "x.html")
    with pytest.raises(ReportError, match="different lattices or probes"):
        write_compare(a, ising_folder(tmp_path / "big", H=12, W=12), tmp_path / "y.html")


def test_page_is_self_contained_and_cannot_be_broken_by_token_text(tmp_path):
    d = collect(nn_folder(tmp_path / "run"))
    d["tokens"]["text"][0] = "</script><script>alert(1)</script><!--"
    html = render(d)
    assert html.count("</script>") == 2  # the data block's and the script's own ends only
    assert page_data(html)["tokens"]["text"][0] == d["tokens"]["text"][0]
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html), "no external resource"
    assert "default-src 'none'" in html  # the page may not fetch anything


def test_reference_size_page_stays_small(tmp_path):
    """The reference job of benchmarks/bench_vs_devinterp.py: 5 components (full + 4 heads) × 1008
    probe tokens (16 sequences × 63), 4 chains × 100 draws. Its page must stay ≤ 5 MB."""
    folder = nn_folder(tmp_path / "ref", seqs=16, ctx=64)
    page = write_report(folder)
    assert collect(folder)["tokens"]["n_tokens"] == 1008
    assert page.stat().st_size <= 5e6


# ---------------------------------------------------------------------------- ownership and the CLI
def test_report_never_replaces_a_file_it_did_not_write(tmp_path, capsys):
    folder = nn_folder(tmp_path / "run")
    mine = folder / REPORT_NAME
    mine.write_text("my notes")
    assert main(["report", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("spectro: error:") and "not a spectro report" in err and "\n" not in err
    assert mine.read_text() == "my notes"
    assert main(["report", str(folder), "--out", str(tmp_path / "elsewhere.html")]) == 0
    mine.unlink()
    assert main(["report", str(folder)]) == 0 and main(["report", str(folder)]) == 0  # its own page is replaced
    assert is_spectro_page(mine)


@pytest.mark.parametrize("args, message", [
    (["{tmp}/missing"], "does not exist"),
    (["{tmp}"], "holds no spectro results"),
    (["{tmp}/a", "{tmp}/a", "{tmp}/a"], "give one results folder, or two"),
    (["{tmp}/a", "--out", "{tmp}"], "is a folder"),
    (["{tmp}/a", "--out", "{tmp}/no/such/dir/x.html"], "does not exist"),
])
def test_report_cli_errors_are_one_line(tmp_path, capsys, args, message):
    nn_folder(tmp_path / "a")
    assert main(["report", *[x.format(tmp=tmp_path) for x in args]]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("spectro: error:") and message in err and "\n" not in err and "Traceback" not in err


def test_report_cli_compare_forms(tmp_path, capsys, monkeypatch):
    a, b = nn_folder(tmp_path / "a", seed=1), nn_folder(tmp_path / "b", seed=2)
    assert main(["report", str(a), "--compare", str(b), "--out", str(tmp_path / "c.html")]) == 0
    assert page_data((tmp_path / "c.html").read_text())["kind"] == "compare"
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(a), str(b)]) == 0
    assert is_spectro_page(tmp_path / "compare-a-vs-b.html")
    assert not (a / REPORT_NAME).exists() and not (b / REPORT_NAME).exists()  # comparing writes into neither run


def test_corrupt_result_file_is_one_line(tmp_path, capsys):
    folder = nn_folder(tmp_path / "a")
    (folder / "chi_l0h0.npz").write_bytes(b"not a zip")
    assert main(["report", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert "chi_l0h0.npz is not a readable spectro result" in err and "\n" not in err


# ---------------------------------------------------------------------------- the jobs write it
def small_nn_job(tmp_path: Path) -> Path:
    from spectro.jobs.builtin import builtin_checkpoint
    from spectro.jobs.nn_job import run_job

    ck = builtin_checkpoint("tiny", tmp_path / "cache", steps=8, progress=False, log=lambda m: None)
    cfg = {"name": "report-test", "model": {"checkpoint": str(ck)},
           "data": {"corpus": "fixture", "domains": ["code", "prose"], "context": 8, "train_sequences": 16},
           "probes": {"base": 2, "per_domain": 2}, "observables": ["component_loss"], "fields": ["tokens"],
           "components": ["l0h0", "l0h1", "full"], "export": {"devinterp": True},
           "sampler": {"chains": 2, "draws": 8, "batch_size": 8, "nbeta": 10.0, "gamma": 1000.0, "epsilon": 1e-4,
                       "n_batches": 4, "seed": 3}, "threads": 1}
    return run_job(cfg, tmp_path / "out", progress=False, log=lambda m: None)


@pytest.fixture(scope="module")
def nn_job(tmp_path_factory):
    return small_nn_job(tmp_path_factory.mktemp("nnjob"))


def test_nn_job_writes_its_report(nn_job):
    from spectro.outputs import read_marker

    page = nn_job / REPORT_NAME
    assert is_spectro_page(page) and REPORT_NAME in read_marker(nn_job)["files"]
    d = page_data(page.read_text())
    assert d["folder"] == str(nn_job.resolve()) and d["name"] == "report-test"
    assert d["tokens"]["text"][0] and not d["notes"]  # the real probe text, from the export and the tokenizer
    r = Susceptibility.load(nn_job / "chi_l0h0.npz")
    assert d["tokens"]["n_tokens"] == sum(f.startswith("tok:") for f in r.fields) == 2 * 2 * 7


def test_ising_map_writes_its_report_and_report_keeps_the_marker(tmp_path, capsys):
    from spectro.outputs import read_marker

    out = tmp_path / "map"
    assert main(["ising", "map", "--height", "6", "--width", "6", "--beta", "0.3", "--probe-size", "3", "--sweeps", "64",
                 "--chains", "2", "--backend", "torch", "--out", str(out), "--no-progress"]) == 0
    marker = read_marker(out)
    assert is_spectro_page(out / REPORT_NAME) and REPORT_NAME in marker["files"]
    d = page_data((out / REPORT_NAME).read_text())
    assert d["kind"] == "ising" and len(d["probes"]) == 4 and d["exact"] is None
    (out / REPORT_NAME).unlink()
    assert main(["report", str(out)]) == 0
    again = read_marker(out)
    assert again["command"] == marker["command"] and again["results"] == marker["results"] and REPORT_NAME in again["files"]
    # --overwrite of the same folder replaces spectro's page
    assert main(["ising", "map", "--height", "6", "--width", "6", "--beta", "0.3", "--probe-size", "3", "--sweeps", "64",
                 "--chains", "2", "--backend", "torch", "--out", str(out), "--no-progress", "--overwrite"]) == 0
    assert is_spectro_page(out / REPORT_NAME)


def test_a_failing_report_is_a_warning_not_a_lost_run(tmp_path, monkeypatch, capsys):
    import spectro.report as report

    def broken(folder):
        raise RuntimeError("boom")

    monkeypatch.setattr(report, "collect", broken)
    out = tmp_path / "map"
    assert main(["ising", "map", "--height", "6", "--width", "6", "--beta", "0.3", "--probe-size", "3", "--sweeps", "64",
                 "--chains", "2", "--backend", "torch", "--out", str(out), "--no-progress"]) == 0
    assert (out / "chi_map.npz").is_file() and not (out / REPORT_NAME).exists()
    assert f"spectro: warning: {REPORT_NAME} not written (RuntimeError: boom); rebuild it with: spectro report" in capsys.readouterr().err


# ---------------------------------------------------------------------------- in a real browser
def _browser():
    if not CHROMIUM.is_file():
        pytest.skip(f"no chromium at {CHROMIUM} (Debian: apt-get install chromium; .ci/run installs it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright; it is in the dev extra)")
    return sync_playwright


ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    sync_playwright = _browser()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


def _open(browser, page_path: Path):
    pg = browser.new_page(viewport={"width": 1300, "height": 900})
    errors: list[str] = []
    pg.on("console", lambda m: errors.append(m.text) if m.type in ("error", "warning") else None)
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("request", lambda r: errors.append(f"network request {r.url}") if not r.url.startswith("file:") else None)
    pg.goto(page_path.resolve().as_uri())
    pg.wait_for_selector("body[data-ready='1']", timeout=60_000)
    return pg, errors


def _non_blank(png: bytes) -> None:
    import io

    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=float)
    assert img.std() > 10 and (img < 128).mean() > 0.005, "the screenshot is blank"


def test_browser_nn_page(browser, nn_job):
    pg, errors = _open(browser, nn_job / REPORT_NAME)
    r = Susceptibility.load(nn_job / "chi_l0h0.npz")
    n_tokens = sum(f.startswith("tok:") for f in r.fields)
    toks = pg.locator(".tok")
    coloured = pg.eval_on_selector_all(".tok", "els => els.filter(e => e.style.backgroundColor).length")
    assert toks.count() == coloured == n_tokens
    before = pg.eval_on_selector_all(".tok", "els => els.map(e => e.style.backgroundColor)")
    options = pg.eval_on_selector_all("#selector option", "os => os.map(o => o.value)")
    assert "chi:l0h1" in options and "pc:layer0:0" in options
    pg.select_option("#selector", "chi:l0h1")
    after = pg.eval_on_selector_all(".tok", "els => els.map(e => e.style.backgroundColor)")
    assert after != before and len(after) == n_tokens
    # hover: value and interval
    toks.nth(2).hover()
    tip = pg.locator("#tip").inner_text()
    assert "95% interval [" in tip and "χ[phi_C] of l0h1" in tip
    # every flagged entry carries its marker and its reason
    d = page_data((nn_job / REPORT_NAME).read_text())
    k = d["components"].index("l0h1")
    flagged = [t for t, f in enumerate(d["tokens"]["flag"][k]) if f]
    marked = pg.eval_on_selector_all(".tok.flagged", "els => els.map(e => [+e.dataset.t, e.dataset.why])")
    assert sorted(t for t, _ in marked) == flagged
    if flagged:
        assert all(why for _, why in marked)
        assert pg.locator("#banner").count() == 1
    _non_blank(pg.screenshot(full_page=True))
    assert errors == []


def test_browser_flag_marker_reason_and_banner(browser, tmp_path):
    folder = nn_folder(tmp_path / "run")
    pg, errors = _open(browser, write_report(folder))
    pg.select_option("#selector", "chi:l0h1")
    marked = pg.eval_on_selector_all(".tok.flagged", "els => els.map(e => [+e.dataset.t, e.dataset.why, getComputedStyle(e).backgroundImage])")
    assert [m[0] for m in marked] == [3] and marked[0][1] == ADVICE[Flags.UNMIXED] and "repeating-linear-gradient" in marked[0][2]
    pg.locator(".tok.flagged").hover()
    assert "⚠ " + ADVICE[Flags.UNMIXED] in pg.locator("#tip").inner_text()
    pg.select_option("#selector", "chi:l0h0")
    assert pg.locator(".tok.flagged").count() == 0
    assert "1 of" in pg.locator("#banner").inner_text()
    pcs = pg.eval_on_selector_all("#selector option", "os => os.map(o => o.value).filter(v => v.startsWith('pc:'))")
    assert "pc:layer0:0" in pcs
    pg.select_option("#selector", "pc:layer0:0")
    _non_blank(pg.screenshot())
    assert errors == []


def test_browser_ising_and_compare_pages(browser, tmp_path):
    a, b = ising_folder(tmp_path / "a", seed=1), ising_folder(tmp_path / "b", seed=2)
    pg, errors = _open(browser, write_report(a))
    assert pg.locator("canvas.map").count() == 1 + 9 + 3  # lattice, χ/stderr/R-hat per chamber, exact z per chamber
    assert pg.eval_on_selector_all("canvas.map", "cs => cs.map(c => +c.dataset.flagged || 0).reduce((x, y) => x + y, 0)") >= 3
    _non_blank(pg.screenshot(full_page=True))
    assert errors == []
    for page in (write_compare(a, b, tmp_path / "ci.html"),
                 write_compare(nn_folder(tmp_path / "na", seed=1), nn_folder(tmp_path / "nb", seed=2), tmp_path / "cn.html")):
        pg, errors = _open(browser, page)
        _non_blank(pg.screenshot(full_page=True))
        assert errors == []
    assert pg.locator(".tok").count() == 3 * 28  # A, B and A − B


@pytest.mark.slow
def test_browser_reference_size_page_opens_in_under_two_seconds(browser, tmp_path):
    """Time from navigation to the page's ready mark, for the reference job's size (best of 3 loads)."""
    page = write_report(nn_folder(tmp_path / "ref", seqs=16, ctx=64))
    best = math.inf
    for _ in range(3):
        pg, errors = _open(browser, page)
        best = min(best, float(pg.locator("body").get_attribute("data-ready-ms")))
        assert errors == []
        pg.close()
    assert best < 2000, f"the page took {best:.0f} ms to draw"
