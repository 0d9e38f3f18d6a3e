"""OPM: on-the-fly prediction modulation (and, as a flag, OGM on top of it).

Wei, Hu, Du, Wen, "On-the-fly Modulation for Balanced Multimodal Learning", IEEE TPAMI 2024
(arXiv 2410.11582), the journal extension of OGM-GE (CVPR 2022); official code
GeWu-Lab/BML_TPAMI2024 (``code/models/Classifier.py``: ``calcu_q``, ``Modality_drop``;
``code/main.py``: ``train``; ``code/scripts/train_opm.sh``).

Per batch, after a warm-up, with the standard encoders + fusion head:

* discrepancy scores ``s_m = sum_i softmax(z_m,i)[y_i]`` from the per-modality logits (as OGM-GE,
  computed on the full features, without gradient);
* drop probabilities ``q_m = q_base * (1 + lam * tanh(s_m / s_weak - 1))`` for every modality with
  ``s_m > s_weak``, ``q = 0`` for the weakest, clipped to [0, 1];
* with probability ``p_exe`` the batch is modulated: each sample's features of modality m are zeroed
  with probability ``q_m`` (Bernoulli per sample and modality), and all features are divided by
  ``1 - theta``, ``theta = sum_m d_m q_m / sum_m d_m`` (the expected dropped share of the
  concatenated feature, as the official ``custom_autograd``); the fused cross-entropy is taken on the
  modulated features. Evaluation never drops.

``ogm=true`` adds the TPAMI paper's gradient side in the same step: the dominant encoders' gradients
are scaled by ``1 - tanh(ogm_alpha * rho)`` (+ GE noise), exactly ``ogm_ge``'s functions, on the
epochs after the warm-up up to ``ogm_end``. OGM *alone* in its TPAMI form needs no new code: it is
``ogm_ge`` with ``modulation_start: 6, modulation_end: 60, alpha: 0.8`` (the TPAMI warm-up of six
epochs and the ``train_ogm.sh`` window); ``ogm_ge`` is therefore unchanged.

Defaults are the official ``train_opm.sh`` / argparse values: ``q_base`` 0.5, ``lam`` 0.5, ``p_exe``
0.7, warm-up ``epoch <= 5`` (six epochs); OGM: alpha 0.8 and end 60 from ``train_ogm.sh``, OGM-GE
noise (official default). BalanceMM's ``trainer_config.yaml`` has q_base 0.4 (the official
``config.py`` value that the argparse default overrides) and calls ``lam`` alpha.

Differences: N modalities use the weakest modality as the reference (``s_m / min_j s_j``, as our
``ogm_ge``); the official code is two-modal. Since the weakest is never dropped, no sample loses every
modality, so the official removal of such samples never happens and is not implemented. Randomness
comes from torch's global RNG (the official ``p_exe`` draw uses numpy). BalanceMM's port is not
copied: it takes no backward step at all outside its modulation window, has no warm-up, and with
three modalities divides by the *sum* of the other scores. Missing modalities: ``zero-feature``
(the absent modalities' features are zeroed, as a drop does in training). Under DDP each rank draws
its own drops and uses its own batch's scores, as for OGM-GE.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from trainables.methods.base import (
    BalancingMethod,
    Batch,
    Optimizers,
    StepState,
    StepStats,
    register_method,
)
from trainables.methods.ogm_ge import modulate_gradients, modulated_parameters, modulation_coefficients
from trainables.models.output import MultimodalModel
from trainables.params import check_bounds, knob


@dataclass(frozen=True)
class OPMParams:
    q_base: float = knob(0.5, "base drop probability of a dominant modality (official; BalanceMM 0.4)", ge=0, le=1)
    lam: float = knob(0.5, "lambda in q = q_base (1 + lambda tanh(s/s_weak - 1)) (official 0.5)", ge=0)
    p_exe: float = knob(0.7, "probability that a batch is modulated (official 0.7)", ge=0, le=1)
    warmup_epochs: int = knob(6, "first epochs without modulation (official: epoch <= 5)", ge=0)
    ogm: bool = knob(False, "also apply OGM(-GE) gradient modulation after the warm-up (TPAMI paper's OGM side)")
    ogm_alpha: float = knob(0.8, "OGM alpha in k = 1 - tanh(alpha * rho) (official train_ogm.sh 0.8)", ge=0)
    ogm_noise: bool = knob(True, "OGM-GE Gaussian noise on the modulated gradients (official default OGM_GE)")
    ogm_end: int = knob(60, "last epoch (0-based, inclusive) with OGM (official train_ogm.sh 60)", ge=0)

    def __post_init__(self) -> None:
        check_bounds(self)


# --- math ------------------------------------------------------------------------------------
def discrepancy_scores(modality_logits: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """``[M]``: ``s_m = sum_i softmax(z_m,i)[y_i]`` on the device, without gradient (no host sync)."""
    with torch.no_grad():
        return torch.stack([z.float().softmax(1).gather(1, labels[:, None]).sum() for z in modality_logits.values()])


def drop_probabilities(scores: torch.Tensor, q_base: float, lam: float) -> torch.Tensor:
    """``q_m = q_base (1 + lam tanh(s_m / s_weak - 1))`` if ``s_m > s_weak`` else 0, clipped to [0, 1]."""
    excess = torch.tanh(F.relu(scores / scores.min().clamp_min(1e-12) - 1))
    return torch.where(excess > 0, q_base * (1 + lam * excess), torch.zeros_like(excess)).clamp(0, 1)


def drop_features(feats: dict[str, torch.Tensor], q: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Zero modality m of each sample with probability ``q_m``; divide all features by ``1 - theta``.

    Returns:
        the modulated features and the ``[B, M]`` keep mask.
    """
    x = next(iter(feats.values()))
    keep = torch.bernoulli((1 - q).float().expand(x.shape[0], -1))
    dims = [f.shape[1] for f in feats.values()]  # Python ints: a device tensor of them would be a host-to-device copy
    scale = 1 / (1 - sum(d * q[i] for i, d in enumerate(dims)) / sum(dims))
    return {m: f * (keep[:, i : i + 1] * scale) for i, (m, f) in enumerate(feats.items())}, keep


@register_method("opm")
class OPM(BalancingMethod):
    """Fused cross-entropy on features of which the dominant modality's are dropped on the fly."""

    Params = OPMParams
    min_modalities = 2
    missing_scheme = "zero-feature"

    def training_step(
        self, model: MultimodalModel, batch: Batch, optimizers: Optimizers, state: StepState
    ) -> StepStats:
        p, y = self.params, batch["label"]
        feats = model.encode(batch["inputs"])
        fused, per = model.head(feats)
        scores = discrepancy_scores(per, y)
        q = drop_probabilities(scores, p.q_base, p.lam)
        modulating = state.epoch >= p.warmup_epochs
        execute = modulating and bool(torch.rand(()) < p.p_exe)  # CPU RNG: no device sync
        keep = torch.ones(y.shape[0], len(per), device=y.device)
        if execute:
            dropped, keep = drop_features(feats, q)
            fused = model.head(dropped)[0]
        loss = F.cross_entropy(fused, y)
        opt = optimizers["main"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        coeff = self._ogm(model, scores, modulating and state.epoch <= p.ogm_end)
        opt.step()
        stats: StepStats = {"loss": loss.detach(), "opm/executed": float(execute)}
        for i, m in enumerate(per):
            stats[f"opm/q/{m}"] = q[i] if modulating else 0.0
            stats[f"opm/dropped/{m}"] = 1 - keep[:, i].mean()
            if p.ogm:
                stats[f"opm/ogm_coeff/{m}"] = coeff.get(m, 1.0)
        return stats

    def _ogm(self, model: MultimodalModel, scores: torch.Tensor, active: bool) -> dict[str, torch.Tensor]:
        """OGM(-GE) on the encoders' gradients when ``ogm`` is on and ``active``; the coefficients used."""
        if not (self.params.ogm and active):
            return {}
        _, k = modulation_coefficients(
            dict(zip(self.ctx.modalities, scores.unbind(), strict=True)), self.params.ogm_alpha
        )
        for m, coeff in k.items():
            modulate_gradients(modulated_parameters(model.encoders[m], "conv"), coeff, self.params.ogm_noise)
        return k
