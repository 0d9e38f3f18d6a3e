"""The training sampler: which training samples an epoch visits, in which order, on which DDP rank.

By default every sample once per epoch, shuffled by ``(seed, epoch)`` and sharded over ranks exactly
as ``torch.utils.data.DistributedSampler`` does (same permutation, same padding), so results do not
depend on which of the two ran. A method may replace the epoch's sample list through
``BalancingMethod.train_indices`` (leave samples out, e.g. G-Blending's held-out part of train, or
repeat them, e.g. re-sampling low-contribution samples); the list is shuffled and sharded the same way.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


class EpochSampler(Sampler[int]):
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

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

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

    def __iter__(self) -> Iterator[int]:
        pool = self._pool()
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = [pool[i] for i in torch.randperm(len(pool), generator=generator).tolist()]
        total = len(self) * self.world_size
        while len(order) < total:  # pad with the first samples so every rank gets as many batches
            order += order[: total - len(order)]
        return iter(order[self.rank : total : self.world_size])
