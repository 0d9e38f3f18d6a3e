"""Evaluation of a method on one split: fused, per-modality and missing-modality metrics."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader

from trainables.methods.base import BalancingMethod, Batch
from trainables.metrics import EvalAccumulator, modality_subsets


@torch.no_grad()
def evaluate(
    method: BalancingMethod,
    model: nn.Module,
    loader: DataLoader,
    split: str,
    modalities: list[str],
    num_classes: int,
    to_device: Callable[[Batch], Batch],
    all_reduce: Callable[[torch.Tensor], torch.Tensor],
    missing: bool = False,
) -> dict[str, float]:
    """Metrics of ``split`` under the schema names; statistics are summed over DDP ranks.

    With ``missing``, every proper non-empty subset of modalities is also evaluated (absent ones
    removed by ``method.predict``'s scheme) as ``{split}/missing/<a+b>/acc``.
    """
    subsets = [s for s in modality_subsets(modalities) if len(s) < len(modalities)] if missing else []
    acc = EvalAccumulator(modalities, num_classes, subsets)
    was_training = model.training
    model.eval()
    for batch in loader:
        batch = to_device(batch)
        out = method.predict(model, batch["inputs"])
        acc.update(out.logits, out.modality_logits, batch["label"])
        for s in subsets:
            acc.update_missing(s, method.predict(model, batch["inputs"], present=s).logits, batch["label"])
    model.train(was_training)
    acc.reduce(all_reduce)
    return acc.compute(split)
