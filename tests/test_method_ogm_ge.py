"""OGM / OGM-GE: the coefficient math against hand values; only the dominant encoder's selected
gradients are scaled, by exactly k, and only inside the modulation window; GE noise has the std of
the unmodulated gradient."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from trainables.errors import ConfigError
from trainables.loop import run_trial
from trainables.methods.base import MethodContext, StepState
from trainables.methods.ogm_ge import (
    OGMGE,
    OGMGEParams,
    discrepancy_scores,
    modulate_gradients,
    modulated_parameters,
    modulation_coefficients,
)
from trainables.models.classifier import ModelSpec
from trainables.models.encoders import MLPEncoder, SmallCNN
from trainables.params import build_params
from trainables.reporting import JsonlReporter


def test_discrepancy_scores_sum_true_class_probability() -> None:
    logits = {"a": torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]]), "b": torch.zeros(2, 2)}
    s = discrepancy_scores(logits, torch.tensor([1, 0]))
    assert s["a"] == pytest.approx(0.5 + 0.75)
    assert s["b"] == pytest.approx(1.0)


def test_coefficients_match_paper_eq10_and_weakest_reference() -> None:
    rho, k = modulation_coefficients({"audio": 6.0, "visual": 3.0}, alpha=0.8)
    assert rho == pytest.approx({"audio": 2.0, "visual": 1.0})
    assert k["audio"] == pytest.approx(1 - math.tanh(1.6)) and k["visual"] == 1.0
    rho, k = modulation_coefficients({"a": 4.0, "b": 2.0, "c": 8.0}, alpha=0.5)
    assert rho == pytest.approx({"a": 2.0, "b": 1.0, "c": 4.0})
    assert k == pytest.approx({"a": 1 - math.tanh(1.0), "b": 1.0, "c": 1 - math.tanh(2.0)})


def test_modulated_parameter_selection() -> None:
    cnn, mlp = SmallCNN((1, 8, 8), feature_dim=8), MLPEncoder((5,), feature_dim=8)
    conv = modulated_parameters(cnn, "conv")
    assert conv and all(p.dim() == 4 for p in conv)
    assert len(conv) == sum(1 for p in cnn.parameters() if p.dim() == 4)
    # an MLP has no conv kernel: ``conv`` falls back to its weight matrices, never to biases
    assert [tuple(p.shape) for p in modulated_parameters(mlp, "conv")] == [(128, 5), (8, 128)]
    assert [tuple(p.shape) for p in modulated_parameters(mlp, "all")] == [(128, 5), (8, 128)]


def test_ge_noise_has_std_of_unmodulated_gradient_and_uses_global_rng() -> None:
    p = torch.nn.Parameter(torch.zeros(20000))
    g = torch.randn(20000) * 3.0
    p.grad = g.clone()
    torch.manual_seed(1)
    modulate_gradients([p], 0.25, noise=True)
    noise = p.grad - 0.25 * g
    assert noise.std().item() == pytest.approx(g.std().item(), rel=0.03)
    first = p.grad.clone()
    p.grad = g.clone()
    torch.manual_seed(1)
    modulate_gradients([p], 0.25, noise=True)
    assert torch.equal(p.grad, first)
    p.grad = g.clone()
    modulate_gradients([p], 0.25, noise=False)
    assert torch.equal(p.grad, 0.25 * g)


def _setup(noise: bool, start: int = 0, end: int = 50):
    torch.manual_seed(0)
    spec = ModelSpec({"a": (6,), "b": (4,)}, {"a": "mlp", "b": "mlp"}, 8, "concat", 3)
    params = build_params(OGMGEParams, {"noise": noise, "modulation_start": start, "modulation_end": end})
    method = OGMGE(params, MethodContext(["a", "b"], 3, 4, torch.device("cpu")))
    model = method.build_model(spec)
    x = {"a": torch.randn(16, 6), "b": torch.randn(16, 4)}
    batch = {"inputs": x, "label": torch.randint(0, 3, (16,)), "index": torch.arange(16)}
    return method, model, batch


def _reference_grads(model, batch) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    ref = copy.deepcopy(model)
    out = ref(batch["inputs"])
    torch.nn.functional.cross_entropy(out.logits, batch["label"]).backward()
    _, k = modulation_coefficients(discrepancy_scores(out.modality_logits, batch["label"]), 0.8)
    return {n: p.grad.clone() for n, p in ref.named_parameters()}, k


@pytest.mark.parametrize("epoch,inside", [(1, True), (3, False)])
def test_only_dominant_encoder_weights_are_scaled_inside_window(epoch: int, inside: bool) -> None:
    method, model, batch = _setup(noise=False, start=0, end=2)
    ref, k = _reference_grads(model, batch)
    assert sorted(k.values())[0] < 0.9 and sorted(k.values())[1] == 1.0  # one dominant, one weak
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: gradients stay inspectable, weights fixed
    stats = method.training_step(model, batch, {"main": opt}, StepState(epoch, 0, 1, epoch))
    scaled = {n for n, p in model.named_parameters() if n.startswith("encoders.") and p.dim() >= 2}
    for name, p in model.named_parameters():
        m = name.split(".")[1] if name.startswith("encoders.") else None
        factor = k[m] if (inside and name in scaled and m is not None) else 1.0
        torch.testing.assert_close(p.grad, ref[name] * factor, rtol=1e-5, atol=1e-7, msg=name)
    for m in ("a", "b"):
        assert stats[f"ogm_ge/coeff/{m}"] == pytest.approx(k[m] if inside else 1.0)


def test_ge_noise_reaches_both_encoders_but_not_the_head() -> None:
    method, model, batch = _setup(noise=True)
    ref, _ = _reference_grads(model, batch)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    method.training_step(model, batch, {"main": opt}, StepState(0, 0, 1, 0))
    for m in ("a", "b"):
        w = model.encoders[m].net[2].weight
        assert not torch.allclose(w.grad, ref[f"encoders.{m}.net.2.weight"]), m
    torch.testing.assert_close(model.head.fc.weight.grad, ref["head.fc.weight"])


def test_window_in_a_trial_and_bad_window_is_one_line(tmp_path) -> None:
    cfg = {
        "method": "ogm_ge", "dataset": "mfeat", "epochs": 2, "eval": {"missing": False},
        "params": {"modulation_start": 0, "modulation_end": 0},
        "data": {"train_per_class": 5, "val_per_class": 2, "test_per_class": 2}, "loader": {"batch_size": 16},
    }  # fmt: skip
    run_trial(cfg, JsonlReporter(tmp_path))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert min(rows[0]["train/ogm_ge/coeff/pix"], rows[0]["train/ogm_ge/coeff/fou"]) < 1.0
    assert rows[1]["train/ogm_ge/coeff/pix"] == rows[1]["train/ogm_ge/coeff/fou"] == 1.0
    with pytest.raises(ConfigError, match="modulation_end"):
        build_params(OGMGEParams, {"modulation_start": 5, "modulation_end": 2}, "params.")


def _cnn_setup(noise: bool, data_seed: int = 0):
    torch.manual_seed(0)
    spec = ModelSpec({"img": (1, 8, 8), "vec": (4,)}, {"img": "cnn", "vec": "mlp"}, 8, "concat", 3)
    method = OGMGE(
        build_params(OGMGEParams, {"noise": noise}), MethodContext(["img", "vec"], 3, 4, torch.device("cpu"))
    )
    model = method.build_model(spec)
    g = torch.Generator().manual_seed(data_seed)
    x = {"img": torch.randn(32, 1, 8, 8, generator=g), "vec": torch.randn(32, 4, generator=g)}
    batch = {"inputs": x, "label": torch.randint(0, 3, (32,), generator=g), "index": torch.arange(32)}
    ref, k = _reference_grads(model, batch)  # same weights and BatchNorm batch statistics as the step
    return method, model, batch, ref, k


def test_real_step_with_a_cnn_encoder_scales_only_its_conv_kernels() -> None:
    method, model, batch, ref, k = _cnn_setup(noise=False)
    assert k["img"] < 0.9 and k["vec"] == 1.0  # the CNN side dominates this batch
    method.training_step(model, batch, {"main": torch.optim.SGD(model.parameters(), lr=0.0)}, StepState(0, 0, 1, 0))
    kernels = {n for n, p in model.named_parameters() if n.startswith("encoders.img.") and p.dim() == 4}
    assert len(kernels) == 3
    for name, p in model.named_parameters():
        factor = k["img"] if name in kernels else 1.0  # BatchNorm scales/shifts, the head and "vec" untouched
        torch.testing.assert_close(p.grad, ref[name] * factor, rtol=1e-5, atol=1e-7, msg=name)


def test_real_step_ge_noise_on_conv_kernels_has_the_unmodulated_std() -> None:
    method, model, batch, ref, k = _cnn_setup(noise=True)
    method.training_step(model, batch, {"main": torch.optim.SGD(model.parameters(), lr=0.0)}, StepState(0, 0, 1, 0))
    for name, p in model.named_parameters():
        if name.startswith("encoders.img.") and p.dim() == 4 and p.numel() > 5000:  # a kernel big enough to measure
            noise = p.grad - ref[name] * k["img"]
            assert noise.std().item() == pytest.approx(ref[name].std().item(), rel=0.05), name
            assert noise.std().item() > 1.5 * k["img"] * ref[name].std().item()  # not the modulated gradient's std
        elif name.startswith("encoders.img.") and p.dim() < 4:
            torch.testing.assert_close(p.grad, ref[name], rtol=1e-5, atol=1e-7, msg=name)  # no noise off the kernels
