"""Greedy's mechanism: conditional learning speeds from hand norms, the re-balancing schedule (Q steps
for the faster-by-bypass modality), a re-balancing step cuts the other modalities out of that branch
and leaves its excitation without gradient, and the mean-feature scheme for absent modalities."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from conftest import tiny_config

from trainables.errors import ConfigError
from trainables.loop import run_trial
from trainables.methods.base import MethodContext, StepState
from trainables.methods.greedy import Greedy, GreedyParams, learning_speeds, next_state
from trainables.models.classifier import ModelSpec
from trainables.reporting import JsonlReporter

SPEC = ModelSpec({"a": (6,), "b": (4,)}, {"a": "mlp", "b": "mlp"}, 8, "concat", 3)


def _method(**params) -> Greedy:
    return Greedy(GreedyParams(**params), MethodContext(["a", "b"], 3, 4, torch.device("cpu")))


def _batch(seed: int = 0, n: int = 12) -> dict:
    g = torch.Generator().manual_seed(seed)
    x = {"a": torch.randn(n, 6, generator=g), "b": torch.randn(n, 4, generator=g)}
    return {"inputs": x, "label": torch.arange(n) % 3, "index": torch.arange(n)}


def _state(curation: bool, caring: int = 0, count: int = 0):
    return torch.tensor(curation), torch.tensor(caring), torch.tensor(count)


def test_learning_speed_is_log10_of_bypass_over_branch() -> None:
    v = learning_speeds(torch.tensor([2.0, 1.0]), torch.tensor([0.02, 10.0]))
    assert v.tolist() == pytest.approx([2.0, -1.0])


def test_schedule_starts_q_rebalancing_steps_for_the_larger_speed() -> None:
    speeds = torch.tensor([0.3, -0.2, 0.1])
    cur, car, cnt = next_state(*_state(False), speeds, alpha=0.6, window=3)  # gap 0.5 <= alpha: stay regular
    assert not cur
    cur, car, cnt = next_state(*_state(False), speeds, alpha=0.4, window=3)
    assert cur and car == 0 and cnt == 0
    steps = []
    for _ in range(4):  # the gap no longer matters while re-balancing
        cur, car, cnt = next_state(cur, car, cnt, torch.tensor([0.0, 9.0, 0.0]), alpha=0.4, window=3)
        steps.append(bool(cur))
    assert steps == [True, True, False, True]  # 3 re-balancing steps, then a regular one restarts (argmax 1)
    assert car == 1


def test_rebalancing_forward_cuts_the_other_modality_out_of_the_branch() -> None:
    torch.manual_seed(0)
    model = _method().build_model(SPEC)
    model(_batch(1)["inputs"])  # one training forward: the running mean excitation is set
    x = _batch(2)["inputs"]
    other = {"a": x["a"], "b": x["b"] + 3.0 * torch.randn_like(x["b"])}  # not a shift: the mlp normalises it
    freeze = torch.tensor([True, False])  # re-balance a
    out, moved = copy.deepcopy(model)(x, freeze), copy.deepcopy(model)(other, freeze)  # same running means
    torch.testing.assert_close(out.extras["branch"][0], moved.extras["branch"][0])  # branch a ignores b
    assert not torch.allclose(out.extras["branch"][1], moved.extras["branch"][1])
    regular = copy.deepcopy(model)(x), copy.deepcopy(model)(other)
    assert not torch.allclose(regular[0].extras["branch"][0], regular[1].extras["branch"][0])
    # the frozen excitation gets no gradient; the other one and branch a's encoder do
    model.zero_grad()
    model(x, freeze).extras["branch"].sum().backward()
    assert model.mmtm.excite["a"].weight.grad.abs().sum() == 0
    assert model.mmtm.excite["b"].weight.grad.abs().sum() > 0
    assert model.encoders["a"].net[2].weight.grad.abs().sum() > 0


def test_speeds_accumulate_on_regular_steps_only_and_trigger_rebalancing() -> None:
    torch.manual_seed(0)
    method = _method(alpha=0.0, window=2, start_epoch=1)
    model = method.build_model(SPEC)
    opt = {"main": torch.optim.SGD(model.parameters(), lr=0.0)}  # lr 0: weights fixed, norms by hand
    batch = _batch(3)
    method.training_step(model, batch, opt, StepState(0, 0, 1, 0))  # before start_epoch: accumulate only
    th_a = [*model.encoders["a"].parameters(), *model.heads["a"].parameters()]
    ps_a = [*model.mmtm.excite["a"].parameters(), *model.mmtm.squeeze.parameters()]
    hand = sum(p.grad.pow(2).sum() for p in th_a) / sum(p.pow(2).sum() for p in th_a)
    assert method.state["main"][0].item() == pytest.approx(hand.item(), rel=1e-5)
    hand = sum(p.grad.pow(2).sum() for p in ps_a) / sum(p.pow(2).sum() for p in ps_a)
    assert method.state["bypass"][0].item() == pytest.approx(hand.item(), rel=1e-5)
    assert not method.state["curation"]
    stats = method.training_step(model, batch, opt, StepState(1, 0, 1, 1))  # regular step, gap > 0 = alpha
    assert stats["greedy/rebalancing"] == 0 and method.state["curation"]
    caring = int(method.state["caring"])
    speeds = learning_speeds(method.state["bypass"], method.state["main"])
    assert caring == int(speeds.argmax())
    frozen = method.state["main"].clone()
    for _ in range(2):  # two re-balancing steps (window 2): the caring branch is re-balanced, sums paused
        stats = method.training_step(model, batch, opt, StepState(1, 0, 1, 2))
        assert stats[f"greedy/rebalanced/{'ab'[caring]}"] == 1 and stats[f"greedy/rebalanced/{'ab'[1 - caring]}"] == 0
        torch.testing.assert_close(method.state["main"], frozen)
    assert not method.state["curation"]


def test_absent_modality_is_its_mean_feature_and_its_branch_leaves() -> None:
    torch.manual_seed(0)
    method = _method()
    model = method.build_model(SPEC)
    model(_batch(4)["inputs"])
    model.end_epoch(lambda t: t)
    model.eval()
    x = _batch(5)["inputs"]
    only_a = method.predict(model, x, present=["a"]).logits
    torch.testing.assert_close(only_a, method.predict(model, {"a": x["a"], "b": x["b"] * 0 - 7}, present=["a"]).logits)
    torch.testing.assert_close(only_a, method.predict(model, x).modality_logits["a"])
    mean_b = model.feat_mean_1.expand(12, -1)
    feats = {"a": model.encoders["a"](x["a"]), "b": mean_b}
    hand = model.heads["a"](feats["a"] * model.mmtm(feats)["a"])
    torch.testing.assert_close(only_a, hand)


def test_rebalancing_in_a_trial_only_from_start_epoch(tmp_path) -> None:
    cfg = tiny_config("greedy", epochs=2, params={"alpha": 0.0, "start_epoch": 1}, eval={"missing": False})
    run_trial(cfg, JsonlReporter(tmp_path))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["train/greedy/rebalancing"] == 0.0
    assert 0.0 < rows[1]["train/greedy/rebalancing"] < 1.0  # Q = 5 re-balancing steps per regular one at most
    assert all(math.isfinite(rows[1][f"train/greedy/speed/{m}"]) for m in ("pix", "fou"))


def test_random_schedule_and_bad_config_are_one_line() -> None:
    torch.manual_seed(0)
    method = _method(schedule="random", start_epoch=0)
    model = method.build_model(SPEC)
    opt = {"main": torch.optim.SGD(model.parameters(), lr=0.0)}
    steps = [method.training_step(model, _batch(i), opt, StepState(0, i, 1, i)) for i in range(12)]
    seen = {bool(s["greedy/rebalancing"]) for s in steps}
    assert seen == {True, False}
    with pytest.raises(ConfigError, match="model.fusion"):
        _method().build_model(ModelSpec({"a": (6,), "b": (4,)}, {"a": "mlp", "b": "mlp"}, 8, "sum", 3))
    with pytest.raises(ConfigError, match="2 modalities"):
        Greedy(GreedyParams(), MethodContext(["a"], 3, 4, torch.device("cpu")))
