"""CML's mechanism: nested per-sample subsets, the two-term confidence ranking by hand (including which side
gets the gradient), the step's gradient is the subset CE plus lam times the ranking (by hand with the
same subsets), and absent modalities' features are zeroed at evaluation."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from conftest import tiny_config

from trainables.loop import run_trial
from trainables.methods.base import MethodContext, StepState
from trainables.methods.cml import CML, CMLParams, nested_keep_masks, ranking_loss
from trainables.models.classifier import ModelSpec
from trainables.reporting import JsonlReporter

SPEC = ModelSpec({"a": (6,), "b": (4,), "c": (5,)}, {"a": "mlp", "b": "mlp", "c": "mlp"}, 8, "concat", 3)
F = torch.nn.functional


def _setup(**params):
    torch.manual_seed(0)
    method = CML(CMLParams(**params), MethodContext(["a", "b", "c"], 3, 2, torch.device("cpu")))
    model = method.build_model(SPEC)
    g = torch.Generator().manual_seed(1)
    x = {m: torch.randn(16, d, generator=g) for m, d in (("a", 6), ("b", 4), ("c", 5))}
    return method, model, {"inputs": x, "label": torch.arange(16) % 3, "index": torch.arange(16)}


def test_subsets_are_nested_and_shed_one_modality_per_sample_each_time() -> None:
    torch.manual_seed(0)
    keep = nested_keep_masks(50, 3, torch.device("cpu"))
    assert keep.shape == (3, 50, 3) and keep[0].eq(1).all()
    assert keep.sum(2).tolist() == [[3.0] * 50, [2.0] * 50, [1.0] * 50]
    assert (keep[1] <= keep[0]).all() and (keep[2] <= keep[1]).all()
    assert len({tuple(r) for r in keep[2].tolist()}) == 3  # orders differ between samples


def _logits(p):  # two classes with probabilities (p, 1 - p)
    return torch.tensor([[math.log(q), math.log(1 - q)] for q in p], requires_grad=True)


def test_ranking_loss_by_hand() -> None:
    y = torch.tensor([0, 0, 0])
    more, fewer = _logits([0.6, 0.3, 0.9]), _logits([0.8, 0.2, 0.7])
    # sample 0: fuller right (0.6), fewer more confident (0.8): 0.2; sample 1: both wrong (confidences 0.7
    # and 0.8 in class 1): 0.1 on the fewer side only; sample 2: fewer less confident: 0
    loss = ranking_loss([more, fewer], y, eps=0.0)
    assert loss.item() == pytest.approx(0.2 + 0.1, abs=1e-6)
    loss.backward()
    assert more.grad[1].abs().sum() == 0 and fewer.grad[1].abs().sum() > 0  # trick 2: the fuller side is detached
    assert more.grad[0].abs().sum() > 0 and fewer.grad[0].abs().sum() > 0  # trick 1: both sides move
    assert more.grad[2].abs().sum() == 0 == fewer.grad[2].abs().sum()
    assert ranking_loss([more, fewer], y, eps=0.25).item() == pytest.approx(0.0)


def test_step_gradient_is_subset_ce_plus_lam_times_ranking() -> None:
    method, model, batch = _setup(lam=5.0)
    ref = copy.deepcopy(model)
    y = batch["label"]
    torch.manual_seed(7)
    keep = nested_keep_masks(16, 3, torch.device("cpu"))
    feats = ref.encode(batch["inputs"])
    logits = [ref.head({m: f * keep[k, :, i : i + 1] for i, (m, f) in enumerate(feats.items())})[0] for k in range(3)]
    rank = ranking_loss(logits, y, 0.0)
    (torch.stack([F.cross_entropy(z, y) for z in logits]).mean() + 5.0 * rank).backward()
    assert rank.item() > 0  # the regulariser is active on this batch
    opt = {"main": torch.optim.SGD(model.parameters(), lr=0.0)}
    torch.manual_seed(7)
    stats = method.training_step(model, batch, opt, StepState(0, 0, 1, 0))
    assert stats["cml/ranking"].item() == pytest.approx(rank.item(), rel=1e-5)
    for (n, p), q in zip(model.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, msg=n)


def test_absent_modality_features_are_zeroed_at_evaluation() -> None:
    method, model, batch = _setup()
    model.eval()
    x = batch["inputs"]
    feats = model.encode(x)
    hand = model.head({m: f if m == "a" else torch.zeros_like(f) for m, f in feats.items()})[0]
    torch.testing.assert_close(method.predict(model, x, present=["a"]).logits, hand)


def test_a_trial_reports_the_ranking(tmp_path) -> None:
    run_trial(tiny_config("cml", epochs=1, eval={"missing": False}), JsonlReporter(tmp_path))
    row = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert row["train/cml/ranking"] >= 0 and 0 <= row["train/cml/violations"] <= 1
