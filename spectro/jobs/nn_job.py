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
        "checkpoint": "runs/x/checkpoints/step_002000" | "builtin:tiny",   required
        "cache_dir": null,          builtin cache (default $SPECTRO_CACHE_DIR or runs/cache)
        "train_steps": null,        builtin only: override the recipe's training steps
        "dtype": null               "float32" | "bfloat16" | "float16": run the model's forward in
                                    this precision (SGLD still updates float32 master weights)
      },
      "data": {
        "corpus": "fixture",        "fixture" (shipped) or a corpus folder (spectro.data)
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
      "components": ["heads", "full"],     required; "full" (alias "all"), "lLhH" (one head),
                                          "lL" (all of layer L's attention), "heads" (every head)
      "sampler": {...},                    spectro.nn.SamplerConfig fields; master_dtype as
                                          "float32"/"float64"; nbeta null → n/log n, n = train_sequences
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

import contextlib
import json
import math
from collections import Counter
import os
import re
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "ConfigError",
    "ModelSpec",
    "DataSpec",
    "ProbeSpec",
    "ObservableSpec",
    "FieldSpec",
    "ExportSpec",
    "JobConfig",
    "DEMO_CONFIG",
    "run_job",
    "summary_table",
]


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
        """Read a ``.json`` or ``.toml`` file (by extension; anything else is tried as JSON)."""
        path = Path(path)
        if path.is_dir():
            raise ConfigError(f"config file {path} is a folder; give the .json or .toml file")
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
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
        else:
            try:
                obj = json.loads(text, object_pairs_hook=_no_duplicate_keys)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{path} is not valid JSON: {e}") from None
        return cls.from_dict(obj)

    @classmethod
    def from_dict(cls, obj: Any) -> "JobConfig":
        """Validate a parsed config (strict: unknown keys, wrong types, non-finite numbers raise ConfigError)."""
        _check_finite(obj, "")
        top = _Table(obj, "")
        top.allow("name", "description", "model", "data", "probes", "observables", "fields", "components", "sampler",
                  "threads", "export")
        m = _Table(top.required("model"), "model")
        m.allow("checkpoint", "cache_dir", "train_steps", "dtype")
        model = ModelSpec(checkpoint=m.string("checkpoint", required=True), cache_dir=m.string("cache_dir"),
                          train_steps=m.integer("train_steps", minimum=1), dtype=m.string("dtype"))
        if model.dtype not in (None, "float32", "bfloat16", "float16"):
            raise ConfigError(f"model.dtype must be 'float32', 'bfloat16' or 'float16', got {model.dtype!r}")
        if model.train_steps is not None and not model.checkpoint.startswith("builtin:"):
            raise ConfigError("model.train_steps applies only to builtin:* checkpoints")

        d = _Table(top.get("data", {}), "data")
        d.allow("corpus", "domains", "context", "train_sequences", "tokenizer")
        data = DataSpec(
            corpus=d.string("corpus", default="fixture"),
            domains=d.str_list("domains", nonempty=True, unique=True),
            context=d.integer("context", minimum=2),
            train_sequences=d.integer("train_sequences", default=256, minimum=2),
            tokenizer=d.string("tokenizer"),
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
        for i, c in enumerate(components):
            if not _COMPONENT_RE.fullmatch(c):
                raise ConfigError(f"components[{i}]: {c!r} is not a component; use 'full' (or 'all'), 'heads', 'lL' or 'lLhH' (e.g. 'l0h3')")
        if len({_canonical_component(c) for c in components}) != len(components):
            raise ConfigError(f"components: {list(components)} names a component twice ('all' is 'full')")

        s = _Table(top.get("sampler", {}), "sampler")
        s.allow(*_SAMPLER_KEYS)
        sampler: dict[str, Any] = {}
        for key, kind in _SAMPLER_KEYS.items():
            if key not in s.obj:
                continue
            nullable = kind.endswith("?")
            base_kind = kind.rstrip("?")
            if base_kind == "int":
                sampler[key] = s.integer(key, nullable=nullable)
            elif base_kind == "float":
                sampler[key] = s.number(key, nullable=nullable)
            else:
                sampler[key] = s.string(key)
        if isinstance(sampler.get("draws"), int) and sampler["draws"] < 4:
            raise ConfigError(f"sampler.draws: need at least 4 draws per chain (standard errors and R-hat), got {sampler['draws']}")
        _sampler_config(sampler)  # validates values

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
        return {k: v for k, v in d.items() if v is not None}

    def sampler_config(self):
        """The :class:`spectro.nn.SamplerConfig` of this job."""
        return _sampler_config(self.sampler)


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


def _sampler_config(sampler: dict[str, Any]):
    import torch

    from ..nn.config import SamplerConfig

    kw = dict(sampler)
    if "master_dtype" in kw:
        name = kw["master_dtype"]
        if name not in ("float32", "float64"):
            raise ConfigError(f"sampler.master_dtype must be 'float32' or 'float64', got {name!r}")
        kw["master_dtype"] = getattr(torch, name)
    if "method" in kw and kw["method"] not in ("sgld", "rmsprop_sgld"):
        raise ConfigError(f"sampler.method must be 'sgld' or 'rmsprop_sgld', got {kw['method']!r}")
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


_COMPONENT_RE = re.compile(r"full|all|heads|l\d+(h\d+)?")


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


# ============================================================================ resolving a job
@dataclass
class _Prepared:
    """Everything a validated job needs to run (built before anything is written)."""

    cfg: JobConfig
    sampler: Any
    model: Any
    tokenizer: Any
    checkpoint: Path
    ckpt_meta: dict
    domains: list[str]
    context: int
    train: Any  # [n, context] int64
    probe: Any  # ProbeSet
    input_ids: dict[str, np.ndarray]  # group → [n_g, context]
    components: dict[str, Any]  # name → Restriction | None (full)
    observables: list[Any]
    observable_kinds: list[str]  # per functional: "component_loss" or "cov"
    fields: list[Any]
    nbeta: float
    corpus_root: str


def _resolve_checkpoint(cfg: JobConfig, progress: bool, log) -> Path:
    ck = cfg.model.checkpoint
    if ck.startswith("builtin:"):
        from .builtin import BUILTIN_MODELS, builtin_checkpoint

        name = ck.split(":", 1)[1]
        if name not in BUILTIN_MODELS:
            raise ConfigError(f"model.checkpoint: unknown built-in model {ck!r}; built-ins: "
                              f"{', '.join('builtin:' + n for n in BUILTIN_MODELS)}")
        try:
            return builtin_checkpoint(name, cfg.model.cache_dir, steps=cfg.model.train_steps, progress=progress, log=log)
        except OSError as e:
            raise ConfigError(f"model.cache_dir: cannot write the cache of {ck}: {e}") from None
    path = Path(ck)
    if not path.exists():
        raise ConfigError(f"model.checkpoint: checkpoint folder {path} does not exist")
    if not path.is_dir():
        raise ConfigError(f"model.checkpoint: {path} is not a folder (a checkpoint folder from spectro.models.save_checkpoint)")
    return path


def _prepare(cfg: JobConfig, progress: bool, log) -> _Prepared:
    import torch

    from ..data.corpus import FIXTURE_DIR, CorpusError, load_corpus, read_manifest
    from ..data.tokenizer import TokenizerMismatchError, check_tokenizer, fingerprint, load_tokenizer
    from ..models import CheckpointError, head_restriction, load_checkpoint
    from ..models.training import TokenizedCorpus
    from ..nn.fields import SampleUpweighting, SubsetFields, TokenPointMasses
    from ..nn.observables import MeanLoss, PerSampleLoss, PerTokenLoss
    from ..nn.probes import ProbeSet
    from ..nn.restrictions import Restriction

    sampler = cfg.sampler_config()
    # ---- corpus (checked before a built-in model is trained)
    root = FIXTURE_DIR if cfg.data.corpus == "fixture" else Path(cfg.data.corpus)
    try:
        manifest = read_manifest(root)
    except CorpusError as e:
        raise ConfigError(f"data.corpus: {e}") from None
    available = list(manifest["domains"])
    domains = list(cfg.data.domains) if cfg.data.domains is not None else available
    bad = [d for d in domains if d not in available]
    if bad:
        raise ConfigError(f"data.domains: {bad} not in corpus {root}; it has {available}")
    if _BASE in domains:
        raise ConfigError(f"data.domains: the corpus has a domain named {_BASE!r}, reserved for the base probe group; "
                          "list the other domains explicitly")
    if isinstance(cfg.probes.per_domain, dict):
        extra = sorted(set(cfg.probes.per_domain) - set(domains))
        missing = [d for d in domains if d not in cfg.probes.per_domain]
        if extra or missing:
            raise ConfigError(f"probes.per_domain: keys must be the job's domains {domains}"
                              + (f"; unknown {extra}" if extra else "") + (f"; missing {missing}" if missing else ""))
    groups_known = [_BASE, *domains]

    def check_domain(path: str, d: str) -> None:
        if d not in groups_known:
            raise ConfigError(f"{path}: unknown domain {d!r}; the job's probe groups are {groups_known}")

    for i, o in enumerate(cfg.observables):
        if o.domain is not None:
            check_domain(f"observables[{i}].domain", o.domain)
    for i, f in enumerate(cfg.fields):
        for d in f.domains or ():
            check_domain(f"fields[{i}].domains", d)
            if f.type != "upweight" and d == _BASE:
                raise ConfigError(f"fields[{i}].domains: {_BASE!r} is q itself; a field perturbs q towards another domain")

    # ---- model + tokenizer
    ckpt = _resolve_checkpoint(cfg, progress, log)
    try:
        model, tokenizer, meta = load_checkpoint(ckpt)
    except (CheckpointError, TokenizerMismatchError) as e:
        raise ConfigError(f"model.checkpoint: {e}") from None
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError(f"model.checkpoint: cannot load {ckpt}: {e}") from None
    if cfg.model.dtype is not None:
        model = model.to(getattr(torch, cfg.model.dtype))
    mcfg = model.cfg
    if cfg.data.tokenizer is not None:
        tpath = Path(cfg.data.tokenizer)
        try:
            data_tok = load_tokenizer(tpath)
        except Exception as e:  # noqa: BLE001 - tokenizers raises its own exception types
            raise ConfigError(f"data.tokenizer: cannot load {tpath}: {e}") from None
        if tokenizer is not None:
            try:
                check_tokenizer(tokenizer, fingerprint(data_tok), what=f"data.tokenizer {tpath}")
            except TokenizerMismatchError as e:
                raise ConfigError(f"data.tokenizer does not match the checkpoint's tokenizer: {e}") from None
        else:
            tokenizer = data_tok
    if tokenizer is None:
        raise ConfigError(f"model.checkpoint: {ckpt} has no tokenizer.json; set data.tokenizer to the tokenizer it was trained with")
    if tokenizer.get_vocab_size() != mcfg.vocab_size:
        raise ConfigError(f"data.tokenizer has {tokenizer.get_vocab_size()} tokens but the checkpoint's model has "
                          f"vocab_size {mcfg.vocab_size}: tokenizer and model do not belong together")
    context = cfg.data.context if cfg.data.context is not None else mcfg.n_ctx
    if context > mcfg.n_ctx:
        raise ConfigError(f"data.context: {context} tokens exceed the model's context n_ctx={mcfg.n_ctx}")

    # ---- components (need the model's shape)
    components: dict[str, Any] = {}
    for i, c in enumerate(cfg.components):
        names: list[str]
        if c == "heads":
            names = [f"l{l}h{h}" for l in range(mcfg.n_layers) for h in range(mcfg.n_heads)]
        else:
            names = [_canonical_component(c)]
        for name in names:
            if name in components:
                raise ConfigError(f"components[{i}]: {c!r} repeats component {name!r}")
            if name == "full":
                components[name] = None
                continue
            mt = re.fullmatch(r"l(\d+)(?:h(\d+))?", name)
            layer = int(mt.group(1))
            if layer >= mcfg.n_layers:
                raise ConfigError(f"components[{i}]: {c!r}: layer {layer} does not exist; the model has n_layers={mcfg.n_layers}")
            if mt.group(2) is None:
                components[name] = Restriction.from_globs(model, f"blocks.{layer}.attn.*", name=name)
            else:
                head = int(mt.group(2))
                if head >= mcfg.n_heads:
                    raise ConfigError(f"components[{i}]: {c!r}: head {head} does not exist; the model has n_heads={mcfg.n_heads}")
                components[name] = head_restriction(model, layer, head)
    uses_phi = any(o.type == "component_loss" for o in cfg.observables)
    if uses_phi and any(r is not None for r in components.values()) and "full" not in components:
        components = {"full": None, **components}  # Baker's estimator needs E_full[ψ]
    elif "full" in components:
        components = {"full": components.pop("full"), **components}  # the reference run goes first

    # ---- data: tokenize, cut windows
    import datasets as hf_datasets

    bars = hf_datasets.is_progress_bar_enabled()
    hf_datasets.disable_progress_bars()
    try:
        datasets = load_corpus(root, domains=domains)
    except CorpusError as e:
        raise ConfigError(f"data.corpus: {e}") from None
    finally:
        if bars:
            hf_datasets.enable_progress_bars()
    corpus = TokenizedCorpus.from_datasets(datasets, tokenizer)
    n_dom = len(domains)
    per_train = -(-cfg.data.train_sequences // n_dom)
    train_parts = []
    for d in domains:
        avail = corpus.train[d].numel() // context
        if avail < 1:
            raise ConfigError(f"data.context: the train split of domain {d!r} has {corpus.train[d].numel()} tokens, "
                              f"fewer than one sequence of {context}")
        train_parts.append(corpus.eval_windows(context, per_train, "train")[d])
    train_all = torch.cat(train_parts)
    if train_all.shape[0] > cfg.data.train_sequences:  # trim evenly so every domain keeps its share
        keep = np.unique(np.linspace(0, train_all.shape[0] - 1, cfg.data.train_sequences).round().astype(int))
        train_all = train_all[torch.as_tensor(keep)]
    n_train = int(train_all.shape[0])
    if n_train < cfg.data.train_sequences:
        log(f"note: the corpus gives {n_train} training sequences of {context} tokens (asked {cfg.data.train_sequences})")
    if sampler.batch_size is not None and sampler.batch_size > n_train:
        raise ConfigError(f"sampler.batch_size: {sampler.batch_size} exceeds the {n_train} training sequences "
                          "(lower it, raise data.train_sequences, or use null for full batch)")
    if cfg.probes.base > n_train:
        raise ConfigError(f"probes.base: {cfg.probes.base} base sequences but only {n_train} training sequences")
    base_idx = np.unique(np.linspace(0, n_train - 1, cfg.probes.base).round().astype(int))
    groups: dict[str, Any] = {_BASE: train_all[torch.as_tensor(base_idx)]}
    split_streams = getattr(corpus, cfg.probes.split)
    for d in domains:
        want = cfg.probes.per_domain[d] if isinstance(cfg.probes.per_domain, dict) else cfg.probes.per_domain
        avail = split_streams[d].numel() // context
        if avail < want:
            raise ConfigError(f"probes.per_domain: domain {d!r} has {avail} sequences of {context} tokens in its "
                              f"{cfg.probes.split} split, fewer than the {want} asked")
        groups[d] = corpus.eval_windows(context, want, cfg.probes.split)[d]
    for g, x in groups.items():
        if int(x.max()) >= mcfg.vocab_size:
            raise ConfigError(f"data: probe group {g!r} holds token id {int(x.max())} >= vocab_size {mcfg.vocab_size}")
    probe = ProbeSet(groups)
    sizes = {g: int(x.shape[0]) for g, x in groups.items()}
    n_pos = context - 1

    def check_sel(path: str, group: str, samples, positions=None) -> None:
        if samples is not None:
            bad_s = [i for i in samples if i >= sizes[group]]
            if bad_s:
                raise ConfigError(f"{path}.samples: indices {bad_s} outside probe group {group!r} of {sizes[group]} sequences")
        if positions is not None:
            bad_p = [t for t in positions if t >= n_pos]
            if bad_p:
                raise ConfigError(f"{path}.positions: {bad_p} outside 0..{n_pos - 1} (predicted positions of a {context}-token sequence)")

    # ---- observables and fields
    observables: list[Any] = []
    kinds: list[str] = []
    for i, o in enumerate(cfg.observables):
        path = f"observables[{i}]"
        if o.type == "component_loss":
            observables.append(None)  # filled once L̄(w*) is known
            kinds.append("component_loss")
            continue
        check_sel(path, o.domain, o.samples, o.positions)
        sel = o.domain if o.samples is None else (o.domain, list(o.samples))
        if o.type == "mean_loss":
            observables.append(MeanLoss(sel))
        elif o.type == "per_sample_loss":
            observables.append(PerSampleLoss(sel))
        else:
            observables.append(PerTokenLoss(sel, positions=None if o.positions is None else list(o.positions)))
        kinds.append("cov")
    if kinds.count("component_loss") > 1:
        raise ConfigError("observables: 'component_loss' is listed more than once")

    fields_: list[Any] = []
    subset_domains: list[str] = []
    for i, f in enumerate(cfg.fields):
        path = f"fields[{i}]"
        doms = list(f.domains) if f.domains is not None else list(domains)
        for d in doms:
            check_sel(path, d, f.samples, f.positions)
        if f.type == "tokens":
            for d in doms:
                sel = d if f.samples is None else (d, list(f.samples))
                fields_.append(TokenPointMasses(sel, base=_BASE, positions=None if f.positions is None else list(f.positions)))
                if d not in subset_domains:
                    subset_domains.append(d)
        elif f.type == "subset":
            for d in doms:
                if f.samples is not None:
                    name = f"{d}[{','.join(map(str, f.samples))}]"
                    fields_.append(SubsetFields({name: (d, list(f.samples))}, base=_BASE))
                elif d not in subset_domains:
                    subset_domains.append(d)
        else:
            sel = doms[0] if f.samples is None else (doms[0], list(f.samples))
            fields_.append(SampleUpweighting(sel, base=_BASE))
    if subset_domains:
        fields_.append(SubsetFields({d: d for d in subset_domains}, base=_BASE))
    names = [n for fn in fields_ for n in fn.names(probe, n_pos)]
    dup = sorted(n for n, count in Counter(names).items() if count > 1)
    if dup:
        raise ConfigError(f"fields: the same field appears twice ({dup[:3]}{' …' if len(dup) > 3 else ''}); remove the repeat")
    if not names:
        raise ConfigError("fields: no field generator results from the config")
    m_obs = sum(1 if o is None else len(o.names(probe, n_pos)) for o in observables)
    entries = sampler.chains * m_obs * len(names) * 8  # bytes per [C, m, k] float64 tensor
    series = _series_points(sampler, m_obs, len(names)) * entries  # per-draw series, capped by the engine's budget
    acc_gb = (5 * entries + series) / 2**30
    if acc_gb > 4:
        raise ConfigError(f"observables × fields: {m_obs} observables × {len(names)} fields need {acc_gb:.1f} GB of "
                          "streamed co-moments per run; select fewer samples/positions")

    nbeta = sampler.resolve_nbeta(n_train)
    input_ids = {g: x.numpy().astype(np.int64) for g, x in groups.items()}
    return _Prepared(cfg=cfg, sampler=sampler, model=model, tokenizer=tokenizer, checkpoint=ckpt, ckpt_meta=meta,
                     domains=domains, context=context, train=train_all, probe=probe, input_ids=input_ids,
                     components=components, observables=observables, observable_kinds=kinds, fields=fields_,
                     nbeta=nbeta, corpus_root=str(root))


# ============================================================================ running
def _replace_rows(result, other, rows: list[int]) -> None:
    """Overwrite observable rows of ``result`` with those of ``other`` (same observables and fields)."""
    for name in ("chi", "stderr", "stderr_chains", "ess", "rhat", "observable_mean", "observable_stderr"):
        getattr(result, name)[rows] = getattr(other, name)[rows]


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


def _series_points(sampler, m: int, k: int) -> int:
    """Points per chain of the engine's error series, fixed for all chains (and all processes)."""
    from ..engine import MomentAccumulator
    from ..engine.moments import DEFAULT_SERIES_BUDGET_MB

    return MomentAccumulator.series_points(sampler.chains, m, k, sampler.draws, sampler.n_batches, DEFAULT_SERIES_BUDGET_MB)


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
    out = Path(out_dir)
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
            if world.is_main:
                try:
                    created_parents = _claim_output(out, overwrite, checkpoint, held)
                except ConfigError as e:
                    failure = e
            if any_rank(failure is not None, world, _rank_device(device, world)):
                raise failure if failure is not None else ConfigError("the output folder is not usable (process 0 says why)")
            _run_in_stage(prep, out, parent, checkpoint, progress, log, t_start, world, created_parents)
        finally:
            torch.set_num_threads(threads)
    return out


def _stage_path(out: Path) -> Path:
    """The stage of a checkpointed job: a hidden sibling of the results folder (resumable)."""
    return out.resolve().parent / f".{out.name}.partial"


def _check_output(out: Path, overwrite: bool, checkpoint) -> None:
    """Refuse a results or checkpoint folder spectro may not write (see :mod:`spectro.outputs`):
    a file, a foreign folder, earlier results without ``overwrite``, folders inside one another."""
    from ..outputs import OutputError, check_folder, nested, owned_entries
    from .resume import CHECKPOINT_KIND, RESULTS_KIND

    try:
        previous = check_folder(out, RESULTS_KIND, "output folder")
        if checkpoint is not None:
            check_folder(Path(checkpoint.folder), CHECKPOINT_KIND, "checkpoint folder")
    except OutputError as e:
        raise ConfigError(str(e)) from None
    if previous is not None and owned_entries(out, previous) and not overwrite:
        raise ConfigError(f"output folder {out} holds results of an earlier run; pass --overwrite (overwrite=True) to "
                          "replace them (only the files spectro wrote are replaced)")
    if checkpoint is not None:
        for other, name in ((out, "the results folder"), (_stage_path(out), "the stage folder")):
            if nested(Path(checkpoint.folder), other):
                raise ConfigError(f"checkpoint folder {checkpoint.folder} and {name} {other} must not lie inside one "
                                  "another; choose another --checkpoint")


def _claim_output(out: Path, overwrite: bool, checkpoint, held: contextlib.ExitStack) -> list[Path]:
    """Process 0: create the parent folder, lock the results (and checkpoint) folder for the run
    (``held`` releases the locks), check again under the lock; return the parent folders created."""
    from ..outputs import OutputError, locked, make_parents, remove_empty

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
        _check_output(out, overwrite, checkpoint)  # again: another run may have written meanwhile
    except (ConfigError, OutputError) as e:
        held.close()
        remove_empty(created)
        raise (e if isinstance(e, ConfigError) else ConfigError(str(e))) from None
    return created


def _new_stage(out: Path) -> Path:
    """Process 0, no checkpointing: a fresh hidden stage beside ``out`` with spectro's marker."""
    from ..outputs import write_marker
    from .resume import RESULTS_FILES, RESULTS_KIND

    stage = Path(tempfile.mkdtemp(dir=out.resolve().parent, prefix=f".{out.name}.tmp-"))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(stage, 0o777 & ~umask)  # mkdtemp makes it private; the results folder is an ordinary one
    write_marker(stage, RESULTS_KIND, RESULTS_FILES)
    return stage


def _run_in_stage(prep: _Prepared, out: Path, parent: Path, checkpoint, progress: bool, log, t_start: float, world,
                  created_parents: list[Path]) -> None:
    """Sample and write into the stage, then move it into ``out``; clean up after a failure.

    An interrupted checkpointed job (Ctrl-C, SIGTERM, a full disk, a corrupt snapshot) keeps its
    stage and snapshots for ``--resume``; a failure that a resume would only repeat (a
    divergence, a bad config) and any failure without checkpointing leave nothing behind.
    """
    from ..engine.driver import SamplingStopped
    from ..outputs import remove_empty, remove_owned
    from ..nn.posterior import DivergenceError
    from .resume import JobState

    state, stage, started = None, None, False
    try:
        if checkpoint is not None:
            stage = _stage_path(out)
            fingerprint = {"config": _resolved_config(prep), "processes": world.size}
            state = JobState(checkpoint, fingerprint, stage, world)
            try:
                done = state.start()
            except ValueError as e:
                raise ConfigError(str(e)) from None
            started = True
            if done:
                log(f"resuming from {checkpoint.folder}: {len(done)} of {len(prep.components)} components done")
        else:
            done = {}
            if world.is_main:
                stage = _new_stage(out)
                started = True
        _run(prep, stage, progress, log, t_start, world, state, done)
        if world.is_main:
            _install_results(prep, stage, out)
        if state is not None:
            state.finish()
    except BaseException as e:
        discard = state is None or isinstance(e, (DivergenceError, SamplingStopped, ConfigError))
        if world.is_main and started and discard:
            remove_owned(stage)
            if state is not None:
                remove_owned(state.folder)
        if world.is_main and (discard or not started):
            remove_empty(created_parents)
        raise


def _install_results(prep: _Prepared, stage: Path, out: Path) -> None:
    """Record the finished files in the stage's marker and move the stage to ``out`` (replacing
    only spectro's files of an earlier run there)."""
    from ..outputs import install_folder, run_id, write_marker
    from .resume import RESULTS_KIND

    files = sorted(p.name for p in stage.iterdir() if not p.name.startswith("."))
    write_marker(stage, RESULTS_KIND, files, results=run_id(_resolved_config(prep)))
    install_folder(stage, out)


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


def _run(prep: _Prepared, stage: Path | None, progress: bool, log, t_start: float, world, state, done: dict) -> None:
    """Sample every component, estimate, and (process 0) write the results into ``stage``."""
    from ..analysis.traces import plot_traces
    from ..engine import MomentAccumulator, estimate_susceptibility
    from ..engine.distributed import chain_block
    from ..engine.driver import sample_moments
    from ..io import write_json
    from ..models import next_token_loss
    from ..nn.observables import MeanLoss, mean_loss
    from ..nn.posterior import LocalizedPosterior, run_seed
    from ..nn.susceptibility import baker_susceptibility
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
    obs_rows: list[str] = []  # estimator per output row
    for o, kind in zip(observables, prep.observable_kinds):
        obs_rows += [kind] * len(o.names(prep.probe, n_pos))
    obs_names = ["phi_C" if kind == "component_loss" else n
                 for o, kind in zip(observables, prep.observable_kinds) for n in o.names(prep.probe, n_pos)]
    field_names = [n for f in prep.fields for n in f.names(prep.probe, n_pos)]
    train_token_loss = None
    if cfg.export.devinterp and main:
        train_token_loss = ref_post.losses_at_w_star(prep.train).mean(dim=0).double().cpu().numpy()  # [T]
        (stage / "devinterp").mkdir(exist_ok=True)

    results: dict[str, Any] = {}
    summaries: dict[str, Any] = dict(done)
    full_acc = None
    if done and main:
        from ..outputs import load_result

        hint = f"; remove {stage} and {state.folder}, or run without --resume, to start afresh"
        results = {name: load_result(stage / f"chi_{name}.npz", hint) for name in done}
        if any(prep.components[name] is None for name in done):
            full_acc = MomentAccumulator(s.chains, len(obs_names), len(field_names), s.draws,
                                         n_batches=_series_points(s, len(obs_names), len(field_names)), device=dev)
            full_acc.load_state_dict(state.load_full_acc())
    ck = None if state is None else state.checkpointing()
    for name, restriction in prep.components.items():
        if name in done:
            continue
        t0 = time.perf_counter()
        run_s = s_dev if restriction is None else replace(s_dev, seed=run_seed(s.seed, name))  # independent streams
        system = PosteriorSystem(prep.model, next_token_loss, prep.train, run_s, prep.probe, observables, prep.fields,
                                 restriction=restriction, name=name, names=(obs_names, field_names, n_pos),
                                 record=cfg.export.devinterp)
        sampled = sample_moments(system, run_config(s), checkpoint=ck, world=world, progress=progress, desc=f"{name:>6}")
        acc = sampled.accumulator
        res = sampled.system.result(sampled.gather)
        record = sampled.system.recorded(sampled.gather) if cfg.export.devinterp else None
        seconds = time.perf_counter() - t0
        if restriction is None:
            full_acc = acc
        if not main:
            continue
        meta = {
            "component": name,
            "job": cfg.name,
            "sampling": res.summary(),
            "loss_trace": res.loss_trace.tolist(),
            "phi_reference_loss": base_ref,
            "observable_estimators": {n: ("baker2025" if (kind == "component_loss" and restriction is not None) else "-Cov(phi, psi)")
                                      for n, kind in zip(obs_names, obs_rows)},
            "seconds": seconds,
            "processes": world.size,
            "versions": versions,
        }
        obs_axis, field_axis = system.axes()
        estimator = replace(system.estimator(), run={**system.estimator().run, **sampled.meta["run"], "component": name})
        result = estimate_susceptibility(acc, -1.0, obs_names, field_names, observable_axis=obs_axis,
                                         field_axis=field_axis, estimator=estimator)
        if restriction is not None:
            phi_rows = [i for i, kind in enumerate(obs_rows) if kind == "component_loss"]
            if phi_rows:  # Baker et al.'s estimator for φ_C, −Cov for the other observables
                _replace_rows(result, baker_susceptibility(acc, full_acc, obs_names, field_names), phi_rows)
        result.meta = meta
        result.save(stage / f"chi_{name}.npz")
        results[name] = result
        summaries[name] = _component_summary(result, res, prep, seconds)
        if cfg.export.devinterp:
            from .export import write_samples

            write_samples(stage / "devinterp" / f"samples_{name}.zarr", losses=record, probe=prep.probe,
                          input_ids=prep.input_ids, init_token_loss=train_token_loss, loss_trace=res.loss_trace,
                          sampler=s, nbeta=res.nbeta, n_train=int(prep.train.shape[0]), component=name,
                          restriction_free=res.n_free, sampling_task=_BASE)
        del record
        if state is not None:
            state.record_done(summaries, full_acc.state_dict() if restriction is None else None)
    if not main:
        return

    if cfg.export.devinterp and "phi_C" in obs_names:
        from .export import write_susceptibilities

        restricted = {n: r for n, r in results.items() if prep.components[n] is not None} or results
        write_susceptibilities(stage / "devinterp" / "susceptibilities.zarr", restricted, prep.input_ids,
                               observable="phi_C")
    results = {name: results[name] for name in prep.components}  # config order, resumed or not
    summaries = {name: summaries[name] for name in prep.components}
    plot_traces(results, stage / "traces.png", domains=prep.domains,
                title=f"{cfg.name or 'spectro nn job'}: {cfg.model.checkpoint if cfg.model.checkpoint.startswith('builtin:') else prep.checkpoint}")
    summary = {
        "format": "spectro.nn_job/1",
        "name": cfg.name,
        "components": summaries,
        "run": {
            "checkpoint": str(prep.checkpoint),
            "model": prep.model.cfg.to_dict(),
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


def _component_summary(result, res, prep: _Prepared, seconds: float) -> dict:
    domains = {}
    row = 0  # per-domain table on the first observable (phi_C when present)
    for d in prep.domains:
        name = f"dL:{d}"
        if name in result.fields:
            a = result.fields.index(name)
            e = result.entry(result.observables[row], name)
            domains[d] = {"chi": _finite_or_none(e["mean"]), "stderr": _finite_or_none(e["stderr"]),
                          "ci95": [_finite_or_none(x) for x in e["ci95"]], "dof": _finite_or_none(e["dof"]),
                          "ess": _finite_or_none(e["ess"]), "rhat": _finite_or_none(e["rhat"]),
                          "reliable": e["reliable"], "why": e["why"]}
    with np.errstate(invalid="ignore"):
        return {
            "n_free": res.n_free,
            "llc": _finite_or_none(res.llc),
            "llc_stderr": _finite_or_none(res.llc_stderr),
            "llc_dof": _finite_or_none(res.llc_dof),
            "llc_ess_bulk": _finite_or_none(res.llc_ess_bulk),
            "llc_ess_tail": _finite_or_none(res.llc_ess_tail),
            "llc_per_chain": [float(x) for x in res.llc_per_chain],
            "loss_trace_rhat": _finite_or_none(res.llc_rhat),
            "init_loss": res.init_loss,
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
