"""The common evaluation protocol, run once on the best-validation state after training.

Each method keeps its native numbers (``test/acc/<m>`` from its own heads, ``test/missing/...``
through its own ``missing_scheme``); these are computed identically for every method:

- ``test/probe/acc/<m>``: a linear probe on modality ``m``'s frozen encoder features, fitted on the
  train split by the fixed recipe of :mod:`trainables.probe`, evaluated on the test split;
- ``test/shapley/<m>``: the exact Shapley value of ``m`` on test accuracy, where a coalition ``S``
  is evaluated by the ``zero-input`` scheme for every method: the inputs of the modalities outside
  ``S`` are zeroed and the method's full test-time prediction (``predict`` with every modality
  declared present, so no method-specific head dropping or feature imputation) is scored. A zero
  input is the same for every sample, so the absent modality's encoder contributes a constant:
  no information. ``v(empty)`` is the accuracy with every input zeroed (a constant prediction).

Under DDP every rank sees its shard; features and counts are scattered into full-size tensors by
sample index and summed over ranks, so every rank fits the same probe on the whole train split.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from trainables.metrics import modality_subsets
from trainables.models.classifier import mask_inputs
from trainables.probe import probe_accuracy
from trainables.shapley import shapley
from trainables.worker_seeds import EpochSeeded, loader_generator

SHAPLEY_SCHEME = "zero-input"
AllReduce = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def gather_features(
    model: Any, loader: DataLoader, size: int, to_device: Callable, all_reduce: AllReduce
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Per-modality encoder features ``[size, D]`` and labels of a whole split, rows by sample index."""
    feats: dict[str, torch.Tensor] = {}
    labels = torch.zeros(size, dtype=torch.float64)
    count = torch.zeros(size, dtype=torch.float64)
    for batch in loader:
        idx = torch.as_tensor(batch["index"]).long()
        for m, f in model.encode(to_device(batch)["inputs"]).items():
            f = f.detach().double().cpu().flatten(1)
            feats.setdefault(m, torch.zeros(size, f.shape[1], dtype=torch.float64)).index_add_(0, idx, f)
        labels.index_add_(0, idx, batch["label"].double().cpu())
        count.index_add_(0, idx, torch.ones(len(idx), dtype=torch.float64))
    for t in (*feats.values(), labels, count):
        all_reduce(t)
    seen = count > 0
    scale = count[seen].unsqueeze(1)
    return {m: f[seen] / scale for m, f in sorted(feats.items())}, (labels[seen] / count[seen]).round().long()


@torch.no_grad()
def coalition_accuracies(
    method: Any, model: Any, loader: DataLoader, modalities: list[str], to_device: Callable, all_reduce: AllReduce
) -> dict[frozenset[str], float]:
    """Test accuracy of every coalition of modalities (the empty one too) under the zero-input scheme."""
    subsets = [(), *modality_subsets(modalities)]
    correct = torch.zeros(len(subsets), dtype=torch.float64)
    total = torch.zeros((), dtype=torch.float64)
    for batch in loader:
        batch = to_device(batch)
        y = batch["label"]
        for i, s in enumerate(subsets):
            logits = method.predict(model, mask_inputs(batch["inputs"], s)).logits
            correct[i] += logits.argmax(1).eq(y).sum().double().cpu()
        total += y.numel()
    all_reduce(correct)
    all_reduce(total)
    return {frozenset(s): (correct[i] / total.clamp_min(1)).item() for i, s in enumerate(subsets)}


def _shard(dataset: Dataset, rank: int, world_size: int) -> Dataset:
    return dataset if world_size == 1 else Subset(dataset, list(range(rank, len(dataset), world_size)))


def common_protocol(trial: Any) -> dict[str, float]:
    """``test/probe/acc/<m>``, ``test/shapley/<m>`` of the trial's current (best) state, and ``time/protocol_s``."""
    tic = time.perf_counter()
    cfg, rt, data = trial.cfg.train, trial.runtime, trial.data
    train = EpochSeeded(data.train, cfg.seed, torch.tensor(cfg.epochs))  # after the last epoch: fixed draws
    loader = DataLoader(
        _shard(train, rt.rank, rt.world_size),
        batch_size=cfg.loader.eval_batch_size,
        shuffle=False,
        num_workers=cfg.loader.num_workers,
        generator=loader_generator(cfg.seed),
    )
    was_training = trial.model.training
    trial.model.eval()
    with torch.random.fork_rng(devices=[]):  # a dataset's random draws must not shift the trial's RNG
        tr_x, tr_y = gather_features(trial.model, loader, len(data.train), trial.to_device, rt.all_reduce)
        te_x, te_y = gather_features(trial.model, trial.test_loader, len(data.test), trial.to_device, rt.all_reduce)
        acc = coalition_accuracies(
            trial.method, trial.model, trial.test_loader, trial.modalities, trial.to_device, rt.all_reduce
        )
    trial.model.train(was_training)
    out = {f"test/probe/acc/{m}": probe_accuracy(tr_x[m], tr_y, te_x[m], te_y, data.num_classes) for m in tr_x}
    out.update({f"test/shapley/{m}": v for m, v in shapley(trial.modalities, acc.__getitem__).items()})
    out["time/protocol_s"] = time.perf_counter() - tic
    return out
