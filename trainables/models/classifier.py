"""``MultimodalClassifier``: one encoder per modality plus a fusion head -> ``ModelOutput``."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from trainables.models.encoders import build_encoder
from trainables.models.fusion import build_fusion
from trainables.models.output import ModelOutput

# Missing-modality scheme used by evaluation and by methods that drop modalities: the absent
# modality's *input* is replaced by zeros of the same shape ("zero-input"). Methods may override
# ``BalancingMethod.predict`` to zero features instead (DMRNet does).
MISSING_SCHEME = "zero-input"


def mask_inputs(inputs: dict[str, torch.Tensor], present: Iterable[str]) -> dict[str, torch.Tensor]:
    """Zero the inputs of every modality not in ``present`` (the ``zero-input`` scheme)."""
    keep = set(present)
    return {m: (x if m in keep else torch.zeros_like(x)) for m, x in inputs.items()}


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to build the standard model; methods may build extra heads from it.

    Attributes:
        shapes: per-modality input shape (no batch axis).
        encoders: per-modality encoder kind (``mlp``, ``cnn``, ``resnet18``).
        feature_dim: feature size of MLP/CNN encoders (ResNet-18 gives 512).
        fusion: fusion head kind.
        num_classes: number of classes.
    """

    shapes: dict[str, tuple[int, ...]]
    encoders: dict[str, str]
    feature_dim: int
    fusion: str
    num_classes: int

    @property
    def modalities(self) -> list[str]:
        return list(self.shapes)

    def build_encoders(self) -> nn.ModuleDict:
        return nn.ModuleDict({m: build_encoder(self.encoders[m], self.shapes[m], self.feature_dim) for m in self.modalities})

    def build(self) -> MultimodalClassifier:
        encoders = self.build_encoders()
        head = build_fusion(self.fusion, {m: e.out_dim for m, e in encoders.items()}, self.num_classes)
        return MultimodalClassifier(encoders, head)


class MultimodalClassifier(nn.Module):
    """Encoders (``self.encoders[modality]``) and a fusion head (``self.head``)."""

    def __init__(self, encoders: nn.ModuleDict, head: nn.Module) -> None:
        super().__init__()
        self.encoders = encoders
        self.head = head
        self.modalities = list(encoders.keys())

    def encode(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {m: self.encoders[m](inputs[m]) for m in self.modalities}

    def forward(self, inputs: dict[str, torch.Tensor]) -> ModelOutput:
        feats = self.encode(inputs)
        fused, per = self.head(feats)
        return ModelOutput(logits=fused, modality_logits=per, features=feats)
