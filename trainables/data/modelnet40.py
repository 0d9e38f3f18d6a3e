"""ModelNet40 front/rear views (40 classes), in the DI-MML layout.

12-view renders (MVCNN style, one PNG per view: ``..._v001.png`` .. ``..._v012.png``); view
``v001`` is the ``front`` modality and ``v007`` (the opposite camera) the ``rear`` one. List files
``train.txt`` / ``test.txt`` rows ``<path>\\t<label>``, where ``<path>`` is the ``v001`` image as
DI-MML lists it (``../modelnet40_images_new_12x/airplane/train/airplane_0001.obj.shaded_v001.png``;
``list_prefix`` is removed, the rest is read under data_root, i.e. data_root is the
``modelnet40_images_new_12x`` folder) and ``<label>`` the 0-based index in the alphabetical class
order below; the other view is found by replacing the last ``vNNN`` of the file name.

``profile: prepared`` reads the output of ``mmbal prepare modelnet40`` (both views decoded by these
loaders, before augmentation; see :mod:`trainables.data.io.recipes`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from trainables.data.io.assemble import RealDataParams
from trainables.data.io.base import register_dataset
from trainables.data.io.frames import ImageFile
from trainables.data.io.layout import LayoutDataset, Lists
from trainables.data.io.lists import (
    Issues,
    Loader,
    Row,
    Sample,
    SampleError,
    SplitRows,
    collect,
    read_rows,
    require,
    safe_path,
)
from trainables.errors import ConfigError
from trainables.params import knob

CLASSES = (
    "airplane bathtub bed bench bookshelf bottle bowl car chair cone cup curtain desk door dresser flower_pot "
    "glass_box guitar keyboard lamp laptop mantel monitor night_stand person piano plant radio range_hood sink sofa "
    "stairs stool table tent "
    "toilet tv_stand vase wardrobe xbox"
).split()
VIEW = re.compile(r"v\d{3}")


@dataclass(frozen=True)
class ModelNet40Params(RealDataParams):
    profile: Literal["dimml", "prepared"] = knob(
        "dimml", "dimml: the layout below; prepared: `mmbal prepare modelnet40` output"
    )
    front_view: str = knob("v001", "view used as the front modality")
    rear_view: str = knob("v007", "view used as the rear modality")
    list_prefix: str = knob(
        "../modelnet40_images_new_12x/", "prefix removed from the list's image paths (DI-MML's lists)"
    )
    train_list: str = knob("train.txt", "training list under data_root")
    test_list: str = knob("test.txt", "test list under data_root")

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("front_view", "rear_view"):
            if not VIEW.fullmatch(getattr(self, key)):
                raise ConfigError(key, f"got {getattr(self, key)!r}; allowed: a view tag like v001 .. v012")


def view_path(path: str, view: str) -> str | None:
    """``path`` with the last view tag of its file name replaced by ``view`` (None without a tag)."""
    head, _, name = path.rpartition("/")
    found = list(VIEW.finditer(name))
    if not found:
        return None
    m = found[-1]
    return (head + "/" if head else "") + name[: m.start()] + view + name[m.end() :]


@register_dataset("modelnet40")
class ModelNet40(LayoutDataset):
    Params = ModelNet40Params

    def read_lists(self, params: ModelNet40Params, root: Path, issues: Issues) -> Lists:
        def resolve(row: Row) -> Sample:
            path, label = row.fields[0], row.fields[1]
            path = path.removeprefix(params.list_prefix) if params.list_prefix else path
            if not label.isdigit() or int(label) >= len(CLASSES):
                raise SampleError("label", f"{row.where}: label {label!r} is not a class index 0..{len(CLASSES) - 1}")
            front, rear = view_path(path, params.front_view), view_path(path, params.rear_view)
            if front is None or rear is None:
                raise SampleError(
                    "parse", f"{row.where}: {path!r} has no view tag (expected a file name like ..._v001.png)"
                )
            files = {
                "front": require(safe_path(root, front, where=row.where), row.where),
                "rear": require(safe_path(root, rear, where=row.where), row.where),
            }
            return Sample(view_path(path, "v000") or path, int(label), row.where, files)

        lists = {"train": params.train_list, "test": params.test_list}
        splits = {s: collect(read_rows(root / f, SplitRows("\t"), 2), resolve, issues, s) for s, f in lists.items()}
        return Lists(splits, list(CLASSES), {"views": {"front": params.front_view, "rear": params.rear_view}})

    def loaders(self, params: ModelNet40Params) -> dict[str, Loader]:
        return {m: ImageFile(m, params.image_size, params.augment) for m in ("front", "rear")}
