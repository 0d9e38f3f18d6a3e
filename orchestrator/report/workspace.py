"""A saved W&B workspace view of a sweep's group, so nobody sets up panels by hand (online only).

Built with ``wandb-workspaces`` (the optional extra ``mmbal[workspace]``; W&B's Workspace API is a
public preview). The view shows the sweep's runs (``Group == <experiment>``) grouped by
``config.method``, so each line is a method's mean over its runs with a std band:

- *Validation accuracy per modality*: ``val/acc`` and ``val/acc/<modality>`` against ``epoch``;
- *Imbalance*: ``val/imbalance/score_ratio`` against ``epoch``;
- *Missing modalities*: bars of ``test/missing/<present>/acc`` (summary values, as summary.json);
- *Leaderboard*: the summary run's ``leaderboard`` table.

``mmbal sync`` saves it after uploading; an online sweep saves it at its end. Without the extra, or
offline, nothing happens but one line saying how to get it; a failure is one warning line.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from orchestrator.report.leaderboard import build_leaderboard


def panels_of(results_dir: str | Path) -> tuple[list[str], list[str]]:
    """The modalities and missing-modality keys of a results folder (every dataset's, in order)."""
    lb = build_leaderboard(results_dir)
    mods = list(dict.fromkeys(m for b in lb.boards for m in b.modalities))
    missing = list(dict.fromkeys(c for b in lb.boards for c in b.columns if c.startswith("test/missing/")))
    return mods, missing


def build_workspace(experiment: str, project: str, entity: str, modalities: list[str], missing: list[str]) -> Any:
    """The ``wandb_workspaces`` Workspace object (not saved). Raises ImportError without the extra."""
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws

    def line(key: str) -> Any:
        return wr.LinePlot(
            title=key, x="epoch", y=[key], groupby_aggfunc="mean", groupby_rangefunc="stddev", legend_position="south"
        )

    sections = [
        ws.Section(
            name="Validation accuracy per modality (mean ± std over runs, per method)",
            panels=[line("val/acc"), *(line(f"val/acc/{m}") for m in modalities)],
            is_open=True,
        ),
        ws.Section(name="Imbalance", panels=[line("val/imbalance/score_ratio")], is_open=True),
    ]
    if missing:
        bars = wr.BarPlot(title="test accuracy with modalities missing", metrics=missing, groupby_aggfunc="mean")
        sections.append(ws.Section(name="Missing modalities (test)", panels=[bars], is_open=True))
    sections.append(
        ws.Section(name="Leaderboard", panels=[wr.WeavePanelSummaryTable(table_name="leaderboard")], is_open=True)
    )
    return ws.Workspace(
        entity=entity,
        project=project,
        name=f"mmbal {experiment}"[:128],
        sections=sections,
        runset_settings=ws.RunsetSettings(
            filters=ws.And(ws.Metric("Group") == experiment), groupby=[ws.Config("method")]
        ),
    )


def save_workspace(results_dir: str | Path, project: str, experiment: str, entity: str | None = None) -> str | None:
    """Save the view online; returns its URL, or None (a line on stderr says why)."""
    try:
        import wandb_workspaces  # noqa: F401
    except ImportError:
        print("mmbal: no W&B workspace view (pip install 'mmbal[workspace]' to get one)", file=sys.stderr)
        return None
    try:
        import wandb

        entity = entity or wandb.Api().default_entity
        view = build_workspace(experiment, project, entity, *panels_of(results_dir))
        view.save()
        return str(view.url)
    except Exception as exc:  # W&B must never fail a sync or a sweep
        print(f"mmbal: warning: W&B workspace view not saved ({type(exc).__name__}: {exc})", file=sys.stderr)
        return None
