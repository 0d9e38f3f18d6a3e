"""The loader ratio: samples/s of ``data.profile: prepared`` over the per-sample path of the layout it was
prepared from, same DataLoader (workers, batch size, shuffling, training transforms), side by side in one
process. ``mmbal bench`` prints it; ``tests/perf/bench_loader.py`` runs it alone.

The per-sample and prepared loaders are timed alternately, one full training epoch each per round and in
alternating order, so that a change of the machine's load hits both alike; the ratio is that of the
median epoch throughputs. Data: a CREMA-D-sized set fabricated in the OGM-GE layout (2.5 s 16 kHz WAVs
and two 480 x 360 JPEG frames per clip, as CREMA-D's 1-fps frames), prepared with
``mmbal prepare cremad --profile ogm_ge``.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import wave
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

CLASSES = ["NEU", "HAP", "SAD", "FEA", "DIS", "ANG"]


def fabricate_cremad_ogm(root: Path, clips: int = 300, frame_hw: tuple[int, int] = (360, 480), seed: int = 0) -> None:
    """A CREMA-D-like OGM-GE layout under ``root``: ``train.csv`` / ``test.csv`` (1 clip in 10 is test),
    ``AudioWAV/<clip>.wav`` (2.5 s, 16 kHz) and ``Image-01-FPS/<clip>/00000{0,1}.jpg`` (textured, so that
    JPEG decoding has realistic work to do)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    rows: dict[str, list[str]] = {"train": [], "test": []}
    t = np.arange(int(2.5 * 16000)) / 16000
    for k in range(clips):
        c = CLASSES[k % 6]
        clip = f"{1000 + k // 6}_DFA_{c}_XX"
        x = 0.5 * np.sin(2 * np.pi * (200 + k) * t) + 0.01 * rng.standard_normal(len(t))
        (root / "AudioWAV").mkdir(parents=True, exist_ok=True)
        with wave.open(str(root / "AudioWAV" / f"{clip}.wav"), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(16000)
            w.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())
        folder = root / "Image-01-FPS" / clip
        folder.mkdir(parents=True, exist_ok=True)
        for s in range(2):
            small = rng.integers(0, 255, (frame_hw[0] // 8, frame_hw[1] // 8, 3), dtype=np.uint8)
            Image.fromarray(small).resize(frame_hw[::-1], Image.BILINEAR).save(folder / f"{s:06d}.jpg", quality=90)
        rows["test" if k % 10 == 0 else "train"].append(f"{clip},{c}\n")
    for split, r in rows.items():
        (root / f"{split}.csv").write_text("".join(r))


@dataclass
class LoaderRatio:
    """Result of :func:`loader_ratio`: samples/s (median over rounds) of each path and their ratio."""

    per_sample: float
    prepared: float
    ratio: float
    samples: int  # training samples per epoch
    workers: int
    batch: int
    image_size: int
    stored_size: int
    rounds: list[dict[str, float]] = field(default_factory=list)
    load: tuple[float, float] = (0.0, 0.0)  # 1-minute load average before and after
    cpus: int = 0

    def line(self) -> str:
        return (
            f"loader ratio prepared / per-sample (CREMA-D ogm_ge layout, training epoch, {self.samples} samples, "
            f"workers={self.workers}, batch={self.batch}, image {self.image_size}, stored {self.stored_size}): "
            f"{self.prepared:.1f} / {self.per_sample:.1f} samples/s = {self.ratio:.2f}x "
            f"(median of {len(self.rounds)} rounds; load {self.load[0]:.1f} -> {self.load[1]:.1f} on {self.cpus} CPUs)"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _train_loader(root: Path, profile: str, image_size: int, workers: int, batch: int) -> Any:
    from torch.utils.data import DataLoader

    from trainables.config import resolve
    from trainables.data import DATASETS

    data = {"profile": profile, "image_size": image_size, "num_frames": 1}
    cfg = resolve({"dataset": "cremad", "data_root": str(root), "data": data})
    train = DATASETS.get("cremad")().build(cfg.data_params, str(root), 0).train
    return DataLoader(train, batch_size=batch, shuffle=True, num_workers=workers, persistent_workers=workers > 0)


def _epoch(loader: Any) -> tuple[float, int]:
    tic, n = time.perf_counter(), 0
    for b in loader:
        n += len(b["label"])
    return time.perf_counter() - tic, n


def loader_ratio(
    root: Path | None = None,
    clips: int = 300,
    workers: int = 2,
    batch: int = 32,
    rounds: int = 3,
    image_size: int = 224,
    stored_size: int = 224,
    frame_hw: tuple[int, int] = (360, 480),
    log: Callable[[str], None] = print,
) -> LoaderRatio:
    """Samples/s of the prepared CREMA-D loader vs the per-sample OGM-GE one, timed alternately in this process.

    Args:
        root: folder of the fabricated layout (made there when it holds no ``train.csv``; a temporary
            folder when None); the prepared copy goes to ``root/prepared`` (reused when finished).
        clips: clips to fabricate; workers, batch: the DataLoader settings both paths share.
        rounds: timed epochs of each path; image_size: ``data.image_size``; stored_size: ``prepare --size``.
        frame_hw: fabricated frame size (CREMA-D: 360 x 480).
    """
    from trainables.data import DATASETS
    from trainables.data.io.prepare import prepare

    root = Path(root or tempfile.mkdtemp(prefix="mmbal-loader-bench-"))
    if not (root / "train.csv").is_file():
        tic = time.perf_counter()
        fabricate_cremad_ogm(root, clips, frame_hw)
        log(f"fabricated {clips} clips under {root} in {time.perf_counter() - tic:.1f} s")
    recipe = DATASETS.get("cremad").recipes()["ogm_ge"]
    tic = time.perf_counter()
    params = recipe.make_params({"size": stored_size}, {})
    prepare("cremad", recipe, root, root / "prepared", params, workers=max(workers, 1), log=lambda s: None)
    log(f"prepare --profile ogm_ge --size {stored_size}: {time.perf_counter() - tic:.1f} s")
    loaders = {
        "per_sample": _train_loader(root, "ogm_ge", image_size, workers, batch),
        "prepared": _train_loader(root / "prepared", "prepared", image_size, workers, batch),
    }
    for loader in loaders.values():  # start the workers, fill the page cache
        next(iter(loader))
    before = os.getloadavg()[0]
    timed: list[dict[str, float]] = []
    for r in range(rounds):
        order = list(loaders) if r % 2 == 0 else list(loaders)[::-1]
        row: dict[str, float] = {}
        for name in order:
            seconds, n = _epoch(loaders[name])
            row[f"{name}_s"], row["samples"] = seconds, n
        timed.append(row)
    speed = {name: statistics.median(t["samples"] / t[f"{name}_s"] for t in timed) for name in loaders}
    return LoaderRatio(
        per_sample=speed["per_sample"],
        prepared=speed["prepared"],
        ratio=speed["prepared"] / speed["per_sample"],
        samples=int(timed[0]["samples"]),
        workers=workers,
        batch=batch,
        image_size=image_size,
        stored_size=stored_size,
        rounds=timed,
        load=(before, os.getloadavg()[0]),
        cpus=os.cpu_count() or 1,
    )
