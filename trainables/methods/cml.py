"""CML: calibrating multimodal learning (completeness-confidence alignment).

Ma, Zhang, Wu, Fu, Hu, Zhang, "Calibrating Multimodal Learning", ICML 2023 (arXiv 2306.01265); official
code QingyangZhang/CML (``miwae/train.py``, stage 2: ``rank_loss``; README: ``--beta 10``).

Per batch, with the standard model: every sample draws a random order of its modalities and sheds them
one by one, giving nested subsets ``S_0`` (all) ``> S_1 > ... > S_{M-1}`` (one modality); the fused
head sees each subset with the absent modalities' features zeroed (per sample). Loss:

    (1/M) sum_k CE(z_k, y) + lam sum_k sum_i [ relu((c_{k+1,i} - c_{k,i}) r_{k,i} - eps)
                                             + relu((c_{k+1,i} - sg(c_{k,i})) w_{k,i} - eps) ]

with ``c`` the max softmax probability (confidence), ``r = [subset k predicts y]`` and ``w = [subsets k
and k+1 both predict wrong]``: a sample's confidence with fewer modalities must not exceed its
confidence with more (when the fuller prediction is right: both sides move; when both are wrong: the
fewer-modality confidence is pushed down alone) -- the official "trick 1" and "trick 2", summed over the
batch as the official code. Defaults: ``lam`` 0.1 (the official ``beta / 100`` with the README's beta
10), ``eps`` 0 (official).

Differences: the official code imputes an absent view with the training mean of its *input* (an
MIWAE model on tabular views); mmbal's encoders are arbitrary, so absent modalities' features are
zeroed, and missing-modality evaluation uses the same ``zero-feature`` scheme. BalanceMM's port is not
copied: it draws one removal order per epoch (not per sample), removes a modality by subtracting its
concat-head logit slice, hinges the *batch sum* of confidence differences (one scalar, sign ignored)
and drops the second term.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import torch
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
from trainables.methods.opm import predict_zero_feature
from trainables.models.output import ModelOutput, MultimodalModel
from trainables.params import check_bounds, knob


@dataclass(frozen=True)
class CMLParams:
    lam: float = knob(0.1, "weight of the confidence-ranking regulariser (official beta / 100 = 0.1)", ge=0)
    eps: float = knob(0.0, "tolerance margin of the ranking hinge (official 0)", ge=0)

    def __post_init__(self) -> None:
        check_bounds(self)


# --- math ------------------------------------------------------------------------------------
def nested_keep_masks(batch: int, modalities: int, device: torch.device) -> torch.Tensor:
    """``[M, B, M]`` 0/1: subset k keeps all but the first k modalities of each sample's random order."""
    order = torch.rand(batch, modalities, device=device).argsort(1)  # per sample, the shedding order
    rank = order.argsort(1)  # rank[i, m]: when sample i sheds modality m
    return torch.stack([(rank >= k).float() for k in range(modalities)])


def ranking_loss(logits: list[torch.Tensor], labels: torch.Tensor, eps: float) -> torch.Tensor:
    """The official two-term confidence ranking over consecutive subsets (``logits[k+1]`` has fewer)."""
    total = logits[0].new_zeros(())
    probs = [z.float().softmax(1) for z in logits]
    for more, fewer in zip(probs[:-1], probs[1:], strict=True):
        c_more, p_more = more.max(1)
        c_fewer, p_fewer = fewer.max(1)
        right = (p_more == labels).float()
        both_wrong = ((p_more != labels) & (p_fewer != labels)).float()
        total = total + F.relu((c_fewer - c_more) * right - eps).sum()
        total = total + F.relu((c_fewer - c_more.detach()) * both_wrong - eps).sum()
    return total


@register_method("cml")
class CML(BalancingMethod):
    """Mean CE over nested modality subsets plus a penalty on confidence that grows as modalities go."""

    Params = CMLParams
    missing_scheme = "zero-feature"

    def __init__(self, params: CMLParams, ctx: MethodContext) -> None:
        super().__init__(params, ctx)
        if len(ctx.modalities) < 2:
            raise ConfigError("method", "cml needs at least 2 modalities")

    def training_step(
        self, model: MultimodalModel, batch: Batch, optimizers: Optimizers, state: StepState
    ) -> StepStats:
        y = batch["label"]
        feats = model.encode(batch["inputs"])
        keep = nested_keep_masks(y.shape[0], len(feats), y.device)
        logits = [
            model.head({m: f * keep[k, :, i : i + 1].to(f.dtype) for i, (m, f) in enumerate(feats.items())})[0]
            for k in range(len(feats))
        ]
        ce = torch.stack([F.cross_entropy(z, y) for z in logits]).mean()
        rank = ranking_loss(logits, y, self.params.eps)
        loss = ce + self.params.lam * rank
        backward_and_step(optimizers["main"], loss)
        with torch.no_grad():
            conf = torch.stack([z.float().softmax(1).max(1).values for z in logits])  # [M, B]
            violations = (conf[1:] > conf[:-1]).float().mean()
        return {
            "loss": loss.detach(),
            "cml/ce_subsets": ce.detach(),
            "cml/ranking": rank.detach(),
            "cml/violations": violations,
        }

    def predict(
        self, model: MultimodalModel, inputs: dict[str, torch.Tensor], present: Collection[str] | None = None
    ) -> ModelOutput:
        """Absent modalities have their features zeroed (as in training)."""
        return predict_zero_feature(model, inputs, self.present_modalities(present))
