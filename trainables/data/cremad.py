"""CREMA-D (6 emotions, audio + visual) in the layouts of the reference repos, chosen by ``data.profile``.

Labels (all profiles, as the references): NEU HAP SAD FEA DIS ANG -> 0..5.

``ogm_ge`` (default; OGM-GE, CVPR 2022)
    ``train.csv`` / ``test.csv`` rows ``clip,LABEL`` (a UTF-8 BOM is accepted); audio
    ``AudioWAV/<clip>.wav`` (16 kHz) turned into OGM-GE's log-STFT (22,050 Hz, tiled to 3 s,
    n_fft 512, hop 353 -> 257 x 188); frames ``Image-01-FPS/<clip>/*.jpg``, 1 frame.
``mla`` (MLA, CVPR 2024)
    ``my_train_cre.txt`` / ``my_test_cre.txt`` rows ``<clip>.flv <label>`` (index 0-5 or code); Kaldi fbank ``.npy``
    ``audio/{split}_fbank/<clip>.npy`` stored ``[1024, 128]`` (time first, fed as ``[1, 128, 1024]``);
    frames ``visual/{split}_imgs/Image-01-FPS/<clip>/``, 3 frames.
``pmr`` or ``dimml`` (PMR / DI-MML)
    OGM-GE's csv; pickled spectrograms ``[257, 1004]`` at ``Audio-1004/<clip>.pkl`` (numpy arrays
    only are unpickled); frames as ``ogm_ge``; 3 frames. (DI-MML draws its frames with a fixed
    ``np.random.seed(999)``, i.e. the same frames every epoch; we pick as for the other profiles.)
``prepared``
    the output of ``mmbal prepare cremad`` (see :mod:`trainables.data.io.prepared`).

Where the references differ from us: they silently drop listed clips whose files are missing (we
raise, or skip and count with ``on_error: skip``); OGM-GE loads the first frames in directory order
(we pick one frame per segment of the sorted list, see :mod:`trainables.data.io.frames`); they select models on the test
set (we carve a validation split from train). ``audio_dir`` / ``visual_dir`` override the folders
(``{split}`` is replaced by ``train`` or ``test``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from trainables.data.io import prepared
from trainables.data.io.assemble import RealDataParams, assemble
from trainables.data.io.audio import FeatureFile, WavSpectrogram
from trainables.data.io.base import DataBundle, DatasetSpec, ModalitySpec, register_dataset
from trainables.data.io.frames import FrameFolder
from trainables.data.io.lists import Issues, Row, Sample, SampleError, collect, read_rows, safe_path
from trainables.errors import ConfigError
from trainables.params import knob

CLASSES = ["NEU", "HAP", "SAD", "FEA", "DIS", "ANG"]
PROFILES = {  # list files, row separator, audio folder, frame folder, reference frame count
    "ogm_ge": ("{split}.csv", ",", "AudioWAV", "Image-01-FPS", 1),
    "mla": ("my_{split}_cre.txt", None, "audio/{split}_fbank", "visual/{split}_imgs/Image-01-FPS", 3),
    "pmr": ("{split}.csv", ",", "Audio-1004", "Image-01-FPS", 3),
}
PROFILES["dimml"] = PROFILES["pmr"]  # the same layout under its other name


@dataclass(frozen=True)
class CremaDParams(RealDataParams):
    profile: Literal["ogm_ge", "mla", "pmr", "dimml", "prepared"] = knob(
        "ogm_ge", "reference layout of data_root (see the module doc)"
    )
    audio_dir: str | None = knob(None, "audio folder under data_root; None = the profile's")
    visual_dir: str | None = knob(None, "frame folder under data_root; None = the profile's")
    audio_seconds: float = knob(3.0, "ogm_ge: clip length after tiling, seconds")
    audio_rate: int = knob(22050, "ogm_ge: resampling rate, Hz")
    n_fft: int = knob(512, "ogm_ge: STFT size")
    hop: int = knob(353, "ogm_ge: STFT hop")
    stft_pad: Literal["constant", "reflect"] = knob(
        "constant", "ogm_ge: STFT end padding (librosa >= 0.10: constant; < 0.10: reflect)"
    )
    audio_frames: int | None = knob(None, "mla/pmr: time frames after padding/cutting; None = 1024 (mla) / 1004 (pmr)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.audio_seconds <= 0 or self.audio_rate < 1000 or self.n_fft < 8 or not 0 < self.hop <= self.n_fft:
            raise ConfigError("hop", "audio params: audio_seconds > 0, audio_rate >= 1000, n_fft >= 8, 0 < hop <= n_fft")


def _resolver(root: Path, profile: str, split: str, audio_dir: str, visual_dir: str) -> Callable[[Row], Sample]:
    ext = {"ogm_ge": ".wav", "mla": ".npy"}.get(profile, ".pkl")

    def resolve(row: Row) -> Sample:
        clip, label = row.fields[0], row.fields[1]
        if profile == "mla":
            clip = clip.removesuffix(".flv")
        if label.isdigit() and int(label) < len(CLASSES):  # MLA's lists give the index, OGM-GE's the code
            label = CLASSES[int(label)]
        if label not in CLASSES:
            raise SampleError("label", f"{row.where}: label {label!r} is not one of {' '.join(CLASSES)} (or 0-5)")
        files = {
            "audio": safe_path(root, audio_dir.format(split=split), clip + ext, where=row.where),
            "visual": safe_path(root, visual_dir.format(split=split), clip, where=row.where),
        }
        for key, p in files.items():
            if not (p.is_dir() if key == "visual" else p.is_file()):
                raise SampleError("missing", f"{row.where}: {'folder' if key == 'visual' else 'file'} {p} not found")
        return Sample(clip, CLASSES.index(label), row.where, files)

    return resolve


@register_dataset("cremad")
class CremaD(DatasetSpec):
    Params = CremaDParams
    needs_root = True

    def build(self, params: CremaDParams, root: str | None, seed: int) -> DataBundle:
        base = Path(root or ".")
        issues = Issues(params.on_error)
        size, aug = params.image_size, params.augment
        if params.profile == "prepared":
            man, sha = prepared.read_manifest(base, "cremad")
            splits = prepared.read_samples(base, man)
            nf = params.num_frames or 1
            loaders = {"audio": prepared.PreparedAudio(base, man), "visual": prepared.PreparedFrames(base, man, nf, size, aug)}
            info = {
                "dataset": "cremad",
                "profile": "prepared",
                "manifest_sha256": sha,
                "num_frames": nf,
                "prepare_params": man.get("params"),
                "prepare_skipped": man.get("skipped"),
            }
            return self._bundle({k: v for k, v in splits.items() if k in ("train", "test")}, loaders, params, issues, info)
        list_tmpl, sep, adir, vdir, ref_frames = PROFILES[params.profile]
        adir, vdir = params.audio_dir or adir, params.visual_dir or vdir
        nf = params.num_frames or ref_frames
        splitter = (lambda s: s.split(sep)) if sep else (lambda s: s.split())
        splits = {}
        for split in ("train", "test"):
            rows = read_rows(base / list_tmpl.format(split=split), splitter, 2)
            splits[split] = collect(rows, _resolver(base, params.profile, split, adir, vdir), issues, split)
        if params.profile == "ogm_ge":
            audio = WavSpectrogram(params.audio_rate, params.audio_seconds, params.n_fft, params.hop, params.stft_pad)
        else:
            frames = params.audio_frames or (1024 if params.profile == "mla" else 1004)
            audio = FeatureFile(128 if params.profile == "mla" else 257, frames, time_first=params.profile == "mla")
        loaders = {"audio": audio, "visual": FrameFolder("visual", nf, size, aug)}
        info = {"dataset": "cremad", "profile": params.profile, "audio_dir": adir, "visual_dir": vdir, "num_frames": nf}
        return self._bundle(splits, loaders, params, issues, info)

    @staticmethod
    def _bundle(splits: dict, loaders: dict, params: CremaDParams, issues: Issues, info: dict) -> DataBundle:
        modalities = {m: ModalitySpec(tuple(f.shape()), "resnet18") for m, f in loaders.items()}
        return assemble(splits, loaders, modalities, list(CLASSES), params, issues, info)
