"""Reader of mmbal's prepared layout (written by :mod:`trainables.data.io.prepare`, ``mmbal prepare``).

```
OUT/manifest.json   format, version, dataset, class names, preparation params, library versions,
                    array shapes/dtypes/sha256, samples.json sha256, skipped raw files
OUT/samples.json    [{"id", "label", "split", "frames"}], row i of every array is sample i
OUT/audio.npy       float16 [N, F, T] audio features (memory-mapped)
OUT/frames.npy      uint8   [N, K, S, S, 3] decoded frames, the first ``frames`` of K are valid
```

The manifest is written last (atomically): a folder without one is an unfinished prepare and is
refused. Runs record the manifest's sha256 in ``DataBundle.info``. :func:`bundle` is the
``data.profile: prepared`` of every dataset with a prepare recipe.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainables.data.io.assemble import RealDataParams, assemble
from trainables.data.io.base import DataBundle, ModalitySpec
from trainables.data.io.frames import ImageTransform, pick_frames
from trainables.data.io.lists import Issues, Sample
from trainables.errors import DataError

FORMAT = "mmbal-prepared"
VERSION = 1


def read_manifest(root: Path, dataset: str) -> tuple[dict[str, Any], str]:
    """The manifest of a prepared folder and its sha256.

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
    if man.get("format") != FORMAT or man.get("version") != VERSION:
        raise DataError(
            f"{path}: format {man.get('format')!r} version {man.get('version')!r}; this mmbal reads {FORMAT} v{VERSION}"
        )
    if man.get("dataset") != dataset:
        raise DataError(f"{path}: prepared for {man.get('dataset')!r}, not {dataset!r}")
    return man, hashlib.sha256(raw).hexdigest()


def read_samples(root: Path, man: dict[str, Any]) -> dict[str, list[Sample]]:
    """Samples per official split; ``files["row"]`` is the sample's row in the arrays."""
    path = Path(root) / "samples.json"
    raw = path.read_bytes() if path.is_file() else b""
    if hashlib.sha256(raw).hexdigest() != man.get("samples_sha256"):
        raise DataError(f"{path}: missing or does not match the manifest checksum; rerun `mmbal prepare`")
    out: dict[str, list[Sample]] = {}
    for row, s in enumerate(json.loads(raw)):
        out.setdefault(s["split"], []).append(
            Sample(s["id"], int(s["label"]), f"{path}, entry {row}", {"row": row, "frames": int(s["frames"])})
        )
    return out


class _Array:
    """A lazily opened, read-only memory map (opened once per process, so DataLoader workers share pages)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._arr: np.ndarray | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "_arr": None}

    def get(self) -> np.ndarray:
        if self._arr is None:
            if not self.path.is_file():
                raise DataError(f"{self.path}: not found; rerun `mmbal prepare`")
            self._arr = np.load(self.path, mmap_mode="r")
        return self._arr


class PreparedAudio:
    """Loader: row of ``audio.npy`` -> float32 ``[1, F, T]``."""

    def __init__(self, root: Path, man: dict[str, Any]) -> None:
        self.arr = _Array(Path(root) / man["arrays"]["audio"]["file"])
        self.feature_shape = tuple(man["arrays"]["audio"]["shape"][1:])

    def shape(self) -> tuple[int, ...]:
        return (1, *self.feature_shape)

    def __call__(self, sample: Sample, train: bool) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.arr.get()[sample.files["row"]], dtype=np.float32))[None]


class PreparedFrames:
    """Loader: ``num_frames`` picked among a row's valid frames of ``frames.npy`` -> ``[T, 3, size, size]``."""

    def __init__(self, root: Path, man: dict[str, Any], num_frames: int, size: int, augment: bool) -> None:
        self.arr = _Array(Path(root) / man["arrays"]["visual"]["file"])
        self.num_frames, self.size, self.augment = num_frames, size, augment

    def shape(self) -> tuple[int, ...]:
        return (self.num_frames, 3, self.size, self.size)

    def __call__(self, sample: Sample, train: bool) -> torch.Tensor:
        picks = pick_frames(sample.files["frames"], self.num_frames, train)
        x = torch.from_numpy(np.ascontiguousarray(self.arr.get()[sample.files["row"], picks]))  # [T, S, S, 3] uint8
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        return ImageTransform(self.size, train, self.augment)(x)


def bundle(root: Path, dataset: str, params: RealDataParams, num_frames: int, issues: Issues) -> DataBundle:
    """The splits of a prepared folder: official train/test, validation carved from train as usual.

    Raises:
        DataError: an unfinished or foreign folder (see :func:`read_manifest`), or a checksum mismatch.
    """
    man, sha = read_manifest(root, dataset)
    splits = {k: v for k, v in read_samples(root, man).items() if k in ("train", "test")}
    loaders = {
        "audio": PreparedAudio(root, man),
        "visual": PreparedFrames(root, man, num_frames, params.image_size, params.augment),
    }
    modalities = {m: ModalitySpec(tuple(f.shape()), "resnet18") for m, f in loaders.items()}
    info = {
        "dataset": dataset,
        "profile": "prepared",
        "num_frames": num_frames,
        "manifest_sha256": sha,
        "prepare_params": man.get("params"),
        "prepare_skipped": man.get("skipped"),
    }
    return assemble(splits, loaders, modalities, list(man["class_names"]), params, issues, info)
