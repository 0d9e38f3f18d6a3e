"""``packed`` and ``ddp`` execution: one Ray Tune run over the sweep's trials, resumable.

The parameter space is ``{"trial": grid_search(<the expanded trial configs>), "exec": <settings>}``
for grid/random sweeps (the list :mod:`orchestrator.sweep` validated, so every config runs on
every seed), or the method's space as Tune domains for Optuna/HyperOpt. Trial folders are named by
trial id (never a timestamp) so that ``Tuner.restore`` finds them again; the driver-side
:class:`ResultsCallback` writes the results folder while the trials run.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback

from orchestrator.results import SUMMARY_KEY, ResultsWriter, summary_status
from orchestrator.run.ddp import ddp_trainable
from orchestrator.run.interrupt import quiet_tune_hints, unfinished_trials
from orchestrator.run.packed import packed_trainable
from orchestrator.run.restore import cut_tune_state, restart_unfinished
from orchestrator.run.worker import NODE_KEY
from orchestrator.sweep import Sweep, method_label
from orchestrator.sweep import space as ss
from trainables.config import resolve
from trainables.plugins import plugin_specs
from trainables.reporting import atomic_write_text, dumps

SCHEMA_SPLITS = ("train", "val", "test", "time", "best", "system")


def is_schema_key(key: str) -> bool:
    """A metric of the schema (``split/metric[/modality]`` or ``epoch``), not one of Tune's own fields."""
    return key == "epoch" or key.split("/", 1)[0] in SCHEMA_SPLITS and "/" in key


def trial_name(trial: Any) -> str:
    """Stable trial folder/name: the Tune trial id (restore depends on names that never change)."""
    return str(trial.trial_id)


class ResultsCallback(tune.Callback):
    """Driver side: each result row -> ``metrics.jsonl`` (+ W&B); completion -> ``summary.json``."""

    def __init__(self, writer: ResultsWriter) -> None:
        self.writer = writer

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        config = resolve(trial.config["trial"]).to_dict()
        self.writer.start(trial.trial_id, config, method_label(config))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if NODE_KEY in result:
            atomic_write_text(
                self.writer.path(trial.trial_id) / "ray.json",
                dumps({"node_id": result[NODE_KEY], "pid": result.get("pid")}),
            )
        self.writer.result(trial.trial_id, {k: v for k, v in result.items() if is_schema_key(k) or k == SUMMARY_KEY})

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.writer.complete(trial.trial_id)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.writer.error(trial.trial_id)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.writer.close()


class _Inert:
    """A logger callback that writes nothing (first in the MRO: its methods win over the logger's)."""

    _SAVED_FILE_TEMPLATES: list[str] = []

    def __init__(self) -> None:  # the loggers set up files / import tensorboardX: nothing to set up here
        pass

    def log_trial_start(self, trial: Any) -> None:
        pass

    def log_trial_restore(self, trial: Any) -> None:
        pass

    def log_trial_save(self, trial: Any) -> None:
        pass

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        pass

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        pass

    def update_config(self, trial: Any, config: dict) -> None:
        pass


class _NoCSV(_Inert, CSVLoggerCallback):
    pass


class _NoJson(_Inert, JsonLoggerCallback):
    pass


class _NoTBX(_Inert, TBXLoggerCallback):
    pass


def no_tune_loggers() -> list[tune.Callback]:
    """Stand-ins for Tune's default loggers that write nothing (``execution.tune_loggers: false``).

    ``Tuner.fit`` adds a CSV, a JSON and a TensorBoardX logger callback unless the run's callbacks hold
    one of each kind already (``ray.tune.utils.callback._create_default_callbacks``, Ray 2.60; one object
    counts for one kind only): these three suppress them for this Tuner alone (the process-wide switch
    is the environment variable ``TUNE_DISABLE_AUTO_CALLBACK_LOGGERS``). Tune stores the run's callbacks
    with its experiment state, so a ``--resume`` keeps the choice the run was started with. The
    loggers' files (``progress.csv``, ``result.json``, ``params.json``, ``events.out.tfevents.*`` in each
    trial's folder in Ray's storage) are read by nothing in mmbal: reports, W&B and resume use the
    results folder and Tune's experiment state.
    """
    return [_NoCSV(), _NoJson(), _NoTBX()]


def storage_path(sweep: Sweep) -> str:
    return sweep.keys.storage or str(sweep.results_dir / "_ray")


def experiment_path(sweep: Sweep) -> str:
    return f"{storage_path(sweep).rstrip('/')}/{sweep.experiment}"


def exec_settings(sweep: Sweep) -> dict[str, Any]:
    ex = sweep.keys.execution
    keep = sweep.trials[0].config["checkpoint"]["keep"] if sweep.trials else 2
    return {
        "mode": ex.mode,
        "cpus_per_trial": ex.cpus_per_trial,
        "num_workers": ex.num_workers,
        "use_gpu": ex.use_gpu,
        "cpus_per_worker": ex.cpus_per_worker,
        "keep": keep,
        "ddp_storage": f"{storage_path(sweep).rstrip('/')}/{sweep.experiment}-ddp",
        "plugins": plugin_specs(),  # imported by every trial process before its config is resolved
    }


def max_concurrent(sweep: Sweep, elastic: bool = False) -> int | None:
    """Given; else for ddp on a fixed cluster (Ray started here) as many trials as its resources fit now.

    On a cluster joined with ``--address`` (``elastic``), ddp trials are not capped: each trial's
    ``TorchTrainer`` asks for its workers' placement group, the pending requests are the demand the
    autoscaler scales out for, and Ray Train retries a worker group that waits too long for resources
    (``FailureConfig.controller_failure_limit``, unlimited by default). ``execution.max_concurrent``
    caps how many wait at once. Packed trials reserve their resources themselves: Tune's own limit.
    """
    ex = sweep.keys.execution
    if ex.max_concurrent is not None or ex.mode != "ddp" or elastic:
        return ex.max_concurrent
    res = ray.cluster_resources()
    fits = [res.get("CPU", 0) / max(ex.cpus_per_worker * ex.num_workers, 1e-9)]
    if ex.use_gpu:
        fits.append(res.get("GPU", 0) / ex.num_workers)
    return max(1, math.floor(min(fits)))


def trainable(sweep: Sweep) -> Any:
    ex = sweep.keys.execution
    if ex.mode == "ddp":
        # the trial driver only waits on its TorchTrainer, whose workers hold the CPUs/GPUs; Tune needs a
        # non-empty request, so it asks for a token of memory rather than a CPU the workers would miss
        return tune.with_resources(ddp_trainable, {"cpu": 0, "memory": 2**20})
    return tune.with_resources(packed_trainable, {"cpu": ex.cpus_per_trial, "gpu": ex.gpus_per_trial})


def param_space(sweep: Sweep) -> tuple[dict[str, Any], int]:
    """Tune's space and ``num_samples``."""
    s = sweep.keys.search
    if s.searcher in ("optuna", "hyperopt"):
        (tree,) = sweep.spaces.values()
        return {
            "trial": ss.to_tune_space({**tree, "seed": sweep.keys.seeds[0]}),
            "exec": exec_settings(sweep),
        }, s.samples
    return {"trial": tune.grid_search([p.config for p in sweep.trials]), "exec": exec_settings(sweep)}, 1


def searcher(sweep: Sweep) -> Any:
    s, k = sweep.keys.search, sweep.keys
    if s.searcher == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(metric=k.metric, mode=k.mode, seed=s.random_seed)
    if s.searcher == "hyperopt":
        from ray.tune.search.hyperopt import HyperOptSearch

        return HyperOptSearch(metric=k.metric, mode=k.mode, random_state_seed=s.random_seed)
    return None  # Tune's variant generator walks the grid of expanded configs


def scheduler(sweep: Sweep) -> Any:
    s = sweep.keys.search
    epochs = max((p.config["epochs"] for p in sweep.trials), default=None)
    if s.scheduler == "asha":
        from ray.tune.schedulers import ASHAScheduler

        return ASHAScheduler(
            time_attr="epoch",
            max_t=epochs or 100,
            grace_period=s.asha.grace_period,
            reduction_factor=s.asha.reduction_factor,
        )
    if s.scheduler == "pbt":
        from orchestrator.run.pbt import SafePopulationBasedTraining

        return SafePopulationBasedTraining(
            time_attr="epoch",
            perturbation_interval=s.pbt.perturbation_interval,
            quantile_fraction=s.pbt.quantile_fraction,
            hyperparam_mutations={"trial": _nested_mutations(s.pbt.mutations)},
            synch=s.pbt.synch,
        )
    return None


def _nested_mutations(mutations: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in mutations.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = list(value) if isinstance(value, list) else ss.to_tune_space(value)
    return out


def build_tuner(
    sweep: Sweep, writer: ResultsWriter, elastic: bool = False, callbacks: tuple = (), verbose: bool = True
) -> tune.Tuner:
    """``elastic``: see :func:`max_concurrent`; ``callbacks`` come after the results writer's (mmbal's
    progress table); ``verbose=False`` turns Tune's own console output off."""
    k = sweep.keys
    space, num_samples = param_space(sweep)
    return tune.Tuner(
        trainable(sweep),
        param_space=space,
        tune_config=tune.TuneConfig(
            metric=k.metric,
            mode=k.mode,
            search_alg=searcher(sweep),
            scheduler=scheduler(sweep),
            num_samples=num_samples,
            max_concurrent_trials=max_concurrent(sweep, elastic),
            trial_name_creator=trial_name,
            trial_dirname_creator=trial_name,
            reuse_actors=k.execution.mode == "packed",  # skips a process start and the torch import per trial
        ),
        run_config=tune.RunConfig(
            name=k.experiment,
            storage_path=storage_path(sweep),
            callbacks=[ResultsCallback(writer), *callbacks, *([] if k.execution.tune_loggers else no_tune_loggers())],
            verbose=None if verbose else 0,
            failure_config=tune.FailureConfig(max_failures=k.execution.max_failures),
            # PBT copies other trials' checkpoints: keeping too few lets them vanish before the copy
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=max(exec_settings(sweep)["keep"], 4 if k.search.scheduler == "pbt" else 1)
            ),
        ),
    )


def can_resume(sweep: Sweep) -> bool:
    return tune.Tuner.can_restore(experiment_path(sweep))


def run_tune(
    sweep: Sweep,
    writer: ResultsWriter,
    resume: bool,
    elastic: bool = False,
    callbacks: tuple = (),
    verbose: bool = True,
) -> dict[str, str]:
    """Fit (or restore and finish) the Tune run; returns ``trial_id -> status`` from Tune.

    ``elastic``: Ray is a cluster joined with ``--address`` (it may grow), see :func:`max_concurrent`.
    A restored run keeps the callbacks and verbosity it was started with (Tune stores them)."""
    cut = cut_tune_state(experiment_path(sweep)) if resume else None
    if cut is not None:  # a killed driver cut Tune's state mid-write: restart the unfinished trials
        sweep = restart_unfinished(sweep, writer, experiment_path(sweep), cut)
        if not sweep.trials and not sweep.spaces:
            return {}  # every trial had finished
        tuner = build_tuner(sweep, writer, elastic, callbacks, verbose)
    elif resume and can_resume(sweep):
        tuner = tune.Tuner.restore(
            experiment_path(sweep), trainable=trainable(sweep), resume_unfinished=True, resume_errored=True
        )
    else:
        tuner = build_tuner(sweep, writer, elastic, callbacks, verbose)
    quiet_tune_hints()
    grid = tuner.fit()
    out = {}
    for r in grid:
        tid = Path(r.path).name
        out[tid] = "error" if r.error else summary_status(writer.path(tid)) or "stopped"
    out.update(dict.fromkeys(unfinished_trials(grid), "interrupted"))  # Ctrl-C: Tune returned early
    expected = len(sweep.trials) or sweep.keys.search.samples
    out.update({f"_not_started_{i}": "interrupted" for i in range(expected - len(out))})
    return out
