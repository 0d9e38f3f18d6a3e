"""UME: uni-modal ensemble -- each modality's model trained alone, predictions averaged at test time.

Du, Teng, Li, Liu, Yuan, Wang, Yuan, Zhao, "On Uni-Modal Feature Learning in Supervised Multi-Modal
Learning", ICML 2023 (arXiv 2305.01233); the paper's other method is ``umt`` (uni-modal teachers).
No official code was found here (searched code and issues for UME/UMT by Du et al.), and
BalanceBenchmark has no UME port (its ``UMT_trainer.py`` only). Only the paper's abstract was
retrievable in this session; the parts below marked *(recalled)* rest on our reading of the full text
and should be checked against the PDF.

Method. One model per modality: encoder ``f_m`` and its own linear head ``c_m``, trained on its own
cross-entropy ``CE(c_m(f_m(x_m)), y)`` only. There is no fused loss and no shared parameter, so no
gradient crosses modalities: the step minimises ``sum_m CE_m`` with one backward, and since the
parameter sets are disjoint each encoder/head gets exactly the gradient of its own CE (the sum is
only bookkeeping). Prediction: the ensemble of the unimodal models, ``sum_m w_m z_m`` over the
per-modality logits ``z_m = c_m(f_m(x_m))`` with equal weights ``w_m = 1/M`` by default (*recalled*:
the paper averages the unimodal models' outputs; ``combine: probs`` averages softmax probabilities
instead and reports ``log`` of the mean as the fused logits, so CE/argmax read it as a distribution).
``weights`` sets fixed per-modality weights (normalised to sum 1). Per-modality logits are the
unimodal models' own, so ``*/acc/<modality>`` is each member's accuracy.

Missing modalities: ``drop-head`` -- an absent modality's input is zeroed and its model leaves the
ensemble (the present ones are averaged with their weights renormalised), as an ensemble naturally
degrades.

Differences from the paper (which trains the unimodal models in separate runs, then ensembles):

* one trial trains all members together: same epochs, LR schedule, batch order and optimizer kind
  for every member (one optimizer over disjoint parameters gives each member the update a separate
  SGD/Adam run would, since both act per parameter; the loop does no global-norm clipping that
  would couple them). The batch order is shared, not independent per member.
* model selection is *not* the paper's: the loop keeps one best-validation epoch on
  ``eval.select_metric`` (``val/acc``, the *ensemble's* accuracy) for all members at once, while the
  paper trains (and selects) each unimodal model on its own and then ensembles the finished models.
  Selecting on the ensemble's accuracy is the single-run equivalent (it selects what is evaluated)
  but a member may be taken at a worse epoch than its own best. The paper's setup is two
  ``unimodal`` trials whose logits are averaged; ``tests/perf/ablate_ume.py`` measures both (below).

When the paper recommends which (*recalled*; the abstract says only "according to the distribution
of uni-modal and paired features"): UME when the uni-modal features carry the task and paired
(cross-modal interaction) features matter little -- then nothing is gained by joint training and
ensembling fully trained unimodal models avoids modality laziness (its RGB + optical-flow UCF101 and
front/rear-view ModelNet40); UMT when paired features matter, so joint training with distillation
from unimodal teachers keeps the cross-modal interaction (its audio-visual VGG-Sound and
Kinetics-400). The paper's guide compares the two on validation data.

Measured on mfeat (``sweeps/mfeat_all.yaml`` settings, 12 epochs, 3 seeds, best-validation test acc,
mean +- std; ``tests/perf/ablate_ume.py``): ``ume`` 95.5 +- 0.4 (members: pix 93.2 +- 1.2, fou
76.2 +- 2.3), joint 95.5 +- 0.1, umt 93.4 +- 0.4; ``combine: probs`` 93.3 +- 0.2, so the default stays
the mean of logits (a confident pix model outvotes fou there; the mean of probabilities gives the
weaker fou model more say and loses 2 points). The paper's setup -- ``unimodal`` pix (95.0 +- 0.2) and
fou (77.3 +- 0.5) in separate runs, each selected on its own val acc, logits averaged -- gives
95.7 +- 0.4: selecting one epoch on the ensemble's val acc costs nothing beyond noise here (it picks
epoch 9.3 +- 1.2 on average, earlier than pix alone's 10.7 +- 0.6, which is why the pix member is a
little weaker than pix alone). On mfeat UME ties joint training and beats UMT: the fou Fourier
coefficients and pix images carry the digit each on their own (paired features matter little), the
case the paper gives UME for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from trainables.errors import ConfigError
from trainables.methods.base import (
    BalancingMethod,
    Batch,
    MethodContext,
    Optimizers,
    StepState,
    StepStats,
    backward_and_step,
    register_method,
)
from trainables.models.classifier import Encoded, ModelSpec
from trainables.models.output import ModelOutput, MultimodalModel
from trainables.params import knob


@dataclass(frozen=True)
class UMEParams:
    combine: Literal["logits", "probs"] = knob(
        "logits", "ensemble of the unimodal outputs: weighted mean of logits (paper) or of softmax probabilities"
    )
    weights: list[float] = knob(
        [], "fixed ensemble weight per modality in dataset order (normalised to sum 1); empty = equal"
    )


def ensemble(logits: dict[str, torch.Tensor], weights: dict[str, float], combine: str = "logits") -> torch.Tensor:
    """``sum_m w_m z_m / sum_m w_m`` over the given modalities (``probs``: ``log`` of the weighted mean
    of ``softmax(z_m)``). Only the modalities in ``logits`` take part: their weights are renormalised."""
    total = sum(weights[m] for m in logits)
    if combine == "probs":
        mean = sum((weights[m] / total) * F.softmax(z.float(), dim=1) for m, z in logits.items())
        return mean.clamp_min(torch.finfo(mean.dtype).tiny).log()
    return sum((weights[m] / total) * z for m, z in logits.items())


def unimodal_losses(logits: dict[str, torch.Tensor], labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each modality's own cross-entropy ``CE(c_m(f_m(x_m)), y)``: the only losses UME trains on."""
    return {m: F.cross_entropy(z, labels) for m, z in logits.items()}


class UMEModel(Encoded):
    """One unimodal model per modality: its encoder ``encoders[m]`` and linear head ``heads[m]``; nothing shared."""

    def __init__(self, spec: ModelSpec, weights: dict[str, float], combine: str) -> None:
        super().__init__(spec.build_encoders())
        self.heads = nn.ModuleDict({m: nn.Linear(e.out_dim, spec.num_classes) for m, e in self.encoders.items()})
        self.weights, self.combine = dict(weights), combine

    def forward(self, inputs: dict[str, torch.Tensor]) -> ModelOutput:
        """``modality_logits`` are the unimodal models' logits; ``logits`` is their ensemble."""
        feats = self.encode(inputs)
        per = {m: self.heads[m](f) for m, f in feats.items()}
        return ModelOutput(ensemble(per, self.weights, self.combine), per, feats)


@register_method("ume")
class UME(BalancingMethod):
    """Unimodal models trained apart on their own CE; the prediction is their ensemble."""

    Params = UMEParams
    min_modalities = 2
    missing_scheme = "drop-head"

    def __init__(self, params: UMEParams, ctx: MethodContext) -> None:
        super().__init__(params, ctx)
        n = len(ctx.modalities)
        if params.weights and len(params.weights) != n:
            raise ConfigError(
                "params.weights",
                f"got {len(params.weights)} weights; allowed: one per modality ({', '.join(ctx.modalities)})",
            )
        if params.weights and (min(params.weights) < 0 or sum(params.weights) <= 0):
            raise ConfigError("params.weights", f"got {params.weights}; allowed: non-negative with a positive sum")
        self.weights = dict(zip(ctx.modalities, params.weights or [1.0] * n, strict=True))

    def build_model(self, spec: ModelSpec) -> MultimodalModel:
        return UMEModel(spec, self.weights, self.params.combine)

    def training_step(
        self, model: MultimodalModel, batch: Batch, optimizers: Optimizers, state: StepState
    ) -> StepStats:
        y = batch["label"]
        per = {m: model.heads[m](f) for m, f in model.encode(batch["inputs"]).items()}
        losses = unimodal_losses(per, y)
        loss = sum(losses.values())  # disjoint parameters: each model gets its own CE's gradient only
        backward_and_step(optimizers["main"], loss)
        stats: StepStats = {"loss": loss.detach()}
        for m, lm in losses.items():
            stats[f"ume/ce/{m}"] = lm.detach()
        return stats

    def fuse_heads(self, heads: dict[str, torch.Tensor], out: ModelOutput) -> torch.Tensor:
        # nothing present: all inputs zeroed, all vote (a constant guess)
        return ensemble(heads or out.modality_logits, self.weights, self.params.combine)
