"""MMPareto: Pareto integration of the multimodal and unimodal gradients of each encoder.

Wei, Hu, "MMPareto: Boosting Multimodal Learning with Innocent Unimodal Assistance", ICML 2024
(arXiv 2405.17730); official code GeWu-Lab/MMPareto_ICML2024 (``code/MMPareto.py``, ``train_epoch``;
``code/min_norm_solvers.py``; ``code/models/models.py``, ``AVClassifier``).

Model (official ``AVClassifier``): the encoders, the fusion head on all features, and one linear head
per modality on its own features. Losses: ``L_mm = CE(fused)`` and ``L_m = CE(head_m(f_m))``.
Per batch and per encoder m (its parameters flattened into one vector):

* ``g_mm`` = gradient of ``L_mm``, ``g_u`` = gradient of ``L_m`` (the only unimodal loss reaching it);
* ``cos(g_mm, g_u) > 0``: weights ``(1/2, 1/2)``; otherwise the MGDA min-norm point of the segment,
  ``w_mm = (|g_u|^2 - g_mm.g_u) / |g_mm - g_u|^2`` clipped to [0.001, 0.999] (the official
  ``_min_norm_element_from2``, whose two edge cases are exactly this clipping), ``w_u = 1 - w_mm``;
* per parameter tensor: ``g = 2 (w_mm g_mm + w_u g_u)``, enlarged to the norm of ``g_mm + g_u`` (the
  gradient of the summed loss) when it is smaller -- ``g *= max(1, |g_mm + g_u| / |g|)`` -- and
  multiplied by ``alpha`` (the official ``gamma = 1.5``, hard-coded there). With no conflict this is
  ``alpha (g_mm + g_u)``; in a conflict the direction is the min-norm one, which has a non-negative
  inner product with both gradients, and the magnitude is that of the plain sum.

The heads take the plain gradient of ``L_mm + sum_m L_m`` (the official code skips every ``head``
parameter). Per-modality logits (``acc/<m>``) are the unimodal heads' (as the official ``valid``).

Differences: the official code runs four backward passes per batch (summed loss, then each loss
alone); here the multimodal loss and each unimodal loss are differentiated once each with
``torch.autograd.grad`` -- the same gradients. The official min-norm solver sums the inner products
of every tensor *and* of their concatenation (each counted twice, which cancels in the ratio). N > 2
modalities: each encoder pairs ``g_mm`` with its own modality's ``g_u``, as for two. The per-tensor
rescale is the official one (the paper states it for the encoder's gradient). BalanceMM's port
(``MMPareto_trainer.py``) is not copied: its min-norm branch assigns the solver's weights to the loop
variable, so the weights stay ``(0, 0)``, the new gradient is zero and the rescale divides by zero --
NaN gradients on every conflicting batch (``tests/test_method_mmpareto.py`` tests a conflict).
Defaults: ``alpha`` 1.5 (official, and BalanceMM). Missing modalities: ``zero-feature`` (the fused
head with the absent features zeroed). Under DDP each rank combines its own gradients, which the
loop then averages (the weights are per rank, as the official code's single-GPU batch).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from trainables.methods.base import (
    BalancingMethod,
    Batch,
    Optimizers,
    StepState,
    StepStats,
    gradients_or_zeros,
    register_method,
)
from trainables.models.classifier import Encoded, ModelSpec
from trainables.models.fusion import build_fusion
from trainables.models.output import ModelOutput, MultimodalModel
from trainables.params import check_bounds, knob


@dataclass(frozen=True)
class MMParetoParams:
    alpha: float = knob(1.5, "gradient scale gamma on the encoders' combined gradient (official 1.5)", gt=0)

    def __post_init__(self) -> None:
        check_bounds(self)


# --- math ------------------------------------------------------------------------------------
def pareto_weights(g_mm: torch.Tensor, g_u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cos, w_mm)`` of two flat gradients: ``w_mm = 1/2`` if ``cos > 0``, else the min-norm weight.

    The min-norm weight minimises ``|w g_mm + (1 - w) g_u|`` over ``w`` in [0.001, 0.999] (official
    clipping). Everything stays on the device (no host sync).
    """
    a, b = g_mm.float(), g_u.float()
    aa, bb, ab = a.dot(a), b.dot(b), a.dot(b)
    cos = ab / (aa.sqrt() * bb.sqrt()).clamp_min(1e-12)
    denom = aa + bb - 2 * ab
    min_norm = torch.where(denom > 0, (bb - ab) / denom.clamp_min(1e-30), torch.full_like(denom, 0.5))
    w = torch.where(cos > 0, torch.full_like(cos, 0.5), min_norm.clamp(0.001, 0.999))
    return cos, w


def combine(g_mm: torch.Tensor, g_u: torch.Tensor, w_mm: torch.Tensor, alpha: float) -> torch.Tensor:
    """One tensor's new gradient: ``alpha * max(1, |g_mm + g_u| / |g|) * g``, ``g = 2 (w g_mm + (1 - w) g_u)``."""
    new = 2 * (w_mm * g_mm.float() + (1 - w_mm) * g_u.float())
    norm = new.norm()
    scale = torch.where(norm > 0, ((g_mm.float() + g_u.float()).norm() / norm.clamp_min(1e-30)).clamp_min(1), 1.0)
    return (alpha * scale * new).to(g_mm.dtype)


class MMParetoModel(Encoded):
    """Encoders, the fusion head on all features and a linear head per modality (official ``AVClassifier``)."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec.build_encoders())
        dims = {m: e.out_dim for m, e in self.encoders.items()}
        self.head = build_fusion(spec.fusion, dims, spec.num_classes)
        self.uni_heads = nn.ModuleDict({m: nn.Linear(d, spec.num_classes) for m, d in dims.items()})

    def forward(self, inputs: dict[str, torch.Tensor]) -> ModelOutput:
        feats = self.encode(inputs)
        fused, _ = self.head(feats)
        per = {m: self.uni_heads[m](f) for m, f in feats.items()}
        return ModelOutput(logits=fused, modality_logits=per, features=feats)


@register_method("mmpareto")
class MMPareto(BalancingMethod):
    """Fused + unimodal losses; each encoder's two gradients integrated by MMPareto."""

    Params = MMParetoParams
    min_modalities = 2
    missing_scheme = "zero-feature"

    def build_model(self, spec: ModelSpec) -> MultimodalModel:
        return MMParetoModel(spec)

    def training_step(
        self, model: MultimodalModel, batch: Batch, optimizers: Optimizers, state: StepState
    ) -> StepStats:
        y, mods = batch["label"], model.modalities
        out = model(batch["inputs"])
        loss_mm = F.cross_entropy(out.logits, y)
        loss_u = {m: F.cross_entropy(out.modality_logits[m], y) for m in mods}
        enc = {m: [p for p in model.encoders[m].parameters() if p.requires_grad] for m in mods}
        head = [p for p in model.head.parameters() if p.requires_grad]
        flat_enc = [p for m in mods for p in enc[m]]
        g_mm = gradients_or_zeros(loss_mm, flat_enc + head, retain_graph=True)
        g_mm_enc, g_head = g_mm[: len(flat_enc)], g_mm[len(flat_enc) :]
        optimizers["main"].zero_grad(set_to_none=True)
        for p, g in zip(head, g_head, strict=True):
            p.grad = g
        stats: StepStats = {}
        start = 0
        for i, m in enumerate(mods):
            uni = list(model.uni_heads[m].parameters())
            g_u = gradients_or_zeros(loss_u[m], enc[m] + uni, retain_graph=i < len(mods) - 1)
            g_m, g_u_enc = g_mm_enc[start : start + len(enc[m])], g_u[: len(enc[m])]
            start += len(enc[m])
            for p, g in zip(uni, g_u[len(enc[m]) :], strict=True):
                p.grad = g
            cos, w = pareto_weights(torch.cat([g.flatten() for g in g_m]), torch.cat([g.flatten() for g in g_u_enc]))
            for p, a, b in zip(enc[m], g_m, g_u_enc, strict=True):
                p.grad = combine(a, b, w, self.params.alpha)
            stats[f"mmpareto/cos/{m}"] = cos.detach()
            stats[f"mmpareto/weight_mm/{m}"] = w.detach()
            stats[f"mmpareto/conflict/{m}"] = (cos <= 0).float()
            stats[f"mmpareto/loss_uni/{m}"] = loss_u[m].detach()
        optimizers["main"].step()
        stats["loss"] = (loss_mm + sum(loss_u.values())).detach()
        stats["mmpareto/loss_mm"] = loss_mm.detach()
        return stats

    def predict(
        self, model: MultimodalModel, inputs: dict[str, torch.Tensor], present: Collection[str] | None = None
    ) -> ModelOutput:
        """Fused head with the absent modalities' features zeroed; unimodal heads as ``acc/<m>``."""
        feats = model.encode(inputs)
        keep = self.present_modalities(present)
        fused, _ = model.head({m: f if m in keep else torch.zeros_like(f) for m, f in feats.items()})
        per = {m: model.uni_heads[m](f) for m, f in feats.items()}
        return ModelOutput(logits=fused, modality_logits=per, features=feats)
