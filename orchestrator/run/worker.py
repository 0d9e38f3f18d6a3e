"""What every Ray trial process shares, a packed trial or a DDP worker: its torch threads and the
node tag on its reports.

Ray imports the trainables' modules (``packed``, ``ddp``, this one) by reference when a trial's
actor starts, before the actor counts as ready. They stay light: torch, Ray Train, the reporter and
the loop are imported inside the functions, when the trial runs. With heavy module imports, actor
start-up on a loaded machine got slow enough for Tune to hand a waiting trial to an already-running
actor (``reuse_actors``) instead of the node it was placed on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

NODE_KEY = "_node_id"  # which Ray node ran the trial (kept out of metrics.jsonl, written to ray.json)


def set_threads(n: float) -> None:
    """Torch threads = the CPUs Ray reserved for this process, so packed trials do not oversubscribe."""
    import torch

    torch.set_num_threads(max(1, int(n)))


def node_tagged(report_fn: Callable[..., None]) -> Callable[..., None]:
    """``report_fn`` that also names the Ray node the trial runs on and adds this process's
    ``system/*`` metrics (:mod:`orchestrator.run.system`)."""
    import ray

    from orchestrator.run.system import SystemStats

    node = ray.get_runtime_context().get_node_id()
    stats = SystemStats()

    def report(metrics: dict[str, Any], checkpoint: Any = None) -> None:
        report_fn({**metrics, **stats.sample(), NODE_KEY: node}, checkpoint=checkpoint)

    return report
