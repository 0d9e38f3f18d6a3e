"""``mmbal sweep SWEEP.yaml``: check the sweep in full, then run it (local, packed or ddp) and print the leaderboard.

``SWEEP`` may also be an experiment's results folder or name (``results/<experiment>/sweep.yaml``, which
holds absolute paths), so ``mmbal sweep --resume results/my_exp`` continues a sweep from any directory.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.cli import add_command, add_overrides
from trainables.errors import ConfigError

if TYPE_CHECKING:
    from orchestrator.sweep import Sweep

EXAMPLES = """
  mmbal sweep sweeps/quickstart.yaml --dry-run      # the trial table, nothing run
  mmbal sweep sweeps/quickstart.yaml                # run on a Ray started here, then the leaderboard
  mmbal sweep sweeps/quickstart.yaml --set epochs=2 --set execution.mode=local   # no Ray, for debugging
  mmbal sweep results/quickstart --resume           # continue an interrupted sweep (from any directory)
  mmbal sweep my_sweep.yaml --address auto          # on the running cluster (ray up cluster.yaml)
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "sweep", "run a sweep YAML (Ray Tune; execution.mode local runs without Ray)", EXAMPLES)
    p.add_argument("sweep", metavar="SWEEP", help="sweep file, or an experiment's results folder (or name) to resume")
    add_overrides(p, "--set epochs=2 --set execution.mode=local --set methods.joint.optim.lr=0.05")
    p.add_argument(
        "--address", default=None, help="Ray cluster to join (auto = the local cluster's head); default: start Ray here"
    )
    p.add_argument(
        "--resume", action="store_true", help="continue an interrupted sweep: finished trials are kept, the rest resume"
    )
    p.add_argument("--dry-run", action="store_true", help="print the trials the sweep would run, and exit")
    p.add_argument(
        "--verbose", action="store_true", help="Tune's own tables and Ray's and the trials' log lines (default: off)"
    )
    p.set_defaults(func=run)


def resume_command(args: argparse.Namespace) -> str:
    """The command that continues this sweep: same file, same --set and --plugin values, --resume."""
    parts = ["mmbal", "sweep", args.sweep, *(a for o in args.overrides for a in ("--set", o))]
    parts += [a for p in getattr(args, "plugins", None) or [] for a in ("--plugin", p)]
    if args.address:
        parts += ["--address", args.address]
    return shlex.join([*parts, "--resume"])


def sweep_file(arg: str) -> Path:
    """The sweep file named by ``arg``: itself, ``arg/sweep.yaml`` or ``results/arg/sweep.yaml``."""
    p = Path(arg)
    for candidate in (p, p / "sweep.yaml", Path("results") / arg / "sweep.yaml"):
        if candidate.is_file():
            return candidate
    raise ConfigError("SWEEP", f"no such sweep file or experiment folder: {arg}")


def trial_table(sweep: Sweep) -> list[str]:
    """One row per trial: index, method, seed and the settings that vary between the trials of its method."""
    s = sweep.keys.search
    if not sweep.trials:  # optuna/hyperopt draw their trials while they run
        spaces = "; ".join(f"{label}: {space}" for label, space in sweep.spaces.items())
        return [f"{s.samples} {s.searcher} trials over {spaces}"]
    from orchestrator.results import flatten

    flats = [flatten(p.config) for p in sweep.trials]
    varied: dict[str, list[str]] = {}  # label -> keys whose values differ between its trials
    for label in {p.label for p in sweep.trials}:
        group = [f for p, f in zip(sweep.trials, flats, strict=True) if p.label == label]
        keys = sorted({k for f in group for k in f} - {"seed"})
        varied[label] = [k for k in keys if len({repr(f.get(k)) for f in group}) > 1]
    rows = [["#", "method", "seed", "varied"]]
    for plan, f in zip(sweep.trials, flats, strict=True):
        cell = " ".join(f"{k.removeprefix('params.')}={f.get(k)}" for k in varied[plan.label])
        rows.append([str(plan.index), plan.method, str(plan.config["seed"]), cell])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def run(args: argparse.Namespace) -> int:
    from orchestrator.sweep import load_sweep

    path = sweep_file(args.sweep)
    sweep = load_sweep(path, args.overrides, args.plugins)  # every problem is reported before Ray starts
    if args.dry_run:
        ex = sweep.keys.execution
        print("\n".join(trial_table(sweep)))
        n = len(sweep.trials) or sweep.keys.search.samples
        print(f"{n} trials of experiment {sweep.experiment}; execution {ex.mode}; results in {sweep.results_dir}")
        return 0
    from orchestrator.run.driver import run_sweep
    from orchestrator.run.interrupt import SweepInterrupted
    from trainables.errors import Interrupted

    try:
        out = run_sweep(sweep, resume=args.resume, address=args.address, verbose=args.verbose)
    except SweepInterrupted as exc:
        raise Interrupted(f"interrupted with {exc}; resume with: {resume_command(args)}") from None
    return 0 if all(s not in ("error", "diverged") for s in out["status"].values()) else 1
