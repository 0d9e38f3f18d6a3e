"""Readable trial names: ``<method>[-<varied params>]-s<seed>``, the same in W&B and in the progress table.

A parameter is *varied* when it takes more than one value among the trials of one leaderboard row
(grid/random sweeps), or carries a distribution in the method's space (optuna/hyperopt, whose trials
are sampled while the sweep runs). Where the seed and the execution settings live is not a parameter.
"""

from __future__ import annotations

import json
from typing import Any

from orchestrator.results import NON_IDENTITY_KEYS
from orchestrator.sweep import space as ss
from orchestrator.sweep.spec import Sweep


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 0.1}}`` -> ``{"optim.lr": 0.1}``."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _identity(config: dict[str, Any]) -> dict[str, Any]:
    return flatten({k: v for k, v in config.items() if k not in NON_IDENTITY_KEYS})


def varied_keys(sweep: Sweep) -> dict[str, list[str]]:
    """Per leaderboard row (and per bare method name for searcher spaces), the dotted keys that vary."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for plan in sweep.trials:
        groups.setdefault(plan.method, []).append(_identity(plan.config))
    out: dict[str, list[str]] = {}
    for row, flats in groups.items():
        keys = sorted({k for f in flats for k in f})
        out[row] = [k for k in keys if len({json.dumps(f.get(k), sort_keys=True, default=str) for f in flats}) > 1]
    for tree in sweep.spaces.values():
        out.setdefault(str(tree.get("method")), []).extend(d.key for d in ss.find_dists(tree) if d.key != "seed")
    return out


def short_keys(keys: list[str]) -> dict[str, str]:
    """The last part of each dotted key, or the whole key where two keys share a last part."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: s if last.count(s) == 1 else k for k, s in zip(keys, last, strict=True)}


def fmt_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def varied_params(config: dict[str, Any], keys: list[str]) -> str:
    """``alpha=0.4,lr=0.01`` for the varied ``keys`` of one trial config ('' when none vary)."""
    flat, short = _identity(config), short_keys(keys)
    return ",".join(f"{short[k]}={fmt_value(flat.get(k))}" for k in keys)


def trial_name(config: dict[str, Any], row: str, keys: list[str]) -> str:
    """``<row>[-<varied params>]-s<seed>``, e.g. ``ogm_ge-alpha=0.4-s1`` or ``unimodal:pix-s0``."""
    params = varied_params(config, keys)
    return "-".join(p for p in (row, params, f"s{config.get('seed', 0)}") if p)


class TrialNamer:
    """``namer(config, row) -> name`` for :class:`~orchestrator.results.ResultsWriter`, from a sweep."""

    def __init__(self, sweep: Sweep) -> None:
        self.keys = varied_keys(sweep)

    def keys_of(self, config: dict[str, Any], row: str) -> list[str]:
        return self.keys.get(row) or self.keys.get(str(config.get("method")), [])

    def __call__(self, config: dict[str, Any], row: str) -> str:
        return trial_name(config, row, self.keys_of(config, row))
