"""Random draws inside DataLoader workers that depend on neither the workers' lifetime nor resume.

A training dataset may draw random numbers per sample (a random frame pick, crop or flip). Inside a
worker process those draws come from the worker's own RNGs, which torch seeds once, when the worker
starts. With persistent workers that is once per run, so an interrupted-and-resumed run (whose
workers start at the resumed epoch) drew different numbers from the uninterrupted one; and the seed
itself was drawn from the main process's global RNG, which shifted every later draw of the training
(dropout, OGM-GE's noise) by the resume point.

Here both are removed:

- inside a worker, :class:`EpochSeeded` seeds ``random``, ``numpy`` and ``torch`` before each sample
  from ``(trial seed, epoch, sample index)`` (:func:`sample_seed`), so a sample's draws are the same
  whichever worker loads it, whenever that worker started, and for any number of workers >= 1;
- the loaders draw their base seeds from a private generator (``loader_generator``), never from
  the global RNG that the checkpoint saves and restores.

The epoch reaches the workers through a shared-memory tensor that :class:`EpochSampler` sets
(workers are forked once and live across epochs). With ``num_workers=0`` the dataset runs in the
main process and keeps drawing from the global RNG (which the checkpoint saves): reseeding there
would cost a save/restore of three RNG states per sample. So results with 0 workers equal each
other, and results with any number >= 1 of workers equal each other, but the two differ when the
dataset draws random numbers (the embedded datasets draw none).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A well-mixed 32-bit seed of ``(trial seed, epoch, sample index)`` (numpy's SeedSequence)."""
    return int(np.random.SeedSequence((seed, epoch, index)).generate_state(1)[0])


def loader_generator(seed: int) -> torch.Generator:
    """The generator a DataLoader draws its workers' base seeds from (not the global RNG)."""
    return torch.Generator().manual_seed(seed)


class EpochSeeded(Dataset):
    """Wraps a training dataset: in a worker, each sample's draws are seeded from (seed, epoch, index).

    Args:
        dataset: the map-style training dataset.
        seed: the trial seed.
        epoch: a shared-memory 0-d int64 tensor holding the current epoch (``EpochSampler.shared_epoch``).
    """

    def __init__(self, dataset: Dataset, seed: int, epoch: torch.Tensor) -> None:
        self.dataset = dataset
        self.seed = seed
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        if get_worker_info() is not None:
            s = sample_seed(self.seed, int(self.epoch), int(index))
            random.seed(s)
            np.random.seed(s)
            torch.manual_seed(s)
        return self.dataset[index]
