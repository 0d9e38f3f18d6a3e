"""UMT's mechanism: the stage split, stage 1 trains the teachers (and, by default, the student on the fused
CE only), stage 2 freezes the teachers and adds the feature distillation to the student's gradient
(by hand), and a trial switches stage at the configured epoch."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import tiny_config

from trainables.errors import ConfigError
from trainables.loop import run_trial
from trainables.methods.base import MethodContext, StepState
from trainables.methods.umt import UMT, UMTParams, distillation, teacher_schedule
from trainables.models.classifier import ModelSpec
from trainables.reporting import JsonlReporter

SPEC = ModelSpec({"a": (6,), "b": (4,)}, {"a": "mlp", "b": "mlp"}, 8, "concat", 3)
F = torch.nn.functional


def _setup(**params):
    torch.manual_seed(0)
    method = UMT(UMTParams(**params), MethodContext(["a", "b"], 3, 4, torch.device("cpu")))
    model = method.build_model(SPEC)
    g = torch.Generator().manual_seed(1)
    x = {"a": torch.randn(16, 6, generator=g), "b": torch.randn(16, 4, generator=g)}
    opts = {"main": torch.optim.SGD([*model.encoders.parameters(), *model.head.parameters()], lr=0.0)}
    opts["teacher"] = torch.optim.SGD([*model.teachers.parameters(), *model.teacher_heads.parameters()], lr=0.0)
    return method, model, {"inputs": x, "label": torch.arange(16) % 3, "index": torch.arange(16)}, opts


def test_stage_split() -> None:
    assert teacher_schedule(None, 12) == 6 and teacher_schedule(None, 2) == 1 and teacher_schedule(3, 12) == 3
    assert teacher_schedule(None, 1) == 1  # a one-epoch trial: no room for stage 2
    with pytest.raises(ConfigError, match="teacher_epochs"):
        teacher_schedule(4, 4)


def test_distillation_is_the_mse_to_detached_teacher_features() -> None:
    s = {"a": torch.tensor([[1.0, 2.0]], requires_grad=True)}
    t = {"a": torch.tensor([[0.0, 4.0]], requires_grad=True)}
    d = distillation(s, t)
    assert d["a"].item() == pytest.approx((1 + 4) / 2)
    d["a"].backward()
    assert t["a"].grad is None and s["a"].grad is not None


def _grads(module):
    return {n: (p.grad.clone() if p.grad is not None else None) for n, p in module.named_parameters()}


@pytest.mark.parametrize("student_stage1", [True, False])
def test_stage_one_trains_the_teachers_on_their_own_ce(student_stage1) -> None:
    method, model, batch, opts = _setup(student_stage1=student_stage1)
    ref = copy.deepcopy(model)
    y, x = batch["label"], batch["inputs"]
    sum(F.cross_entropy(ref.teacher_heads[m](g), y) for m, g in ref.teach(x).items()).backward()
    F.cross_entropy(ref(x).logits, y).backward()
    stats = method.training_step(model, batch, opts, StepState(0, 0, 1, 0))
    assert stats["umt/stage"] == 1.0
    for n, p in model.named_parameters():
        r = dict(ref.named_parameters())[n].grad
        if n.startswith("teacher"):
            torch.testing.assert_close(p.grad, r)
        elif student_stage1:
            torch.testing.assert_close(p.grad, r)  # the fused CE alone: no distillation yet
        else:
            assert p.grad is None


def test_stage_two_freezes_teachers_and_adds_distillation_to_the_student() -> None:
    method, model, batch, opts = _setup(scale=3.0, teacher_epochs=1)
    ref = copy.deepcopy(model)
    y, x = batch["label"], batch["inputs"]
    ref.teachers.eval()
    with torch.no_grad():
        teacher = ref.teach(x)
    out = ref(x)
    loss = F.cross_entropy(out.logits, y) + 3.0 * sum(((out.features[m] - teacher[m]) ** 2).mean() for m in "ab")
    loss.backward()
    stats = method.training_step(model, batch, opts, StepState(1, 0, 1, 1))
    assert stats["umt/stage"] == 2.0 and stats["umt/distill/a"] > 0
    assert not model.teachers.training
    for n, p in model.named_parameters():
        if n.startswith("teacher"):
            assert p.grad is None
        else:
            torch.testing.assert_close(p.grad, dict(ref.named_parameters())[n].grad)


def test_a_trial_switches_stage_at_teacher_epochs(tmp_path) -> None:
    cfg = tiny_config("umt", epochs=3, params={"teacher_epochs": 2}, eval={"missing": False})
    run_trial(cfg, JsonlReporter(tmp_path))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["train/umt/stage"] for r in rows] == [1.0, 1.0, 2.0]
    assert "train/umt/distill/pix" in rows[2] and "train/umt/teacher_acc/fou" in rows[0]
