"""One modality alone: the upper reference for what a modality can learn without interference.

Only the chosen modality's encoder and a linear classifier on its features are built and trained.
The fused logits *are* the chosen modality's logits. Only that modality has per-modality logits, so
only ``*/acc/<modality>`` of the chosen one is reported: no per-modality accuracy or imbalance ratio
is made up for modalities the model never sees. Missing-modality evaluation still runs (a subset
without the chosen modality gives the model a zero input).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

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
from trainables.models.output import ModelOutput, MultimodalModel
from trainables.params import knob


@dataclass(frozen=True)
class UnimodalParams:
    modality: str = knob("", "modality to train alone; empty = the dataset's first modality")


class UnimodalModel(Encoded):
    """The chosen modality's encoder (the only one in ``encoders`` / ``modalities``) and a linear head."""

    def __init__(self, spec: ModelSpec, modality: str) -> None:
        super().__init__(spec.build_encoders([modality]))
        self.modality = modality
        self.head = nn.Linear(self.encoders[modality].out_dim, spec.num_classes)

    def forward(self, inputs: dict[str, torch.Tensor]) -> ModelOutput:
        feat = self.encoders[self.modality](inputs[self.modality])
        logits = self.head(feat)
        return ModelOutput(logits=logits, modality_logits={self.modality: logits}, features={self.modality: feat})


@register_method("unimodal")
class Unimodal(BalancingMethod):
    Params = UnimodalParams
    variant_param = "modality"

    def build_model(self, spec: ModelSpec) -> MultimodalModel:
        modality = self.params.modality or spec.modalities[0]
        if modality not in spec.modalities:
            raise ConfigError(
                "params.modality",
                f"{modality!r} is not a modality of this dataset; allowed: {', '.join(spec.modalities)}",
            )
        return UnimodalModel(spec, modality)

    def training_step(
        self, model: MultimodalModel, batch: Batch, optimizers: Optimizers, state: StepState
    ) -> StepStats:
        out = model(batch["inputs"])
        loss = cross_entropy(out.logits, batch["label"])
        backward_and_step(optimizers["main"], loss)
        return {"loss": loss.detach()}
