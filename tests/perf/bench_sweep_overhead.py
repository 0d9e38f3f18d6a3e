"""What Ray costs an mmbal sweep, against the floor of doing the same with plain Ray: side by side, one Ray.

Run: ``python tests/perf/bench_sweep_overhead.py [--trials 1 3] [--epochs 2] [--skip-ddp]`` (a measurement,
not a test). With one small Ray instance (2 CPUs), for each number of trials N (one at a time):

* ``packed``: an mmbal sweep of N tiny ``joint`` trials (mfeat, ``--epochs``) against a plain Tune function
  trainable that reports the same number of epochs and does nothing else, and against one that also
  imports torch with Tune reusing its actor (what any PyTorch trial pays; mmbal packs with
  ``reuse_actors``, a plain Tuner does not by default), and against one that also builds a torch
  optimizer (what any trial that trains pays: a process's first ``torch.optim`` optimizer imports
  ``torch._dynamo``, about a second); mmbal's own trial compute
  (the same N configs run by ``run_trial`` in this process, no Ray) is subtracted from its wall time;
* ``ddp``: one mmbal DDP trial (2 workers) against a plain Tune function trainable that fits a
  ``TorchTrainer`` of 2 workers reporting the same number of epochs and doing nothing else, wrapped the
  way mmbal wraps it (``TuneReportCallback``), and against the same whose workers also build a torch
  optimizer; mmbal's compute is again subtracted (one local run).

The per-sweep cost is the wall time at the smallest N; the per-trial cost is the slope between the two N.
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
        "execution": {"max_failures": 0, **execution},
        "methods": {"joint": {}},
    }


def _mmbal(root: Path, name: str, n: int, epochs: int, execution: dict) -> tuple[float, float]:
    """(sweep wall seconds, the same trials' compute run locally without Ray)."""
    from orchestrator.run.driver import run_sweep
    from orchestrator.sweep import parse_sweep
    from trainables.loop import run_trial
    from trainables.reporting import JsonlReporter

    sweep = parse_sweep(_raw(root, name, n, epochs, execution))
    tic = time.perf_counter()
    run_sweep(sweep)
    wall = time.perf_counter() - tic
    tic = time.perf_counter()
    for i, plan in enumerate(sweep.trials[:n] if execution["mode"] == "packed" else sweep.trials[:1]):
        cfg = {k: v for k, v in plan.config.items() if k != "_meta"}
        run_trial(cfg, JsonlReporter(root / f"local-{name}-{i}"))
    return wall, time.perf_counter() - tic


def _plain_tune(root: Path, name: str, n: int, epochs: int, like_mmbal: bool = False, optimizer: bool = False) -> float:
    """A function trainable that only reports; ``like_mmbal``: it also imports torch (as any PyTorch trial
    must) and Tune reuses its actor between trials (as mmbal's packed mode does); ``optimizer``: it also
    builds a torch optimizer, which any trial that trains does (the first ``Optimizer`` of a process
    imports ``torch._dynamo``: torch wraps ``add_param_group`` in ``_disable_dynamo``; about a second)."""
    from ray import tune

    def trainable(config: dict) -> None:
        if like_mmbal:
            import torch
        if optimizer:
            torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        for e in range(epochs):
            tune.report({"epoch": e + 1})

    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space={"i": tune.grid_search(list(range(n)))},
        tune_config=tune.TuneConfig(max_concurrent_trials=1, reuse_actors=like_mmbal),
        run_config=tune.RunConfig(name=name, storage_path=str(root / "plain"), verbose=0),
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, nargs=2, default=[1, 3])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--skip-ddp", action="store_true")
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
    rows = []
    with tempfile.TemporaryDirectory(prefix="mmbal-sweep-overhead-") as tmp:
        root = Path(tmp)
        _plain_tune(root, "warmup-plain", 1, args.epochs)  # Ray's worker pool and first imports: not counted
        _mmbal(root, "warmup", 1, args.epochs, {"mode": "packed", "max_concurrent": 1})
        for n in args.trials:
            plain = _plain_tune(root, f"plain-{n}", n, args.epochs)
            torch_floor = _plain_tune(root, f"plain-torch-{n}", n, args.epochs, like_mmbal=True)
            optim_floor = _plain_tune(root, f"plain-optim-{n}", n, args.epochs, like_mmbal=True, optimizer=True)
            wall, compute = _mmbal(root, f"packed-{n}", n, args.epochs, {"mode": "packed", "max_concurrent": 1})
            rows.append(("packed", n, plain, torch_floor, optim_floor, wall, compute))
            print("ROW", rows[-1], flush=True)
        if not args.skip_ddp:
            _plain_ddp(root, "warmup-ddp", args.epochs)  # Ray Train's first start: not counted
            plain = _plain_ddp(root, "plain-ddp", args.epochs)
            optim_floor = _plain_ddp(root, "plain-ddp-optim", args.epochs, optimizer=True)
            ddp = {"mode": "ddp", "num_workers": 2, "cpus_per_worker": 1}
            wall, compute = _mmbal(root, "ddp-1", 1, args.epochs, ddp)
            rows.append(("ddp", 1, plain, float("nan"), optim_floor, wall, compute))
            print("ROW", rows[-1], flush=True)
    ray.shutdown()
    print(
        "| mode | trials | plain Ray s | plain + torch import, reused actors s | + an optimizer s | mmbal s | "
        "mmbal compute s | mmbal - compute s | ratio to plain | ratio to plain + torch | ratio to + optimizer |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for mode, n, plain, floor, optim, wall, compute in rows:
        over = wall - compute
        print(
            f"| {mode} | {n} | {plain:.1f} | {floor:.1f} | {optim:.1f} | {wall:.1f} | {compute:.1f} | {over:.1f} | "
            f"{over / plain:.2f} | {over / floor:.2f} | {over / optim:.2f} |"
        )
    packed = [r for r in rows if r[0] == "packed"]
    if len(packed) == 2:
        (_, n0, p0, f0, o0, w0, c0), (_, n1, p1, f1, o1, w1, c1) = packed
        d = n1 - n0
        per = [(p1 - p0) / d, (f1 - f0) / d, (o1 - o0) / d, ((w1 - c1) - (w0 - c0)) / d]
        print(
            f"per packed trial: plain {per[0]:.2f} s, plain + torch {per[1]:.2f} s, + optimizer {per[2]:.2f} s, "
            f"mmbal {per[3]:.2f} s"
        )
        print(
            f"per sweep (N={n0}): plain {p0:.1f} s, plain + torch {f0:.1f} s, + optimizer {o0:.1f} s, "
            f"mmbal {w0 - c0:.1f} s"
        )


if __name__ == "__main__":
    main()
