"""LFM's mechanism: the InfoNCE and JS terms by hand, the trade-off moves by the one-step hypergradient
rule in the right direction (pure function and inside the epoch hook, against gradients built here),
the alignment gradient reaches both encoders, the step's loss is 2[(1-a) CE + a align], and a trial
learns a on the held-out part of train only; the heuristic (paper) and fitted (official) schedules give
their values, the heuristic decreasing, set a each epoch without held-out data, and resume exactly."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from conftest import interrupted_then_resumed, tiny_config
from torch.utils.data import DataLoader, TensorDataset

from trainables.loop import run_trial
from trainables.methods.base import EpochContext, MethodContext, StepState
from trainables.methods.lfm import (
    LFM,
    LFMParams,
    alignment_loss,
    alpha_update,
    fitted_alpha,
    flat_grad,
    heuristic_alpha,
    info_nce,
    js_divergence,
)
from trainables.models.classifier import ModelSpec
from trainables.reporting import JsonlReporter
from trainables.sampling import holdout_split

SPEC = ModelSpec({"a": (6,), "b": (4,)}, {"a": "mlp", "b": "mlp"}, 8, "concat", 3)
F = torch.nn.functional


def test_info_nce_by_hand() -> None:
    a = torch.tensor([[2.0, 0.0], [0.0, 3.0]])  # normalises to e1, e2
    b = torch.tensor([[1.0, 1.0], [0.0, -1.0]])  # normalises to (e1 + e2)/sqrt2, -e2
    s = 1 / math.sqrt(2)
    sim = torch.tensor([[s, 0.0], [s, -1.0]]) / 0.5  # sim[i, j] = <a_i, b_j> / tau
    row = [-math.log(math.exp(sim[0, 0]) / (math.exp(sim[0, 0]) + math.exp(sim[0, 1])))]
    row.append(-math.log(math.exp(sim[1, 1]) / (math.exp(sim[1, 0]) + math.exp(sim[1, 1]))))
    col = [-math.log(math.exp(sim[0, 0]) / (math.exp(sim[0, 0]) + math.exp(sim[1, 0])))]
    col.append(-math.log(math.exp(sim[1, 1]) / (math.exp(sim[0, 1]) + math.exp(sim[1, 1]))))
    want = 0.5 * (sum(row) / 2 + sum(col) / 2)
    assert info_nce(a, b, 0.5).item() == pytest.approx(want, rel=1e-5)
    assert info_nce(a, a * 5, 0.1) < info_nce(a, a.flip(0), 0.1)  # matched pairs: lower loss


def test_js_divergence_by_hand() -> None:
    p = torch.tensor([[0.7, 0.2, 0.1]])
    q = torch.tensor([[0.1, 0.3, 0.6]])
    m = 0.5 * (p + q)
    want = 0.5 * ((p * (p / m).log()).sum() + (q * (q / m).log()).sum())
    assert js_divergence(p.log(), q.log()).item() == pytest.approx(want.item(), rel=1e-5)
    assert js_divergence(p.log(), p.log() + 3).item() == pytest.approx(0.0, abs=1e-7)  # same distribution


def test_alpha_moves_by_the_rule_and_toward_the_term_that_helps_held_out() -> None:
    g_ce, g_align = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    # held-out CE gradient agrees with the alignment gradient: dL_held/da = -(g_held . (g_align - g_ce)) < 0
    a, hyper = alpha_update(0.3, torch.tensor([0.0, 2.0]), g_ce, g_align, lr=0.01, lo=0.05, hi=0.95)
    assert hyper == pytest.approx(-2.0) and a == pytest.approx(0.3 + 0.01 * 2.0)
    # it agrees with the CE gradient: the alignment weight falls
    a, hyper = alpha_update(0.3, torch.tensor([3.0, 0.0]), g_ce, g_align, lr=0.01, lo=0.05, hi=0.95)
    assert hyper == pytest.approx(3.0) and a == pytest.approx(0.3 - 0.03)
    assert alpha_update(0.3, torch.tensor([0.0, 1e3]), g_ce, g_align, 1.0, 0.05, 0.95)[0] == 0.95  # clipped
    assert alpha_update(0.3, torch.tensor([1e3, 0.0]), g_ce, g_align, 1.0, 0.05, 0.95)[0] == 0.05


@pytest.mark.parametrize("align", ["contrastive", "js"])
def test_epoch_hook_applies_the_rule_with_held_out_and_train_gradients(align) -> None:
    torch.manual_seed(0)
    params = LFMParams(align=align, lr_alpha=0.05, alpha_init=0.5, halve_every=0)
    method = LFM(params, MethodContext(["a", "b"], 3, 4, torch.device("cpu"), seed=1))
    model = method.build_model(SPEC)
    g = torch.Generator().manual_seed(2)
    xa, xb, y = torch.randn(40, 6, generator=g), torch.randn(40, 4, generator=g), torch.arange(40) % 3
    data = TensorDataset(xa, xb, y)

    def subset(idx):  # the whole subset in one batch, so the gradients below are the same sums
        return DataLoader(torch.utils.data.Subset(data, list(idx)), batch_size=len(idx))

    def to_device(raw):
        return {"inputs": {"a": raw[0], "b": raw[1]}, "label": raw[2]}

    ctx = EpochContext(3, DataLoader(data), torch.device("cpu"), to_device, train_subset=subset)
    train, held = holdout_split(40, params.holdout_fraction, 1)
    pick = torch.Generator().manual_seed(1 * 1000003 + 3)
    sample = sorted(train[i] for i in torch.randperm(len(train), generator=pick)[: len(held)].tolist())
    ps = list(model.parameters())
    model.eval()
    g_held = flat_grad(F.cross_entropy(model({"a": xa[held], "b": xb[held]}).logits, y[held]), ps)
    out = model({"a": xa[sample], "b": xb[sample]})
    g_ce = flat_grad(F.cross_entropy(out.logits, y[sample]), ps)
    g_align = flat_grad(alignment_loss(model({"a": xa[sample], "b": xb[sample]}), align, params.tau), ps)
    want = 0.5 + 0.05 * float(g_held @ (g_align - g_ce))
    logs = method.on_epoch_start(model, ctx)
    assert method.alpha == pytest.approx(min(0.95, max(0.05, want)), rel=1e-4)
    assert method.alpha != 0.5 and logs["lfm/alpha"] == method.alpha
    assert logs["lfm/hypergrad"] == pytest.approx(-float(g_held @ (g_align - g_ce)), rel=1e-4)


@pytest.mark.parametrize("align", ["contrastive", "js"])
def test_alignment_gradient_reaches_both_encoders(align) -> None:
    torch.manual_seed(0)
    method = LFM(LFMParams(align=align), MethodContext(["a", "b"], 3, 4, torch.device("cpu")))
    model = method.build_model(SPEC)
    x = {"a": torch.randn(8, 6), "b": torch.randn(8, 4)}
    alignment_loss(model(x), align, 0.4).backward()
    for m in ("a", "b"):
        grads = [p.grad for p in model.encoders[m].parameters()]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), f"no alignment gradient in encoder {m}"


def test_step_minimises_the_weighted_sum() -> None:
    torch.manual_seed(0)
    method = LFM(LFMParams(), MethodContext(["a", "b"], 3, 4, torch.device("cpu")))
    model = method.build_model(SPEC)
    method.alpha = 0.3
    x, y = {"a": torch.randn(16, 6), "b": torch.randn(16, 4)}, torch.arange(16) % 3
    ref = copy.deepcopy(model)
    out = ref(x)
    (2 * (0.7 * F.cross_entropy(out.logits, y) + 0.3 * info_nce(out.features["a"], out.features["b"], 0.4))).backward()
    opt = {"main": torch.optim.SGD(model.parameters(), lr=0.0)}
    stats = method.training_step(
        model, {"inputs": x, "label": y, "index": torch.arange(16)}, opt, StepState(0, 0, 1, 0)
    )
    assert stats["lfm/alpha"] == 0.3
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad)


def test_a_trial_learns_alpha_on_held_out_train_only(tmp_path) -> None:
    method = LFM(LFMParams(), MethodContext(["a", "b"], 3, 4, torch.device("cpu"), seed=3))
    assert method.train_indices(0, 100) == holdout_split(100, 0.1, 3)[0]
    cfg = tiny_config("lfm", epochs=2, params={"lr_alpha": 0.01, "alpha_init": 0.5}, eval={"missing": False})
    run_trial(cfg, JsonlReporter(tmp_path))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["train/lfm/alpha"] != pytest.approx(0.5)  # moved at the start of epoch 0
    assert rows[1]["train/lfm/alpha"] != rows[0]["train/lfm/alpha"]
    assert "train/lfm/align" in rows[0] and "train/lfm/hypergrad" in rows[1]


def test_heuristic_schedule_values_and_monotone() -> None:
    # paper: a_t = 1 - exp(-1/t), t the 1-based epoch
    assert heuristic_alpha(0, 12) == pytest.approx(1 - math.exp(-1.0))  # 0.632
    assert heuristic_alpha(1, 12) == pytest.approx(1 - math.exp(-0.5))  # 0.393
    assert heuristic_alpha(9, 12) == pytest.approx(1 - math.exp(-0.1))  # 0.095
    assert heuristic_alpha(99, 200) == pytest.approx(0.00995, abs=1e-5)  # ~1/t late
    # the same curve whatever the trial length on the epoch clock; the progress clock spans (0, 1]
    assert heuristic_alpha(4, 12) == heuristic_alpha(4, 200)
    assert heuristic_alpha(11, 12, "progress") == pytest.approx(1 - math.exp(-1.0))
    assert heuristic_alpha(0, 12, "progress") == pytest.approx(1 - math.exp(-12.0))
    assert heuristic_alpha(5, 12, "progress") == heuristic_alpha(99, 200, "progress")  # half way: 1 - e^-2
    for clock in ("epoch", "progress"):
        vals = [heuristic_alpha(e, 30, clock) for e in range(30)]
        assert all(0 < b < a < 1 for a, b in zip(vals, vals[1:], strict=False)), clock


def test_fitted_schedule_is_the_official_curve_scaled_to_the_trial() -> None:
    assert fitted_alpha(0, 200) == pytest.approx(0.795376296)
    assert fitted_alpha(80, 200) == pytest.approx(0.4998, abs=1e-3)  # CE weight 0.5 at 80 of 200
    assert fitted_alpha(6, 12) == pytest.approx(fitted_alpha(100, 200))  # half way in either trial
    assert fitted_alpha(180, 200) == 0.0  # the fit dips below zero there: clipped
    assert fitted_alpha(199, 200) == pytest.approx(0.0840, abs=1e-3)  # and rises at the end


@pytest.mark.parametrize("strategy", ["heuristic", "fitted"])
def test_schedule_sets_alpha_in_the_hook_and_trains_on_all_of_train(strategy) -> None:
    method = LFM(LFMParams(strategy=strategy), MethodContext(["a", "b"], 3, 10, torch.device("cpu"), seed=3))
    assert method.train_indices(0, 100) is None  # no held-out part: every training sample is trained on
    want = heuristic_alpha if strategy == "heuristic" else fitted_alpha
    assert method.alpha == pytest.approx(want(0, 10))
    ctx = EpochContext(4, DataLoader(TensorDataset(torch.zeros(2))), torch.device("cpu"), lambda r: r)
    logs = method.on_epoch_start(None, ctx)  # no gradients taken: the model is not needed
    assert method.alpha == pytest.approx(want(4, 10)) and logs == {"lfm/alpha": method.alpha}


def test_a_heuristic_trial_follows_the_schedule(tmp_path) -> None:
    cfg = tiny_config("lfm", epochs=3, params={"strategy": "heuristic"}, eval={"missing": False})
    run_trial(cfg, JsonlReporter(tmp_path))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    got = [r["train/lfm/alpha"] for r in rows if "train/lfm/alpha" in r]
    assert got == pytest.approx([heuristic_alpha(e, 3) for e in range(3)])
    assert not any("train/lfm/hypergrad" in r for r in rows)


def test_heuristic_resume_mid_run_gives_the_same_final_metrics(tmp_path) -> None:
    cfg = tiny_config("lfm", epochs=3, params={"strategy": "heuristic"})
    straight, resumed = interrupted_then_resumed(cfg, tmp_path, stop_after=2)
    assert resumed == straight
