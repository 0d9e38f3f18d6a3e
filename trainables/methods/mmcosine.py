"""MMCosine: modality-wise cosine classifier (L2-normalised features and weights, scaled, summed).

Xu, Feng, Zhang, Hu, "MMCosine: Multi-Modal Cosine Loss Towards Balanced Audio-Visual Fine-Grained
Learning", ICASSP 2023 (arXiv 2303.05338); official code GeWu-Lab/MMCosine_ICASSP23 (``main_CD.py``,
``train_epoch`` and ``valid``; README command ``--mmcosine True --scaling 10``).

The concat head's weight is split per modality, ``W = [W_1, ..., W_M]``. Modality m's logits are
``z_m,k = s cos(f_m, w_m,k) = s <f_m / |f_m|, w_m,k / |w_m,k|>`` (each class row of ``W_m`` normalised on
its own, as the official ``F.normalize(W_m^T, dim=0)``), no bias; the fused logits are
``sum_m z_m`` and the loss is ``CE(sum_m z_m)``. No modality can dominate the fused logits by feature or
weight magnitude: each contributes at most ``s`` per class.

Per-modality logits (``acc/<m>``) are the ``z_m`` (the official "approximate uni-modal evaluation").
Missing modalities: ``zero-feature`` -- a zeroed feature normalises to zero, so an absent modality's
cosine logits are 0 and it leaves the sum.

Defaults: ``scale`` 10 is the official README / argparse value (BalanceMM 15). Differences: the
official ``valid`` predicts with the *raw* concat head ``W [f_1; f_2] + b`` although training used the
cosine logits (its bias never receives a gradient); we evaluate the cosine logits, and
``official_eval: true`` reproduces the official fused prediction. The official NCE term (``--lam``,
supplementary material, off by default) is not implemented. N modalities: the same sum over all.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from trainables.errors import ConfigError
from trainables.methods.base import (
    BalancingMethod,
    Batch,
    Optimizers,
    StepState,
    StepStats,
    backward_and_step,
    cross_entropy,
    register_method,
)
from trainables.models.classifier import Encoded, ModelSpec
from trainables.models.fusion import ConcatFusion
from trainables.models.output import ModelOutput, MultimodalModel
from trainables.params import check_bounds, knob


@dataclass(frozen=True)
class MMCosineParams:
    scale: float = knob(10.0, "scaling s of the cosine logits (official README 10; BalanceMM 15)", gt=0)
    official_eval: bool = knob(False, "evaluate the fused prediction with the raw concat head, as the official valid()")

    def __post_init__(self) -> None:
        check_bounds(self)


def cosine_logits(features: torch.Tensor, weight: torch.Tensor, scale: float) -> torch.Tensor:
    """``[B, C]``: ``s cos(f_i, w_k)`` with each feature and each class row of ``weight`` L2-normalised."""
    return scale * F.normalize(features, dim=1) @ F.normalize(weight, dim=1).t()


class MMCosineModel(Encoded):
    """Encoders and a concat head whose per-modality weight slices serve as cosine classifiers."""

    def __init__(self, spec: ModelSpec, scale: float, official_eval: bool) -> None:
        super().__init__(spec.build_encoders())
        self.head = ConcatFusion({m: e.out_dim for m, e in self.encoders.items()}, spec.num_classes)
        self.scale, self.official_eval = scale, official_eval

    def classify(self, feats: dict[str, torch.Tensor]) -> ModelOutput:
        """Cosine logits per modality and their sum (or, with ``official_eval`` at eval, the raw head)."""
        per = {
            m: cosine_logits(feats[m], self.head.fc.weight[:, sl], self.scale) for m, sl in self.head.slices().items()
        }
        fused = torch.stack(list(per.values())).sum(0)
        if self.official_eval and not self.training:
            fused = self.head(feats)[0]
        return ModelOutput(fused, per, feats)

    def forward(self, inputs: dict[str, torch.Tensor]) -> ModelOutput:
        return self.classify(self.encode(inputs))


@register_method("mmcosine")
class MMCosine(BalancingMethod):
    """Cross-entropy of the summed per-modality cosine logits."""

    Params = MMCosineParams
    missing_scheme = "zero-feature"

    def build_model(self, spec: ModelSpec) -> MultimodalModel:
        if spec.fusion != "concat":
            msg = f"mmcosine splits the concat head's weight per modality; got {spec.fusion!r}, allowed: 'concat'"
            raise ConfigError("model.fusion", msg)
        return MMCosineModel(spec, self.params.scale, self.params.official_eval)

    def training_step(
        self, model: MultimodalModel, batch: Batch, optimizers: Optimizers, state: StepState
    ) -> StepStats:
        y = batch["label"]
        out = model(batch["inputs"])
        loss = cross_entropy(out.logits, y)
        backward_and_step(optimizers["main"], loss)
        stats: StepStats = {"loss": loss.detach()}
        for m, z in out.modality_logits.items():  # the official tensorboard "logit_m": mean true-class logit
            stats[f"mmcosine/true_logit/{m}"] = z.detach().gather(1, y[:, None]).mean()
            stats[f"mmcosine/feature_norm/{m}"] = out.features[m].detach().norm(dim=1).mean()
        return stats

    def predict(
        self, model: MultimodalModel, inputs: dict[str, torch.Tensor], present: Collection[str] | None = None
    ) -> ModelOutput:
        """Absent modalities' features are zeroed: their cosine logits are 0 and leave the sum."""
        feats = model.encode(inputs)
        keep = self.present_modalities(present)
        return model.classify({m: f if m in keep else torch.zeros_like(f) for m, f in feats.items()})
