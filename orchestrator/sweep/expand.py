"""One ``methods:`` entry of a sweep -> the trials it runs (grid/random) or its space (optuna/hyperopt).

Every expanded config is resolved exactly as the trial will resolve it, so a bad value is found
here, before anything runs; errors point at the sweep key the user wrote.
"""

from __future__ import annotations

import math
import zlib
from typing import Any

import numpy as np

from orchestrator.sweep import space as ss
from orchestrator.sweep.spec import Sweep, TrialPlan
from trainables.config import resolve
from trainables.errors import ConfigError
from trainables.methods import METHODS


def method_label(config: dict[str, Any]) -> str:
    """A trial's leaderboard row: the method, with its variant (``unimodal:pix``) where the method
    declares a ``variant_param``. Recorded in ``config.json`` so that reading results needs no registry."""
    name = config["method"]
    variant = METHODS.get(name, key="method").variant_param
    value = config.get("params", {}).get(variant) if variant else None
    return f"{name}:{value}" if value else name


def expand_method(
    sweep: Sweep, label: str, tree: dict[str, Any], entry: dict[str, Any], errors: list[ConfigError]
) -> None:
    """Add the trials (or the search space) of the entry ``label`` to ``sweep``; problems go to ``errors``.

    Args:
        sweep: the sweep being built (its keys say how to search; trials are appended).
        label: the entry's name under ``methods:``.
        tree: the entry merged over the shared trial keys (may hold distributions).
        entry: the entry as written, to point errors at ``methods.<label>.<key>``.
        errors: collects every problem.
    """
    keys = sweep.keys
    try:
        dists = ss.find_dists(tree)
    except ConfigError as exc:
        errors.append(_where(exc, label, entry))
        return
    if keys.search.searcher in ("optuna", "hyperopt"):
        sweep.spaces[label] = tree
        for corner in _corners(tree, dists):
            _check_trial(corner, keys.seeds[0], label, entry, errors)
        return
    if keys.search.searcher == "grid" and any(not d.is_grid for d in dists):
        bad = next(d for d in dists if not d.is_grid)
        msg = f"{bad.kind} needs search.searcher random (or optuna/hyperopt); grid takes grid: only"
        errors.append(_where(ConfigError(bad.key, msg), label, entry))
        return
    rng = np.random.default_rng([keys.search.random_seed, zlib.crc32(label.encode())])
    for cfg in ss.expand(tree, keys.search.samples, rng):
        for seed in keys.seeds:
            resolved = _check_trial(cfg, seed, label, entry, errors)
            if resolved is not None:
                sweep.trials.append(TrialPlan(len(sweep.trials), label, resolved, method_label(resolved)))


def count_trials(sweep: Sweep, tree: dict[str, Any]) -> int:
    """How many trials the entry ``tree`` expands to, counted without expanding it (0 if its space is bad)."""
    keys = sweep.keys
    if keys.search.searcher in ("optuna", "hyperopt"):
        return keys.search.samples
    try:
        dists = ss.find_dists(tree)
    except ConfigError:
        return 0  # expand_method reports it
    grid = math.prod(len(d.values) for d in dists if d.is_grid)
    draws = keys.search.samples if any(not d.is_grid for d in dists) else 1
    return grid * draws * len(keys.seeds)


def _corners(tree: dict[str, Any], dists: list[ss.Dist]) -> list[dict[str, Any]]:
    """Configs with every distribution at its low, then its high end (and every choice)."""
    if not dists:
        return [tree]
    width = max(len(d.corners()) for d in dists)
    return [
        ss.substitute(tree, {d.key: d.corners()[min(i, len(d.corners()) - 1)] for d in dists}) for i in range(width)
    ]


def _check_trial(
    cfg: dict[str, Any], seed: int, label: str, entry: dict, errors: list[ConfigError]
) -> dict[str, Any] | None:
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
