"""DI-MML: detached and interactive multimodal learning.

Fan et al., "Detached and Interactive Multimodal Learning", ACM MM 2024, arXiv 2407.19514;
official code: github.com/fanyunfeng-bit/DI-MML (``main_CFT.py`` stage 1, ``main_CFT_stage2.py``
stage 2, ``loss/contrast_loss.py``).

Stage 1 (detached): every encoder ``f_m`` has its own head ``c_m`` and all share one head ``s``:

    L = sum_m CE(c_m(f_m), y) + w * sum_m CE(s(f_m), y) [+ L_DUC],

with no fused loss, so no gradient crosses modalities. At epoch ``duc_start`` the *effective*
dimensions are selected once (eval-mode features of the whole training split): per modality, the
class centroids of the features; dimension d is effective when "the nearest centroid along d alone
is the true class" holds for more samples than it does for the mean dimension. For a teacher ``t``
and a student ``s``, ``D(t, s)`` are the dimensions effective for ``t`` and not for ``s``. From then
on the dimension-decoupled unidirectional contrastive loss is added,

    L_DUC = sum_{t != s} InfoNCE(f_s[:, D(t,s)], stopgrad(f_t[:, D(t,s)]); T),

an InfoNCE whose logits are ``f_s^i . f_t^j / T`` over the batch with positives ``i = j`` (the
official per-sample loop, written as one cross-entropy); the teacher side is detached, so DUC only
moves the student. With two modalities these are the official two directions (``a_loss + v_loss``);
with N > 2 every ordered pair contributes.

Stage 2, in the same run: the last ``stage2_epochs`` epochs train a fusion head (``model.fusion``,
concat as in the official code) on the frozen encoders, kept in eval mode as the official script
does; only the ``fusion`` optimizer steps. Inference: certainty-aware logit weighting over the
unimodal heads and, once stage 2 has started, the fusion head: per sample, ``w = softmax_k(max
softmax(l_k) / T_f)`` over heads k and the prediction is ``sum_k w_k l_k`` (official stage-2
``valid``). Before stage 2 the untrained fusion head is left out. Per-modality logits are ``c_m``.

Schedule: the official run is 150 stage-1 epochs with DUC from epoch 20, then 20 stage-2 epochs.
``stage2_epochs`` / ``duc_start`` left unset take the same fractions of this trial's ``epochs``
(20/170 of the epochs for stage 2, at least 1; DUC at 20/150 of stage 1), which gives the official
epoch counts (150 + 20, DUC from 20) at 170 epochs; only the counts: reproducing the official
results also needs its data, batch and optimizer (sweeps/cremad_di_mml.yaml says which differ).

Optimisation: the official scripts are two runs, each with a fresh SGD (lr 1e-3, momentum 0.9, wd
1e-4, batch 16) and StepLR(70, 0.1): stage 1 over its 150 epochs, stage 2 over its 20 (so stage 2
never decays). Here one trial holds both: ``main`` (encoders and heads) gets the trial's schedule
over stage 1 only, and ``fusion`` is built at ``params.stage2_lr`` (default ``optim.lr``, as the
official fresh optimizer) with the trial's schedule over stage 2 only, starting fresh at its first
epoch (``schedule_windows``); ``train/lr/fusion`` of the first stage-2 row shows it. The optimizer
kind, momentum and weight decay are the trial's ``optim`` in both stages. Features of all
modalities must have one size (the shared head and the dimension indices are common to all of them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from trainables.errors import ConfigError
from trainables.methods.base import (
    BalancingMethod,
    Batch,
    EpochContext,
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

OFFICIAL_EPOCHS, OFFICIAL_STAGE2, OFFICIAL_DUC_START = 170, 20, 20


@dataclass(frozen=True)
class DIMMLParams:
    weight: float = knob(1.0, "w: weight of the shared-head CE (official 1)", ge=0)
    temperature: float = knob(
        50.0, "T of the DUC InfoNCE on raw feature dot products (official 50 CREMA-D, 10 AVE/UCF)", gt=0
    )
    duc_weight: float = knob(1.0, "weight of the DUC loss (official 1)", ge=0)
    duc_start: int | None = knob(
        None, "0-based epoch of dim selection + DUC start; None = official 20/150 of stage 1", ge=0
    )
    stage2_epochs: int | None = knob(
        None, "last epochs: fusion head on frozen encoders; None = official 20/170 of epochs, >= 1", ge=0
    )
    stage2_lr: float | None = knob(
        None, "initial LR of the stage-2 fusion optimizer, scheduled over stage 2 only; None = optim.lr", gt=0
    )
    fusion_temperature: float = knob(
        1.0, "temperature of the certainty softmax at inference (official 1 CREMA-D, 3 AVE)", gt=0
    )

    def __post_init__(self) -> None:
        check_bounds(self)


def schedule(params: DIMMLParams, epochs: int) -> tuple[int, int]:
    """``(duc_start, stage1_epochs)`` for a trial of ``epochs`` epochs (see the module docstring)."""
    if params.stage2_epochs is None:
        stage2 = min(max(round(epochs * OFFICIAL_STAGE2 / OFFICIAL_EPOCHS), 1), epochs - 1) if epochs >= 2 else 0
    elif not 0 <= params.stage2_epochs < epochs:
        raise ConfigError(
            "params.stage2_epochs", f"got {params.stage2_epochs}; allowed: 0 .. {epochs - 1} (epochs - 1)"
        )
    else:
        stage2 = params.stage2_epochs
    stage1 = epochs - stage2
    if params.duc_start is None:
        return min(round(stage1 * OFFICIAL_DUC_START / (OFFICIAL_EPOCHS - OFFICIAL_STAGE2)), stage1 - 1), stage1
    if not 0 <= params.duc_start < stage1:
        raise ConfigError(
            "params.duc_start",
            f"got {params.duc_start}; allowed: 0 .. {stage1 - 1} "
            f"(inside stage 1 = epochs {epochs} - stage2_epochs {stage2})",
        )
    return params.duc_start, stage1


# --- math ------------------------------------------------------------------------------------
def class_centroid_sums(feats: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[C, D + 1]``: per-class feature sums, and the class counts in the last column."""
    ones = torch.ones(feats.shape[0], 1, dtype=feats.dtype, device=feats.device)
    return torch.zeros(num_classes, feats.shape[1] + 1, dtype=feats.dtype, device=feats.device).index_add_(
        0, labels, torch.cat([feats, ones], 1)
    )


def nearest_centroid_hits(feats: torch.Tensor, labels: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """``[D]``: samples whose nearest class centroid along dimension d alone is their own class."""
    dist = (feats[:, None, :] - centroids[None]).abs()  # [N, C, D]
    return (dist.argmin(1) == labels[:, None]).sum(0)


def effective_dims(hits: torch.Tensor) -> torch.Tensor:
    """Dimensions whose hit count beats the mean dimension's (official strict ``>``)."""
    hits = hits.double()
    return hits > hits.mean()


def only_dims(effective: dict[str, torch.Tensor]) -> dict[tuple[str, str], torch.Tensor]:
    """``(teacher, student) -> indices`` effective for the teacher and not for the student."""
    return {
        (t, s): torch.nonzero(effective[t] & ~effective[s]).flatten() for t in effective for s in effective if t != s
    }


def select_dims(feats: dict[str, torch.Tensor], labels: torch.Tensor, num_classes: int) -> dict[str, torch.Tensor]:
    """Effective dimensions per modality from features of the whole split (one process)."""
    out = {}
    for m, f in feats.items():
        sums = class_centroid_sums(f, labels, num_classes)
        out[m] = effective_dims(nearest_centroid_hits(f, labels, sums[:, :-1] / sums[:, -1:].clamp_min(1)))
    return out


def duc_loss(student: torch.Tensor, teacher: torch.Tensor, dims: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE of the student's features on ``dims`` against the detached teacher's (positives i = j)."""
    if dims.numel() == 0:
        return student.new_zeros(())
    s, t = student[:, dims], teacher[:, dims].detach()
    return F.cross_entropy(s @ t.t() / temperature, torch.arange(s.shape[0], device=s.device))


def certainty_fusion(logits: list[torch.Tensor], temperature: float) -> torch.Tensor:
    """``sum_k w_k l_k`` with per-sample ``w = softmax_k(max_c softmax(l_k)_c / temperature)``."""
    conf = torch.stack([F.softmax(lg, dim=1).max(1).values for lg in logits])  # [K, B]
    w = F.softmax(conf / temperature, dim=0)
    return sum(w[k][:, None] * lg for k, lg in enumerate(logits))


# --- model -----------------------------------------------------------------------------------
class DIMMLModel(Encoded):
    """Encoders, unimodal heads ``c_m``, the shared head ``s`` and the stage-2 fusion head."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec.build_encoders())
        dim = self.shared_feature_dim("model.encoders", "di_mml shares one head and its dimension indices")
        self.heads = nn.ModuleDict({m: nn.Linear(dim, spec.num_classes) for m in self.modalities})
        self.shared = nn.Linear(dim, spec.num_classes)
        self.fusion = build_fusion(spec.fusion, {m: dim for m in self.modalities}, spec.num_classes)

    def forward(self, inputs: dict[str, torch.Tensor]) -> ModelOutput:
        """``logits`` is the fusion head's; ``modality_logits`` are the unimodal heads'."""
        feats = self.encode(inputs)
        fused, _ = self.fusion(feats)
        return ModelOutput(fused, {m: self.heads[m](f) for m, f in feats.items()}, feats)


@register_method("di_mml")
class DIMML(BalancingMethod):
    """Detached unimodal training with DUC, then a fusion head on frozen encoders."""

    Params = DIMMLParams
    min_modalities = 2
    missing_scheme = "drop-head"

    def __init__(self, params: DIMMLParams, ctx: MethodContext) -> None:
        super().__init__(params, ctx)
        self.duc_start, self.stage1_epochs = schedule(params, ctx.epochs)
        self.stage = 1
        self.effective: dict[str, torch.Tensor] = {}
        self.only: dict[tuple[str, str], torch.Tensor] = {}

    def build_model(self, spec: ModelSpec) -> MultimodalModel:
        return DIMMLModel(spec)

    def configure_optimizers(self, model: MultimodalModel, make_optimizer: MakeOptimizer) -> Optimizers:
        stage1 = [*model.encoders.parameters(), *model.heads.parameters(), *model.shared.parameters()]
        fusion = make_optimizer(model.fusion.parameters())
        if self.params.stage2_lr is not None:  # set before the loop builds the schedule, which starts from it
            for group in fusion.param_groups:
                group["lr"] = self.params.stage2_lr
        return {"main": make_optimizer(stage1), "fusion": fusion}

    def schedule_windows(self) -> dict[str, tuple[int, int]]:
        """Stage 1's schedule spans stage 1; stage 2's starts fresh at its first epoch (official: two runs)."""
        return {"main": (0, self.stage1_epochs), "fusion": (self.stage1_epochs, self.ctx.epochs - self.stage1_epochs)}

    def training_step(
        self, model: MultimodalModel, batch: Batch, optimizers: Optimizers, state: StepState
    ) -> StepStats:
        y = batch["label"]
        if self.stage == 2:
            model.encoders.eval()  # frozen encoders keep their BatchNorm statistics (official stage 2)
            with torch.no_grad():
                feats = model.encode(batch["inputs"])
            loss = F.cross_entropy(model.fusion(feats)[0], y)
            backward_and_step(optimizers["fusion"], loss)
            return {"loss": loss.detach(), "di_mml/ce_fusion": loss.detach()}
        p = self.params
        feats = model.encode(batch["inputs"])
        uni = sum(F.cross_entropy(model.heads[m](f), y) for m, f in feats.items())
        shared = sum(F.cross_entropy(model.shared(f), y) for f in feats.values())
        loss = uni + p.weight * shared
        out: StepStats = {"di_mml/ce_unimodal": uni.detach(), "di_mml/ce_shared": shared.detach()}
        if self.only:
            duc = sum(duc_loss(feats[s], feats[t], idx, p.temperature) for (t, s), idx in self.only.items())
            loss = loss + p.duc_weight * duc
            out["di_mml/duc"] = duc.detach()
        backward_and_step(optimizers["main"], loss)
        return {"loss": loss.detach(), **out}

    def fuse_heads(self, heads: dict[str, torch.Tensor], out: ModelOutput) -> torch.Tensor:
        # Missing modalities: the absent ones' unimodal heads leave the certainty vote (our choice: a
        # zeroed input should not vote); the fusion head (stage 2) still votes, on zeroed features.
        votes = list(heads.values()) + ([out.logits] if self.stage == 2 else [])
        return certainty_fusion(votes, self.params.fusion_temperature)

    def on_epoch_start(self, model: MultimodalModel, ctx: EpochContext) -> dict[str, float]:
        self.stage = 2 if ctx.epoch >= self.stage1_epochs else 1
        if ctx.epoch == self.duc_start:
            self.effective = self._select(model, ctx)
            self.only = self._only_on_device()
        return {}

    def on_epoch_end(self, model: MultimodalModel, ctx: EpochContext) -> dict[str, float]:
        out = {"di_mml/stage": float(self.stage)}
        for m, eff in self.effective.items():
            out[f"di_mml/dims/{m}"] = float(eff.sum())
        for (t, s), idx in self.only.items():
            out[f"di_mml/dims/{t}_not_{s}"] = float(idx.numel())
        return out

    @torch.no_grad()
    def _select(self, model: MultimodalModel, ctx: EpochContext) -> dict[str, torch.Tensor]:
        """One eval-mode pass over the training split; centroids and hits are summed over DDP ranks."""
        was_training = model.training
        model.eval()
        feats: dict[str, list[torch.Tensor]] = {m: [] for m in self.ctx.modalities}
        labels = []
        for batch in ctx.train_loader:
            batch = ctx.to_device(batch)
            for m, f in model.encode(batch["inputs"]).items():
                feats[m].append(f.double())
            labels.append(batch["label"])
        model.train(was_training)
        y, c = torch.cat(labels), self.ctx.num_classes
        out = {}
        for m, chunks in feats.items():
            f = torch.cat(chunks)
            sums = ctx.all_reduce(class_centroid_sums(f, y, c))
            hits = ctx.all_reduce(nearest_centroid_hits(f, y, sums[:, :-1] / sums[:, -1:].clamp_min(1)))
            out[m] = effective_dims(hits).cpu()
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "effective": {m: e.clone() for m, e in self.effective.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stage = int(state["stage"])
        self.effective = {m: e.clone() for m, e in state["effective"].items()}
        self.only = self._only_on_device()

    def _only_on_device(self) -> dict[tuple[str, str], torch.Tensor]:
        # Moved once per selection, so that a step never copies indices from the host.
        return {k: idx.to(self.ctx.device) for k, idx in only_dims(self.effective).items()}
