"""One call, one folder: a whole neural-network susceptibility job from a config.

    from spectro.jobs.nn_job import JobConfig, run_job
    out = run_job(JobConfig.load("experiments/configs/nn_demo.json"), "runs/nn-demo")

or ``spectro nn run --config FILE --out DIR [--overwrite]`` (``spectro nn demo`` runs
:data:`DEMO_CONFIG`). A job: load a checkpoint (or train the built-in ``builtin:tiny``), cut
training windows and probe sequences from a corpus with the checkpoint's tokenizer, sample the
localized tempered posterior once per weight component (C chains batched, a tqdm bar per draw),
stream observables φ and field generators ψ into the engine, and write a results folder.

Data and loss. The model is a :class:`spectro.models.AttentionOnlyTransformer` checkpoint; the
loss is the per-token next-token cross-entropy (a sequence of ``context`` tokens gives
``context − 1`` per-token losses), evaluated in eval mode. SGLD runs on ``train_sequences``
non-overlapping windows of the train split, spread evenly over the domains (n = their number,
so the default nβ is n/log n); the ``base`` probe group (q) is ``probes.base`` of those windows,
spread evenly; each domain's probe group (q') is ``per_domain`` windows of ``probes.split``.

Estimators (docs/design.md §2). Fields ψ are data perturbations against the base distribution q
(the ``base`` probe group): ``ψ = ΔL = L(q') − L(q)``. For every component C:

* the observable ``component_loss`` is Baker et al.'s φ_C = L̄(w) − L̄(w*) (L̄ = mean loss on
  ``base``); for a restricted component its χ is ``−(E_C[φ·ψ] − E_C[φ]·E_full[ψ])``
  (:func:`spectro.nn.baker_susceptibility`; needs the unrestricted run, which is then always
  run and written as ``full``); for ``full`` it is ``−Cov(φ, ψ)``.
* every other observable gets the fluctuation–dissipation ``χ = −Cov_C(φ, ψ)`` under the
  component's (restricted) posterior.

Config schema (JSON, or TOML read with ``tomllib``; unknown keys, wrong types, missing required
keys and non-finite numbers are errors naming the key)::

    {
      "name": "...", "description": "...",          optional labels, copied to the results
      "model": {                                    required
        "checkpoint": "runs/x/checkpoints/step_002000" | "builtin:tiny" | "path/to/hf-model",   required
                                    a spectro checkpoint folder, a built-in, or a local Hugging Face
                                    causal-LM folder (config.json + *.safetensors + tokenizer.json;
                                    loaded offline, needs pip install -e '.[hf]'; families:
                                    spectro.models.hf.supported_model_types())
        "cache_dir": null,          builtin cache (default $SPECTRO_CACHE_DIR or runs/cache)
        "train_steps": null,        builtin only: override the recipe's training steps
        "dtype": null               "float32" | "bfloat16" | "float16": store the model in this
                                    dtype; bfloat16/float16 need the matching sampler.precision
                                    ("bf16"/"fp16"; SGLD still updates float32 master weights).
                                    A Hugging Face folder stored in bf16/fp16 loads as stored:
                                    set the matching sampler.precision (or dtype "float32")
      },
      "data": {
        "corpus": "fixture",        "fixture" (shipped) or a corpus folder (spectro.data)
        "files": null,              instead of corpus: local text per domain, {domain: file | [files] |
                                    {"train": …, "validation": …}}; .txt (paragraphs), .jsonl/.json,
                                    .parquet (spectro.data.local; unsplit domains: 10 % validation)
        "text_field": "text",       the text column of .jsonl/.json/.parquet files
        "domains": null,            list of domains (default: all of the corpus)
        "context": null,            tokens per sequence, 2..n_ctx (default: the model's n_ctx)
        "train_sequences": 256,     SGLD training windows (train split, spread over domains)
        "tokenizer": null           optional tokenizer.json the data is meant for; must match
                                    the checkpoint's (required when the checkpoint has none)
      },
      "probes": {
        "base": 16,                 sequences standing in for q (spread over the training windows)
        "per_domain": 8,            sequences per domain (int, or {domain: int}), from "split"
        "split": "validation"       "validation" or "train"
      },
      "observables": ["component_loss"],   list of
          "component_loss"                                      φ_C (name "phi_C")
          {"type": "mean_loss", "domain": D}                    L(D)
          {"type": "per_sample_loss", "domain": D, "samples": [i, ...]?}
          {"type": "per_token_loss", "domain": D, "samples": [...]?, "positions": [...]?}
      "fields": ["tokens"],                list of
          "tokens" | {"type": "tokens", "domains": [...]?, "samples": [...]?, "positions": [...]?}
                 per-token point masses ψ_xy = ℓ_xy − L̄ (names "tok:D[i,t]"); each domain also
                 gets its subset field "dL:D" (the mean of its per-token χ, with a proper stderr)
          "subset" | {"type": "subset", "domains": [...]?, "samples": [...]?}
                 ψ = L(D) − L(base) (names "dL:D")
          {"type": "upweight", "domain": D, "samples": [...]?}
                 ψ_m = ℓ_m − L(base), Bayesian influence functions (names "up:D[i]")
      "components": ["heads", "full"],     required; "full" (alias "all"), "heads" (every head), "layers",
                                          "attn", "mlp" (one component per layer), "embed", "unembed",
                                          "lLhH" (one head), "lLgG" (GQA group), "lL" (layer L; attention-
                                          only models: its attention), "lL.attn", "lL.mlp", "A+B" unions,
                                          parameter-name globs, "NAME=SPEC" (spectro.models.components)
      "sampler": {...},                    spectro.nn.SamplerConfig fields; master_dtype as
                                          "float32"/"float64"; nbeta null → n/log n, n = train_sequences;
                                          precision "fp32" (default) | "bf16" | "fp16": compute dtype of
                                          forward/backward (master weights and moments stay float32/64);
                                          step "eager" (default) | "fused" | "compiled": how the update
                                          runs (same draws to float rounding; docs/benchmarks_nn.md);
                                          method: any of spectro.nn.samplers.METHODS, its own settings
                                          as keys (e.g. "friction" for "sghmc"); control_variate: bool
      "threads": null,                     torch CPU threads during the job (null: unchanged)
      "export": {"devinterp": true, "max_mb": 512}   devinterp xarray/zarr export, size cap
    }

``samples`` are indices inside a domain's probe group, ``positions`` indices of predicted
tokens (0 … context−2; position t predicts token t+1).

Results folder (assembled in a hidden sibling and renamed into place; every file written
atomically; nothing is left behind when a job fails — except, with checkpointing, the stage and
snapshots an interrupted job needs for ``--resume``, see :mod:`spectro.jobs.resume`)::

    OUT/config.json           the resolved config (defaults filled; loads back as a JobConfig)
    OUT/chi_<component>.npz   spectro.engine.Susceptibility (χ, stderr, ESS, R-hat, meta with the
                              loss trace [C][draws], LLC, sampler settings, versions)
    OUT/summary.json          per component: LLC ± stderr, loss-trace R-hat, min ESS and max R-hat
                              of χ, per-domain mean χ ± stderr, timing; the run (model, data sizes,
                              tokenizer fingerprint, nβ); versions
    OUT/traces.png            loss traces per chain with L(w*), per-domain χ with error bars
    OUT/devinterp/            samples_<component>.zarr (devinterp's sample() schema) and
                              susceptibilities.zarr (devinterp's SusceptibilitiesV2 layout), see
                              :mod:`spectro.jobs.export`
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


__all__ = ["read_config_file", "ConfigError", "ModelSpec", "DataSpec", "ProbeSpec", "ObservableSpec", "FieldSpec", "ExportSpec", "JobConfig",
           "DEMO_CONFIG"]


class ConfigError(ValueError):
    """A job config (or what it points at) is invalid; the message names the key and the problem."""


# ============================================================================ config dataclasses
@dataclass(frozen=True)
class ModelSpec:
    checkpoint: str
    cache_dir: str | None = None
    train_steps: int | None = None
    dtype: str | None = None


@dataclass(frozen=True)
class DataSpec:
    corpus: str = "fixture"
    domains: tuple[str, ...] | None = None
    context: int | None = None
    train_sequences: int = 256
    tokenizer: str | None = None
    files: dict[str, Any] | None = None
    text_field: str = "text"


@dataclass(frozen=True)
class ProbeSpec:
    base: int = 16
    per_domain: int | dict[str, int] = 8
    split: str = "validation"


@dataclass(frozen=True)
class ObservableSpec:
    type: str
    domain: str | None = None
    samples: tuple[int, ...] | None = None
    positions: tuple[int, ...] | None = None


@dataclass(frozen=True)
class FieldSpec:
    type: str
    domains: tuple[str, ...] | None = None
    samples: tuple[int, ...] | None = None
    positions: tuple[int, ...] | None = None


@dataclass(frozen=True)
class ExportSpec:
    devinterp: bool = True
    max_mb: float = 512.0


_SAMPLER_KEYS = {
    "method": "str", "epsilon": "float", "gamma": "float", "nbeta": "float?", "chains": "int", "draws": "int",
    "burn_in": "int", "steps_per_draw": "int", "batch_size": "int?", "seed": "int", "chain_offset": "int",
    "rmsprop_alpha": "float", "rmsprop_delta": "float", "device": "str", "master_dtype": "str",
    "eval_batch_size": "int", "n_batches": "int?", "health_every": "int", "max_loss_increase": "float",
    "precision": "str", "step": "str", "control_variate": "bool",
}
_OBS_TYPES = ("component_loss", "mean_loss", "per_sample_loss", "per_token_loss")
_FIELD_TYPES = ("tokens", "subset", "upweight")
_BASE = "base"


@dataclass(frozen=True)
class JobConfig:
    """A whole job (see the module docstring for the schema). Build with :meth:`from_dict` / :meth:`load`."""

    model: ModelSpec
    components: tuple[str, ...]
    data: DataSpec = field(default_factory=DataSpec)
    probes: ProbeSpec = field(default_factory=ProbeSpec)
    observables: tuple[ObservableSpec, ...] = (ObservableSpec("component_loss"),)
    fields: tuple[FieldSpec, ...] = (FieldSpec("tokens"),)
    sampler: dict[str, Any] = field(default_factory=dict)
    threads: int | None = None
    export: ExportSpec = field(default_factory=ExportSpec)
    name: str | None = None
    description: str | None = None

    # ------------------------------------------------------------------ reading
    @classmethod
    def load(cls, path: str | os.PathLike) -> "JobConfig":
        """Read a ``.json`` or ``.toml`` file (:func:`read_config_file`) and validate it."""
        return cls.from_dict(read_config_file(path))

    @classmethod
    def from_dict(cls, obj: Any) -> "JobConfig":
        """Validate a parsed config (strict: unknown keys, wrong types, non-finite numbers raise ConfigError)."""
        _check_depth(obj, "config")
        _check_finite(obj, "")
        top = _Table(obj, "")
        top.allow("system", "name", "description", "model", "data", "probes", "observables", "fields", "components",
                  "sampler", "threads", "export")
        if top.get("system", "nn") != "nn":
            raise ConfigError(f"system: this is the NN job schema; got system = {top.get('system')!r}")
        m = _Table(top.required("model"), "model")
        m.allow("checkpoint", "cache_dir", "train_steps", "dtype")
        model = ModelSpec(checkpoint=m.string("checkpoint", required=True), cache_dir=m.string("cache_dir"),
                          train_steps=m.integer("train_steps", minimum=1), dtype=m.string("dtype"))
        if model.dtype not in (None, "float32", "bfloat16", "float16"):
            raise ConfigError(f"model.dtype must be 'float32', 'bfloat16' or 'float16', got {model.dtype!r}")
        if model.train_steps is not None and not model.checkpoint.startswith("builtin:"):
            raise ConfigError("model.train_steps applies only to builtin:* checkpoints")

        d = _Table(top.get("data", {}), "data")
        d.allow("corpus", "domains", "context", "train_sequences", "tokenizer", "files", "text_field")
        files = d.get("files")
        if files is not None:
            if "corpus" in d.obj:
                raise ConfigError("data: give either data.corpus or data.files, not both")
            _check_files(files)
        data = DataSpec(
            corpus=d.string("corpus", default="fixture"),
            domains=d.str_list("domains", nonempty=True, unique=True),
            context=d.integer("context", minimum=2),
            train_sequences=d.integer("train_sequences", default=256, minimum=2),
            tokenizer=d.string("tokenizer"),
            files=files,
            text_field=d.string("text_field", default="text"),
        )
        if data.domains is not None and _BASE in data.domains:
            raise ConfigError(f"data.domains: {_BASE!r} is reserved for the base probe group; rename the domain")

        p = _Table(top.get("probes", {}), "probes")
        p.allow("base", "per_domain", "split")
        per_domain: Any = p.get("per_domain", 8)
        if isinstance(per_domain, dict):
            pd = _Table(per_domain, "probes.per_domain")
            per_domain = {k: pd.integer(k, required=True, minimum=1) for k in per_domain}
            if not per_domain:
                raise ConfigError("probes.per_domain: empty table; give an integer or {domain: sequences}")
        else:
            per_domain = p.integer("per_domain", default=8, minimum=1)
        split = p.string("split", default="validation")
        if split not in ("train", "validation"):
            raise ConfigError(f"probes.split must be 'train' or 'validation', got {split!r}")
        probes = ProbeSpec(base=p.integer("base", default=16, minimum=2), per_domain=per_domain, split=split)

        observables = tuple(_parse_observable(x, f"observables[{i}]") for i, x in enumerate(top.list("observables", default=["component_loss"], nonempty=True)))
        fields_ = tuple(_parse_field(x, f"fields[{i}]") for i, x in enumerate(top.list("fields", default=["tokens"], nonempty=True)))
        components = top.str_list("components", required=True, nonempty=True, unique=True)
        from ..models.components import component_syntax_error

        for i, c in enumerate(components):
            err = component_syntax_error(c)
            if err:
                raise ConfigError(f"components[{i}]: {err}")
        if len({_canonical_component(c) for c in components}) != len(components):
            raise ConfigError(f"components: {list(components)} names a component twice ('all' is 'full')")

        s = _Table(top.get("sampler", {}), "sampler")
        keys = _sampler_keys()
        s.allow(*keys)
        sampler: dict[str, Any] = {}
        for key, kind in keys.items():
            if key not in s.obj:
                continue
            nullable = kind.endswith("?")
            base_kind = kind.rstrip("?")
            if base_kind == "int":
                sampler[key] = s.integer(key, nullable=nullable)
            elif base_kind == "float":
                sampler[key] = s.number(key, nullable=nullable)
            elif base_kind == "bool":
                sampler[key] = s.boolean(key, default=False)
            else:
                sampler[key] = s.string(key)
        if isinstance(sampler.get("draws"), int) and sampler["draws"] < 4:
            raise ConfigError(f"sampler.draws: need at least 4 draws per chain (standard errors and R-hat), got {sampler['draws']}")
        _sampler_config(sampler)  # validates values
        stored = {"bfloat16": "bf16", "float16": "fp16"}.get(model.dtype or "")
        if stored is not None and sampler.get("precision", "fp32") != stored:
            raise ConfigError(f"model.dtype = {model.dtype!r} needs sampler.precision = {stored!r} "
                              f"(got {sampler.get('precision', 'fp32')!r}); or drop model.dtype and set only "
                              f"sampler.precision (float32 model, {stored} compute)")

        threads = top.integer("threads", minimum=1)
        e = _Table(top.get("export", {}), "export")
        e.allow("devinterp", "max_mb")
        export = ExportSpec(devinterp=e.boolean("devinterp", default=True), max_mb=e.number("max_mb", default=512.0))
        if export.max_mb <= 0:
            raise ConfigError(f"export.max_mb must be > 0, got {export.max_mb}")
        return cls(model=model, components=tuple(components), data=data, probes=probes, observables=observables,
                   fields=fields_, sampler=sampler, threads=threads, export=export, name=top.string("name"),
                   description=top.string("description"))

    # ------------------------------------------------------------------ writing
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict that :meth:`from_dict` reads back to an equal config."""

        def clean(x: Any) -> Any:
            if isinstance(x, tuple):
                return [clean(v) for v in x]
            if isinstance(x, dict):
                return {k: clean(v) for k, v in x.items() if v is not None}
            return x

        d = {
            "system": "nn",  # `spectro run` picks the job by it
            "name": self.name,
            "description": self.description,
            "model": clean(asdict(self.model)),
            "data": clean(asdict(self.data)),
            "probes": clean(asdict(self.probes)),
            "observables": [_spec_to_json(o) for o in self.observables],
            "fields": [_spec_to_json(f) for f in self.fields],
            "components": list(self.components),
            "sampler": dict(self.sampler),
            "threads": self.threads,
            "export": asdict(self.export),
        }
        if self.data.files is not None:
            d["data"].pop("corpus", None)  # files replace the corpus
        return {k: v for k, v in d.items() if v is not None}

    def sampler_config(self):
        """The :class:`spectro.nn.SamplerConfig` of this job."""
        return _sampler_config(self.sampler)


def read_config_file(path: str | os.PathLike) -> dict:
    """A ``.json`` or ``.toml`` job config as a dict (by extension; anything else is tried as JSON;
    duplicate JSON keys are an error). Every failure is a one-line :class:`ConfigError`."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file {path} is a folder; give the .json or .toml file")
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    if not path.is_file():
        raise ConfigError(f"config file {path} is not a regular file (a device, pipe or socket); give the .json or .toml file")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {path}: {e}") from None
    if path.suffix.lower() == ".toml":
        try:
            import tomllib
        except ImportError:  # Python 3.10
            raise ConfigError(f"{path}: TOML configs need Python 3.11+ (tomllib); use JSON") from None
        try:
            obj = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path} is not valid TOML: {e}") from None
        except RecursionError:
            raise ConfigError(f"{path}: the config nests tables or lists too deeply (at most {MAX_CONFIG_DEPTH} "
                              "levels)") from None
    else:
        try:
            obj = json.loads(text, object_pairs_hook=_no_duplicate_keys)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path} is not valid JSON: {e}") from None
        except RecursionError:
            raise ConfigError(f"{path}: the config nests objects or lists too deeply (at most {MAX_CONFIG_DEPTH} "
                              "levels)") from None
    _check_depth(obj, path)
    return obj


#: The deepest nesting a config may have (the schema needs 3; the checks below recurse per level).
MAX_CONFIG_DEPTH = 32


def _check_depth(obj: Any, where: Any) -> None:
    """Refuse a config nested deeper than :data:`MAX_CONFIG_DEPTH` (checked without recursion)."""
    stack = [(obj, 1)]
    while stack:
        x, depth = stack.pop()
        if depth > MAX_CONFIG_DEPTH:
            raise ConfigError(f"{where}: the config nests objects or lists too deeply (more than {MAX_CONFIG_DEPTH} "
                              "levels)")
        children = x.values() if isinstance(x, dict) else x if isinstance(x, list) else ()
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ConfigError(f"duplicate key {k!r} in the config file")
        out[k] = v
    return out


def _spec_to_json(spec: ObservableSpec | FieldSpec) -> str | dict:
    d = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(spec).items() if v is not None}
    if d["type"] == "upweight":
        d["domain"] = d.pop("domains")[0]
    return d["type"] if len(d) == 1 else d


def _sampler_keys() -> dict[str, str]:
    """The sampler table's keys: SamplerConfig's fields and every registered method's own
    hyperparameters (spectro.nn.samplers), all numbers."""
    from ..nn.samplers import extra_keys

    return {**_SAMPLER_KEYS, **{k: "float" for k in extra_keys() if k not in _SAMPLER_KEYS}}


def _sampler_config(sampler: dict[str, Any]):
    import torch

    from ..nn.config import SamplerConfig
    from ..nn.samplers import METHODS

    kw = dict(sampler)
    method = kw.get("method", "sgld")
    if method not in METHODS:
        raise ConfigError(f"sampler.method must be one of {list(METHODS)}, got {method!r}")
    own = {h.name for h in METHODS[method].hypers}
    options = {}
    for key in [k for k in kw if k not in _SAMPLER_KEYS]:
        if key not in own:
            raise ConfigError(f"sampler.{key} is not a setting of method {method!r} (its own settings: {sorted(own) or 'none'})")
        options[key] = kw.pop(key)
    if options:
        kw["options"] = options
    if "master_dtype" in kw:
        name = kw["master_dtype"]
        if name not in ("float32", "float64"):
            raise ConfigError(f"sampler.master_dtype must be 'float32' or 'float64', got {name!r}")
        kw["master_dtype"] = getattr(torch, name)
    try:
        return SamplerConfig(**kw)
    except ValueError as e:
        raise ConfigError(f"sampler: {e}") from None


def _parse_observable(x: Any, path: str) -> ObservableSpec:
    if isinstance(x, str):
        if x != "component_loss":
            raise ConfigError(f"{path}: {x!r} needs a table; only 'component_loss' may be given as a string "
                              f"(types: {list(_OBS_TYPES)})")
        return ObservableSpec("component_loss")
    t = _Table(x, path)
    t.allow("type", "domain", "samples", "positions")
    typ = t.string("type", required=True)
    if typ not in _OBS_TYPES:
        raise ConfigError(f"{path}.type: unknown observable {typ!r}; types: {list(_OBS_TYPES)}")
    if typ == "component_loss":
        t.allow("type")
        return ObservableSpec(typ)
    allowed = {"mean_loss": ("type", "domain"), "per_sample_loss": ("type", "domain", "samples"),
               "per_token_loss": ("type", "domain", "samples", "positions")}[typ]
    t.allow(*allowed)
    return ObservableSpec(typ, domain=t.string("domain", required=True), samples=t.int_list("samples", nonempty=True),
                          positions=t.int_list("positions", nonempty=True))


def _parse_field(x: Any, path: str) -> FieldSpec:
    if isinstance(x, str):
        if x not in ("tokens", "subset"):
            raise ConfigError(f"{path}: {x!r} is not a field shorthand; use 'tokens', 'subset' or a table with a type "
                              f"({list(_FIELD_TYPES)})")
        return FieldSpec(x)
    t = _Table(x, path)
    t.allow("type", "domains", "domain", "samples", "positions")
    typ = t.string("type", required=True)
    if typ not in _FIELD_TYPES:
        raise ConfigError(f"{path}.type: unknown field {typ!r}; types: {list(_FIELD_TYPES)}")
    if typ == "upweight":
        t.allow("type", "domain", "samples")
        return FieldSpec(typ, domains=(t.string("domain", required=True),), samples=t.int_list("samples", nonempty=True))
    t.allow(*(("type", "domains", "samples", "positions") if typ == "tokens" else ("type", "domains", "samples")))
    return FieldSpec(typ, domains=t.str_list("domains", nonempty=True, unique=True), samples=t.int_list("samples", nonempty=True),
                     positions=t.int_list("positions", nonempty=True))


def _check_files(files: Any) -> None:
    """Shape of data.files (the files themselves are read when the job is prepared)."""
    if not isinstance(files, dict) or not files:
        raise ConfigError("data.files: expected a table {domain: file | [files] | {train: …, validation: …}}")
    for dom, v in files.items():
        if dom == _BASE:
            raise ConfigError(f"data.files: {_BASE!r} is reserved for the base probe group; rename the domain")
        items = list(v.values()) if isinstance(v, dict) else [v]
        for x in items:
            if not (isinstance(x, str) and x) and not (isinstance(x, list) and x and all(isinstance(p, str) and p for p in x)):
                raise ConfigError(f"data.files.{dom}: expected a file path, a list of paths or {{train: …, validation: …}}, got {v!r}")


def _canonical_component(c: str) -> str:
    return "full" if c == "all" else c


# ---------------------------------------------------------------------------- strict readers
def _check_finite(obj: Any, path: str) -> None:
    if isinstance(obj, float) and not math.isfinite(obj):
        raise ConfigError(f"{path or 'config'}: non-finite number {obj!r}; every number must be finite")
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_finite(v, f"{path}.{k}" if path else str(k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _check_finite(v, f"{path}[{i}]")


def _typename(v: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "table",
            type(None): "null"}.get(type(v), type(v).__name__)


class _Table:
    """A dict being validated; every accessor names ``path.key`` in its errors."""

    def __init__(self, obj: Any, path: str):
        if not isinstance(obj, dict):
            raise ConfigError(f"{path or 'config'}: expected a table/object, got {_typename(obj)} {obj!r}")
        self.obj, self.path = obj, path

    def _p(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def allow(self, *keys: str) -> None:
        unknown = sorted(set(self.obj) - set(keys))
        if unknown:
            raise ConfigError(f"{self.path or 'config'}: unknown key{'s' if len(unknown) > 1 else ''} "
                              f"{', '.join(map(repr, unknown))}; allowed: {', '.join(sorted(keys))}")

    def get(self, key: str, default: Any = None) -> Any:
        return self.obj.get(key, default)

    def required(self, key: str) -> Any:
        if key not in self.obj:
            raise ConfigError(f"{self.path or 'config'}: missing required key {key!r}")
        return self.obj[key]

    def _value(self, key: str, required: bool, default: Any, nullable: bool = True) -> tuple[bool, Any]:
        if key not in self.obj:
            if required:
                raise ConfigError(f"{self.path or 'config'}: missing required key {key!r}")
            return False, default
        v = self.obj[key]
        if v is None:
            if required or not nullable:
                raise ConfigError(f"{self._p(key)}: must not be null")
            return False, default
        return True, v

    def string(self, key: str, *, required: bool = False, default: str | None = None) -> str | None:
        present, v = self._value(key, required, default)
        if present and not isinstance(v, str):
            raise ConfigError(f"{self._p(key)}: expected a string, got {_typename(v)} {v!r}")
        if present and not v:
            raise ConfigError(f"{self._p(key)}: must not be empty")
        return v

    def boolean(self, key: str, *, default: bool) -> bool:
        present, v = self._value(key, False, default, nullable=False)
        if present and not isinstance(v, bool):
            raise ConfigError(f"{self._p(key)}: expected true or false, got {_typename(v)} {v!r}")
        return v

    def integer(self, key: str, *, required: bool = False, default: int | None = None, minimum: int | None = None,
                nullable: bool = True) -> int | None:
        present, v = self._value(key, required, default, nullable)
        if present:
            if isinstance(v, bool) or not isinstance(v, int):
                raise ConfigError(f"{self._p(key)}: expected an integer, got {_typename(v)} {v!r}")
            if minimum is not None and v < minimum:
                raise ConfigError(f"{self._p(key)}: must be >= {minimum}, got {v}")
        return v

    def number(self, key: str, *, required: bool = False, default: float | None = None, nullable: bool = True) -> float | None:
        present, v = self._value(key, required, default, nullable)
        if present:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ConfigError(f"{self._p(key)}: expected a number, got {_typename(v)} {v!r}")
            try:
                v = float(v)
            except OverflowError:
                raise ConfigError(f"{self._p(key)}: an integer of about 10^{int(abs(v).bit_length() * 0.30103)} is too "
                                  "large for a floating-point number") from None
        return v

    def list(self, key: str, *, required: bool = False, default: list | None = None, nonempty: bool = False) -> list | None:
        present, v = self._value(key, required, default)
        if present:
            if not isinstance(v, list):
                raise ConfigError(f"{self._p(key)}: expected a list, got {_typename(v)} {v!r}")
            if nonempty and not v:
                raise ConfigError(f"{self._p(key)}: empty list; give at least one entry")
        return v

    def str_list(self, key: str, *, required: bool = False, nonempty: bool = False, unique: bool = False) -> tuple[str, ...] | None:
        v = self.list(key, required=required, nonempty=nonempty)
        if v is None:
            return None
        for i, x in enumerate(v):
            if not isinstance(x, str) or not x:
                raise ConfigError(f"{self._p(key)}[{i}]: expected a non-empty string, got {_typename(x)} {x!r}")
        if unique and len(set(v)) != len(v):
            dup = sorted({x for x in v if v.count(x) > 1})
            raise ConfigError(f"{self._p(key)}: repeated entries {dup}")
        return tuple(v)

    def int_list(self, key: str, *, nonempty: bool = False) -> tuple[int, ...] | None:
        present, v = self._value(key, False, None)
        if not present:
            return None
        if not isinstance(v, list):
            raise ConfigError(f"{self._p(key)}: expected a list of integers, got {_typename(v)} {v!r}")
        if nonempty and not v:
            raise ConfigError(f"{self._p(key)}: empty selection; give at least one index (or leave the key out for all)")
        for i, x in enumerate(v):
            if isinstance(x, bool) or not isinstance(x, int) or x < 0:
                raise ConfigError(f"{self._p(key)}[{i}]: expected a non-negative integer, got {_typename(x)} {x!r}")
        if len(set(v)) != len(v):
            raise ConfigError(f"{self._p(key)}: repeated indices {sorted({x for x in v if v.count(x) > 1})}")
        return tuple(v)


# ============================================================================ the built-in demo
DEMO_CONFIG: dict[str, Any] = {
    "system": "nn",
    "name": "nn-demo",
    "description": "builtin:tiny (2 layers x 4 heads, trained on the fixture corpus): per-token component "
                   "susceptibilities of every head and of the full model, on four text domains",
    "model": {"checkpoint": "builtin:tiny"},
    "data": {"corpus": "fixture", "context": 32, "train_sequences": 256},
    "probes": {"base": 16, "per_domain": 8, "split": "validation"},
    "observables": ["component_loss"],
    "fields": ["tokens"],
    "components": ["heads", "full"],
    "sampler": {"method": "sgld", "epsilon": 3e-4, "gamma": 1000.0, "nbeta": 30.0, "chains": 4, "draws": 50,
                "burn_in": 20, "steps_per_draw": 2, "batch_size": 16, "seed": 0},
    "threads": 1,
    "export": {"devinterp": True, "max_mb": 512.0},
}


