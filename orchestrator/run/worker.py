"""What every Ray trial process shares, a packed trial or a DDP worker: its torch threads and the
node tag on its reports."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ray
import torch

NODE_KEY = "_node_id"  # which Ray node ran the trial (kept out of metrics.jsonl, written to ray.json)


def set_threads(n: float) -> None:
    """Torch threads = the CPUs Ray reserved for this process, so packed trials do not oversubscribe."""
    torch.set_num_threads(max(1, int(n)))


def node_tagged(report_fn: Callable[..., None]) -> Callable[..., None]:
    """``report_fn`` that also names the Ray node the trial runs on."""
    node = ray.get_runtime_context().get_node_id()

    def report(metrics: dict[str, Any], checkpoint: Any = None) -> None:
        report_fn({**metrics, NODE_KEY: node}, checkpoint=checkpoint)

    return report
