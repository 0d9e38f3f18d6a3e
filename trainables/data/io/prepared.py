"""Reader of mmbal's prepared layout (written by :mod:`trainables.data.io.prepare`, ``mmbal prepare``).

Version 2, one memory-mapped array per modality, whatever its name and shape:

```
OUT/manifest.json   format, version, dataset, the --profile it was prepared from, class names, params,
                    library versions, per modality: file, kind, dtype, shape, sha256 and how it is read;
                    samples.json sha256, skipped clips
OUT/samples.json    [{"id", "label", "split", "modalities": {name: {"row", "n", "at", "starts"}}}]
OUT/<modality>.npy  kind "feature": float16 [N, *shape], row i = sample i: the loader's own output
                    kind "frames":  uint8 [F, S, S, C], every sample's frames one after another
```

A ``feature`` is what the layout's loader returns (it has no randomness: audio spectrograms, fbanks),
stored as float16. ``frames`` are decoded images before any random pick, crop or flip, resized to
``S`` x ``S`` with the evaluation resize (or kept as decoded): sample ``i`` owns the rows ``row ..``;
``n`` is the number of frames its folder had and ``at`` (when only a subset was kept) their indices in
the folder. Reading applies the per-sample path's own pick and transform
(:mod:`trainables.data.io.frames`) to these rows, drawing the same random numbers in the same order:

* ``segments`` (frame folders): ``pick_frames(n, k, train)``; with a subset, each pick goes to the
  nearest kept frame;
* ``window`` (optical flow): ``flow_window(n, k, train)``; with a subset, the kept window whose start
  (``starts``) is nearest to the drawn one;
* ``single`` (one image per sample).

So, with every frame kept and frames stored as decoded (``--size 0``), a prepared sample equals the
per-sample path's bit for bit, in training too (same seed); stored at ``data.image_size``, evaluation
samples are equal and training crops are cut from the stored frame rather than the original image.

Version 1 folders (audio.npy ``[N, F, T]`` + frames.npy ``[N, K, S, S, 3]``, raw videos only) are read
through :func:`_from_v1`; their bytes mean the same, so re-decoding hours of video is not needed.

The manifest is written last (atomically): a folder without one is an unfinished prepare and is
refused. Runs record the manifest's sha256 in ``DataBundle.info``. :func:`bundle` is the
``data.profile: prepared`` of every dataset.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainables.data.io.assemble import RealDataParams, assemble
from trainables.data.io.base import DataBundle, ModalitySpec
from trainables.data.io.frames import ImageTransform, flow_window, pick_frames
from trainables.data.io.lists import Issues, Sample
from trainables.errors import DataError

log = logging.getLogger("mmbal.data")
FORMAT = "mmbal-prepared"
VERSION = 2


def read_manifest(root: Path, dataset: str) -> tuple[dict[str, Any], str]:
    """The manifest of a prepared folder (a version 1 one in version 2 terms) and its sha256.

    Raises:
        DataError: no manifest (unfinished prepare), another dataset, or an unknown format version.
    """
    path = Path(root) / "manifest.json"
    if not path.is_file():
        raise DataError(
            f"{path}: not found; {root} is not a finished `mmbal prepare {dataset}` output (rerun prepare to resume)"
        )
    raw = path.read_bytes()
    try:
        man = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if man.get("format") != FORMAT or man.get("version") not in (1, VERSION):
        raise DataError(
            f"{path}: format {man.get('format')!r} version {man.get('version')!r}; "
            f"this mmbal reads {FORMAT} v1 and v{VERSION}"
        )
    if man.get("dataset") != dataset:
        raise DataError(f"{path}: prepared for {man.get('dataset')!r}, not {dataset!r}")
    return (_from_v1(man) if man["version"] == 1 else man), hashlib.sha256(raw).hexdigest()


def _from_v1(man: dict[str, Any]) -> dict[str, Any]:
    """A v1 manifest as v2: audio ``[N, F, T]`` read as ``[1, F, T]``; frames ``[N, K, ...]`` as K rows per sample."""
    audio, visual = man["arrays"]["audio"], man["arrays"]["visual"]
    modalities = {
        "audio": {**audio, "kind": "feature", "v1_add_channel": True},
        # v1 did not record the default frame count; every dataset that wrote v1 read 1 unless it passed its own
        "visual": {
            **visual,
            "kind": "frames",
            "pick": "segments",
            "num_frames": 1,
            "channels": 3,
            "v1_rows": visual["shape"][1],
        },
    }
    return {**man, "modalities": modalities}


def read_samples(root: Path, man: dict[str, Any]) -> dict[str, list[Sample]]:
    """Samples per stored split, in stored order; ``files[modality]`` is the sample's entry for that array."""
    path = Path(root) / "samples.json"
    raw = path.read_bytes() if path.is_file() else b""
    if hashlib.sha256(raw).hexdigest() != man.get("samples_sha256"):
        raise DataError(f"{path}: missing or does not match the manifest checksum; rerun `mmbal prepare`")
    out: dict[str, list[Sample]] = {}
    for i, s in enumerate(json.loads(raw)):
        if man["version"] == 1:  # row i of audio, rows i*K .. of the flattened frames
            k = man["modalities"]["visual"]["v1_rows"]
            files = {"audio": {"row": i}, "visual": {"row": i * k, "n": int(s["frames"])}}
        else:
            files = s["modalities"]
        out.setdefault(s["split"], []).append(Sample(s["id"], int(s["label"]), f"{path}, entry {i}", files))
    return out


class _Array:
    """A lazily opened, read-only memory map (opened once per process, so DataLoader workers share pages)."""

    def __init__(self, path: Path, flatten: bool = False) -> None:
        self.path, self.flatten = path, flatten
        self._arr: np.ndarray | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "flatten": self.flatten, "_arr": None}

    def get(self) -> np.ndarray:
        if self._arr is None:
            arr = np.load(self.path, mmap_mode="r")
            self._arr = arr.reshape(-1, *arr.shape[2:]) if self.flatten else arr
        return self._arr


class PreparedFeature:
    """Loader: a sample's row of a ``feature`` array -> float32, the shape its layout's loader returns."""

    def __init__(self, root: Path, name: str, entry: dict[str, Any]) -> None:
        self.name, self.arr = name, _Array(Path(root) / entry["file"])
        self.channel = bool(entry.get("v1_add_channel"))
        self.item_shape = (1,) * self.channel + tuple(entry["shape"][1:])

    def shape(self) -> tuple[int, ...]:
        return self.item_shape

    def __call__(self, sample: Sample, train: bool) -> torch.Tensor:
        x = torch.from_numpy(np.asarray(self.arr.get()[sample.files[self.name]["row"]], dtype=np.float32))
        return x[None] if self.channel else x


def nearest(kept: list[int], index: int) -> int:
    """Position in the sorted ``kept`` of the value nearest to ``index`` (the lower one on a tie)."""
    i = bisect.bisect_left(kept, index)
    if i == len(kept) or (i > 0 and index - kept[i - 1] <= kept[i] - index):
        return i - 1
    return i


class PreparedFrames:
    """Loader: frames of a ``frames`` array, picked and transformed as the per-sample path does (module doc)."""

    def __init__(self, root: Path, name: str, entry: dict[str, Any], num_frames: int, size: int, augment: bool) -> None:
        self.name, self.pick, self.channels = name, entry["pick"], int(entry["channels"])
        self.arr = _Array(Path(root) / entry["file"], flatten="v1_rows" in entry)
        self.k = 1 if self.pick == "single" else num_frames
        self.size, self.augment = size, augment

    def shape(self) -> tuple[int, ...]:
        one = (self.channels, self.size, self.size)
        return one if self.pick == "single" else (self.k, *one)

    def rows(self, meta: dict[str, Any], train: bool) -> list[int]:
        """Offsets, within the sample's rows, of the frames to read (draws what the per-sample path draws)."""
        n, kept = int(meta["n"]), meta.get("at")
        if self.pick == "single":
            return [0]
        if self.pick == "segments":
            picks = pick_frames(n, self.k, train)
            return picks if kept is None else [nearest(kept, p) for p in picks]
        picks = flow_window(n, self.k, train)
        if "starts" in meta:  # move the whole window to the kept window nearest to the draw
            start = meta["starts"][nearest(meta["starts"], picks[0])]
            picks = [min(start + i, n - 1) for i in range(self.k)]
        return picks if kept is None else [kept.index(p) for p in picks]

    def __call__(self, sample: Sample, train: bool) -> torch.Tensor:
        meta = sample.files[self.name]
        rows = [int(meta["row"]) + r for r in self.rows(meta, train)]
        x = torch.from_numpy(np.ascontiguousarray(self.arr.get()[rows])).permute(0, 3, 1, 2)  # uint8 [T, C, S, S]
        x = ImageTransform(self.size, train, self.augment)(x)
        return x[0] if self.pick == "single" else x


def _check_windows(root: Path, name: str, entry: dict[str, Any], k: int, samples: Iterable[Sample]) -> None:
    """Kept windows have the prepared length: another ``k`` cannot be read from them."""
    if entry["pick"] == "window" and k != entry["num_frames"] and any("starts" in s.files[name] for s in samples):
        raise DataError(
            f"{root}: {name} keeps only some windows of {entry['num_frames']} frames (--max-frames); {k} frames "
            "per sample need `mmbal prepare` again with windows of that length, or with --max-frames 0"
        )


def _warn_resize(root: Path, stored: dict[str, list[int]], image_size: int, prepared_size: int | None) -> None:
    """Frames resized at prepare time and again to another ``image_size``: say so (evaluation samples
    then differ from the per-sample path's by the second resampling)."""
    if not prepared_size:  # stored as decoded: the same resize as the per-sample path
        return
    for m, hw in stored.items():
        if list(hw) != [image_size, image_size]:
            log.warning(
                "%s: %s frames are stored at %s x %s and resized again to data.image_size %s; "
                "`mmbal prepare --size %s` stores them at that size (evaluation samples then equal the layout's)",
                root,
                m,
                hw[0],
                hw[1],
                image_size,
                image_size,
            )


def open_loaders(
    root: Path, man: dict[str, Any], frames: dict[str, int | None], size: int, augment: bool
) -> dict[str, Any]:
    """One loader per stored modality, in stored order; ``frames[m]`` overrides the stored frames per sample."""
    loaders: dict[str, Any] = {}
    for name, entry in man["modalities"].items():
        if not (Path(root) / entry["file"]).is_file():
            raise DataError(f"{Path(root) / entry['file']}: not found; rerun `mmbal prepare`")
        if entry["kind"] == "feature":
            loaders[name] = PreparedFeature(root, name, entry)
        else:
            k = frames.get(name) or int(entry["num_frames"])
            loaders[name] = PreparedFrames(root, name, entry, k, size, augment)
    return loaders


def bundle(
    root: Path,
    dataset: str,
    params: RealDataParams,
    frames: dict[str, int | None] | None = None,
    splits: tuple[str, ...] = ("train", "test"),
    issues: Issues | None = None,
) -> DataBundle:
    """The splits of a prepared folder; the validation split is carved from train as usual unless
    ``splits`` names a stored ``val`` (AVE's official list).

    Args:
        frames: frames per sample of each frame modality (``None``: the stored default, the layout's).
        splits: the stored splits to use.

    Raises:
        DataError: an unfinished or foreign folder (see :func:`read_manifest`), a checksum mismatch, a
            missing split or array, or windows that cannot give the asked frames.
    """
    man, sha = read_manifest(root, dataset)
    stored = read_samples(root, man)
    for split in splits:
        if split not in stored:
            have = ", ".join(stored)
            raise DataError(f"{root}: holds no {split} split (stored: {have}); prepare it from a layout that has one")
    loaders = open_loaders(root, man, frames or {}, params.image_size, params.augment)
    for name, f in loaders.items():
        if isinstance(f, PreparedFrames):
            _check_windows(root, name, man["modalities"][name], f.k, (s for split in splits for s in stored[split]))
    frame_hw = {m: man["modalities"][m]["shape"][-3:-1] for m, f in loaders.items() if isinstance(f, PreparedFrames)}
    _warn_resize(root, frame_hw, params.image_size, (man.get("params") or {}).get("size"))
    modalities = {m: ModalitySpec(tuple(f.shape()), "resnet18") for m, f in loaders.items()}
    info = {
        "dataset": dataset,
        "profile": "prepared",
        "prepared_from": man.get("profile", "raw"),
        "num_frames": {m: f.k for m, f in loaders.items() if isinstance(f, PreparedFrames)},
        "stored_frame_size": frame_hw,
        "manifest_sha256": sha,
        "prepare_params": man.get("params"),
        "prepare_skipped": man.get("skipped"),
    }
    issues = issues or Issues(params.on_error)
    return assemble({s: stored[s] for s in splits}, loaders, modalities, list(man["class_names"]), params, issues, info)
