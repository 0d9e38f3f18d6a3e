"""PMR's mechanism: prototype logits and lag coefficients by hand, prototypes are the class means of the
first batches blended by momentum from the third computation on, the prototypical CE reaches only the
lagging modality's encoder, and the dominant modality's entropy term acts only in the early epochs."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import tiny_config, without_batchnorm

from trainables.loop import run_trial
from trainables.methods.base import EpochContext, MethodContext, StepState
from trainables.methods.pmr import PMR, PMRParams, entropy, lag_coefficients, prototype_logits
from trainables.models.classifier import ModelSpec
from trainables.reporting import JsonlReporter

SPEC = ModelSpec({"a": (6,), "b": (4,)}, {"a": "mlp", "b": "mlp"}, 8, "concat", 3)
F = torch.nn.functional


def _setup(**params):
    torch.manual_seed(0)
    method = PMR(PMRParams(**params), MethodContext(["a", "b"], 3, 4, torch.device("cpu")))
    model = without_batchnorm(method.build_model(SPEC))
    g = torch.Generator().manual_seed(1)
    x = {"a": torch.randn(12, 6, generator=g), "b": torch.randn(12, 4, generator=g)}
    return method, model, {"inputs": x, "label": torch.arange(12) % 3, "index": torch.arange(12)}


def _ctx(batches, epoch=0):
    return EpochContext(epoch, batches, torch.device("cpu"), lambda b: b)


def test_prototype_logits_and_lag_coefficients_by_hand() -> None:
    f, c = torch.tensor([[0.0, 0.0], [3.0, 4.0]]), torch.tensor([[0.0, 0.0], [0.0, 4.0]])
    torch.testing.assert_close(prototype_logits(f, c), -torch.tensor([[0.0, 4.0], [5.0, 3.0]]))
    torch.testing.assert_close(lag_coefficients(torch.tensor([6.0, 3.0]), 0.6, "ratio"), torch.tensor([0.0, 0.6]))
    torch.testing.assert_close(lag_coefficients(torch.tensor([4.0, 3.0]), 0.6, "ratio"), torch.tensor([0.0, 0.2]))
    torch.testing.assert_close(lag_coefficients(torch.tensor([4.0, 3.0]), 0.6, "constant"), torch.tensor([0.0, 0.6]))
    assert lag_coefficients(torch.tensor([3.0, 3.0]), 1.0, "ratio").tolist() == [0.0, 0.0]
    assert entropy(torch.zeros(2, 4)).item() == pytest.approx(torch.log(torch.tensor(4.0)).item())


def test_prototypes_are_class_means_of_the_first_batches_blended_by_momentum() -> None:
    method, model, batch = _setup(proto_fraction=0.5, momentum=0.25)
    first = {"inputs": {m: x[:6] for m, x in batch["inputs"].items()}, "label": batch["label"][:6]}
    second = {"inputs": {m: x[6:] * 5 for m, x in batch["inputs"].items()}, "label": batch["label"][6:]}
    with torch.no_grad():
        feats = model.encode(first["inputs"])
    means = {m: torch.stack([f[first["label"] == k].mean(0) for k in range(3)]) for m, f in feats.items()}
    method.on_epoch_start(model, _ctx([first, second], epoch=0))  # half of two batches: the first only
    for m in "ab":
        torch.testing.assert_close(method.protos[m], means[m])
    method.protos = {m: torch.ones(3, 8) for m in "ab"}
    method.on_epoch_start(model, _ctx([first, second], epoch=1))  # official: no blend before epoch 1 either
    torch.testing.assert_close(method.protos["a"], means["a"])
    method.protos = {m: torch.ones(3, 8) for m in "ab"}
    method.on_epoch_start(model, _ctx([first, second], epoch=2))
    torch.testing.assert_close(method.protos["a"], 0.75 * means["a"] + 0.25)
    assert model.training


def _grads(model, loss):
    model.zero_grad()
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_prototypical_ce_reaches_only_the_lagging_encoder() -> None:
    method, model, batch = _setup(mu=0.0)
    method.on_epoch_start(model, _ctx([batch]))
    ref = copy.deepcopy(model)
    y = batch["label"]
    feats = ref.encode(batch["inputs"])
    proto = {m: prototype_logits(f, method.protos[m]) for m, f in feats.items()}
    scores = torch.stack([z.softmax(1).gather(1, y[:, None]).sum() for z in proto.values()])
    gamma = lag_coefficients(scores.detach(), 1.0, "ratio")
    lag = "ab"[int(scores.argmin())]
    assert gamma.max() > 0
    plain = _grads(ref, F.cross_entropy(ref.head(ref.encode(batch["inputs"]))[0], y))
    feats = ref.encode(batch["inputs"])
    pce = {m: F.cross_entropy(prototype_logits(f, method.protos[m]), y) for m, f in feats.items()}
    pce_grads = _grads(ref, pce[lag])
    opt = {"main": torch.optim.SGD(model.parameters(), lr=0.0)}
    stats = method.training_step(model, batch, opt, StepState(0, 0, 1, 0))
    assert stats[f"pmr/coeff/{lag}"].item() == pytest.approx(gamma.max().item())
    for n, p in model.named_parameters():
        expected = plain[n] + gamma.max() * pce_grads[n] if n.startswith(f"encoders.{lag}.") else plain[n]
        torch.testing.assert_close(p.grad, expected)


def test_entropy_term_acts_on_the_dominant_encoder_in_early_epochs_only() -> None:
    method, model, batch = _setup(mu=0.5, entropy_epochs=1)
    method.on_epoch_start(model, _ctx([batch]))
    early, late = copy.deepcopy(model), copy.deepcopy(model)
    opt = {"main": torch.optim.SGD(early.parameters(), lr=0.0)}
    stats = method.training_step(early, batch, opt, StepState(0, 0, 1, 0))
    dom = "ab"[int(torch.tensor([stats["pmr/coeff/a"], stats["pmr/coeff/b"]]).argmin())]
    opt = {"main": torch.optim.SGD(late.parameters(), lr=0.0)}
    assert "pmr/entropy_dominant" not in method.training_step(late, batch, opt, StepState(1, 0, 1, 1))
    dom_early = early.encoders[dom].net[2].weight.grad
    assert not torch.allclose(dom_early, late.encoders[dom].net[2].weight.grad)
    assert "pmr/entropy_dominant" in stats


def test_a_trial_reports_prototype_diagnostics(tmp_path) -> None:
    run_trial(tiny_config("pmr", epochs=1, eval={"missing": False}), JsonlReporter(tmp_path))
    row = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    for m in ("pix", "fou"):
        assert row[f"train/pmr/proto_dist/{m}"] > 0 and 0 <= row[f"train/pmr/coeff/{m}"] <= 1
