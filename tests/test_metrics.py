import math

import pytest
import torch

from trainables.metrics import (
    EvalAccumulator,
    acc_gap,
    accuracy,
    confusion_matrix,
    macro_f1,
    modality_subsets,
    score_ratio,
    true_class_score,
)


def test_confusion_accuracy_and_macro_f1_by_hand():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    preds = torch.tensor([0, 1, 1, 1, 0, 2])
    cm = confusion_matrix(preds, labels, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert accuracy(cm) == pytest.approx(4 / 6)
    # F1 per class: c0 p=1/2 r=1/2 -> 1/2; c1 p=2/3 r=1 -> 0.8; c2 p=1 r=1/2 -> 2/3
    assert macro_f1(cm) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)


def test_macro_f1_skips_classes_absent_everywhere():
    cm = confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 1]), 4)
    assert macro_f1(cm) == pytest.approx(1.0)


def test_true_class_score_and_ratio():
    logits = torch.log(torch.tensor([[0.7, 0.3], [0.2, 0.8], [0.6, 0.4]]))
    labels = torch.tensor([0, 1, 1])
    assert true_class_score(logits, labels).item() == pytest.approx(0.7 + 0.8 + 0.4)
    assert score_ratio({"a": 3.0, "b": 1.5}) == pytest.approx(2.0)
    assert score_ratio({"a": 1.5, "b": 3.0}) == pytest.approx(2.0)  # dominant over weak, whichever it is
    assert math.isinf(score_ratio({"a": 1.0, "b": 0.0}))
    assert acc_gap({"a": 0.9, "b": 0.55, "c": 0.7}) == pytest.approx(0.35)


def test_modality_subsets_every_nonempty_subset():
    assert modality_subsets(["a", "b", "c"]) == [
        ("a",),
        ("b",),
        ("c",),
        ("a", "b"),
        ("a", "c"),
        ("b", "c"),
        ("a", "b", "c"),
    ]


def test_accumulator_matches_direct_computation_and_reduces_as_sum():
    torch.manual_seed(0)
    labels = torch.randint(0, 3, (20,))
    fused, la, lb = torch.randn(20, 3), torch.randn(20, 3), torch.randn(20, 3)
    acc = EvalAccumulator(["a", "b"], 3, [("a",)])
    acc.update(fused[:12], {"a": la[:12], "b": lb[:12]}, labels[:12])
    acc.update(fused[12:], {"a": la[12:], "b": lb[12:]}, labels[12:])
    acc.update_missing(("a",), la, labels)
    out = acc.compute("val")
    assert out["val/acc"] == pytest.approx((fused.argmax(1) == labels).float().mean().item())
    assert out["val/acc/a"] == pytest.approx((la.argmax(1) == labels).float().mean().item())
    assert out["val/missing/a/acc"] == pytest.approx(out["val/acc/a"])
    sa, sb = true_class_score(la, labels).item(), true_class_score(lb, labels).item()
    assert out["val/imbalance/score_ratio"] == pytest.approx(max(sa, sb) / min(sa, sb))
    assert out["val/loss"] == pytest.approx(torch.nn.functional.cross_entropy(fused, labels).item(), rel=1e-6)
    # a fake 2-rank all-reduce doubles every statistic: ratios stay, counts double
    acc.reduce(lambda t: t.mul_(2))
    again = acc.compute("val")
    assert again["val/acc"] == pytest.approx(out["val/acc"]) and int(acc.count) == 40


def test_a_modality_without_logits_is_not_reported():
    labels = torch.tensor([0, 1, 1])
    acc = EvalAccumulator(["a", "b"], 2)
    acc.update(torch.randn(3, 2), {"a": torch.randn(3, 2)}, labels)
    out = acc.compute("test")
    assert "test/acc/a" in out and "test/acc/b" not in out and "test/imbalance/score_ratio" not in out


def test_per_modality_scores_and_the_dominant_modality_are_reported():
    labels = torch.tensor([0, 1, 2, 0])
    strong = torch.nn.functional.one_hot(labels, 3).float() * 5  # confident and right
    weak = torch.zeros(4, 3)  # uniform: score 1/3
    acc = EvalAccumulator(["a", "b"], 3)
    acc.update(strong, {"a": weak, "b": strong}, labels)
    out = acc.compute("val")
    assert out["val/score/a"] == pytest.approx(1 / 3)
    assert out["val/score/b"] == pytest.approx(true_class_score(strong, labels).item() / 4)
    assert out["val/imbalance/score_ratio"] == pytest.approx(out["val/score/b"] / out["val/score/a"])
    assert out["val/imbalance/dominant"] == "b"
    flipped = EvalAccumulator(["a", "b"], 3)
    flipped.update(strong, {"a": strong, "b": weak}, labels)
    assert flipped.compute("val")["val/imbalance/dominant"] == "a"
