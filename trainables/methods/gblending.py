"""G-Blending: gradient blending of the fused and unimodal heads by their overfitting-to-generalisation ratio.

Wang, Tran, Feiszli, "What Makes Training Multi-Modal Classification Networks Hard?", CVPR 2020
(arXiv 1905.12681), online Gradient-Blending (their Algorithm 1 with the weight estimate of Eq. 6-7).
No official code is public; BalanceBenchmark has a port (``balancemm/trainer/GBlending_trainer.py``).

Model: the encoders, the fusion head on all features and one linear head per modality (as ``mmpareto``).
Loss ``sum_k w_k CE_k`` over the heads k (fused and each modality), weights summing to 1, uniform until
the first estimate. A seeded ``holdout_fraction`` of the train split is held out of training (never
val or test). At the start of every ``super_epoch``-th epoch each head's mean loss is measured on the
training part (``L^T``) and the held-out part (``L^V``); against the previous measurement,

    G_k = L^V_prev - L^V_now   (generalisation gained),   O_k = (L^V_now - L^T_now) - (L^V_prev - L^T_prev)
    w_k = max(G_k, 0) / O_k^2, normalised to sum 1,

the paper's ``w* proportional to G / O^2``: a head whose held-out loss fell without its train-held-out gap
growing gets more weight. If no head gained (all ``G <= 0``) the weights stay as they were. The
evaluation predicts with the fused head; per-modality logits (``acc/<m>``) are the unimodal heads';
missing modalities: ``zero-feature``.

Defaults: ``super_epoch`` 10 (BalanceMM; the paper re-estimates every few epochs), ``holdout_fraction``
0.1 (our choice; the paper holds out a part of train, fraction unstated here). Differences: losses are
measured in eval mode on the whole training part and the held-out part at the super-epoch boundary
(the paper measures at its checkpoints); ``O_k^2`` is floored at 1e-8. Under DDP the loss sums and
counts are all-reduced, so every rank holds the same weights.

Measured on mfeat (``sweeps/mfeat_all.yaml`` settings, 12 epochs, 3 seeds; joint 94.9 +- 0.9 test acc):
super-epoch 10 gives 95.1 +- 0.4 (fused with only fou present 67.7 +- 0.7, joint 49.7 +- 6.9), super-epoch 4
gives 94.4 +- 1.3; the final weights vary a lot between seeds (fused head 0.28-0.97), the estimate on a
held-out tenth of 400 training digits being noisy.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

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
from trainables.methods.mmpareto import MMParetoModel
from trainables.models.classifier import ModelSpec
from trainables.models.output import ModelOutput, MultimodalModel
from trainables.params import check_bounds, knob
from trainables.sampling import holdout_split


@dataclass(frozen=True)
class GBlendingParams:
    super_epoch: int = knob(10, "epochs between weight estimates (BalanceMM 10)", ge=1)
    holdout_fraction: float = knob(0.1, "share of the train split held out to estimate the weights", gt=0, lt=1)

    def __post_init__(self) -> None:
        check_bounds(self)


def blend_weights(prev: torch.Tensor, now: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """``w_k = max(G_k, 0) / O_k^2`` normalised (``old`` if no head gained) from ``[2, K]`` (train, held) losses."""
    gain = prev[1] - now[1]
    over = (now[1] - now[0]) - (prev[1] - prev[0])
    raw = gain.clamp_min(0) / over.pow(2).clamp_min(1e-8)
    return torch.where(raw.sum() > 0, raw / raw.sum().clamp_min(1e-30), old)


@register_method("gblending")
class GBlending(BalancingMethod):
    """Fused and unimodal head losses blended by weights re-estimated on a held-out part of train."""

    Params = GBlendingParams
    min_modalities = 2
    missing_scheme = "zero-feature"

    def __init__(self, params: GBlendingParams, ctx: MethodContext) -> None:
        super().__init__(params, ctx)
        self.heads = ["fused", *ctx.modalities]
        self.weights = torch.full((len(self.heads),), 1 / len(self.heads), dtype=torch.float64)
        self.last: torch.Tensor | None = None  # [2, K] mean losses (train part, held-out) of the last estimate

    def build_model(self, spec: ModelSpec) -> MultimodalModel:
        return MMParetoModel(spec)

    def train_indices(self, epoch: int, num_samples: int) -> list[int] | None:
        return holdout_split(num_samples, self.params.holdout_fraction, self.ctx.seed)[0]

    def on_epoch_start(self, model: MultimodalModel, ctx: EpochContext) -> dict[str, float]:
        if ctx.epoch % self.params.super_epoch or ctx.train_subset is None:
            return {}
        train, held = holdout_split(len(ctx.train_loader.dataset), self.params.holdout_fraction, self.ctx.seed)
        now = torch.stack([self.losses(model, ctx, train), self.losses(model, ctx, held)])
        if self.last is not None:
            self.weights = blend_weights(self.last, now, self.weights)
        self.last = now
        return {f"gblending/held_loss/{h}": float(now[1, i]) for i, h in enumerate(self.heads)}

    @torch.no_grad()
    def losses(self, model: MultimodalModel, ctx: EpochContext, indices: list[int]) -> torch.Tensor:
        """``[K]``: each head's mean CE over the given training samples (eval mode, summed over DDP ranks)."""
        was_training = model.training
        model.eval()
        sums = torch.zeros(len(self.heads) + 1, dtype=torch.float64, device=ctx.device)
        for raw in ctx.train_subset(indices):
            batch = ctx.to_device(raw)
            out, y = model(batch["inputs"]), batch["label"]
            logits = [out.logits, *(out.modality_logits[m] for m in self.ctx.modalities)]
            sums[:-1] += torch.stack([F.cross_entropy(z.float(), y, reduction="sum") for z in logits]).double()
            sums[-1] += y.numel()
        model.train(was_training)
        sums = ctx.all_reduce(sums)
        return (sums[:-1] / sums[-1].clamp_min(1)).cpu()

    def training_step(
        self, model: MultimodalModel, batch: Batch, optimizers: Optimizers, state: StepState
    ) -> StepStats:
        y = batch["label"]
        out = model(batch["inputs"])
        logits = [out.logits, *(out.modality_logits[m] for m in self.ctx.modalities)]
        ce = torch.stack([F.cross_entropy(z, y) for z in logits])
        w = self.weights.to(ce)
        loss = (w * ce).sum()
        backward_and_step(optimizers["main"], loss)
        stats: StepStats = {"loss": loss.detach()}
        for i, h in enumerate(self.heads):
            stats[f"gblending/weight/{h}"] = w[i]
            stats[f"gblending/ce/{h}"] = ce[i].detach()
        return stats

    def predict(
        self, model: MultimodalModel, inputs: dict[str, torch.Tensor], present: Collection[str] | None = None
    ) -> ModelOutput:
        """The fused head, absent modalities' features zeroed; unimodal heads as ``acc/<m>``."""
        feats = model.encode(inputs)
        keep = self.present_modalities(present)
        fused, _ = model.head({m: f if m in keep else torch.zeros_like(f) for m, f in feats.items()})
        return ModelOutput(fused, {m: model.uni_heads[m](f) for m, f in feats.items()}, feats)

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.weights.clone(), "last": None if self.last is None else self.last.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.weights = state["weights"].clone()
        self.last = None if state["last"] is None else state["last"].clone()
