"""Fusion heads: ``forward(features) -> (fused_logits, per_modality_logits)``.

How per-modality logits are obtained (this is what per-modality accuracy and the OGM-GE score
ratio measure):

* ``concat``: ``W [f_1; ...; f_M] + b``; modality m's logits are ``W[:, slice_m] f_m + b / M`` (the
  weight slice of that modality, the bias shared evenly), as the OGM-GE family measures it.
* ``sum``: one linear branch per modality, fused = sum of branches; modality logits = its branch.
* ``film`` / ``gated`` (two modalities, Perez et al. 2018 / Kiela et al. 2018 as used by OGM-GE):
  the head has no per-modality path, so modality m's logits are the head's output with the other
  modality's *features* set to zero ("feature zeroing"; documented, not a paper quantity).
"""

from __future__ import annotations

import torch
from torch import nn

from trainables.errors import ConfigError
from trainables.registry import Registry

FUSIONS: Registry[type] = Registry("fusion")

Logits = tuple[torch.Tensor, dict[str, torch.Tensor]]


class FusionHead(nn.Module):
    """Base: holds the modality order and dims."""

    def __init__(self, dims: dict[str, int], num_classes: int) -> None:
        super().__init__()
        self.modalities = list(dims)
        self.dims = dict(dims)
        self.num_classes = num_classes

    def fuse(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, feats: dict[str, torch.Tensor]) -> Logits:
        fused = self.fuse(feats)
        per = {}
        for m in self.modalities:
            only = {k: (v if k == m else torch.zeros_like(v)) for k, v in feats.items()}
            per[m] = self.fuse(only)
        return fused, per


@FUSIONS.register("concat")
class ConcatFusion(FusionHead):
    def __init__(self, dims: dict[str, int], num_classes: int) -> None:
        super().__init__(dims, num_classes)
        self.fc = nn.Linear(sum(dims.values()), num_classes)

    def slices(self) -> dict[str, slice]:
        out, start = {}, 0
        for m in self.modalities:
            out[m] = slice(start, start + self.dims[m])
            start += self.dims[m]
        return out

    def forward(self, feats: dict[str, torch.Tensor]) -> Logits:
        fused = self.fc(torch.cat([feats[m] for m in self.modalities], dim=1))
        bias = self.fc.bias / len(self.modalities)
        per = {m: feats[m] @ self.fc.weight[:, sl].t() + bias for m, sl in self.slices().items()}
        return fused, per


@FUSIONS.register("sum")
class SumFusion(FusionHead):
    def __init__(self, dims: dict[str, int], num_classes: int) -> None:
        super().__init__(dims, num_classes)
        self.branches = nn.ModuleDict({m: nn.Linear(d, num_classes) for m, d in dims.items()})

    def forward(self, feats: dict[str, torch.Tensor]) -> Logits:
        per = {m: self.branches[m](feats[m]) for m in self.modalities}
        return torch.stack(list(per.values())).sum(0), per


class _TwoModal(FusionHead):
    def __init__(self, dims: dict[str, int], num_classes: int, hidden: int = 128) -> None:
        super().__init__(dims, num_classes)
        if len(dims) != 2:
            raise ConfigError("model.fusion", f"{type(self).__name__} needs exactly 2 modalities, got {list(dims)}")
        self.x, self.y = self.modalities  # x conditions y, as in OGM-GE's x_film / x_gate = True


@FUSIONS.register("film")
class FiLMFusion(_TwoModal):
    """FiLM: ``out = fc(gamma(x) * y' + beta(x))`` with ``y'`` the projected y features."""

    def __init__(self, dims: dict[str, int], num_classes: int, hidden: int = 128) -> None:
        super().__init__(dims, num_classes, hidden)
        self.proj_y = nn.Linear(dims[self.y], hidden)
        self.film = nn.Linear(dims[self.x], 2 * hidden)
        self.fc = nn.Linear(hidden, num_classes)

    def fuse(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        gamma, beta = self.film(feats[self.x]).chunk(2, dim=1)
        return self.fc(gamma * self.proj_y(feats[self.y]) + beta)


@FUSIONS.register("gated")
class GatedFusion(_TwoModal):
    """Gated: ``out = fc(sigmoid(W_x x) * W_y y)``."""

    def __init__(self, dims: dict[str, int], num_classes: int, hidden: int = 128) -> None:
        super().__init__(dims, num_classes, hidden)
        self.gate_x = nn.Linear(dims[self.x], hidden)
        self.proj_y = nn.Linear(dims[self.y], hidden)
        self.fc = nn.Linear(hidden, num_classes)

    def fuse(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.fc(torch.sigmoid(self.gate_x(feats[self.x])) * self.proj_y(feats[self.y]))


def build_fusion(kind: str, dims: dict[str, int], num_classes: int) -> FusionHead:
    return FUSIONS.get(kind, key="model.fusion")(dims, num_classes)
