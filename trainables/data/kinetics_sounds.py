"""Kinetics-Sounds (31 classes, audio + visual): OGM-GE and BalanceBenchmark list layouts.

Both profiles read audio as normalised Kaldi fbank ``.npy`` of ``[1024, 128]`` (time first; fed
as ``[1, 128, 1024]``) and 1-fps frames ``<clip>/frame_0000k.jpg``, 3 per clip. Labels are class
indices 0..30 in both reference lists (class names are not in the lists; they are reported as
``"0"`` .. ``"30"``).

``ogm_ge`` (default)
    ``my_train.txt`` / ``my_test.txt`` rows ``<ytid>_<start>_<end>,10,<label index>``;
    ``audio/{split}/<clip>.npy``, ``visual/{split}/<clip>/``.
``balancebench``
    ``ks_train_overlap.txt`` / ``ks_test_overlap.txt`` rows ``<clip> <label index>`` (label last);
    ``{split}_spec/<clip>.npy``, ``{split}-frames-1fps/{split}/<clip>/``. BalanceBenchmark silently
    drops clips with 3 frames or fewer; we keep them (frames repeat).

``prepared``
    the output of ``mmbal prepare kinetics_sounds`` from either layout (``--profile ogm_ge`` or
    ``balancebench``) or from the raw videos (see :mod:`trainables.data.io.prepared`).

Raw recipe (:class:`KineticsSoundsRecipe`, ``mmbal prepare kinetics_sounds``, ``--profile raw``): ``RAW/**/<clip>.mp4``
(any folder depth) and OGM-GE's ``my_train.txt`` / ``my_test.txt`` (rows ``<clip>,10,<label index>``)
in ``--lists`` (default RAW). Audio: the video's audio track at 16 kHz as the normalised Kaldi fbank
of the MLA / Kinetics-Sounds features, stored ``[128, 1024]``; 10 frames at 1 fps by default.

``list_file`` / ``audio_dir`` / ``visual_dir`` override the paths (``{split}`` becomes ``train`` or
``test``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from trainables.data.io.assemble import RealDataParams
from trainables.data.io.audio import FeatureFile, kaldi_fbank
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
from trainables.data.io.recipes import RawClip, VideoParams, VideoRecipe
from trainables.data.io.video import decode_audio
from trainables.errors import DataError
from trainables.params import knob

NUM_CLASSES = 31  # the reference lists give class indices only

# list file, row separator, label column, audio folder, frame folder
PROFILES = {
    "ogm_ge": ("my_{split}.txt", ",", 2, "audio/{split}", "visual/{split}"),
    "balancebench": ("ks_{split}_overlap.txt", None, -1, "{split}_spec", "{split}-frames-1fps/{split}"),
}


@dataclass(frozen=True)
class KineticsSoundsParams(RealDataParams):
    profile: Literal["ogm_ge", "balancebench", "prepared"] = knob(
        "ogm_ge", "list layout of data_root (see the module doc)"
    )
    list_file: str | None = knob(None, "list file under data_root ({split} = train/test); None = the profile's")
    audio_dir: str | None = knob(None, "fbank .npy folder under data_root; None = the profile's")
    visual_dir: str | None = knob(None, "frame folders under data_root; None = the profile's")
    num_classes: int = knob(NUM_CLASSES, "number of classes (labels are indices 0..num_classes-1)", ge=2)
    audio_frames: int = knob(1024, "fbank time frames after padding/cutting", ge=1)
    mel_bins: int = knob(128, "fbank mel bins (checked against the files)", ge=1)


@dataclass(frozen=True)
class KineticsSoundsPrepareParams(VideoParams):
    """``mmbal prepare kinetics_sounds``: what decides the stored bytes besides the frames."""

    frames: int = knob(10, "frames stored per clip, 1 per second", ge=1)
    fbank_rate: int = knob(16000, "fbank: rate the audio track is resampled to, Hz", ge=1000)
    mel_bins: int = knob(128, "fbank: mel bins", ge=1)
    fbank_frames: int = knob(1024, "fbank: time frames after padding/cutting", ge=1)


class KineticsSoundsRecipe(VideoRecipe):
    """Kinetics-Sounds MP4s + OGM-GE's lists -> Kaldi fbank of the audio track and 1-fps frames."""

    Params = KineticsSoundsPrepareParams
    class_names = [str(i) for i in range(NUM_CLASSES)]
    num_frames = 3
    raw_layout = "**/*.mp4"
    lists_layout = "OGM-GE's my_{train,test}.txt"

    def clips(self, raw: Path, lists: Path, p: KineticsSoundsPrepareParams) -> tuple[list[RawClip], str]:
        videos = {v.stem: v for v in sorted(raw.rglob("*.mp4"))}
        clips = []
        for split in ("train", "test"):
            for row in read_rows(lists / f"my_{split}.txt", SplitRows(","), 3):
                if isinstance(row, SampleError):
                    raise DataError(str(row))
                clip, label = row.fields[0], row.fields[2]
                if not label.isdigit() or int(label) >= NUM_CLASSES:
                    raise DataError(f"{row.where}: label {label!r} is not a class index 0..{NUM_CLASSES - 1}")
                video = videos.get(clip, raw / f"{clip}.mp4")  # a missing video is reported when it is decoded
                clips.append(RawClip(clip, int(label), split, row.where, {"video": str(video)}))
        if len({c.id for c in clips}) != len(clips):
            raise DataError(f"{lists}: a clip is listed twice in my_train.txt / my_test.txt")
        return clips, f"{lists}/my_train.txt, my_test.txt"

    def audio_shape(self, p: KineticsSoundsPrepareParams) -> tuple[int, int]:
        return (p.mel_bins, p.fbank_frames)

    def audio(self, clip: RawClip, p: KineticsSoundsPrepareParams) -> np.ndarray:
        x = decode_audio(Path(clip.files["video"]), p.fbank_rate, clip.where)
        return kaldi_fbank(
            x, p.fbank_rate, p.mel_bins, p.fbank_frames
        ).T.numpy()  # stored [F, T] like every audio feature


@register_dataset("kinetics_sounds")
class KineticsSounds(LayoutDataset):
    Params = KineticsSoundsParams
    recipe = KineticsSoundsRecipe()

    def read_lists(self, params: KineticsSoundsParams, root: Path, issues: Issues) -> Lists:
        tmpl, sep, col, adir, vdir = PROFILES[params.profile]
        tmpl, adir, vdir = params.list_file or tmpl, params.audio_dir or adir, params.visual_dir or vdir
        classes = [str(i) for i in range(params.num_classes)]
        splits = {}
        for split in ("train", "test"):

            def resolve(row: Row, split: str = split) -> Sample:
                clip, label = row.fields[0], row.fields[col]
                if not label.isdigit() or int(label) >= len(classes):
                    raise SampleError(
                        "label", f"{row.where}: label {label!r} is not a class index 0..{len(classes) - 1}"
                    )
                files = {
                    "audio": require(
                        safe_path(root, adir.format(split=split), clip + ".npy", where=row.where), row.where
                    ),
                    "visual": require(
                        safe_path(root, vdir.format(split=split), clip, where=row.where), row.where, True
                    ),
                }
                return Sample(clip, int(label), row.where, files)

            rows = read_rows(root / tmpl.format(split=split), SplitRows(sep), 3 if params.profile == "ogm_ge" else 2)
            splits[split] = collect(rows, resolve, issues, split)
        return Lists(splits, classes, {"num_frames": params.num_frames or 3, "audio_dir": adir, "visual_dir": vdir})

    def loaders(self, params: KineticsSoundsParams) -> dict[str, Loader]:
        return {
            "audio": FeatureFile(params.mel_bins, params.audio_frames, time_first=True),
            "visual": FrameFolder("visual", params.num_frames or 3, params.image_size, params.augment),
        }

    def prepared_frames(self, params: KineticsSoundsParams) -> dict[str, int | None]:
        return {"visual": params.num_frames or 3}  # 3 in every profile (a v1 folder does not record it)
