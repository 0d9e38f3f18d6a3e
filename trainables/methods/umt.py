"""UMT: uni-modal teachers distilled into the multimodal encoders.

Du, Teng, Li, Liu, Yuan, Wang, Yuan, Zhao, "On Uni-Modal Feature Learning in Supervised Multi-Modal
Learning", ICML 2023 (arXiv 2305.01233). No official code was found here; BalanceBenchmark's port
(``balancemm/trainer/UMT_trainer.py``) loads separately trained unimodal checkpoints.

Two stages in one run (as ``di_mml``):

* stage 1, epochs ``0 .. teacher_epochs - 1``: one teacher per modality -- its own encoder (same kind
  as the student's) and linear head -- trained on ``CE(head_m(g_m(x_m)), y)``; meanwhile the student
  (encoders + fusion head) trains on ``CE(fused)`` alone when ``student_stage1`` is on (default), or
  waits (``false``: the paper's order, teachers before student);
* stage 2, the remaining epochs: the teachers are frozen (eval mode, no gradient) and the student
  (encoders + fusion head) trains on ``CE(fused) + scale * sum_m mean((f_m - g_m)^2)``, the paper's
  feature distillation of each teacher's features ``g_m`` into the student encoder's ``f_m`` (MSE, as
  BalanceMM).

``teacher_epochs`` left unset takes half of the trial's epochs (a one-epoch trial is all stage 1): the
paper trains the teachers to convergence in a separate run, so this split is our choice for a single run
with a fixed budget; so is training the student during stage 1 (then it has joint training's epoch
budget and distillation refines it; with ``student_stage1: false`` the student trains on stage 2's
epochs only). ``scale`` 10 is BalanceMM's ``alpha`` for UMT. Evaluation uses the student (standard
model, ``zero-input``). Best-validation selection may pick a stage-1 epoch, i.e. a student not yet
distilled (``best_epoch`` in the summary tells). BalanceMM's port is not copied: it depends on
checkpoints of other runs found by path.

The paper's other method, UME (uni-modal ensemble: each modality's model trained alone, predictions
averaged), is the ``ume`` method. The paper chooses between them by how much the task needs paired
(cross-modal interaction) features: UMT when they matter (joint training keeps the interaction while
the teachers' distillation keeps uni-modal features learned; its audio-visual VGG-Sound and
Kinetics-400), UME when uni-modal features carry the task (its RGB + flow UCF101 and two-view
ModelNet40), comparing both on validation data (``trainables/methods/ume.py`` says what of this is
from the abstract and what is recalled from the full text).

Measured on mfeat (``sweeps/mfeat_all.yaml`` settings, 12 epochs, 3 seeds, test acc; joint 94.9 +- 0.9):
the default gives 93.6 +- 0.9 and every seed's best-validation epoch lies in stage 1 (epochs 5-6), i.e.
distillation at scale 10 lowered validation accuracy and the selected model is the joint-trained
student of stage 1; the paper's order (``student_stage1: false``) gives 92.7 +- 0.9 at scale 1 and
91.3 +- 1.3 at scale 10 (the student has 6 epochs). UMT does not help on mfeat at this budget.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from trainables.errors import ConfigError
from trainables.methods.base import (
    BalancingMethod,
    Batch,
    MakeOptimizer,
    MethodContext,
    Optimizers,
    StepState,
    StepStats,
    backward_and_step,
    register_method,
)
from trainables.models.classifier import Encoded, ModelSpec
from trainables.models.fusion import build_fusion
from trainables.models.output import ModelOutput, MultimodalModel
from trainables.params import check_bounds, knob


@dataclass(frozen=True)
class UMTParams:
    scale: float = knob(10.0, "weight of the feature distillation MSE (BalanceMM 10)", ge=0)
    teacher_epochs: int | None = knob(None, "stage-1 epochs training the teachers; unset = half the epochs", ge=1)
    student_stage1: bool = knob(True, "the student also trains on the fused CE in stage 1 (false: it waits)")

    def __post_init__(self) -> None:
        check_bounds(self)


def teacher_schedule(teacher_epochs: int | None, epochs: int) -> int:
    """Stage-1 length: ``teacher_epochs`` (leaving at least one stage-2 epoch) or half of ``epochs``.

    Unset with a one-epoch trial, the single epoch is stage 1 (there is no room for distillation).
    """
    if teacher_epochs is None:
        return epochs // 2 if epochs >= 2 else epochs
    if teacher_epochs >= epochs:
        msg = f"got {teacher_epochs}; allowed: < epochs ({epochs}), stage 2 needs an epoch"
        raise ConfigError("params.teacher_epochs", msg)
    return teacher_epochs


def distillation(student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per modality ``mean((f_m - sg(g_m))^2)``: each student encoder pulled to its teacher's features."""
    return {m: F.mse_loss(student[m].float(), teacher[m].detach().float()) for m in student}


class UMTModel(Encoded):
    """The student (encoders + fusion head) and one teacher (encoder + linear head) per modality."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec.build_encoders())
        self.head = build_fusion(spec.fusion, {m: e.out_dim for m, e in self.encoders.items()}, spec.num_classes)
        self.teachers = spec.build_encoders()
        self.teacher_heads = nn.ModuleDict(
            {m: nn.Linear(e.out_dim, spec.num_classes) for m, e in self.teachers.items()}
        )

    def teach(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The teachers' features."""
        return {m: self.teachers[m](inputs[m]) for m in self.modalities}

    def forward(self, inputs: dict[str, torch.Tensor]) -> ModelOutput:
        feats = self.encode(inputs)
        fused, per = self.head(feats)
        return ModelOutput(fused, per, feats)


@register_method("umt")
class UMT(BalancingMethod):
    """Unimodal teachers first, then the multimodal student with feature distillation from them."""

    Params = UMTParams
    min_modalities = 2

    def __init__(self, params: UMTParams, ctx: MethodContext) -> None:
        super().__init__(params, ctx)
        self.stage1_epochs = teacher_schedule(params.teacher_epochs, ctx.epochs)

    def build_model(self, spec: ModelSpec) -> MultimodalModel:
        return UMTModel(spec)

    def configure_optimizers(self, model: MultimodalModel, make_optimizer: MakeOptimizer) -> Optimizers:
        teachers = [*model.teachers.parameters(), *model.teacher_heads.parameters()]
        return {
            "main": make_optimizer([*model.encoders.parameters(), *model.head.parameters()]),
            "teacher": make_optimizer(teachers),
        }

    def training_step(
        self, model: MultimodalModel, batch: Batch, optimizers: Optimizers, state: StepState
    ) -> StepStats:
        y, x = batch["label"], batch["inputs"]
        if state.epoch < self.stage1_epochs:
            t_logits = {m: model.teacher_heads[m](g) for m, g in model.teach(x).items()}
            losses = {m: F.cross_entropy(z, y) for m, z in t_logits.items()}
            loss = sum(losses.values())
            stats: StepStats = {"umt/stage": 1.0}
            if self.params.student_stage1:
                ce = F.cross_entropy(model(x).logits, y)
                loss = loss + ce  # disjoint parameters: each part gets its own gradient
                stats["umt/ce_fused"] = ce.detach()
            for opt in optimizers.values():
                opt.zero_grad(set_to_none=True)
            loss.backward()
            optimizers["teacher"].step()
            if self.params.student_stage1:
                optimizers["main"].step()
            stats["loss"] = loss.detach()
            for m, z in t_logits.items():
                stats[f"umt/teacher_ce/{m}"] = losses[m].detach()
                stats[f"umt/teacher_acc/{m}"] = (z.detach().argmax(1) == y).float().mean()
            return stats
        model.teachers.eval()  # frozen teachers: fixed BatchNorm statistics, no dropout
        with torch.no_grad():
            teacher = model.teach(x)
        out = model(x)
        ce = F.cross_entropy(out.logits, y)
        per = distillation(out.features, teacher)
        loss = ce + self.params.scale * sum(per.values())
        backward_and_step(optimizers["main"], loss)
        stats = {"loss": loss.detach(), "umt/stage": 2.0, "umt/ce_fused": ce.detach()}
        for m, d in per.items():
            stats[f"umt/distill/{m}"] = d.detach()
        return stats
