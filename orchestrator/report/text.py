"""The leaderboard as text: Markdown (what ``mmbal report`` and the sweep print) and CSV (raw numbers)."""

from __future__ import annotations

import csv
import io
import math

from orchestrator.report.diverged import diverged_markdown
from orchestrator.report.formatting import FLAG, board_title, flag_lines, method_line, missing_lines, status_line, table
from orchestrator.report.leaderboard import Leaderboard, Stat


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
        if flagged := flag_lines(board):
            lines += [f"{FLAG} Failed seeds, included in the means above:", ""]
            lines += [f"- {line}" for line in flagged] + [""]
    if lb.missing:
        lines += [f"## Missing ({len(lb.missing)} trials without summary.json)", ""]
        lines += [f"- {line}" for line in missing_lines(lb)]
        lines.append("")
    lines += diverged_markdown(lb.diverged)
    return "\n".join(lines)


def _num(x: float | None) -> object:
    """A number cell: empty for no value."""
    return "" if x is None or math.isnan(x) else x


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
    header += ["weak_modality", "gain_weak_vs_joint", "gain_metric", "flagged_seeds"]
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
                _num(e.select.mean),
                _num(e.select.std),
            ]
            for m in metrics:
                s = e.metrics.get(m, Stat(math.nan, math.nan, 0))
                row += [_num(s.mean), _num(s.std)]
            flagged = ";".join(f"{seed}: {', '.join(r)}" for seed, r in e.flags.items())
            rows.append(row + [b.weak or "", _num(e.gain), b.gain_metric if b.weak else "", flagged])
    return header, rows


def csv_text(lb: Leaderboard) -> str:
    header, rows = csv_rows(lb)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()
