"""Divergence check of the training loop: a non-finite training loss or parameter ends the trial.

Run once per epoch, on numbers the loop already has: the epoch's mean losses (summed on the device
and read once at the end of the epoch) and one ``isfinite`` reduction over the parameters, so a
GPU run waits on the device once more per epoch and never inside the epoch. A NaN in any batch
makes the epoch's sum NaN, so no batch escapes the check. A diverged trial is not resumed or
retried (it would diverge again): it ends with ``status: diverged`` in its summary.
"""

from __future__ import annotations

import math
from typing import Any

import torch


def first_nonfinite(row: dict[str, Any], model: torch.nn.Module) -> tuple[str, float] | None:
    """``(metric, value)`` of the first non-finite training loss of ``row``, else ``("parameters", nan)``
    when a parameter of ``model`` is not finite, else ``None``."""
    for key in sorted(row):
        value = row[key]
        if key.startswith("train/") and "loss" in key and isinstance(value, float) and not math.isfinite(value):
            return key, value
    params = [p.detach() for p in model.parameters()]
    if params and not bool(torch.stack([torch.isfinite(p).all() for p in params]).all()):
        return "parameters", math.nan
    return None
