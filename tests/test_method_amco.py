"""AMCo's mechanism: the sine mask-ratio ramp, modal significance shares by hand, a dependent modality is
masked in the fused path only (its unimodal loss sees it whole), dependence follows the shares and
resets each epoch, and evaluation never masks."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from conftest import tiny_config

from trainables.loop import run_trial
from trainables.methods.amco import AMCo, AMCoParams, mask_ratio, significance, unit_masks
from trainables.methods.base import MethodContext, StepState
from trainables.models.classifier import ModelSpec
from trainables.reporting import JsonlReporter

SPEC = ModelSpec({"a": (6,), "b": (4,)}, {"a": "mlp", "b": "mlp"}, 8, "concat", 3)
F = torch.nn.functional


def _setup(**params):
    torch.manual_seed(0)
    method = AMCo(AMCoParams(**params), MethodContext(["a", "b"], 3, 2, torch.device("cpu")))
    model = method.build_model(SPEC)
    g = torch.Generator().manual_seed(1)
    x = {"a": torch.randn(16, 6, generator=g), "b": torch.randn(16, 4, generator=g)}
    return method, model, {"inputs": x, "label": torch.arange(16) % 3, "index": torch.arange(16)}


def test_mask_ratio_rises_as_a_sine_over_eps() -> None:
    assert mask_ratio(0.0, 0.3) == 0.0
    assert mask_ratio(0.15, 0.3) == pytest.approx(math.sin(math.pi / 4))
    assert mask_ratio(0.3, 0.3) == mask_ratio(0.9, 0.3) == pytest.approx(1.0)


def test_significance_is_the_share_of_the_joint_softmax() -> None:
    logits = {"a": torch.tensor([[math.log(3.0), 0.0]]), "b": torch.tensor([[0.0, 0.0]])}
    share = significance(logits)  # exp: a -> 3, 1; b -> 1, 1
    assert share.tolist() == pytest.approx([4 / 6, 2 / 6])
    three = {m: torch.randn(5, 4) for m in "abc"}
    assert significance(three).sum().item() == pytest.approx(1)


def test_unit_masks_zero_round_ratio_times_d_units() -> None:
    torch.manual_seed(0)
    masks = unit_masks([10, 7], 0.35, torch.device("cpu"))
    assert [int((m == 0).sum()) for m in masks] == [4, 2]  # round(3.5) = 4 (half to even), round(2.45) = 2
    assert [int((m == 1).sum()) for m in masks] == [6, 5]


def test_dependent_modality_is_masked_in_the_fused_path_only() -> None:
    method, model, batch = _setup()
    ref = copy.deepcopy(model)
    method.dependent = torch.tensor([True, False])  # a is dependent; late in training the mask ratio is 1
    opt = {"main": torch.optim.SGD(model.parameters(), lr=0.0)}
    stats = method.training_step(model, batch, opt, StepState(1, 5, 10, 19))
    assert stats["amco/ratio"] == pytest.approx(1.0) and stats["amco/masked/a"] == 1.0 and stats["amco/masked/b"] == 0.0
    feats = ref.encode(batch["inputs"])
    y = batch["label"]
    fused, _ = ref.head({"a": torch.zeros_like(feats["a"]), "b": feats["b"]})
    _, per = ref.head(feats)
    (F.cross_entropy(fused, y) + F.cross_entropy(per["a"], y) + F.cross_entropy(per["b"], y)).backward()
    for (name, p), (_, q) in zip(model.named_parameters(), ref.named_parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, msg=name)
    _, per_masked = ref.head({"a": torch.zeros_like(feats["a"]), "b": feats["b"]})
    assert torch.equal(method.dependent, significance(per_masked) > 0.5)  # decided on the masked logits


def test_dependence_resets_each_epoch_and_evaluation_never_masks() -> None:
    method, model, batch = _setup()
    method.dependent = torch.tensor([True, False])
    method.on_epoch_start(model, None)
    assert not method.dependent.any()
    model.eval()
    method.dependent = torch.tensor([True, True])
    torch.testing.assert_close(method.predict(model, batch["inputs"]).logits, model(batch["inputs"]).logits)
    only_b = method.predict(model, batch["inputs"], present=["b"]).logits
    hand = model.head({"a": torch.zeros(16, 8), "b": model.encoders["b"](batch["inputs"]["b"])})[0]
    torch.testing.assert_close(only_b, hand)


def test_masking_acts_in_a_trial(tmp_path) -> None:
    cfg = tiny_config("amco", epochs=2, eval={"missing": False})
    run_trial(cfg, JsonlReporter(tmp_path))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        assert row["train/amco/share/pix"] + row["train/amco/share/fou"] == pytest.approx(1.0)
    assert max(rows[1]["train/amco/masked/pix"], rows[1]["train/amco/masked/fou"]) > 0.0
    assert rows[1]["train/amco/ratio"] > rows[0]["train/amco/ratio"] > 0.0
