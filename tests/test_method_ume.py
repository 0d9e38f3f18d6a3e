"""UME's mechanism: nothing is shared between the unimodal models, a step gives each model only its own
CE's gradient (perturbing one modality's input leaves the other's gradients unchanged), the prediction
is the paper's ensemble (equal-weight mean of the unimodal logits; probabilities and fixed weights as
options), absent modalities leave the ensemble, and a trial runs and reports each member."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import tiny_config

from trainables.errors import ConfigError
from trainables.loop import run_trial
from trainables.methods.base import MethodContext, StepState
from trainables.methods.ume import UME, UMEParams, ensemble, unimodal_losses
from trainables.models.classifier import ModelSpec
from trainables.reporting import JsonlReporter

SPEC = ModelSpec({"a": (6,), "b": (4,)}, {"a": "mlp", "b": "mlp"}, 8, "concat", 3)
F = torch.nn.functional


def _setup(lr: float = 0.0, **params):
    torch.manual_seed(0)
    method = UME(UMEParams(**params), MethodContext(["a", "b"], 3, 4, torch.device("cpu")))
    model = method.build_model(SPEC)
    g = torch.Generator().manual_seed(1)
    x = {"a": torch.randn(16, 6, generator=g), "b": torch.randn(16, 4, generator=g)}
    opts = {"main": torch.optim.SGD(model.parameters(), lr=lr)}
    return method, model, {"inputs": x, "label": torch.arange(16) % 3, "index": torch.arange(16)}, opts


def _owner(name: str) -> str | None:
    """The modality whose unimodal model holds parameter ``name`` (``encoders.a.*`` / ``heads.a.*``)."""
    parts = name.split(".")
    return parts[1] if parts[0] in ("encoders", "heads") else None


def test_every_parameter_belongs_to_one_unimodal_model() -> None:
    _, model, _, _ = _setup()
    owners = {n: _owner(n) for n, _ in model.named_parameters()}
    assert set(owners.values()) == {"a", "b"}  # no fused head, no shared parameter


def test_a_step_changes_only_unimodal_parameters_each_by_its_own_ce() -> None:
    method, model, batch, opts = _setup(lr=0.1)
    ref = copy.deepcopy(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    stats = method.training_step(model, batch, opts, StepState(0, 0, 1, 0))
    for n, p in model.named_parameters():
        assert not torch.equal(p, before[n]), n  # every unimodal model learns
    # the gradient of each model is exactly that of its own CE, computed alone
    y, x = batch["label"], batch["inputs"]
    for m in ("a", "b"):
        solo = copy.deepcopy(ref)
        F.cross_entropy(solo.heads[m](solo.encoders[m](x[m])), y).backward()
        for n, p in solo.named_parameters():
            if _owner(n) == m:
                torch.testing.assert_close(dict(model.named_parameters())[n].grad, p.grad)
    total = stats["ume/ce/a"] + stats["ume/ce/b"]
    torch.testing.assert_close(stats["loss"], total)


def _grads(model, batch) -> dict[str, torch.Tensor]:
    method = UME(UMEParams(), MethodContext(["a", "b"], 3, 4, torch.device("cpu")))
    model = copy.deepcopy(model)
    method.training_step(model, batch, {"main": torch.optim.SGD(model.parameters(), lr=0.0)}, StepState(0, 0, 1, 0))
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def test_perturbing_one_modality_leaves_the_others_gradients_unchanged() -> None:
    _, model, batch, _ = _setup()
    base = _grads(model, batch)
    moved = dict(batch, inputs=dict(batch["inputs"], b=batch["inputs"]["b"] + 3.0 * torch.randn(16, 4)))
    pert = _grads(model, moved)
    for n in base:
        if _owner(n) == "a":
            torch.testing.assert_close(pert[n], base[n], rtol=0, atol=0)
    assert any(not torch.allclose(pert[n], base[n]) for n in base if _owner(n) == "b")


def test_prediction_is_the_equal_weight_mean_of_the_unimodal_logits() -> None:
    method, model, batch, _ = _setup()
    model.eval()
    x = batch["inputs"]
    out = method.predict(model, x)
    za, zb = (model.heads[m](model.encoders[m](x[m])) for m in "ab")
    torch.testing.assert_close(out.modality_logits["a"], za)
    torch.testing.assert_close(out.logits, (za + zb) / 2)
    torch.testing.assert_close(model(x).logits, out.logits)


def test_ensemble_options_match_hand_computation() -> None:
    za = torch.tensor([[2.0, 0.0, 0.0]])
    zb = torch.tensor([[0.0, 1.0, 0.0]])
    w = {"a": 3.0, "b": 1.0}
    torch.testing.assert_close(ensemble({"a": za, "b": zb}, w), 0.75 * za + 0.25 * zb)
    probs = 0.75 * F.softmax(za, 1) + 0.25 * F.softmax(zb, 1)
    torch.testing.assert_close(ensemble({"a": za, "b": zb}, w, "probs"), probs.log())
    torch.testing.assert_close(ensemble({"b": zb}, w), zb)  # one voter: its weight renormalises to 1


def test_absent_modalities_leave_the_ensemble() -> None:
    method, model, batch, _ = _setup()
    model.eval()
    x = batch["inputs"]
    out = method.predict(model, x, present=["a"])
    torch.testing.assert_close(out.logits, model.heads["a"](model.encoders["a"](x["a"])))
    assert method.missing_scheme == "drop-head"


def test_unimodal_losses_are_each_models_own_ce() -> None:
    z = {"a": torch.tensor([[1.0, 0.0]]), "b": torch.tensor([[0.0, 1.0]])}
    y = torch.tensor([0])
    losses = unimodal_losses(z, y)
    assert losses["a"] < losses["b"]
    torch.testing.assert_close(losses["b"], F.cross_entropy(z["b"], y))


def test_weights_are_checked() -> None:
    ctx = MethodContext(["a", "b"], 3, 4, torch.device("cpu"))
    with pytest.raises(ConfigError, match="params.weights"):
        UME(UMEParams(weights=[1.0]), ctx)
    with pytest.raises(ConfigError, match="params.weights"):
        UME(UMEParams(weights=[1.0, -1.0]), ctx)


def test_a_trial_reports_each_member_and_the_ensemble(tmp_path) -> None:
    cfg = tiny_config("ume", epochs=2, params={"combine": "probs"}, eval={"missing": False})
    run_trial(cfg, JsonlReporter(tmp_path))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert "train/ume/ce/pix" in rows[-1] and "train/ume/ce/fou" in rows[-1]
    assert "val/acc/pix" in rows[-1] and "val/acc" in rows[-1]
