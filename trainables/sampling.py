"""The training sampler: which training samples an epoch visits, in which order, on which DDP rank.

By default every sample once per epoch, shuffled by ``(seed, epoch)`` and sharded over ranks exactly
as ``torch.utils.data.DistributedSampler`` does (same permutation, same padding), so results do not
depend on which of the two ran. A method may replace the epoch's sample list through
``BalancingMethod.train_indices`` (leave samples out, e.g. G-Blending's held-out part of train, or
repeat them, e.g. re-sampling low-contribution samples); the list is shuffled and sharded the same way.
Each draw carries its position in that list (``batch["draw"]``), so repeated copies can be told apart.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import torch
from torch.utils.data import Dataset, Sampler


class Draw(NamedTuple):
    """One draw of an epoch: the sample (``index`` into the train split) and the draw's ``position`` in
    the epoch's sample list (``BalancingMethod.train_indices``' list; the index itself by default)."""

    index: int
    position: int


class Drawn(Dataset):
    """The train split read by :class:`Draw`: each item is the sample plus ``"draw"``, its position.

    A method that repeats samples with a purpose per copy (e.g. a copy that trains one modality alone)
    tells the copies apart by ``batch["draw"]``; the position is resolved in the sampler (main process),
    so DataLoader workers need no per-epoch state.
    """

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, draw: Draw) -> dict[str, Any]:
        item = dict(self.dataset[draw.index])
        item["draw"] = draw.position
        return item


class EpochSampler(Sampler[Draw]):
    """Seeded per-epoch shuffle of the epoch's sample indices, split into ``world_size`` equal shards.

    Args:
        num_samples: size of the training split.
        world_size: number of DDP ranks (1 outside DDP).
        rank: this process's rank.
        seed: the trial seed; the permutation of epoch ``e`` is drawn with ``seed + e``.
    """

    def __init__(self, num_samples: int, world_size: int = 1, rank: int = 0, seed: int = 0) -> None:
        self.num_samples = num_samples
        self.world_size = world_size
        self.rank = rank
        self.seed = seed
        self.epoch = 0
        self.indices: list[int] | None = None
        # the epoch as DataLoader workers see it (they are forked once): trainables/worker_seeds.py
        self.shared_epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.shared_epoch.fill_(epoch)

    def set_indices(self, indices: Sequence[int] | None) -> None:
        """The samples of the coming epoch (repeats allowed); ``None`` = every sample once."""
        if indices is not None:
            indices = [int(i) for i in indices]
            bad = [i for i in indices if not 0 <= i < self.num_samples]
            if bad or not indices:
                raise ValueError(
                    f"train_indices must be a non-empty list of indices in [0, {self.num_samples}); got {bad[:3]}"
                )
        self.indices = indices

    def _pool(self) -> list[int]:
        return list(range(self.num_samples)) if self.indices is None else self.indices

    def __len__(self) -> int:
        return math.ceil(len(self._pool()) / self.world_size)

    def __iter__(self) -> Iterator[Draw]:
        pool = self._pool()
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = [Draw(pool[i], i) for i in torch.randperm(len(pool), generator=generator).tolist()]
        total = len(self) * self.world_size
        while len(order) < total:  # pad with the first samples so every rank gets as many batches
            order += order[: total - len(order)]
        return iter(order[self.rank : total : self.world_size])


def holdout_split(num_samples: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """``(train, held_out)`` positions in the train split: a seeded random ``fraction`` held out (at least one).

    For methods that estimate something on a held-out part of train (never on val or test) and give
    the rest to ``train_indices``.
    """
    order = torch.randperm(num_samples, generator=torch.Generator().manual_seed(seed)).tolist()
    cut = max(1, round(fraction * num_samples))
    return sorted(order[cut:]), sorted(order[:cut])
