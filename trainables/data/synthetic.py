"""A seeded two-modality generator that reproduces modality imbalance on demand.

* ``fast`` is a vector modality: class prototype (random unit vector, scaled by
  ``fast_signal``) plus Gaussian noise; linearly separable, learned in a few steps by an MLP.
* ``slow`` is an image modality: a class-specific 3x3 +-1 pattern stamped at a random position of
  a noisy ``slow_size`` x ``slow_size`` image; translation makes it need a conv encoder and many
  more steps.

``informative_<m>`` is the fraction of samples whose ``m`` input carries the true class; the rest
carry a different, uniformly drawn class (so a modality with 0.8 cannot exceed ~80% alone). With
the defaults, joint training fits the training set through ``fast`` before ``slow`` has learned its
patterns, and the slow modality's accuracy through the fused head stays far below what it reaches
when trained alone (``tests/test_synthetic.py`` checks this).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from trainables.data.io.base import DataBundle, DatasetSpec, ModalitySpec, TensorDictDataset, register_dataset
from trainables.errors import ConfigError
from trainables.params import knob


@dataclass(frozen=True)
class SyntheticParams:
    num_classes: int = knob(4, "number of classes", ge=2)
    train_per_class: int = knob(100, "training samples per class", ge=1)
    val_per_class: int = knob(50, "validation samples per class", ge=1)
    test_per_class: int = knob(100, "test samples per class", ge=1)
    informative_fast: float = knob(0.95, "fraction of samples whose fast input carries the true class", ge=0, le=1)
    informative_slow: float = knob(1.0, "fraction of samples whose slow input carries the true class", ge=0, le=1)
    fast_dim: int = knob(16, "fast modality: vector size", ge=1)
    fast_signal: float = knob(3.0, "fast modality: prototype norm (noise std is 1)", ge=0)
    slow_size: int = knob(10, "slow modality: image side", ge=1)
    slow_signal: float = knob(3.0, "slow modality: pattern amplitude (noise std is 1)", ge=0)
    data_seed: int = knob(0, "seed of the generator (prototypes, patterns, samples)", ge=0)

    def __post_init__(self) -> None:
        for key in ("informative_fast", "informative_slow"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ConfigError(key, f"got {getattr(self, key)}; allowed: a fraction in [0, 1]")
        if self.num_classes < 2:
            raise ConfigError("num_classes", "allowed: an integer >= 2")
        if self.slow_size < 3:
            raise ConfigError("slow_size", "allowed: an integer >= 3")


def _carried_class(rng: np.random.Generator, labels: np.ndarray, informative: float, k: int) -> np.ndarray:
    """The class each sample's input shows: the true one with probability ``informative``."""
    other = (labels + rng.integers(1, k, size=len(labels))) % k  # uniform over the other classes
    return np.where(rng.random(len(labels)) < informative, labels, other)


def generate(
    p: SyntheticParams, labels: np.ndarray, rng: np.random.Generator, protos: np.ndarray, patterns: np.ndarray
) -> dict[str, np.ndarray]:
    n, k, s = len(labels), p.num_classes, p.slow_size
    cf = _carried_class(rng, labels, p.informative_fast, k)
    fast = protos[cf] + rng.standard_normal((n, p.fast_dim))
    cs = _carried_class(rng, labels, p.informative_slow, k)
    slow = rng.standard_normal((n, 1, s, s))
    rows, cols = rng.integers(0, s - 2, size=n), rng.integers(0, s - 2, size=n)
    for i in range(n):
        slow[i, 0, rows[i] : rows[i] + 3, cols[i] : cols[i] + 3] += p.slow_signal * patterns[cs[i]]
    return {"fast": fast.astype(np.float32), "slow": slow.astype(np.float32)}


@register_dataset("synthetic")
class Synthetic(DatasetSpec):
    Params = SyntheticParams

    def build(self, params: SyntheticParams, root: str | None, seed: int) -> DataBundle:
        rng = np.random.default_rng(params.data_seed)
        k = params.num_classes
        protos = rng.standard_normal((k, params.fast_dim))
        protos *= params.fast_signal / np.linalg.norm(protos, axis=1, keepdims=True)
        patterns = rng.choice([-1.0, 1.0], size=(k, 3, 3))
        splits = {}
        for name, per in (
            ("train", params.train_per_class),
            ("val", params.val_per_class),
            ("test", params.test_per_class),
        ):
            labels = np.repeat(np.arange(k), per)
            x = generate(params, labels, rng, protos, patterns)
            splits[name] = TensorDictDataset({m: torch.from_numpy(v) for m, v in x.items()}, torch.from_numpy(labels))
        specs = {
            "fast": ModalitySpec((params.fast_dim,), "mlp"),
            "slow": ModalitySpec((1, params.slow_size, params.slow_size), "cnn"),
        }
        info = {"data_seed": params.data_seed, "sizes": {n: len(d) for n, d in splits.items()}}
        return DataBundle(splits["train"], splits["val"], splits["test"], specs, [f"c{i}" for i in range(k)], info)
