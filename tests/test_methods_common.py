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
from trainables.models.output import MultimodalModel
from trainables.reporting import JsonlReporter
from trainables.runtime import Runtime

ALL = METHODS.names()


@pytest.mark.parametrize("name", ALL)
def test_steps_give_finite_loss_and_train_every_encoder(name):
    trial = build_trial(resolve(tiny_config(name)), Runtime.local("cpu"))
    model = trial.model
    assert isinstance(model, MultimodalModel) and model.modalities == list(model.encoders)
    before = {k: p.detach().clone() for k, p in model.named_parameters()}  # parameters only: not BN statistics
    reached: set[str] = set()  # modalities whose encoder received a non-zero gradient
    for m in model.modalities:
        for p in model.encoders[m].parameters():
            p.register_hook(lambda g, m=m: reached.add(m) if g.abs().sum() > 0 else None)
    model.train()
    losses = []
    for i, batch in enumerate(trial.train_loader):
        state = StepState(0, i, len(trial.train_loader), i)
        out = trial.method.training_step(model, trial.to_device(batch), trial.optimizers, state)
        losses.append(float(out["loss"]))
    assert losses and all(math.isfinite(v) for v in losses)
    moved = {k for k, p in model.named_parameters() if not torch.equal(p.detach(), before[k])}
    for m in model.modalities:  # every modality the model encodes: gradient reached it and it was updated
        assert m in reached, f"no gradient reached the encoder of {m}"
        assert any(k.startswith(f"encoders.{m}.") for k in moved), f"encoder of {m} did not move"


@pytest.mark.parametrize("name", ALL)
def test_checkpoint_resume_mid_run_gives_the_same_final_metrics(tmp_path, name):
    straight, resumed = interrupted_then_resumed(tiny_config(name, epochs=3), tmp_path, stop_after=2)
    assert resumed == straight


@pytest.mark.parametrize("name", ALL)
def test_reports_the_metric_schema(tmp_path, name):
    cfg = tiny_config(name, epochs=1)
    encoded = build_trial(resolve(cfg), Runtime.local("cpu")).model.modalities
    summary = run_trial(cfg, JsonlReporter(tmp_path))
    keys = ["val/acc", "val/f1", "test/acc", "test/missing/pix/acc", "test/missing/fou/acc"]
    keys += [f"{s}/acc/{m}" for s in ("val", "test") for m in encoded]
    if len(encoded) > 1:
        keys += ["val/imbalance/score_ratio", "val/imbalance/acc_gap"]
    for key in keys:
        assert key in summary, key
    for m in set(summary["modalities"]) - set(encoded):  # no per-modality number for a modality never seen
        assert f"val/acc/{m}" not in summary and "val/imbalance/score_ratio" not in summary


DROP_HEAD = [n for n in ALL if METHODS.get(n).missing_scheme == "drop-head"]


@pytest.mark.parametrize("name", DROP_HEAD)
@torch.no_grad()
def test_drop_head_zeroes_the_absent_input_and_fuses_only_the_present_heads(name):
    from trainables.models.classifier import mask_inputs

    trial = build_trial(resolve(tiny_config(name)), Runtime.local("cpu"))
    method, model = trial.method, trial.model
    model.eval()
    inputs = trial.to_device(next(iter(trial.test_loader)))["inputs"]
    kept, gone = model.modalities[0], model.modalities[1]
    out = method.predict(model, inputs, present=[kept])
    masked = model(mask_inputs(inputs, [kept]))  # what the model sees with the absent input zeroed
    assert torch.equal(out.modality_logits[gone], masked.modality_logits[gone])
    assert torch.allclose(out.logits, method.fuse_heads({kept: masked.modality_logits[kept]}, masked))
    everything = method.predict(model, inputs)
    assert not torch.allclose(out.logits, everything.logits)  # the absent head left the fusion
