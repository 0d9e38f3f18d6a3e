"""A sweep file: what to compare, how to search, where and how to run. Parsed and checked in full.

Top-level keys are either sweep keys (``experiment``, ``methods``, ``seeds``, ``search``,
``execution``, ``tracking``, ...) or trial keys shared by every method (``dataset``, ``epochs``,
``data``, ``optim``, ``model``, ... as in :class:`trainables.config.TrainConfig`). Each entry of
``methods`` adds or overrides trial keys for one method (its ``params`` above all); any value may be a
distribution (:mod:`orchestrator.search_space`). :func:`load_sweep` collects *every* problem before
failing, so ``mmbal validate`` prints them all at once, one line each.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import os
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

from orchestrator import search_space as ss
from trainables.config import TrainConfig, apply_overrides, resolve
from trainables.errors import ConfigError
from trainables.params import build_params, knob


@dataclass(frozen=True)
class ExecutionSpec:
    mode: Literal["local", "packed", "ddp"] = knob(
        "packed", "local: in-process, no Ray; packed: Tune trials; ddp: Ray Train per trial"
    )
    cpus_per_trial: float = knob(1.0, "packed: CPUs reserved per trial")
    gpus_per_trial: float = knob(0.0, "packed: GPU fraction per trial (0.25 packs four trials on a GPU)")
    num_workers: int = knob(2, "ddp: Ray Train workers per trial")
    cpus_per_worker: float = knob(1.0, "ddp: CPUs per worker")
    use_gpu: bool = knob(False, "ddp: one GPU per worker (NCCL); false = CPU workers (gloo)")
    max_concurrent: int | None = knob(None, "trials at once; default: as many as the cluster's resources allow")
    max_failures: int = knob(1, "retries of a failed trial (it resumes from its last checkpoint)")

    def __post_init__(self) -> None:
        if self.num_workers < 1:
            raise ConfigError("num_workers", f"got {self.num_workers}; allowed: an integer >= 1")
        if self.cpus_per_trial < 0 or self.gpus_per_trial < 0 or self.cpus_per_worker < 0:
            raise ConfigError("cpus_per_trial", "resources must be >= 0")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise ConfigError("max_concurrent", f"got {self.max_concurrent}; allowed: an integer >= 1 or null")
        if self.max_failures < 0:
            raise ConfigError("max_failures", f"got {self.max_failures}; allowed: an integer >= 0")


@dataclass(frozen=True)
class AshaSpec:
    grace_period: int = knob(1, "epochs every trial runs before it may be stopped")
    reduction_factor: float = knob(2.0, "keep 1/reduction_factor of the trials at each rung")


@dataclass(frozen=True)
class PbtSpec:
    perturbation_interval: int = knob(2, "epochs between exploit/explore steps")
    quantile_fraction: float = knob(0.25, "bottom fraction that copies the top fraction")
    synch: bool = knob(True, "trials wait for each other at each perturbation (reproducible exploits); false = asynchronous")
    mutations: dict[str, Any] = knob({}, "dotted trial key -> distribution or list, e.g. {optim.lr: {loguniform: [1e-3, 1e-1]}}")


@dataclass(frozen=True)
class SearchSpec:
    searcher: Literal["grid", "random", "optuna", "hyperopt"] = knob(
        "grid", "grid/random: Tune's variant generator; optuna, hyperopt"
    )
    samples: int = knob(1, "random draws per method (each crossed with the grid and the seeds); trials for optuna/hyperopt")
    random_seed: int = knob(0, "seed of the random draws, so the trial list is reproducible")
    scheduler: Literal["none", "asha", "pbt"] = knob("none", "none, asha (time attribute epoch) or pbt (packed only)")
    asha: AshaSpec = AshaSpec()
    pbt: PbtSpec = PbtSpec()

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise ConfigError("samples", f"got {self.samples}; allowed: an integer >= 1")


@dataclass(frozen=True)
class TrackingSpec:
    backend: Literal["wandb", "none"] = knob("wandb", "wandb or none")
    project: str = knob("mmbal", "W&B project")
    entity: str | None = knob(None, "W&B entity (team or user); default: the account's")
    mode: Literal["auto", "offline", "online"] = knob(
        "auto", "auto: WANDB_MODE if set, else online with an API key, else offline"
    )
    timeout_s: float = knob(15.0, "upper bound on W&B init/finish waits, so a sweep never hangs on the network")


@dataclass(frozen=True)
class SweepKeys:
    experiment: str = knob("", "experiment name: folder under results/, W&B group")
    results: str = knob("results", "local folder that receives results/<experiment>/ (the report's input)")
    storage: str | None = knob(
        None, "Ray storage for checkpoints and Tune state: a folder or a URI (s3://, gs://); default results/<experiment>/_ray"
    )
    metric: str = knob("val/acc", "validation metric for searchers, schedulers and the leaderboard")
    mode: Literal["max", "min"] = knob("max", "whether a larger metric is better")
    seeds: list[int] = knob([0], "every config runs on every seed")
    methods: Any = knob({}, "method name (or label with a method: key) -> trial keys and search space")
    execution: ExecutionSpec = ExecutionSpec()
    search: SearchSpec = SearchSpec()
    tracking: Any = knob("wandb", "wandb, none, or a mapping of tracking keys")

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.experiment or ""):
            raise ConfigError("experiment", f"got {self.experiment!r}; allowed: a name of letters, digits, _ . -")
        if not self.metric.startswith(("val/", "train/")):
            raise ConfigError("metric", f"got {self.metric!r}; allowed: a val/ (or train/) metric; never select on test")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError("seeds", f"got {self.seeds}; allowed: a non-empty list of distinct integers")


TRIAL_KEYS = {f.name for f in dataclasses.fields(TrainConfig)} - {"method", "seed"}
TOP_TRIAL_KEYS = TRIAL_KEYS - {"params"}  # params differ per method: they live under methods.<name>
SWEEP_KEYS = {f.name for f in dataclasses.fields(SweepKeys)}


@dataclass(frozen=True)
class TrialPlan:
    """One trial to run: a fully resolved config (``Resolved.to_dict()``) and where it came from."""

    index: int
    label: str
    config: dict[str, Any]


@dataclass
class Sweep:
    """A checked sweep: its settings, the trial list (grid/random) or per-method spaces (optuna/hyperopt)."""

    keys: SweepKeys
    tracking: TrackingSpec
    raw: dict[str, Any]
    source: str
    trials: list[TrialPlan] = field(default_factory=list)
    spaces: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def experiment(self) -> str:
        return self.keys.experiment

    @property
    def results_dir(self) -> Path:
        return Path(self.keys.results).absolute() / self.keys.experiment


class SweepErrors(ConfigError):
    """Several problems of one sweep file; ``lines()`` gives one line each."""

    def __init__(self, errors: list[ConfigError], source: str) -> None:
        self.errors = [e.with_source(source) for e in errors]
        super().__init__("sweep", f"{len(self.errors)} problem(s)", source)

    def lines(self) -> list[str]:
        return [e.line() for e in self.errors]

    def line(self) -> str:
        return "\n".join(self.lines()) if getattr(self, "errors", None) else super().line()


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError("sweep", f"no such file: {p}")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError("sweep", f"not valid YAML{where}: {getattr(exc, 'problem', exc)}").with_source(str(p)) from None
    if not isinstance(raw, dict):
        raise ConfigError("sweep", "expected a mapping of sweep keys at the top level").with_source(str(p))
    return raw


def load_sweep(path: str | os.PathLike, overrides: list[str] | None = None) -> Sweep:
    """Read, override (``--set``), check and expand a sweep file; raises :class:`SweepErrors` listing every problem."""
    raw = read_yaml(path)
    try:
        raw = apply_overrides(raw, overrides or [])
    except ConfigError as exc:
        raise SweepErrors([exc], str(path)) from None
    return parse_sweep(raw, str(path))


def parse_sweep(raw: dict[str, Any], source: str = "<sweep>") -> Sweep:
    errors: list[ConfigError] = []
    sweep_part = {k: v for k, v in raw.items() if k in SWEEP_KEYS}
    base = {k: v for k, v in raw.items() if k in TOP_TRIAL_KEYS}
    for k in raw:
        if k in ("method", "seed", "params"):
            hint = {
                "method": "list methods under methods:",
                "seed": "use seeds: [0, 1, 2]",
                "params": "put params under each method",
            }[k]
            errors.append(ConfigError(k, f"not a top-level sweep key; {hint}"))
        elif k not in SWEEP_KEYS and k not in TOP_TRIAL_KEYS:
            errors.append(ConfigError(k, f"unknown key; allowed: {', '.join(sorted(SWEEP_KEYS | TOP_TRIAL_KEYS))}"))
    keys = _collect(errors, lambda: build_params(SweepKeys, sweep_part)) or _fallback_keys(sweep_part)
    tracking = _collect(errors, lambda: _tracking(raw.get("tracking", "wandb"))) or TrackingSpec(backend="none")
    if "data_root" in base and isinstance(base["data_root"], str):
        base["data_root"] = os.path.abspath(os.path.expanduser(base["data_root"]))  # Tune changes the working dir
    sweep = Sweep(keys, tracking, raw, source)
    entries = _method_entries(raw.get("methods"), errors)
    _check_combinations(keys, entries, errors)
    index = 0
    for label, entry in entries.items():
        tree = _deep_merge(base, entry)
        try:
            dists = ss.find_dists(tree)
        except ConfigError as exc:
            errors.append(_where(exc, label, entry))
            continue
        if keys.search.searcher in ("optuna", "hyperopt"):
            sweep.spaces[label] = tree
            for corner in _corners(tree, dists):
                _check_trial(corner, keys.seeds[0], label, entry, errors)
            continue
        if keys.search.searcher == "grid" and any(not d.is_grid for d in dists):
            bad = next(d for d in dists if not d.is_grid)
            errors.append(
                _where(
                    ConfigError(bad.key, f"{bad.kind} needs search.searcher random (or optuna/hyperopt); grid takes grid: only"),
                    label,
                    entry,
                )
            )
            continue
        rng = np.random.default_rng([keys.search.random_seed, zlib.crc32(label.encode())])
        for cfg in ss.expand(tree, keys.search.samples, rng):
            for seed in keys.seeds:
                resolved = _check_trial(cfg, seed, label, entry, errors)
                if resolved is not None:
                    sweep.trials.append(TrialPlan(index, label, resolved))
                    index += 1
    _check_pbt(keys, sweep, errors)
    if errors:
        unique = list({e.line(): e for e in errors}.values())  # one line per problem, not per seed
        raise SweepErrors(unique, source)
    return sweep


def _collect(errors: list[ConfigError], fn: Any) -> Any:
    try:
        return fn()
    except ConfigError as exc:
        errors.append(exc)
        return None


def _fallback_keys(part: dict[str, Any]) -> SweepKeys:
    """Defaults to keep checking the methods after a bad sweep key."""
    seeds = part.get("seeds")
    ok = isinstance(seeds, list) and seeds and all(isinstance(s, int) for s in seeds)
    return SweepKeys(experiment="invalid", seeds=list(seeds) if ok else [0])


def _tracking(value: Any) -> TrackingSpec:
    if isinstance(value, str):
        if value not in ("wandb", "none"):
            raise ConfigError("tracking", f"got {value!r}; allowed: wandb, none, or a mapping with backend/project/entity/mode")
        return TrackingSpec(backend=value)  # type: ignore[arg-type]
    if value is None:
        return TrackingSpec(backend="none")
    if not isinstance(value, dict):
        raise ConfigError("tracking", f"got {value!r}; allowed: wandb, none, or a mapping")
    return build_params(TrackingSpec, value, "tracking.")


def _method_entries(methods: Any, errors: list[ConfigError]) -> dict[str, dict[str, Any]]:
    if isinstance(methods, list) and all(isinstance(m, str) for m in methods):
        methods = {m: {} for m in methods}
    if not isinstance(methods, dict) or not methods:
        errors.append(ConfigError("methods", "give at least one method: a list of names or a mapping name -> {params: ...}"))
        return {}
    out = {}
    for label, entry in methods.items():
        entry = {} if entry is None else entry
        if not isinstance(entry, dict):
            errors.append(ConfigError(f"methods.{label}", f"expected a mapping of trial keys, got {entry!r}"))
            continue
        bad = sorted(set(entry) - TRIAL_KEYS - {"method"})
        if bad:
            errors.append(
                ConfigError(f"methods.{label}.{bad[0]}", f"unknown key; allowed: method, {', '.join(sorted(TRIAL_KEYS))}")
            )
            continue
        out[str(label)] = {**copy.deepcopy(entry), "method": entry.get("method", label)}
    return out


def _check_combinations(keys: SweepKeys, entries: dict[str, dict], errors: list[ConfigError]) -> None:
    s, mode = keys.search, keys.execution.mode
    if s.scheduler == "pbt" and mode != "packed":
        errors.append(
            ConfigError(
                "search.scheduler", f"pbt needs execution.mode packed (it moves Tune checkpoints between trials), got {mode}"
            )
        )
    if s.scheduler != "none" and mode == "local":
        errors.append(ConfigError("search.scheduler", f"{s.scheduler} needs Ray; allowed with execution.mode local: none"))
    if s.searcher in ("optuna", "hyperopt"):
        if importlib.util.find_spec(s.searcher) is None:
            errors.append(ConfigError("search.searcher", f"{s.searcher} is not installed here: pip install {s.searcher}"))
        if mode == "local":
            errors.append(
                ConfigError("search.searcher", f"{s.searcher} runs under Ray; allowed with execution.mode local: grid, random")
            )
        if len(entries) > 1:
            errors.append(
                ConfigError(
                    "methods", f"{s.searcher} searches one method's space per sweep; split the methods or use searcher random"
                )
            )
        if len(keys.seeds) > 1:
            errors.append(
                ConfigError(
                    "seeds",
                    f"{s.searcher} cannot take a grid dimension; give one seed (rerun the best over seeds with a grid sweep)",
                )
            )
        for label, entry in entries.items():
            for d in ss.find_dists(entry) if _safe(entry) else []:
                if d.is_grid:
                    errors.append(ConfigError(f"methods.{label}.{d.key}", f"{s.searcher} cannot take grid:; use choice:"))


def _safe(tree: Any) -> bool:
    try:
        ss.find_dists(tree)
        return True
    except ConfigError:
        return False


def _check_pbt(keys: SweepKeys, sweep: Sweep, errors: list[ConfigError]) -> None:
    if keys.search.scheduler != "pbt":
        return
    muts = keys.search.pbt.mutations
    if not muts:
        errors.append(
            ConfigError("search.pbt.mutations", "pbt needs at least one mutation, e.g. {optim.lr: {loguniform: [1e-3, 1e-1]}}")
        )
    for key, value in muts.items():
        tree = {"_": {"choice": value} if isinstance(value, list) else value}
        try:
            dists = ss.find_dists(tree)
        except ConfigError as exc:
            errors.append(ConfigError(f"search.pbt.mutations.{key}", exc.message))
            continue
        if len(dists) != 1 or dists[0].is_grid:
            errors.append(
                ConfigError(f"search.pbt.mutations.{key}", f"expected a list or a sampled distribution ({ss.ALLOWED} but grid)")
            )
            continue
        for plan in sweep.trials[:1]:
            for v in dists[0].corners():
                try:
                    resolve(apply_overrides(copy.deepcopy(plan.config), [f"{key}={yaml.safe_dump(v).strip()}"]))
                except ConfigError as exc:
                    errors.append(ConfigError(f"search.pbt.mutations.{key}", exc.line()))
                    break


def _corners(tree: dict[str, Any], dists: list[ss.Dist]) -> list[dict[str, Any]]:
    """Configs with every distribution at its low, then its high end (and every choice)."""
    if not dists:
        return [tree]
    width = max(len(d.corners()) for d in dists)
    return [ss.substitute(tree, {d.key: d.corners()[min(i, len(d.corners()) - 1)] for d in dists}) for i in range(width)]


def _check_trial(cfg: dict[str, Any], seed: int, label: str, entry: dict, errors: list[ConfigError]) -> dict[str, Any] | None:
    try:
        return resolve({**cfg, "seed": seed}).to_dict()
    except ConfigError as exc:
        value = _lookup(cfg, exc.key)
        if isinstance(value, dict) and len(value) == 1 and isinstance(next(iter(value.values())), list):
            exc = ConfigError(exc.key, f"unknown distribution {next(iter(value))!r}; allowed: {ss.ALLOWED}")
        errors.append(_where(exc, label, entry))
        return None


def _lookup(tree: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def _where(exc: ConfigError, label: str, entry: dict[str, Any]) -> ConfigError:
    """Point a trial-key error at the sweep key the user wrote (under methods.<label> or at the top)."""
    if _lookup(entry, exc.key) is not None:
        return ConfigError(f"methods.{label}.{exc.key}", exc.message)
    return exc


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and not ss.looks_like_dist(v):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def canonical(raw: dict[str, Any]) -> str:
    """The sweep as stored in results/<experiment>/sweep.yaml (after ``--set``)."""
    return yaml.safe_dump(raw, sort_keys=True)
