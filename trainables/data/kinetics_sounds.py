"""Kinetics-Sounds (31 classes, audio + visual): OGM-GE and BalanceBenchmark list layouts.

Both profiles read the same features: audio as normalised Kaldi fbank ``.npy`` of ``[1024, 128]``
(time first; fed as ``[1, 128, 1024]``) at ``audio/{split}/<clip>.npy``, and frames
``visual/{split}/<clip>/frame_0000k.jpg``, 3 per clip. They differ in the list files:

``ogm_ge`` (default)
    ``{split}.csv`` rows ``<ytid>_<start>_<end>,10,<class name>``; the class list is the sorted set
    of class names of the training list (a test label outside it is an error).
``balancebench``
    ``class.txt`` (one line, comma-separated class names, in label order) and ``{split}.txt`` rows
    ``<clip>,<class name or index>``.

``audio_dir`` / ``visual_dir`` / ``train_list`` / ``test_list`` override the paths (``{split}``
is replaced by ``train`` or ``test``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from trainables.data.assemble import RealDataParams, assemble
from trainables.data.audio import FeatureFile
from trainables.data.base import DataBundle, DatasetSpec, ModalitySpec, register_dataset
from trainables.data.frames import FrameFolder
from trainables.data.lists import Issues, Row, Sample, SampleError, SplitRows, collect, read_rows, require, safe_path
from trainables.errors import DataError
from trainables.params import knob

LISTS = {"ogm_ge": "{split}.csv", "balancebench": "{split}.txt"}


@dataclass(frozen=True)
class KineticsSoundsParams(RealDataParams):
    profile: Literal["ogm_ge", "balancebench"] = knob("ogm_ge", "list layout of data_root (see the module doc)")
    list_file: str | None = knob(None, "list file under data_root ({split} = train/test); None = the profile's")
    audio_dir: str = knob("audio/{split}", "fbank .npy folder under data_root")
    visual_dir: str = knob("visual/{split}", "frame folders under data_root")
    audio_frames: int = knob(1024, "fbank time frames after padding/cutting")
    mel_bins: int = knob(128, "fbank mel bins (checked against the files)")


def class_list(root: Path, params: KineticsSoundsParams, list_tmpl: str) -> list[str]:
    if params.profile == "balancebench":
        path = root / "class.txt"
        if not path.is_file():
            raise DataError(f"{path}: class list not found (balancebench profile)")
        names = [c.strip() for c in path.read_text(encoding="utf-8-sig").strip().split(",") if c.strip()]
        if len(set(names)) != len(names):
            raise DataError(f"{path}: duplicate class names")
        return names
    rows = read_rows(root / list_tmpl.format(split="train"), SplitRows(","), 3)
    return sorted({r.fields[2] for r in rows if isinstance(r, Row)})


@register_dataset("kinetics_sounds")
class KineticsSounds(DatasetSpec):
    Params = KineticsSoundsParams
    needs_root = True

    def build(self, params: KineticsSoundsParams, root: str | None, seed: int) -> DataBundle:
        base = Path(root or ".")
        issues = Issues(params.on_error)
        tmpl = params.list_file or LISTS[params.profile]
        classes = class_list(base, params, tmpl)
        min_fields, label_col = (3, 2) if params.profile == "ogm_ge" else (2, -1)
        splits = {}
        for split in ("train", "test"):

            def resolve(row: Row, split: str = split) -> Sample:
                clip, label = row.fields[0], row.fields[label_col]
                if label.isdigit() and params.profile == "balancebench":
                    idx = int(label) if int(label) < len(classes) else -1
                else:
                    idx = classes.index(label) if label in classes else -1
                if idx < 0:
                    raise SampleError("label", f"{row.where}: label {label!r} is not in the class list ({len(classes)} classes)")
                files = {
                    "audio": require(
                        safe_path(base, params.audio_dir.format(split=split), clip + ".npy", where=row.where), row.where
                    ),
                    "visual": require(
                        safe_path(base, params.visual_dir.format(split=split), clip, where=row.where), row.where, True
                    ),
                }
                return Sample(clip, idx, row.where, files)

            rows = read_rows(base / tmpl.format(split=split), SplitRows(","), min_fields)
            splits[split] = collect(rows, resolve, issues, split)
        nf = params.num_frames or 3
        loaders = {
            "audio": FeatureFile(params.mel_bins, params.audio_frames, time_first=True),
            "visual": FrameFolder("visual", nf, params.image_size, params.augment),
        }
        modalities = {m: ModalitySpec(tuple(f.shape()), "resnet18") for m, f in loaders.items()}
        info = {"dataset": "kinetics_sounds", "profile": params.profile, "num_frames": nf, "num_classes": len(classes)}
        return assemble(splits, loaders, modalities, classes, params, issues, info)
