"""MIE: modal-aware interactive enhancement (SAM forward phase + SAM-geometry gradient modification).

Jiang, Chi, Yang, "Multimodal Classification via Modal-Aware Interactive Enhancement",
arXiv 2407.04587 (2024). There is no official repository.

From the paper: a *forward phase* that smooths the learning objective with sharpness-aware
minimization (SAM, Foret et al., ICLR 2021), and a *backward phase* that uses SAM's geometry (flat
versus sharp directions) to modify gradients so that learning one modality does not erase what was
learned from the other; unimodal learning alternates between modalities, as in MLA.

Our reading, implemented here (the paper gives no code, so these are choices, not quotations):

* Model: encoders plus one linear head ``c_m`` per modality (``shared_head=true``: one head for all,
  as MLA). Per batch: one forward of every encoder, then for each modality in turn a SAM step on
  ``CE(c_m(f_m), y)`` over that modality's encoder and head only.
* SAM step proper: ``g = grad L(w)``; ascend ``w + eps``, ``eps = rho g / ||g||``; ``g_p = grad L(w + eps)``;
  **restore** ``w`` (saved copies, bit-identical; BatchNorm running statistics restored too, so the
  perturbed pass leaves no trace); the gradient used is ``(1 - flat_ratio) g + flat_ratio g_p``, i.e.
  ``flat_ratio`` is the weight of the loss at the perturbed point (1 = plain SAM).
* Gradient modification of the head: with ``Sigma = U diag(lambda) U^T`` the covariance of the *other*
  modality's batch features, ``P = U diag(exp(-tau (lambda - lambda_min) / (lambda_max - lambda_min))) U^T``;
  the active head's weight gradient becomes ``G P`` (bias untouched). The other modality's sharpest
  (highest-variance) directions are damped by ``exp(-tau)``, its flattest kept whole.
* Test-time fusion: the mean of the unimodal softmaxes (``logits`` = its log); with absent
  modalities only the present ones are averaged.

Not copied from the same authors' later code (njustkmg/IJCAI25-IGM): a SAM radius of 1e-10 and never
restoring the perturbed weights. Defaults: ``rho`` 0.05 (SAM paper), ``tau`` 0.4, ``flat_ratio`` 0.3.

Exactly two modalities (the projector is built from "the other" modality); others raise ConfigError.
With ``project`` on, both encoders must give features of the same size.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any

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
from trainables.models.classifier import Encoded, ModelSpec, mask_inputs
from trainables.models.output import ModelOutput, MultimodalModel
from trainables.params import check_bounds, knob


@dataclass(frozen=True)
class MIEParams:
    rho: float = knob(0.05, "SAM neighbourhood radius (Foret et al. default)", ge=0)
    flat_ratio: float = knob(
        0.3, "weight of the loss at the SAM-perturbed point; 1 = plain SAM, 0 = no SAM", ge=0, le=1
    )
    tau: float = knob(
        0.4, "damping strength of the soft projector: the other modality's top direction is scaled by exp(-tau)", ge=0
    )
    project: bool = knob(True, "apply the soft-projector gradient modification to the active head")
    shared_head: bool = knob(False, "one head shared by both modalities instead of one per modality")

    def __post_init__(self) -> None:
        check_bounds(self)


def sam_gradient(
    params: list[nn.Parameter],
    closure: Callable[[], torch.Tensor],
    rho: float,
    flat_ratio: float,
    buffers: Iterable[torch.Tensor] = (),
) -> float:
    """Turn the gradients in ``p.grad`` (at ``w``) into ``(1 - flat_ratio) g + flat_ratio grad L(w + eps)``.

    ``eps = rho g / ||g||`` (global norm over ``params``). The weights and ``buffers`` are restored
    from copies afterwards, so they are bit-identical to their values before the call.

    Returns:
        the loss at the perturbed point.
    """
    params = [p for p in params if p.grad is not None]
    grads = [p.grad.detach().clone() for p in params]
    saved = [p.detach().clone() for p in params]
    buffers = list(buffers)
    saved_buffers = [b.detach().clone() for b in buffers]
    norm = torch.linalg.vector_norm(torch.stack([g.float().norm() for g in grads])) if grads else torch.tensor(0.0)
    scale = rho / (norm.item() + 1e-12)
    with torch.no_grad():
        for p, g in zip(params, grads, strict=True):
            p.add_(g, alpha=scale)
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
    return loss_p.item()


def soft_projector(features: torch.Tensor, tau: float) -> torch.Tensor:
    """``U diag(exp(-tau (lambda - lambda_min) / (lambda_max - lambda_min))) U^T`` of the feature covariance."""
    x = features.detach().double()
    x = x - x.mean(0, keepdim=True)
    cov = x.t() @ x / max(x.shape[0] - 1, 1)
    lam, U = torch.linalg.eigh(cov)
    span = (lam[-1] - lam[0]).clamp_min(1e-12)
    w = torch.exp(-tau * (lam - lam[0]) / span)
    return ((U * w) @ U.t()).to(features.dtype)


class MIEModel(Encoded):
    """Encoders plus a linear head per modality (or one shared head)."""

    def __init__(self, spec: ModelSpec, shared_head: bool) -> None:
        super().__init__(spec.build_encoders())
        if shared_head:
            head = nn.Linear(self.shared_feature_dim("params.shared_head", "a shared head"), spec.num_classes)
            self.heads = nn.ModuleDict({m: head for m in self.modalities})
        else:
            self.heads = nn.ModuleDict({m: nn.Linear(e.out_dim, spec.num_classes) for m, e in self.encoders.items()})

    def forward(self, inputs: dict[str, torch.Tensor]) -> ModelOutput:
        feats = self.encode(inputs)
        per = {m: self.heads[m](f) for m, f in feats.items()}
        return ModelOutput(logits=mean_softmax_logits(list(per.values())), modality_logits=per, features=feats)


def mean_softmax_logits(logits: list[torch.Tensor]) -> torch.Tensor:
    """log of the mean of the softmaxes: the fused prediction as logits (its argmax is the fusion's)."""
    probs = torch.stack([z.float().softmax(1) for z in logits]).mean(0)
    return probs.clamp_min(1e-12).log()


@register_method("mie")
class MIE(BalancingMethod):
    """Alternating unimodal SAM steps with soft-projected head gradients."""

    Params = MIEParams
    missing_scheme = "drop-head"

    def __init__(self, params: MIEParams, ctx: Any) -> None:
        super().__init__(params, ctx)
        if len(ctx.modalities) != 2:
            raise ConfigError(
                "method",
                f"mie needs exactly 2 modalities; the dataset gives {len(ctx.modalities)} "
                f"({', '.join(ctx.modalities)})",
            )

    def build_model(self, spec: ModelSpec) -> MultimodalModel:
        model = MIEModel(spec, self.params.shared_head)
        if self.params.project:
            model.shared_feature_dim(
                "model.encoders", "mie's projector maps one modality's head by the other's features"
            )
        return model

    def training_step(
        self, model: MultimodalModel, batch: Batch, optimizers: Optimizers, state: StepState
    ) -> StepStats:
        feats = model.encode(batch["inputs"])  # one forward per encoder
        stats: StepStats = {}
        for m in model.modalities:
            other = next(o for o in model.modalities if o != m)
            stats.update(self._modality_step(model, m, feats[m], feats[other].detach(), batch, optimizers["main"]))
        stats["loss"] = sum(stats[f"mie/loss/{m}"] for m in model.modalities) / len(model.modalities)
        return stats

    def _modality_step(
        self,
        model: nn.Module,
        m: str,
        feat: torch.Tensor,
        other_feat: torch.Tensor,
        batch: Batch,
        opt: torch.optim.Optimizer,
    ) -> dict[str, float]:
        """One SAM step of modality ``m``'s encoder and head, with the head gradient soft-projected."""
        p, y, enc, head = self.params, batch["label"], model.encoders[m], model.heads[m]
        stats: dict[str, float] = {}
        opt.zero_grad(set_to_none=True)
        loss = cross_entropy(head(feat), y)
        loss.backward()
        loss_p = loss.item()
        if p.rho > 0 and p.flat_ratio > 0:
            params = list(enc.parameters()) + list(head.parameters())
            buffers = list(enc.buffers()) + list(head.buffers())
            loss_p = sam_gradient(
                params, lambda: cross_entropy(head(enc(batch["inputs"][m])), y), p.rho, p.flat_ratio, buffers
            )
        if p.project:
            with torch.autocast(device_type=y.device.type, enabled=False), torch.no_grad():
                g = head.weight.grad
                projected = g.float() @ soft_projector(other_feat.float(), p.tau)  # P is symmetric: G P = G P^T
                stats[f"mie/damping/{m}"] = (projected.norm() / g.float().norm().clamp_min(1e-12)).item()
                head.weight.grad = projected.to(g.dtype)
        opt.step()
        stats[f"mie/loss/{m}"] = loss.item()
        stats[f"mie/sharpness/{m}"] = loss_p - loss.item()
        return stats

    def predict(
        self, model: MultimodalModel, inputs: dict[str, torch.Tensor], present: Collection[str] | None = None
    ) -> ModelOutput:
        keep = self.present_modalities(present)
        out = model(mask_inputs(inputs, keep))
        out.logits = mean_softmax_logits([out.modality_logits[m] for m in keep])
        return out
