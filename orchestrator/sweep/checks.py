"""Cross-checks of a sweep: settings that are valid alone but not together (searcher, scheduler,
execution mode, seeds, PBT mutations). Each problem is appended to ``errors``, so that
``mmbal validate`` reports them all at once."""

from __future__ import annotations

import copy
import importlib.util
from typing import Any

import yaml

from orchestrator.sweep import space as ss
from orchestrator.sweep.spec import Sweep, SweepKeys
from trainables.config import apply_overrides, resolve
from trainables.errors import ConfigError


def check_combinations(keys: SweepKeys, entries: dict[str, dict], errors: list[ConfigError]) -> None:
    """Searcher, scheduler, execution mode, number of methods and seeds that do not go together."""
    s, mode = keys.search, keys.execution.mode
    if s.scheduler == "pbt" and mode != "packed":
        errors.append(
            ConfigError(
                "search.scheduler",
                f"pbt needs execution.mode packed (it moves Tune checkpoints between trials), got {mode}",
            )
        )
    if s.scheduler != "none" and mode == "local":
        errors.append(
            ConfigError("search.scheduler", f"{s.scheduler} needs Ray; allowed with execution.mode local: none")
        )
    if s.searcher in ("optuna", "hyperopt"):
        if importlib.util.find_spec(s.searcher) is None:
            errors.append(
                ConfigError("search.searcher", f"{s.searcher} is not installed here: pip install {s.searcher}")
            )
        if mode == "local":
            errors.append(
                ConfigError(
                    "search.searcher", f"{s.searcher} runs under Ray; allowed with execution.mode local: grid, random"
                )
            )
        if len(entries) > 1:
            errors.append(
                ConfigError(
                    "methods",
                    f"{s.searcher} searches one method's space per sweep; split the methods or use searcher random",
                )
            )
        if len(keys.seeds) > 1:
            errors.append(
                ConfigError(
                    "seeds",
                    f"{s.searcher} cannot take a grid dimension; give one seed "
                    "(rerun the best over seeds with a grid sweep)",
                )
            )
        for label, entry in entries.items():
            for d in ss.find_dists(entry) if _safe(entry) else []:
                if d.is_grid:
                    errors.append(
                        ConfigError(f"methods.{label}.{d.key}", f"{s.searcher} cannot take grid:; use choice:")
                    )


def _safe(tree: Any) -> bool:
    try:
        ss.find_dists(tree)
        return True
    except ConfigError:
        return False


def check_pbt(keys: SweepKeys, sweep: Sweep, errors: list[ConfigError]) -> None:
    """PBT's mutations: each a list or a sampled distribution whose extreme values the trials accept."""
    if keys.search.scheduler != "pbt":
        return
    muts = keys.search.pbt.mutations
    if not muts:
        errors.append(
            ConfigError(
                "search.pbt.mutations", "pbt needs at least one mutation, e.g. {optim.lr: {loguniform: [1e-3, 1e-1]}}"
            )
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
                ConfigError(
                    f"search.pbt.mutations.{key}", f"expected a list or a sampled distribution ({ss.ALLOWED} but grid)"
                )
            )
            continue
        for plan in sweep.trials[:1]:
            for v in dists[0].corners():
                try:
                    resolve(apply_overrides(copy.deepcopy(plan.config), [f"{key}={yaml.safe_dump(v).strip()}"]))
                except ConfigError as exc:
                    errors.append(ConfigError(f"search.pbt.mutations.{key}", exc.line()))
                    break
