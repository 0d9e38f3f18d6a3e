"""AMCo: adaptive mask co-optimisation.

Zhou, Liang, Zheng, Xuan, Kumada, "Adaptive Mask Co-optimization for Modal Dependence in Multimodal
Learning", ICASSP 2023 (IEEE 10096641; no arXiv version). No official code is published; the paper
text was not available here either, so this follows the paper's abstract ("the adaptive mask ...
making dependent modalities harder to be learned; the co-optimization can preserve the performance
... on dependent modalities") and BalanceBenchmark's port (``balancemm/trainer/AMCo_trainer.py``,
``BaseClassifierAMCoModel``), whose bugs are fixed. What is our reading is marked (R).

Per batch, with the standard encoders + fusion head:

* modal significance: the share of modality m in the softmax over the concatenated per-modality
  logits, ``w_m = (1/B) sum_i sum_{c} softmax([z_1,i; ...; z_M,i])[m, c]`` (the shares sum to 1);
  a modality is *dependent* when ``w_m > sigma``. It is measured on this step's (masked) logits and
  applies from the next step; no modality is dependent at the start of an epoch (as BalanceMM);
* adaptive mask: a dependent modality's features lose ``round(r_t * D_m)`` randomly chosen units
  (the same units for the whole batch) before the fusion head, with the ratio rising as
  ``r_t = sin(pi/2 * min(eps, t) / eps)``, ``t`` the elapsed fraction of training (R: BalanceMM's
  ``l_t += epoch / 10`` per batch, reset every epoch, reaches ``eps`` after ``3 / epoch`` batches);
* co-optimisation: ``L = CE(fused(masked), y) + sum_m CE(z_m(unmasked), y)`` -- the unimodal losses
  see the unmasked features (R), so a masked modality keeps learning on its own.

Differences from BalanceMM's port: it masks ``n_classes`` entries of the per-modality *logits* with a
``[2, C]`` mask that does not broadcast against ``[B, C]`` logits for ``B > 2`` and leaves its ``U``
(feature size, 512) unused -- we mask ``U = D_m`` feature units, as its ``U`` suggests; it applies
an extra ``Linear(C, C)`` (``linear_star``) to the fused logits, which nothing in the abstract
motivates, so it is left out; its modulation window (epochs 0-80) is dropped (masking acts for the
whole run, gated by the ramp and by dependence). Defaults are BalanceMM's ``trainer_config.yaml``
(sigma 0.5, eps 0.3), the only published values. With N > 2 modalities the shares still sum to one,
so ``sigma >= 0.5`` marks at most one dependent modality. Missing modalities: ``zero-feature``.
Under DDP each rank decides dependence from its own batch (as ``ogm_ge``'s per-batch ratios).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from trainables.methods.base import (
    BalancingMethod,
    Batch,
    EpochContext,
    MethodContext,
    Optimizers,
    StepState,
    StepStats,
    backward_and_step,
    register_method,
)
from trainables.models.output import MultimodalModel
from trainables.params import check_bounds, knob


@dataclass(frozen=True)
class AMCoParams:
    sigma: float = knob(0.5, "significance share above which a modality is masked (BalanceMM 0.5)", gt=0, lt=1)
    eps: float = knob(0.3, "fraction of training over which the mask ratio rises to 1 (BalanceMM 0.3)", gt=0, le=1)

    def __post_init__(self) -> None:
        check_bounds(self)


# --- math ------------------------------------------------------------------------------------
def mask_ratio(progress: float, eps: float) -> float:
    """``r_t = sin(pi/2 * min(eps, t) / eps)`` for the elapsed fraction ``t`` of training."""
    return math.sin(math.pi / 2 * min(eps, max(progress, 0.0)) / eps)


def significance(modality_logits: dict[str, torch.Tensor]) -> torch.Tensor:
    """``[M]``: each modality's share of the softmax over the concatenated logits, batch mean (no grad)."""
    with torch.no_grad():
        z = torch.stack([lg.float() for lg in modality_logits.values()], 1)  # [B, M, C]
        return z.flatten(1).softmax(1).view_as(z).sum(2).mean(0)


def unit_masks(dims: list[int], ratio: float, device: torch.device) -> list[torch.Tensor]:
    """Per modality a ``[D_m]`` 0/1 mask with ``round(ratio * D_m)`` random zeros (global RNG)."""
    masks = []
    for d in dims:
        mask = torch.ones(d, device=device)
        mask[torch.randperm(d, device=device)[: round(ratio * d)]] = 0
        masks.append(mask)
    return masks


@register_method("amco")
class AMCo(BalancingMethod):
    """Fused CE on features whose dependent modality is masked, plus unmasked unimodal CEs."""

    Params = AMCoParams
    min_modalities = 2
    missing_scheme = "zero-feature"

    def __init__(self, params: AMCoParams, ctx: MethodContext) -> None:
        super().__init__(params, ctx)
        self.dependent = torch.zeros(len(ctx.modalities), dtype=torch.bool, device=ctx.device)

    def on_epoch_start(self, model: MultimodalModel, ctx: EpochContext) -> dict[str, float]:
        self.dependent = torch.zeros(len(self.ctx.modalities), dtype=torch.bool, device=self.ctx.device)
        return {}

    def training_step(
        self, model: MultimodalModel, batch: Batch, optimizers: Optimizers, state: StepState
    ) -> StepStats:
        y = batch["label"]
        feats = model.encode(batch["inputs"])
        _, per = model.head(feats)
        ratio = mask_ratio(state.global_step / max(self.ctx.epochs * state.batches_per_epoch, 1), self.params.eps)
        dep = self.dependent.to(y.device)
        masks = unit_masks([f.shape[1] for f in feats.values()], ratio, y.device)
        masked = {m: f * torch.where(dep[i], masks[i], 1.0) for i, (m, f) in enumerate(feats.items())}
        fused, per_masked = model.head(masked)
        fused_ce = F.cross_entropy(fused, y)
        uni = sum(F.cross_entropy(z, y) for z in per.values())
        backward_and_step(optimizers["main"], fused_ce + uni)
        share = significance(per_masked)
        self.dependent = share > self.params.sigma
        stats: StepStats = {"loss": (fused_ce + uni).detach(), "amco/ce_fused": fused_ce.detach(), "amco/ratio": ratio}
        for i, m in enumerate(feats):
            stats[f"amco/share/{m}"] = share[i]
            stats[f"amco/masked/{m}"] = dep[i].float() * ratio
        return stats
