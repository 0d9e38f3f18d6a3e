"""MMCosine's mechanism: cosine logits by hand, the fused logits are the sum of the per-modality ones and do
not change when a modality's features or weights are scaled up (no dominance by magnitude, unlike the
plain concat head), absent modalities leave the sum, and ``official_eval`` reproduces the raw-head
prediction of the official valid()."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import tiny_config

from trainables.errors import ConfigError
from trainables.loop import run_trial
from trainables.methods.base import MethodContext, StepState
from trainables.methods.mmcosine import MMCosine, MMCosineParams, cosine_logits
from trainables.models.classifier import ModelSpec
from trainables.reporting import JsonlReporter

SPEC = ModelSpec({"a": (6,), "b": (4,)}, {"a": "mlp", "b": "mlp"}, 8, "concat", 3)


def _setup(**params):
    torch.manual_seed(0)
    method = MMCosine(MMCosineParams(**params), MethodContext(["a", "b"], 3, 2, torch.device("cpu")))
    model = method.build_model(SPEC)
    g = torch.Generator().manual_seed(1)
    x = {"a": torch.randn(16, 6, generator=g), "b": torch.randn(16, 4, generator=g)}
    return method, model, {"inputs": x, "label": torch.arange(16) % 3, "index": torch.arange(16)}


def test_cosine_logits_by_hand() -> None:
    f = torch.tensor([[3.0, 4.0]])
    w = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-5.0, 0.0]])  # rows normalised one by one
    torch.testing.assert_close(cosine_logits(f, w, 10.0), torch.tensor([[6.0, 8.0, -6.0]]))
    assert cosine_logits(torch.randn(7, 5) * 1e3, torch.randn(4, 5) * 1e3, 15.0).abs().max() <= 15.0 + 1e-4


def test_fused_logits_sum_the_modalities_and_ignore_their_magnitude() -> None:
    method, model, batch = _setup()
    x = batch["inputs"]
    out = model(x)
    torch.testing.assert_close(out.logits, out.modality_logits["a"] + out.modality_logits["b"])
    w = model.head.fc.weight
    torch.testing.assert_close(out.modality_logits["a"], cosine_logits(model.encoders["a"](x["a"]), w[:, :8], 10.0))
    raw_before = model.head(model.encode(x))[0]
    with torch.no_grad():  # modality a's features x10 and its weight slice x10: a raw concat head would be swamped
        model.encoders["a"].net[-2].weight.mul_(10)
        model.encoders["a"].net[-2].bias.mul_(10)
        w[:, :8].mul_(10)
    torch.testing.assert_close(model(x).logits, out.logits)
    assert not torch.allclose(model.head(model.encode(x))[0], raw_before)


def test_step_trains_on_the_cosine_logits_and_leaves_the_bias_alone() -> None:
    method, model, batch = _setup(scale=15.0)
    opt = {"main": torch.optim.SGD(model.parameters(), lr=0.1)}
    bias = model.head.fc.bias.detach().clone()
    out = model(batch["inputs"])
    expected = torch.nn.functional.cross_entropy(out.logits, batch["label"])
    stats = method.training_step(model, batch, opt, StepState(0, 0, 1, 0))
    assert stats["loss"].item() == pytest.approx(expected.item())
    assert model.head.fc.bias.grad is None and torch.equal(model.head.fc.bias, bias)
    assert all(p.grad.abs().sum() > 0 for m in "ab" for p in model.encoders[m].parameters())


def test_absent_modalities_leave_the_sum_and_official_eval_uses_the_raw_head() -> None:
    method, model, batch = _setup()
    model.eval()
    x = batch["inputs"]
    torch.testing.assert_close(method.predict(model, x, present=["a"]).logits, model(x).modality_logits["a"])
    official, raw_model, _ = _setup(official_eval=True)
    raw_model.eval()
    torch.testing.assert_close(official.predict(raw_model, x).logits, raw_model.head(raw_model.encode(x))[0])
    raw_model.train()  # training always uses the cosine logits
    out = raw_model(x)
    torch.testing.assert_close(out.logits, out.modality_logits["a"] + out.modality_logits["b"])


def test_other_fusions_are_refused_in_one_line() -> None:
    method, _, _ = _setup()
    spec = ModelSpec({"a": (6,), "b": (4,)}, {"a": "mlp", "b": "mlp"}, 8, "sum", 3)
    with pytest.raises(ConfigError, match="model.fusion"):
        method.build_model(spec)


def test_a_trial_reports_true_class_logits(tmp_path) -> None:
    run_trial(tiny_config("mmcosine", epochs=1, eval={"missing": False}), JsonlReporter(tmp_path))
    row = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    for m in ("pix", "fou"):
        assert abs(row[f"train/mmcosine/true_logit/{m}"]) <= 10.0 and math.isfinite(row["train/loss"])
