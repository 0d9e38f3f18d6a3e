"""The report as one self-contained HTML page: tables and plots (PNG embedded as base64), no scripts.

Nothing is fetched when the page opens, so it can be mailed, archived or opened offline as one file.
"""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path

from orchestrator.report.diverged import diverged_lines
from orchestrator.report.formatting import board_title, method_line, missing_lines, status_line, table
from orchestrator.report.leaderboard import Leaderboard

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
img { max-width: 100%; display: block; margin: 0.5rem 0 1.5rem; }
.partial { color: #a40; font-weight: bold; }
"""


def _table_html(header: list[str], rows: list[list[str]], dataset: str) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td{' class=num' if i >= 2 else ''}>{escape(c)}</td>" for i, c in enumerate(r)) + "</tr>"
        for r in rows
    )
    return f'<table id="leaderboard-{escape(dataset)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _img_html(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{escape(path.stem)}" src="data:image/png;base64,{data}">'


def html_page(lb: Leaderboard, plots: dict[str, list[Path]]) -> str:
    """The page: status, one table and its plots per dataset, then the missing trials.

    Args:
        lb: the computed leaderboard.
        plots: PNG files per dataset, embedded in that order under the dataset's table.
    """
    parts = [
        f"<h1>Leaderboard: {escape(lb.experiment)}</h1>",
        f'<p class="{"partial" if lb.missing else "status"}">{escape(status_line(lb))}</p>',
        f"<p>{escape(method_line(lb))}</p>",
    ]
    for board in lb.boards:
        header, rows = table(lb, board)
        parts += [f"<h2>{escape(board_title(board))}</h2>", _table_html(header, rows, board.dataset)]
        parts += [_img_html(p) for p in plots.get(board.dataset, [])]
    if lb.missing:
        parts.append(f"<h2>Missing ({len(lb.missing)} trials without summary.json)</h2>")
        parts.append("<ul>" + "".join(f"<li>{escape(x)}</li>" for x in missing_lines(lb)) + "</ul>")
    if lb.diverged:
        parts.append(f"<h2>Diverged ({len(lb.diverged)} trials, not in the averages)</h2>")
        parts.append("<ul>" + "".join(f"<li>{escape(x)}</li>" for x in diverged_lines(lb.diverged)) + "</ul>")
    title = f"<title>mmbal report: {escape(lb.experiment)}</title>"
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">{title}'
        f"<style>{STYLE}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )
