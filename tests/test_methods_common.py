"""Contract tests for every registered method (a new method is tested by registering it).

Each method's *defining mechanism* is tested in its own ``tests/test_method_<name>.py``.
"""

import math

import pytest
import torch
from conftest import interrupted_then_resumed, tiny_config

from trainables.config import resolve
from trainables.loop import build_trial, run_trial
from trainables.methods import METHODS
from trainables.methods.base import StepState
from trainables.reporting import JsonlReporter
from trainables.runtime import Runtime

ALL = METHODS.names()


@pytest.mark.parametrize("name", ALL)
def test_steps_give_finite_loss_and_move_parameters(name):
    trial = build_trial(resolve(tiny_config(name)), Runtime.local("cpu"))
    before = {k: v.detach().clone() for k, v in trial.model.state_dict().items() if v.dtype.is_floating_point}
    trial.model.train()
    losses = []
    for i, batch in enumerate(trial.train_loader):
        out = trial.method.training_step(
            trial.model, trial.to_device(batch), trial.optimizers, StepState(0, i, len(trial.train_loader), i)
        )
        losses.append(out["loss"])
    assert losses and all(math.isfinite(v) for v in losses)
    after = trial.model.state_dict()
    moved = [k for k, v in before.items() if not torch.equal(v, after[k])]
    assert moved, "no parameter changed"
    for m in trial.modalities:  # every modality that the method trains has its encoder updated
        if name != "unimodal" or m == trial.modalities[0]:
            assert any(k.startswith(f"encoders.{m}.") for k in moved), f"encoder of {m} did not move"


@pytest.mark.parametrize("name", ALL)
def test_checkpoint_resume_mid_run_gives_the_same_final_metrics(tmp_path, name):
    straight, resumed = interrupted_then_resumed(tiny_config(name, epochs=3), tmp_path, stop_after=2)
    assert resumed == straight


@pytest.mark.parametrize("name", ALL)
def test_reports_the_metric_schema(tmp_path, name):
    summary = run_trial(tiny_config(name, epochs=1), JsonlReporter(tmp_path))
    per_modality = ["pix"] if name == "unimodal" else ["pix", "fou"]  # unimodal models only its modality
    keys = ["val/acc", "val/f1", "test/acc", "test/missing/pix/acc", "test/missing/fou/acc"]
    keys += [f"{s}/acc/{m}" for s in ("val", "test") for m in per_modality]
    if len(per_modality) > 1:
        keys += ["val/imbalance/score_ratio", "val/imbalance/acc_gap"]
    for key in keys:
        assert key in summary, key
    if name == "unimodal":
        assert "val/acc/fou" not in summary and "val/imbalance/score_ratio" not in summary
