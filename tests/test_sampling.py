"""The epoch sampler: DistributedSampler's order by default, and the train_indices hook of methods."""

import pytest
import torch
from conftest import tiny_config
from torch.utils.data import DistributedSampler

from trainables.loop import run_trial
from trainables.methods.joint import Joint
from trainables.reporting import JsonlReporter
from trainables.sampling import EpochSampler


@pytest.mark.parametrize(("n", "world"), [(10, 1), (11, 2), (7, 3)])
def test_default_order_is_distributed_samplers_for_every_rank_and_epoch(n, world):
    for rank in range(world):
        ours, theirs = EpochSampler(n, world, rank, seed=5), DistributedSampler(range(n), world, rank, seed=5)
        for epoch in range(3):
            ours.set_epoch(epoch)
            theirs.set_epoch(epoch)
            assert [d.index for d in ours] == list(theirs) and len(ours) == len(theirs)


def test_given_indices_are_each_visited_as_often_as_listed_over_all_ranks():
    wanted = [0, 0, 0, 3, 4, 9]
    seen = []
    for rank in range(2):
        sampler = EpochSampler(10, 2, rank, seed=1)
        sampler.set_epoch(4)
        sampler.set_indices(wanted)
        seen += list(sampler)
    assert sorted(d.index for d in seen) == sorted(wanted)
    assert sorted(d.position for d in seen) == list(range(len(wanted)))  # copies told apart by position
    assert all(wanted[d.position] == d.index for d in seen)
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        sampler.set_indices([10])


def test_a_method_choosing_its_samples_trains_on_those_only(tmp_path, monkeypatch):
    held_out = set(range(0, 60, 3))
    seen: dict[int, list[int]] = {}
    step = Joint.training_step

    def recording_step(self, model, batch, optimizers, state):
        seen.setdefault(state.epoch, []).extend(batch["index"].tolist())
        return step(self, model, batch, optimizers, state)

    def train_indices(self, epoch, num_samples):
        return None if epoch == 0 else [i for i in range(num_samples) if i not in held_out]

    monkeypatch.setattr(Joint, "training_step", recording_step)
    monkeypatch.setattr(Joint, "train_indices", train_indices)
    run_trial(tiny_config("joint", epochs=2, loader={"batch_size": 20}), JsonlReporter(tmp_path))
    assert set(seen[0]) == set(range(60))  # tiny mfeat: 60 training digits, every one in epoch 0
    assert set(seen[1]) == set(range(60)) - held_out and len(seen[1]) == 40
    assert torch.tensor(seen[1]).unique().numel() == len(seen[1])


def test_steps_see_each_copys_position_in_the_methods_list(tmp_path, monkeypatch):
    step = Joint.training_step
    drawn: list[tuple[int, int]] = []
    wanted = [*range(60), 5, 5, 7]  # every digit once, digit 5 twice more, digit 7 once more

    def recording_step(self, model, batch, optimizers, state):
        drawn.extend(zip(batch["index"].tolist(), batch["draw"].tolist(), strict=True))
        return step(self, model, batch, optimizers, state)

    monkeypatch.setattr(Joint, "training_step", recording_step)
    monkeypatch.setattr(Joint, "train_indices", lambda self, epoch, n: wanted)
    run_trial(tiny_config("joint", epochs=1, loader={"batch_size": 21}), JsonlReporter(tmp_path))
    assert sorted(position for _, position in drawn) == list(range(len(wanted)))
    assert all(wanted[position] == index for index, position in drawn)


def test_train_subset_passes_over_exactly_the_given_samples_unshuffled(tmp_path, monkeypatch):
    """The ``EpochContext.train_subset`` hook (G-Blending's and LFM's held-out part of train, Re-learning's
    and Valuation's full passes): the given samples once each, in the given order, as the dataset holds
    them (not the epoch's order or its ``train_indices`` choice)."""
    wanted = [7, 3, 3, 50, 0, 21]
    passes: list[tuple] = []  # (indices, pix, the dataset behind the loader)

    def on_epoch_end(self, model, ctx):
        (batch,) = list(ctx.train_subset(wanted))  # one batch: the eval batch size is larger than 6
        passes.append((batch["index"].tolist(), batch["inputs"]["pix"], ctx.train_loader.dataset.dataset))
        return {}

    monkeypatch.setattr(Joint, "on_epoch_end", on_epoch_end)
    monkeypatch.setattr(Joint, "train_indices", lambda self, epoch, n: list(range(0, n, 2)))
    run_trial(tiny_config("joint", epochs=2), JsonlReporter(tmp_path))
    assert len(passes) == 2
    for indices, pix, dataset in passes:
        assert indices == wanted
        assert torch.equal(pix, torch.stack([dataset[i]["inputs"]["pix"] for i in wanted]))


@pytest.mark.parametrize("world", [2, 3])
def test_train_subset_gives_each_rank_its_share_and_the_ranks_cover_it_once(world, monkeypatch):
    from trainables.config import resolve
    from trainables.loop import build_trial
    from trainables.runtime import Runtime

    wanted = list(range(5, 30))
    trial = build_trial(resolve(tiny_config("joint", epochs=1)), Runtime.local("cpu"))
    shares = []
    for rank in range(world):
        monkeypatch.setattr(trial, "runtime", Runtime(torch.device("cpu"), rank, world))
        shares.append([i for b in trial.train_subset(wanted) for i in b["index"].tolist()])
    assert sorted(i for s in shares for i in s) == wanted
    assert all(s == wanted[r::world] for r, s in enumerate(shares))
