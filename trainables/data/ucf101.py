"""UCF-101 (101 actions, RGB + optical flow), in the DI-MML layout (split 1 by default).

``classInd.txt`` rows ``<1-based index> <ClassName>``; ``trainlist0K.txt`` rows
``<ClassName>/v_<...>.avi <1-based index>``; ``testlist0K.txt`` rows ``<ClassName>/v_<...>.avi``
(the class comes from the folder part; a label, as in DI-MML's ``testlist001.txt``, must agree).
Frames: ``jpegs_256/v_<...>/frame%06d.jpg`` (RGB, 1 frame by default) and
``tvl1_flow/{u,v}/v_<...>/frame%06d.jpg`` (grey JPEGs, ``flow_frames`` consecutive frames stacked
as ``[k, 2, H, W]``, u and v as channels; a random window when training, the centred one
otherwise). Modalities: ``rgb`` and ``flow``. DI-MML draws RGB frames inside the flow window with a
fixed seed; our RGB pick is independent of the flow window (one frame per segment of the clip).

``profile: prepared`` reads the output of ``mmbal prepare ucf101``. Its folders hold 25 frames per
second, so prepare keeps ``--max-frames`` of them per clip (default 32; 0 keeps all): the RGB segment
centres plus the evaluation frame, and for flow ``max_frames // flow_frames`` evenly spaced windows
plus the centred one. Evaluation is unchanged; a training draw goes to the nearest kept frame or
window (see :mod:`trainables.data.io.prepared`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from trainables.data.io.assemble import RealDataParams
from trainables.data.io.base import register_dataset
from trainables.data.io.frames import FlowStack, FrameFolder
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
from trainables.errors import ConfigError, DataError
from trainables.params import knob


@dataclass(frozen=True)
class UCF101Params(RealDataParams):
    profile: Literal["dimml", "prepared"] = knob(
        "dimml", "dimml: the layout below; prepared: `mmbal prepare ucf101` output"
    )
    split: int = knob(1, "official split 1, 2 or 3 (trainlist0K / testlist0K)", ge=1, le=3)
    test_list: str | None = knob(
        None, "test list file under data_root; None = testlist0K.txt (DI-MML ships testlist001.txt)"
    )
    flow_frames: int = knob(10, "consecutive optical-flow frames per sample", ge=1)
    rgb_dir: str = knob("jpegs_256", "RGB frame folders under data_root")
    flow_dir: str = knob("tvl1_flow", "flow folders under data_root (with u/ and v/)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.split not in (1, 2, 3):
            raise ConfigError("split", f"got {self.split}; allowed: 1, 2 or 3")
        if self.flow_frames < 1:
            raise ConfigError("flow_frames", f"got {self.flow_frames}; allowed: an integer >= 1")


def read_classes(path: Path) -> list[str]:
    names: dict[int, str] = {}
    for row in read_rows(path, SplitRows(None), 2):
        if isinstance(row, SampleError) or not row.fields[0].isdigit():
            raise DataError(f"{row.where if isinstance(row, Row) else path}: expected '<index> <ClassName>'")
        names[int(row.fields[0])] = row.fields[1]
    if sorted(names) != list(range(1, len(names) + 1)):
        raise DataError(f"{path}: class indices must be 1..{len(names)}")
    return [names[i] for i in range(1, len(names) + 1)]


@register_dataset("ucf101")
class UCF101(LayoutDataset):
    Params = UCF101Params

    def read_lists(self, params: UCF101Params, root: Path, issues: Issues) -> Lists:
        classes = read_classes(root / "classInd.txt")

        def resolve(row: Row) -> Sample:
            rel = row.fields[0]
            cls, _, fname = rel.rpartition("/")
            video = fname.rsplit(".", 1)[0]
            if len(row.fields) > 1:  # training rows carry the 1-based index; it must match the folder
                idx = int(row.fields[1]) - 1 if row.fields[1].isdigit() else -1
                if not 0 <= idx < len(classes) or (cls and classes[idx] != cls):
                    raise SampleError(
                        "label", f"{row.where}: label {row.fields[1]!r} does not name class {cls!r} of classInd.txt"
                    )
            elif cls in classes:
                idx = classes.index(cls)
            else:
                raise SampleError("label", f"{row.where}: class {cls!r} is not in classInd.txt")
            files = {
                "rgb": require(safe_path(root, params.rgb_dir, video, where=row.where), row.where, True),
                "flow_u": require(safe_path(root, params.flow_dir, "u", video, where=row.where), row.where, True),
                "flow_v": require(safe_path(root, params.flow_dir, "v", video, where=row.where), row.where, True),
            }
            return Sample(video, idx, row.where, files)

        splits = {
            s: collect(read_rows(root / f"{s}list0{params.split}.txt", SplitRows(None), 1), resolve, issues, s)
            for s in ("train", "test")
        }
        info = {"split": params.split, "num_frames": params.num_frames or 1, "flow_frames": params.flow_frames}
        return Lists(splits, classes, info)

    def loaders(self, params: UCF101Params) -> dict[str, Loader]:
        return {
            "rgb": FrameFolder("rgb", params.num_frames or 1, params.image_size, params.augment),
            "flow": FlowStack(params.flow_frames, params.image_size, params.augment),
        }

    def prepared_frames(self, params: UCF101Params) -> dict[str, int | None]:
        return {"rgb": params.num_frames, "flow": params.flow_frames}
