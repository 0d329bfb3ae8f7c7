"""Resolve a validated NN job config into everything it needs to run (model, tokenizer, data,
probes, components, functionals), before anything is written; every problem is a
:class:`~spectro.jobs.nn_config.ConfigError` naming the config key."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .nn_config import _BASE, ConfigError, JobConfig

__all__ = ["_Prepared", "_prepare", "_series_points"]

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
    model_card: dict | None = None  # summary.json's run.model (None: model.cfg.to_dict())


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
        raise ConfigError(f"model.checkpoint: {path} is not a folder (a checkpoint folder from spectro.models.save_checkpoint, "
                          "a Hugging Face model folder from save_pretrained, or a TransformerLens folder from "
                          "spectro.models.tl.save_tl_model)")
    return path


def _prepare(cfg: JobConfig, progress: bool, log) -> _Prepared:
    import torch

    from ..data.corpus import FIXTURE_DIR, CorpusError, load_corpus, read_manifest
    from ..data.tokenizer import TokenizerMismatchError, check_tokenizer, fingerprint, load_tokenizer
    from ..data.local import load_text_files
    from ..models import CheckpointError, load_checkpoint
    from ..models.components import ComponentError, resolve_components
    from ..models.hf import HFModelError, is_hf_model_dir, load_hf_model
    from ..models.tl import is_tl_model_dir, load_tl_model
    from ..nn.precision import check_precision
    from ..models.training import TokenizedCorpus
    from ..nn.fields import SampleUpweighting, SubsetFields, TokenPointMasses
    from ..nn.observables import MeanLoss, PerSampleLoss, PerTokenLoss
    from ..nn.probes import ProbeSet

    sampler = cfg.sampler_config()
    # ---- corpus (checked before a built-in model is trained)
    root = FIXTURE_DIR if cfg.data.corpus == "fixture" else Path(cfg.data.corpus)
    if cfg.data.files is not None:
        available = list(cfg.data.files)
        where = "data.files"
    else:
        try:
            manifest = read_manifest(root)
        except CorpusError as e:
            raise ConfigError(f"data.corpus: {e}") from None
        available = list(manifest["domains"])
        where = f"corpus {root}"
    domains = list(cfg.data.domains) if cfg.data.domains is not None else available
    bad = [d for d in domains if d not in available]
    if bad:
        raise ConfigError(f"data.domains: {bad} not in {where}; it has {available}")
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
    hf_info = None
    if is_hf_model_dir(ckpt) or is_tl_model_dir(ckpt):
        try:
            model, tokenizer, hf_info = (load_hf_model if is_hf_model_dir(ckpt) else load_tl_model)(ckpt, cfg.model.dtype)
        except HFModelError as e:
            raise ConfigError(f"model.checkpoint: {e}") from None
        meta = {hf_info.family: hf_info.to_dict()}
        mcfg = _Shape(hf_info.n_layers, hf_info.n_heads, hf_info.vocab_size, hf_info.n_ctx)
    else:
        try:
            model, tokenizer, meta = load_checkpoint(ckpt)
        except (CheckpointError, TokenizerMismatchError) as e:
            raise ConfigError(f"model.checkpoint: {e}") from None
        except (OSError, ValueError, KeyError) as e:
            raise ConfigError(f"model.checkpoint: cannot load {ckpt}: {e}") from None
        if cfg.model.dtype is not None:
            model = model.to(getattr(torch, cfg.model.dtype))
        mcfg = model.cfg
    try:
        check_precision(model, sampler)
    except ValueError as e:
        raise ConfigError(f"sampler.precision: {e}") from None
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
        how = " (a Hugging Face folder: tokenizer.save_pretrained(DIR) of a fast tokenizer writes it)" if hf_info else ""
        raise ConfigError(f"model.checkpoint: {ckpt} has no tokenizer.json{how}; set data.tokenizer to the tokenizer it was trained with")
    n_tok = tokenizer.get_vocab_size()
    if n_tok != mcfg.vocab_size and not (hf_info is not None and n_tok < mcfg.vocab_size):  # HF: embeddings may be padded
        raise ConfigError(f"data.tokenizer has {n_tok} tokens but the checkpoint's model has "
                          f"vocab_size {mcfg.vocab_size}: tokenizer and model do not belong together")
    if mcfg.n_ctx is None and cfg.data.context is None:
        raise ConfigError("data.context: the model declares no maximum context (max_position_embeddings); set data.context")
    context = cfg.data.context if cfg.data.context is not None else mcfg.n_ctx
    if mcfg.n_ctx is not None and context > mcfg.n_ctx:
        raise ConfigError(f"data.context: {context} tokens exceed the model's context n_ctx={mcfg.n_ctx}")

    # ---- components (need the model's shape)
    try:
        components: dict[str, Any] = resolve_components(model, cfg.components)
    except ComponentError as e:
        raise ConfigError(f"components: {e}") from None
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
        if cfg.data.files is not None:
            datasets = load_text_files({d: cfg.data.files[d] for d in domains}, text_field=cfg.data.text_field)
        else:
            datasets = load_corpus(root, domains=domains)
    except CorpusError as e:
        raise ConfigError(f"{'data.files' if cfg.data.files is not None else 'data.corpus'}: {e}") from None
    finally:
        if bars:
            hf_datasets.enable_progress_bars()
    try:
        corpus = TokenizedCorpus.from_datasets(datasets, tokenizer, eos_id=hf_info.eos_token_id if hf_info else None)
    except TokenizerMismatchError as e:
        raise ConfigError(f"model.checkpoint: {e}; the model folder needs an eos_token_id in config.json or an "
                          "eos_token in tokenizer_config.json") from None
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
                     nbeta=nbeta, corpus_root="data.files" if cfg.data.files is not None else str(root),
                     model_card=hf_info.to_dict() if hf_info is not None else None)


@dataclass(frozen=True)
class _Shape:
    """The model sizes the job checks against (spectro's models have them as ``model.cfg``)."""

    n_layers: int
    n_heads: int
    vocab_size: int
    n_ctx: int | None


def _series_points(sampler, m: int, k: int) -> int:
    """Points per chain of the engine's error series, fixed for all chains (and all processes)."""
    from ..engine import MomentAccumulator
    from ..engine.moments import DEFAULT_SERIES_BUDGET_MB

    return MomentAccumulator.series_points(sampler.chains, m, k, sampler.draws, sampler.n_batches, DEFAULT_SERIES_BUDGET_MB)
