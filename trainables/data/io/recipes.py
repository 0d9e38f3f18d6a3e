"""What ``mmbal prepare DATASET --profile P`` runs: a dataset's prepare recipes and their params.

A recipe says which clips a folder holds (their ids, labels and official splits), which modalities
are stored and how (:mod:`trainables.data.io.prepared`), and how one clip is decoded; the runner
(:mod:`trainables.data.io.prepare`) does the rest. Two kinds:

* :class:`VideoRecipe`, ``--profile raw``: the raw download (videos, WAVs), decoded with PyAV. A
  dataset that has one sets ``DatasetSpec.recipe`` in its own file (CREMA-D, Kinetics-Sounds).
* :class:`LayoutRecipe`, ``--profile <a data.profile name>``: a layout the training loaders read.
  Every :class:`~trainables.data.io.layout.LayoutDataset` gets one per profile with no code of its
  own: the clips are its list files as training reads them, and each modality is stored by its
  training loader (``store``: features as the loader returns them, frames decoded before any random
  pick, crop or flip), so a prepared sample is the sample the loader would have produced.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from trainables.data.io.lists import Issues, Sample
from trainables.data.io.video import decode_frames
from trainables.errors import ConfigError
from trainables.params import build_params, check_bounds, knob

Stored = dict[str, tuple[np.ndarray, dict[str, Any]]]  # modality -> (array, its samples.json entry)

# data.* keys that only act when training (the prepared reader applies them), with the prepare option
# that decides the stored bytes instead, if any
TRAINING_ONLY = {
    "profile": "--profile",
    "on_error": "--on-error",
    "image_size": "--size",
    "augment": None,
    "val_fraction": None,
    "val_seed": None,
}


@dataclass(frozen=True)
class PrepareParams:
    """Knobs of every recipe; a recipe's ``Params`` subclass adds its own. All of them are recorded in
    the manifest, and a rerun must match them. ``mmbal prepare`` offers each as ``--field-name``."""

    size: int = knob(
        224, "side of the stored square frames (layouts: 0 stores them as decoded, if all share one size)", ge=0
    )
    on_error: Literal["raise", "skip"] = knob("raise", "a bad clip stops, or is skipped and recorded")

    def __post_init__(self) -> None:
        check_bounds(self)  # also when built in code rather than from the command line


@dataclass(frozen=True)
class VideoParams(PrepareParams):
    """Knobs of the raw-video recipes."""

    size: int = knob(224, "side of the stored square frames", ge=16)
    frames: int = knob(3, "frames stored per clip, 1 per second", ge=1)
    fps: float = knob(1.0, "frames decoded per second of video", gt=0)


@dataclass(frozen=True)
class LayoutParams(PrepareParams):
    """Knobs of the layout recipes; the dataset's own ``data.*`` knobs come with ``--set data.KEY=VALUE``."""

    max_frames: int = knob(
        32,
        "frame folders with more frames keep this many (segment centres, evaluation picks; flow: windows); 0: all",
        ge=0,
    )
    data: dict = knob({}, "the dataset's data.* knobs that decide the stored samples (--set data.KEY=VALUE)")


@dataclass(frozen=True)
class RawClip:
    """One clip to prepare: its id, class index, official split, files by role, and where it was
    found (for error messages)."""

    id: str
    label: int
    split: str
    where: str
    files: dict[str, Any]


@dataclass
class Plan:
    """What a folder holds: the clips in stored order, where their split came from, the class names,
    and notes recorded in the manifest (e.g. list rows skipped)."""

    clips: list[RawClip]
    split_source: str
    class_names: list[str]
    notes: dict[str, Any] = field(default_factory=dict)


class PrepareRecipe:
    """A way to prepare one dataset from one kind of folder (see the module docstring).

    Attributes:
        Params: frozen dataclass, a subclass of :class:`PrepareParams`.
        profile: the ``--profile`` it answers to.
        raw_layout / lists_layout: what ``--raw`` / ``--lists`` hold, for the command's help.
        decoder: what decodes the files, recorded in the manifest.
    """

    Params: ClassVar[type[PrepareParams]] = PrepareParams
    profile: str = "raw"
    raw_layout: str = ""
    lists_layout: str = ""
    decoder: str = ""

    def make_params(self, flags: dict[str, Any], data: dict[str, Any]) -> PrepareParams:
        """Params from the command's options (``flags``) and ``--set data.*`` values (``data``).

        Raises:
            ConfigError: a value is not allowed, or ``data`` is given to a recipe that takes none.
        """
        if data:
            raise ConfigError(
                "--set", f"--profile {self.profile} takes no data.* values (they are for the layout profiles)"
            )
        return build_params(self.Params, flags)

    def plan(self, raw: Path, lists: Path, p: Any) -> Plan:  # pragma: no cover - abstract
        """The clips of a folder (raises ``DataError`` when the folder or a list is unusable)."""
        raise NotImplementedError

    def modalities(self, p: Any) -> dict[str, dict[str, Any]]:  # pragma: no cover - abstract
        """Per modality, in model order: ``{"kind": "feature", "shape"}`` or ``{"kind": "frames", "pick",
        "num_frames", "channels"}`` (see :mod:`trainables.data.io.prepared`)."""
        raise NotImplementedError

    def decode(self, clip: RawClip, p: Any) -> Stored:  # pragma: no cover - abstract
        """What is stored for one clip (raises :class:`~trainables.data.io.lists.SampleError`)."""
        raise NotImplementedError


class VideoRecipe(PrepareRecipe):
    """A raw download of videos: ``audio`` (a feature ``[1, F, T]``) and ``visual`` (frames at ``fps``).

    Attributes:
        class_names: one name per class index.
        num_frames: frames a training sample takes by default (the dataset's reference value).
    """

    Params: ClassVar[type[PrepareParams]] = VideoParams
    class_names: ClassVar[list[str]] = []
    num_frames: ClassVar[int] = 1
    decoder = "PyAV (FFmpeg)"

    def clips(self, raw: Path, lists: Path, p: Any) -> tuple[list[RawClip], str]:  # pragma: no cover - abstract
        """The clips of a raw folder, in stored order, and where their split came from."""
        raise NotImplementedError

    def audio_shape(self, p: Any) -> tuple[int, int]:  # pragma: no cover - abstract
        """``[F, T]`` of the stored audio feature."""
        raise NotImplementedError

    def audio(self, clip: RawClip, p: Any) -> np.ndarray:  # pragma: no cover - abstract
        """The ``[F, T]`` audio feature of one clip (raises ``SampleError``)."""
        raise NotImplementedError

    def frames(self, clip: RawClip, p: Any) -> np.ndarray:
        """Up to ``p.frames`` uint8 frames ``[n, size, size, 3]`` of ``clip.files["video"]``."""
        return decode_frames(Path(clip.files["video"]), p.frames, p.fps, p.size, clip.where)

    def plan(self, raw: Path, lists: Path, p: Any) -> Plan:
        clips, source = self.clips(raw, lists, p)
        return Plan(clips, source, list(self.class_names))

    def modalities(self, p: Any) -> dict[str, dict[str, Any]]:
        return {
            "audio": {"kind": "feature", "shape": [1, *self.audio_shape(p)]},
            "visual": {"kind": "frames", "pick": "segments", "num_frames": self.num_frames, "channels": 3},
        }

    def decode(self, clip: RawClip, p: Any) -> Stored:
        frames = self.frames(clip, p)
        return {"audio": (self.audio(clip, p)[None].astype(np.float16), {}), "visual": (frames, {"n": len(frames)})}


class LayoutRecipe(PrepareRecipe):
    """``--profile <profile>`` of a :class:`~trainables.data.io.layout.LayoutDataset`: its lists and loaders."""

    Params = LayoutParams
    decoder = "the data.profile's own training loaders (PIL, torchaudio, numpy)"
    lists_layout = "the layout's own lists, under --raw"

    def __init__(self, spec: type, profile: str) -> None:
        self.spec, self.profile = spec, profile
        self.raw_layout = f"a data_root of data.profile={profile}"
        self._loaders: tuple[str, dict[str, Any]] | None = None

    def data_params(self, data: dict[str, Any], on_error: str) -> Any:
        """The dataset's params for this layout (``data`` as recorded or given with ``--set data.*``)."""
        return build_params(self.spec.Params, {**data, "profile": self.profile, "on_error": on_error}, prefix="data.")

    def make_params(self, flags: dict[str, Any], data: dict[str, Any]) -> PrepareParams:
        for key in data:
            if key in TRAINING_ONLY:
                instead = f"; use {TRAINING_ONLY[key]}" if TRAINING_ONLY[key] else ""
                raise ConfigError(f"data.{key}", f"acts when training, not on what prepare stores{instead}")
        given = build_params(self.Params, flags)  # checks the flags before the data values
        full = dataclasses.asdict(self.data_params(data, given.on_error))
        recorded = {k: v for k, v in full.items() if k not in TRAINING_ONLY}  # every default, so a rerun compares all
        return dataclasses.replace(given, data=recorded)

    def plan(self, raw: Path, lists: Path, p: LayoutParams) -> Plan:
        if Path(lists) != Path(raw):
            raise ConfigError(
                "--lists", f"--profile {self.profile} reads the lists of its layout under --raw; drop --lists"
            )
        issues = Issues(p.on_error)
        found = self.spec().read_lists(self.data_params(p.data, p.on_error), Path(raw), issues)
        clips = [
            RawClip(s.id, s.label, split, s.where, s.files) for split, items in found.splits.items() for s in items
        ]
        notes = {"list_rows": issues.info(), "layout": found.info}
        return Plan(clips, f"the lists of the {self.profile} layout under {raw}", found.class_names, notes)

    def loaders(self, p: LayoutParams) -> dict[str, Any]:
        """The layout's training loaders (built once per process and params)."""
        key = json.dumps(dataclasses.asdict(p), sort_keys=True, default=str)
        if self._loaders is None or self._loaders[0] != key:
            self._loaders = (key, self.spec().loaders(self.data_params(p.data, p.on_error)))
        return self._loaders[1]

    def modalities(self, p: LayoutParams) -> dict[str, dict[str, Any]]:
        return {m: f.prepare_spec() for m, f in self.loaders(p).items()}

    def decode(self, clip: RawClip, p: LayoutParams) -> Stored:
        sample = Sample(clip.id, clip.label, clip.where, clip.files)
        return {m: f.store(sample, p.size, p.max_frames) for m, f in self.loaders(p).items()}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_loaders": None}
