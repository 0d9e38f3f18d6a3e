"""``execution.mode: packed``: a Tune function trainable that runs one trial in the trial's own process.

Many small trials share a node (or a GPU, ``gpus_per_trial: 0.25``); each holds the CPUs Tune
reserved for it. Tune's ``config`` is ``{"trial": <trial config>, "exec": <execution settings>}``.
Nothing here writes results: rows and the summary travel through ``ray.tune.report`` to the
driver's callback (:class:`orchestrator.run.tuner.ResultsCallback`). The DDP counterpart is
:func:`orchestrator.run.ddp.ddp_trainable`.
"""

from __future__ import annotations

from typing import Any

from orchestrator.run.worker import node_tagged, set_threads


def packed_trainable(config: dict[str, Any]) -> None:
    """One trial in this process: ``run_trial`` with a Tune reporter (checkpoints through Tune)."""
    # imported here, not at the top: this module must stay light (see orchestrator.run.worker)
    from ray import tune

    from orchestrator.run.reporter import RayReporter
    from trainables.errors import Diverged
    from trainables.loop import run_trial
    from trainables.plugins import import_specs

    import_specs(config["exec"].get("plugins", []))
    set_threads(config["exec"]["cpus_per_trial"])
    trial = config["trial"]
    reporter = RayReporter(
        node_tagged(tune.report),
        tune.get_checkpoint,
        tune.Checkpoint,
        epochs=int(trial["epochs"]),
        optim=trial.get("optim"),
    )
    try:
        summary = run_trial(trial, reporter)
    except Diverged as exc:  # a finished trial with status diverged, not an error to retry
        summary = exc.summary
    reporter.finish(summary)
