"""Samples/s of the prepared-data loader vs the official path (JPEG decode + STFT per sample), same workers.

Run: ``python tests/perf/bench_loader.py --clips 300 --workers 2`` (a measurement, not a test:
pytest does not collect it). Fabricates a CREMA-D-sized set (2.5 s 16 kHz WAVs, 480x360 frames at
1 fps as CREMA-D's videos) in the OGM-GE layout and, from the same raw clips, ``mmbal prepare``
output; then times full passes of a DataLoader over the training split of each (``data.profile``
ogm_ge vs prepared, identical other settings).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for the fixture builders

from fixtures_data import CREMAD, tone, write_flv, write_wav


def fabricate(root: Path, clips: int) -> None:
    rng = np.random.default_rng(0)
    rows = {"train": [], "test": []}
    for k in range(clips):
        c = CREMAD[k % 6]
        clip = f"{1000 + k // 6}_DFA_{c}_XX"
        write_wav(root / "AudioWAV" / f"{clip}.wav", tone(2.5, 16000, 200 + k, k))
        write_flv(root / "VideoFlash" / f"{clip}.flv", seconds=2.5, fps=2, size=64)
        for s in range(2):  # two 1-fps frames of CREMA-D's 480x360 size, textured so JPEG has work to do
            base = rng.integers(0, 255, (45, 60, 3), dtype=np.uint8)
            img = Image.fromarray(base).resize((480, 360), Image.BILINEAR)
            (root / "Image-01-FPS" / clip).mkdir(parents=True, exist_ok=True)
            img.save(root / "Image-01-FPS" / clip / f"{s:06d}.jpg", quality=90)
        rows["test" if k % 10 == 0 else "train"].append(f"{clip},{c}\n")
    for split, r in rows.items():
        (root / f"{split}.csv").write_text("".join(r))


def throughput(root: Path, profile: str, workers: int, batch: int, epochs: int) -> float:
    from torch.utils.data import DataLoader

    from trainables.config import resolve
    from trainables.data import DATASETS

    cfg = resolve({"dataset": "cremad", "data_root": str(root), "data": {"profile": profile, "num_frames": 1}})
    ds = DATASETS.get("cremad")().build(cfg.data_params, str(root), 0).train
    loader = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, persistent_workers=workers > 0)
    for _ in loader:  # warm-up pass: worker start, page cache
        break
    tic, n = time.perf_counter(), 0
    for _ in range(epochs):
        for b in loader:
            n += len(b["label"])
    return n / (time.perf_counter() - tic)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=300)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    from trainables.data.cremad import CremaDPrepareParams, CremaDRecipe
    from trainables.data.io.prepare import prepare

    root = Path(args.dir or tempfile.mkdtemp(prefix="mmbal-bench-"))
    if not (root / "train.csv").exists():
        t = time.perf_counter()
        fabricate(root, args.clips)
        print(f"fabricated {args.clips} clips in {time.perf_counter() - t:.1f} s under {root}")
    t = time.perf_counter()
    params = CremaDPrepareParams(frames=3, size=224)
    prepare("cremad", CremaDRecipe(), root, root / "prepared", params, workers=args.workers, log=lambda s: None)
    print(f"prepare: {time.perf_counter() - t:.1f} s ({args.workers} workers)")
    official = throughput(root, "ogm_ge", args.workers, args.batch, args.epochs)
    fast = throughput(root / "prepared", "prepared", args.workers, args.batch, args.epochs)
    print(f"official path (JPEG + STFT per sample): {official:.1f} samples/s")
    print(f"prepared loader (memmap uint8/float16): {fast:.1f} samples/s")
    setup = f"workers={args.workers}, batch={args.batch}, image 224, 1 frame"
    print(f"ratio prepared / official: {fast / official:.2f}x  ({setup})")


if __name__ == "__main__":
    main()
