"""The sweep file's keys as frozen dataclasses, and what a checked sweep is (:class:`Sweep`).

Top-level keys are either sweep keys (:class:`SweepKeys`: ``experiment``, ``methods``, ``seeds``,
``search``, ``execution``, ``tracking``, ...) or trial keys shared by every method (``dataset``,
``epochs``, ``data``, ``optim``, ``model``, ... as in :class:`trainables.config.TrainConfig`).
Every field is a ``knob``: a default and a one-line meaning (``mmbal validate`` and the README's
reference come from them).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from orchestrator.tracking import TrackingSpec
from trainables.config import TrainConfig
from trainables.errors import ConfigError
from trainables.params import knob


@dataclass(frozen=True)
class ExecutionSpec:
    mode: Literal["local", "packed", "ddp"] = knob(
        "packed", "local: in-process, no Ray; packed: Tune trials; ddp: Ray Train per trial"
    )
    cpus_per_trial: float = knob(1.0, "packed: CPUs reserved per trial", ge=0)
    gpus_per_trial: float = knob(0.0, "packed: GPU fraction per trial (0.25 packs four trials on a GPU)", ge=0)
    num_workers: int = knob(2, "ddp: Ray Train workers per trial", ge=1)
    cpus_per_worker: float = knob(1.0, "ddp: CPUs per worker", ge=0)
    use_gpu: bool = knob(False, "ddp: one GPU per worker (NCCL); false = CPU workers (gloo)")
    max_concurrent: int | None = knob(
        None, "trials at once; default: as many as fit (ddp on a joined cluster: all, the autoscaler adds nodes)", ge=1
    )
    max_failures: int = knob(1, "retries of a failed trial (it resumes from its last checkpoint)", ge=0)
    tune_loggers: bool = knob(
        False,
        "packed/ddp: Tune's JSON/CSV/TensorBoard loggers (progress.csv, result.json, events.out.tfevents.* in each "
        "trial's folder in Ray's storage); mmbal reads none of them; off saves ~20 ms per packed trial",
    )

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
    grace_period: int = knob(1, "epochs every trial runs before it may be stopped", ge=1)
    reduction_factor: float = knob(2.0, "keep 1/reduction_factor of the trials at each rung", gt=1)


@dataclass(frozen=True)
class PbtSpec:
    perturbation_interval: int = knob(2, "epochs between exploit/explore steps", ge=1)
    quantile_fraction: float = knob(0.25, "bottom fraction that copies the top fraction", gt=0, le=0.5)
    synch: bool = knob(
        True, "trials wait for each other at each perturbation (reproducible exploits); false = asynchronous"
    )
    mutations: dict[str, Any] = knob(
        {}, "dotted trial key -> distribution or list, e.g. {optim.lr: {loguniform: [1e-3, 1e-1]}}"
    )


@dataclass(frozen=True)
class SearchSpec:
    searcher: Literal["grid", "random", "optuna", "hyperopt"] = knob(
        "grid", "grid/random: Tune's variant generator; optuna, hyperopt"
    )
    samples: int = knob(
        1, "random draws per method (each crossed with the grid and the seeds); trials for optuna/hyperopt", ge=1
    )
    random_seed: int = knob(0, "seed of the random draws, so the trial list is reproducible", ge=0)
    max_trials: int = knob(
        10000, "the most trials a sweep may expand to (counted before expanding; raise it on purpose)", ge=1
    )
    scheduler: Literal["none", "asha", "pbt"] = knob("none", "none, asha (time attribute epoch) or pbt (packed only)")
    asha: AshaSpec = AshaSpec()
    pbt: PbtSpec = PbtSpec()

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise ConfigError("samples", f"got {self.samples}; allowed: an integer >= 1")


@dataclass(frozen=True)
class SweepKeys:
    experiment: str = knob("", "experiment name: folder under results/, W&B group")
    results: str = knob("results", "local folder that receives results/<experiment>/ (the report's input)")
    storage: str | None = knob(
        None,
        "Ray storage for checkpoints and Tune state: a folder or a URI (s3://, gs://); "
        "default results/<experiment>/_ray",
    )
    metric: str = knob("val/acc", "validation metric for searchers, schedulers and the leaderboard")
    mode: Literal["max", "min"] = knob("max", "whether a larger metric is better")
    seeds: list[int] = knob([0], "every config runs on every seed")
    methods: Any = knob({}, "method name (or label with a method: key) -> trial keys and search space")
    execution: ExecutionSpec = ExecutionSpec()
    search: SearchSpec = SearchSpec()
    tracking: Any = knob("wandb", "wandb, none, or a mapping of tracking keys")
    plugins: list[str] = knob(
        [], "modules imported first (here and in every Ray worker) that register your methods/datasets/encoders"
    )

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.experiment or ""):
            raise ConfigError("experiment", f"got {self.experiment!r}; allowed: a name of letters, digits, _ . -")
        if not self.metric.startswith(("val/", "train/")):
            raise ConfigError(
                "metric", f"got {self.metric!r}; allowed: a val/ (or train/) metric; never select on test"
            )
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError("seeds", f"got {self.seeds}; allowed: a non-empty list of distinct integers")


TRIAL_KEYS = {f.name for f in dataclasses.fields(TrainConfig)} - {"method", "seed"}
TOP_TRIAL_KEYS = TRIAL_KEYS - {"params"}  # params differ per method: they live under methods.<name>
SWEEP_KEYS = {f.name for f in dataclasses.fields(SweepKeys)}


@dataclass(frozen=True)
class TrialPlan:
    """One trial to run: a fully resolved config (``Resolved.to_dict()``) and where it came from.

    ``label`` is the entry under ``methods:`` it came from; ``method`` is its leaderboard row
    (``unimodal:pix`` for a method with a ``variant_param``), recorded in the trial's ``config.json``.
    """

    index: int
    label: str
    config: dict[str, Any]
    method: str


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
