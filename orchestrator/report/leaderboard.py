"""The leaderboard as data: best configuration per method chosen on validation, test metrics over seeds.

Input is only the results folder (:mod:`orchestrator.results`). Completed trials are grouped by
dataset, method and ``config_id`` (trials of one config differ only in their seed). Per method, the
config with the best *mean over seeds* of the selection metric (a ``val/*`` key) wins; the test set
never takes part in the choice. Its test metrics are reported as mean and sample standard deviation
(ddof=1) over its seeds. The per-modality headline is the linear-probe accuracy
``test/probe/acc/<m>`` (the same recipe for every method, :mod:`trainables.protocol`); each method's
own-head ``test/acc/<m>`` follows it. The gain column compares every method with ``joint`` on the
*weak* modality: the one with the lowest per-modality headline accuracy of joint training's best
config (the probe where joint's trials report it, else the own-head accuracy; the title says which).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.report.diverged import diverged_trials
from orchestrator.report.flags import seed_flags
from orchestrator.results import NON_IDENTITY_KEYS, TrialRecord, flatten, iter_trials
from trainables.errors import ConfigError

BASELINE = "joint"


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation (ddof=1; NaN for a single value) of one metric over seeds."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Stat:
        if not values:
            return cls(math.nan, math.nan, 0)
        return cls(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan, len(values))


@dataclass
class Entry:
    """One leaderboard row: a method's chosen configuration and its metrics over seeds."""

    dataset: str
    method: str
    config_id: str
    trials: list[TrialRecord]
    select: Stat
    metrics: dict[str, Stat]
    n_configs: int
    label: str = ""  # the hyperparameters that set this config apart from the method's other configs
    gain: float | None = None  # mean test (probe) acc on the weak modality minus joint's, as a fraction
    flags: dict[int, list[str]] = field(default_factory=dict)  # seed -> why it failed (report/flags.py)

    @property
    def seeds(self) -> list[int]:
        return sorted(t.seed for t in self.trials)


@dataclass
class DatasetBoard:
    """The rows of one dataset, with the metric columns its trials report."""

    dataset: str
    modalities: list[str]
    entries: list[Entry]
    columns: list[str]
    weak: str | None = None
    gain_metric: str = "test/acc"  # per-modality metric prefix the weak modality and the gain are read on


@dataclass
class Leaderboard:
    """Everything a report shows, computed once from the results folder."""

    results_dir: Path
    select_metric: str
    select_mode: str
    boards: list[DatasetBoard]
    completed: list[TrialRecord]
    missing: list[TrialRecord] = field(default_factory=list)
    diverged: list[TrialRecord] = field(default_factory=list)

    @property
    def experiment(self) -> str:
        return self.results_dir.resolve().name


def _number(value: Any) -> float | None:
    """A finite float, or None for absent/NaN/non-numeric values (NaN is stored as the string "nan")."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _stat(trials: list[TrialRecord], key: str) -> Stat:
    return Stat.of([x for t in trials if (x := _number(t.summary.get(key))) is not None])


def load_trials(results_dir: str | Path) -> list[TrialRecord]:
    """All trials of a results folder; a folder that is not one is a one-line :class:`ConfigError`."""
    root = Path(results_dir)
    if not root.is_dir():
        raise ConfigError("EXPERIMENT_DIR", f"{root} is not a folder; give a results folder written by mmbal sweep")
    trials = list(iter_trials(root)) if (root / "trials").is_dir() else []
    if not trials:
        hint = " (it looks like a single `mmbal train` run)" if (root / "metrics.jsonl").exists() else ""
        raise ConfigError(
            "EXPERIMENT_DIR", f"{root} is not a results folder{hint}: expected trials/<trial_id>/config.json"
        )
    return trials


def _labels(groups: dict[str, list[TrialRecord]]) -> dict[str, str]:
    """Per config id, the keys whose values differ between a method's configs (``optim.lr=0.1``)."""
    flat = {
        cid: flatten({k: v for k, v in ts[0].config.items() if k not in NON_IDENTITY_KEYS})
        for cid, ts in groups.items()
    }
    keys = sorted({k for f in flat.values() for k in f})
    varying = [k for k in keys if len({repr(f.get(k)) for f in flat.values()}) > 1]
    return {cid: ", ".join(f"{k}={f.get(k)}" for k in varying) for cid, f in flat.items()}


def _pick(groups: dict[str, list[TrialRecord]], metric: str, mode: str) -> tuple[str, Stat]:
    """The config id with the best mean selection metric; ties go to more seeds, then the smaller id."""
    scored = []
    for cid, trials in groups.items():
        for t in trials:
            if _number(t.summary.get(metric)) is None:
                have = ", ".join(sorted(k for k in t.summary if k.startswith("val/")))
                raise ConfigError(
                    "--select-metric", f"{metric!r} is not a number in {t.path / 'summary.json'}; available: {have}"
                )
        scored.append((cid, _stat(trials, metric)))
    sign = 1.0 if mode == "max" else -1.0
    return min(scored, key=lambda cs: (-sign * cs[1].mean, -cs[1].n, cs[0]))


def _columns(modalities: list[str], trials: list[TrialRecord]) -> list[str]:
    """Test metric columns in reading order: fused, per-modality probe (the headline) and own-head accuracy,
    imbalance, Shapley values, missing subsets (small first). Protocol columns only where trials report them."""
    have = {k for t in trials for k in t.summary}
    probe = [k for m in modalities if (k := f"test/probe/acc/{m}") in have]
    shap = [k for m in modalities if (k := f"test/shapley/{m}") in have]
    cols = ["test/acc", "test/f1", *probe, *(f"test/acc/{m}" for m in modalities), "test/imbalance/score_ratio", *shap]
    missing = {k for k in have if k.startswith("test/missing/") and k.endswith("/acc")}
    order = {m: i for i, m in enumerate(modalities)}
    subset = lambda k: k.split("/")[2].split("+")
    return cols + sorted(missing, key=lambda k: (len(subset(k)), [order.get(m, len(order)) for m in subset(k)], k))


def _board(dataset: str, trials: list[TrialRecord], metric: str, mode: str) -> DatasetBoard:
    modalities = list(dict.fromkeys(m for t in trials for m in t.summary.get("modalities") or []))
    columns = _columns(modalities, trials)
    entries = []
    for method in sorted({t.method for t in trials}):
        groups: dict[str, list[TrialRecord]] = {}
        for t in trials:
            if t.method == method:
                groups.setdefault(t.config_id, []).append(t)
        cid, select = _pick(groups, metric, mode)
        chosen = sorted(groups[cid], key=lambda t: (t.seed, t.trial_id))
        entries.append(
            Entry(
                dataset,
                method,
                cid,
                chosen,
                select,
                {c: _stat(chosen, c) for c in columns},
                len(groups),
                _labels(groups)[cid] if len(groups) > 1 else "",
                flags=seed_flags(chosen),
            )
        )
    board = DatasetBoard(dataset, modalities, entries, columns)
    base = next((e for e in entries if e.method == BASELINE), None)
    if base and all(f"test/probe/acc/{m}" in t.summary for t in base.trials for m in modalities):
        board.gain_metric = "test/probe/acc"
    per_mod = {m: base.metrics[f"{board.gain_metric}/{m}"].mean for m in modalities} if base else {}
    per_mod = {m: v for m, v in per_mod.items() if not math.isnan(v)}
    if per_mod:
        board.weak = min(per_mod, key=lambda m: (per_mod[m], m))
        for e in entries:
            e.gain = e.metrics[f"{board.gain_metric}/{board.weak}"].mean - per_mod[board.weak]
    # best first on the selection metric: a leaderboard reads top-down
    entries.sort(key=lambda e: ((-1.0 if mode == "max" else 1.0) * e.select.mean, e.method))
    return board


def build_leaderboard(results_dir: str | Path, select_metric: str = "val/acc", select_mode: str = "max") -> Leaderboard:
    """Read a (finished or partial) results folder and compute the leaderboard.

    Args:
        results_dir: the experiment folder (``results/<experiment>``).
        select_metric: validation metric that picks each method's best config (mean over seeds).
        select_mode: ``max`` or ``min``.

    Raises:
        ConfigError: the folder is not a results folder, or the options are invalid.
    """
    if select_mode not in ("max", "min"):
        raise ConfigError("--select-mode", f"got {select_mode!r}; allowed: max, min")
    if not select_metric.startswith("val/"):
        raise ConfigError(
            "--select-metric", f"got {select_metric!r}; allowed: a validation metric (val/...), never test"
        )
    trials = load_trials(results_dir)
    done = [t for t in trials if t.completed]
    by_ds: dict[str, list[TrialRecord]] = {}
    for t in done:
        by_ds.setdefault(str(t.summary.get("dataset") or t.config.get("dataset", "?")), []).append(t)
    boards = [_board(ds, ts, select_metric, select_mode) for ds, ts in sorted(by_ds.items())]
    return Leaderboard(
        Path(results_dir),
        select_metric,
        select_mode,
        boards,
        done,
        [t for t in trials if not t.completed and not t.diverged],
        diverged_trials(trials),  # listed apart, never averaged in (orchestrator.report.diverged)
    )
