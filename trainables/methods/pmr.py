"""PMR: prototypical modal rebalance.

Fan, Xu, Wang, Zhu, Jiang, Zhang, "PMR: Prototypical Modal Rebalance for Multimodal Learning", CVPR 2023
(arXiv 2211.07089); official code fanyunfeng-bit/Modal-Imbalance-PMR (``main_Prototype_grad.py``:
``calculate_prototype``, ``train_epoch``, ``EU_dist``).

With the standard model (encoders + fusion head):

* prototypes: before every epoch, class means ``c^m_k`` of each modality's encoder features over the
  first ``proto_fraction`` of the training batches (eval mode, no gradient; official: the first tenth),
  blended with the previous ones as ``(1 - momentum) new + momentum old`` from the third computation on
  (the official ``epoch <= 0`` test: no blend before epoch 0 nor before epoch 1);
* prototype logits ``-||f^m_i - c^m_k||`` (Euclidean); scores ``s_m = sum_i softmax(-d^m_i)[y_i]``;
  the ratio of the strongest modality to modality m, ``rho_m = max_j s_j / s_m``;
* loss ``CE(fused) + sum_m gamma_m PCE_m - mu gamma* H_dominant`` with ``PCE_m`` the cross-entropy of
  modality m's prototype logits and ``gamma_m = alpha clip(rho_m - 1, 0, 1)`` (paper; BalanceMM's
  port) -- only the lagging modalities are pushed towards their prototypes -- or ``alpha [rho_m > 1]``
  with ``coefficient: constant`` (the released official code); ``H_dominant`` is the batch-mean entropy
  of the strongest modality's prototype softmax, weighted by ``gamma* = max_m gamma_m``, during the
  first ``entropy_epochs`` epochs (the paper's prototype entropy regulariser "in the early training
  stage" against premature convergence of the dominant modality).

Defaults: ``alpha`` 1.0 and ``momentum`` 0.2 are the official argparse defaults (BalanceMM: alpha 0.6,
momentum 0.5); ``mu`` 0.01 and ``entropy_epochs`` 10 are our choice -- the released official code has
no entropy term and BalanceMM's stored config gives no value for its window (``norm_epoch``).
Differences: N modalities generalise the two-modal rule as above (two modalities: exactly the paper's
beta/lambda). The entropy is a batch mean (BalanceMM sums it over the batch). A class absent from
the prototype batches keeps its previous prototype (the official code divides by a zero count); a step
taken before any prototype pass (outside the loop) uses the batch's own class means. The
official modulation window (epochs 0..100) is not a knob: PMR acts on every epoch. BalanceMM's port
is not copied: its entropy term for the second modality measures the *first* modality's features
against the second modality's prototypes, and with three modalities it replaces PMR by an OGM-GE-style
gradient scaling (``eta``). Under DDP the prototype sums and counts are all-reduced, so every rank
holds the same prototypes; the scores come from each rank's batch. Missing modalities: ``zero-input``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch.nn import functional as F

from trainables.errors import ConfigError
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
class PMRParams:
    alpha: float = knob(1.0, "weight of the lagging modalities' prototypical CE (official 1.0; BalanceMM 0.6)", ge=0)
    coefficient: Literal["ratio", "constant"] = knob(
        "ratio", "ratio: alpha clip(rho - 1, 0, 1) (paper); constant: alpha when lagging (released official code)"
    )
    momentum: float = knob(0.2, "prototype momentum: weight of the previous prototypes (official 0.2)", ge=0, le=1)
    proto_fraction: float = knob(
        0.1, "share of training batches the prototypes are taken from (official 0.1)", gt=0, le=1
    )
    mu: float = knob(0.01, "weight of the dominant modality's prototype entropy regulariser (our choice)", ge=0)
    entropy_epochs: int = knob(10, "first epochs with the entropy regulariser (our choice; paper: early stage)", ge=0)

    def __post_init__(self) -> None:
        check_bounds(self)


# --- math ------------------------------------------------------------------------------------
def prototype_logits(features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """``[B, C]``: minus the Euclidean distance of each feature to each class prototype."""
    return -torch.cdist(features.float(), prototypes.float().to(features.device))


def lag_coefficients(scores: torch.Tensor, alpha: float, coefficient: str) -> torch.Tensor:
    """``[M]``: ``gamma_m`` from ``rho_m = max_j s_j / s_m`` (ratio: ``alpha clip(rho - 1, 0, 1)``)."""
    rho = scores.max() / scores.clamp_min(1e-12)
    if coefficient == "constant":
        return alpha * (rho > 1).to(scores.dtype)
    return alpha * (rho - 1).clamp(0, 1)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Batch mean of the entropy of ``softmax(logits)``."""
    logp = logits.log_softmax(1)
    return -(logp.exp() * logp).sum(1).mean()


def blend(new: torch.Tensor, old: torch.Tensor, momentum: float) -> torch.Tensor:
    """``(1 - momentum) new + momentum old``."""
    return (1 - momentum) * new + momentum * old


@register_method("pmr")
class PMR(BalancingMethod):
    """Fused CE plus prototypical CE on the lagging modalities (and early entropy on the dominant one)."""

    Params = PMRParams

    def __init__(self, params: PMRParams, ctx: MethodContext) -> None:
        super().__init__(params, ctx)
        if len(ctx.modalities) < 2:
            raise ConfigError("method", "pmr needs at least 2 modalities")
        self.protos: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def on_epoch_start(self, model: MultimodalModel, ctx: EpochContext) -> dict[str, float]:
        """Recompute the class prototypes on the first ``proto_fraction`` of the training batches."""
        limit = max(1, math.floor(self.params.proto_fraction * len(ctx.train_loader)))
        sums: dict[str, torch.Tensor] = {}
        counts = torch.zeros(self.ctx.num_classes, device=ctx.device)
        training = model.training
        model.eval()
        for i, batch in enumerate(ctx.train_loader):
            if i >= limit:
                break
            batch = ctx.to_device(batch)
            y = batch["label"]
            onehot = F.one_hot(y, self.ctx.num_classes).float()
            for m, f in model.encode(batch["inputs"]).items():
                sums[m] = sums.get(m, 0) + onehot.t() @ f.float()
            counts += onehot.sum(0)
        model.train(training)
        counts = ctx.all_reduce(counts)
        seen = counts > 0
        for m, s in sums.items():
            new = ctx.all_reduce(s) / counts.clamp_min(1)[:, None]
            old = self.protos.get(m, torch.zeros_like(new)).to(new)
            new = torch.where(seen[:, None], new, old)
            self.protos[m] = blend(new, old, self.params.momentum) if ctx.epoch >= 2 else new
        return {}

    def training_step(
        self, model: MultimodalModel, batch: Batch, optimizers: Optimizers, state: StepState
    ) -> StepStats:
        p, y = self.params, batch["label"]
        feats = model.encode(batch["inputs"])
        fused, _ = model.head(feats)
        if not self.protos:  # no prototype pass yet (a step outside the loop's epochs): the batch's class means
            self._batch_prototypes(feats, y)
        proto = {m: prototype_logits(f, self.protos[m]) for m, f in feats.items()}
        with torch.no_grad():
            scores = torch.stack([z.softmax(1).gather(1, y[:, None]).sum() for z in proto.values()])
        gamma = lag_coefficients(scores, p.alpha, p.coefficient)
        pce = torch.stack([F.cross_entropy(z, y) for z in proto.values()])
        loss = F.cross_entropy(fused, y) + (gamma * pce).sum()
        stats: StepStats = {}
        if state.epoch < p.entropy_epochs and p.mu > 0:
            entropies = torch.stack([entropy(z) for z in proto.values()])
            dominant = entropies.gather(0, scores.argmax()[None])[0]  # indexing by a tensor would sync the host
            loss = loss - p.mu * gamma.max() * dominant
            stats["pmr/entropy_dominant"] = dominant.detach()
        backward_and_step(optimizers["main"], loss)
        stats["loss"] = loss.detach()
        for i, m in enumerate(feats):
            stats[f"pmr/coeff/{m}"] = gamma[i].detach()
            stats[f"pmr/score_ratio/{m}"] = scores[i] / scores.min().clamp_min(1e-12)
            stats[f"pmr/proto_dist/{m}"] = -proto[m].detach().gather(1, y[:, None]).mean()
            stats[f"pmr/proto_acc/{m}"] = (proto[m].detach().argmax(1) == y).float().mean()
        return stats

    @torch.no_grad()
    def _batch_prototypes(self, feats: dict[str, torch.Tensor], y: torch.Tensor) -> None:
        onehot = F.one_hot(y, self.ctx.num_classes).float()
        counts = onehot.sum(0).clamp_min(1)[:, None]
        self.protos = {m: onehot.t() @ f.float() / counts for m, f in feats.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"protos": {m: t.detach().cpu().clone() for m, t in self.protos.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.protos = {m: t.clone() for m, t in state["protos"].items()}
