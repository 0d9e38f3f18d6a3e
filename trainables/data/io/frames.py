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
``RandomResizedCrop`` + horizontal flip when ``augment`` is on (OGM-GE's training transform).
"""

from __future__ import annotations

import re
from pathlib import Path

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
    """PIL -> float ``[C, H, W]`` in [0, 1]."""
    a = np.asarray(im, dtype=np.uint8)
    a = a[:, :, None] if a.ndim == 2 else a
    return torch.from_numpy(a.copy()).permute(2, 0, 1).float().div_(255.0)


class ImageTransform:
    """Resize (eval) or random-resized-crop + flip (train with ``augment``) to ``size`` x ``size``.

    3-channel inputs get the ImageNet mean/std; 2-channel inputs (optical flow u, v stored as grey
    JPEGs around 128) are mapped from [0, 1] to [-1, 1], and a flip also mirrors the u component.
    """

    def __init__(self, size: int, train: bool, augment: bool) -> None:
        from torchvision.transforms import v2

        self.size = size
        self.flip = train and augment
        if self.flip:
            self.geo = v2.RandomResizedCrop(size, antialias=True)
        else:
            self.geo = v2.Resize((size, size), antialias=True)

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        """``[T, C, H, W]`` in [0, 1] -> ``[T, C, size, size]`` normalised; one crop for all frames."""
        x = self.geo(frames)
        if self.flip and torch.rand(()) < 0.5:
            x = x.flip(-1)
            if x.shape[1] == 2:  # mirrored optical flow: the horizontal component changes sign (stored as 1 - u)
                x = torch.cat([1.0 - x[:, :1], x[:, 1:]], 1)
        if x.shape[1] == 3:
            return (x - MEAN) / STD
        return x * 2.0 - 1.0


def load_frames(paths: list[Path], where: str, mode: str = "RGB") -> torch.Tensor:
    """Decode image files to ``[T, C, H, W]`` in [0, 1] (all frames must share one size)."""
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


class ImageFile:
    """Loader: ``sample.files[key]`` (one image) -> ``[3, size, size]`` (ModelNet40 views)."""

    def __init__(self, key: str, size: int, augment: bool) -> None:
        self.key, self.size, self.augment = key, size, augment

    def shape(self) -> tuple[int, int, int]:
        return (3, self.size, self.size)

    def __call__(self, sample: Sample, train: bool) -> torch.Tensor:
        x = to_tensor(open_image(sample.files[self.key], sample.where))[None]
        return ImageTransform(self.size, train, self.augment)(x)[0]


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

    def __call__(self, sample: Sample, train: bool) -> torch.Tensor:
        u = list_frames(sample.files["flow_u"], sample.where)
        v = list_frames(sample.files["flow_v"], sample.where)
        picks = flow_window(min(len(u), len(v)), self.num_frames, train)
        x = torch.cat(
            [
                load_frames([u[i] for i in picks], sample.where, "L"),
                load_frames([v[i] for i in picks], sample.where, "L"),
            ],
            1,
        )
        return ImageTransform(self.size, train, self.augment)(x)
