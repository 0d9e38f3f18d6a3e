"""AGM's mechanism: Shapley responses by hand (the official two-modal formula, sums to the fused output),
dominance and coefficients by hand (the dominant modality is slowed, the other sped up, the cap), the
step scales each encoder's joint gradient by its coefficient (late fusion: exactly), the cumulative
running mean, the modulation window, and evaluation's responses and zero-input fusion."""

from __future__ import annotations

import copy
import itertools
import json
import math

import pytest
import torch
from conftest import tiny_config, without_batchnorm

from trainables.loop import run_trial
from trainables.methods.agm import (
    AGM,
    AGMParams,
    coefficients,
    dominance,
    modulated_sum,
    response_scores,
    shapley_responses,
    subset_outputs,
)
from trainables.methods.base import MethodContext, StepState
from trainables.models.classifier import ModelSpec, mask_inputs
from trainables.reporting import JsonlReporter

SPEC = ModelSpec({"a": (6,), "b": (4,)}, {"a": "mlp", "b": "mlp"}, 8, "concat", 3)
F = torch.nn.functional


def _setup(**params):
    torch.manual_seed(0)
    method = AGM(AGMParams(**params), MethodContext(["a", "b"], 3, 2, torch.device("cpu")))
    model = without_batchnorm(method.build_model(SPEC))
    g = torch.Generator().manual_seed(1)
    x = {"a": torch.randn(16, 6, generator=g), "b": torch.randn(16, 4, generator=g)}
    return method, model, {"inputs": x, "label": torch.arange(16) % 3, "index": torch.arange(16)}


def test_two_modal_responses_are_the_official_formula_and_sum_to_the_fused_output() -> None:
    f = {frozenset(k): torch.randn(5, 3) for k in ("", "a", "b", "ab")}
    phi = shapley_responses(f, ["a", "b"])
    ab, a0, v0 = f[frozenset("ab")], f[frozenset("a")], f[frozenset("b")]
    torch.testing.assert_close(phi["a"], 0.5 * (ab - v0 + a0))  # official Modality_Audio
    torch.testing.assert_close(phi["b"], 0.5 * (ab - a0 + v0))
    torch.testing.assert_close(phi["a"] + phi["b"], ab)


def test_three_modal_responses_of_an_additive_model_are_its_parts() -> None:
    g, bias = {m: torch.randn(4, 3) for m in "abc"}, torch.randn(4, 3)
    subsets = [frozenset(s) for k in range(4) for s in itertools.combinations("abc", k)]
    f = {s: bias + sum((g[m] for m in s), torch.zeros(4, 3)) for s in subsets}
    phi = shapley_responses(f, list("abc"))
    for m in "abc":
        torch.testing.assert_close(phi[m], g[m] + bias / 3)


def test_dominance_and_coefficients_by_hand() -> None:
    scores = torch.tensor([1.0, 2.0])  # a has the lower loss: dominant
    torch.testing.assert_close(dominance(scores), torch.tensor([math.e, 1 / math.e]))
    c = coefficients(scores, torch.tensor([1.5, 1.5]), alpha=1.0, cap=10.0)  # target ratio 1
    torch.testing.assert_close(c, torch.tensor([math.exp(1 - math.e), math.exp(1 - 1 / math.e)]))
    assert c[0] < 1 < c[1]
    capped = coefficients(torch.tensor([20.0, 20.0]), torch.tensor([0.0, 30.0]), alpha=0.5, cap=10.0)
    assert capped[0].item() == pytest.approx(math.exp(0.5 * 10))  # eta_a = e^30: clipped at 10
    three = dominance(torch.tensor([1.0, 2.0, 3.0]))
    torch.testing.assert_close(three, torch.exp(1.5 * (2.0 - torch.tensor([1.0, 2.0, 3.0]))))


def test_modulated_sum_keeps_the_value_and_scales_each_gradient() -> None:
    za, zb = torch.randn(3, 2, requires_grad=True), torch.randn(3, 2, requires_grad=True)
    out = modulated_sum({"a": za, "b": zb}, torch.tensor([0.25, 3.0]))
    torch.testing.assert_close(out, za + zb)
    out.sum().backward()
    torch.testing.assert_close(za.grad, torch.full((3, 2), 0.25))
    torch.testing.assert_close(zb.grad, torch.full((3, 2), 3.0))


def test_step_scales_each_encoders_joint_gradient_by_its_coefficient() -> None:
    method, model, batch = _setup(alpha=1.0)
    method.running = torch.tensor([3.0, 1.0], dtype=torch.float64)  # history: b dominant
    ref = copy.deepcopy(model)
    F.cross_entropy(ref(batch["inputs"]).logits, batch["label"]).backward()
    opt = {"main": torch.optim.SGD(model.parameters(), lr=0.0)}
    stats = method.training_step(model, batch, opt, StepState(0, 0, 1, 0))
    coeff = {m: stats[f"agm/coeff/{m}"].item() for m in "ab"}
    assert abs(coeff["a"] - 1) > 0.05 and abs(coeff["b"] - 1) > 0.05 and coeff["a"] != pytest.approx(coeff["b"])
    # concat (late) fusion: the encoder of m gets c_m times the joint gradient, apart from the part through
    # its output on a zero input (the padded passes); the first layer's weight has no such part: exact
    for m in "ab":
        first, ref_first = model.encoders[m].net[2].weight, ref.encoders[m].net[2].weight
        torch.testing.assert_close(first.grad, coeff[m] * ref_first.grad)


def test_running_mean_is_cumulative_and_the_window_switches_modulation_off() -> None:
    method, model, batch = _setup(alpha=1.0, modulation_end=0)
    phi = shapley_responses(subset_outputs(model, batch["inputs"], ["a", "b"]), ["a", "b"])
    s0 = response_scores(phi, batch["label"]).double()
    opt = {"main": torch.optim.SGD(model.parameters(), lr=0.0)}
    method.training_step(model, batch, opt, StepState(0, 0, 2, 0))
    torch.testing.assert_close(method.running, s0)
    method.running = torch.tensor([3.0, 1.0], dtype=torch.float64)
    stats = method.training_step(model, batch, opt, StepState(1, 1, 2, 1))  # epoch 1 > modulation_end
    assert stats["agm/coeff/a"].item() == stats["agm/coeff/b"].item() == 1.0
    torch.testing.assert_close(method.running, (torch.tensor([3.0, 1.0], dtype=torch.float64) + s0) / 2)


def test_evaluation_reports_responses_and_zeroes_absent_inputs() -> None:
    method, model, batch = _setup()
    model.eval()
    x = batch["inputs"]
    out = method.predict(model, x)
    torch.testing.assert_close(out.logits, model(x).logits)
    only_a, only_b = model(mask_inputs(x, ["a"])).logits, model(mask_inputs(x, ["b"])).logits
    torch.testing.assert_close(out.modality_logits["a"], 0.5 * (model(x).logits - only_b + only_a))
    torch.testing.assert_close(method.predict(model, x, present=["a"]).logits, only_a)


def test_a_trial_reports_coefficients(tmp_path) -> None:
    run_trial(tiny_config("agm", epochs=1, eval={"missing": False}), JsonlReporter(tmp_path))
    row = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    for m in ("pix", "fou"):
        assert row[f"train/agm/coeff/{m}"] > 0 and row[f"train/agm/dominance/{m}"] > 0
