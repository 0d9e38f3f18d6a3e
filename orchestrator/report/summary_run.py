"""The W&B summary run of a sweep: native W&B charts, the leaderboard as a ``wandb.Table``, the report plots.

It joins the sweep's group (the per-trial runs of :mod:`orchestrator.tracking` use the same group), so
the dashboard shows the comparison next to the trial curves, and goes to the sweep's
``tracking.project``. Its id carries the sweep instance (:func:`orchestrator.tracking.instance_id`):
a later report of the same results folder continues it, another copy of the experiment gets its own.

What it shows, with no panel set up by hand:

- ``charts/<dataset>/val_acc/<fused|modality>``: line charts (``wandb.plot.line_series``), one per
  modality and one for the fused model, a line per method: validation accuracy over epochs, mean over
  the seeds of the method's chosen config (the same series as the report's PNG);
- ``charts/<dataset>/imbalance``: the validation score ratio over epochs, a line per method;
- ``leaderboard``: the leaderboard as a ``wandb.Table`` (the CSV's columns);
- ``plots/<dataset>-<kind>``: the report's PNGs (with seed bands and unimodal references).

Offline by default; ``mmbal sync`` (or ``wandb sync`` of the printed folder) uploads it. W&B is a
convenience here: any failure is one warning line, never an error.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from orchestrator.report import write_report
from orchestrator.report.leaderboard import DatasetBoard, Leaderboard, build_leaderboard
from orchestrator.report.text import csv_rows
from orchestrator.tracking import bounded_settings, instance_id, run_id


def line_series(board: DatasetBoard) -> dict[str, tuple[str, list[list[int]], list[list[float]], list[str]]]:
    """Native line charts of one dataset: key -> (title, xs per method, ys per method, method names).

    Each line is the mean over the seeds of a method's chosen config, as in the report's PNGs.
    """
    from orchestrator.report.plots import epoch_series  # matplotlib: only when a summary run is made

    panels = [("fused", "val/acc"), *((m, f"val/acc/{m}") for m in board.modalities)]
    panels.append(("imbalance", "val/imbalance/score_ratio"))
    out = {}
    for name, key in panels:
        xs, ys, keys = [], [], []
        for e in sorted(board.entries, key=lambda e: e.method):
            epochs, means, _ = epoch_series(e.trials, key)
            if epochs:
                xs.append(epochs)
                ys.append(means)
                keys.append(e.method)
        if keys:
            chart = f"charts/{board.dataset}/" + ("imbalance" if name == "imbalance" else f"val_acc/{name}")
            out[chart] = (f"{board.dataset}: {key} per method (mean over seeds)", xs, ys, keys)
    return out


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
            # one summary run per sweep instance: a later report resumes it and its latest table is the
            # current one; another copy of the same experiment name has its own instance id
            id=run_id(f"{group}-{instance_id(results_dir)}", "summary"),
            tags=["summary", group[:64]],
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
        for b in lb.boards:
            for key, (title, xs, ys, keys) in line_series(b).items():
                payload[key] = wandb.plot.line_series(xs=xs, ys=ys, keys=keys, title=title, xname="epoch")
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
