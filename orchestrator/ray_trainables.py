"""Tune function trainables: ``packed`` trains in the trial's own process; ``ddp`` is in :mod:`orchestrator.ddp`.

Tune's ``config`` is ``{"trial": <trial config>, "exec": <execution settings>}``. Nothing here writes
results: rows and the summary travel through ``ray.tune.report`` to the driver's callback.
"""

from __future__ import annotations

from typing import Any

NODE_KEY = "_node_id"  # which Ray node ran the trial (kept out of metrics.jsonl, written to ray.json)


def set_threads(n: float) -> None:
    """Torch threads = the CPUs Ray reserved for this process, so packed trials do not oversubscribe."""
    import torch

    torch.set_num_threads(max(1, int(n)))


def node_tagged(report_fn: Any) -> Any:
    """``report_fn`` that also names the Ray node the trial runs on."""
    import ray

    node = ray.get_runtime_context().get_node_id()

    def report(metrics: dict[str, Any], checkpoint: Any = None) -> None:
        report_fn({**metrics, NODE_KEY: node}, checkpoint=checkpoint)

    return report


def packed_trainable(config: dict[str, Any]) -> None:
    """One trial in this process: ``run_trial`` with a Tune reporter (checkpoints through Tune)."""
    from ray import tune

    from orchestrator.ray_reporter import RayReporter
    from trainables.loop import run_trial

    set_threads(config["exec"]["cpus_per_trial"])
    trial = config["trial"]
    reporter = RayReporter(
        node_tagged(tune.report), tune.get_checkpoint, tune.Checkpoint, epochs=int(trial["epochs"]), optim=trial.get("optim")
    )
    summary = run_trial(trial, reporter)
    reporter.finish(summary)
