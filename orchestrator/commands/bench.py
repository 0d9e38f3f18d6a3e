"""``mmbal bench``: seconds per training epoch of each method, as a ratio against ``joint``.

Methods are run side by side, interleaved round-robin over ``--repeats`` rounds so that drift in the
machine's load hits every method alike; the median epoch time of each method is compared to
joint's. An epoch's time covers training and validation. Nothing is written to disk.
"""

from __future__ import annotations

import argparse
import statistics
import time

from trainables.config import apply_overrides
from trainables.loop import run_trial
from trainables.methods import METHODS


class _Timer:
    """Reporter that keeps the per-epoch wall times and nothing else."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def restore(self) -> None:
        return None

    def report(self, metrics: dict, checkpoint: dict | None) -> None:
        self.times.append(float(metrics["time/epoch_s"]))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="seconds per epoch of each method relative to joint")
    p.add_argument("--methods", nargs="*", default=None, help="default: every registered method")
    p.add_argument("--dataset", default="mfeat")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=run)


def bench(methods: list[str], base: dict, repeats: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {m: [] for m in methods}
    for _ in range(repeats):
        for m in methods:
            timer = _Timer()
            run_trial({**base, "method": m}, timer)
            times[m].extend(timer.times[1:] or timer.times)  # the first epoch carries warm-up
    return times


def run(args: argparse.Namespace) -> int:
    methods = args.methods or METHODS.names()
    if "joint" not in methods:
        methods = ["joint", *methods]
    for m in methods:
        METHODS.get(m, key="--methods")
    base = apply_overrides({"dataset": args.dataset, "epochs": args.epochs, "eval": {"missing": False}}, args.overrides)
    tic = time.perf_counter()
    times = bench(methods, base, args.repeats)
    ref = statistics.median(times["joint"])
    print(f"| method | s/epoch train+val (median of {len(times['joint'])}) | ratio vs joint |")
    print("|---|---:|---:|")
    for m in methods:
        med = statistics.median(times[m])
        print(f"| {m} | {med:.3f} | {med / ref:.2f} |")
    print(f"(dataset {args.dataset}, {args.epochs} epochs x {args.repeats} rounds, total {time.perf_counter() - tic:.0f} s)")
    return 0
