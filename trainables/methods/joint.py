"""Plain joint training: cross-entropy of the fused logits, one optimizer step per batch.

The baseline every balancing paper compares against.
"""

from __future__ import annotations

from torch import nn

from trainables.methods.base import BalancingMethod, Batch, Optimizers, StepState, cross_entropy, register_method, sgd_step


@register_method("joint")
class Joint(BalancingMethod):
    """Joint training of all encoders and the fusion head on the fused loss."""

    def training_step(self, model: nn.Module, batch: Batch, optimizers: Optimizers, state: StepState) -> dict[str, float]:
        out = model(batch["inputs"])
        loss = cross_entropy(out.logits, batch["label"])
        sgd_step(optimizers["main"], loss)
        return {"loss": loss.item()}
