"""Corpus building/loading (through 🤗 datasets) and the BPE tokenizer."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest

from spectro.data.corpus import (
    FIXTURE_DIR,
    CorpusConfig,
    CorpusError,
    build_corpus,
    load_corpus,
    read_manifest,
    select_and_split,
)
from spectro.data.sources import Document, chunk_text, detag_brown, strip_metamath_proofs
from spectro.data.tokenizer import (
    EOS_TOKEN,
    TokenizerMismatchError,
    check_tokenizer,
    encode_documents,
    fingerprint,
    load_tokenizer,
    save_tokenizer,
    train_tokenizer,
)

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---------------------------------------------------------------------------- fixture corpus
@pytest.fixture(scope="module")
def fixture_ds(tmp_path_factory):
    return load_corpus(cache_dir=tmp_path_factory.mktemp("hf"))


def test_fixture_loads_through_datasets(fixture_ds):
    assert set(fixture_ds) == {"train", "validation"}
    for split in ("train", "validation"):
        ds = fixture_ds[split]
        assert set(ds.column_names) == {"text", "domain", "source", "doc_id"}
        assert set(ds["domain"]) == {"code", "prose", "legal", "math"}
    train_ids, val_ids = set(fixture_ds["train"]["doc_id"]), set(fixture_ds["validation"]["doc_id"])
    assert not train_ids & val_ids


def test_fixture_manifest_matches_files_and_is_small():
    manifest = read_manifest()
    total = 0
    for dom, entry in manifest["domains"].items():
        assert entry["sources"] and all(s["licence"] for s in entry["sources"])
        for split in ("train", "validation"):
            f = FIXTURE_DIR / entry[split]["file"]
            data = f.read_bytes()
            total += len(data)
            assert hashlib.sha256(data).hexdigest() == entry[split]["sha256"], f
            assert len(data.splitlines()) == entry[split]["n_docs"]
    assert total < 200_000


def test_load_corpus_domain_filter_and_errors(tmp_path):
    ds = load_corpus(domains=["code"], cache_dir=tmp_path)
    assert set(ds["train"]["domain"]) == {"code"}
    with pytest.raises(CorpusError, match="not in"):
        load_corpus(domains=["poetry"], cache_dir=tmp_path)
    with pytest.raises(CorpusError, match="build_corpus.py"):
        load_corpus(tmp_path / "nowhere")


# ---------------------------------------------------------------------------- building
def _docs(prefix: str, n: int, size: int = 300) -> list[Document]:
    return [Document(f"{prefix}:{i}#0", f"{prefix} document {i}\n" + "x" * size + "\n", prefix) for i in range(n)]


def test_select_and_split_is_deterministic_capped_and_disjoint():
    src = {"a": _docs("a", 40), "b": _docs("b", 5)}
    s1 = select_and_split(src, 6000, 0.1, seed=3)
    s2 = select_and_split({"b": list(reversed(src["b"])), "a": list(reversed(src["a"]))}, 6000, 0.1, seed=3)
    assert s1 == s2  # input order does not matter
    chosen = s1["train"] + s1["validation"]
    assert sum(len(d.text) for d in chosen) == 6000  # last document cut to fit
    assert {d.doc_id for d in s1["train"]}.isdisjoint({d.doc_id for d in s1["validation"]})
    assert s1["validation"] and s1["train"]
    assert {d.source for d in chosen} == {"a", "b"}  # round-robin: the small source is used
    assert select_and_split(src, 6000, 0.1, seed=4) != s1  # the seed changes the order


def test_text_helpers():
    text = "para one\nline two\n\npara two is longer\n" * 20
    pieces = chunk_text(text, 50)
    assert "".join(pieces) == text and all(len(p) <= 50 for p in pieces)
    tagged = "\n\n\tThe/at jury/nn said/vbd ``/`` no/at ''/'' ,/, then/rb left/vbd ./.\n\tNew/jj one/cd ./.\n"
    assert detag_brown(tagged) == 'The jury said "no", then left.\n\nNew one.\n'
    mm = "th1 $p |- ph $= ( wi ax-1 ) ABCD $.\n$( comment $)\n"
    assert strip_metamath_proofs(mm) == "th1 $p |- ph $= ... $.\n$( comment $)\n"


def _fake_sources(root: Path) -> dict[str, Path]:
    """Tiny stand-ins for the registry packages, in their real layouts."""
    std = root / "stdlib"
    (std / "pkg").mkdir(parents=True)
    (std / "os.py").write_text("import sys\n" + "def f(x):\n    return x + 1\n" * 40)
    (std / "pkg" / "mod.py").write_text("class A:\n    pass\n" * 60)
    (std / "test").mkdir()
    (std / "test" / "test_x.py").write_text("SKIPPED = True\n" * 50)
    brown = root / "brown"
    brown.mkdir()
    for name in ("ca01", "cb02"):
        (brown / name).write_text("\n\n\tThe/at cat/nn sat/vbd on/in the/at mat/nn ./.\n" * 30)
    lic = root / "licences"
    lic.mkdir()
    for name in ("mit", "bsd"):
        (lic / f"{name}.LICENSE").write_text(f"---\nkey: {name}\n---\n" + f"Permission is hereby granted {name}.\n" * 20)
    mm = root / "mm"
    mm.mkdir()
    (mm / "set.mm").write_text("$( A comment about sets. $)\nax1 $p |- ph $= ( wi ) AB $.\n" * 60)
    return {"python-stdlib": std, "brown": brown, "scancode-licenses": lic, "metamath-set.mm": mm}


def test_build_corpus_offline_roundtrip_and_determinism(tmp_path):
    paths = _fake_sources(tmp_path / "src")
    cfg = CorpusConfig(sources=("python-stdlib", "brown", "scancode-licenses", "metamath-set.mm"),
                       max_chars_per_domain=2000, max_doc_chars=400, validation_fraction=0.2)
    m1 = build_corpus(tmp_path / "c1", cfg, paths=paths, fetch=False, require_all=True)
    m2 = build_corpus(tmp_path / "c2", cfg, paths=paths, fetch=False, require_all=True)
    assert set(m1["domains"]) == {"code", "prose", "legal", "math"}
    for dom in m1["domains"]:
        for split in ("train", "validation"):
            assert m1["domains"][dom][split]["sha256"] == m2["domains"][dom][split]["sha256"]
        assert m1["domains"][dom]["train"]["chars"] + m1["domains"][dom]["validation"]["chars"] <= 2000
        assert m1["domains"][dom]["sources"][0]["licence"]
    ds = load_corpus(tmp_path / "c1", cache_dir=tmp_path / "hf")
    rows = [r for split in ("train", "validation") for r in ds[split]]
    code = [r["text"] for r in rows if r["domain"] == "code"]
    assert code and not any("SKIPPED" in t for t in code)  # test/ folders excluded
    legal = [r["text"] for r in rows if r["domain"] == "legal"]
    assert legal and not any("key:" in t for t in legal)  # YAML front matter stripped


def test_build_corpus_missing_sources(tmp_path):
    paths = _fake_sources(tmp_path / "src")
    cfg = CorpusConfig(sources=("python-stdlib", "brown"), max_chars_per_domain=1000)
    bad = {"python-stdlib": paths["python-stdlib"], "brown": tmp_path / "empty"}
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="brown"):
        build_corpus(tmp_path / "c", cfg, paths=bad, fetch=False, require_all=True)
    with pytest.raises(CorpusError, match=r"\['prose'\] have no available source"):
        build_corpus(tmp_path / "c", cfg, paths=bad, fetch=False)
    with pytest.raises(CorpusError, match="unknown sources"):
        CorpusConfig(sources=("wikipedia",))


def test_build_corpus_script_arguments():
    bc = _script("build_corpus")
    a = bc.parse_args(["out", "--source", "hub", "--hub-dataset", "org/name", "--domain-field", "meta"])
    assert a.source == "hub" and a.hub_dataset == "org/name" and a.domain_field == "meta"
    a = bc.parse_args(["out", "--max-chars-per-domain", "2e6", "--path", "brown=/x"])
    assert a.max_chars_per_domain == 2_000_000 and a.paths == {"brown": Path("/x")}
    for bad in (["out", "--source", "hub"], ["out", "--hub-dataset", "x"], ["out", "--path", "nosuch=/x"]):
        with pytest.raises(SystemExit):
            bc.parse_args(bad)


# ---------------------------------------------------------------------------- tokenizer
@pytest.fixture(scope="module")
def tok(fixture_ds):
    return train_tokenizer(fixture_ds["train"]["text"], 600)


def test_tokenizer_is_deterministic_and_roundtrips(tok, fixture_ds, tmp_path):
    again = train_tokenizer(fixture_ds["train"]["text"], 600)
    assert again.to_str() == tok.to_str()
    assert fingerprint(again) == fingerprint(tok)
    assert tok.get_vocab_size() == 600 and tok.token_to_id(EOS_TOKEN) == 0
    text = "def f(x):\n    return ñ + 1  # ∀x\n"
    assert tok.decode(tok.encode(text).ids) == text  # byte-level: lossless, no unknown token
    save_tokenizer(tok, tmp_path / "tokenizer.json")
    loaded = load_tokenizer(tmp_path)
    assert fingerprint(loaded) == fingerprint(tok)
    ids = list(encode_documents(tok, ["a b", "c"]))
    assert ids[0][-1] == ids[1][-1] == 0


def test_vocabulary_mismatch_raises(tok, fixture_ds):
    fp = fingerprint(tok).to_dict()
    check_tokenizer(tok, fp)  # same vocabulary: fine
    smaller = train_tokenizer(fixture_ds["train"]["text"], 500)
    with pytest.raises(TokenizerMismatchError, match="vocabulary of 600 tokens, but this tokenizer has 500"):
        check_tokenizer(smaller, fp, what="probe set 'x'")
    other = train_tokenizer(fixture_ds["validation"]["text"], 600, min_frequency=1)
    assert other.get_vocab_size() == 600
    with pytest.raises(TokenizerMismatchError, match="different vocabulary of the same size"):
        check_tokenizer(other, fp)
    with pytest.raises(TokenizerMismatchError, match="not a tokenizer fingerprint"):
        check_tokenizer(tok, {"size": 3})


def test_hub_path_with_a_stand_in_stream(tmp_path, monkeypatch):
    """The Hub builder's logic, with ``datasets.load_dataset`` replaced by an in-memory stream."""
    import datasets

    from spectro.data.corpus import build_corpus_from_hub

    records = [{"content": f"record {i} " + "word " * 80, "lang": "py" if i % 2 else "md"} for i in range(40)]
    seen = {}

    def fake_load_dataset(name, config=None, *, split, streaming, revision=None):
        seen.update(name=name, config=config, split=split, streaming=streaming)
        return iter(records)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    m = build_corpus_from_hub(tmp_path / "hub", "org/data", text_field="content", domain_field="lang",
                              max_chars_per_domain=3000, validation_fraction=0.2)
    assert seen == {"name": "org/data", "config": None, "split": "train", "streaming": True}
    assert set(m["domains"]) == {"py", "md"} and m["origin"] == "huggingface hub"
    for entry in m["domains"].values():
        assert entry["train"]["n_docs"] and entry["validation"]["n_docs"]
        assert entry["train"]["chars"] + entry["validation"]["chars"] <= 3000
    monkeypatch.undo()
    assert set(load_corpus(tmp_path / "hub", cache_dir=tmp_path / "hf")["train"]["domain"]) == {"py", "md"}
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    with pytest.raises(CorpusError, match="no field 'text'"):
        build_corpus_from_hub(tmp_path / "hub2", "org/data")


def test_train_script_summary_keeps_earlier_seeds(tmp_path):
    tt = _script("train_transformer")
    path = tmp_path / "summary.json"
    tok, model = {"vocab_size": 10, "sha256": "a"}, {"d_model": 8}
    path.write_text(json.dumps({"tokenizer": tok, "model": model, "runs": {"seed_0": {"x": 0}, "seed_10": {"x": 10}}}))
    new = {"tokenizer": tok, "model": model, "runs": {"seed_2": {"x": 2}, "seed_0": {"x": -1}}}
    merged = tt._merged_with_earlier_seeds(path, new)
    assert list(merged["runs"]) == ["seed_0", "seed_2", "seed_10"] and merged["runs"]["seed_0"] == {"x": -1}
    other = {**new, "tokenizer": {"vocab_size": 10, "sha256": "b"}}  # another tokenizer: earlier seeds dropped
    assert tt._merged_with_earlier_seeds(path, other) == other
    assert tt._merged_with_earlier_seeds(tmp_path / "missing.json", new) == new
