"""MLA: multimodal learning with alternating unimodal adaptation and test-time uncertainty fusion.

Zhang, Yoon, Bansal, Yao, "Multimodal Representation Learning by Alternating Unimodal Adaptation",
CVPR 2024 (arXiv 2311.10707); official code Cecile-hi/Multimodal-Learning-with-Alternating-Unimodal-Adaptation
(``main.py`` with ``--gs_flag``, ``utils/utils.py`` ``GSPlugin``).

Training, per batch: one forward of every encoder; then for each modality m in turn (dataset order):
``CE(h(f_m), y)`` with the one shared linear head ``h``, backward (only encoder m and ``h`` get a
gradient: the other features never enter this loss), projection of ``h``'s weight gradient, one
optimizer step. There is no fused loss.

Gradient projection (paper Sec. 3.2, OWM-style): one projector ``P`` (d x d, identity at the start,
kept for the whole run, shared by all modalities). Before each step, with ``r`` the batch-mean
feature of the active modality: ``k = P r^T``, ``P <- P - k k^T / (alpha_t + r k)``,
``alpha_t = 0.1^(1 + batch_idx / batches_per_epoch)``; ``normalize: frobenius`` then divides ``P`` by
its Frobenius norm (the official plugin; ``none`` is the paper's formula); then ``grad W <- grad W P^T``
(bias untouched). ``projection``: ``replace`` (the paper), ``add`` (``g + g P^T``, as BalanceMM does)
or ``off`` (plain alternating training). Reported every epoch: ``train/mla/proj/trace`` (trace(P)/d)
and ``train/mla/proj/grad_ratio`` (``||g'|| / ||g||`` of the head's weight gradient, mean over steps).
Official-plugin details we do not copy: its denominator is the d x d matrix ``k r`` (a bug; the scalar
``r k`` is meant), and it skips the very first step.

Default ``projection: off`` (with ``normalize: frobenius`` for when it is switched on), by evidence.
(1) The released official code never projects (its name check ``n == "module.weight"`` matches no
parameter), so its published numbers are ``off``. (2) Without normalisation ``P`` shuts the span of
the feature means and freezes the shared head: on mfeat (quickstart settings) trace(P)/d falls to 0.057
and the gradient ratio to 0.027 by epoch 12, 0.012 / 0.004 by epoch 40. Frobenius keeps the ratio
near 0.04 (a fixed ~25x smaller head step; at d = 512, ResNet-18, ``||P||_F = 1`` means about
1/sqrt(512) = 0.044 from the first step on). (3) Fused test accuracy, 3 seeds, mean ± std
(tests/perf/ablate_mla.py): mfeat 12 epochs off 91.5 ± 1.9, replace/none 90.9 ± 0.5, replace/frobenius
90.1 ± 1.1; mfeat 40 epochs 92.3 ± 0.6, 91.4 ± 0.7, 91.0 ± 0.5; synthetic 12 epochs 95.8 ± 0.4,
95.9 ± 0.6, 95.4 ± 0.8. Projection never helped beyond noise, and off is best or tied everywhere.

Inference: per-modality logits ``h(f_m)`` fused by ``fusion``: ``uncertainty`` (paper Sec. 3.3) with
entropy ``H_m`` of ``softmax(h(f_m))`` and weights ``w_m = softmax_m(max_j H_j - H_m)`` (lower entropy,
higher weight), per sample by default; ``entropy_scope: batch`` reproduces the official code, which
takes the softmax over the *batch* axis and sums the entropy over the batch, giving one weight per
modality per evaluation batch (so its predictions depend on the evaluation batch). ``fixed``:
``sum_m c_m h(f_m)`` with ``fixed_weights`` (empty = equal weights); the official fixed fusion is
``av_alpha * audio + (1 - av_alpha) * visual`` with ``av_alpha`` 0.55 in training runs (``main()``
is called with 0.55, overriding the argparse default 0.5 that only its test-only path reads), i.e.
``fixed_weights: [0.55, 0.45]`` for (audio, visual). With absent modalities (missing-modality
evaluation) only the present ones are fused.

Fused below its own best head (mfeat: 90.9 vs pix 92.7, 12 epochs): the fusion, not the data. The
same two heads of the best-validation model give 92.9 ± 0.2 summed with equal weights, 95.8 ± 0.5
with one fixed weight chosen on validation (w_pix 0.73) and 97.4 ± 0.2 for an oracle (either head
right); fou alone is right on 4.7% of test samples. The per-sample entropy weights hand those gains
away by trusting the confident-but-weaker fou head where it is wrong (off, 40 epochs: 92.3 fused vs
94.8 pix, 96.5 with the validation-chosen fixed weight).

N modalities: supported as written (the official code has a three-modality variant). All encoders
must give features of the same size, since one head reads them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from trainables.errors import ConfigError
from trainables.methods.base import (
    BalancingMethod,
    Batch,
    EpochContext,
    Optimizers,
    StepState,
    StepStats,
    cross_entropy,
    register_method,
)
from trainables.models.classifier import Encoded, ModelSpec
from trainables.models.output import ModelOutput, MultimodalModel
from trainables.params import knob
from trainables.runtime import pooled_mean


@dataclass(frozen=True)
class MLAParams:
    projection: Literal["replace", "add", "off"] = knob(
        "off", "head-gradient projection: replace = g P^T (paper), add = g + g P^T (BalanceMM), off (official run)"
    )
    fusion: Literal["uncertainty", "fixed"] = knob(
        "uncertainty", "test-time fusion of h(f_m): entropy-based weights (paper) or fixed weights"
    )
    entropy_scope: Literal["sample", "batch"] = knob(
        "sample", "uncertainty weights per sample (paper) or one per eval batch (official code)"
    )
    fixed_weights: list[float] = knob(
        [], "fusion=fixed: one weight per modality in dataset order; empty = equal (official av_alpha: [0.55, 0.45])"
    )
    normalize: Literal["none", "frobenius"] = knob(
        "frobenius", "projector after each update: divided by its Frobenius norm (official GSPlugin) or none (paper)"
    )


def owm_alpha(batch_idx: int, batches_per_epoch: int) -> float:
    """``alpha_t = 0.1^(1 + batch_idx / batches_per_epoch)`` (official ``GSPlugin.before_update``)."""
    return 0.1 ** (1.0 + batch_idx / max(batches_per_epoch, 1))


def update_projector(P: torch.Tensor, features: torch.Tensor, alpha: float, normalize: str = "none") -> torch.Tensor:
    """One recursive-least-squares step of the OWM projector with the batch-mean feature ``r``.

    ``k = P r^T``; ``P - k k^T / (alpha + r k)``, then ``/ ||.||_F`` when ``normalize="frobenius"``
    (the official plugin). Returns the new ``P`` (``P`` itself is not changed); no host sync.
    """
    r = features.detach().to(P.dtype).mean(0, keepdim=True)  # [1, d]
    k = P @ r.t()  # [d, 1]
    new = P - (k @ k.t()) / (alpha + r @ k)  # r k is [1, 1]: broadcast, stays on the device
    return new / torch.linalg.matrix_norm(new) if normalize == "frobenius" else new


def projector_trace(P: torch.Tensor) -> float:
    """``trace(P) / d``: 1 for the identity, falls as ``P`` shuts directions (``train/mla/proj/trace``)."""
    return float(P.diagonal().sum() / P.shape[0])


def project_gradient(grad: torch.Tensor, P: torch.Tensor, mode: str) -> torch.Tensor:
    """Head weight gradient ``g`` ([C, d]) -> ``g P^T`` (replace), ``g + g P^T`` (add) or ``g`` (off)."""
    if mode == "off":
        return grad
    proj = grad @ P.t().to(grad.dtype)
    return proj if mode == "replace" else grad + proj


def norm_ratio(new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """``||new|| / ||old||`` as a 0-d tensor (no host sync): how much of the head gradient survives."""
    return (torch.linalg.vector_norm(new) / torch.linalg.vector_norm(old).clamp_min(1e-12)).float()


def entropy(logits: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Shannon entropy of ``softmax(logits)`` along ``dim`` (numerically safe via log_softmax)."""
    logp = logits.float().log_softmax(dim)
    return -(logp.exp() * logp).sum(dim)


def uncertainty_weights(logits: dict[str, torch.Tensor], scope: str = "sample") -> dict[str, torch.Tensor]:
    """Fusion weights ``w_m = softmax_m(max_j H_j - H_m)``; ``[B]`` per sample or a scalar per batch.

    ``scope="batch"`` follows the official ``calculate_entropy``: softmax over the batch axis and
    the entropy summed over the whole ``[B, C]`` matrix, one value per modality.
    """
    names = list(logits)
    if scope == "sample":
        H = torch.stack([entropy(logits[m], 1) for m in names])  # [M, B]
    else:
        H = torch.stack([entropy(logits[m], 0).sum() for m in names])  # [M]
    w = (H.max(0, keepdim=True).values - H).softmax(0)
    return {m: w[i] for i, m in enumerate(names)}


class MLAModel(Encoded):
    """Encoders plus one linear head shared by all modalities."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec.build_encoders())
        self.head = nn.Linear(self.shared_feature_dim("model.encoders", "MLA shares one head"), spec.num_classes)

    def forward(self, inputs: dict[str, torch.Tensor]) -> ModelOutput:
        """Per-modality logits; ``logits`` is their plain mean (the method's ``predict`` fuses properly)."""
        feats = self.encode(inputs)
        per = {m: self.head(f) for m, f in feats.items()}
        return ModelOutput(logits=torch.stack(list(per.values())).mean(0), modality_logits=per, features=feats)


@register_method("mla")
class MLA(BalancingMethod):
    """Alternating unimodal steps through a shared head with an OWM gradient projector."""

    Params = MLAParams
    missing_scheme = "drop-head"

    def __init__(self, params: MLAParams, ctx: Any) -> None:
        super().__init__(params, ctx)
        if params.fusion == "fixed" and params.fixed_weights and len(params.fixed_weights) != len(ctx.modalities):
            raise ConfigError(
                "params.fixed_weights",
                f"got {len(params.fixed_weights)} weights; allowed: one per modality ({', '.join(ctx.modalities)})",
            )
        self.P: torch.Tensor | None = None

    def build_model(self, spec: ModelSpec) -> MultimodalModel:
        model = MLAModel(spec)
        self.P = torch.eye(model.head.in_features, device=self.ctx.device)
        return model

    def training_step(
        self, model: MultimodalModel, batch: Batch, optimizers: Optimizers, state: StepState
    ) -> StepStats:
        opt, y = optimizers["main"], batch["label"]
        feats = model.encode(batch["inputs"])  # one forward per encoder
        alpha = owm_alpha(state.batch_idx, state.batches_per_epoch)
        stats: StepStats = {}
        per_logits = {}
        for m in model.modalities:
            opt.zero_grad(set_to_none=True)
            logits = model.head(feats[m])  # after the previous modality's head step, as in the paper
            loss = cross_entropy(logits, y)
            loss.backward()
            if self.params.projection != "off":
                with torch.autocast(device_type=self.P.device.type, enabled=False), torch.no_grad():
                    r = pooled_mean(feats[m].detach().to(self.P.dtype), self.ctx.all_reduce)  # same P on all ranks
                    self.P = update_projector(self.P, r[None], alpha, self.params.normalize)
                    g = model.head.weight.grad
                    model.head.weight.grad = project_gradient(g, self.P, self.params.projection)
                    stats[f"mla/proj/grad_ratio/{m}"] = norm_ratio(model.head.weight.grad, g)
            opt.step()
            stats[f"mla/loss/{m}"] = loss.detach()
            per_logits[m] = logits.detach()
        stats["loss"] = sum(stats[f"mla/loss/{m}"] for m in model.modalities) / len(model.modalities)
        for m, w in uncertainty_weights(per_logits, self.params.entropy_scope).items():
            stats[f"mla/weight/{m}"] = w.mean()  # the fusion weights the paper would give this batch
        ratios = [v for k, v in stats.items() if k.startswith("mla/proj/grad_ratio/")]
        if ratios:
            stats["mla/proj/grad_ratio"] = sum(ratios) / len(ratios)
        return stats

    def on_epoch_end(self, model: MultimodalModel, ctx: EpochContext) -> dict[str, float]:
        return {"mla/proj/trace": projector_trace(self.P)} if self.P is not None else {}

    def fuse(self, logits: dict[str, torch.Tensor]) -> torch.Tensor:
        """Fused logits of the given modalities (all present ones)."""
        if self.params.fusion == "uncertainty":
            w = uncertainty_weights(logits, self.params.entropy_scope)
            return sum(w[m].reshape(-1, 1) * z for m, z in logits.items())
        n = len(self.ctx.modalities)
        fixed = dict(zip(self.ctx.modalities, self.params.fixed_weights or [1.0 / n] * n, strict=True))
        return sum(fixed[m] * z for m, z in logits.items())

    def fuse_heads(self, heads: dict[str, torch.Tensor], out: ModelOutput) -> torch.Tensor:
        return self.fuse(heads)

    def state_dict(self) -> dict[str, Any]:
        return {"P": None if self.P is None else self.P.detach().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("P") is not None:
            self.P = state["P"].to(self.ctx.device).clone()
