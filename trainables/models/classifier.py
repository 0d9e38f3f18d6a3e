"""Model building blocks: ``ModelSpec`` (what to build), ``Encoded`` (encoders of every model) and the
standard ``MultimodalClassifier`` (encoders + fusion head -> ``ModelOutput``).

Every model, the standard one and each method's own, derives from :class:`Encoded`, so all of them
build their encoders the same way (``ModelSpec.build_encoders``) and satisfy the
:class:`trainables.models.output.MultimodalModel` contract (``encoders``, ``modalities``, ``encode``).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import torch
from torch import nn

from trainables.errors import ConfigError
from trainables.models.encoders import build_encoder
from trainables.models.fusion import build_fusion
from trainables.models.output import ModelOutput


def mask_inputs(inputs: dict[str, torch.Tensor], present: Collection[str]) -> dict[str, torch.Tensor]:
    """Zero the inputs of every modality not in ``present`` (the ``zero-input`` scheme)."""
    return {m: (x if m in present else torch.zeros_like(x)) for m, x in inputs.items()}


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

    def build_encoders(self, modalities: Collection[str] | None = None) -> nn.ModuleDict:
        """One registered encoder per modality (all of them, or ``modalities`` in dataset order)."""
        names = [m for m in self.modalities if modalities is None or m in modalities]
        return nn.ModuleDict({m: build_encoder(self.encoders[m], self.shapes[m], self.feature_dim) for m in names})

    def build(self) -> MultimodalClassifier:
        encoders = self.build_encoders()
        head = build_fusion(self.fusion, {m: e.out_dim for m, e in encoders.items()}, self.num_classes)
        return MultimodalClassifier(encoders, head)


class Encoded(nn.Module):
    """Base of every model: ``self.encoders[m]`` per encoded modality and ``encode(inputs)``."""

    def __init__(self, encoders: nn.ModuleDict) -> None:
        super().__init__()
        self.encoders = encoders
        self.modalities = list(encoders.keys())

    def encode(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {m: self.encoders[m](inputs[m]) for m in self.modalities}

    def shared_feature_dim(self, key: str, why: str) -> int:
        """The one feature size of all encoders; ``ConfigError(key)`` saying ``why`` when they differ."""
        dims = {m: e.out_dim for m, e in self.encoders.items()}
        if len(set(dims.values())) != 1:
            raise ConfigError(key, f"{why}, so every encoder must give the same feature size; got {dims}")
        return next(iter(dims.values()))


class MultimodalClassifier(Encoded):
    """Encoders (``self.encoders[modality]``) and a fusion head (``self.head``)."""

    def __init__(self, encoders: nn.ModuleDict, head: nn.Module) -> None:
        super().__init__(encoders)
        self.head = head

    def forward(self, inputs: dict[str, torch.Tensor]) -> ModelOutput:
        feats = self.encode(inputs)
        fused, per = self.head(feats)
        return ModelOutput(logits=fused, modality_logits=per, features=feats)
