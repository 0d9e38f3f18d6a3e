"""MMPareto's mechanism: the weights (equal without conflict, MGDA min-norm with it) and the rescale by
hand, a conflicting batch gives finite gradients with non-zero weights (BalanceMM's port gives NaN),
the step's encoder gradients are the integration of separately computed multimodal and unimodal
gradients while the heads keep their plain gradients, and absent features are zeroed at evaluation."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from conftest import tiny_config

from trainables.loop import run_trial
from trainables.methods.base import MethodContext, StepState
from trainables.methods.mmpareto import MMPareto, MMParetoParams, combine, pareto_weights
from trainables.models.classifier import ModelSpec
from trainables.reporting import JsonlReporter

SPEC = ModelSpec({"a": (6,), "b": (4,)}, {"a": "mlp", "b": "mlp"}, 8, "concat", 3)
F = torch.nn.functional


def _setup(**params):
    torch.manual_seed(0)
    method = MMPareto(MMParetoParams(**params), MethodContext(["a", "b"], 3, 2, torch.device("cpu")))
    model = method.build_model(SPEC)
    g = torch.Generator().manual_seed(1)
    x = {"a": torch.randn(16, 6, generator=g), "b": torch.randn(16, 4, generator=g)}
    return method, model, {"inputs": x, "label": torch.arange(16) % 3, "index": torch.arange(16)}


def test_weights_are_equal_without_conflict_and_min_norm_with_it() -> None:
    cos, w = pareto_weights(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0]))
    assert cos.item() == pytest.approx(1 / math.sqrt(2)) and w.item() == 0.5
    g_mm, g_u = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 2.0])
    cos, w = pareto_weights(g_mm, g_u)  # |g_u|^2 = 5, g_mm.g_u = -1, |g_mm - g_u|^2 = 8
    assert cos.item() < 0 and w.item() == pytest.approx(6 / 8)
    d = w * g_mm + (1 - w) * g_u  # the min-norm point is equally aligned with both, and with both positively
    assert d.dot(g_mm).item() == pytest.approx(d.dot(g_u).item()) and d.dot(g_mm).item() > 0
    assert pareto_weights(torch.zeros(2), torch.tensor([1.0, 1.0]))[1].item() == pytest.approx(0.999)  # official edge
    assert pareto_weights(torch.zeros(2), torch.zeros(2))[1].item() == 0.5  # no NaN on zero gradients


def test_combined_gradient_is_rescaled_up_to_the_sum_norm_times_alpha() -> None:
    g_mm, g_u = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 2.0])
    out = combine(g_mm, g_u, torch.tensor(0.75), alpha=1.5)  # 2 (0.75 g_mm + 0.25 g_u) = [1, 1]; |g_mm + g_u| = 2
    torch.testing.assert_close(out, 1.5 * math.sqrt(2) * torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(combine(g_mm, g_u, torch.tensor(0.5), 1.5), 1.5 * (g_mm + g_u))  # no conflict
    big = combine(torch.tensor([3.0, 0.0]), torch.tensor([-1.0, 0.0]), torch.tensor(0.999), 1.0)
    torch.testing.assert_close(big, 2 * (0.999 * torch.tensor([3.0, 0.0]) + 0.001 * torch.tensor([-1.0, 0.0])))


def _hand_gradients(model, batch):
    """Each loss differentiated alone on a copy, as the official code's separate backward passes."""
    y, grads = batch["label"], {}
    for key in ("mm", "a", "b"):
        ref = copy.deepcopy(model)
        out = ref(batch["inputs"])
        logits = out.logits if key == "mm" else out.modality_logits[key]
        F.cross_entropy(logits, y).backward()
        grads[key] = {
            n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for n, p in ref.named_parameters()
        }
    return grads


@pytest.mark.parametrize("conflict", [False, True])
def test_step_integrates_each_encoders_two_gradients(conflict) -> None:
    method, model, batch = _setup()
    sign = -1.0 if conflict else 1.0  # unimodal heads pointing with / against the fused head's slices
    with torch.no_grad():
        for m, sl in model.head.slices().items():
            model.uni_heads[m].weight.copy_(sign * model.head.fc.weight[:, sl])
            model.uni_heads[m].bias.zero_()
    hand = _hand_gradients(model, batch)
    opt = {"main": torch.optim.SGD(model.parameters(), lr=0.0)}
    stats = method.training_step(model, batch, opt, StepState(0, 0, 1, 0))
    for m in "ab":
        assert (stats[f"mmpareto/cos/{m}"].item() <= 0) == conflict
    for m in "ab":
        names = [n for n, _ in model.named_parameters() if n.startswith(f"encoders.{m}.")]
        g_mm = torch.cat([hand["mm"][n].flatten() for n in names])
        g_u = torch.cat([hand[m][n].flatten() for n in names])
        cos, w = pareto_weights(g_mm, g_u)
        assert stats[f"mmpareto/weight_mm/{m}"].item() == pytest.approx(w.item())
        assert 0 < w.item() < 1
        for n in names:
            got = dict(model.named_parameters())[n].grad
            assert torch.isfinite(got).all()
            torch.testing.assert_close(got, combine(hand["mm"][n], hand[m][n], w, 1.5))
    if conflict:  # the min-norm weight, not the equal split; BalanceMM's (0, 0) would give NaN here
        assert all(stats[f"mmpareto/weight_mm/{m}"].item() != 0.5 for m in "ab")
    for n, p in model.named_parameters():  # heads: the plain gradient of the summed loss
        if n.startswith(("head.", "uni_heads.")):
            torch.testing.assert_close(p.grad, hand["mm"][n] + hand["a"][n] + hand["b"][n])


def test_absent_modality_features_are_zeroed_in_the_fused_head_at_evaluation() -> None:
    method, model, batch = _setup()
    model.eval()
    x = batch["inputs"]
    out = method.predict(model, x, present=["a"])
    hand = model.head({"a": model.encoders["a"](x["a"]), "b": torch.zeros(16, 8)})[0]
    torch.testing.assert_close(out.logits, hand)
    torch.testing.assert_close(out.modality_logits["b"], model.uni_heads["b"](model.encoders["b"](x["b"])))
    torch.testing.assert_close(method.predict(model, x).logits, model(x).logits)


def test_a_trial_reports_cosines_and_weights(tmp_path) -> None:
    run_trial(tiny_config("mmpareto", epochs=1, eval={"missing": False}), JsonlReporter(tmp_path))
    row = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    for m in ("pix", "fou"):
        assert -1 <= row[f"train/mmpareto/cos/{m}"] <= 1
        assert 0 < row[f"train/mmpareto/weight_mm/{m}"] < 1
        assert math.isfinite(row["train/loss"])
