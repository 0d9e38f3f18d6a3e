"""DMRNet: decoupled multimodal representation learning for missing modalities.

Wei, Luo, Wang, Luo, "Robust Multimodal Learning via Representation Decoupling", ECCV 2024,
arXiv 2407.04458; official code: github.com/shicaiwei123/ECCV2024-DMRNet (``audio-visual
classification/main.py``, ``models/fusion_modules.py``).

Per training sample one non-empty modality combination is drawn uniformly (2^N - 1 choices) and
the absent modalities' *features* are zeroed. The concatenated features ``z`` go to a Gaussian
embedding ``mu = BN(Linear(z))``, ``log sigma^2 = BN(Linear(z))``; training classifies a sample
``e = mu + sigma * eps``, evaluation classifies ``mu``. The loss is

    L = CE(W e, y) + alpha * KL(N(mu, sigma^2) || N(0, I)) + beta * L_hard,

with the KL in closed form ``0.5 * sum_d (sigma_d^2 + mu_d^2 - log sigma_d^2 - 1)`` averaged over
the batch. Hard-combination regulariser: during the first ``weak_epochs`` epochs the mean embedding
variance of the samples that saw *one* modality only is accumulated per modality; the modality with
the largest variance (the least certain one alone) becomes the weak modality, and from then on
``L_hard = sum_i 1[combination_i == {weak}] CE_i / B``: the same classifier's CE on the samples
that saw only the weak modality, normalised by the batch size as in the official code.

Differences from the official code (ours follows the paper / the mmbal contract):

* ``val/acc`` is on full modalities; the official "val" accuracy is under random missing
  modalities. Missing-modality accuracy is reported separately (``test/missing/...``), with the
  absent modalities' features zeroed as in training (this method's ``predict`` scheme).
* Per-modality logits (``val/acc/<m>``) are this model's prediction with only ``m`` present; the
  official per-modality numbers apply slices of the classifier to raw features, which bypasses the
  embedding and is not a prediction the model makes.
* The weak modality uses the sample-weighted mean variance over all accumulation epochs (the
  official code sums per-epoch means of per-batch means, the same ordering in expectation), and it
  is all-reduced under DDP. The official loop accumulates while ``epoch <= 5`` (six epochs); our
  ``weak_epochs=5`` accumulates five (set 6 to match).
* Works for any N >= 2: combinations are all non-empty subsets; the weak modality is the arg-max
  of the single-modality variances. The head is DMRNet's own concat + Gaussian embedding, so only
  ``model.fusion=concat`` is accepted.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import torch
from torch import nn

from trainables.errors import ConfigError
from trainables.methods.base import (
    BalancingMethod,
    Batch,
    EpochContext,
    MethodContext,
    Optimizers,
    StepState,
    StepStats,
    backward_and_step,
    register_method,
)
from trainables.models.classifier import Encoded, ModelSpec
from trainables.models.output import ModelOutput, MultimodalModel
from trainables.params import check_bounds, knob


@dataclass(frozen=True)
class DMRNetParams:
    alpha: float = knob(1e-3, "weight of KL(N(mu, sigma^2) || N(0, I)) (official default)", ge=0)
    beta: float = knob(
        0.5, "weight of the hard-combination CE (official default; scripts: 0.2 CREMA-D, 0.3 Kinetics-Sounds)", ge=0
    )
    weak_epochs: int = knob(5, "epochs over which single-modality embedding variance picks the weak modality", ge=1)

    def __post_init__(self) -> None:
        check_bounds(self)


# --- math ------------------------------------------------------------------------------------
def combination_table(n: int) -> torch.Tensor:
    """All non-empty subsets of ``n`` modalities as a ``[2^n - 1, n]`` 0/1 table (singletons first)."""
    rows = [[1.0 if i in c else 0.0 for i in range(n)] for r in range(1, n + 1) for c in combinations(range(n), r)]
    return torch.tensor(rows)


def sample_combinations(batch_size: int, n: int) -> torch.Tensor:
    """Per-sample presence mask ``[B, n]``, each row a uniformly drawn non-empty subset (global RNG)."""
    table = combination_table(n)
    return table[torch.randint(len(table), (batch_size,))]


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Batch mean of KL(N(mu, diag exp(logvar)) || N(0, I)) = 0.5 sum_d (var + mu^2 - logvar - 1)."""
    return (0.5 * (logvar.exp() + mu.pow(2) - logvar - 1)).sum(1).mean()


def single_modality_variance(logvar: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per modality: sum over single-modality samples of their mean embedding variance, and their count.

    Args:
        logvar: ``[B, D]`` embedding log-variances.
        mask: ``[B, n]`` presence mask.
    Returns:
        ``(sums [n], counts [n])`` in float64.
    """
    var = logvar.detach().exp().mean(1).double()
    only = (mask.sum(1, keepdim=True) == 1) & (mask > 0)
    only = only.to(var)
    return (only * var[:, None]).sum(0), only.sum(0)


def hard_loss(ce: torch.Tensor, mask: torch.Tensor, weak: int) -> torch.Tensor:
    """``sum_i 1[sample i saw only modality `weak`] ce_i / B`` (official normalisation)."""
    hard = (mask[:, weak] > 0) & (mask.sum(1) == 1)
    return (ce * hard.to(ce)).sum() / ce.shape[0]


# --- model -----------------------------------------------------------------------------------
class DMRNetModel(Encoded):
    """Encoders, Gaussian embedding of the concatenated features, and a linear classifier."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec.build_encoders())
        dim = sum(e.out_dim for e in self.encoders.values())
        self.mu = nn.Sequential(nn.Linear(dim, dim), nn.BatchNorm1d(dim))
        self.logvar = nn.Sequential(nn.Linear(dim, dim), nn.BatchNorm1d(dim))
        self.classifier = nn.Linear(dim, spec.num_classes)

    def embed(self, feats: dict[str, torch.Tensor], mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, logvar)`` of the concatenation with absent modalities' features zeroed."""
        z = torch.cat([feats[m] * mask[:, i : i + 1].to(feats[m]) for i, m in enumerate(self.modalities)], dim=1)
        return self.mu(z), self.logvar(z)

    def forward(self, inputs: dict[str, torch.Tensor], mask: torch.Tensor | None = None) -> ModelOutput:
        """Training mode samples ``e = mu + sigma * eps``; eval mode uses ``mu``.

        Per-modality logits (only-``m``-present predictions) are computed in eval mode only, since
        extra passes in training mode would move the BatchNorm statistics.
        """
        feats = self.encode(inputs)
        b = next(iter(feats.values())).shape[0]
        if mask is None:
            mask = torch.ones(b, len(self.modalities), device=next(iter(feats.values())).device)
        mask = mask.to(next(iter(feats.values())).device)
        mu, logvar = self.embed(feats, mask)
        e = mu + (0.5 * logvar).exp() * torch.randn_like(mu) if self.training else mu
        per: dict[str, torch.Tensor] = {}
        if not self.training:
            for i, m in enumerate(self.modalities):
                only = torch.zeros_like(mask)
                only[:, i] = mask[:, i]
                per[m] = self.classifier(self.embed(feats, only)[0])
        return ModelOutput(self.classifier(e), per, feats, {"mu": mu, "logvar": logvar, "mask": mask})


@register_method("dmrnet")
class DMRNet(BalancingMethod):
    """Random modality combinations + Gaussian embedding + weak-combination regulariser."""

    Params = DMRNetParams
    min_modalities = 2
    missing_scheme = "zero-feature"

    def __init__(self, params: DMRNetParams, ctx: MethodContext) -> None:
        super().__init__(params, ctx)
        n = len(ctx.modalities)
        # Summed over ranks and epochs at every epoch end, so that a checkpoint (rank 0's) is exact
        # under DDP; the per-epoch buffer is local and always empty at an epoch boundary.
        self.var_sum = torch.zeros(n, dtype=torch.float64)
        self.var_count = torch.zeros(n, dtype=torch.float64)
        self._epoch = torch.zeros(2 * n, dtype=torch.float64)
        self.weak = -1  # index of the weak modality once chosen

    def build_model(self, spec: ModelSpec) -> MultimodalModel:
        if spec.fusion != "concat":
            msg = f"dmrnet has its own concat + Gaussian embedding head; got {spec.fusion!r}, allowed: 'concat'"
            raise ConfigError("model.fusion", msg)
        return DMRNetModel(spec)

    def training_step(
        self, model: MultimodalModel, batch: Batch, optimizers: Optimizers, state: StepState
    ) -> StepStats:
        p, y = self.params, batch["label"]
        mask = sample_combinations(y.shape[0], len(self.ctx.modalities))
        out = model(batch["inputs"], mask)
        mu, logvar, mask = out.extras["mu"], out.extras["logvar"], out.extras["mask"]
        ce = nn.functional.cross_entropy(out.logits, y, reduction="none")
        kl = gaussian_kl(mu, logvar)
        loss = ce.mean() + p.alpha * kl
        stats: StepStats = {"dmrnet/ce": ce.mean().detach(), "dmrnet/kl": kl.detach()}
        if state.epoch < p.weak_epochs:
            self._epoch = self._epoch.to(y.device) + torch.cat(single_modality_variance(logvar, mask))
        elif self.weak >= 0:
            hard = hard_loss(ce, mask, self.weak)
            loss = loss + p.beta * hard
            stats["dmrnet/hard"] = hard.detach()
        backward_and_step(optimizers["main"], loss)
        return {"loss": loss.detach(), **stats}

    def predict(
        self, model: MultimodalModel, inputs: dict[str, torch.Tensor], present: Collection[str] | None = None
    ) -> ModelOutput:
        """Absent modalities have their *features* zeroed, as in DMRNet's training."""
        keep = self.present_modalities(present)
        b = next(iter(inputs.values())).shape[0]
        mask = torch.tensor([[1.0 if m in keep else 0.0 for m in self.ctx.modalities]]).expand(b, -1)
        return model(inputs, mask)

    def on_epoch_end(self, model: MultimodalModel, ctx: EpochContext) -> dict[str, float]:
        n = len(self.ctx.modalities)
        if ctx.epoch < self.params.weak_epochs:
            stats = ctx.all_reduce(self._epoch.to(ctx.device)).cpu()  # once per epoch
            self.var_sum, self.var_count = self.var_sum + stats[:n], self.var_count + stats[n:]
            self._epoch = torch.zeros_like(stats)
            if ctx.epoch == self.params.weak_epochs - 1:
                self.weak = int(torch.argmax(self.var_sum / self.var_count.clamp_min(1)).item())
        out: dict[str, float] = {}
        mean = self.var_sum / self.var_count.clamp_min(1)
        for i, m in enumerate(self.ctx.modalities):
            out[f"dmrnet/variance/{m}"] = mean[i].item()
            if self.weak >= 0:
                out[f"dmrnet/weak/{m}"] = float(i == self.weak)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"var_sum": self.var_sum.clone(), "var_count": self.var_count.clone(), "weak": self.weak}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.var_sum = state["var_sum"].clone()
        self.var_count = state["var_count"].clone()
        self.weak = int(state["weak"])
