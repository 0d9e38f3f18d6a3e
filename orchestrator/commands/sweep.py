"""``mmbal sweep SWEEP.yaml``: check the sweep in full, then run it (local, packed or ddp) and print the leaderboard."""

from __future__ import annotations

import argparse
import shlex

from orchestrator.cli import add_overrides
from orchestrator.run.driver import run_sweep
from orchestrator.run.interrupt import SweepInterrupted
from orchestrator.sweep import load_sweep
from trainables.errors import Interrupted


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="run a sweep YAML (Ray Tune; execution.mode local runs without Ray)")
    p.add_argument("sweep", metavar="SWEEP.yaml")
    add_overrides(p, "--set epochs=2 --set execution.mode=local --set methods.joint.optim.lr=0.05")
    p.add_argument(
        "--address", default=None, help="Ray cluster to join (auto = the local cluster's head); default: start Ray here"
    )
    p.add_argument(
        "--resume", action="store_true", help="continue an interrupted sweep: finished trials are kept, the rest resume"
    )
    p.set_defaults(func=run)


def resume_command(args: argparse.Namespace) -> str:
    """The command that continues this sweep: same file, same --set values, --resume."""
    parts = ["mmbal", "sweep", args.sweep, *(a for o in args.overrides for a in ("--set", o))]
    if args.address:
        parts += ["--address", args.address]
    return shlex.join([*parts, "--resume"])


def run(args: argparse.Namespace) -> int:
    sweep = load_sweep(args.sweep, args.overrides)  # every problem is reported before Ray starts
    try:
        out = run_sweep(sweep, resume=args.resume, address=args.address)
    except SweepInterrupted as exc:
        raise Interrupted(f"interrupted with {exc}; resume with: {resume_command(args)}") from None
    return 0 if all(s not in ("error", "diverged") for s in out["status"].values()) else 1
