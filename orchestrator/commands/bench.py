"""``mmbal bench``: seconds per training epoch of each method, as a ratio against ``joint``.

Methods are run side by side, interleaved round-robin over ``--repeats`` rounds so that drift in the
machine's load hits every method alike; the median epoch time of each method is compared to
joint's. Both the process CPU time (robust to other jobs on a shared machine) and the wall time are
reported; torch runs on ``--threads`` threads (default 1) so that CPU time is comparable.
An epoch's time covers training and validation. Nothing is written to disk.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from orchestrator.cli import add_overrides
from trainables.config import apply_overrides
from trainables.loop import run_trial
from trainables.methods import METHODS


class _Timer:
    """Reporter that keeps per-epoch wall times and process CPU times, and nothing else."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self._last = time.process_time()

    def restore(self) -> None:
        self._last = time.process_time()
        return None

    def report(self, metrics: dict, checkpoint: dict | None) -> None:
        now = time.process_time()
        self.cpu.append(now - self._last)
        self.wall.append(float(metrics["time/epoch_s"]))
        self._last = now


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="seconds per epoch of each method relative to joint")
    p.add_argument("--methods", nargs="*", default=None, help="default: every registered method")
    p.add_argument("--dataset", default="mfeat")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (CPU)")
    add_overrides(p, "--set data.train_per_class=20")
    p.set_defaults(func=run)


def bench(methods: list[str], base: dict, repeats: int) -> dict[str, dict[str, list[float]]]:
    """``{method: {"cpu": [...], "wall": [...]}}`` seconds per epoch, first epoch (warm-up) dropped."""
    times: dict[str, dict[str, list[float]]] = {m: {"cpu": [], "wall": []} for m in methods}
    for _ in range(repeats):
        for m in methods:
            timer = _Timer()
            run_trial({**base, "method": m}, timer)
            times[m]["cpu"].extend(timer.cpu[1:] or timer.cpu)
            times[m]["wall"].extend(timer.wall[1:] or timer.wall)
    return times


def run(args: argparse.Namespace) -> int:
    methods = args.methods or METHODS.names()
    if "joint" not in methods:
        methods = ["joint", *methods]
    for m in methods:
        METHODS.get(m, key="--methods")
    base = apply_overrides({"dataset": args.dataset, "epochs": args.epochs, "eval": {"missing": False}}, args.overrides)
    torch.set_num_threads(args.threads)
    tic = time.perf_counter()
    times = bench(methods, base, args.repeats)
    ref = {k: statistics.median(times["joint"][k]) for k in ("cpu", "wall")}
    n = len(times["joint"]["cpu"])
    print(f"| method | CPU s/epoch (median of {n}) | ratio vs joint | wall s/epoch | wall ratio |")
    print("|---|---:|---:|---:|---:|")
    for m in methods:
        cpu, wall = statistics.median(times[m]["cpu"]), statistics.median(times[m]["wall"])
        print(f"| {m} | {cpu:.3f} | {cpu / ref['cpu']:.2f} | {wall:.3f} | {wall / ref['wall']:.2f} |")
    total = time.perf_counter() - tic
    rounds = f"{args.epochs} epochs x {args.repeats} rounds"
    print(f"(dataset {args.dataset}, {rounds}, {args.threads} thread(s), {total:.0f} s)")
    return 0
