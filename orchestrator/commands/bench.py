"""``mmbal bench``: where a trial's time goes, each number a ratio measured side by side in one run.

Sections (``--only`` picks some; all by default, ``av`` only with ``--device cuda`` or ``--small``):

* ``methods``: seconds per training epoch of each method, as a ratio against ``joint`` (below);
* ``loader``: samples/s of the prepared layout over the per-sample path it was prepared from, same
  DataLoader (:func:`orchestrator.bench.loader.loader_ratio`);
* ``step``: seconds per step of mmbal's training epoch over a plain PyTorch loop on the same model and
  batches (:func:`orchestrator.bench.throughput.step_ratio`);
* ``av``: the ResNet-18 audio-visual trial on prepared data: samples/s of the trial, of the model alone
  on synthetic device tensors (the bound), their ratio, the data-wait fraction and peak memory
  (:func:`orchestrator.bench.throughput.av_bench`).

Every number is also printed as one ``section/name: value`` line (machine-readable). ``--small`` makes
each section tiny so that a CPU run finishes in about a minute (what CI runs); the numbers then say
only that the code works. ``--set`` overrides go to the ``methods`` and ``step`` trials (and, for keys
like ``precision``, to ``av`` too).

Methods are run side by side, interleaved round-robin over ``--repeats`` rounds so that drift in the
machine's load hits every method alike; the median epoch time of each method is compared to
joint's. Both the process CPU time (robust to other jobs on a shared machine) and the wall time are
reported; torch runs on ``--threads`` threads (default 1) so that CPU time is comparable.
An epoch's time covers training and validation. Nothing is written to disk.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from orchestrator.cli import add_command, add_overrides

EXAMPLES = """
  mmbal bench                                       # every section; methods: each method vs joint on mfeat
  mmbal bench --only methods --methods ogm_ge mla --epochs 4 --set data.train_per_class=20
  mmbal bench --only av --device cuda --av-batch 128
  mmbal bench --small                               # tiny sizes: checks that every section runs
"""


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


SECTIONS = ("methods", "loader", "step", "av")
AV_KEYS = ("precision", "channels_last", "compile", "optim", "deterministic")  # trial options av takes


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "bench", "loader, step and model-bound ratios; seconds per epoch of each method vs joint", EXAMPLES
    )
    p.add_argument("--only", nargs="+", choices=SECTIONS, default=None, help="sections to run (default: all)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--small", action="store_true", help="tiny sizes: checks that every section runs (CI, CPU)")
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers of loader/av (default 2 / 4)")
    p.add_argument("--av-batch", type=int, default=64, help="av: batch size")
    p.add_argument("--av-dir", default=None, help="av: fabricate and prepare the data here (reused next time)")
    p.add_argument("--methods", nargs="*", default=None, help="default: every registered method")
    p.add_argument("--dataset", default="mfeat")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (CPU)")
    add_overrides(p, "--set data.train_per_class=20")
    p.set_defaults(func=run)


def bench(methods: list[str], base: dict, repeats: int) -> dict[str, dict[str, list[float]]]:
    """``{method: {"cpu": [...], "wall": [...]}}`` seconds per epoch, first epoch (warm-up) dropped."""
    from trainables.loop import run_trial

    times: dict[str, dict[str, list[float]]] = {m: {"cpu": [], "wall": []} for m in methods}
    for _ in range(repeats):
        for m in methods:
            timer = _Timer()
            run_trial({**base, "method": m}, timer)
            times[m]["cpu"].extend(timer.cpu[1:] or timer.cpu)
            times[m]["wall"].extend(timer.wall[1:] or timer.wall)
    return times


def _fields(fields: dict[str, float]) -> None:
    for k, v in fields.items():
        print(f"{k}: {v:.6g}")


def _methods(args: argparse.Namespace, base: dict) -> None:
    from trainables.methods import METHODS

    methods = args.methods or METHODS.names()
    if "joint" not in methods:
        methods = ["joint", *methods]
    for m in methods:
        METHODS.get(m, key="--methods")
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
    _fields({f"methods/{m}/cpu_ratio": statistics.median(times[m]["cpu"]) / ref["cpu"] for m in methods})


def _loader(args: argparse.Namespace) -> None:
    from orchestrator.bench.loader import loader_ratio

    workers = 2 if args.workers is None else args.workers
    with tempfile.TemporaryDirectory(prefix="mmbal-bench-loader-") as tmp:
        if args.small:
            small = dict(clips=12, workers=0, batch=4, rounds=2, image_size=16, stored_size=16, frame_hw=(24, 32))
            r = loader_ratio(Path(tmp), **small)
        else:
            r = loader_ratio(Path(tmp), workers=workers)
    print(r.line())
    _fields({"loader/per_sample_samples_per_s": r.per_sample, "loader/prepared_samples_per_s": r.prepared})
    _fields({"loader/ratio": r.ratio})


def _step(args: argparse.Namespace, base: dict) -> None:
    from orchestrator.bench.throughput import step_ratio

    r = step_ratio({**base, "epochs": 1}, rounds=3 if args.small else 7)
    print(
        f"step ratio mmbal / plain PyTorch loop (joint on {args.dataset}, {r.steps} steps per epoch, median of "
        f"{r.rounds} rounds): {1e3 * r.mmbal_s:.2f} / {1e3 * r.plain_s:.2f} ms = {r.ratio:.3f}x; "
        f"weights differ by at most {r.max_param_diff:.3g} at the end"
    )
    _fields(r.fields())


def _av(args: argparse.Namespace, base: dict) -> None:
    from orchestrator.bench.throughput import av_bench

    workers = 4 if args.workers is None else args.workers
    overrides = {k: v for k, v in base.items() if k in AV_KEYS}
    with tempfile.TemporaryDirectory(prefix="mmbal-bench-av-") as tmp:
        root = Path(args.av_dir or tmp)
        prefetch = bool(base.get("loader", {}).get("prefetch", False))
        r = av_bench(base["device"], args.small, root, workers, args.av_batch, overrides=overrides, prefetch=prefetch)
    print(
        f"av: ResNet-18 audio-visual joint on prepared CREMA-D-like data ({r.device}, batch {r.batch}, "
        f"workers {r.workers}, image {r.image_size}, {r.samples} samples/epoch): trial {r.trial_sps:.1f} samples/s, "
        f"model-only bound {r.bound_sps:.1f} samples/s, ratio {r.ratio:.2f}; data wait {100 * r.data_wait:.1f}% "
        f"of the epoch; peak memory {r.peak_mib:.0f} MiB ({r.peak_kind})"
    )
    _fields(r.fields())


def run(args: argparse.Namespace) -> int:
    import torch

    from trainables.config import apply_overrides, resolve
    from trainables.runtime import pick_device

    base = apply_overrides({"dataset": args.dataset, "epochs": args.epochs, "eval": {"missing": False}}, args.overrides)
    base["device"] = args.device
    resolve(base)  # a bad --set fails here, before anything runs
    on_cuda = pick_device(args.device).type == "cuda"
    sections = args.only or [s for s in SECTIONS if s != "av" or on_cuda or args.small]
    torch.set_num_threads(args.threads)
    if "methods" in sections:
        _methods(args, base)
    if "loader" in sections:
        _loader(args)
    if "step" in sections:
        _step(args, base)
    if "av" in sections:
        _av(args, base)
    return 0
