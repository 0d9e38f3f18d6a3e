"""What Ray costs an mmbal sweep, against the floor of doing the same with plain Ray: side by side, one Ray.

Run: ``python tests/perf/bench_sweep_overhead.py [--trials 1 3] [--epochs 2] [--rounds 1] [--skip-ddp]``
(a measurement, not a test). With one small Ray instance (2 CPUs), for each number of trials N (one at a time):

* ``packed``: an mmbal sweep of N tiny ``joint`` trials (mfeat, ``--epochs``) against a plain Tune function
  trainable that reports the same number of epochs and does nothing else, and against one that also
  imports torch with Tune reusing its actor (what any PyTorch trial pays; mmbal packs with
  ``reuse_actors``, a plain Tuner does not by default), and against one that also builds a torch
  optimizer (what any trial that trains pays: a process's first ``torch.optim`` optimizer imports
  ``torch._dynamo``, about a second), and against one that also sends a checkpoint with each report
  (0.5 MB, as mmbal's default ``checkpoint.every: 1`` does); mmbal's own trial compute
  (the same N configs run by ``run_trial`` in this process, no Ray) is subtracted from its wall time;
* ``ddp``: one mmbal DDP trial (2 workers) against a plain Tune function trainable that fits a
  ``TorchTrainer`` of 2 workers reporting the same number of epochs and doing nothing else, wrapped the
  way mmbal wraps it (``TuneReportCallback``), and against the same whose workers also build a torch
  optimizer; mmbal's compute is again subtracted (one local run).

The per-sweep cost is the wall time at the smallest N; the per-trial cost is the slope between the two N,
and (less moved by other load on the machine) the median gap between consecutive trial ends at the larger N
(for mmbal less its median local compute of one trial). ``--tune-loggers both`` (the default) runs each
mmbal sweep twice, with Tune's JSON/CSV/TensorBoardX loggers (``execution.tune_loggers: true``) and
without (``false``), alternating which goes first; ``on``/``off`` runs one (the floors keep Tune's
default loggers, as a plain Tuner has them). ``--rounds R`` repeats the packed part R times and
reports medians: on a shared machine single sweeps vary by seconds.
One unmeasured sweep of each kind runs first (Ray's worker start-up and first imports; for DDP a plain
one, so that neither side pays the first read of Ray Train's files).

mmbal's packages are byte-compiled first (``compileall``, into their ``__pycache__``), as pip and any first
import leave them: where ``PYTHONDONTWRITEBYTECODE`` is set (this project's sandbox sets it) every new
Ray worker would otherwise compile mmbal's sources again (~0.25 s a process) while torch and Ray load
their installed bytecode. ``--no-precompile`` measures that case.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

TINY = {"train_per_class": 5, "val_per_class": 6, "test_per_class": 4}


def _raw(root: Path, name: str, n: int, epochs: int, execution: dict) -> dict:
    return {
        "experiment": name,
        "results": str(root / "results"),
        "dataset": "mfeat",
        "epochs": epochs,
        "seeds": list(range(n)),
        "data": dict(TINY),
        "model": {"feature_dim": 16},
        "loader": {"batch_size": 16},
        "tracking": "none",
        "execution": {"max_failures": 0, "tune_loggers": True, **execution},
        "methods": {"joint": {}},
    }


ENDS: dict[str, list[float]] = {}  # experiment -> the times its trials completed (driver side)
COMPUTE: dict[str, list[float]] = {}  # mmbal experiment -> each trial's local compute seconds


def _steady(name: str) -> float:
    """Median seconds between consecutive trial ends after the first trial (a trial's whole cost once
    the actor runs; a median, so that a load spike from elsewhere on the machine moves it little)."""
    ends = sorted(ENDS[name])
    gaps = sorted(b - a for a, b in zip(ends, ends[1:], strict=False))
    return gaps[len(gaps) // 2] if gaps else float("nan")


def _ends_callback(name: str):
    from ray import tune

    class Ends(tune.Callback):
        def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
            ENDS.setdefault(name, []).append(time.time())

    return Ends()


def _mmbal(root: Path, name: str, n: int, epochs: int, execution: dict) -> tuple[float, float]:
    """(sweep wall seconds, the same trials' compute run locally without Ray); the trials' end times
    (their ``summary.json``, written when Tune reports them complete) go to ``ENDS``."""
    from orchestrator.run.driver import run_sweep
    from orchestrator.sweep import parse_sweep
    from trainables.loop import run_trial
    from trainables.reporting import JsonlReporter

    sweep = parse_sweep(_raw(root, name, n, epochs, execution))
    tic = time.perf_counter()
    run_sweep(sweep)
    wall = time.perf_counter() - tic
    ENDS[name] = [p.stat().st_mtime for p in (root / "results" / name / "trials").glob("*/summary.json")]
    COMPUTE[name] = []
    for i, plan in enumerate(sweep.trials[:n] if execution["mode"] == "packed" else sweep.trials[:1]):
        cfg = {k: v for k, v in plan.config.items() if k != "_meta"}
        tic = time.perf_counter()
        run_trial(cfg, JsonlReporter(root / f"local-{name}-{i}"))
        COMPUTE[name].append(time.perf_counter() - tic)
    return wall, sum(COMPUTE[name])


def _plain_tune(
    root: Path,
    name: str,
    n: int,
    epochs: int,
    like_mmbal: bool = False,
    optimizer: bool = False,
    checkpoint: bool = False,
) -> float:
    """A function trainable that only reports; ``like_mmbal``: it also imports torch (as any PyTorch trial
    must) and Tune reuses its actor between trials (as mmbal's packed mode does); ``optimizer``: it also
    builds a torch optimizer, which any trial that trains does (the first ``Optimizer`` of a process
    imports ``torch._dynamo``: torch wraps ``add_param_group`` in ``_disable_dynamo``; about a second);
    ``checkpoint``: each report also carries a checkpoint of the size of these trials' state (0.5 MB,
    ``torch.save`` into a temporary folder, Tune keeping 2), as mmbal's default ``checkpoint.every: 1``."""
    from ray import tune

    def trainable(config: dict) -> None:
        if like_mmbal:
            import torch
        if optimizer:
            torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        for e in range(epochs):
            if not checkpoint:
                tune.report({"epoch": e + 1})
                continue
            with tempfile.TemporaryDirectory() as d:
                torch.save({"state": torch.zeros(132_000)}, os.path.join(d, "state.pt"))
                tune.report({"epoch": e + 1}, checkpoint=tune.Checkpoint.from_directory(d))

    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space={"i": tune.grid_search(list(range(n)))},
        tune_config=tune.TuneConfig(max_concurrent_trials=1, reuse_actors=like_mmbal),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(root / "plain"),
            verbose=0,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            callbacks=[_ends_callback(name)],
        ),
    )
    tic = time.perf_counter()
    tuner.fit()
    return time.perf_counter() - tic


def _worker_reports(config: dict) -> None:
    import ray.train

    if config.get("optimizer"):
        import torch

        torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    for e in range(config["epochs"]):
        ray.train.report({"epoch": e + 1})


def _plain_ddp(root: Path, name: str, epochs: int, optimizer: bool = False) -> float:
    import ray.train
    from ray import tune
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    def trainable(config: dict) -> None:
        TorchTrainer(
            _worker_reports,
            train_loop_config={"epochs": epochs, "optimizer": optimizer},
            scaling_config=ray.train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
            run_config=ray.train.RunConfig(
                name=f"{name}-{tune.get_context().get_trial_id()}",
                storage_path=str(root / "plain-ddp"),
                callbacks=[TuneReportCallback()],
            ),
        ).fit()

    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 0, "memory": 2**20}),
        run_config=tune.RunConfig(name=name, storage_path=str(root / "plain"), verbose=0),
    )
    tic = time.perf_counter()
    tuner.fit()
    return time.perf_counter() - tic


LOGGERS = {"on": ("mmbal",), "off": ("mmbal, loggers off",), "both": ("mmbal", "mmbal, loggers off")}
FLOORS = ("plain Ray", "plain + torch import, reused actors", "+ an optimizer", "+ a checkpoint per epoch")


def _median(xs: list[float]) -> float:
    xs = sorted(x for x in xs if x == x)
    if not xs:
        return float("nan")
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, nargs=2, default=[1, 3])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1, help="repeat the packed part; medians are reported")
    ap.add_argument("--skip-ddp", action="store_true")
    ap.add_argument("--tune-loggers", choices=sorted(LOGGERS), default="both", help="mmbal's execution.tune_loggers")
    ap.add_argument("--no-precompile", action="store_true", help="leave mmbal's bytecode as it is")
    args = ap.parse_args()
    if not args.no_precompile:
        import compileall

        import orchestrator
        import trainables

        for pkg in (orchestrator, trainables):
            compileall.compile_dir(Path(pkg.__file__).parent, quiet=1)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20, log_to_driver=False)
    n0, n1 = args.trials
    got: dict[tuple[str, int], list[float]] = {}  # (what, N) -> seconds, one per round

    def add(what: str, n: int, value: float) -> None:
        got.setdefault((what, n), []).append(value)

    ddp = None
    with tempfile.TemporaryDirectory(prefix="mmbal-sweep-overhead-") as tmp:
        root = Path(tmp)
        _plain_tune(root, "warmup-plain", 1, args.epochs)  # Ray's worker pool and first imports: not counted
        _mmbal(root, "warmup", 1, args.epochs, {"mode": "packed", "max_concurrent": 1})
        for r in range(args.rounds):
            for n in args.trials:
                kinds = [{}, {"like_mmbal": True}, {"like_mmbal": True, "optimizer": True}]
                kinds.append({"like_mmbal": True, "optimizer": True, "checkpoint": True})
                for floor, kw in zip(FLOORS, kinds, strict=True):
                    name = f"{floor}-{n}-{r}"
                    add(floor, n, _plain_tune(root, name, n, args.epochs, **kw))
                    add(f"steady {floor}", n, _steady(name))
                for mine in LOGGERS[args.tune_loggers][:: -1 if r % 2 else 1]:
                    name = f"packed-{n}-{r}-{mine.replace(' ', '').replace(',', '')}"
                    spec = {"mode": "packed", "max_concurrent": 1, "tune_loggers": mine == "mmbal"}
                    wall, compute = _mmbal(root, name, n, args.epochs, spec)
                    add(mine, n, wall - compute)
                    add(f"{mine} compute", n, compute)
                    add(f"steady {mine}", n, _steady(name) - _median(COMPUTE[name][1:]))
                print("ROUND", r, n, {k[0]: round(v[-1], 2) for k, v in got.items() if k[1] == n}, flush=True)
        if not args.skip_ddp:
            _plain_ddp(root, "warmup-ddp", args.epochs)  # Ray Train's first start: not counted
            plain = _plain_ddp(root, "plain-ddp", args.epochs)
            optim_floor = _plain_ddp(root, "plain-ddp-optim", args.epochs, optimizer=True)
            ddp = (plain, optim_floor, {})
            for mine in LOGGERS[args.tune_loggers]:
                spec = {"mode": "ddp", "num_workers": 2, "cpus_per_worker": 1, "tune_loggers": mine == "mmbal"}
                ddp[2][mine] = _mmbal(root, f"ddp-1-{len(ddp[2])}", 1, args.epochs, spec)
    ray.shutdown()
    med = {k: _median(v) for k, v in got.items()}
    print(f"\nmedians of {args.rounds} round(s), seconds (mmbal: wall less its compute run locally)")
    mines = LOGGERS[args.tune_loggers]
    print(f"| | {' | '.join(FLOORS + mines)} | {' | '.join(f'{m} / each floor' for m in mines)} |")
    print("|---|" + "---:|" * (len(FLOORS) + len(mines)) + "---|" * len(mines))

    def line(label: str, values: list[float], mine: list[float], fmt: str = ".1f") -> None:
        ratios = " | ".join(" / ".join(f"{m / v:.2f}" for v in values) for m in mine)
        print(f"| {label} | {' | '.join(format(v, fmt) for v in values + mine)} | {ratios} |")

    for n in args.trials:
        line(f"sweep of {n} packed trial(s)", [med[(f, n)] for f in FLOORS], [med[(m, n)] for m in mines])
    d = n1 - n0
    slope = [(med[(f, n1)] - med[(f, n0)]) / d for f in FLOORS]
    line("per extra packed trial (slope)", slope, [(med[(m, n1)] - med[(m, n0)]) / d for m in mines], ".2f")
    steady = [med[(f"steady {f}", n1)] for f in FLOORS]
    mine_steady = [med[(f"steady {m}", n1)] for m in mines]
    line(f"per packed trial (median gap between trial ends, N={n1})", steady, mine_steady, ".3f")
    if ddp is not None:
        plain, optim_floor, runs = ddp
        print(f"\nDDP, 1 trial of 2 workers: plain TorchTrainer-in-Tune {plain:.1f} s, workers building an ", end="")
        print(f"optimizer {optim_floor:.1f} s")
        for m, (wall, compute) in runs.items():
            print(f"  {m}: {wall - compute:.1f} s (wall {wall:.1f} less compute {compute:.1f}): ", end="")
            print(f"{(wall - compute) / plain:.2f} / {(wall - compute) / optim_floor:.2f}")


if __name__ == "__main__":
    main()
