"""Frame picking and image loading for frame folders (``<clip>/*.jpg``).

Frame pick. The OGM-GE loader draws a random index and then ignores it: it loads the first
``fps`` files in ``os.listdir`` order (arbitrary, file-system dependent). We list the folder in
natural sort order and pick:

* training: the clip is cut into ``k`` equal segments and one frame is drawn uniformly in each
  (TSN-style, as BalanceBenchmark's Kinetics-Sounds loader), so picks are distinct and in temporal
  order; drawn from torch's RNG (the loop seeds it; DataLoader workers derive their seeds from it),
  so a run is reproducible for a given seed and worker count; with fewer than ``k`` frames, picks repeat;
* evaluation: the centre of each segment, ``floor((i + 0.5) * n / k)`` - no randomness.

Images are resized and normalised with the ImageNet statistics like the references; training adds
``RandomResizedCrop`` + horizontal flip when ``augment`` is on (OGM-GE's training transform). Resizing
and cropping act on the decoded uint8 pixels, as the references' PIL transforms do, and the result is
then scaled to [0, 1]; ``mmbal prepare`` stores frames with the same evaluation resize
(:func:`stored_frames`), so a frame stored at ``data.image_size`` is the frame this module would load.

Each frame loader also says how ``mmbal prepare`` stores it (``prepare_spec``, ``store``): every
decoded frame of the clip (uint8, before any random pick, crop or flip), so that training on the
prepared layout still draws one frame per segment and still augments. Folders with more than
``max_frames`` frames (UCF-101's 25-fps folders) keep a subset: the segment centres plus the
evaluation picks, or for consecutive windows (optical flow) a few evenly spaced windows plus the
centred one; see :mod:`trainables.data.io.prepared` for how a training pick is mapped onto them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from trainables.data.io.lists import Sample, SampleError

IMAGE_EXT = (".jpg", ".jpeg", ".png")
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def natural_key(name: str) -> list:
    """Sort key that orders ``frame_2`` before ``frame_10``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def list_frames(folder: Path, where: str) -> list[Path]:
    """Image files of a frame folder in natural order; an empty or missing folder is an error."""
    if not folder.is_dir():
        raise SampleError("missing", f"{where}: frame folder {folder} not found")
    files = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXT), key=lambda p: natural_key(p.name))
    if not files:
        raise SampleError("missing", f"{where}: frame folder {folder} holds no images")
    return files


def pick_frames(n: int, k: int, train: bool, generator: torch.Generator | None = None) -> list[int]:
    """Indices of ``k`` frames out of ``n``: one per equal segment (see the module docstring)."""
    bounds = [
        (int(np.floor(i * n / k)), max(int(np.floor((i + 1) * n / k)), int(np.floor(i * n / k)) + 1)) for i in range(k)
    ]
    if train:
        return [lo + int(torch.randint(hi - lo, (), generator=generator)) for lo, hi in bounds]
    return [int(np.floor((i + 0.5) * n / k)) for i in range(k)]


def segment_subset(n: int, k: int, max_frames: int) -> list[int] | None:
    """Frames ``mmbal prepare`` keeps of a clip of ``n`` frames (None: all of them, when ``n <= max_frames``
    or ``max_frames`` is 0): the evaluation picks for ``k`` frames plus the centres of
    ``max_frames - k`` equal segments, so evaluation stays exact and training draws spread over the clip."""
    if not max_frames or n <= max_frames:
        return None
    grid = max(max_frames - k, 1)
    return sorted(set(pick_frames(n, k, train=False)) | {int(np.floor((j + 0.5) * n / grid)) for j in range(grid)})


def window_subset(n: int, k: int, max_frames: int) -> tuple[list[int], list[int]] | None:
    """``(frames kept, window starts kept)`` of ``n`` frames for windows of ``k`` consecutive frames (None:
    all): ``max_frames // k`` evenly spaced windows plus the centred evaluation window."""
    if not max_frames or n <= max_frames:
        return None
    span, w = max(n - k, 0), max(max_frames // k, 1)
    starts = sorted({span // 2} | ({j * span // (w - 1) for j in range(w)} if w > 1 else set()))
    return sorted({min(s + i, n - 1) for s in starts for i in range(k)}), starts


def open_image(path: Path, where: str, mode: str = "RGB") -> Image.Image:
    """Fully decoded PIL image (``RGB`` or ``L``); truncated or non-image files are ``corrupt``."""
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert(mode)
    except FileNotFoundError:
        raise SampleError("missing", f"{where}: file {path} not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise SampleError("corrupt", f"{where}: cannot decode image {path} ({exc})") from None


def to_tensor(im: Image.Image) -> torch.Tensor:
    """PIL -> uint8 ``[C, H, W]``."""
    a = np.asarray(im, dtype=np.uint8)
    a = a[:, :, None] if a.ndim == 2 else a
    return torch.from_numpy(a.copy()).permute(2, 0, 1)


def _resize(size: int) -> torch.nn.Module:
    from torchvision.transforms import v2

    return v2.Resize((size, size), antialias=True)


class ImageTransform:
    """Resize (eval) or random-resized-crop + flip (train with ``augment``) to ``size`` x ``size``.

    3-channel inputs get the ImageNet mean/std; 2-channel inputs (optical flow u, v stored as grey
    JPEGs around 128) are mapped from [0, 1] to [-1, 1], and a flip also mirrors the u component.
    """

    def __init__(self, size: int, train: bool, augment: bool) -> None:
        from torchvision.transforms import v2

        self.size = size
        self.flip = train and augment
        self.crop = v2.RandomResizedCrop(size, antialias=True) if self.flip else None

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 ``[T, C, H, W]`` -> float ``[T, C, size, size]`` normalised; one crop for all frames."""
        if frames.dtype != torch.uint8:
            raise TypeError(f"ImageTransform takes uint8 frames, got {frames.dtype}")
        if self.crop is not None:
            x = self.crop(frames)
        elif frames.shape[-2:] != (self.size, self.size):  # frames stored at the size are already resized
            x = _resize(self.size)(frames)
        else:
            x = frames
        if self.flip and torch.rand(()) < 0.5:
            x = x.flip(-1)
            if x.shape[1] == 2:  # mirrored optical flow: the horizontal component changes sign (stored as 255 - u)
                x = torch.cat([255 - x[:, :1], x[:, 1:]], 1)
        x = x.float().div_(255.0)
        if x.shape[1] == 3:
            return (x - MEAN) / STD
        return x * 2.0 - 1.0


def stored_frames(frames: torch.Tensor, size: int) -> np.ndarray:
    """uint8 ``[n, C, H, W]`` -> uint8 ``[n, size, size, C]`` with the evaluation resize (``size`` 0: as decoded)."""
    if size and frames.shape[-2:] != (size, size):
        frames = _resize(size)(frames)
    return np.ascontiguousarray(frames.permute(0, 2, 3, 1).numpy())


def load_frames(paths: list[Path], where: str, mode: str = "RGB") -> torch.Tensor:
    """Decode image files to uint8 ``[T, C, H, W]`` (all frames must share one size)."""
    ims = [to_tensor(open_image(p, where, mode)) for p in paths]
    if len({tuple(t.shape) for t in ims}) > 1:
        raise SampleError("corrupt", f"{where}: frames of different sizes in {paths[0].parent}")
    return torch.stack(ims)


class FrameFolder:
    """Loader: ``sample.files[key]`` (a frame folder) -> ``[T, 3, size, size]`` picked as documented above."""

    def __init__(self, key: str, num_frames: int, size: int, augment: bool) -> None:
        self.key, self.num_frames, self.size, self.augment = key, num_frames, size, augment

    def shape(self) -> tuple[int, int, int, int]:
        return (self.num_frames, 3, self.size, self.size)

    def __call__(self, sample: Sample, train: bool) -> torch.Tensor:
        files = list_frames(sample.files[self.key], sample.where)
        picks = pick_frames(len(files), self.num_frames, train)
        return ImageTransform(self.size, train, self.augment)(load_frames([files[i] for i in picks], sample.where))

    def prepare_spec(self) -> dict[str, Any]:
        """How ``mmbal prepare`` stores this modality (see :mod:`trainables.data.io.prepared`)."""
        return {"kind": "frames", "pick": "segments", "num_frames": self.num_frames, "channels": 3}

    def store(self, sample: Sample, size: int, max_frames: int) -> tuple[np.ndarray, dict[str, Any]]:
        """The clip's frames before any pick or augmentation, uint8 ``[n, S, S, 3]``, and their indices."""
        files = list_frames(sample.files[self.key], sample.where)
        keep = segment_subset(len(files), self.num_frames, max_frames)
        frames = load_frames([files[i] for i in (keep or range(len(files)))], sample.where)
        return stored_frames(frames, size), {"n": len(files), **({"at": keep} if keep else {})}


class ImageFile:
    """Loader: ``sample.files[key]`` (one image) -> ``[3, size, size]`` (ModelNet40 views)."""

    def __init__(self, key: str, size: int, augment: bool) -> None:
        self.key, self.size, self.augment = key, size, augment

    def shape(self) -> tuple[int, int, int]:
        return (3, self.size, self.size)

    def __call__(self, sample: Sample, train: bool) -> torch.Tensor:
        x = to_tensor(open_image(sample.files[self.key], sample.where))[None]
        return ImageTransform(self.size, train, self.augment)(x)[0]

    def prepare_spec(self) -> dict[str, Any]:
        return {"kind": "frames", "pick": "single", "num_frames": 1, "channels": 3}

    def store(self, sample: Sample, size: int, max_frames: int) -> tuple[np.ndarray, dict[str, Any]]:
        """The image before augmentation, uint8 ``[1, S, S, 3]``."""
        return stored_frames(to_tensor(open_image(sample.files[self.key], sample.where))[None], size), {"n": 1}


def flow_window(n: int, k: int, train: bool, generator: torch.Generator | None = None) -> list[int]:
    """``k`` consecutive flow frames out of ``n``: a random start when training, the centred window otherwise;
    indices past the end repeat the last frame (clips shorter than ``k``)."""
    span = max(n - k, 0)
    start = int(torch.randint(span + 1, (), generator=generator)) if train else span // 2
    return [min(start + i, n - 1) for i in range(k)]


class FlowStack:
    """Loader: ``sample.files["flow_u"/"flow_v"]`` folders -> ``[k, 2, size, size]`` (x, y flow as grey JPEGs)."""

    def __init__(self, num_frames: int, size: int, augment: bool) -> None:
        self.num_frames, self.size, self.augment = num_frames, size, augment

    def shape(self) -> tuple[int, int, int, int]:
        return (self.num_frames, 2, self.size, self.size)

    @staticmethod
    def _lists(sample: Sample) -> tuple[list[Path], list[Path]]:
        return list_frames(sample.files["flow_u"], sample.where), list_frames(sample.files["flow_v"], sample.where)

    @staticmethod
    def _load(u: list[Path], v: list[Path], picks: Iterable[int], where: str) -> torch.Tensor:
        picks = list(picks)
        return torch.cat([load_frames([files[i] for i in picks], where, "L") for files in (u, v)], 1)

    def __call__(self, sample: Sample, train: bool) -> torch.Tensor:
        u, v = self._lists(sample)
        picks = flow_window(min(len(u), len(v)), self.num_frames, train)
        return ImageTransform(self.size, train, self.augment)(self._load(u, v, picks, sample.where))

    def prepare_spec(self) -> dict[str, Any]:
        return {"kind": "frames", "pick": "window", "num_frames": self.num_frames, "channels": 2}

    def store(self, sample: Sample, size: int, max_frames: int) -> tuple[np.ndarray, dict[str, Any]]:
        """The clip's (u, v) frames before any pick or augmentation, uint8 ``[n, S, S, 2]``, and their indices."""
        u, v = self._lists(sample)
        n = min(len(u), len(v))
        kept = window_subset(n, self.num_frames, max_frames)
        x = self._load(u, v, kept[0] if kept else range(n), sample.where)
        return stored_frames(x, size), {"n": n, **({"at": kept[0], "starts": kept[1]} if kept else {})}
