"""Math of MIE's forward phase (SAM) and backward phase (flat-direction gradient modification).

Helper module of ``trainables/methods/mie.py`` (small functions that tests call directly).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from trainables.runtime import to_device_without_sync


def sam_gradient(
    params: list[nn.Parameter],
    closure: Callable[[], torch.Tensor],
    rho: float,
    flat_ratio: float,
    buffers: Iterable[torch.Tensor] = (),
) -> torch.Tensor:
    """Turn the gradients in ``p.grad`` (at ``w``) into ``(1 - flat_ratio) g + flat_ratio grad L(w + eps)``.

    ``eps = rho g / ||g||`` (global norm over ``params``). The weights and ``buffers`` are restored
    from copies afterwards, so they are bit-identical to their values before the call.

    Returns:
        the loss at the perturbed point (detached; no host-device synchronisation).
    """
    params = [p for p in params if p.grad is not None]
    grads = [p.grad.detach().clone() for p in params]
    saved = [p.detach().clone() for p in params]
    buffers = list(buffers)
    saved_buffers = [b.detach().clone() for b in buffers]
    if not grads:
        return closure().detach()
    norm = torch.linalg.vector_norm(torch.stack([g.float().norm() for g in grads]))
    scale = rho / (norm + 1e-12)
    with torch.no_grad():
        for p, g in zip(params, grads, strict=True):
            p.add_(g * scale.to(g.dtype))
            p.grad = None
    loss_p = closure()
    loss_p.backward()
    with torch.no_grad():
        for p, w in zip(params, saved, strict=True):
            p.copy_(w)
        for b, v in zip(buffers, saved_buffers, strict=True):
            b.copy_(v)
        for p, g in zip(params, grads, strict=True):
            gp = p.grad if p.grad is not None else torch.zeros_like(g)
            p.grad = g * (1.0 - flat_ratio) + gp * flat_ratio
    return loss_p.detach()


def flat_projector(cov: torch.Tensor, tau: float) -> torch.Tensor:
    """``U diag(exp(-tau (lambda - lambda_min) / (lambda_max - lambda_min))) U^T`` of a (d x d) PSD matrix."""
    lam, U = torch.linalg.eigh(cov.double())
    span = (lam[-1] - lam[0]).clamp_min(1e-12)
    w = torch.exp(-tau * (lam - lam[0]) / span)
    return (U * w) @ U.t()


def centred_covariance(features: torch.Tensor) -> torch.Tensor:
    """Sample covariance of the rows of ``features`` (float64)."""
    x = features.detach().double()
    x = x - x.mean(0, keepdim=True)
    return x.t() @ x / max(x.shape[0] - 1, 1)


def soft_projector(features: torch.Tensor, tau: float) -> torch.Tensor:
    """:func:`flat_projector` of the centred covariance of ``features`` (rows = samples), in their dtype."""
    return flat_projector(centred_covariance(features), tau).to(features.dtype)


def moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(sum_i x_i, sum_i x_i x_i^T, n)`` of the rows of ``x`` in float64: additive over batches and ranks."""
    x = x.detach().double()
    n = torch.full((), float(x.shape[0]), dtype=torch.float64, device=x.device)  # a fill: no host-to-device copy
    return x.sum(0), x.t() @ x, n


def covariance_from_moments(s1: torch.Tensor, s2: torch.Tensor, n: torch.Tensor, centred: bool) -> torch.Tensor:
    """Centred sample covariance, or the uncentred second moment ``s2 / n``, from :func:`moments` sums."""
    if not centred:
        return s2 / n.clamp_min(1)
    mean = s1 / n.clamp_min(1)
    return (s2 - n * torch.outer(mean, mean)) / (n - 1).clamp_min(1)


def linear_inputs(head: nn.Sequential, features: torch.Tensor) -> list[torch.Tensor]:
    """The input of every ``nn.Linear`` of ``head`` when it reads ``features`` (no gradient)."""
    out, x = [], features
    with torch.no_grad():
        for layer in head:
            if isinstance(layer, nn.Linear):
                out.append(x)
            x = layer(x)
    return out


def mixup(x: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(lam x + (1 - lam) x[perm], perm, lam)`` with ``lam ~ Beta(alpha, alpha)`` (Zhang et al., 2018).

    Torch's global RNG (checkpointed by the loop); ``alpha = 0`` returns ``x`` unmixed (``lam = 1``).
    ``lam`` is drawn on the CPU (the CPU generator, as always) and reaches the device without a host
    sync: no argument validation (``alpha > 0`` holds; its checks read tensors on the host) and a
    non-blocking copy from pinned memory (a pageable copy waits for the device's queue).
    """
    if alpha <= 0:
        return x, torch.arange(x.shape[0], device=x.device), torch.ones((), device=x.device)
    conc = torch.tensor(float(alpha))
    lam = to_device_without_sync(torch.distributions.Beta(conc, conc, validate_args=False).sample(), x.device)
    perm = torch.randperm(x.shape[0], device=x.device)
    return lam * x + (1 - lam) * x[perm], perm, lam
