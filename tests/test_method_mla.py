"""MLA: each modality's loss reaches only its own encoder and the shared head; the projector update
and the replace/add/off gradients match hand computations; uncertainty fusion weights per sample
and per batch; the projector survives checkpoint/resume."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import interrupted_then_resumed

from trainables.errors import ConfigError
from trainables.methods.base import MethodContext, StepState
from trainables.methods.mla import MLA, MLAParams, owm_alpha, project_gradient, uncertainty_weights, update_projector
from trainables.models.classifier import ModelSpec
from trainables.params import build_params


def test_projector_update_matches_hand_computation() -> None:
    P = torch.eye(2)
    feats = torch.tensor([[1.0, 0.0], [3.0, 2.0]])  # r = [2, 1], k = P r^T = [2, 1]^T, r k = 5
    new = update_projector(P, feats, alpha=0.1)
    expected = torch.eye(2) - torch.tensor([[4.0, 2.0], [2.0, 1.0]]) / 5.1
    torch.testing.assert_close(new, expected)
    assert torch.equal(P, torch.eye(2))  # the input is not modified in place
    # with alpha -> 0 the projector annihilates r: the projected gradient is orthogonal to it
    near = update_projector(P, feats, alpha=1e-9)
    assert (near @ torch.tensor([2.0, 1.0])).abs().max() < 1e-6


def test_alpha_schedule() -> None:
    assert owm_alpha(0, 10) == pytest.approx(0.1)
    assert owm_alpha(5, 10) == pytest.approx(0.1**1.5)


def test_projection_modes() -> None:
    g = torch.tensor([[1.0, 2.0], [3.0, 4.0], [0.5, -1.0]])
    P = torch.tensor([[1.0, 2.0], [0.0, 3.0]])  # not symmetric, so P^T is visible
    torch.testing.assert_close(project_gradient(g, P, "replace"), g @ P.t())
    torch.testing.assert_close(project_gradient(g, P, "add"), g + g @ P.t())
    assert torch.equal(project_gradient(g, P, "off"), g)


def _entropy(p: list[float]) -> float:
    return -sum(x * math.log(x) for x in p)


def test_uncertainty_weights_per_sample_and_per_batch() -> None:
    a = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    b = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]])
    w = uncertainty_weights({"a": a, "b": b}, "sample")
    ha = [_entropy([0.5, 0.5]), _entropy([math.e**2 / (1 + math.e**2), 1 / (1 + math.e**2)])]
    hb = [_entropy([0.75, 0.25]), _entropy([0.5, 0.5])]
    for i in range(2):
        top = max(ha[i], hb[i])
        ea, eb = math.exp(top - ha[i]), math.exp(top - hb[i])
        assert w["a"][i].item() == pytest.approx(ea / (ea + eb), rel=1e-5)
        assert w["b"][i].item() == pytest.approx(eb / (ea + eb), rel=1e-5)
    assert w["b"][0] > w["a"][0] and w["a"][1] > w["b"][1]  # the more certain modality weighs more, per sample
    wb = uncertainty_weights({"a": a, "b": b}, "batch")  # official: softmax over the batch axis
    pa0 = [1 / (1 + math.e**2), math.e**2 / (1 + math.e**2)]  # column 0 of a over the batch
    Ha = _entropy(pa0) + _entropy([0.5, 0.5])
    Hb = _entropy([0.75, 0.25]) + _entropy([0.5, 0.5])
    top = max(Ha, Hb)
    ea, eb = math.exp(top - Ha), math.exp(top - Hb)
    assert wb["a"].dim() == 0 and wb["a"].item() == pytest.approx(ea / (ea + eb), rel=1e-5)


def _setup(projection: str):
    torch.manual_seed(0)
    spec = ModelSpec({"a": (6,), "b": (4,)}, {"a": "mlp", "b": "mlp"}, 8, "concat", 3)
    method = MLA(
        build_params(MLAParams, {"projection": projection}), MethodContext(["a", "b"], 3, 2, torch.device("cpu"))
    )
    model = method.build_model(spec)
    x = {"a": torch.randn(16, 6), "b": torch.randn(16, 4)}
    return method, model, {"inputs": x, "label": torch.randint(0, 3, (16,)), "index": torch.arange(16)}


def _spy(opt: torch.optim.Optimizer, model) -> list[dict]:
    """Record, at each optimizer step, which encoders carry a gradient and the head's weight gradient."""
    seen: list[dict] = []

    def hook(o, args, kwargs):
        enc = {
            m: any(p.grad is not None and p.grad.abs().sum() > 0 for p in e.parameters())
            for m, e in model.encoders.items()
        }
        seen.append({"enc": enc, "head": model.head.weight.grad.clone()})

    opt.register_step_pre_hook(hook)
    return seen


def test_each_modality_step_reaches_only_its_encoder_and_replace_gives_gP() -> None:
    method, model, batch = _setup("replace")
    ref_method, ref_model, _ = _setup("off")
    feats = {m: model.encoders[m](batch["inputs"][m]).detach() for m in ("a", "b")}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ref_opt = torch.optim.SGD(ref_model.parameters(), lr=0.1)
    seen, ref_seen = _spy(opt, model), _spy(ref_opt, ref_model)
    stats = method.training_step(model, batch, {"main": opt}, StepState(0, 3, 10, 3))
    ref_method.training_step(ref_model, batch, {"main": ref_opt}, StepState(0, 3, 10, 3))
    assert [s["enc"] for s in seen] == [{"a": True, "b": False}, {"a": False, "b": True}]
    alpha = 0.1 ** (1 + 3 / 10)
    P1 = update_projector(torch.eye(8), feats["a"], alpha)
    torch.testing.assert_close(seen[0]["head"], ref_seen[0]["head"] @ P1.t())  # first step: same weights, g P^T
    P2 = update_projector(P1, feats["b"], alpha)  # encoder b is untouched by a's step, so f_b is unchanged
    torch.testing.assert_close(method.P, P2)
    assert set(stats) == {"loss", "mla/loss/a", "mla/loss/b", "mla/weight/a", "mla/weight/b"}


def test_predict_fuses_only_present_modalities() -> None:
    method, model, batch = _setup("replace")
    model.eval()
    full = method.predict(model, batch["inputs"])
    w = uncertainty_weights(full.modality_logits, "sample")
    torch.testing.assert_close(
        full.logits, w["a"][:, None] * full.modality_logits["a"] + w["b"][:, None] * full.modality_logits["b"]
    )
    only_a = method.predict(model, batch["inputs"], present=["a"])
    torch.testing.assert_close(only_a.logits, full.modality_logits["a"])


def test_unequal_feature_sizes_and_bad_fixed_weights_are_config_errors() -> None:
    ctx = MethodContext(["a", "b"], 3, 2, torch.device("cpu"))
    with pytest.raises(ConfigError, match="model.encoders"):
        MLA(MLAParams(), ctx).build_model(
            ModelSpec({"a": (6,), "b": (1, 8, 8)}, {"a": "mlp", "b": "resnet18"}, 8, "concat", 3)
        )
    with pytest.raises(ConfigError, match="fixed_weights"):
        MLA(MLAParams(fusion="fixed", fixed_weights=[1.0, 2.0, 3.0]), ctx)


def test_resume_mid_run_restores_projector(tmp_path) -> None:
    cfg = {
        "method": "mla", "dataset": "mfeat", "epochs": 2, "eval": {"missing": False},
        "data": {"train_per_class": 5, "val_per_class": 3, "test_per_class": 3}, "loader": {"batch_size": 16},
    }  # fmt: skip
    straight, resumed = interrupted_then_resumed(cfg, tmp_path, stop_after=1)  # also compares every epoch's row
    assert resumed == straight
    last = torch.load(sorted((tmp_path / "cut" / "checkpoints").glob("*.pt"))[-1], weights_only=True)
    assert not torch.equal(last["method"]["P"], torch.eye(64))
