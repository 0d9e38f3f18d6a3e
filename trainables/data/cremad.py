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
    the output of ``mmbal prepare cremad`` from any of these layouts (``--profile ogm_ge``, ``mla``,
    ``pmr``, ``dimml``: the profile's own loaders, see :mod:`trainables.data.io.recipes`) or from the
    raw download (see :mod:`trainables.data.io.prepared`).

Raw recipe (:class:`CremaDRecipe`, ``mmbal prepare cremad``, the default ``--profile raw``):
``RAW/AudioWAV/<clip>.wav`` and ``RAW/VideoFlash/<clip>.flv``; the label is the third ``_`` field of
the clip name. Audio: OGM-GE's log-STFT (:func:`trainables.data.io.audio.ogm_spectrogram`),
``[257, 188]``. Split: OGM-GE's ``train.csv`` / ``test.csv`` when found in ``--lists`` (default RAW),
else a seeded stratified one.

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

import numpy as np

from trainables.data.io.assemble import RealDataParams
from trainables.data.io.audio import FeatureFile, WavSpectrogram, ogm_spectrogram, read_wav
from trainables.data.io.base import holdout, register_dataset, stratified_split
from trainables.data.io.frames import FrameFolder
from trainables.data.io.layout import LayoutDataset, Lists
from trainables.data.io.lists import Issues, Loader, Row, Sample, SampleError, SplitRows, collect, read_rows, safe_path
from trainables.data.io.recipes import RawClip, VideoParams, VideoRecipe
from trainables.errors import ConfigError, DataError
from trainables.params import knob

CLASSES = ["NEU", "HAP", "SAD", "FEA", "DIS", "ANG"]
PROFILES = {  # list files, row separator, audio folder, frame folder, reference frame count
    "ogm_ge": ("{split}.csv", ",", "AudioWAV", "Image-01-FPS", 1),
    "mla": ("my_{split}_cre.txt", None, "audio/{split}_fbank", "visual/{split}_imgs/Image-01-FPS", 3),
    "pmr": ("{split}.csv", ",", "Audio-1004", "Image-01-FPS", 3),
}
PROFILES["dimml"] = PROFILES["pmr"]  # the same layout under its other name


def _check_stft(p: CremaDParams | CremaDPrepareParams) -> None:
    if p.audio_seconds <= 0 or p.audio_rate < 1000 or p.n_fft < 8 or not 0 < p.hop <= p.n_fft:
        raise ConfigError("hop", "audio params: audio_seconds > 0, audio_rate >= 1000, n_fft >= 8, 0 < hop <= n_fft")


@dataclass(frozen=True)
class CremaDParams(RealDataParams):
    profile: Literal["ogm_ge", "mla", "pmr", "dimml", "prepared"] = knob(
        "ogm_ge", "reference layout of data_root (see the module doc)"
    )
    audio_dir: str | None = knob(None, "audio folder under data_root; None = the profile's")
    visual_dir: str | None = knob(None, "frame folder under data_root; None = the profile's")
    audio_seconds: float = knob(3.0, "ogm_ge: clip length after tiling, seconds", gt=0)
    audio_rate: int = knob(22050, "ogm_ge: resampling rate, Hz", ge=1)
    n_fft: int = knob(512, "ogm_ge: STFT size", ge=2)
    hop: int = knob(353, "ogm_ge: STFT hop", ge=1)
    stft_pad: Literal["constant", "reflect"] = knob(
        "constant", "ogm_ge: STFT end padding (librosa >= 0.10: constant; < 0.10: reflect)"
    )
    audio_frames: int | None = knob(
        None, "mla/pmr: time frames after padding/cutting; None = 1024 (mla) / 1004 (pmr)", ge=1
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_stft(self)


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


@dataclass(frozen=True)
class CremaDPrepareParams(VideoParams):
    """``mmbal prepare cremad``: what decides the stored bytes besides the frames."""

    audio_rate: int = knob(22050, "log-STFT: resampling rate, Hz", ge=1)
    audio_seconds: float = knob(3.0, "log-STFT: clip length after tiling, seconds", gt=0)
    n_fft: int = knob(512, "log-STFT: STFT size", ge=2)
    hop: int = knob(353, "log-STFT: STFT hop", ge=1)
    test_fraction: float = knob(0.1, "without OGM-GE's lists: test share of each class", gt=0, lt=1)
    split_seed: int = knob(0, "without OGM-GE's lists: seed of that split", ge=0)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_stft(self)


class CremaDRecipe(VideoRecipe):
    """Raw CREMA-D (WAV + FLV) -> OGM-GE's log-STFT and 1-fps frames."""

    Params = CremaDPrepareParams
    class_names = CLASSES
    num_frames = 1  # as the ogm_ge profile
    raw_layout = "AudioWAV/*.wav + VideoFlash/*.flv"
    lists_layout = "OGM-GE's train.csv/test.csv, optional"

    def clips(self, raw: Path, lists: Path, p: CremaDPrepareParams) -> tuple[list[RawClip], str]:
        wavs = sorted((raw / "AudioWAV").glob("*.wav"))
        if not wavs:
            raise DataError(f"{raw / 'AudioWAV'}: no .wav files (expected the raw CREMA-D download)")
        labels = {}
        for w in wavs:
            parts = w.stem.split("_")
            if len(parts) < 3 or parts[2] not in CLASSES:
                raise DataError(
                    f"{w}: cannot read the emotion from the file name (expected ActorID_Sentence_EMOTION_Level)"
                )
            labels[w.stem] = CLASSES.index(parts[2])
        if (lists / "train.csv").is_file() and (lists / "test.csv").is_file():
            split = {}
            for name in ("train", "test"):
                for row in read_rows(lists / f"{name}.csv", SplitRows(","), 2):
                    if isinstance(row, SampleError):
                        raise DataError(str(row))
                    split[row.fields[0]] = name
            source = f"{lists}/train.csv, test.csv"
        else:
            ids = sorted(labels)
            sizes = {"test": holdout(p.test_fraction), "train": -1}
            rows = stratified_split(np.array([labels[i] for i in ids]), sizes, p.split_seed)
            split = {ids[i]: name for name, picked in rows.items() for i in picked}
            source = f"stratified, test_fraction {p.test_fraction}, seed {p.split_seed}"
        files = {
            s: {"wav": str(raw / "AudioWAV" / f"{s}.wav"), "video": str(raw / "VideoFlash" / f"{s}.flv")}
            for s in labels
        }
        return [RawClip(s, labels[s], split[s], f"clip {s}", files[s]) for s in sorted(labels) if s in split], source

    def audio_shape(self, p: CremaDPrepareParams) -> tuple[int, int]:
        return WavSpectrogram(p.audio_rate, p.audio_seconds, p.n_fft, p.hop).shape()[1:]

    def audio(self, clip: RawClip, p: CremaDPrepareParams) -> np.ndarray:
        x, rate = read_wav(Path(clip.files["wav"]), clip.where)
        if len(x) == 0:
            raise SampleError("corrupt", f"{clip.where}: {clip.files['wav']} holds no samples")
        return ogm_spectrogram(x, rate, p.audio_rate, p.audio_seconds, p.n_fft, p.hop).numpy()


@register_dataset("cremad")
class CremaD(LayoutDataset):
    Params = CremaDParams
    recipe = CremaDRecipe()

    def read_lists(self, params: CremaDParams, root: Path, issues: Issues) -> Lists:
        list_tmpl, sep, adir, vdir, _ = PROFILES[params.profile]
        adir, vdir = params.audio_dir or adir, params.visual_dir or vdir
        splits = {}
        for split in ("train", "test"):
            rows = read_rows(root / list_tmpl.format(split=split), SplitRows(sep), 2)
            splits[split] = collect(rows, _resolver(root, params.profile, split, adir, vdir), issues, split)
        return Lists(splits, list(CLASSES), {"audio_dir": adir, "visual_dir": vdir, "num_frames": self._frames(params)})

    @staticmethod
    def _frames(params: CremaDParams) -> int:
        return params.num_frames or PROFILES[params.profile][4]

    def loaders(self, params: CremaDParams) -> dict[str, Loader]:
        audio: Loader
        if params.profile == "ogm_ge":
            audio = WavSpectrogram(params.audio_rate, params.audio_seconds, params.n_fft, params.hop, params.stft_pad)
        else:
            frames = params.audio_frames or (1024 if params.profile == "mla" else 1004)
            audio = FeatureFile(128 if params.profile == "mla" else 257, frames, time_first=params.profile == "mla")
        return {
            "audio": audio,
            "visual": FrameFolder("visual", self._frames(params), params.image_size, params.augment),
        }

    def prepared_frames(self, params: CremaDParams) -> dict[str, int | None]:
        return {
            "visual": params.num_frames
        }  # None: the stored default, i.e. the reference of the profile prepared from
