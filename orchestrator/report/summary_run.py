"""The W&B summary run of a sweep: the leaderboard as a ``wandb.Table`` and the report plots as images.

It joins the sweep's group (the per-trial runs of :mod:`orchestrator.tracking` use the same group), so
the dashboard shows the comparison next to the trial curves. Offline by default; ``wandb sync`` the
printed folder to upload. W&B is a convenience here: any failure is one warning line, never an error.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from orchestrator.report import write_report
from orchestrator.report.leaderboard import Leaderboard, build_leaderboard
from orchestrator.report.text import csv_rows
from orchestrator.tracking import bounded_settings, run_id


def _table_data(lb: Leaderboard) -> tuple[list[str], list[list[Any]]]:
    """CSV header and rows with ``None`` for no value (W&B tables reject mixing "" into number columns)."""
    header, rows = csv_rows(lb)
    return header, [[None if v == "" else v for v in r] for r in rows]


def log_summary_run(
    results_dir: str | Path,
    project: str,
    group: str,
    mode: str | None = None,
    wandb_dir: str | Path | None = None,
    report_dir: str | Path | None = None,
    select_metric: str = "val/acc",
    select_mode: str = "max",
    files: dict[str, Path] | None = None,
    entity: str | None = None,
    timeout_s: float = 15.0,
) -> Path | None:
    """Create one W&B run in ``group`` carrying the leaderboard table and the plots.

    Args:
        results_dir: the experiment folder.
        project: W&B project.
        group: the sweep's W&B group (the experiment name for ``mmbal sweep``).
        mode: ``offline`` (default unless ``WANDB_MODE`` says otherwise), ``online`` or ``disabled``.
        wandb_dir: where W&B writes its run folder; default ``results_dir``.
        report_dir: where the report files are (re)written; default ``<results_dir>/report``.
        select_metric: validation metric that picks each method's best config.
        select_mode: ``max`` or ``min``.
        files: what :func:`~orchestrator.report.write_report` returned, when the caller already wrote
            the report; otherwise it is written here first.
        entity: W&B entity (team or user); default the account's.
        timeout_s: bound on W&B's init/finish and network waits, so a sweep never hangs on W&B.

    Returns:
        the local run folder (``.../wandb/offline-run-...``), or ``None`` when W&B failed (a warning
        line on stderr says why; the caller goes on).
    """
    run = None
    mode = mode or os.environ.get("WANDB_MODE") or "offline"
    if mode == "disabled":  # a disabled run still "succeeds" and would hand back a meaningless folder
        print("mmbal: W&B is disabled (mode 'disabled'): no summary run", file=sys.stderr)
        return None
    try:
        import wandb  # inside the guard: a broken W&B install is one warning line, not a failed report

        files = files or write_report(results_dir, report_dir, select_metric, select_mode)
        lb = build_leaderboard(results_dir, select_metric, select_mode)
        settings = bounded_settings(timeout_s)
        run = wandb.init(
            project=project,
            entity=entity,
            group=group,
            name=f"{group}-summary",
            # one summary run per group: a later report resumes it and its latest table is the current one
            id=run_id(group, "summary"),
            resume="allow",
            job_type="summary",
            mode=mode,
            dir=str(wandb_dir or results_dir),
            config={"experiment": lb.experiment, "select_metric": select_metric, "select_mode": select_mode},
            reinit="create_new",  # never finishes a run the caller may still hold
            settings=settings,
        )
        header, rows = _table_data(lb)
        payload: dict[str, Any] = {"leaderboard": wandb.Table(columns=header, data=rows)}
        payload.update(
            {f"plots/{k.split('/', 1)[1]}": wandb.Image(str(p)) for k, p in files.items() if k.startswith("plot/")}
        )
        run.log(payload)
        for b in lb.boards:
            for e in b.entries:
                run.summary[f"{b.dataset}/{e.method}/test/acc"] = e.metrics["test/acc"].mean
        run.summary["trials/completed"] = len(lb.completed)
        run.summary["trials/missing"] = len(lb.missing)
        folder = Path(run.dir).parent
        run.finish()
        return folder
    except Exception as exc:  # W&B must never break a sweep or a report
        print(f"mmbal: warning: W&B summary run not written ({type(exc).__name__}: {exc})", file=sys.stderr)
        if run is not None:
            try:
                run.finish(exit_code=1)
            except Exception:
                pass  # the warning above already says the run failed
        return None
