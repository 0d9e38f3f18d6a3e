"""Knobs shared by the real datasets and the assembly of their splits into a :class:`DataBundle`.

The official splits of these datasets have no validation set (AVE aside): a seeded, stratified
fraction of the training list becomes the validation split, and its ids, their checksum and the
split seed are recorded in ``DataBundle.info`` (and so in every run's summary).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from trainables.data.io.base import DataBundle, ModalitySpec, holdout, stratified_split
from trainables.data.io.lists import Issues, LazyDataset, Loader, Sample, verify
from trainables.errors import ConfigError, DataError
from trainables.params import knob


@dataclass(frozen=True)
class RealDataParams:
    """Common ``data.*`` keys; ``None`` means "the profile's reference value"."""

    image_size: int = knob(224, "side of the square frames fed to the visual encoder (e.g. 64 for CPU debugging)", ge=1)
    num_frames: int | None = knob(None, "frames per clip; None = the profile's reference value", ge=1)
    augment: bool = knob(True, "training: RandomResizedCrop + horizontal flip (the references' train transform)")
    val_fraction: float = knob(0.1, "fraction of each training class carved out as the validation split", gt=0, lt=1)
    val_seed: int = knob(
        0, "seed of the stratified validation carve (fixed so that trial seeds vary only training)", ge=0
    )
    on_error: Literal["raise", "skip"] = knob("raise", "bad sample: stop with its file and row, or skip it (counted)")

    def __post_init__(self) -> None:
        if self.image_size < 16:
            raise ConfigError("image_size", f"got {self.image_size}; allowed: an integer >= 16")
        if self.num_frames is not None and self.num_frames < 1:
            raise ConfigError("num_frames", f"got {self.num_frames}; allowed: an integer >= 1 or null")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError("val_fraction", f"got {self.val_fraction}; allowed: a fraction in (0, 1)")


def ids_checksum(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()


def carve_val(samples: list[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Seeded, stratified ``(train, val)`` carve of a training list (both keep the list order)."""
    labels = np.array([s.label for s in samples], dtype=np.int64)
    rows = stratified_split(labels, {"val": holdout(fraction), "train": -1}, seed)
    return [samples[i] for i in rows["train"]], [samples[i] for i in rows["val"]]


def assemble(
    splits: dict[str, list[Sample]],
    loaders: dict[str, Loader],
    modalities: dict[str, ModalitySpec],
    class_names: list[str],
    params: RealDataParams,
    issues: Issues,
    info: dict[str, Any],
) -> DataBundle:
    """Verify (``on_error: skip``), carve the validation split when absent, and build the bundle.

    Raises:
        DataError: a split ends up empty.
    """
    if params.on_error == "skip":
        splits = {name: verify(s, loaders, issues, name) for name, s in splits.items()}
    splits = dict(splits)
    val_info: dict[str, Any]
    if "val" not in splits:
        splits["train"], splits["val"] = carve_val(splits["train"], params.val_fraction, params.val_seed)
        val_info = {"source": "carved from train", "fraction": params.val_fraction, "seed": params.val_seed}
    else:
        val_info = {"source": "official validation list"}
    for name in ("train", "val", "test"):
        if not splits.get(name):
            raise DataError(f"the {name} split is empty after reading the lists (skipped: {issues.counts})")
    val_ids = [s.id for s in splits["val"]]
    val_info.update(ids_sha256=ids_checksum(val_ids), ids=sorted(val_ids))
    full = {
        **info,
        "sizes": {n: len(s) for n, s in splits.items()},
        "val": val_info,
        **issues.info(),
        "modalities": {m: list(s.shape) for m, s in modalities.items()},
    }
    return DataBundle(
        train=LazyDataset(splits["train"], loaders, train=True),
        val=LazyDataset(splits["val"], loaders, train=False),
        test=LazyDataset(splits["test"], loaders, train=False),
        modalities=modalities,
        class_names=class_names,
        info=full,
    )
