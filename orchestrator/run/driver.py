"""The sweep driver (``mmbal sweep``'s entry point): prepare the results folder, pick the execution
mode, print the leaderboard and log the W&B summary run.

Ray is imported and started only for ``packed``/``ddp`` (the imports inside :func:`start_ray` and
:func:`run_sweep`); ``local`` never touches it.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from typing import Any

import yaml

from orchestrator.report import leaderboard_markdown
from orchestrator.report.readme import write_machine
from orchestrator.report.summary_run import log_summary_run
from orchestrator.results import ResultsWriter
from orchestrator.run.interrupt import SweepInterrupted, finished_trials
from orchestrator.run.local import run_local
from orchestrator.run.lock import folder_lock
from orchestrator.sweep import Sweep, canonical
from orchestrator.sweep.load import absolute_paths
from orchestrator.sweep.naming import TrialNamer
from orchestrator.tracking import make_tracker, resolve_mode
from trainables.errors import ConfigError


def prepare_results(sweep: Sweep, resume: bool) -> None:
    """Refuse to mix two different sweeps in one folder; a fresh start needs a fresh experiment name."""
    path = sweep.results_dir / "sweep.yaml"
    if not path.exists():
        return
    if not resume:
        raise ConfigError(
            "experiment",
            f"{sweep.results_dir} already holds this experiment; add --resume to continue it, "
            "or --set experiment=NEW_NAME to start another",
        )
    if not _same_sweep(path.read_text(), canonical(sweep.raw)):
        raise ConfigError(
            "--resume", f"the sweep differs from the one in {path}; resume needs the same sweep file and --set values"
        )


def _same_sweep(stored: str, current: str) -> bool:
    """Equal, or equal once a sweep.yaml written before paths were stored absolute has them resolved
    (against the current directory: such a sweep resumes from where it was started)."""
    if stored == current:
        return True
    old = yaml.safe_load(stored)
    return isinstance(old, dict) and canonical(absolute_paths(old)) == current


def start_ray(address: str | None, verbose: bool = False) -> None:
    """Start or join Ray; without ``verbose``, Ray's log lines and the trial processes' output stay off
    the console (mmbal's progress table says what runs; a failed trial's traceback is in its error file)."""
    import logging

    import ray  # only here: local sweeps never import Ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Tune warns on every state snapshot of short trials; the snapshots are what resume needs
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if not verbose:
        # Tune's new output engine prints its configuration box, the results path and a TensorBoard hint
        # even at verbose=0; the legacy engine at verbose=0 prints nothing (mmbal's progress table instead)
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if ray.is_initialized():  # tests and notebooks bring their own
        return
    _probe(address)
    # No --address means "start Ray here": plain ray.init() would instead join whatever cluster this
    # machine last started (/tmp/ray/ray_current_cluster), e.g. a colleague's. RAY_ADDRESS (set by
    # `ray job submit`) still counts as asking for a cluster.
    if address is None and not os.environ.get("RAY_ADDRESS"):
        address = "local"
    try:
        ray.init(
            address=address,
            include_dashboard=False if address == "local" else None,
            log_to_driver=verbose,
            logging_level=logging.INFO if verbose else logging.ERROR,
        )
    except (ConnectionError, ValueError) as exc:
        raise ConfigError(
            "--address", f"cannot join a Ray cluster at {address!r} ({exc}); start one with `ray start --head`"
        ) from None


def _joined(address: str | None) -> bool:
    """Whether the sweep runs on a cluster it joined (which an autoscaler may grow), not one started here."""
    return (address or os.environ.get("RAY_ADDRESS") or "local") != "local"


def _probe(address: str | None) -> None:
    """Fail in seconds on a HOST:PORT nobody listens on (Ray itself retries for minutes)."""
    if not address or address == "auto" or "://" in address or ":" not in address:
        return
    host, port = address.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except (OSError, ValueError) as exc:
        raise ConfigError(
            "--address", f"no Ray head answers at {address} ({exc}); start one with `ray start --head`"
        ) from None


def run_sweep(sweep: Sweep, resume: bool = False, address: str | None = None, verbose: bool = False) -> dict[str, Any]:
    """Run every trial not finished yet and print the leaderboard.

    ``packed``/``ddp`` print mmbal's progress table (:mod:`orchestrator.run.progress`); ``verbose``
    brings back Tune's own output and Ray's and the trials' log lines.

    Returns:
        ``{"status": {trial_id: completed|stopped|error|diverged}, "wall_s": seconds}``.
    """
    prepare_results(sweep, resume)
    tic = time.perf_counter()
    if sweep.keys.execution.mode != "local":
        start_ray(address, verbose)  # before anything is written: a wrong --address leaves no folder behind
    with folder_lock(sweep.results_dir, "experiment"):  # one driver per results folder
        prepare_results(sweep, resume)  # again, under the lock: another driver may have started meanwhile
        return _run_locked(sweep, resume, tic, address, verbose)


def _trial_threads(sweep: Sweep) -> int | None:
    """Torch threads each trial runs with (packed/ddp: its reserved CPUs, as ``worker.set_threads``)."""
    ex = sweep.keys.execution
    if ex.mode == "packed":
        return max(1, int(ex.cpus_per_trial))
    if ex.mode == "ddp":
        return max(1, int(ex.cpus_per_worker))
    return None


def _run_locked(sweep: Sweep, resume: bool, tic: float, address: str | None, verbose: bool) -> dict[str, Any]:
    writer = ResultsWriter(
        sweep.results_dir,
        sweep.experiment,
        make_tracker(sweep.tracking, sweep.experiment, sweep.results_dir),
        namer=TrialNamer(sweep),
    )
    writer.write_sweep(canonical(sweep.raw))
    write_machine(sweep.results_dir, _trial_threads(sweep))  # what `mmbal report --readme` says the numbers ran on
    total = len(sweep.trials) or sweep.keys.search.samples
    try:
        if sweep.keys.execution.mode == "local":
            status = run_local(sweep, writer)
        else:
            from functools import partial

            from orchestrator.run.progress import sweep_progress
            from orchestrator.run.tune_progress import TuneProgress  # imports Ray: packed/ddp only
            from orchestrator.run.tuner import run_tune

            progress = TuneProgress(partial(sweep_progress, sweep))
            status = run_tune(sweep, writer, resume, elastic=_joined(address), callbacks=(progress,), verbose=verbose)
    except KeyboardInterrupt:
        raise SweepInterrupted(finished_trials(sweep.results_dir), total) from None
    finally:
        writer.close()
    if "interrupted" in status.values():  # Ctrl-C under Tune: fit() returned early
        raise SweepInterrupted(finished_trials(sweep.results_dir), total)
    wall = time.perf_counter() - tic
    counts = {s: sum(1 for v in status.values() if v == s) for s in ("completed", "stopped", "error", "diverged")}
    print(
        f"sweep {sweep.experiment}: {counts['completed']} completed, {counts['stopped']} stopped early, "
        f"{counts['error']} failed, {counts['diverged']} diverged in {wall:.1f}s\nresults: {sweep.results_dir}"
    )
    print_leaderboard(sweep)
    return {"status": status, "wall_s": wall}


def print_leaderboard(sweep: Sweep) -> None:
    """The one place the sweep prints its leaderboard (the report module's, when it can build one)."""
    try:
        print(leaderboard_markdown(sweep.results_dir, sweep.keys.metric, sweep.keys.mode))
    except ConfigError as exc:
        print(f"no leaderboard: {exc.message}", file=sys.stderr)
        return
    if sweep.tracking.backend == "wandb":  # the leaderboard and plots next to the curves; never raises
        log_summary_run(
            sweep.results_dir,
            sweep.tracking.project,
            sweep.experiment,
            mode=resolve_mode(sweep.tracking),
            select_metric=sweep.keys.metric,
            select_mode=sweep.keys.mode,
            entity=sweep.tracking.entity,
            timeout_s=sweep.tracking.timeout_s,
        )
        if resolve_mode(sweep.tracking) == "online":  # offline runs get theirs from `mmbal sync`
            from orchestrator.report.workspace import save_workspace

            url = save_workspace(sweep.results_dir, sweep.tracking.project, sweep.experiment, sweep.tracking.entity)
            if url:
                print(f"W&B workspace view: {url}")
