"""Sample-level valuation: Shapley contributions as the official code computes them, the official copy
buckets, a copy trains its modality alone, a trial re-samples after the warm-up and resumes exactly."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
from conftest import interrupted_then_resumed, tiny_config

from trainables.loop import run_trial
from trainables.methods.base import MethodContext, StepState
from trainables.methods.valuation import (
    ALL,
    Valuation,
    ValuationParams,
    copies_for,
    keep_masks,
    resample,
    shapley_values,
)
from trainables.models.classifier import ModelSpec
from trainables.reporting import JsonlReporter
from trainables.shapley import subsets


def test_two_modality_shapley_is_the_official_contribution() -> None:
    cases = list(itertools.product([False, True], repeat=3))  # (a right, b right, fused right)
    a, b, ab = (torch.tensor([c[k] for c in cases]) for k in range(3))
    phi = shapley_values({frozenset({0}): a, frozenset({1}): b, frozenset({0, 1}): ab}, 2)
    for row, (ra, rb, rab) in zip(phi.tolist(), cases, strict=True):
        va, vb, vall = float(ra), float(rb), 2.0 * rab  # official: 1 per right unimodal, 2 for fused
        assert row == pytest.approx([(va + vall - vb) / 2, (vb + vall - va) / 2])


def test_shapley_is_efficient_for_three_modalities() -> None:
    g = torch.Generator().manual_seed(0)
    correct = {s: torch.rand(50, generator=g) > 0.5 for s in subsets(range(3), empty=False)}
    phi = shapley_values(correct, 3)
    torch.testing.assert_close(phi.sum(1), 3 * correct[frozenset({0, 1, 2})].float())  # sum = v(all) - v(empty)


def test_copy_buckets_are_the_official_ones() -> None:
    phi = torch.tensor([-0.5, 0.0, 0.5, 1.0, 1.5, 0.4, -0.1, 0.99])
    assert copies_for(phi).tolist() == [3, 2, 1, 0, 0, 2, 3, 1]


def test_resampled_list_holds_every_sample_once_plus_single_modality_copies() -> None:
    indices, tags = resample(torch.tensor([[1.5, -0.5], [0.5, 0.0]]))
    assert indices[:2] == [0, 1] and tags[:2] == [ALL, ALL]
    extra = sorted(zip(indices[2:], tags[2:], strict=True))
    assert extra == [(0, 1)] * 3 + [(1, 0)] + [(1, 1)] * 2
    assert keep_masks(torch.tensor([ALL, 0, 1]), 2).tolist() == [[1, 1], [1, 0], [0, 1]]


def test_a_single_modality_copy_trains_only_that_modality() -> None:
    torch.manual_seed(0)
    method = Valuation(ValuationParams(), MethodContext(["a", "b"], 3, 4, torch.device("cpu")))
    model = method.build_model(ModelSpec({"a": (6,), "b": (4,)}, {"a": "mlp", "b": "mlp"}, 8, "concat", 3))
    method.tags = torch.tensor([ALL] * 8 + [0] * 8)  # positions 8.. are copies of modality a alone
    batch = {
        "inputs": {"a": torch.randn(8, 6), "b": torch.randn(8, 4)},
        "label": torch.arange(8) % 3,
        "index": torch.arange(8),
        "draw": torch.arange(8, 16),
    }
    before = {m: [p.clone() for p in model.encoders[m].parameters()] for m in ("a", "b")}
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    method.training_step(model, batch, {"main": opt}, StepState(0, 0, 1, 0))
    moved = {
        m: any(not torch.equal(p, q) for p, q in zip(model.encoders[m].parameters(), before[m], strict=True))
        for m in ("a", "b")
    }
    assert moved == {"a": True, "b": False}
    batch["draw"] = torch.arange(8)  # the same samples drawn with every modality: b learns again
    method.training_step(model, batch, {"main": opt}, StepState(0, 1, 2, 1))
    assert any(not torch.equal(p, q) for p, q in zip(model.encoders["b"].parameters(), before["b"], strict=True))


def test_a_trial_resamples_by_contribution_after_the_warm_up(tmp_path, monkeypatch) -> None:
    seen: dict[int, int] = {}
    step = Valuation.training_step

    def counting_step(self, model, batch, optimizers, state):
        seen[state.epoch] = seen.get(state.epoch, 0) + batch["label"].shape[0]
        return step(self, model, batch, optimizers, state)

    monkeypatch.setattr(Valuation, "training_step", counting_step)
    cfg = tiny_config("valuation", epochs=3, params={"warmup_epochs": 2}, loader={"batch_size": 60})
    run_trial(cfg, JsonlReporter(tmp_path))
    rows = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert seen[0] == seen[1] == 60  # warm-up epochs visit each training digit once
    copies = sum(rows[1][f"train/valuation/copies/{m}"] for m in ("pix", "fou")) * 60
    assert copies > 0 and seen[2] == 60 + round(copies)  # epoch 2 = every digit + the copies valued after epoch 1
    assert "train/valuation/copies/pix" not in rows[0]  # no valuation before the end of the warm-up


def test_resume_after_resampling_is_exact(tmp_path) -> None:
    cfg = tiny_config("valuation", epochs=3, params={"warmup_epochs": 1})
    straight, resumed = interrupted_then_resumed(cfg, tmp_path, stop_after=2)
    assert resumed == straight
