"""Reports of a results folder: what ``mmbal report`` writes and the sweep prints at its end.

Owns the leaderboard as data (:mod:`~orchestrator.report.leaderboard`, read from the results folder
only), how its numbers read (:mod:`~orchestrator.report.formatting`), the Markdown and CSV text
(:mod:`~orchestrator.report.text`), the PNG plots (:mod:`~orchestrator.report.plots`), the
self-contained HTML page (:mod:`~orchestrator.report.html_page`), the paired tests against joint
(:mod:`~orchestrator.report.significance`), the LaTeX table (:mod:`~orchestrator.report.latex`), every
configuration and every seed (:mod:`~orchestrator.report.details`) and the W&B summary run
(:mod:`~orchestrator.report.summary_run`). :func:`write_report` writes them all; ``mmbal report``
and the end-of-sweep leaderboard both come from here, so they always agree.
"""

from __future__ import annotations

from pathlib import Path

from orchestrator.report.details import config_rows, configs_markdown, seed_rows, to_csv
from orchestrator.report.html_page import html_page
from orchestrator.report.latex import latex_table
from orchestrator.report.leaderboard import Leaderboard, build_leaderboard
from orchestrator.report.significance import significance_markdown
from orchestrator.report.text import csv_text, markdown
from trainables.errors import ConfigError
from trainables.reporting import atomic_write_text


def leaderboard_markdown(results_dir: str | Path, select_metric: str = "val/acc", select_mode: str = "max") -> str:
    """The leaderboard of a results folder as Markdown (what the sweep prints at its end)."""
    return leaderboard_text(build_leaderboard(results_dir, select_metric, select_mode))


def leaderboard_text(lb: Leaderboard) -> str:
    """The leaderboard tables, then each method's difference to joint with its paired p-value."""
    sig = significance_markdown(lb)
    return markdown(lb) + ("\n" + sig if sig else "")


def write_report(
    results_dir: str | Path, out_dir: str | Path | None = None, select_metric: str = "val/acc", select_mode: str = "max"
) -> dict[str, Path]:
    """Write leaderboard.md (with the paired tests against joint), leaderboard.csv, leaderboard.tex,
    configs.md/.csv (every configuration tried), seeds.csv (every trial), plots/*.png and report.html
    (last) into ``out_dir``.

    Args:
        results_dir: the experiment folder.
        out_dir: where to write; default ``<results_dir>/report``.
        select_metric: validation metric that picks each method's best config.
        select_mode: ``max`` or ``min``.

    Returns:
        written files by kind: ``markdown``, ``csv``, ``html`` and ``plot/<dataset>-<kind>``.

    Raises:
        ConfigError: not a results folder, or no trial has finished yet.
    """
    # matplotlib takes ~0.4 s to import: only when figures are drawn, not on every `mmbal` start
    from orchestrator.report.plots import PLOT_KINDS, board_figures, save_png

    lb = build_leaderboard(results_dir, select_metric, select_mode)
    if not lb.completed:
        raise ConfigError(
            "EXPERIMENT_DIR", f"no trial in {results_dir} has finished yet ({len(lb.missing)} without summary.json)"
        )
    out = Path(out_dir) if out_dir is not None else Path(results_dir) / "report"
    html_path = out / "report.html"
    html_path.unlink(missing_ok=True)  # the page appears only once everything it shows is written
    written: dict[str, Path] = {"markdown": out / "leaderboard.md", "csv": out / "leaderboard.csv"}
    atomic_write_text(written["markdown"], leaderboard_text(lb))
    atomic_write_text(written["csv"], csv_text(lb))
    for kind, name, text in (
        ("latex", "leaderboard.tex", latex_table(lb)),
        ("configs", "configs.md", configs_markdown(lb)),
        ("configs_csv", "configs.csv", to_csv(*config_rows(lb))),
        ("seeds_csv", "seeds.csv", to_csv(*seed_rows(lb))),
    ):
        written[kind] = out / name
        atomic_write_text(written[kind], text)
    plots: dict[str, dict[str, Path]] = {}  # dataset -> file stem -> PNG
    for board in lb.boards:
        for stem, fig in board_figures(board).items():
            plots.setdefault(board.dataset, {})[stem] = save_png(fig, out / "plots" / f"{stem}.png")
    current = {p for per in plots.values() for p in per.values()}
    for kind in PLOT_KINDS:  # plots of an earlier report that this data no longer makes would pass for current
        for stale in (out / "plots").glob(f"*-{kind}.png"):
            if stale not in current:
                stale.unlink()
    written.update({f"plot/{stem}": p for per in plots.values() for stem, p in per.items()})
    atomic_write_text(html_path, html_page(lb, {ds: list(per.values()) for ds, per in plots.items()}))
    written["html"] = html_path
    return written
