"""G-Blending's mechanism: the weight estimate w ~ max(G, 0) / O^2 by hand, the held-out part is seeded,
disjoint and never trained on, the step's loss is the weighted sum of the head losses (gradient by hand),
and in a trial the weights leave uniform at the first super-epoch boundary after the initial measurement."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import tiny_config

from trainables.loop import run_trial
from trainables.methods.base import MethodContext, StepState
from trainables.methods.gblending import GBlending, GBlendingParams, blend_weights
from trainables.models.classifier import ModelSpec
from trainables.reporting import JsonlReporter
from trainables.sampling import holdout_split

SPEC = ModelSpec({"a": (6,), "b": (4,)}, {"a": "mlp", "b": "mlp"}, 8, "concat", 3)
F = torch.nn.functional


def test_weights_by_hand() -> None:
    prev = torch.tensor([[1.0, 1.0, 1.0], [1.2, 1.4, 1.1]])  # rows: train part, held-out; columns: heads
    now = torch.tensor([[0.5, 0.5, 0.9], [0.9, 1.0, 1.2]])
    # G = [0.3, 0.4, -0.1]; O = [(0.4 - 0.2), (0.5 - 0.4), (0.3 - 0.1)] = [0.2, 0.1, 0.2]
    w = blend_weights(prev, now, torch.full((3,), 1 / 3))
    torch.testing.assert_close(w, torch.tensor([0.3 / 0.04, 0.4 / 0.01, 0.0]) / (0.3 / 0.04 + 0.4 / 0.01))
    old = torch.tensor([0.2, 0.3, 0.5])
    torch.testing.assert_close(blend_weights(now, prev, old), torch.tensor([0.0, 0.0, 1.0]))  # only head 2 gained
    nobody = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    torch.testing.assert_close(blend_weights(nobody, nobody + 0.5, old), old)  # no head gained: unchanged


def test_holdout_is_seeded_disjoint_and_left_out_of_training() -> None:
    train, held = holdout_split(100, 0.1, seed=3)
    assert len(held) == 10 and not set(train) & set(held) and sorted(train + held) == list(range(100))
    assert holdout_split(100, 0.1, seed=3) == (train, held) != holdout_split(100, 0.1, seed=4)
    method = GBlending(GBlendingParams(), MethodContext(["a", "b"], 3, 4, torch.device("cpu"), seed=3))
    assert method.train_indices(0, 100) == train


def test_step_minimises_the_weighted_sum_of_head_losses() -> None:
    torch.manual_seed(0)
    method = GBlending(GBlendingParams(), MethodContext(["a", "b"], 3, 4, torch.device("cpu")))
    model = method.build_model(SPEC)
    method.weights = torch.tensor([0.5, 0.1, 0.4], dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    x = {"a": torch.randn(16, 6, generator=g), "b": torch.randn(16, 4, generator=g)}
    y = torch.arange(16) % 3
    ref = copy.deepcopy(model)
    out = ref(x)
    (
        0.5 * F.cross_entropy(out.logits, y)
        + 0.1 * F.cross_entropy(out.modality_logits["a"], y)
        + 0.4 * F.cross_entropy(out.modality_logits["b"], y)
    ).backward()
    opt = {"main": torch.optim.SGD(model.parameters(), lr=0.0)}
    stats = method.training_step(
        model, {"inputs": x, "label": y, "index": torch.arange(16)}, opt, StepState(0, 0, 1, 0)
    )
    assert stats["gblending/weight/b"].item() == pytest.approx(0.4)
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad)


def test_a_trial_re_estimates_the_weights_each_super_epoch(tmp_path) -> None:
    cfg = tiny_config("gblending", epochs=3, params={"super_epoch": 2}, eval={"missing": False})
    run_trial(cfg, JsonlReporter(tmp_path))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    heads = ("fused", "pix", "fou")
    assert [rows[0][f"train/gblending/weight/{h}"] for h in heads] == pytest.approx([1 / 3] * 3)
    assert [rows[2][f"train/gblending/weight/{h}"] for h in heads] != pytest.approx([1 / 3] * 3)
    assert sum(rows[2][f"train/gblending/weight/{h}"] for h in heads) == pytest.approx(1)
    assert "train/gblending/held_loss/fused" in rows[0] and "train/gblending/held_loss/fused" in rows[2]
