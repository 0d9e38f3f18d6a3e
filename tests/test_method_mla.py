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
from trainables.methods.mla import (
    MLA,
    MLAParams,
    owm_alpha,
    project_gradient,
    projector_trace,
    uncertainty_weights,
    update_projector,
)
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


def test_frobenius_normalisation_matches_hand_computation() -> None:
    feats = torch.tensor([[1.0, 0.0], [3.0, 2.0]])
    unnormalised = torch.eye(2) - torch.tensor([[4.0, 2.0], [2.0, 1.0]]) / 5.1
    new = update_projector(torch.eye(2), feats, alpha=0.1, normalize="frobenius")
    torch.testing.assert_close(new, unnormalised / unnormalised.pow(2).sum().sqrt())
    assert projector_trace(torch.eye(4)) == 1.0 and projector_trace(torch.diag(torch.tensor([1.0, 0, 0, 0]))) == 0.25


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


def _setup(projection: str, normalize: str = "none"):
    torch.manual_seed(0)
    spec = ModelSpec({"a": (6,), "b": (4,)}, {"a": "mlp", "b": "mlp"}, 8, "concat", 3)
    params = build_params(MLAParams, {"projection": projection, "normalize": normalize})
    method = MLA(params, MethodContext(["a", "b"], 3, 2, torch.device("cpu")))
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
    ratios = {f"mla/proj/grad_ratio{s}" for s in ("", "/a", "/b")}
    assert set(stats) == {"loss", "mla/loss/a", "mla/loss/b", "mla/weight/a", "mla/weight/b"} | ratios


def _ce_weight_grad(feats: torch.Tensor, W: torch.Tensor, b: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """d mean CE(f W^T + b, y) / dW by hand: (softmax - onehot)^T f / B."""
    err = (feats @ W.t() + b).softmax(1) - torch.nn.functional.one_hot(y, W.shape[0]).float()
    return err.t() @ feats / feats.shape[0]


@pytest.mark.parametrize("normalize", ["none", "frobenius"])
def test_projector_and_every_modalitys_projected_gradient_over_several_steps(normalize: str) -> None:
    """Over 6 batches (12 head steps): each step's head gradient is the hand-made gradient of its own
    modality times P^T, with P the projector after that modality's update (the second modality too);
    P stays symmetric with eigenvalues in [0, 1]; every stored batch mean r is (nearly) annihilated."""
    method, model, _ = _setup("replace", normalize)
    with torch.no_grad():  # larger features, so that |r|^2 >> alpha_t and "P r ~ 0" is a sharp test
        for enc in model.encoders.values():
            [lin for lin in enc.modules() if isinstance(lin, torch.nn.Linear)][-1].weight.mul_(5)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    seen: list[dict] = []
    current: dict = {}

    def hook(o, args, kwargs):
        m = current["order"].pop(0)
        raw = _ce_weight_grad(current["feats"][m], model.head.weight, model.head.bias, current["y"])
        seen.append({"m": m, "head": model.head.weight.grad.clone(), "raw": raw, "P": method.P.clone()})

    opt.register_step_pre_hook(hook)
    g = torch.Generator().manual_seed(3)
    stored, last_stats = [], {}
    for step in range(6):
        x = {"a": 3 * torch.randn(16, 6, generator=g) + 1, "b": 3 * torch.randn(16, 4, generator=g) - 1}
        y = torch.randint(0, 3, (16,), generator=g)
        with torch.no_grad():  # the step's one forward per encoder happens before any of its head steps
            feats = {m: model.encoders[m](x[m]) for m in ("a", "b")}
        current.update(order=["a", "b"], feats=feats, y=y)
        last_stats = method.training_step(model, {"inputs": x, "label": y, "index": torch.arange(16)}, {"main": opt},
                                          StepState(0, step, 6, step))  # fmt: skip
        stored += [(feats[m].mean(0), owm_alpha(step, 6)) for m in ("a", "b")]
    assert [s["m"] for s in seen] == ["a", "b"] * 6
    for s in seen:
        torch.testing.assert_close(s["head"], s["raw"] @ s["P"].t(), rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(s["P"], s["P"].t())
        eig = torch.linalg.eigvalsh(s["P"])
        assert eig.min() > -1e-5 and eig.max() < 1 + 1e-5
    b_last = seen[-1]
    ratio = (b_last["head"].norm() / b_last["raw"].norm()).item()
    assert last_stats["mla/proj/grad_ratio/b"].item() == pytest.approx(ratio, rel=1e-4)
    assert seen[-1]["head"].norm() < 0.9 * seen[-1]["raw"].norm()  # the projection removed something
    P = method.P
    top = torch.linalg.eigvalsh(P).max().item()
    for r, alpha in stored:  # P shuts every stored batch mean: |P r| is small next to P's largest gain
        assert (P @ r).norm() < 0.1 * top * r.norm()
        if normalize == "none":  # the exact RLS bound: r^T P r <= alpha_t after r's update; later ones only shrink P
            assert (r @ P @ r).item() <= alpha + 1e-6
    if normalize == "frobenius":
        assert torch.linalg.matrix_norm(P).item() == pytest.approx(1.0, rel=1e-5)
    assert method.on_epoch_end(model, None)["mla/proj/trace"] == pytest.approx(projector_trace(P))


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
        "params": {"projection": "replace"},  # the default (off) leaves P at the identity
        "data": {"train_per_class": 5, "val_per_class": 3, "test_per_class": 3}, "loader": {"batch_size": 16},
    }  # fmt: skip
    straight, resumed = interrupted_then_resumed(cfg, tmp_path, stop_after=1)  # also compares every epoch's row
    assert resumed == straight
    last = torch.load(sorted((tmp_path / "cut" / "checkpoints").glob("*.pt"))[-1], weights_only=True)
    assert not torch.equal(last["method"]["P"], torch.eye(64))
