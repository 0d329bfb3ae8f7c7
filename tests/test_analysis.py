"""Per-token susceptibility analysis: token classes, PCA with uncertainties, the Baker decomposition,
subset comparison — on hand-made examples and on a synthetic results folder built with the engine
exactly as :mod:`spectro.jobs.nn_job` writes one (no sampling, a few seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from spectro.analysis.baker import baker_decomposition
from spectro.analysis.compare import _r_relative_profile, compare_runs, compare_subsets, spearman
from spectro.analysis.induction import induction_alignment, induction_token_response
from spectro.analysis.principal_components import (
    class_separation,
    layer_pca_report,
    noise_floor,
    pc_fraction_spread,
    pca,
    standardise,
)
from spectro.analysis.token_table import load_token_table, probe_input_ids, resolve_checkpoint, to_jsonable
from spectro.analysis.token_classes import classify_ids, classify_sequence, induction_flags, surface_class
from spectro.engine import MomentAccumulator, estimate_susceptibility
from spectro.nn.susceptibility import baker_susceptibility


# ============================================================================ token classes
@pytest.mark.parametrize(
    "text, prev, expected",
    [
        (" the", "end", "word_start"),          # Ġword
        ("the", None, "word_start"),            # sequence start
        ("the", "\n", "word_start"),            # after a newline token
        ("self", "(", "word_start"),            # after an opening bracket
        ("ation", "educ", "word_part"),         # continuation
        ("ext", "_", "word_part"),              # inside a snake_case identifier
        ("_init", "x", "word_part"),            # underscore-led piece of an identifier
        ("_init", " ", "word_start"),
        (" ", "a", "spacing"),
        ("\n        ", ":", "spacing"),
        ("\t", None, "spacing"),
        ("4", " ", "numeric"),
        (" 2024", "in", "numeric"),
        ("3.14", "=", "numeric"),
        ("x2", " ", "word_start"),              # starts with a letter: a word
        ("(", "f", "delimiter"),
        (" \"", "=", "delimiter"),
        ("._", "self", "delimiter"),
        (" $.", "y", "delimiter"),
        (" --", "sorts", "delimiter"),
        (".", "4", "delimiter"),
        ("2x", " ", "other"),
        ("�", "a", "other"),
        ("", "a", "other"),
    ],
)
def test_surface_rules(text, prev, expected):
    assert surface_class(text, prev) == expected


def test_special_tokens_are_other():
    assert surface_class("<|endoftext|>", None, special=True) == "other"


def test_induction_flags_bigram_seen_before():
    #          0    1    2    3    4    5    6
    ids = ["A", "B", "C", "A", "B", "D", "B"]
    assert induction_flags(ids) == [False, False, False, False, True, False, False]
    # a repeat of the token alone is not enough; the (previous, token) pair must repeat
    assert induction_flags([1, 2, 3, 2]) == [False, False, False, False]
    assert induction_flags([5, 5, 5]) == [False, False, True]


def test_classify_sequence_precedence_and_surface():
    texts = [" x", " =", " 1", "\n", " x", " ="]
    cl = classify_sequence(texts)
    assert [c.cls for c in cl] == ["word_start", "delimiter", "numeric", "spacing", "word_start", "induction"]
    assert cl[-1].surface == "delimiter" and cl[-1].induction
    assert not cl[0].induction
    with pytest.raises(ValueError, match="ids"):
        classify_sequence(texts, ids=[1, 2])


class FakeTokenizer:
    """Just what token_texts needs: id_to_token, decode, get_added_tokens_decoder."""

    class _Added:
        content = "<|endoftext|>"

    def __init__(self, vocab: list[str]):
        self.vocab = vocab

    def id_to_token(self, i: int) -> str:
        return self.vocab[i]

    def decode(self, ids, skip_special_tokens=False) -> str:
        return "".join(self.vocab[i] for i in ids)

    def get_added_tokens_decoder(self):
        return {0: self._Added()}


VOCAB = ["<|endoftext|>", " the", " cat", "s", ".", "\n", " 42", "(", "x", " sat"]


def test_classify_ids_with_a_tokenizer():
    tok = FakeTokenizer(VOCAB)
    ids = [0, 1, 2, 3, 4, 5, 1, 2, 6, 7, 8]
    cl = classify_ids(tok, ids)
    assert [c.cls for c in cl] == ["other", "word_start", "word_start", "word_part", "delimiter", "spacing", "word_start",
                                   "induction", "numeric", "delimiter", "word_start"]


def test_classify_ids_real_tokenizer():
    """GPT-2-style byte-level BPE: Ġ decodes to a space, Ċ to a newline."""
    from spectro.data.tokenizer import train_tokenizer

    tok = train_tokenizer(["the cat sat on the mat. the cat sat.\n    x = 42\n"] * 20, vocab_size=300)
    ids = tok.encode("the cat sat. the cat sat.\n    x = 42").ids
    cl = classify_ids(tok, ids)
    assert "".join(c.text for c in cl) == "the cat sat. the cat sat.\n    x = 42"
    assert [(c.text, c.cls) for c in cl] == [
        ("the", "word_start"), (" cat", "word_start"), (" sat", "word_start"), (".", "delimiter"), (" the", "word_start"),
        (" cat", "word_start"),  # ("the", " cat") was seen, (" the", " cat") was not: different ids
        (" sat", "induction"), (".", "induction"), ("\n   ", "spacing"), (" x", "word_start"), (" =", "delimiter"),
        (" 42", "numeric")]


# ============================================================================ PCA
def _rank1_plus_noise(T: int, K: int, rho2: float, rng) -> np.ndarray:
    s = rng.standard_normal(T)
    a = rng.uniform(0.5, 3.0, K)  # different column scales: standardisation must undo them
    sig = a * np.sqrt((1 - rho2) / rho2)
    return s[:, None] * a[None, :] + rng.standard_normal((T, K)) * sig[None, :] + rng.normal(0, 5, K)


def test_pca_recovers_rank1_fraction():
    rng = np.random.default_rng(0)
    K, rho2 = 4, 0.8
    x = _rank1_plus_noise(4000, K, rho2, rng)
    res = pca(x, names=list("abcd"))
    expected = (1 + (K - 1) * rho2) / K  # top eigenvalue of the equicorrelation matrix / K
    spread = pc_fraction_spread(x, mode="tokens", n_boot=100, seed=1)
    assert abs(res.explained_ratio[0] - expected) < 4 * spread["pc1"]["std"] + 0.005
    assert np.isclose(res.explained_ratio.sum(), 1.0)
    assert np.all(res.loadings[0] > 0)  # sign convention: loadings sum ≥ 0
    np.testing.assert_allclose(np.abs(res.loadings[0]), 0.5, atol=0.03)
    # scores are the projections of the z-scored data
    z, _, _ = standardise(x)
    np.testing.assert_allclose(res.scores, z @ res.loadings.T, atol=1e-9)


def test_noise_floor_is_low_for_pure_noise_and_high_structure_clears_it():
    rng = np.random.default_rng(1)
    se = rng.uniform(0.5, 2.0, (1000, 4))
    floor = noise_floor(se, n=100, seed=2)
    assert 0.25 < floor["pc1"]["mean"] < 0.30 and floor["pc1"]["q975"] < 0.31
    pure = se * rng.standard_normal(se.shape)
    assert pca(pure).explained_ratio[0] < floor["pc1"]["q975"] + 0.01
    strong = _rank1_plus_noise(1000, 4, 0.95, rng)
    assert pca(strong).explained_ratio[0] > 0.9 > floor["pc1"]["q975"]
    noisy = pc_fraction_spread(strong, np.full(strong.shape, 0.1), mode="noise", n_boot=50)
    assert noisy["pc1"]["mean"] > 0.9


def test_standardise_rejects_constant_column():
    with pytest.raises(ValueError, match="constant"):
        standardise(np.c_[np.arange(5.0), np.ones(5)])


def test_class_separation_detects_shifted_class():
    rng = np.random.default_rng(3)
    labels = np.array(["a"] * 200 + ["b"] * 200 + ["tiny"])
    scores = rng.standard_normal((401, 2))
    scores[200:400, 0] += 1.0
    sep = class_separation(scores, labels, n_perm=200)
    assert sep["eta2"][0] > 0.15 and sep["p_perm"][0] < 0.01
    assert sep["p_perm"][1] > 0.01 and sep["eta2"][1] < 0.02
    assert sep["dropped_small_classes"] == ["tiny"]


def test_spearman():
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))


# ============================================================================ synthetic results folder
DOMAINS = ("code", "prose")
HEADS = ("l0h0", "l0h1", "l1h0", "l1h1")


def _write_job(folder: Path, *, C=4, D=40, n_b=4, n_seq=3, ctx=6, n_base=2, seed=0, amp_scale=1.0) -> dict:
    """A results folder as the job writes it, from synthetic per-draw losses: chi_<C>.npz via the
    engine (full: −Cov; heads: baker_susceptibility), devinterp-like samples_<C>.zarr and config.json."""
    import zarr

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    (folder / "devinterp").mkdir()
    ids = {g: rng.integers(1, len(VOCAB), (n_seq, ctx)) for g in DOMAINS}
    ids["code"][0] = [1, 2, 3, 1, 2, 3]  # " the cat s" twice: tokens 4 and 5 are induction tokens
    P = ctx - 1
    load = rng.normal(0, 1, (len(DOMAINS), n_seq, P))  # how each token's loss follows the shared mode
    fields = [f"tok:{g}[{i},{t}]" for g in DOMAINS for i in range(n_seq) for t in range(P)] + [f"dL:{g}" for g in DOMAINS]
    ref = 3.0
    draws = {}
    for c, comp in enumerate(("full", *HEADS)):
        amp = amp_scale * (1.0 if comp == "full" else 0.3 + 0.1 * c)
        z = rng.standard_normal((C, D))  # the posterior's fluctuation along one direction
        base = (ref + 0.2 * amp + amp * 0.1 * z[:, :, None, None] + 0.01 * rng.standard_normal((C, D, n_base, P))).astype(np.float32)
        loss = {}
        for j, g in enumerate(DOMAINS):
            loss[g] = (ref + 0.5 * load[j] * amp + 0.05 * amp * z[:, :, None, None] * load[j]
                       + 0.01 * rng.standard_normal((C, D, n_seq, P))).astype(np.float32)
        draws[comp] = (base, loss)
    accs = {}
    for comp, (base, loss) in draws.items():
        b = base.astype(np.float64).mean(axis=(2, 3))
        phi = (b - ref)[:, :, None]  # [C, D, 1]
        tok = np.concatenate([(loss[g].astype(np.float64) - b[:, :, None, None]).reshape(C, D, -1) for g in DOMAINS], axis=2)
        sub = np.stack([(loss[g].astype(np.float64).mean(axis=(2, 3)) - b) for g in DOMAINS], axis=2)
        psi = np.concatenate([tok, sub], axis=2)
        acc = MomentAccumulator(C, 1, psi.shape[2], D, n_batches=n_b, device="cpu")
        acc.update(torch.from_numpy(phi.transpose(1, 0, 2).copy()), torch.from_numpy(psi.transpose(1, 0, 2).copy()))
        accs[comp] = acc
        res = estimate_susceptibility(acc, -1.0, ["phi_C"], fields)
        if comp != "full":
            bk = baker_susceptibility(acc, accs["full"], ["phi_C"], fields)
            for name in ("chi", "stderr", "stderr_chains", "ess", "rhat", "observable_mean", "observable_stderr"):
                getattr(res, name)[[0]] = getattr(bk, name)[[0]]
        res.meta = {"component": comp, "phi_reference_loss": ref,
                    "observable_estimators": {"phi_C": "-Cov(phi, psi)" if comp == "full" else "baker2025"}}
        res.save(folder / f"chi_{comp}.npz")
        grp = zarr.open_group(str(folder / "devinterp" / f"samples_{comp}.zarr"), mode="w")
        grp.create_array("loss_base", data=base)
        for g in DOMAINS:
            grp.create_array(f"loss_{g}", data=loss[g])
            grp.create_array(f"input_ids_{g}", data=ids[g].astype(np.int64))
    (folder / "config.json").write_text(json.dumps({"model": {"checkpoint": "builtin:tiny"}, "sampler": {"n_batches": n_b},
                                                   "data": {"domains": list(DOMAINS), "context": ctx}}))
    return {"ids": ids, "draws": draws, "ref": ref, "fields": fields}


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    folder = tmp_path_factory.mktemp("job") / "run"
    info = _write_job(folder)
    table = load_token_table(folder, input_ids=info["ids"], tokenizer=FakeTokenizer(VOCAB), draws=True)
    return folder, info, table


def test_reading_a_folder_builds_no_model(job, tmp_path):
    """Analysis reads what the job recorded: probe ids from the devinterp export, the checkpoint
    from summary.json's run.checkpoint; a built-in that is not on disk is an error, never trained."""
    folder, info, _ = job
    ids = probe_input_ids(folder)
    assert ids.keys() == info["ids"].keys() and all(np.array_equal(ids[g], info["ids"][g]) for g in ids)
    with pytest.raises(ValueError, match=r"computed from builtin:tiny, which is not materialised .*builtin_checkpoint\('tiny'"):
        load_token_table(folder, input_ids=info["ids"])  # the tokenizer lives with the checkpoint
    bare = tmp_path / "bare"
    bare.mkdir()
    with pytest.raises(FileNotFoundError, match="export.devinterp false"):
        probe_input_ids(bare)

    ck = tmp_path / "cache" / "builtin-tiny-x" / "checkpoints" / "step_000008"
    ck.mkdir(parents=True)
    (bare / "config.json").write_text(json.dumps({"model": {"checkpoint": "builtin:tiny"}}))
    (bare / "summary.json").write_text(json.dumps({"run": {"checkpoint": str(ck)}}))
    assert resolve_checkpoint(bare) == ck
    ck.rmdir()
    with pytest.raises(ValueError, match=f"its cache folder {ck} is gone"):
        resolve_checkpoint(bare)
    (bare / "config.json").write_text(json.dumps({"model": {"checkpoint": str(tmp_path / "moved")}}))
    with pytest.raises(FileNotFoundError, match="not found"):
        resolve_checkpoint(bare)
    ck.mkdir()
    assert resolve_checkpoint(bare) == ck  # a moved checkpoint: the folder the job loaded


def test_analysis_imports_nothing_that_builds_models():
    import subprocess
    import sys

    code = ("import sys, spectro.analysis, spectro.analysis.study; "
            "bad = sorted(m for m in sys.modules if m.startswith(('spectro.nn', 'spectro.models'))); assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_table_layout_and_classes(job):
    folder, info, t = job
    assert t.components == [*HEADS, "full"] and t.heads() == list(HEADS)
    assert t.layers() == {0: ["l0h0", "l0h1"], 1: ["l1h0", "l1h1"]}
    assert t.n_tokens == 2 * 3 * 5 and t.chi.shape == (30, 5) and t.domains == list(DOMAINS)
    # row r ↔ field tok:D[i,t] predicts ids[i, t+1]
    for r in range(t.n_tokens):
        assert t.token_id[r] == info["ids"][t.domain[r]][t.sample[r], t.position[r] + 1]
    code0 = (t.domain == "code") & (t.sample == 0)
    assert list(t.cls[code0]) == ["word_start", "word_part", "word_start", "induction", "induction"]
    assert t.to_frame().shape == (30 * 5, 8 + 1 + 8 + 1)  # 8 per-token matrices, noise included


def test_decomposition_and_draws_agree_with_files(job):
    folder, info, t = job
    assert t.meta["draws_check"]["max_abs_dev_over_median_stderr"] < 1e-6
    np.testing.assert_array_equal(t.offset[:, t.components.index("full")], 0.0)
    # covariance part = −Cov_C(φ, ψ) computed directly from the draws
    base, loss = info["draws"]["l1h0"]
    b = base.astype(np.float64).mean(axis=(2, 3))
    phi = (b - info["ref"]).ravel()
    k = t.components.index("l1h0")
    for r in (0, 7, 29):
        g, i, p = t.domain[r], t.sample[r], t.position[r]
        psi = (loss[g][:, :, i, p].astype(np.float64) - b).ravel()
        assert t.cov_part[r, k] == pytest.approx(-np.cov(phi, psi, ddof=0)[0, 1], rel=1e-6, abs=1e-12)
    dec = baker_decomposition(t)
    assert dec["available"] and set(dec["components"]) == set(HEADS)
    for e in dec["components"].values():
        assert e["median_stderr_cov"] > 0 and np.isfinite(e["cov_z_rms"])


def test_subset_comparison(job):
    _, _, t = job
    s = compare_subsets(t, n_boot=50)
    assert s["token_mean_check_max_z"] < 1e-6  # χ(q') = E_q'[χ_xy]
    chi = np.asarray(s["dataset_chi"])
    assert chi.shape == (4, 2)
    np.testing.assert_allclose(np.asarray(s["relative"]).mean(axis=1), 1.0)
    c = np.asarray(s["cosine_raw"])
    np.testing.assert_allclose(np.diag(c), 1.0)
    np.testing.assert_allclose(c, c.T)
    sc = compare_subsets(t, which="cov_part", n_boot=20)
    assert sc["token_mean_check_max_z"] < 1e-6
    with pytest.raises(ValueError, match="which"):
        compare_subsets(t, which="nope")


def test_layer_reports_and_induction(job):
    _, _, t = job
    rep = layer_pca_report(t, n_boot=30)
    assert set(rep) == {"layer0", "layer1", "all_heads"}
    for r in rep.values():
        assert np.isclose(sum(r["explained_ratio"]), 1.0)
        assert 0 < r["noise_floor"]["mean"] < 1
    resp = induction_token_response(t, n_boot=30)
    assert resp["available"] and resp["n_induction_tokens"] >= 2
    np.testing.assert_allclose(np.asarray(resp["head_specific"]).reshape(2, 2).sum(axis=1), 0.0, atol=1e-12)
    scores = np.array([[0.05, 0.04], [0.9, 0.04]])
    al = induction_alignment(scores, rep, uniform_baseline=0.05, token_response=resp)
    assert al["top_induction_head"] == "l1h0" and al["heads_above_2x_baseline"] == ["l1h0"]
    json.dumps(to_jsonable(al))


def test_compare_runs(job, tmp_path):
    folder, info, t = job
    other = tmp_path / "run2"
    info2 = _write_job(other, seed=0, amp_scale=1.5)
    t2 = load_token_table(other, input_ids=info2["ids"], tokenizer=FakeTokenizer(VOCAB))
    st = compare_runs({"a": t, "b": t2})
    pair = st["pairs"]["a vs b"]
    assert pair["r_chi_per_component_median"] > 0.9  # same token loadings, other amplitude
    assert set(st["per_run"]) == {"a", "b"}
    same_sign = np.array([[1.0, 2.0, 3.0], [2.0, 2.5, 1.0]])
    assert _r_relative_profile(same_sign, same_sign * 3) == pytest.approx(1.0)  # scale-free
    cancelling = np.array([[1.0, -1.05, 0.1], [2.0, 2.5, 1.0]])  # first component's mean ≈ 0
    assert np.isnan(_r_relative_profile(cancelling, same_sign))
    with pytest.raises(ValueError, match="at least two"):
        compare_runs({"a": t})
    t3 = t.select(np.arange(t.n_tokens - 1))
    with pytest.raises(ValueError, match="different probe tokens"):
        compare_runs({"a": t, "c": t3})


def test_analyse_job_and_figures(job, tmp_path):
    from spectro.analysis.study import analyse_job, write_figures

    folder, _, t = job
    rep, table, pcas = analyse_job(folder, n_boot=20, n_perm=20, induction=False, table=t)
    v = rep["verdicts"]
    assert set(v["dominant_pc1"]) == {"layer0", "layer1"} and "pc1_is_offset" in v
    json.dumps(to_jsonable(rep))
    paths = write_figures(rep, table, pcas, tmp_path / "figs", prefix="syn", title="synthetic")
    assert len(paths) == 4 and all(p.stat().st_size > 1000 for p in paths)
    assert not list((tmp_path / "figs").glob(".*"))  # atomic writes leave no temporaries


def test_domain_heatmap_switches_to_profile_shape_when_domains_cancel(tmp_path, monkeypatch):
    import spectro.analysis.plots as plots

    titles = []
    real_save = plots.save_figure

    def capture(fig, path, **kw):
        titles.append(fig.axes[1].get_title())  # fig.axes: left map, right map, then the two colorbars
        return real_save(fig, path, **kw)

    monkeypatch.setattr(plots, "save_figure", capture)
    doms = ["prose", "legal", "math", "code"]
    for chi, expect in ((np.array([[-0.004, 0.003, 0.0035, -0.0002], [-0.001, 0.0008, 0.0007, 0.0]]), "profile shape"),
                        (np.array([[0.004, 0.003, 0.0035, 0.002], [0.001, 0.0008, 0.0007, 0.0009]]), "relative profile")):
        subsets = {"components": ["l0h0", "l1h0"], "domains": doms, "dataset_chi": chi,
                   "dataset_stderr": np.full_like(chi, 4e-4), "relative": chi / chi.mean(axis=1, keepdims=True),
                   "profile_z": np.zeros_like(chi)}
        titles.clear()
        path = plots.plot_domain_heatmap(subsets, tmp_path / f"{expect}.png")
        assert path.stat().st_size > 1000
        assert any(t.startswith(expect) for t in titles), titles


def test_token_fields_come_from_typed_coordinates_not_names():
    """A format-/3 result is read through its field axis (labels need not follow tok:G[i,t]); an
    older result falls back to the names; the estimator of a row is its typed column."""
    from spectro.analysis.token_table import row_estimator, token_fields
    from spectro.engine import Axis, Susceptibility

    def result(fields, axis=None, obs_axis=None):
        m, k = 1, len(fields)
        z = np.zeros((m, k))
        return Susceptibility(chi=z, stderr=z + 1, stderr_chains=z + 1, ess=z + 10, rhat=z + 1, observable_mean=np.zeros(m),
                              observable_stderr=np.ones(m), field_mean=np.zeros(k), field_stderr=np.ones(k),
                              observables=["phi_C"], fields=fields, scale=-1.0, n_chains=4, n_draws=10,
                              field_axis=axis, observable_axis=obs_axis)

    typed = Axis.from_records("field", ["a", "b", "c"], [
        {"kind": "dataset", "group": "code", "sample": -1, "position": -1},
        {"kind": "token", "group": "code", "sample": 3, "position": 7},
        {"kind": "token", "group": "math", "sample": 0, "position": 2}])
    assert token_fields(result(["a", "b", "c"], typed)) == ([1, 2], ["code", "math"], [3, 0], [7, 2])
    assert token_fields(result(["dL:code", "tok:code[3,7]", "tok:math[0,2]"])) == ([1, 2], ["code", "math"], [3, 0], [7, 2])
    baker = Axis("observable", ("phi_C",), {"estimator": ["baker2025"]})
    assert row_estimator(result(["a"], obs_axis=baker), 0) == "baker2025"
    assert row_estimator(result(["a"]), 0) == "cov"
