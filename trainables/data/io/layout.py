"""A dataset read from a folder in one of its reference layouts (``data.profile``), or from mmbal's
prepared layout (``data.profile: prepared``), which every such layout can be turned into.

A :class:`LayoutDataset` says two things, both in its own file: which samples a layout lists
(:meth:`LayoutDataset.read_lists`, the official splits as the list files give them) and how each
modality of a sample is decoded (:meth:`LayoutDataset.loaders`). The per-sample training path, the
prepared path and ``mmbal prepare DATASET --profile PROFILE`` (one
:class:`~trainables.data.io.recipes.LayoutRecipe` per profile of ``Params.profile``) follow from them.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainables.data.io import prepared
from trainables.data.io.assemble import assemble
from trainables.data.io.base import DataBundle, DatasetSpec, ModalitySpec
from trainables.data.io.lists import Issues, Loader, Sample
from trainables.data.io.recipes import LayoutRecipe, PrepareRecipe


@dataclass
class Lists:
    """A layout's official splits (``train``, ``test``, and ``val`` where it ships one), in list order."""

    splits: dict[str, list[Sample]]
    class_names: list[str]
    info: dict[str, Any] = field(default_factory=dict)


def layout_profiles(params_cls: type) -> list[str]:
    """The ``data.profile`` values of a dataset that name a layout (every one but ``prepared``)."""
    return [p for p in typing.get_args(typing.get_type_hints(params_cls)["profile"]) if p != "prepared"]


class LayoutDataset(DatasetSpec):
    """Base of the datasets read from a user folder; ``Params`` has a ``profile`` knob that includes ``prepared``."""

    needs_root = True

    def read_lists(self, params: Any, root: Path, issues: Issues) -> Lists:  # pragma: no cover - abstract
        """The official splits of ``root`` in the layout of ``params.profile``; bad rows go through ``issues``."""
        raise NotImplementedError

    def loaders(self, params: Any) -> dict[str, Loader]:  # pragma: no cover - abstract
        """One loader per modality, in the order the model uses."""
        raise NotImplementedError

    def prepared_frames(self, params: Any) -> dict[str, int | None]:
        """Frames per sample of each frame modality when reading prepared data (None: the stored default)."""
        return {}

    def prepared_splits(self, params: Any) -> tuple[str, ...]:
        """The stored splits a prepared run uses (the validation split is carved from train otherwise)."""
        return ("train", "test")

    def build(self, params: Any, root: str | None, seed: int) -> DataBundle:
        base = Path(root or ".")
        issues = Issues(params.on_error)
        if params.profile == "prepared":
            frames, splits = self.prepared_frames(params), self.prepared_splits(params)
            return prepared.bundle(base, self.name, params, frames, splits, issues)
        lists = self.read_lists(params, base, issues)
        loaders = self.loaders(params)
        modalities = {m: ModalitySpec(tuple(f.shape()), "resnet18") for m, f in loaders.items()}
        info = {"dataset": self.name, "profile": params.profile, **lists.info}
        return assemble(lists.splits, loaders, modalities, lists.class_names, params, issues, info)

    @classmethod
    def recipes(cls) -> dict[str, PrepareRecipe]:
        return {**super().recipes(), **{p: LayoutRecipe(cls, p) for p in layout_profiles(cls.Params)}}
