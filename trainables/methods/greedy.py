"""Greedy: balanced multi-modal learning by conditional learning speed (re-balancing steps).

Wu, Jastrzebski, Cho, Geras, "Characterizing and overcoming the greedy nature of learning in
multi-modal deep neural networks", ICML 2022, arXiv 2202.05306; official code
nyukat/greedy_multimodal_learning (``src/balanced_mmtm.py`` MMTM_mitigate, ``src/model.py``
MMTM_MVCNN, ``src/callbacks.py`` Bias_Mitigation_Strong / _Random, ``configs/training_guided.gin``).

Model: one branch per modality (encoder ``theta_m`` + its own classifier), joined by an MMTM fusion
layer (Joze et al. 2020) that rescales each branch's features with an excitation computed from *all*
modalities: ``s_m = sigmoid(E_m relu(W [f_1; ...; f_M]))``, branch logits ``l_m = C_m(f_m * s_m)``,
prediction ``mean_m l_m``, loss ``sum_m CE(l_m, y)`` (the official ``blend_loss``). ``psi_m`` = the
parameters that carry the other modalities into branch m (``E_m`` and the shared squeeze ``W``).

Conditional learning speed (paper Sec. 4): with ``mu(theta) = ||grad||^2 / ||theta||^2`` summed over
training steps, ``v_m = log10(sum_t mu(psi_m) / sum_t mu(theta_m))`` -- how fast branch m learns from
the *other* modalities relative to its own. Balanced learning (paper Algorithm 1): after each regular
step, ``d = v_a - v_b``; if ``|d| > alpha`` the next ``window`` (Q) steps are re-balancing steps for
the modality with the larger ``v`` (the one learned greedily from the others): its excitation is
replaced by its running mean (constant over the batch, no gradient), so its branch has to learn from
its own modality; ``E_m`` gets a zero gradient (the optimizer's momentum and weight decay still act
on it; the shared squeeze ``W`` still learns through the other modalities' excitations) and the
accumulators pause. ``schedule=random`` is the
paper's random ablation (``Bias_Mitigation_Random``): each step is regular or re-balances a uniformly
drawn modality.

Differences from the official code (all but the first are our choices, documented):

* Fusion: the official MMTMs sit inside two ResNet-18s (after layers 2, 3, 4, on pooled feature
  maps); mmbal's encoders are black boxes, so one MMTM acts on the encoder features. ``psi_m`` and
  ``theta_m`` are split the same way (MMTM vs branch); intermediate MMTMs deserve their own issue.
* The official running mean of the second modality's excitation accumulates the *first* modality's
  (``running_avg_weight_skeleton`` is updated from ``vis_out``), and running means also move during
  evaluation; here each modality has its own cumulative mean, updated by training steps only, and a
  re-balancing step uses the mean of the steps before it (the official one includes the current batch).
* Speeds use the DDP-averaged gradients (read after the step, weight norms before it), so every rank
  takes the same decision; the decision lives on the device (no host sync per step). The running
  mean excitations are per rank under DDP (like BatchNorm statistics); the epoch's mean features are
  all-reduced.
* N > 2 modalities: ``d = max_m v_m - min_m v_m`` and the re-balanced modality is the arg-max; for two
  modalities this is exactly the official ``|v_0 - v_1| > epsilon``.
* Per-modality logits (``acc/<m>``): branch m with every other modality's features replaced by its
  training mean of the last epoch (the paper's "turned-off cross-modal flow" used for the conditional
  utilisation rate, official ``eval.py`` with averaged squeeze maps); the same scheme serves
  missing-modality evaluation (``mean-feature``: absent branches also leave the average).

BalanceMM's port (``Greedy_trainer.py``, ``BaseClassifierGreedyModel``) is not copied: it trains the
fused concat head only (not the branch losses), resets its running means on every forward (so the
re-balancing step multiplies by an empty mean), hard-codes the visual batch size 64, has no starting
epoch, and uses ``alpha = 1e-3``. Defaults are the official ``training_guided.gin``: epsilon 0.01,
window 5, starting epoch 2 (1-based, i.e. 0-based 1), MMTM ratio 4.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import get_total_norm

from trainables.errors import ConfigError
from trainables.methods.base import (
    BalancingMethod,
    Batch,
    EpochContext,
    MethodContext,
    Optimizers,
    StepState,
    StepStats,
    register_method,
)
from trainables.models.classifier import Encoded, ModelSpec
from trainables.models.output import ModelOutput, MultimodalModel
from trainables.params import check_bounds, knob
from trainables.runtime import to_device_without_sync


@dataclass(frozen=True)
class GreedyParams:
    alpha: float = knob(0.01, "speed gap |d| that starts re-balancing (official 0.01; BalanceMM 1e-3)", ge=0)
    window: int = knob(5, "Q: re-balancing steps once started (official curation_windowsize 5)", ge=1)
    start_epoch: int = knob(1, "first epoch (0-based) that may re-balance (official starting_epoch 2, 1-based)", ge=0)
    ratio: int = knob(4, "MMTM squeeze ratio: hidden size 2 * sum(feature dims) / ratio (official 4)", ge=1)
    schedule: Literal["guided", "random"] = knob("guided", "guided: by learning speed; random: paper ablation")

    def __post_init__(self) -> None:
        check_bounds(self)


# --- math ------------------------------------------------------------------------------------
def squared_norm(tensors: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """``sum ||t||^2`` over ``tensors`` in fp32, on ``device`` (0 for an empty list)."""
    if not tensors:
        return torch.zeros((), device=device)
    return get_total_norm([t.detach().float() for t in tensors]).pow(2).to(device)


def learning_speeds(bypass: torch.Tensor, main: torch.Tensor) -> torch.Tensor:
    """``v_m = log10(M_bypass_m / M_main_m)`` from the accumulated ``||g||^2 / ||w||^2`` sums."""
    tiny = torch.finfo(torch.float64).tiny
    return torch.log10(bypass.double().clamp_min(tiny) / main.double().clamp_min(tiny))


def next_state(
    curation: torch.Tensor, caring: torch.Tensor, count: torch.Tensor, speeds: torch.Tensor, alpha: float, window: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step of the official schedule, on device tensors: ``(curation, caring, count)`` after a step.

    A regular step whose speed gap ``max v - min v`` exceeds ``alpha`` starts ``window`` re-balancing
    steps for ``argmax v``; a re-balancing step counts, and the last one returns to regular steps.
    """
    regular = ~curation
    start = regular & (speeds.max() - speeds.min() > alpha)
    count = torch.where(regular, torch.zeros_like(count), count + 1)
    curation = torch.where(regular, start, count < window)
    caring = torch.where(start, speeds.argmax().to(caring), caring)
    return curation, caring, count


# --- model -----------------------------------------------------------------------------------
class MMTM(nn.Module):
    """Multimodal transfer module on feature vectors: a shared squeeze, one excitation per modality."""

    def __init__(self, dims: dict[str, int], ratio: int) -> None:
        super().__init__()
        self.modalities = list(dims)
        hidden = max(int(2 * sum(dims.values()) / ratio), 1)
        self.squeeze = nn.Linear(sum(dims.values()), hidden)
        self.excite = nn.ModuleDict({m: nn.Linear(hidden, d) for m, d in dims.items()})

    def forward(self, feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        z = F.relu(self.squeeze(torch.cat([feats[m] for m in self.modalities], 1)))
        return {m: torch.sigmoid(self.excite[m](z)) for m in self.modalities}


class GreedyModel(Encoded):
    """Branches (encoder + classifier per modality) joined by one MMTM on the encoder features.

    Buffers: ``scale_mean_i`` (cumulative mean excitation of modality i over training steps, used by
    re-balancing steps), ``feat_mean_i`` (mean training feature of the last epoch, used when a
    modality is absent) and the running ``feat_sum_i`` / ``feat_count`` of the current epoch.
    """

    def __init__(self, spec: ModelSpec, ratio: int) -> None:
        super().__init__(spec.build_encoders())
        dims = {m: e.out_dim for m, e in self.encoders.items()}
        self.mmtm = MMTM(dims, ratio)
        self.heads = nn.ModuleDict({m: nn.Linear(d, spec.num_classes) for m, d in dims.items()})
        for i, d in enumerate(dims.values()):
            for name in ("scale_mean", "feat_mean", "feat_sum"):
                self.register_buffer(f"{name}_{i}", torch.zeros(d))
        self.register_buffer("scale_steps", torch.zeros(()))
        self.register_buffer("feat_count", torch.zeros(()))

    def buf(self, name: str, i: int) -> torch.Tensor:
        return getattr(self, f"{name}_{i}")

    @torch.no_grad()
    def _track(self, feats: dict[str, torch.Tensor], scales: dict[str, torch.Tensor]) -> None:
        n = self.scale_steps
        for i, m in enumerate(self.modalities):
            mean = self.buf("scale_mean", i)
            mean.copy_((mean * n + scales[m].float().mean(0)) / (n + 1))
            self.buf("feat_sum", i).add_(feats[m].float().sum(0))
        self.scale_steps.add_(1)
        self.feat_count.add_(next(iter(feats.values())).shape[0])

    def branches(self, feats: dict[str, torch.Tensor], scales: dict[str, torch.Tensor]) -> torch.Tensor:
        """``[M, B, C]``: ``C_m(f_m * s_m)`` per modality."""
        return torch.stack([self.heads[m](feats[m] * scales[m]) for m in self.modalities])

    def fuse_present(self, feats: dict[str, torch.Tensor], keep: Collection[str]) -> torch.Tensor:
        """Mean logits of the ``keep`` branches, absent modalities' features replaced by their means."""
        b = next(iter(feats.values())).shape[0]
        filled = {
            m: f if m in keep else self.buf("feat_mean", i).to(f).expand(b, -1)
            for i, (m, f) in enumerate(feats.items())
        }
        scales = self.mmtm(filled)
        return torch.stack([self.heads[m](filled[m] * scales[m]) for m in self.modalities if m in keep]).mean(0)

    def forward(self, inputs: dict[str, torch.Tensor], freeze: torch.Tensor | None = None) -> ModelOutput:
        """``freeze`` (``[M]`` bool): modalities whose excitation is their running mean (re-balancing).

        Per-modality logits (``fuse_present`` with one modality) are computed in eval mode only.
        """
        feats = self.encode(inputs)
        scales = raw = self.mmtm(feats)
        if freeze is not None:  # mean of earlier steps: the frozen branch sees no other modality of this batch
            scales = {
                m: torch.where(freeze[i], self.buf("scale_mean", i).to(s).expand_as(s), s)
                for i, (m, s) in enumerate(raw.items())
            }
        if self.training:
            self._track(feats, raw)
        branch = self.branches(feats, scales)
        per = {} if self.training else {m: self.fuse_present(feats, [m]) for m in self.modalities}
        return ModelOutput(branch.mean(0), per, feats, {"branch": branch})

    @torch.no_grad()
    def end_epoch(self, all_reduce) -> None:
        """``feat_mean_i`` <- the epoch's mean training feature (summed over DDP ranks); sums reset."""
        count = all_reduce(self.feat_count.clone()).clamp_min(1)
        for i in range(len(self.modalities)):
            self.buf("feat_mean", i).copy_(all_reduce(self.buf("feat_sum", i).clone()) / count)
            self.buf("feat_sum", i).zero_()
        self.feat_count.zero_()


@register_method("greedy")
class Greedy(BalancingMethod):
    """Branch losses through an MMTM fusion; re-balancing steps when conditional learning speeds diverge."""

    Params = GreedyParams
    min_modalities = 2
    missing_scheme = "mean-feature"

    def __init__(self, params: GreedyParams, ctx: MethodContext) -> None:
        super().__init__(params, ctx)
        n = len(ctx.modalities)
        self.state = {
            "main": torch.zeros(n, dtype=torch.float64),
            "bypass": torch.zeros(n, dtype=torch.float64),
            "curation": torch.zeros((), dtype=torch.bool),
            "caring": torch.zeros((), dtype=torch.long),
            "count": torch.zeros((), dtype=torch.long),
        }
        self._groups: list[tuple[list[nn.Parameter], list[nn.Parameter]]] | None = None

    def build_model(self, spec: ModelSpec) -> MultimodalModel:
        if spec.fusion != "concat":
            msg = f"greedy has its own MMTM fusion and branch classifiers; got {spec.fusion!r}, allowed: 'concat'"
            raise ConfigError("model.fusion", msg)
        return GreedyModel(spec, self.params.ratio)

    def groups(self, model: GreedyModel) -> list[tuple[list[nn.Parameter], list[nn.Parameter]]]:
        """Per modality: (branch ``theta_m``: encoder + classifier, bypass ``psi_m``: excitation + squeeze)."""
        if self._groups is None:
            shared = list(model.mmtm.squeeze.parameters())
            self._groups = [
                (
                    [*model.encoders[m].parameters(), *model.heads[m].parameters()],
                    [*model.mmtm.excite[m].parameters(), *shared],
                )
                for m in model.modalities
            ]
        return self._groups

    def training_step(
        self, model: MultimodalModel, batch: Batch, optimizers: Optimizers, state: StepState
    ) -> StepStats:
        s, y = self.state, batch["label"]
        device = y.device
        s.update({k: v.to(device) for k, v in s.items()})
        freeze = s["curation"] & (torch.arange(len(self.ctx.modalities), device=device) == s["caring"])
        out = model(batch["inputs"], freeze)
        loss = sum(F.cross_entropy(lg, y) for lg in out.extras["branch"])
        opt = optimizers["main"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        groups = self.groups(model)
        weights = [[squared_norm(g, device) for g in pair] for pair in groups]  # before the step
        opt.step()  # under DDP the gradients are averaged here, so the speeds agree on every rank
        grads = [[squared_norm([q.grad for q in g if q.grad is not None], device) for g in pair] for pair in groups]
        ratios = torch.stack([torch.stack(g) / torch.stack(w) for g, w in zip(grads, weights, strict=True)]).double()
        regular = (~s["curation"]).double()
        s["main"], s["bypass"] = s["main"] + regular * ratios[:, 0], s["bypass"] + regular * ratios[:, 1]
        speeds = learning_speeds(s["bypass"], s["main"])
        self._schedule(state.epoch, speeds)
        stats: StepStats = {"loss": loss.detach(), "greedy/rebalancing": freeze.any().float()}
        for i, m in enumerate(self.ctx.modalities):
            stats[f"greedy/speed/{m}"] = speeds[i].float()
            stats[f"greedy/rebalanced/{m}"] = freeze[i].float()
        return stats

    def _schedule(self, epoch: int, speeds: torch.Tensor) -> None:
        """Whether the next step re-balances, and which modality (``curation`` / ``caring``)."""
        s = self.state
        if epoch < self.params.start_epoch:
            s["curation"] = torch.zeros_like(s["curation"])
        elif self.params.schedule == "random":
            choice = to_device_without_sync(torch.randint(len(self.ctx.modalities) + 1, ()), s["caring"].device)
            s["curation"], s["caring"] = choice > 0, (choice - 1).clamp_min(0)
        else:
            s["curation"], s["caring"], s["count"] = next_state(
                s["curation"], s["caring"], s["count"], speeds, self.params.alpha, self.params.window
            )

    @torch.no_grad()
    def predict(
        self, model: MultimodalModel, inputs: dict[str, torch.Tensor], present: Collection[str] | None = None
    ) -> ModelOutput:
        out = model(inputs)
        if present is None:
            return out
        return ModelOutput(
            model.fuse_present(out.features, self.present_modalities(present)), out.modality_logits, out.features
        )

    def on_epoch_end(self, model: MultimodalModel, ctx: EpochContext) -> dict[str, float]:
        model.end_epoch(ctx.all_reduce)
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {k: v.detach().cpu().clone() for k, v in self.state.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.state = {k: v.clone() for k, v in state.items()}
