"""``mmbal report EXPERIMENT_DIR [--out DIR]``: leaderboard (Markdown, CSV), plots and an HTML page."""

from __future__ import annotations

import argparse
from pathlib import Path

from orchestrator.cli import add_command

EXAMPLES = """
  mmbal report results/quickstart                   # leaderboard, CSV, plots, report.html in results/quickstart/report
  mmbal report results/quickstart --wandb           # and a W&B summary run next to the trials' curves
  mmbal report results/quickstart --readme          # the README's results table, naming the machine
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "report", "leaderboard (mean ± std over seeds), plots and an HTML page of a results folder", EXAMPLES
    )
    p.add_argument("experiment_dir", metavar="EXPERIMENT_DIR", help="results folder of a sweep (results/<experiment>)")
    p.add_argument("--out", default=None, help="output folder (default EXPERIMENT_DIR/report)")
    p.add_argument("--select-metric", default="val/acc", help="validation metric that picks each method's best config")
    p.add_argument("--select-mode", default="max", choices=["max", "min"])
    p.add_argument(
        "--readme", action="store_true", help="print the README's results table (with the machine) and write readme.md"
    )
    p.add_argument("--wandb", action="store_true", help="also log a W&B summary run (offline unless WANDB_MODE=online)")
    p.add_argument(
        "--wandb-project", default=None, help="W&B project (default: the sweep's tracking.project, else mmbal)"
    )
    p.add_argument("--wandb-group", default=None, help="W&B group of the sweep (default: the experiment folder name)")
    p.set_defaults(func=run)


def sweep_project(experiment_dir: str | Path) -> str:
    """The W&B project the sweep logged to (``tracking.project`` of its ``sweep.yaml``), else ``mmbal``."""
    import yaml

    try:
        tracking = (yaml.safe_load((Path(experiment_dir) / "sweep.yaml").read_text()) or {}).get("tracking")
    except (OSError, yaml.YAMLError, AttributeError):
        return "mmbal"
    return str(tracking.get("project") or "mmbal") if isinstance(tracking, dict) else "mmbal"


def run(args: argparse.Namespace) -> int:
    from orchestrator.report import leaderboard_markdown, write_report
    from orchestrator.report.summary_run import log_summary_run

    if args.readme:
        from orchestrator.report.readme import write_readme

        text, path = write_readme(args.experiment_dir, args.out, args.select_metric, args.select_mode)
        print(text, end="")
        print(f"wrote readme table: {path}")
        return 0
    files = write_report(args.experiment_dir, args.out, args.select_metric, args.select_mode)
    print(leaderboard_markdown(args.experiment_dir, args.select_metric, args.select_mode))
    for kind, path in files.items():
        print(f"wrote {kind}: {path}")
    if args.wandb:
        group = args.wandb_group or Path(args.experiment_dir).resolve().name
        folder = log_summary_run(
            args.experiment_dir,
            args.wandb_project or sweep_project(args.experiment_dir),
            group,
            select_metric=args.select_metric,
            select_mode=args.select_mode,
            files=files,
        )
        if folder is not None:
            upload = f" (upload with `wandb sync {folder}`)" if folder.name.startswith("offline-") else ""
            print(f"W&B summary run in group {group!r}: {folder}{upload}")
    return 0
