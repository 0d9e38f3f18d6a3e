"""The common protocol's math: the linear probe recipe and exact Shapley values (issue 9)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from trainables.probe import PROBE_L2, fit_logistic, probe_accuracy, standardise
from trainables.shapley import shapley


def _blobs(n: int, d: int, k: int, sep: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, d, generator=g) * sep
    y = torch.arange(n) % k
    return centres[y] + torch.randn(n, d, generator=g), y


def test_the_probe_fit_is_the_regularised_optimum():
    x, y = _blobs(120, 5, 3, 1.0, 0)
    (x,) = standardise(x)
    w, b = fit_logistic(x, y, 3)
    w.requires_grad_(True)
    b.requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(x.double() @ w + b, y) + 0.5 * PROBE_L2 * (w * w).sum()
    gw, gb = torch.autograd.grad(loss, (w, b))
    assert gw.abs().max() < 1e-5 and gb.abs().max() < 1e-5  # stationary point of a convex loss: the optimum


def test_the_probe_is_deterministic_and_separates_separable_data():
    tr_x, tr_y = _blobs(200, 8, 4, 3.0, 1)
    te_x, te_y = _blobs(200, 8, 4, 3.0, 1)  # same centres (same seed), the test draw
    a = probe_accuracy(tr_x, tr_y, te_x, te_y, 4)
    assert a == probe_accuracy(tr_x, tr_y, te_x, te_y, 4) and a > 0.95
    noise = torch.randn(200, 8, generator=torch.Generator().manual_seed(5))
    assert probe_accuracy(noise, tr_y, noise[:100], te_y[:100], 4) < 1.0  # nothing to learn from the test's view


def test_standardise_uses_train_statistics_only():
    tr, te = standardise(torch.tensor([[1.0, 5.0], [3.0, 5.0]]), torch.tensor([[2.0, 7.0]]))
    assert torch.allclose(tr.mean(0), torch.zeros(2)) and te[0, 0] == 0.0
    assert te[0, 1] == pytest.approx(2.0 / 1e-6)  # a constant train dimension: std floor


def test_shapley_by_hand_for_two_modalities():
    v = {frozenset(): 0.1, frozenset("a"): 0.7, frozenset("b"): 0.3, frozenset("ab"): 0.9}
    phi = shapley(["a", "b"], v.__getitem__)
    assert phi["a"] == pytest.approx(0.5 * (0.7 - 0.1) + 0.5 * (0.9 - 0.3))
    assert phi["b"] == pytest.approx(0.5 * (0.3 - 0.1) + 0.5 * (0.9 - 0.7))


def test_shapley_axioms_for_three_modalities():
    mods = ["a", "b", "c"]
    g = torch.Generator().manual_seed(0)
    v = {frozenset(s): torch.rand((), generator=g).item() for r in range(4) for s in itertools.combinations(mods, r)}
    phi = shapley(mods, v.__getitem__)
    assert sum(phi.values()) == pytest.approx(v[frozenset(mods)] - v[frozenset()])  # efficiency
    # a dummy modality (adds nothing to any coalition) gets 0; the others share as in the 2-player game
    dummy = {s: v[s - {"c"}] for s in v}
    phi = shapley(mods, dummy.__getitem__)
    assert phi["c"] == pytest.approx(0.0) and not math.isclose(phi["a"], 0.0)
