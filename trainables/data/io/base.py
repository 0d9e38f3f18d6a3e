"""Dataset plugin: a registered class turns ``(params, root, seed)`` into train/val/test splits.

A batch, after the default collate, is ``{"inputs": {modality: Tensor[B, ...]}, "label": Tensor[B],
"index": Tensor[B]}``, ``index`` being the sample's position in its split (``0 .. len(split) - 1``,
what ``BalancingMethod.train_indices`` refers to). Each dataset module registers itself with
``@register_dataset("name")`` and declares a frozen ``Params`` dataclass (the ``data.*`` keys of a
config). A dataset that can be prepared from a raw download (``mmbal prepare NAME --profile raw``) also
sets ``recipe`` (a :class:`~trainables.data.io.recipes.VideoRecipe`) in its own module; the datasets
read from a folder derive from :class:`~trainables.data.io.layout.LayoutDataset`, which adds a recipe
per layout profile.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset

from trainables.params import NoParams
from trainables.registry import Registry

if TYPE_CHECKING:  # only the type: the writer imports this module (through prepared and assemble)
    from trainables.data.io.recipes import PrepareRecipe

DATASETS: Registry[type[DatasetSpec]] = Registry("dataset")
register_dataset = DATASETS.register


@dataclass(frozen=True)
class ModalitySpec:
    """Per-sample input shape of a modality and the encoder used by default."""

    shape: tuple[int, ...]
    encoder: str


@dataclass
class DataBundle:
    """The three splits of one trial plus what the model needs to know about the data.

    Attributes:
        train, val, test: map-style datasets yielding ``{"inputs", "label", "index"}`` dicts.
        modalities: modality name -> :class:`ModalitySpec`, in the order the model uses.
        class_names: one name per class index.
        info: recorded with the run (split sizes, seeds, manifest checksums, skipped samples).
    """

    train: Dataset
    val: Dataset
    test: Dataset
    modalities: dict[str, ModalitySpec]
    class_names: list[str]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


class DatasetSpec:
    """Base class of a registered dataset."""

    Params: ClassVar[type] = NoParams
    name: ClassVar[str] = ""
    needs_root: ClassVar[bool] = False  # True for datasets read from a user folder
    recipe: ClassVar[PrepareRecipe | None] = None  # `mmbal prepare --profile raw`; None: no raw recipe

    def build(self, params: Any, root: str | None, seed: int) -> DataBundle:  # pragma: no cover
        raise NotImplementedError

    @classmethod
    def recipes(cls) -> dict[str, PrepareRecipe]:
        """``mmbal prepare`` recipes by ``--profile`` name (``raw``: the raw download)."""
        return {"raw": cls.recipe} if cls.recipe is not None else {}


class TensorDictDataset(Dataset):
    """In-memory dataset over per-modality tensors sharing the first axis.

    ``indices`` keep each row's id in the source data (``subset`` carries them along); a sample's
    ``index`` in a batch is its position in this dataset, as for every dataset.
    """

    def __init__(
        self, inputs: dict[str, torch.Tensor], labels: torch.Tensor, indices: np.ndarray | None = None
    ) -> None:
        self.inputs = inputs
        self.labels = labels
        self.indices = torch.as_tensor(indices if indices is not None else np.arange(len(labels)))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"inputs": {m: x[i] for m, x in self.inputs.items()}, "label": self.labels[i], "index": i}

    def subset(self, rows: np.ndarray) -> TensorDictDataset:
        rows_t = torch.as_tensor(rows)
        return TensorDictDataset(
            {m: x[rows_t] for m, x in self.inputs.items()}, self.labels[rows_t], self.indices[rows_t].numpy()
        )


def holdout(fraction: float) -> Callable[[int], int]:
    """Split size: ``round(fraction * n)`` of a class of ``n``, but at least one of a class of two or more
    and never the whole class (so tiny folders still get a held-out sample and keep a training one)."""

    def size(n: int) -> int:
        return min(n - 1, max(1, int(round(fraction * n)))) if n > 1 else 0

    return size


def stratified_split(
    labels: np.ndarray, sizes: dict[str, int | float | Callable[[int], int]], seed: int
) -> dict[str, np.ndarray]:
    """Seeded, stratified, disjoint split of sample indices (the one split of every dataset and of prepare).

    Each class, in ascending label order, is permuted with one shared generator and cut into
    consecutive pieces, one per split in the order of ``sizes``.

    Args:
        labels: class index per sample.
        sizes: split name -> samples *per class* (int), fraction of each class (float in (0, 1]), or a
            function of the class size (e.g. :func:`holdout`). A split sized ``-1`` takes whatever is left.
        seed: the permutation seed (independent of the training seed when the caller wants it).

    Returns:
        split name -> sorted sample indices.

    Raises:
        ValueError: a class has fewer samples than the split sizes ask for.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    out: dict[str, list[np.ndarray]] = {name: [np.zeros(0, dtype=np.int64)] for name in sizes}
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        start = 0
        for name, size in sizes.items():
            if callable(size):
                n = size(len(idx))
            elif size == -1:
                n = len(idx) - start
            elif isinstance(size, float):
                n = int(round(size * len(idx)))
            else:
                n = int(size)
            if start + n > len(idx):
                raise ValueError(f"class {c} has {len(idx)} samples, not enough for split sizes {sizes}")
            out[name].append(idx[start : start + n])
            start += n
    return {name: np.sort(np.concatenate(parts)) for name, parts in out.items()}
