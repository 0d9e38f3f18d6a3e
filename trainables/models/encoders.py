"""Unimodal encoders: MLP, small CNN and ResNet-18, each exposing ``out_dim``.

Inputs with a leading time axis (``[B, T, C, H, W]``: several video frames or flow stacks) are folded
into the batch, encoded frame by frame and mean-pooled over time, which equals the spatio-temporal
average pooling of the OGM-GE / DI-MML visual encoders.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from trainables.registry import Registry

ENCODERS: Registry[type] = Registry("encoder")


class _FramePooled(nn.Module):
    """Runs a 2-D image encoder on ``[B, C, H, W]`` or ``[B, T, C, H, W]`` (mean over T)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 5:
            b, t = x.shape[:2]
            return self.encode(x.flatten(0, 1)).view(b, t, -1).mean(1)
        if x.dim() == 3:  # a single-channel map given as [B, H, W]
            x = x.unsqueeze(1)
        return self.encode(x)

    def encode(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


@ENCODERS.register("mlp")
class MLPEncoder(nn.Module):
    """Two-layer perceptron on the flattened input, standardised per feature first.

    The input goes through a BatchNorm without affine parameters (batch statistics in training,
    running statistics in evaluation), as the conv encoders normalise after each convolution:
    without it, inputs of large magnitude (log-STFT of speech, ~1e2-1e3) blew the layers up in the
    first SGD epoch and the modality then output a constant class for the rest of training.
    """

    def __init__(self, shape: tuple[int, ...], feature_dim: int = 64, hidden: int = 128) -> None:
        super().__init__()
        self.out_dim = feature_dim
        d = math.prod(shape)
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.BatchNorm1d(d, affine=False),
            nn.Linear(d, hidden),
            nn.ReLU(),
            nn.Linear(hidden, feature_dim),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@ENCODERS.register("cnn")
class SmallCNN(_FramePooled):
    """Three conv blocks (conv-BN-ReLU) and global average pooling; for small images/spectrograms."""

    def __init__(self, shape: tuple[int, ...], feature_dim: int = 64, width: int = 32) -> None:
        super().__init__()
        in_ch = shape[-3] if len(shape) >= 3 else 1
        self.out_dim = feature_dim

        def block(i: int, o: int, s: int) -> list[nn.Module]:
            return [nn.Conv2d(i, o, 3, stride=s, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU()]

        self.net = nn.Sequential(
            *block(in_ch, width, 1),
            *block(width, 2 * width, 2),
            *block(2 * width, feature_dim, 2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@ENCODERS.register("resnet18")
class ResNet18Encoder(_FramePooled):
    """torchvision ResNet-18 from scratch (no weights are downloaded), ``in_channels`` configurable
    (1 spectrogram, 2 optical flow, 3 RGB); the classifier layer is removed, ``out_dim`` = 512."""

    def __init__(self, shape: tuple[int, ...], feature_dim: int = 512) -> None:
        super().__init__()
        # imported here: torchvision pulls in torch._dynamo (seconds on a busy machine), which a trial
        # without a ResNet (mfeat's MLPs, a packed sweep's fresh actor) should not pay
        import torchvision

        in_ch = shape[-3] if len(shape) >= 3 else 1
        net = torchvision.models.resnet18(weights=None)
        if in_ch != 3:
            net.conv1 = nn.Conv2d(in_ch, 64, kernel_size=7, stride=2, padding=3, bias=False)
        net.fc = nn.Identity()
        self.net = net
        self.out_dim = 512

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build_encoder(kind: str, shape: tuple[int, ...], feature_dim: int) -> nn.Module:
    """Build a registered encoder for inputs of per-sample ``shape``."""
    return ENCODERS.get(kind, key="model.encoders")(tuple(shape), feature_dim=feature_dim)
