"""The common evaluation protocol's math: a linear probe and exact Shapley values.

Both are computed identically for every method, whatever its heads, so they compare like with like
(``test/probe/acc/<m>``, ``test/shapley/<m>``; the trial glue is :mod:`trainables.protocol`).

**Linear probe recipe** (fixed; the same for every method, dataset and seed):

1. features: the frozen encoder's output (``model.encode``, eval mode) of every sample of the train
   split and of the test split, in float64 on the CPU;
2. standardised with the train features' per-dimension mean and standard deviation (floor 1e-6),
   so that one L2 strength means the same for every method's feature scale;
3. multinomial logistic regression with a bias, weights initialised at zero, loss = mean
   cross-entropy + ``PROBE_L2 / 2 * ||W||^2`` (the bias is not penalised), minimised full-batch by
   L-BFGS (strong-Wolfe line search, history 20) for at most ``PROBE_ITERS`` iterations;
4. accuracy of the argmax on the test split.

Zero init, full batch, float64 on the CPU and no randomness make the fit deterministic: the same
features give the same probe bit for bit.

**Shapley values** of the modalities on an accuracy ``v(S)`` known for every subset ``S``
(including the empty one): ``phi_m = sum_S |S|! (M-|S|-1)! / M! * (v(S + m) - v(S))`` over the
subsets ``S`` without ``m``; exact, they sum to ``v(all) - v(empty)``.
"""

from __future__ import annotations

import torch

PROBE_L2 = 1e-3
PROBE_ITERS = 100


def standardise(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Train and other features scaled by the train mean and std (per dimension, std floor 1e-6)."""
    mean, std = train.mean(0), train.std(0, unbiased=False).clamp_min(1e-6)
    return [(x - mean) / std for x in (train, *others)]


def fit_logistic(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float = PROBE_L2, iters: int = PROBE_ITERS
) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-regularised multinomial logistic regression by full-batch L-BFGS from zero; returns ``(W, b)``."""
    x, y = x.double().cpu(), y.long().cpu()
    w = torch.zeros(x.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b],
        lr=1.0,
        max_iter=iters,
        history_size=20,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w + b, y) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach(), b.detach()


def probe_accuracy(
    train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, num_classes: int
) -> float:
    """Test accuracy of the linear probe (module recipe) fitted on the train features."""
    tr, te = standardise(train_x.double().cpu(), test_x.double().cpu())
    w, b = fit_logistic(tr, train_y, num_classes)
    return (te @ w + b).argmax(1).eq(test_y.long().cpu()).double().mean().item()
