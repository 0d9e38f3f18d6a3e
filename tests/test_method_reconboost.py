"""ReconBoost: the boosting / reconcilement / consolidation math, the stage schedule, and that a
boosting step moves only the active learner while rectification moves every learner."""

import pytest
import torch
from conftest import tiny_config
from torch.nn import functional as F

from trainables.config import resolve
from trainables.errors import ConfigError
from trainables.loop import build_trial
from trainables.methods.base import StepState
from trainables.methods.reconboost import (
    ReconBoostParams,
    boosting_terms,
    consolidation,
    phase_lengths,
    stage_at,
)
from trainables.runtime import Runtime


def test_boosting_terms_on_hand_made_logits():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    others = torch.tensor([[0.0, 0.0, 0.0], [0.0, 3.0, 0.0]])
    y = torch.tensor([0, 1])
    ce, rec = boosting_terms(logits, others, y, w1=5.0, w2=1.0)
    log_p_y = F.log_softmax(logits, 1)[[0, 1], y]
    q_y = F.softmax(others, 1)[[0, 1], y]  # 1/3 and e^3 / (e^3 + 2)
    assert torch.allclose(ce, -5.0 * log_p_y.mean())
    assert torch.allclose(rec, (q_y * log_p_y).mean())
    ce_c, rec_c = boosting_terms(logits, others, y, 5.0, 1.0, class_mean=True)  # the official 1/C
    assert torch.allclose(ce_c, ce / 3) and torch.allclose(rec_c, rec / 3)


def test_boosting_gradient_is_a_ce_gradient_weighted_by_what_the_others_miss():
    logits = torch.randn(4, 5, requires_grad=True)
    others, y = torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
    sum(boosting_terms(logits, others, y, w1=5.0, w2=1.0)).backward()
    q_y = F.softmax(others, 1)[torch.arange(4), y]
    expected = (5.0 - q_y)[:, None] * (F.softmax(logits.detach(), 1) - F.one_hot(y, 5)) / 4
    assert torch.allclose(logits.grad, expected, atol=1e-6)


def test_reconcile_term_has_a_gradient_and_the_ensemble_side_none():
    logits = torch.randn(3, 4, requires_grad=True)
    others = torch.randn(3, 4, requires_grad=True)
    _, rec = boosting_terms(logits, others, torch.tensor([0, 1, 2]), 5.0, 1.0)
    rec.backward()
    assert logits.grad.abs().sum() > 0 and others.grad is None


def test_consolidation_value_and_gradient_reach_the_current_learner_only():
    logits = torch.tensor([[1.0, 0.0], [0.0, 0.0]], requires_grad=True)
    previous = torch.tensor([[0.0, 0.0], [0.0, 2.0]], requires_grad=True)
    value = consolidation(logits, previous)
    diff = F.softmax(logits.detach(), 1) - F.softmax(previous.detach(), 1)
    assert torch.allclose(value, diff.pow(2).sum(1).mean())
    assert torch.allclose(consolidation(logits, previous, class_mean=True), value / 2)
    value.backward()
    # the official ga_loss detaches both sides and has no gradient; this one must have one
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    assert previous.grad is None


def test_schedule_is_a_pure_function_of_the_step():
    assert phase_lengths(ReconBoostParams(), 12) == (6, 6)
    assert phase_lengths(ReconBoostParams(boost_len=4, rectify_len=4), 10) == (40, 40)  # official, in epochs
    assert phase_lengths(ReconBoostParams(unit="step", boost_len=3, rectify_len=0), 99) == (3, 0)
    assert phase_lengths(ReconBoostParams(boost_len=0.01, rectify_len=0), 10) == (1, 0)  # at least one boosting step
    assert [stage_at(g, 2, 1) for g in range(7)] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (2, 0)]
    with pytest.raises(ConfigError, match="boost_len"):
        ReconBoostParams(unit="step", boost_len=1.5)


def _trial(**params):
    cfg = tiny_config("reconboost", params={"unit": "step", "boost_len": 2, "rectify_len": 1, **params})
    return build_trial(resolve(cfg), Runtime.local("cpu"))


def _step(trial, global_step):
    batch = trial.to_device(next(iter(trial.train_loader)))
    state = StepState(0, 0, len(trial.train_loader), global_step)
    return trial.method.training_step(trial.model, batch, trial.optimizers, state)


def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _moved(before, module):
    return {k for k, v in module.state_dict().items() if not torch.equal(v, before[k])}


@pytest.mark.parametrize("global_step, active", [(0, "pix"), (4, "fou")])
def test_boosting_step_moves_only_the_active_encoder_and_the_shared_head(global_step, active):
    trial = _trial()
    model = trial.model
    before = {m: _snapshot(model.encoders[m]) for m in model.modalities}
    head = _snapshot(model.head)
    out = _step(trial, global_step)
    assert out[f"reconboost/boost_share/{active}"] == 1.0 and out["reconboost/rectify_share"] == 0.0
    for m in model.modalities:
        moved = _moved(before[m], model.encoders[m])  # parameters and buffers (BatchNorm statistics)
        assert bool(moved) == (m == active), (m, moved)
    assert _moved(head, model.head)
    assert ("reconboost/consolidate" in out) == (global_step >= 3)  # not in stage 0


def test_consolidation_changes_the_boosting_step():
    """Stage 1 with alpha > 0 takes a different step than with alpha = 0 (the official no-op)."""
    weights = []
    for alpha in (0.0, 5.0):
        trial = _trial(alpha=alpha)
        _step(trial, 3)
        weights.append(torch.cat([p.detach().flatten() for p in trial.model.encoders["fou"].parameters()]))
    assert not torch.allclose(weights[0], weights[1])


def test_rectification_step_moves_every_encoder_and_the_head():
    trial = _trial()
    model = trial.model
    before = {m: _snapshot(model.encoders[m]) for m in model.modalities} | {"head": _snapshot(model.head)}
    out = _step(trial, 2)
    assert out["reconboost/rectify_share"] == 1.0
    for m in model.modalities:
        assert _moved(before[m], model.encoders[m]), m
    assert _moved(before["head"], model.head)


def test_optimizer_state_is_cleared_at_each_phase_start():
    trial = _trial()
    opt = trial.optimizers["main"]
    _step(trial, 0)
    _step(trial, 1)
    assert opt.state  # momentum of the boosting phase
    kept = {id(p) for p in opt.state}
    _step(trial, 2)  # rectification starts: a fresh optimizer, then one step over every parameter
    assert {id(p) for p in trial.model.parameters()} == {id(p) for p in opt.state} != kept


def test_prediction_is_the_sum_of_the_learners_and_absent_learners_drop_out():
    trial = _trial()
    model, method = trial.model, trial.method
    model.eval()
    x = trial.to_device(next(iter(trial.train_loader)))["inputs"]
    out = method.predict(model, x)
    assert torch.allclose(out.logits, out.modality_logits["pix"] + out.modality_logits["fou"])
    only = method.predict(model, x, present={"pix"})
    assert torch.allclose(only.logits, model.head(model.encoders["pix"](x["pix"])))
