"""DataLoader workers' random draws depend on (seed, epoch, sample), not on the workers (issue 9, defect 4)."""

from __future__ import annotations

import random

import numpy as np
import torch
from conftest import interrupted_then_resumed, tiny_config
from torch.utils.data import DataLoader, Dataset

from trainables.sampling import Drawn, EpochSampler
from trainables.worker_seeds import EpochSeeded, loader_generator, sample_seed


class Augmenting(Dataset):
    """Each sample draws from all three RNGs, as a random crop/flip/frame pick would."""

    def __len__(self) -> int:
        return 12

    def __getitem__(self, i: int) -> dict:
        return {"index": i, "rand": torch.tensor([torch.rand(()).item(), np.random.rand(), random.random()])}


def _draws(num_workers: int, epochs: range, seed: int = 3) -> dict[tuple[int, int], torch.Tensor]:
    """(epoch, index) -> draws, from one persistent loader that lives over ``epochs``."""
    sampler = EpochSampler(12, seed=seed)
    loader = DataLoader(
        Drawn(EpochSeeded(Augmenting(), seed, sampler.shared_epoch)),  # as the loop builds it
        batch_size=4,
        sampler=sampler,
        num_workers=num_workers,
        persistent_workers=True,
        generator=loader_generator(seed),
    )
    out = {}
    for epoch in epochs:
        sampler.set_epoch(epoch)
        for batch in loader:
            out.update({(epoch, int(i)): d for i, d in zip(batch["index"], batch["rand"], strict=True)})
    return out


def test_draws_depend_on_neither_worker_lifetime_nor_worker_count():
    straight = _draws(2, range(3))
    resumed = {**_draws(2, range(1)), **_draws(2, range(1, 3))}  # workers restarted at epoch 1
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    one = _draws(1, range(3))
    assert all(torch.equal(straight[k], one[k]) for k in straight)
    assert not torch.equal(straight[(0, 5)], straight[(1, 5)])  # a new epoch draws anew
    assert not torch.equal(straight[(0, 5)], straight[(0, 6)])


def test_iterating_a_loader_leaves_the_global_rng_alone():
    torch.manual_seed(0)
    before = torch.get_rng_state()
    _draws(2, range(2))
    assert torch.equal(before, torch.get_rng_state())


def test_sample_seed_is_stable_and_mixed():
    assert sample_seed(0, 1, 2) == sample_seed(0, 1, 2)
    assert len({sample_seed(s, e, i) for s in range(3) for e in range(3) for i in range(3)}) == 27
    assert 0 <= sample_seed(2**32 - 1, 10**6, 10**7) < 2**32


def test_resume_with_two_workers_equals_the_uninterrupted_run(tmp_path):
    # the defect: with persistent workers the resumed ogm_ge run (noise from the global RNG) ended differently
    cfg = tiny_config("ogm_ge", epochs=3, loader={"batch_size": 16, "num_workers": 2})
    straight, resumed = interrupted_then_resumed(cfg, tmp_path, stop_after=1)
    assert resumed == straight
