"""Shared test settings: no telemetry, W&B offline, tiny configs."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TQDM_DISABLE", "1")

TINY_MFEAT = {"train_per_class": 6, "val_per_class": 4, "test_per_class": 4}
# the same tiny split as command-line overrides
TINY_ARGS = [a for k, v in TINY_MFEAT.items() for a in ("--set", f"data.{k}={v}")]


def start_local_ray() -> None:
    """The tests' local Ray: the machine's 2 CPUs, a small object store, no dashboard, no worker logs."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20, log_to_driver=False)


def tiny_config(method: str = "joint", epochs: int = 2, **extra) -> dict:
    """A trial that runs in about a second on CPU: 60 training digits, small encoders."""
    cfg = {
        "method": method,
        "dataset": "mfeat",
        "epochs": epochs,
        "seed": 0,
        "data": dict(TINY_MFEAT),
        "loader": {"batch_size": 16},
        "model": {"feature_dim": 16},
    }
    cfg.update(extra)
    return cfg


@pytest.fixture
def tiny():
    return tiny_config


class Interrupted(Exception):
    """Raised by :func:`interrupted_then_resumed` to kill a run right after an epoch's report."""


def interrupted_then_resumed(cfg: dict, tmp_path, stop_after: int) -> tuple[dict, dict]:
    """Run ``cfg`` straight, and again killed right after epoch ``stop_after`` is reported and then
    resumed from its folder. Returns ``(straight_summary, resumed_summary)``; the metric rows of both
    runs (timings aside) must match too, which this checks."""
    from orchestrator.results import read_jsonl
    from trainables.loop import run_trial
    from trainables.reporting import JsonlReporter

    class KillAfter(JsonlReporter):
        def report(self, metrics, checkpoint):
            super().report(metrics, checkpoint)
            if metrics["epoch"] == stop_after:
                raise Interrupted

    straight = run_trial(cfg, JsonlReporter(tmp_path / "straight"))
    with pytest.raises(Interrupted):
        run_trial(cfg, KillAfter(tmp_path / "cut"))
    resumed = run_trial(cfg, JsonlReporter(tmp_path / "cut"))
    rows = [
        [{k: v for k, v in r.items() if not k.startswith("time/")} for r in read_jsonl(tmp_path / d / "metrics.jsonl")]
        for d in ("straight", "cut")
    ]
    assert rows[0] == rows[1], "resumed run's epoch rows differ from the straight run's"
    return straight, resumed


def without_batchnorm(model):
    """``model`` with every BatchNorm replaced by identity (returned for chaining).

    For unit tests of a method's math that compare against a hand computation done in another mode
    or on another batch: a BatchNorm (the mlp encoder's input standardisation) normalises by the
    batch in training mode and by running statistics in eval mode, which is not what they test.
    """
    import torch

    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, torch.nn.modules.batchnorm._BatchNorm):
                setattr(module, name, torch.nn.Identity())
    return model
