"""``mmbal sync EXPERIMENT``: upload a sweep's offline W&B runs (``wandb sync``)."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from orchestrator.cli import add_command
from trainables.errors import ConfigError

EXAMPLES = """
  mmbal sync quickstart                             # the runs of results/quickstart
  mmbal sync quickstart --results /data/results --dry-run
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "sync", "upload the offline W&B runs of an experiment", EXAMPLES)
    p.add_argument("experiment", metavar="EXPERIMENT", help="experiment name (under --results) or its folder")
    p.add_argument("--results", default=None, help="results folder of the sweep (default results)")
    p.add_argument("--dry-run", action="store_true", help="list the run folders without uploading")
    p.set_defaults(func=run)


def _is_experiment(p: Path) -> bool:
    return (p / "sweep.yaml").exists() or (p / "wandb").is_dir()


def experiment_dir(name: str, results: str | None) -> Path:
    """``--results``/NAME when ``--results`` is given (it wins over a same-named folder here), else NAME
    itself if it is an experiment folder, else results/NAME."""
    under = Path(results or "results") / name
    candidates = [under, Path(name)] if results else [Path(name), under]
    return next((p for p in candidates if _is_experiment(p)), under)


def run(args: argparse.Namespace) -> int:
    from orchestrator.tracking import offline_runs

    folder = experiment_dir(args.experiment, args.results)
    runs = offline_runs(folder)
    if not runs:
        raise ConfigError(
            "EXPERIMENT", f"no W&B runs under {folder / 'wandb'} (was tracking: none, or another --results?)"
        )
    if args.dry_run:
        print("\n".join(str(r) for r in runs))
        return 0
    exe = shutil.which("wandb") or str(Path(sys.executable).parent / "wandb")
    print(f"uploading {len(runs)} W&B run(s) from {folder / 'wandb'}")
    rc = subprocess.call([exe, "sync", *map(str, runs)])
    if rc == 0 and (folder / "trials").is_dir():  # uploaded: a saved workspace view of the group (optional extra)
        from orchestrator.commands.report import sweep_project
        from orchestrator.report.workspace import save_workspace

        url = save_workspace(folder, sweep_project(folder), folder.resolve().name)
        if url:
            print(f"W&B workspace view: {url}")
    return rc
