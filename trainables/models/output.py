"""What every model returns, so methods and metrics never match parameter names."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ModelOutput:
    """Outputs of a multimodal classifier for one batch.

    Attributes:
        logits: fused logits, ``[B, C]``.
        modality_logits: per-modality logits ``[B, C]``, keyed by modality name (how they are
            derived depends on the fusion head; see ``trainables.models.fusion``).
        features: per-modality encoder features ``[B, D_m]``.
        extras: anything method-specific (e.g. DMRNet's ``mu`` and ``logvar``).
    """

    logits: torch.Tensor
    modality_logits: dict[str, torch.Tensor]
    features: dict[str, torch.Tensor] = field(default_factory=dict)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
