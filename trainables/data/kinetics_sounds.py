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
    the output of ``mmbal prepare kinetics_sounds`` (see :mod:`trainables.data.io.prepared`).

``list_file`` / ``audio_dir`` / ``visual_dir`` override the paths (``{split}`` becomes ``train`` or
``test``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from trainables.data.io import prepared
from trainables.data.io.assemble import RealDataParams, assemble
from trainables.data.io.audio import FeatureFile
from trainables.data.io.base import DataBundle, DatasetSpec, ModalitySpec, register_dataset
from trainables.data.io.frames import FrameFolder
from trainables.data.io.lists import Issues, Row, Sample, SampleError, SplitRows, collect, read_rows, require, safe_path
from trainables.params import knob

# list file, row separator, label column, audio folder, frame folder
PROFILES = {
    "ogm_ge": ("my_{split}.txt", ",", 2, "audio/{split}", "visual/{split}"),
    "balancebench": ("ks_{split}_overlap.txt", None, -1, "{split}_spec", "{split}-frames-1fps/{split}"),
}


@dataclass(frozen=True)
class KineticsSoundsParams(RealDataParams):
    profile: Literal["ogm_ge", "balancebench", "prepared"] = knob("ogm_ge", "list layout of data_root (see the module doc)")
    list_file: str | None = knob(None, "list file under data_root ({split} = train/test); None = the profile's")
    audio_dir: str | None = knob(None, "fbank .npy folder under data_root; None = the profile's")
    visual_dir: str | None = knob(None, "frame folders under data_root; None = the profile's")
    num_classes: int = knob(31, "number of classes (labels are indices 0..num_classes-1)")
    audio_frames: int = knob(1024, "fbank time frames after padding/cutting")
    mel_bins: int = knob(128, "fbank mel bins (checked against the files)")


@register_dataset("kinetics_sounds")
class KineticsSounds(DatasetSpec):
    Params = KineticsSoundsParams
    needs_root = True

    def build(self, params: KineticsSoundsParams, root: str | None, seed: int) -> DataBundle:
        base = Path(root or ".")
        issues = Issues(params.on_error)
        nf = params.num_frames or 3
        if params.profile == "prepared":
            return self._prepared(base, params, nf, issues)
        tmpl, sep, col, adir, vdir = PROFILES[params.profile]
        tmpl, adir, vdir = params.list_file or tmpl, params.audio_dir or adir, params.visual_dir or vdir
        classes = [str(i) for i in range(params.num_classes)]
        splits = {}
        for split in ("train", "test"):

            def resolve(row: Row, split: str = split) -> Sample:
                clip, label = row.fields[0], row.fields[col]
                if not label.isdigit() or int(label) >= len(classes):
                    raise SampleError("label", f"{row.where}: label {label!r} is not a class index 0..{len(classes) - 1}")
                files = {
                    "audio": require(safe_path(base, adir.format(split=split), clip + ".npy", where=row.where), row.where),
                    "visual": require(safe_path(base, vdir.format(split=split), clip, where=row.where), row.where, True),
                }
                return Sample(clip, int(label), row.where, files)

            rows = read_rows(base / tmpl.format(split=split), SplitRows(sep), 3 if params.profile == "ogm_ge" else 2)
            splits[split] = collect(rows, resolve, issues, split)
        loaders = {
            "audio": FeatureFile(params.mel_bins, params.audio_frames, time_first=True),
            "visual": FrameFolder("visual", nf, params.image_size, params.augment),
        }
        modalities = {m: ModalitySpec(tuple(f.shape()), "resnet18") for m, f in loaders.items()}
        info = {"dataset": "kinetics_sounds", "profile": params.profile, "num_frames": nf, "audio_dir": adir, "visual_dir": vdir}
        return assemble(splits, loaders, modalities, classes, params, issues, info)

    @staticmethod
    def _prepared(base: Path, params: KineticsSoundsParams, nf: int, issues: Issues) -> DataBundle:
        man, sha = prepared.read_manifest(base, "kinetics_sounds")
        splits = {k: v for k, v in prepared.read_samples(base, man).items() if k in ("train", "test")}
        loaders = {
            "audio": prepared.PreparedAudio(base, man),
            "visual": prepared.PreparedFrames(base, man, nf, params.image_size, params.augment),
        }
        modalities = {m: ModalitySpec(tuple(f.shape()), "resnet18") for m, f in loaders.items()}
        info = {
            "dataset": "kinetics_sounds",
            "profile": "prepared",
            "num_frames": nf,
            "manifest_sha256": sha,
            "prepare_params": man.get("params"),
            "prepare_skipped": man.get("skipped"),
        }
        return assemble(splits, loaders, modalities, list(man["class_names"]), params, issues, info)
