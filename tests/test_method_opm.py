"""OPM's mechanism: drop probabilities by hand, per-sample all-or-nothing drops with the 1/(1-theta)
rescale, a dropped dominant modality gets no gradient from the fused loss, the warm-up, the OGM flag
scales only the dominant encoder, and absent modalities' features are zeroed at evaluation."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from conftest import tiny_config

from trainables.loop import run_trial
from trainables.methods.base import MethodContext, StepState
from trainables.methods.ogm_ge import modulation_coefficients
from trainables.methods.opm import OPM, OPMParams, discrepancy_scores, drop_features, drop_probabilities
from trainables.models.classifier import ModelSpec
from trainables.reporting import JsonlReporter

SPEC = ModelSpec({"a": (6,), "b": (4,)}, {"a": "mlp", "b": "mlp"}, 8, "concat", 3)


def _setup(**params):
    torch.manual_seed(0)
    method = OPM(OPMParams(**params), MethodContext(["a", "b"], 3, 4, torch.device("cpu")))
    model = method.build_model(SPEC)
    g = torch.Generator().manual_seed(1)
    x = {"a": torch.randn(16, 6, generator=g), "b": torch.randn(16, 4, generator=g)}
    return method, model, {"inputs": x, "label": torch.arange(16) % 3, "index": torch.arange(16)}


def _dominant(model, batch) -> int:
    _, per = model.head(model.encode(batch["inputs"]))
    return int(discrepancy_scores(per, batch["label"]).argmax())


def test_drop_probabilities_match_the_official_formula() -> None:
    q = drop_probabilities(torch.tensor([6.0, 3.0]), q_base=0.5, lam=0.5)
    assert q.tolist() == pytest.approx([0.5 * (1 + 0.5 * math.tanh(1.0)), 0.0])
    q = drop_probabilities(torch.tensor([2.0, 4.0, 8.0]), q_base=0.4, lam=1.0)  # weakest is the reference
    assert q.tolist() == pytest.approx([0.0, 0.4 * (1 + math.tanh(1.0)), 0.4 * (1 + math.tanh(3.0))])
    assert drop_probabilities(torch.tensor([9.0, 1.0]), q_base=0.9, lam=1.0)[0] == 1.0  # clipped
    assert drop_probabilities(torch.tensor([3.0, 3.0]), 0.5, 0.5).tolist() == [0.0, 0.0]  # a tie drops nothing


def test_drops_are_per_sample_and_modality_with_the_theta_rescale() -> None:
    torch.manual_seed(0)
    feats = {"a": torch.ones(4000, 6), "b": torch.ones(4000, 2)}
    out, keep = drop_features(feats, torch.tensor([0.5, 0.0]))
    theta = 6 * 0.5 / 8
    assert keep[:, 1].eq(1).all() and keep[:, 0].mean().item() == pytest.approx(0.5, abs=0.03)
    rows = out["a"][:, 0]
    assert torch.unique(rows).tolist() == pytest.approx([0.0, 1 / (1 - theta)])
    assert (out["a"] == rows[:, None]).all()  # all or nothing per sample
    torch.testing.assert_close(out["b"], torch.full((4000, 2), 1 / (1 - theta)))


def test_a_dropped_dominant_modality_gets_no_gradient_from_the_fused_loss() -> None:
    method, model, batch = _setup(q_base=1.0, lam=0.0, p_exe=1.0, warmup_epochs=1)
    dom = "ab"[_dominant(model, batch)]
    weak = "ab"[1 - _dominant(model, batch)]
    opt = {"main": torch.optim.SGD(model.parameters(), lr=0.0)}
    stats = method.training_step(model, batch, opt, StepState(1, 0, 1, 1))  # after warm-up, q_dom = 1
    assert stats["opm/executed"] == 1.0 and stats[f"opm/dropped/{dom}"] == 1.0 and stats[f"opm/dropped/{weak}"] == 0.0
    assert all(p.grad.abs().sum() == 0 for p in model.encoders[dom].parameters())
    assert any(p.grad.abs().sum() > 0 for p in model.encoders[weak].parameters())
    method.training_step(model, batch, opt, StepState(0, 0, 1, 0))  # warm-up epoch: nothing dropped
    assert any(p.grad.abs().sum() > 0 for p in model.encoders[dom].parameters())


def test_ogm_flag_scales_only_the_dominant_encoder_after_warmup() -> None:
    method, model, batch = _setup(p_exe=0.0, warmup_epochs=1, ogm=True, ogm_noise=False)
    ref = copy.deepcopy(model)
    out = ref(batch["inputs"])
    torch.nn.functional.cross_entropy(out.logits, batch["label"]).backward()
    scores = discrepancy_scores(out.modality_logits, batch["label"])
    _, k = modulation_coefficients(dict(zip("ab", scores.tolist(), strict=True)), 0.8)
    opt = {"main": torch.optim.SGD(model.parameters(), lr=0.0)}
    stats = method.training_step(model, batch, opt, StepState(1, 0, 1, 1))
    assert min(k.values()) < 1.0 == max(k.values())
    for m in "ab":
        w = model.encoders[m].net[2].weight.grad
        torch.testing.assert_close(w, ref.encoders[m].net[2].weight.grad * k[m])
        assert stats[f"opm/ogm_coeff/{m}"] == pytest.approx(k[m])
    torch.testing.assert_close(model.head.fc.weight.grad, ref.head.fc.weight.grad)


def test_absent_modality_features_are_zeroed_at_evaluation() -> None:
    method, model, batch = _setup()
    model.eval()
    x = batch["inputs"]
    only_a = method.predict(model, x, present=["a"]).logits
    hand = model.head({"a": model.encoders["a"](x["a"]), "b": torch.zeros(16, 8)})[0]
    torch.testing.assert_close(only_a, hand)
    torch.testing.assert_close(method.predict(model, x).logits, model(x).logits)


def test_modulation_in_a_trial_starts_after_the_warmup(tmp_path) -> None:
    cfg = tiny_config("opm", epochs=3, params={"warmup_epochs": 1, "p_exe": 1.0}, eval={"missing": False})
    run_trial(cfg, JsonlReporter(tmp_path))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["train/opm/executed"] == 0.0 and rows[0]["train/opm/dropped/pix"] == 0.0
    assert rows[2]["train/opm/executed"] == 1.0
    assert max(rows[2]["train/opm/dropped/pix"], rows[2]["train/opm/dropped/fou"]) > 0.0
