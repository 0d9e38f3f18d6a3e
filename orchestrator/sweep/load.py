"""Read a sweep file, apply ``--set``, check it in full and expand it (:func:`load_sweep`).

Each entry of ``methods`` adds or overrides trial keys for one method (its ``params`` above all);
any value may be a distribution (:mod:`orchestrator.sweep.space`). Every problem is collected
before failing, so ``mmbal validate`` prints them all at once, one line each (:class:`SweepErrors`).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml

from orchestrator.sweep import space as ss
from orchestrator.sweep.checks import check_combinations, check_pbt
from orchestrator.sweep.expand import count_trials, expand_method
from orchestrator.sweep.spec import SWEEP_KEYS, TOP_TRIAL_KEYS, TRIAL_KEYS, Sweep, SweepErrors, SweepKeys
from orchestrator.tracking import TrackingSpec
from trainables.config import apply_overrides
from trainables.errors import ConfigError
from trainables.params import build_params
from trainables.plugins import load_plugins


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError("sweep", f"no such file: {p}")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError("sweep", f"not valid YAML{where}: {getattr(exc, 'problem', exc)}").with_source(
            str(p)
        ) from None
    if not isinstance(raw, dict):
        raise ConfigError("sweep", "expected a mapping of sweep keys at the top level").with_source(str(p))
    return raw


def load_sweep(path: str | os.PathLike, overrides: list[str] | None = None, plugins: list[str] | None = None) -> Sweep:
    """Read, override (``--set``), check and expand a sweep file; raises :class:`SweepErrors` listing every problem.

    ``plugins`` (``--plugin``) join the file's ``plugins:`` list, so ``sweep.yaml`` records them for a resume.
    """
    raw = read_yaml(path)
    try:
        raw = apply_overrides(raw, overrides or [])
    except ConfigError as exc:
        raise SweepErrors([exc], str(path)) from None
    if plugins:
        listed = raw.get("plugins") if isinstance(raw.get("plugins"), list) else []
        raw["plugins"] = [*listed, *(p for p in plugins if p not in listed)]
    return parse_sweep(raw, str(path))


def parse_sweep(raw: dict[str, Any], source: str = "<sweep>") -> Sweep:
    """Check and expand a sweep given as a mapping (``source`` names it in error lines)."""
    raw = absolute_paths(raw)
    errors: list[ConfigError] = []
    _collect(errors, lambda: _import_plugins(raw.get("plugins", [])))  # before any method name is looked up
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
    sweep = Sweep(keys, tracking, raw, source)
    entries = _method_entries(raw.get("methods"), errors)
    check_combinations(keys, entries, errors)
    trees = {label: _deep_merge(base, entry) for label, entry in entries.items()}
    counts = {label: count_trials(sweep, tree) for label, tree in trees.items()}
    if sum(counts.values()) > keys.search.max_trials:  # refuse before expanding: 10^6 configs would not fit
        per = ", ".join(f"{label} {n}" for label, n in counts.items())
        errors.append(
            ConfigError(
                "search.max_trials",
                f"the sweep expands to {sum(counts.values())} trials ({per}), more than search.max_trials = "
                f"{keys.search.max_trials}; shrink the grid or raise search.max_trials",
            )
        )
        trees = {}
    for label, tree in trees.items():
        expand_method(sweep, label, tree, entries[label], errors)
    check_pbt(keys, sweep, errors)
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


def absolute_paths(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` with its local paths (``results``, ``storage``, ``data_root``) made absolute.

    Tune changes the working directory, and ``results/<experiment>/sweep.yaml`` (this mapping) must
    resume the sweep from any directory; URIs (``s3://...``) are kept as they are.
    """
    out = {"results": SweepKeys.results, **raw}  # the default too: a resume elsewhere must not move it
    for key in ("results", "storage", "data_root"):
        value = out.get(key)
        if isinstance(value, str) and value and "://" not in value:
            out[key] = os.path.abspath(os.path.expanduser(value))
    return out


def _import_plugins(names: Any) -> None:
    if not isinstance(names, list):
        raise ConfigError("plugins", f"got {names!r}; allowed: a list of module names")
    load_plugins(names, key="plugins")


def _fallback_keys(part: dict[str, Any]) -> SweepKeys:
    """Defaults to keep checking the methods after a bad sweep key."""
    seeds = part.get("seeds")
    ok = isinstance(seeds, list) and seeds and all(isinstance(s, int) for s in seeds)
    return SweepKeys(experiment="invalid", seeds=list(seeds) if ok else [0])


def _tracking(value: Any) -> TrackingSpec:
    if isinstance(value, str):
        if value not in ("wandb", "none"):
            raise ConfigError(
                "tracking", f"got {value!r}; allowed: wandb, none, or a mapping with backend/project/entity/mode"
            )
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
        errors.append(
            ConfigError("methods", "give at least one method: a list of names or a mapping name -> {params: ...}")
        )
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
                ConfigError(
                    f"methods.{label}.{bad[0]}", f"unknown key; allowed: method, {', '.join(sorted(TRIAL_KEYS))}"
                )
            )
            continue
        out[str(label)] = {**copy.deepcopy(entry), "method": entry.get("method", label)}
    return out


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
