"""LFM: supervised cross-entropy and a cross-modal alignment term, their trade-off learned or scheduled.

Yang, Wan, Jiang, Xu, "Facilitating Multimodal Classification via Dynamically Learning Modality Gap",
NeurIPS 2024; official code njustkmg/NeurIPS24-LFM (``Crema_epoch_learnable.py``, the learning-based
strategy; ``Crema_epoch.py`` the heuristic one). BalanceBenchmark port: ``balancemm/trainer/LFM_trainer.py``.

Per step, with the standard model and ``a`` the weight of the alignment term (the paper's trade-off):

    loss = 2 [ (1 - a) CE(fused logits, y) + a L_align ]

(the factor 2, official and BalanceMM, makes ``a = 0.5`` the plain sum). ``L_align`` (``align``):
``contrastive`` (default): symmetric InfoNCE between two modalities' L2-normalised encoder features,
the same sample's features the positive pair, the batch's other samples the negatives (temperature
``tau``), averaged over modality pairs -- the paper's "unsupervised contrastive learning" between
modalities that closes the modality gap; ``js``: the official code's term, the Jensen-Shannon
divergence between two modalities' predicted class distributions (their per-modality logits).

How ``a`` moves (``strategy``): ``learned`` (default) below; ``heuristic``, the paper's heuristic
strategy, a fixed monotonically decreasing schedule ``a_t = 1 - exp(-1/t)`` (``heuristic_alpha``), ``t``
the 1-based epoch (0.632, 0.393, 0.283, ... about ``1/t`` later), set at the start of each epoch, no
held-out data (the whole train split is trained on); ``fitted``, what the official ``Crema_epoch.py``
runs in its last version: its polynomial fit of a learned 200-epoch CREMA-D trajectory
(``getAlpha_Learnable_Fitted``; ``fitted_alpha``), alignment weight 0.795 at the start, 0.50 at 40% of
training, 0 from 88.5% to 94.4% (the quintic is negative there, lowest -0.0106 at 91.6%: clipped at 0),
then back up to 0.084 at the official run's last epoch (199 of 0-199); its 200 epochs are scaled to the
trial's (epoch ``e`` of ``E``, 0-based, reads the fit at ``200 e / E``; a 12-epoch trial's last epoch reads 183, weight
0).
``alpha_init``/``lr_alpha``/clips/``holdout_fraction`` act on ``learned`` only. BalanceMM ports the
learned strategy only.

Which loss the paper's ``a_t`` weights: the decreasing weight goes on the alignment term, read from
(i) the official learned run, which starts at alignment weight 0.95 (CE 0.05) and whose fitted
trajectory falls from 0.80, (ii) the paper's account (first align features, then fit labels; its
Figure plots the learned and heuristic ``a`` together against #epoch/#total), and (iii) ModalBed's
port (an ``exp(-0.3 t)`` alignment weight clipped to [0.05, 0.95]). The clock: ``heuristic_clock``
``epoch`` (default: the formula as stated, ``t`` in epochs, whatever the trial length) or ``progress``
(``t = (epoch + 1) / epochs``, so the curve spans 1 -> 0.632 in any trial, alignment always dominant):
the progress clock underfits (mfeat 82.8 +- 0.5 below), so the formula is taken over raw epochs, as
stated. Earlier versions of ``Crema_epoch.py`` used another rule: per epoch, if the CE and alignment
gradients on one batch conflict, MGDA min-norm weights, else 0.5/0.5; not offered (replaced by the fit
in the official repository itself).

The learned trade-off (the paper's learning-based strategy, a bi-level problem: ``a`` minimises the
held-out CE of the parameters trained with ``a``). Once per epoch, before it (as the official code),
with one unrolled SGD step ``theta' = theta - eta grad L_train(a)``, the hypergradient is

    dL_held(theta')/da  ~  -2 eta  g_held . (g_align - g_ce)

(first order: ``g_held`` taken at ``theta``), ``g_held`` the CE gradient on the held-out part,
``g_ce``/``g_align`` the CE and alignment gradients on as many training samples (seeded by epoch). The
update ``a <- clip(a + lr_alpha g_held . (g_align - g_ce), alpha_min, alpha_max)`` (``2 eta`` folded into
``lr_alpha``) raises the alignment weight when the alignment gradient helps the held-out CE more than
the CE gradient does. ``lr_alpha`` halves every ``halve_every`` epochs (official 20). The held-out part
is a seeded ``holdout_fraction`` of TRAIN, never trained on (``sampling.holdout_split``, as g-blending).

Differences (paper / official code / BalanceMM):
- The official hypergradient is not one: ``getAlpha_Learnable`` differentiates ``grad(L_total) .
  grad(L_cls)`` once more (a Hessian-vector product, a vector over all weights) and takes the mean of its
  FIRST parameter tensor (the audio stem's conv weight) as ``dL/da``; its sign and size say nothing about
  ``a``. It also takes all three losses on the same held-out batch. Not copied: we use the one-step
  hypergradient above (train gradients on train data, held-out gradient on held-out data). With the
  official ``lr_alpha`` 1e-4 the official ``a`` hardly leaves its start, so the published numbers rest
  on a near-constant ``a`` (0.95 official, 0.05 BalanceMM): ``lr_alpha 0`` reproduces that regime.
- Held-out data: official, 16 training samples carved out (8 used, one fixed batch for the whole run);
  BalanceMM, a quarter of the first VALIDATION batch (model selection data used for training: not
  copied). Here a seeded tenth of train, all of it, re-read each epoch.
- Start value: the official script starts at CE weight 0.05 / alignment 0.95; BalanceMM at CE 0.95 /
  alignment 0.05 (``alpha_init`` 0.05, our default: a 0.95 alignment weight on features starts training
  with almost no supervision); clip range [0.05, 0.95] (BalanceMM; the official script's last version).
- Alignment term: the paper describes contrastive learning between modalities; both codes use the JS
  divergence of per-modality predictions (``align: js``). Official model: one linear head per modality,
  CE on the mean of their logits; here the configured fusion head (concat: its per-modality slices).
- Gradients for the update are taken in eval mode (BN statistics untouched; the official code runs
  train mode and so updates BN running statistics on the held-out batch). Under DDP the three gradient
  sums are all-reduced, so every rank holds the same ``a``.

Sources: the paper's full text was not at hand; its abstract (NeurIPS supplement) says the method
"dynamically integrates unsupervised contrastive learning and supervised multimodal learning", by a
heuristic and a learning-based strategy. The heuristic's formula ``a_t = w(t) = 1 - e^{-1/t}`` ("a
monotonically decreasing function") comes from a secondary summary of the paper (a paper-notes page
in a public repository), not the paper itself: to be checked against the PDF (openreview QbsPz0SnyV).
The bi-level reading of the learned strategy is inferred from the official code (a held-out batch
carved from train, a Hessian-vector product, the ``hypergrad``/stocBiO helpers it ships). The official
script evaluates every epoch on the test set; mmbal selects on val.

Measured on mfeat (``sweeps/mfeat_all.yaml`` settings: 12 epochs, SGD 0.05, 3 seeds, test acc mean +-
std; per-modality = the concat head's slices): joint 95.5 +- 0.1 (pix 59.0, fou 63.7); lfm defaults
93.3 +- 1.5 (pix 57.1, fou 63.7; a stays at its 0.05 floor: the hypergradient is mostly positive, i.e.
alignment does not help the held-out CE there); ``lr_alpha 0`` (fixed a) gives the same 93.3 +- 1.5, so
at the official 1e-4 the learned a does not act on this scale (|hypergradient| 0.02-270 per epoch,
noisy on 40 held-out digits); ``lr_alpha 1e-2`` 93.4 +- 1.5 (a 0.055-0.06). Part of the gap to joint
is the official factor 2 (CE step x1.9 at a = 0.05): joint at lr 0.095 gives 94.5 +- 0.6. ``align:
js`` (official term) 94.2 +- 0.3 with stronger unimodal slices (pix 68.5, fou 68.2); ``alpha_init 0.5,
lr_alpha 1e-2`` 94.4 +- 0.4 (a rose to 0.55-0.80; pix 65.6, fou 71.8); the official start a = 0.95
underfits the fused head in 12 epochs (js 86.2 +- 4.0, contrastive with ``lr_alpha 1e-2`` 74.4 +- 2.3).
No variant beats joint's fused accuracy on mfeat; the reproducer's report of a much smaller CREMA-D
gain than published (njustkmg/NeurIPS24-LFM issue 12: baseline 75.8, learned 78.8 vs ~+10 points in
the paper) is consistent with an update of a that barely moves. Defaults stay official/BalanceMM.

Strategies on mfeat (same settings, 3 seeds, test acc; pix/fou = concat-head slices): joint 95.5 +- 0.1
(pix 59.0, fou 63.7); learned (default) 93.3 +- 1.5 (57.1, 63.7); ``heuristic`` 95.3 +- 0.6 (66.0,
69.7); ``heuristic`` + ``js`` 95.6 +- 0.2 (82.9, 74.0); learned + ``js`` 94.2 +- 0.3 (68.5, 68.2);
``fitted`` 94.8 +- 0.1 (54.0, 72.0); ``fitted`` + ``js`` 95.7 +- 0.3 (90.3, 77.2); ``heuristic_clock
progress`` 82.8 +- 0.5 (alignment weight >= 0.63 throughout: the fused head underfits). The schedules
match joint's fused accuracy (learned falls 2 points short) with much stronger unimodal slices, most
with ``js``; linear probes of the frozen encoders move less (pix 90.2 joint, 92.9 heuristic, 92.0
heuristic + js). One seed run by mistake with the schedule reversed (alignment weight rising
0.37 -> 0.92) gave 90.4. Default kept ``learned``: it is the paper's headline strategy (Ours-LB, above
Ours-H in its tables) and BalanceMM's, and 12 epochs of 400 digits are thin evidence against it; the
CREMA-D sweep runs ``heuristic`` (both alignment terms) next to it, and should decide.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from math import exp, log
from typing import Any, Literal

import torch
from torch import nn
from torch.nn import functional as F

from trainables.methods.base import (
    BalancingMethod,
    Batch,
    EpochContext,
    MethodContext,
    Optimizers,
    StepState,
    StepStats,
    backward_and_step,
    gradients_or_zeros,
    register_method,
)
from trainables.models.classifier import ModelSpec
from trainables.models.output import ModelOutput, MultimodalModel
from trainables.params import check_bounds, knob
from trainables.sampling import holdout_split


@dataclass(frozen=True)
class LFMParams:
    strategy: Literal["learned", "heuristic", "fitted"] = knob(
        "learned",
        "how a moves: learned (held-out hypergradient), heuristic (paper: a = 1 - exp(-1/t), t the 1-based "
        "epoch), fitted (official Crema_epoch.py: its polynomial fit of a learned run, 200 epochs scaled to "
        "the trial's)",
    )
    heuristic_clock: Literal["epoch", "progress"] = knob(
        "epoch", "heuristic's t: the 1-based epoch (paper) or the trial's progress (epoch+1)/epochs in (0, 1]"
    )
    align: Literal["contrastive", "js"] = knob(
        "contrastive", "alignment term: contrastive (paper: InfoNCE on features) or js (official: JS of predictions)"
    )
    tau: float = knob(0.4, "InfoNCE temperature (official config's temperature1 0.4, unused there)", gt=0)
    alpha_init: float = knob(
        0.05, "learned: initial weight a of the alignment term (BalanceMM 0.05; official 0.95)", ge=0, le=1
    )
    lr_alpha: float = knob(
        1e-4, "learned: step size of the held-out update of a (official/BalanceMM 1e-4; 0 = fixed a)", ge=0
    )
    halve_every: int = knob(20, "learned: halve lr_alpha every this many epochs (official 20; 0 = never)", ge=0)
    alpha_min: float = knob(0.05, "learned: lower clip of a (BalanceMM 0.05)", ge=0, le=1)
    alpha_max: float = knob(0.95, "learned: upper clip of a (BalanceMM 0.95)", ge=0, le=1)
    holdout_fraction: float = knob(
        0.1, "learned: share of the train split held out to learn a (never trained on)", gt=0, lt=1
    )

    def __post_init__(self) -> None:
        check_bounds(self)


# --- math ------------------------------------------------------------------------------------
def info_nce(a: torch.Tensor, b: torch.Tensor, tau: float) -> torch.Tensor:
    """Symmetric InfoNCE: row i of ``a`` and of ``b`` (one sample, two modalities) are the positive pair."""
    za, zb = F.normalize(a.float(), dim=1), F.normalize(b.float(), dim=1)
    sim = za @ zb.t() / tau
    target = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(sim, target) + F.cross_entropy(sim.t(), target))


def js_divergence(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """Batch-mean Jensen-Shannon divergence between the softmax distributions of two logit tensors."""
    lp, lq = p_logits.float().log_softmax(1), q_logits.float().log_softmax(1)
    lm = torch.logsumexp(torch.stack([lp, lq]), 0) - log(2.0)
    kl_p, kl_q = (lp.exp() * (lp - lm)).sum(1), (lq.exp() * (lq - lm)).sum(1)  # KL(p || m), KL(q || m)
    return 0.5 * (kl_p + kl_q).mean()


def alignment_loss(out: ModelOutput, kind: str, tau: float) -> torch.Tensor:
    """Mean over modality pairs of the alignment term (``contrastive`` on features, ``js`` on predictions)."""
    mods = list(out.features)
    terms = [
        info_nce(out.features[m], out.features[n], tau)
        if kind == "contrastive"
        else js_divergence(out.modality_logits[m], out.modality_logits[n])
        for m, n in combinations(mods, 2)
    ]
    return torch.stack(terms).mean()


FITTED_EPOCHS = 200
# Official ``getAlpha_Learnable_Fitted`` (njustkmg/NeurIPS24-LFM ``Crema_epoch.py``): alignment weight as a
# degree-5 polynomial in the epoch of its 200-epoch CREMA-D run (the CE weight is one minus it).
FITTED_ALIGN_COEFS = (7.95376296e-01, -3.35472727e-03, -1.22989557e-04, 2.92947416e-06, -2.23835486e-08, 5.39717505e-11)


def heuristic_alpha(epoch: int, epochs: int, clock: str = "epoch") -> float:
    """The paper's heuristic alignment weight ``a_t = 1 - exp(-1/t)``, monotonically decreasing in ``t``.

    ``t`` is the 1-based epoch (``clock="epoch"``: 0.632, 0.393, 0.284, ... ~1/t) or the trial's progress
    ``(epoch + 1) / epochs`` (``clock="progress"``: from ~1 down to ``1 - 1/e = 0.632`` at the last epoch).
    """
    t = (epoch + 1) / epochs if clock == "progress" else float(epoch + 1)
    return 1.0 - exp(-1.0 / t)


def fitted_alpha(epoch: int, epochs: int) -> float:
    """The official fitted trajectory at ``epoch`` of ``epochs``, its 200 epochs scaled to the trial's.

    0.795 at the start, 0.50 at 40% of training, 0 between 88.5% and 94.4% (the quintic's minimum,
    -0.0106 at 91.6%, clipped to [0, 1]), then 0.084 at epoch 199 of 200 (the official run's last).
    """
    e = epoch * FITTED_EPOCHS / epochs
    return min(1.0, max(0.0, sum(c * e**i for i, c in enumerate(FITTED_ALIGN_COEFS))))


def flat_grad(loss: torch.Tensor, params: list[nn.Parameter], retain_graph: bool = False) -> torch.Tensor:
    """``d loss / d params`` as one flat vector (zeros for parameters the loss does not reach)."""
    return torch.cat([g.reshape(-1) for g in gradients_or_zeros(loss, params, retain_graph)])


def alpha_update(
    alpha: float, g_held: torch.Tensor, g_ce: torch.Tensor, g_align: torch.Tensor, lr: float, lo: float, hi: float
) -> tuple[float, float]:
    """``(new a, hypergradient)``: one descent step on ``dL_held/da ~ -g_held . (g_align - g_ce)``, clipped."""
    hyper = -float(torch.dot(g_held.double(), (g_align - g_ce).double()))
    return min(hi, max(lo, alpha - lr * hyper)), hyper


@register_method("lfm")
class LFM(BalancingMethod):
    """CE plus a cross-modal alignment term, their trade-off learned on held-out train data or scheduled per epoch."""

    Params = LFMParams
    min_modalities = 2

    def __init__(self, params: LFMParams, ctx: MethodContext) -> None:
        super().__init__(params, ctx)
        self.alpha = float(params.alpha_init) if params.strategy == "learned" else self.scheduled_alpha(0)

    def build_model(self, spec: ModelSpec) -> MultimodalModel:
        model = spec.build()
        if self.params.align == "contrastive":
            model.shared_feature_dim("model.feature_dim", "lfm's contrastive term compares features across modalities")
        return model

    def train_indices(self, epoch: int, num_samples: int) -> list[int] | None:
        if self.params.strategy != "learned":  # a schedule needs no held-out data: train on all of train
            return None
        return holdout_split(num_samples, self.params.holdout_fraction, self.ctx.seed)[0]

    def lr_alpha(self, epoch: int) -> float:
        every = self.params.halve_every
        return self.params.lr_alpha * (0.5 ** (epoch // every) if every else 1.0)

    def scheduled_alpha(self, epoch: int) -> float:
        """The alignment weight of the ``heuristic`` / ``fitted`` strategies at ``epoch``."""
        if self.params.strategy == "heuristic":
            return heuristic_alpha(epoch, self.ctx.epochs, self.params.heuristic_clock)
        return fitted_alpha(epoch, self.ctx.epochs)

    def on_epoch_start(self, model: MultimodalModel, ctx: EpochContext) -> dict[str, float]:
        if self.params.strategy != "learned":
            self.alpha = self.scheduled_alpha(ctx.epoch)
            return {"lfm/alpha": self.alpha}
        if ctx.train_subset is None or self.params.lr_alpha == 0:
            return {"lfm/alpha": self.alpha}
        train, held = holdout_split(len(ctx.train_loader.dataset), self.params.holdout_fraction, self.ctx.seed)
        pick = torch.Generator().manual_seed(self.ctx.seed * 1000003 + ctx.epoch)
        sample = sorted(train[i] for i in torch.randperm(len(train), generator=pick)[: len(held)].tolist())
        params = [p for p in model.parameters() if p.requires_grad]
        was_training = model.training
        model.eval()
        (g_held,) = self.gradients(model, ctx, held, params, align=False)
        g_ce, g_align = self.gradients(model, ctx, sample, params, align=True)
        model.train(was_training)
        self.alpha, hyper = alpha_update(
            self.alpha,
            g_held,
            g_ce,
            g_align,
            self.lr_alpha(ctx.epoch),
            self.params.alpha_min,
            self.params.alpha_max,
        )
        return {"lfm/alpha": self.alpha, "lfm/hypergrad": hyper}

    def gradients(
        self, model: MultimodalModel, ctx: EpochContext, indices: list[int], params: list[nn.Parameter], align: bool
    ) -> list[torch.Tensor]:
        """Flat mean gradients over ``indices`` of CE (and the alignment term), summed over DDP ranks."""
        n = 2 if align else 1
        sums = torch.zeros(n, sum(p.numel() for p in params) + 1, dtype=torch.float64, device=ctx.device)
        for raw in ctx.train_subset(indices):
            batch = ctx.to_device(raw)
            out, y = model(batch["inputs"]), batch["label"]
            losses = [F.cross_entropy(out.logits.float(), y)]
            if align:
                losses.append(alignment_loss(out, self.params.align, self.params.tau))
            for k, loss in enumerate(losses):
                sums[k, :-1] += flat_grad(loss, params, retain_graph=k + 1 < n).double() * y.numel()
                sums[k, -1] += y.numel()
        sums = ctx.all_reduce(sums)
        return [(row[:-1] / row[-1].clamp_min(1)).cpu() for row in sums]

    def training_step(
        self, model: MultimodalModel, batch: Batch, optimizers: Optimizers, state: StepState
    ) -> StepStats:
        out = model(batch["inputs"])
        ce = F.cross_entropy(out.logits, batch["label"])
        align = alignment_loss(out, self.params.align, self.params.tau)
        loss = 2 * ((1 - self.alpha) * ce + self.alpha * align)
        backward_and_step(optimizers["main"], loss)
        return {"loss": loss.detach(), "lfm/ce": ce.detach(), "lfm/align": align.detach(), "lfm/alpha": self.alpha}

    def state_dict(self) -> dict[str, Any]:
        return {"alpha": self.alpha}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.alpha = float(state["alpha"])
