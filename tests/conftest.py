"""Shared test settings: no telemetry, W&B offline, tiny configs."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TQDM_DISABLE", "1")

TINY_MFEAT = {"train_per_class": 6, "val_per_class": 4, "test_per_class": 4}


def tiny_config(method: str = "joint", epochs: int = 2, **extra) -> dict:
    """A trial that runs in about a second on CPU: 60 training digits, small encoders."""
    cfg = {
        "method": method, "dataset": "mfeat", "epochs": epochs, "seed": 0,
        "data": dict(TINY_MFEAT), "loader": {"batch_size": 16}, "model": {"feature_dim": 16},
    }
    cfg.update(extra)
    return cfg


@pytest.fixture
def tiny():
    return tiny_config
