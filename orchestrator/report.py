"""Reports of a results folder: leaderboard (Markdown, CSV), PNG plots and one self-contained HTML page.

``mmbal report`` and the end-of-sweep leaderboard both come from here, so they always agree.
The numbers come from :mod:`orchestrator.leaderboard`; this module only formats and writes them.
Accuracies and F1 are shown in percent, the score ratio as is, the gain in percentage points.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from orchestrator.leaderboard import BASELINE, DatasetBoard, Entry, Leaderboard, Stat, build_leaderboard
from trainables.errors import ConfigError
from trainables.reporting import atomic_write_text

DASH = "–"


def is_fraction(key: str) -> bool:
    """Metrics shown in percent: accuracies and F1 (``acc_gap`` and ratios stay as they are)."""
    parts = key.split("/")
    return "acc" in parts or "f1" in parts


def fmt_stat(key: str, s: Stat) -> str:
    """``61.0 ± 2.3`` (percent for accuracies); no ± part for a single seed, a dash for no value."""
    if s.n == 0 or math.isnan(s.mean):
        return DASH
    scale, digits = (100.0, 1) if is_fraction(key) else (1.0, 3)
    std = f"{s.std * scale:.{digits}f}" if s.n > 1 else DASH
    return f"{s.mean * scale:.{digits}f} ± {std}"


def column_title(key: str) -> str:
    parts = key.split("/")
    if key == "test/acc":
        return "test acc %"
    if key == "test/f1":
        return "macro-F1 %"
    if key == "test/imbalance/score_ratio":
        return "score ratio"
    if parts[1] == "missing":
        return f"only {parts[2]} %"
    if parts[1] == "acc" and len(parts) == 3:
        return f"acc {parts[2]} %"
    return key


def table(lb: Leaderboard, board: DatasetBoard) -> tuple[list[str], list[list[str]]]:
    """Header and formatted cells of one dataset's table (shared by Markdown and HTML)."""
    header = ["method", "config", "seeds", f"{lb.select_metric} (selects)", *map(column_title, board.columns)]
    if board.weak:
        header.append(f"Δ acc {board.weak} vs {BASELINE} (pp)")
    rows = []
    for e in board.entries:
        cfg = e.config_id if e.n_configs == 1 else f"{e.config_id}: {e.label} (best of {e.n_configs})"
        row = [
            e.method,
            cfg,
            str(len(e.trials)),
            fmt_stat(lb.select_metric, e.select),
            *(fmt_stat(c, e.metrics[c]) for c in board.columns),
        ]
        if board.weak:
            row.append("ref" if e.method == BASELINE else _gain(e))
        rows.append(row)
    return header, rows


def _gain(e: Entry) -> str:
    return DASH if e.gain is None or math.isnan(e.gain) else f"{e.gain * 100:+.1f}"


def status_line(lb: Leaderboard) -> str:
    total = len(lb.completed) + len(lb.missing)
    if not lb.missing:
        return f"All {total} trials finished."
    return f"Partial: {len(lb.completed)} of {total} trials finished; {len(lb.missing)} without summary.json (listed below)."


def method_line(lb: Leaderboard) -> str:
    return (
        f"Per method, the configuration with the best mean {lb.select_metric} ({lb.select_mode}) over seeds; "
        "its test metrics as mean ± sample std (ddof=1) over seeds. "
        "Columns 'only X': test accuracy with only modalities X present."
    )


def board_title(board: DatasetBoard) -> str:
    if board.weak:
        return f"{board.dataset} (weak modality: {board.weak}, lowest per-modality test accuracy under {BASELINE})"
    return f"{board.dataset} (no {BASELINE} baseline in these results: no gain column)"


def missing_lines(lb: Leaderboard) -> list[str]:
    out = []
    for t in lb.missing:
        epochs = t.config.get("epochs", "?")
        out.append(
            f"{t.trial_id}: {t.method}, seed {t.seed}, {len(t.history)} of {epochs} epochs logged (running, stopped or failed)"
        )
    return out


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown(lb: Leaderboard) -> str:
    """The leaderboard as Markdown: one table per dataset, then the missing trials."""
    lines = [f"# Leaderboard: {lb.experiment}", "", status_line(lb), method_line(lb), ""]
    if not lb.boards:
        lines += ["No trial has finished yet.", ""]
    for board in lb.boards:
        header, rows = table(lb, board)
        lines += [
            f"## {board_title(board)}",
            "",
            "| " + " | ".join(map(_md_cell, header)) + " |",
            "|" + "|".join("---" if i < 2 else "--:" for i in range(len(header))) + "|",
        ]
        lines += ["| " + " | ".join(map(_md_cell, r)) + " |" for r in rows]
        lines.append("")
    if lb.missing:
        lines += [f"## Missing ({len(lb.missing)} trials without summary.json)", ""]
        lines += [f"- {line}" for line in missing_lines(lb)]
        lines.append("")
    return "\n".join(lines)


def csv_rows(lb: Leaderboard) -> tuple[list[str], list[list[object]]]:
    """Raw numbers (fractions, full precision): one row per dataset and method; empty cells for no value."""
    metrics = list(dict.fromkeys(c for b in lb.boards for c in b.columns))
    header = [
        "dataset",
        "method",
        "config_id",
        "config",
        "n_configs",
        "n_seeds",
        "seeds",
        "select_metric",
        "select_mean",
        "select_std",
    ]
    header += [f"{m}/{part}" for m in metrics for part in ("mean", "std")]
    header += ["weak_modality", "gain_weak_vs_joint"]
    num = lambda x: "" if x is None or math.isnan(x) else x  # noqa: E731
    rows: list[list[object]] = []
    for b in lb.boards:
        for e in b.entries:
            row: list[object] = [
                b.dataset,
                e.method,
                e.config_id,
                e.label,
                e.n_configs,
                len(e.trials),
                ";".join(map(str, e.seeds)),
                lb.select_metric,
                num(e.select.mean),
                num(e.select.std),
            ]
            for m in metrics:
                s = e.metrics.get(m, Stat(math.nan, math.nan, 0))
                row += [num(s.mean), num(s.std)]
            rows.append(row + [b.weak or "", num(e.gain)])
    return header, rows


def csv_text(lb: Leaderboard) -> str:
    header, rows = csv_rows(lb)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def leaderboard_markdown(results_dir: str | Path, select_metric: str = "val/acc", select_mode: str = "max") -> str:
    """The leaderboard of a results folder as Markdown (what the sweep prints at its end)."""
    return markdown(build_leaderboard(results_dir, select_metric, select_mode))


def write_report(
    results_dir: str | Path, out_dir: str | Path | None = None, select_metric: str = "val/acc", select_mode: str = "max"
) -> dict[str, Path]:
    """Write leaderboard.md, leaderboard.csv, plots/*.png and report.html (last) into ``out_dir``.

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
    from orchestrator.html_report import html_page
    from orchestrator.plots import PLOT_KINDS, board_figures, save_png

    lb = build_leaderboard(results_dir, select_metric, select_mode)
    if not lb.completed:
        raise ConfigError(
            "EXPERIMENT_DIR", f"no trial in {results_dir} has finished yet ({len(lb.missing)} without summary.json)"
        )
    out = Path(out_dir) if out_dir is not None else Path(results_dir) / "report"
    html_path = out / "report.html"
    html_path.unlink(missing_ok=True)  # the page appears only once everything it shows is written
    written: dict[str, Path] = {"markdown": out / "leaderboard.md", "csv": out / "leaderboard.csv"}
    atomic_write_text(written["markdown"], markdown(lb))
    atomic_write_text(written["csv"], csv_text(lb))
    plots: dict[str, Path] = {}
    for board in lb.boards:
        for stem, fig in board_figures(board).items():
            plots[stem] = save_png(fig, out / "plots" / f"{stem}.png")
    for kind in PLOT_KINDS:  # plots of an earlier report that this data no longer makes would pass for current
        for stale in (out / "plots").glob(f"*-{kind}.png"):
            if stale not in plots.values():
                stale.unlink()
    written.update({f"plot/{k}": p for k, p in plots.items()})
    atomic_write_text(html_path, html_page(lb, plots))
    written["html"] = html_path
    return written
