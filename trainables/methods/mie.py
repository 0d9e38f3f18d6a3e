"""MIE: modal-aware interactive enhancement (SAM forward phase + flat-direction gradient modification).

Jiang, Chi, Yang, "Multimodal Classification via Modal-Aware Interactive Enhancement",
arXiv 2407.04587 (2024). MIE has no official repository; the closest official code is the same
authors' follow-up IGM (Jiang, Chi, Yang, "Interactive Multimodal Learning via Flat Gradient
Modification", IJCAI 2025; njustkmg/IJCAI25-IGM, ``train_CREMA.py``, ``models/AudioVideo.py``).

What the paper states, and we implement: unimodal learning alternates between the modalities; a
*forward phase* smooths each unimodal objective with sharpness-aware minimization (SAM, Foret et
al., ICLR 2021); a *backward phase* multiplies the active modality's gradients by a matrix built from
the eigen-decomposition of the *other* modality's feature covariance, damping the other modality's
sharp (high-variance) directions and keeping its flat ones, so that learning one modality does not
erase what was learned from the other. Test-time fusion: the mean of the unimodal softmaxes (with
absent modalities only the present ones are averaged: ``drop-head``).

Mechanics the paper leaves open take IGM's value as the default, one knob each (except ``alternation``):

* ``alternation``: the one knob whose default is *not* IGM's, chosen by the ablation below.
  ``batch`` (default): every batch takes one step per modality in turn (MLA's scheme, which MIE
  builds on). ``stage`` (IGM): training runs in stages of ``stage_epochs`` epochs (cycled; stage k
  trains modality k mod 2 in dataset order); each stage after the first starts from the
  best-validation model so far with fresh optimizer state (loop hook ``restart_from_best``), as IGM
  reloads its best model and builds a new optimizer per stage. IGM's stage lengths are recipe
  values ([25, 50] CREMA-D/Kinetics-Sounds, [2, 30] Sarcasm, [10, 30] Twitter, [50] NVGesture, over
  150-450 epochs), so no length transfers to other budgets (default: IGM's [25, 50]; set it to fit the
  trial). A stage must be long enough to beat the best model it restarts from, or training stalls on
  it (below: with 1-epoch stages one seed never left epoch 6's state in 18 more epochs).
* ``covariance``: ``dataset`` (IGM, default): at each stage start (``batch``: each epoch) a pass over
  the training split, model in eval mode, accumulates the *uncentred* second moment of the other
  modality's inputs to every linear layer of its head; ``batch``: the centred covariance of the
  current batch, pooled over DDP ranks (rank <= batch - 1). With ``dataset`` the first stage (first
  epoch) is not projected, as IGM's first stage: nothing has been learned to protect yet. A step
  never waits for the device, except with ``batch`` on a GPU: its per-step ``torch.linalg.eigh``
  synchronises (torch checks the solver's status on the host), once per step and modality.
* ``head``: ``mlp`` (IGM, default): ``d -> 256 -> ReLU -> 64 -> C``; ``linear``. Every linear layer
  of the active head gets ``G <- G P`` with ``P`` from the other head's input at the same layer
  (biases untouched; IGM also matches equal-shape linear layers of the encoders, which its ResNet
  encoders do not have; we never project encoder layers).
* ``mixup`` (IGM: alpha 1.0, default): the active modality's input is mixed within the batch,
  ``lam ~ Beta(alpha, alpha)``, loss ``lam CE(z, y) + (1 - lam) CE(z, y[perm])``; 0 turns it off.
* ``shared_head``: false, separate heads as IGM's ``cls_a``/``cls_v``; the ablation gives no reason
  to share (same fused accuracy, lower and less stable per-modality accuracy).

SAM step: ``g = grad L(w)``; ``w + eps``, ``eps = rho g / ||g||`` over the active encoder *and* head;
``g_p = grad L(w + eps)`` (a new forward through the perturbed encoder); **restore** ``w`` and the
BatchNorm buffers bit-identically; use ``(1 - flat_ratio) g + flat_ratio g_p``. Projector:
``P = U diag(exp(-tau (lambda - lambda_min) / (lambda_max - lambda_min))) U^T``.

Not copied from IGM (bugs or test-set use): a SAM radius of 1e-10 with perturbed weights never
restored, the perturbed loss computed from the *unperturbed* features with the unmixed labels,
model selection on the test set, and its ``dataset`` statistic (a sum of outer products of
*batch-mean* inputs, rank <= number of batches; ours is the per-sample second moment). Also not
reproduced: IGM restarts the LR schedule per stage (StepLR 40); here the trial's schedule runs on.

Under DDP the statistics (both ``covariance`` values) are summed over ranks before ``P`` is built,
so every rank holds the same ``P``, the one checkpointed. Exactly two modalities; with ``project``
both encoders must give features of the same size.

Ablation (``tests/perf/ablate_mie.py``: mfeat, quickstart settings, 12 epochs, seeds 0-2, mean ± std, %; the
chosen defaults are alternation=batch, covariance=dataset, head=mlp, mixup=1.0, shared_head=false):

======================================  ==========  ==========  ===========  ===========
variant                                 val/acc     test/acc    test pix     test fou
======================================  ==========  ==========  ===========  ===========
defaults                                92.7 ± 3.2  93.3 ± 1.5  86.7 ± 4.8   74.9 ± 3.1
  covariance=batch                      93.2 ± 1.3  93.1 ± 1.4  87.6 ± 2.4   74.1 ± 2.2
  head=linear                           94.8 ± 0.8  94.0 ± 1.4  85.0 ± 7.5   78.5 ± 1.4
  mixup=0                               93.1 ± 0.4  92.7 ± 0.8  88.1 ± 1.9   74.5 ± 2.1
  shared_head=true                      92.6 ± 0.2  92.9 ± 1.4  81.9 ± 10.4  75.8 ± 1.0
  batch, batch, linear, no mixup (old)  95.0 ± 0.9  94.2 ± 0.3  92.6 ± 1.4   78.2 ± 1.0
alternation=stage, stage_epochs=[1]     64.0 ± 13.2 62.1 ± 12.4 45.0 ± 2.0   46.5 ± 9.6
  same, 24 epochs                       76.7 ± 23.4 75.0 ± 23.3 60.9 ± 19.4  56.9 ± 18.6
  stage_epochs=[3]                      80.6 ± 4.2  80.9 ± 3.1  63.4 ± 11.7  62.1 ± 2.3
48 epochs: defaults                     95.9 ± 0.5  95.0 ± 1.2  93.2 ± 2.6   76.9 ± 1.4
48 epochs: stage, stage_epochs=[6, 12]  95.1 ± 0.8  94.5 ± 0.8  90.9 ± 0.7   77.0 ± 0.2
======================================  ==========  ==========  ===========  ===========

On the 12-epoch budget only ``alternation`` matters (-12 to -29 points for ``stage``); covariance,
head, mixup and shared_head move val/acc by at most 2 points, inside about one std, so IGM's values
stay. With 48 epochs and multi-epoch stages, ``stage`` catches up (within one std of ``batch``): its
deficit is one of short budgets and short stages, and ``batch`` is as good or better at both budgets
without a recipe-specific stage length. (More stage-mode one-knob variants: /work/notes/readme/h9c.md.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from trainables.errors import ConfigError
from trainables.methods._flat_gradient import (
    covariance_from_moments,
    flat_projector,
    linear_inputs,
    mixup,
    moments,
    sam_gradient,
    soft_projector,
)
from trainables.methods.base import (
    BalancingMethod,
    Batch,
    EpochContext,
    Optimizers,
    StepState,
    StepStats,
    cross_entropy,
    register_method,
)
from trainables.models.classifier import Encoded, ModelSpec
from trainables.models.output import ModelOutput, MultimodalModel
from trainables.params import check_bounds, knob
from trainables.runtime import sum_over_ranks

__all__ = ["MIE", "MIEParams", "sam_gradient", "soft_projector", "flat_projector"]


@dataclass(frozen=True)
class MIEParams:
    rho: float = knob(0.05, "SAM neighbourhood radius (Foret et al. default)", ge=0)
    flat_ratio: float = knob(
        0.3, "weight of the loss at the SAM-perturbed point; 1 = plain SAM, 0 = no SAM (IGM 0.3)", ge=0, le=1
    )
    tau: float = knob(
        0.4, "damping strength of the projector: the other modality's top direction is scaled by exp(-tau)", ge=0
    )
    project: bool = knob(True, "apply the flat-direction gradient modification to the active head")
    shared_head: bool = knob(False, "one head shared by both modalities instead of one per modality (IGM: two)")
    alternation: Literal["batch", "stage"] = knob(
        "batch", "batch: both modalities in turn every batch; stage: one per stage, from the best model (IGM)"
    )
    stage_epochs: list[int] = knob(
        [25, 50], "alternation=stage: epochs of each stage, cycled (IGM's CREMA-D/Kinetics-Sounds recipe)"
    )
    covariance: Literal["dataset", "batch"] = knob(
        "dataset", "statistics of P: dataset = uncentred second moment over the train split (IGM); batch"
    )
    head: Literal["mlp", "linear"] = knob("mlp", "per-modality head: mlp = d-256-64-C (IGM) or linear")
    mixup: float = knob(1.0, "mixup Beta(alpha, alpha) of the active modality's input; 0 = off (IGM 1.0)", ge=0)

    def __post_init__(self) -> None:
        check_bounds(self)
        if not self.stage_epochs or any(not isinstance(n, int) or n < 1 for n in self.stage_epochs):
            raise ConfigError("params.stage_epochs", f"got {self.stage_epochs}; allowed: a non-empty list of ints >= 1")


def make_head(kind: str, dim: int, num_classes: int) -> nn.Sequential:
    """``linear`` or IGM's 3-layer head (``Linear(d, 256), ReLU, Linear(256, 64), Linear(64, C)``)."""
    if kind == "linear":
        return nn.Sequential(nn.Linear(dim, num_classes))
    return nn.Sequential(nn.Linear(dim, 256), nn.ReLU(), nn.Linear(256, 64), nn.Linear(64, num_classes))


class MIEModel(Encoded):
    """Encoders plus a head per modality (or one shared head)."""

    def __init__(self, spec: ModelSpec, shared_head: bool, head: str = "linear") -> None:
        super().__init__(spec.build_encoders())
        if shared_head:
            shared = make_head(head, self.shared_feature_dim("params.shared_head", "a shared head"), spec.num_classes)
            self.heads = nn.ModuleDict({m: shared for m in self.modalities})
        else:
            self.heads = nn.ModuleDict(
                {m: make_head(head, e.out_dim, spec.num_classes) for m, e in self.encoders.items()}
            )

    def forward(self, inputs: dict[str, torch.Tensor]) -> ModelOutput:
        feats = self.encode(inputs)
        per = {m: self.heads[m](f) for m, f in feats.items()}
        return ModelOutput(logits=mean_softmax_logits(list(per.values())), modality_logits=per, features=feats)


def mean_softmax_logits(logits: list[torch.Tensor]) -> torch.Tensor:
    """log of the mean of the softmaxes: the fused prediction as logits (its argmax is the fusion's)."""
    probs = torch.stack([z.float().softmax(1) for z in logits]).mean(0)
    return probs.clamp_min(1e-12).log()


def stage_of(epoch: int, stage_epochs: list[int]) -> tuple[int, bool]:
    """``(stage index, whether epoch starts it)`` for stages of ``stage_epochs`` epochs, cycled."""
    stage, start = 0, 0
    while start + stage_epochs[stage % len(stage_epochs)] <= epoch:
        start += stage_epochs[stage % len(stage_epochs)]
        stage += 1
    return stage, start == epoch


@register_method("mie")
class MIE(BalancingMethod):
    """Alternating unimodal SAM steps with flat-direction projected head gradients."""

    Params = MIEParams
    missing_scheme = "drop-head"

    def __init__(self, params: MIEParams, ctx: Any) -> None:
        super().__init__(params, ctx)
        if len(ctx.modalities) != 2:
            raise ConfigError(
                "method",
                f"mie needs exactly 2 modalities; the dataset gives {len(ctx.modalities)} "
                f"({', '.join(ctx.modalities)})",
            )
        self.P: dict[str, list[torch.Tensor]] = {}  # covariance=dataset: active modality -> one P per head layer

    def build_model(self, spec: ModelSpec) -> MultimodalModel:
        model = MIEModel(spec, self.params.shared_head, self.params.head)
        if self.params.project:
            model.shared_feature_dim(
                "model.encoders", "mie's projector maps one modality's head by the other's features"
            )
        return model

    # --- schedule ---------------------------------------------------------------------------------
    def _other(self, m: str) -> str:
        return next(o for o in self.ctx.modalities if o != m)

    def _active(self, epoch: int) -> tuple[list[str], bool]:
        """Modalities trained in ``epoch`` and whether their gradients are projected."""
        if self.params.alternation == "batch":
            return list(self.ctx.modalities), self.params.covariance == "batch" or epoch > 0
        stage, _ = stage_of(epoch, self.params.stage_epochs)
        return [self.ctx.modalities[stage % 2]], stage > 0

    def restart_from_best(self, epoch: int) -> bool:
        stage, starts = stage_of(epoch, self.params.stage_epochs)
        return self.params.alternation == "stage" and starts and stage > 0

    def on_epoch_start(self, model: MultimodalModel, ctx: EpochContext) -> dict[str, float]:
        active, projected = self._active(ctx.epoch)
        starts = self.params.alternation == "batch" or stage_of(ctx.epoch, self.params.stage_epochs)[1]
        if self.params.project and self.params.covariance == "dataset" and starts:
            self.P = self._dataset_projectors(model, ctx, active) if projected else {}
        return {f"mie/active/{m}": float(m in active) for m in self.ctx.modalities}

    # --- statistics ---------------------------------------------------------------------------------
    def _layer_moments(self, model: MultimodalModel, source: str, x: torch.Tensor) -> list[torch.Tensor]:
        """Moments of ``source``'s inputs to each linear layer of its head (encoder in eval mode)."""
        enc = model.encoders[source]
        was_training = enc.training
        enc.eval()  # no BatchNorm update of the modality that is not trained
        with torch.no_grad(), torch.autocast(device_type=x.device.type, enabled=False):
            feats = enc(x).float()
            out = [t for layer_in in linear_inputs(model.heads[source], feats) for t in moments(layer_in)]
        enc.train(was_training)
        return out

    def _projectors(self, sums: list[torch.Tensor], centred: bool, device: torch.device) -> list[torch.Tensor]:
        triples = [sums[i : i + 3] for i in range(0, len(sums), 3)]
        return [
            flat_projector(covariance_from_moments(*t, centred), self.params.tau).float().to(device) for t in triples
        ]

    def _dataset_projectors(
        self, model: MultimodalModel, ctx: EpochContext, active: list[str]
    ) -> dict[str, list[torch.Tensor]]:
        """One pass over this rank's training shard; moments summed over ranks; ``P`` per active modality."""
        sources = [self._other(m) for m in active]
        was_training = model.training
        model.eval()
        sums: dict[str, list[torch.Tensor]] = {}
        for batch in ctx.train_loader:
            inputs = ctx.to_device(batch)["inputs"]
            for s in sources:
                got = self._layer_moments(model, s, inputs[s])
                sums[s] = got if s not in sums else [a + b for a, b in zip(sums[s], got, strict=True)]
        model.train(was_training)
        out = {}
        for m, s in zip(active, sources, strict=True):
            out[m] = self._projectors(sum_over_ranks(sums[s], ctx.all_reduce), False, ctx.device)
        return out

    # --- training ---------------------------------------------------------------------------------
    def training_step(
        self, model: MultimodalModel, batch: Batch, optimizers: Optimizers, state: StepState
    ) -> StepStats:
        active, projected = self._active(state.epoch)
        stats: StepStats = {}
        for m in active:
            P = None
            if self.params.project and projected:
                if self.params.covariance == "batch":
                    other = self._other(m)
                    sums = sum_over_ranks(
                        self._layer_moments(model, other, batch["inputs"][other]), self.ctx.all_reduce
                    )
                    P = self._projectors(sums, True, batch["label"].device)
                else:
                    P = self.P.get(m)
            stats.update(self._modality_step(model, m, batch, optimizers["main"], P))
        stats["loss"] = sum(stats[f"mie/loss/{m}"] for m in active) / len(active)
        return stats

    def _modality_step(
        self, model: nn.Module, m: str, batch: Batch, opt: torch.optim.Optimizer, P: list[torch.Tensor] | None
    ) -> StepStats:
        """One SAM step of modality ``m``'s encoder and head, the head's gradients multiplied by ``P``."""
        p, y, enc, head = self.params, batch["label"], model.encoders[m], model.heads[m]
        x, perm, lam = mixup(batch["inputs"][m], p.mixup)

        def loss_fn() -> torch.Tensor:
            z = head(enc(x))
            return (
                cross_entropy(z, y)
                if p.mixup <= 0
                else lam * cross_entropy(z, y) + (1 - lam) * cross_entropy(z, y[perm])
            )

        opt.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        loss_p = loss.detach()
        if p.rho > 0 and p.flat_ratio > 0:
            params = list(enc.parameters()) + list(head.parameters())
            buffers = list(enc.buffers()) + list(head.buffers())
            loss_p = sam_gradient(params, loss_fn, p.rho, p.flat_ratio, buffers)
        stats: StepStats = {f"mie/loss/{m}": loss.detach(), f"mie/sharpness/{m}": loss_p - loss.detach()}
        if P:
            with torch.autocast(device_type=y.device.type, enabled=False), torch.no_grad():
                layers = [layer for layer in head if isinstance(layer, nn.Linear)]
                norms = torch.zeros(2, device=y.device)
                for layer, proj in zip(layers, P, strict=True):
                    g = layer.weight.grad.float()
                    projected = g @ proj  # P is symmetric: G P = G P^T
                    norms += torch.stack([projected.pow(2).sum(), g.pow(2).sum()])
                    layer.weight.grad = projected.to(layer.weight.grad.dtype)
                stats[f"mie/damping/{m}"] = (norms[0] / norms[1].clamp_min(1e-24)).sqrt()
        opt.step()
        return stats

    def fuse_heads(self, heads: dict[str, torch.Tensor], out: ModelOutput) -> torch.Tensor:
        return mean_softmax_logits(list(heads.values()))

    def state_dict(self) -> dict[str, Any]:
        return {"P": {m: [t.detach().clone() for t in ps] for m, ps in self.P.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.P = {m: [t.to(self.ctx.device).clone() for t in ps] for m, ps in state.get("P", {}).items()}
