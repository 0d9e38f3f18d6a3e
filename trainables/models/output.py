"""The model contract: what every model returns and exposes, so methods never match parameter names."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
from torch import nn


@dataclass
class ModelOutput:
    """Outputs of a multimodal classifier for one batch.

    Attributes:
        logits: fused logits, ``[B, C]``.
        modality_logits: per-modality logits ``[B, C]``, keyed by modality name (how they are
            derived depends on the model; see ``trainables.models.fusion`` and each method).
        features: per-modality encoder features ``[B, D_m]``.
        extras: anything method-specific (e.g. DMRNet's ``mu`` and ``logvar``).
    """

    logits: torch.Tensor
    modality_logits: dict[str, torch.Tensor]
    features: dict[str, torch.Tensor] = field(default_factory=dict)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


@runtime_checkable
class MultimodalModel(Protocol):
    """What the loop, the evaluation and every method may rely on in a model.

    Attributes:
        encoders: one encoder per modality the model encodes (``encoders[m].out_dim`` = its feature size).
        modalities: the modalities the model encodes, in dataset order (the keys of ``encoders``).
    """

    encoders: nn.ModuleDict
    modalities: list[str]

    def encode(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-modality features ``[B, D_m]`` of the modalities the model encodes."""
        ...

    def __call__(self, inputs: dict[str, torch.Tensor]) -> ModelOutput:
        """The forward pass: fused and per-modality logits."""
        ...
