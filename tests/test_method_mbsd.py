"""MBSD's mechanism: the confidence-gap weight (zero when both modalities are wrong), the KL and MSE from the
more confident modality to the other on hand-made tensors, gradient reaching only the student modality's
encoder when the teacher is detached (and both when not), the epoch window, any number of modalities."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from conftest import tiny_config

from trainables.errors import ConfigError
from trainables.loop import run_trial
from trainables.methods.base import MethodContext, StepState
from trainables.methods.mbsd import (
    MBSD,
    MBSDParams,
    distillation,
    kl_teacher_student,
    mse_teacher_student,
    pair_weight,
    teacher_student,
)
from trainables.models.classifier import ModelSpec
from trainables.reporting import JsonlReporter

F = torch.nn.functional


def _probs(rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_weight_is_the_confidence_gap_when_one_is_right_and_zero_when_both_are_wrong() -> None:
    y = torch.tensor([0, 0, 0, 1])
    pa = _probs([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.3, 0.6, 0.1], [0.1, 0.8, 0.1]])
    pb = _probs([[0.4, 0.5, 0.1], [0.1, 0.2, 0.7], [0.45, 0.35, 0.2], [0.3, 0.6, 0.1]])
    # 0: a right, gap 0.3; 1: both wrong -> 0 (gap would be 0.1); 2: b right, gap 0.15; 3: both right, gap 0.2
    torch.testing.assert_close(pair_weight(pa, pb, y), torch.tensor([0.3, 0.0, 0.15, 0.2]))
    torch.testing.assert_close(pair_weight(pb, pa, y), pair_weight(pa, pb, y))  # symmetric


def test_kl_and_mse_go_from_the_more_confident_modality_by_hand() -> None:
    y = torch.tensor([0, 1])
    pa = _probs([[0.8, 0.2], [0.6, 0.4]])
    pb = _probs([[0.5, 0.5], [0.1, 0.9]])
    log_t, log_s, a_teaches = teacher_student(pa.log(), pb.log(), y, detach_teacher=True)
    assert a_teaches.tolist() == [True, False]  # sample 0: a (0.8 > 0.5); sample 1: b (0.9 > 0.4)
    kl0 = 0.8 * math.log(0.8 / 0.5) + 0.2 * math.log(0.2 / 0.5)
    kl1 = 0.1 * math.log(0.1 / 0.6) + 0.9 * math.log(0.9 / 0.4)
    torch.testing.assert_close(kl_teacher_student(log_t, log_s), torch.tensor([kl0, kl1]))
    mse0, mse1 = (0.3**2 + 0.3**2) / 2, (0.5**2 + 0.5**2) / 2
    torch.testing.assert_close(mse_teacher_student(log_t, log_s), torch.tensor([mse0, mse1]))


def test_pair_terms_are_weighted_means_and_pairs_are_averaged() -> None:
    y = torch.tensor([0, 1])
    pa = _probs([[0.8, 0.2], [0.6, 0.4]])
    pb = _probs([[0.5, 0.5], [0.1, 0.9]])
    w = pair_weight(pa, pb, y)  # [0.3, 0.5]
    log_t, log_s, _ = teacher_student(pa.log(), pb.log(), y, True)
    terms = distillation({"a": pa.log(), "b": pb.log()}, y)
    torch.testing.assert_close(terms["kl"], (w * kl_teacher_student(log_t, log_s)).mean())
    torch.testing.assert_close(terms["mse"], (w * mse_teacher_student(log_t, log_s)).mean())
    assert terms["teacher/a"].item() == pytest.approx(0.5) and terms["teacher/b"].item() == pytest.approx(0.5)
    # three modalities: the mean over the three pairs
    pc = _probs([[0.3, 0.7], [0.5, 0.5]])
    z = {"a": pa.log(), "b": pb.log(), "c": pc.log()}
    three = distillation(z, y)
    pairs = [distillation({m: z[m], n: z[n]}, y) for m, n in (("a", "b"), ("a", "c"), ("b", "c"))]
    torch.testing.assert_close(three["kl"], torch.stack([p["kl"] for p in pairs]).mean())
    torch.testing.assert_close(three["mse"], torch.stack([p["mse"] for p in pairs]).mean())


def test_kl_is_zero_for_identical_predictions_and_nonnegative() -> None:
    torch.manual_seed(0)
    z = torch.randn(32, 5)
    y = torch.randint(0, 5, (32,))
    terms = distillation({"a": z, "b": z.clone()}, y)
    assert terms["kl"].item() == pytest.approx(0.0, abs=1e-7) and terms["weight"].item() == 0.0
    other = distillation({"a": z, "b": torch.randn(32, 5)}, y)
    assert other["kl"].item() > 0 and other["mse"].item() > 0


def _setup(modalities=("a", "b"), **params):
    torch.manual_seed(0)
    dims = {"a": 6, "b": 4, "c": 5}
    spec = ModelSpec({m: (dims[m],) for m in modalities}, {m: "mlp" for m in modalities}, 8, "concat", 3)
    method = MBSD(MBSDParams(**params), MethodContext(list(modalities), 3, 4, torch.device("cpu")))
    model = method.build_model(spec)
    g = torch.Generator().manual_seed(1)
    x = {m: torch.randn(16, dims[m], generator=g) for m in modalities}
    return method, model, {"inputs": x, "label": torch.arange(16) % 3, "index": torch.arange(16)}


def _encoder_grad_of_distillation(model, batch, detach_teacher):
    """Each encoder's summed absolute gradient from the distillation terms alone."""
    out = model(batch["inputs"])
    terms = distillation(out.modality_logits, batch["label"], detach_teacher)
    model.zero_grad()
    (terms["kl"] + terms["mse"]).backward()
    return {m: sum(p.grad.abs().sum().item() for p in model.encoders[m].parameters()) for m in model.encoders}


def test_gradient_reaches_only_the_student_when_the_teacher_is_detached() -> None:
    _, model, batch = _setup()
    y = batch["label"]
    with torch.no_grad():
        out = model(batch["inputs"])
        pa, pb = (out.modality_logits[m].softmax(1) for m in ("a", "b"))
        a_teaches = pa.gather(1, y[:, None]) >= pb.gather(1, y[:, None])
        w = pair_weight(pa, pb, y)
    # keep only samples where a is the teacher and the weight is non-zero: then only b may learn
    keep = (a_teaches.squeeze(1) & (w > 0)).nonzero().squeeze(1)
    assert len(keep) > 0
    sub = {"inputs": {m: v[keep] for m, v in batch["inputs"].items()}, "label": y[keep]}
    grads = _encoder_grad_of_distillation(model, sub, detach_teacher=True)
    assert grads["b"] > 0 and grads["a"] == 0
    both = _encoder_grad_of_distillation(model, sub, detach_teacher=False)
    assert both["b"] > 0 and both["a"] > 0  # the port's flow: the teacher moves too


def test_step_gradient_is_fused_and_unimodal_ce_plus_distillation() -> None:
    method, model, batch = _setup(kl_weight=2.0, mse_weight=3.0)
    ref = copy.deepcopy(model)
    y = batch["label"]
    out = ref(batch["inputs"])
    terms = distillation(out.modality_logits, y)
    uni = sum(F.cross_entropy(z, y) for z in out.modality_logits.values())
    (F.cross_entropy(out.logits, y) + uni + 2.0 * terms["kl"] + 3.0 * terms["mse"]).backward()
    assert terms["kl"].item() > 0 and terms["mse"].item() > 0
    opt = {"main": torch.optim.SGD(model.parameters(), lr=0.0)}
    stats = method.training_step(model, batch, opt, StepState(0, 0, 1, 0))
    assert stats["mbsd/active"] == 1.0 and stats["mbsd/kl"].item() == pytest.approx(terms["kl"].item(), rel=1e-5)
    for (n, p), q in zip(model.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, msg=n)


def test_epoch_window_turns_the_terms_on_and_off() -> None:
    method, model, batch = _setup(modulation_start=1, modulation_end=2)
    ref = copy.deepcopy(model)
    y = batch["label"]
    F.cross_entropy(ref(batch["inputs"]).logits, y).backward()
    opt = {"main": torch.optim.SGD(model.parameters(), lr=0.0)}
    assert [method.active(e) for e in range(4)] == [False, True, True, False]
    stats = method.training_step(model, batch, opt, StepState(0, 0, 1, 0))
    assert stats["mbsd/active"] == 0.0 and "mbsd/kl" not in stats
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):  # fused CE alone outside the window
        torch.testing.assert_close(p.grad, q.grad)
    stats = method.training_step(model, batch, opt, StepState(1, 0, 1, 0))
    assert stats["mbsd/active"] == 1.0 and stats["mbsd/kl"].item() > 0
    assert not all(torch.equal(p.grad, q.grad) for p, q in zip(model.parameters(), ref.parameters(), strict=True))
    with pytest.raises(ConfigError):
        MBSDParams(modulation_start=3, modulation_end=2)


def test_three_modalities_step() -> None:
    method, model, batch = _setup(("a", "b", "c"))
    opt = {"main": torch.optim.SGD(model.parameters(), lr=0.1)}
    stats = method.training_step(model, batch, opt, StepState(0, 0, 1, 0))
    assert torch.isfinite(stats["loss"]) and {"mbsd/teacher/c", "mbsd/ce/c"} <= set(stats)
    shares = sum(stats[f"mbsd/teacher/{m}"] for m in ("a", "b", "c"))
    assert shares.item() == pytest.approx(1.5)  # each pair gives out one teacher share; 3 pairs over 2 slots


def test_a_trial_reports_the_terms(tmp_path) -> None:
    run_trial(tiny_config("mbsd", epochs=1, eval={"missing": False}), JsonlReporter(tmp_path))
    row = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert row["train/mbsd/kl"] >= 0 and row["train/mbsd/mse"] >= 0 and 0 <= row["train/mbsd/weight"] <= 1
