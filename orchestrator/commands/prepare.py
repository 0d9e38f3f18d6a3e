"""``mmbal prepare DATASET --raw DIR --out DIR``: raw download -> versioned prepared layout (resumable)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from trainables.errors import ConfigError

DEFAULT_FRAMES = {"cremad": 3, "kinetics_sounds": 10}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="decode a raw dataset once into mmbal's prepared layout (data.profile=prepared)")
    p.add_argument("dataset", help="dataset to prepare (supported: cremad, kinetics_sounds)")
    p.add_argument(
        "--raw", required=True, help="raw download (cremad: AudioWAV/*.wav + VideoFlash/*.flv; kinetics_sounds: **/*.mp4)"
    )
    p.add_argument("--out", required=True, help="output folder; rerun the same command to resume")
    lists_help = "folder with OGM-GE's lists (cremad: train.csv/test.csv, optional; kinetics_sounds: my_{train,test}.txt)"
    p.add_argument("--lists", default=None, help=lists_help + "; default: --raw")
    p.add_argument(
        "--frames", type=int, default=None, help="frames stored per clip, 1 per second (default: cremad 3, kinetics_sounds 10)"
    )
    p.add_argument("--size", type=int, default=224, help="side of the stored square frames")
    p.add_argument("--test-fraction", type=float, default=0.1, help="cremad without lists: test share per class")
    p.add_argument("--split-seed", type=int, default=0, help="seed of that split")
    p.add_argument("--on-error", choices=["raise", "skip"], default="raise", help="a bad clip stops, or is skipped and recorded")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="decoding processes")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from orchestrator.prepare import PrepareParams, prepare

    frames = args.frames if args.frames is not None else DEFAULT_FRAMES.get(args.dataset, 3)
    if frames < 1 or args.size < 16:
        raise ConfigError("--frames/--size", "allowed: --frames >= 1 and --size >= 16")
    if not 0.0 < args.test_fraction < 1.0:
        raise ConfigError("--test-fraction", f"got {args.test_fraction}; allowed: a fraction in (0, 1)")
    if not Path(args.raw).is_dir():
        raise ConfigError("--raw", f"{args.raw} is not a folder")
    params = PrepareParams(
        dataset=args.dataset, frames=frames, size=args.size, test_fraction=args.test_fraction,
        split_seed=args.split_seed, on_error=args.on_error,
    )  # fmt: skip
    prepare(Path(args.raw), Path(args.out), params, Path(args.lists) if args.lists else None, max(1, args.workers))
    return 0
