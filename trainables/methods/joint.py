"""Plain joint training: cross-entropy of the fused logits, one optimizer step per batch.

The baseline every balancing paper compares against.
"""

from __future__ import annotations

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
from trainables.models.output import MultimodalModel


@register_method("joint")
class Joint(BalancingMethod):
    """Joint training of all encoders and the fusion head on the fused loss."""

    def training_step(
        self, model: MultimodalModel, batch: Batch, optimizers: Optimizers, state: StepState
    ) -> StepStats:
        out = model(batch["inputs"])
        loss = cross_entropy(out.logits, batch["label"])
        backward_and_step(optimizers["main"], loss)
        return {"loss": loss.detach()}
