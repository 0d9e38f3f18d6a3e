"""AVE, Audio-Visual Event (28 classes, audio + visual), in the DI-MML / OGM-GE layout.

``trainSet.txt`` / ``valSet.txt`` / ``testSet.txt`` rows ``Category&videoid&quality&start&end`` (a
``Category&VideoID&...`` header row is ignored); audio spectrogram pickles ``Audio-1004-SE/<vid>.pkl``
of ``[257, 1004]`` (numpy arrays only are unpickled); frames ``Image-01-FPS-SE/<vid>/``, 4 per clip.

AVE lists some videos more than once (several annotated events); as in DI-MML, an id is kept once
(its first row) per split and the number of removed duplicates is recorded in ``info``. Classes are
numbered in order of first appearance in ``testSet.txt``, as DI-MML does. AVE ships a validation
list: it is the validation split
unless ``official_val`` is false, in which case a stratified fraction of train is carved as usual.

``profile: prepared`` reads the output of ``mmbal prepare ave`` (the layout above, decoded by these
loaders; see :mod:`trainables.data.io.recipes`); it keeps valSet.txt's samples when prepared with
``official_val`` (the default).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from trainables.data.io.assemble import RealDataParams
from trainables.data.io.audio import FeatureFile
from trainables.data.io.base import register_dataset
from trainables.data.io.frames import FrameFolder
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
from trainables.params import knob


@dataclass(frozen=True)
class AVEParams(RealDataParams):
    profile: Literal["dimml", "prepared"] = knob(
        "dimml", "dimml: the layout below; prepared: `mmbal prepare ave` output"
    )
    official_val: bool = knob(True, "use valSet.txt as the validation split (false: carve val_fraction of train)")
    audio_dir: str = knob("Audio-1004-SE", "spectrogram pickle folder under data_root")
    visual_dir: str = knob("Image-01-FPS-SE", "frame folders under data_root")
    audio_frames: int = knob(1004, "spectrogram time frames after padding/cutting", ge=1)


def _rows(path: Path, removed: dict[str, int], split: str) -> Iterator[Row | SampleError]:
    seen: set[str] = set()
    for row in read_rows(path, SplitRows("&"), 2):
        if isinstance(row, Row):
            if row.fields[1].lower() == "videoid":
                continue  # the annotation header
            if row.fields[1] in seen:
                removed[split] = removed.get(split, 0) + 1
                continue
            seen.add(row.fields[1])
        yield row


@register_dataset("ave")
class AVE(LayoutDataset):
    Params = AVEParams

    def read_lists(self, params: AVEParams, root: Path, issues: Issues) -> Lists:
        classes: list[str] = []
        for r in read_rows(root / "testSet.txt", SplitRows("&"), 2):
            if isinstance(r, Row) and r.fields[1].lower() != "videoid" and r.fields[0] not in classes:
                classes.append(r.fields[0])
        removed: dict[str, int] = {}

        def resolve(row: Row) -> Sample:
            cat, vid = row.fields[0], row.fields[1]
            if cat not in classes:
                raise SampleError(
                    "label", f"{row.where}: category {cat!r} is not among the {len(classes)} categories of testSet.txt"
                )
            files = {
                "audio": require(safe_path(root, params.audio_dir, vid + ".pkl", where=row.where), row.where),
                "visual": require(safe_path(root, params.visual_dir, vid, where=row.where), row.where, True),
            }
            return Sample(vid, classes.index(cat), row.where, files)

        splits = {
            s: collect(_rows(root / f"{s}Set.txt", removed, s), resolve, issues, s)
            for s in self.prepared_splits(params)
        }
        info = {"num_frames": params.num_frames or 4, "duplicates_removed": removed, "num_classes": len(classes)}
        return Lists(splits, classes, info)

    def loaders(self, params: AVEParams) -> dict[str, Loader]:
        return {
            "audio": FeatureFile(257, params.audio_frames, time_first=False),
            "visual": FrameFolder("visual", params.num_frames or 4, params.image_size, params.augment),
        }

    def prepared_frames(self, params: AVEParams) -> dict[str, int | None]:
        return {"visual": params.num_frames}

    def prepared_splits(self, params: AVEParams) -> tuple[str, ...]:
        return ("train", "val", "test") if params.official_val else ("train", "test")
