"""OGM / OGM-GE: on-the-fly gradient modulation with generalization enhancement.

Peng, Wei, Deng, Wang, Hu, "Balanced Multimodal Learning via On-the-fly Gradient Modulation",
CVPR 2022 (arXiv 2203.15332); official code GeWu-Lab/OGM-GE_CVPR2022 (``main.py``, ``train_epoch``).

Per batch, after the backward of the fused cross-entropy (the only loss):

* discrepancy score of modality m: ``s_m = sum_i softmax(z_m,i)[y_i]`` over the batch, with ``z_m`` the
  modality's logits from ``ModelOutput.modality_logits`` (paper Eq. 9);
* ratio ``rho_m = s_m / s_weak`` and coefficient ``k_m = 1 - tanh(alpha * rho_m)`` if ``rho_m > 1``,
  else 1 (paper Eq. 10); the encoder gradients of modality m are multiplied by ``k_m``;
* OGM-GE (``noise=True``) then adds ``N(0, std(g)^2)`` to every modulated gradient tensor of *every*
  encoder (also the weak one, with ``k = 1``), ``std(g)`` being the std of the unmodulated gradient
  tensor (+1e-8, as the official code), paper Eq. 11-12. OGM (``noise=False``) only scales.

Modulation happens only while ``modulation_start <= epoch <= modulation_end`` (0-based, inclusive,
official defaults 0..50); outside the window gradients are untouched (reported coefficients are 1).

Which gradients are modulated (``modulate``): ``conv`` (default, official) only the encoders'
convolution kernels (4-D tensors, the official ``len(grad.size()) == 4`` test). An encoder with no
convolution at all (our MLP encoders) would then never be modulated, so for such an encoder ``conv``
falls back to its weight matrices (tensors of 2 or more dims); with the official ResNet encoders this
changes nothing. ``all``: every weight tensor of 2 or more dims of the encoder (linear and conv
weights, biases and norm scales excluded), as BalanceMM modulates every weight matrix.

N modalities: the reference is the weakest modality, ``rho_m = s_m / min_j s_j``; every modality
stronger than the weakest gets ``k_m = 1 - tanh(alpha * rho_m)``, the weakest keeps 1. For two
modalities this is exactly the paper (``rho = s_dominant / s_weak``). A tie (all scores equal)
modulates nothing, where the official code would slow the first modality.

Under DDP each rank modulates its own gradients with its own batch's scores (and noise) before the
loop averages them; the average noise std thus shrinks by sqrt(world_size).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from trainables.errors import ConfigError
from trainables.methods.base import (
    BalancingMethod,
    Batch,
    Optimizers,
    StepState,
    StepStats,
    cross_entropy,
    register_method,
)
from trainables.models.output import MultimodalModel
from trainables.params import check_bounds, knob


@dataclass(frozen=True)
class OGMGEParams:
    alpha: float = knob(0.8, "modulation strength alpha in k = 1 - tanh(alpha * rho) (CREMA-D README value)", ge=0)
    noise: bool = knob(True, "add Gaussian noise N(0, std(g)^2) to modulated gradients (OGM-GE); false = plain OGM")
    modulation_start: int = knob(0, "first epoch (0-based, inclusive) with modulation", ge=0)
    modulation_end: int = knob(50, "last epoch (0-based, inclusive) with modulation", ge=0)
    modulate: Literal["conv", "all"] = knob(
        "conv", "conv: encoder conv kernels (MLP encoders: weight matrices); all: every weight tensor"
    )

    def __post_init__(self) -> None:
        check_bounds(self)
        if self.modulation_end < self.modulation_start:
            raise ConfigError(
                "modulation_end", f"got {self.modulation_end}; allowed: >= modulation_start ({self.modulation_start})"
            )


def discrepancy_scores(modality_logits: dict[str, torch.Tensor], labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """``s_m = sum_i softmax(z_m,i)[y_i]`` (paper Eq. 9): 0-dim tensors on the device, without gradient."""
    with torch.no_grad():
        return {m: z.float().softmax(1).gather(1, labels[:, None]).sum() for m, z in modality_logits.items()}


def modulation_coefficients(
    scores: dict[str, torch.Tensor | float], alpha: float
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Ratios ``rho_m = s_m / min_j s_j`` and coefficients (paper Eq. 10, N-modal as in the module doc).

    Computed with tensor ops on the scores' device, so a step never waits for the device to read them.

    Returns:
        ``(rho, k)``, both keyed by modality, 0-dim float32 tensors.
    """
    s = torch.stack([torch.as_tensor(v) for v in scores.values()]).float()
    rho = s / s.min().clamp_min(1e-12)
    k = torch.where(rho > 1.0, 1.0 - torch.tanh(alpha * rho), torch.ones_like(rho))
    return dict(zip(scores, rho.unbind(), strict=True)), dict(zip(scores, k.unbind(), strict=True))


def modulated_parameters(encoder: nn.Module, modulate: str) -> list[nn.Parameter]:
    """The encoder parameters whose gradients OGM scales (see ``modulate`` in the module doc)."""
    params = [p for p in encoder.parameters() if p.requires_grad]
    if modulate == "conv":
        conv = [p for p in params if p.dim() == 4]
        if conv:
            return conv
    return [p for p in params if p.dim() >= 2]


def modulate_gradients(params: list[nn.Parameter], coeff: torch.Tensor | float, noise: bool) -> None:
    """``g <- k g`` (OGM) or ``g <- k g + N(0, std(g)^2)`` with the unmodulated std (OGM-GE, Eq. 12).

    ``coeff`` may be a 0-dim device tensor and ``std(g)`` stays one: nothing is read on the host.
    The noise comes from torch's global RNG, so runs are reproducible and resume exactly.
    """
    for p in params:
        if p.grad is None:
            continue
        g = p.grad
        if noise:
            std = g.std() + 1e-8 if g.numel() > 1 else 1e-8
            p.grad = g * coeff + torch.randn_like(g) * std
        else:
            g.mul_(coeff)


@register_method("ogm_ge")
class OGMGE(BalancingMethod):
    """Fused cross-entropy with the dominant encoders' gradients slowed by OGM(-GE)."""

    Params = OGMGEParams

    def training_step(
        self, model: MultimodalModel, batch: Batch, optimizers: Optimizers, state: StepState
    ) -> StepStats:
        p = self.params
        opt = optimizers["main"]
        opt.zero_grad(set_to_none=True)
        out = model(batch["inputs"])
        loss = cross_entropy(out.logits, batch["label"])
        loss.backward()
        scores = discrepancy_scores(out.modality_logits, batch["label"])
        rho, k = modulation_coefficients(scores, p.alpha)
        active = p.modulation_start <= state.epoch <= p.modulation_end
        if active:
            for m in out.modality_logits:
                modulate_gradients(modulated_parameters(model.encoders[m], p.modulate), k[m], p.noise)
        opt.step()
        stats: StepStats = {"loss": loss.detach()}
        for m in out.modality_logits:
            stats[f"ogm_ge/rho/{m}"] = rho[m]
            stats[f"ogm_ge/coeff/{m}"] = k[m] if active else 1.0
        return stats
