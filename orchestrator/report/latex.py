"""The leaderboard in LaTeX (``booktabs``), for a paper.

One ``table`` per dataset (``\\toprule``/``\\midrule``/``\\bottomrule``, needs ``\\usepackage{booktabs}``);
cells are mean ± sample std over seeds in percent (the score ratio as is), the best mean of each
accuracy column in bold, and a dagger where the paired t-test against joint over seeds gives a
Holm-adjusted p < 0.05 (family: the methods of one column), the same test and threshold as one star
in the Markdown table (:mod:`orchestrator.report.significance`).
"""

from __future__ import annotations

import math

from orchestrator.report.formatting import column_title, is_fraction
from orchestrator.report.leaderboard import BASELINE, DatasetBoard, Leaderboard, Stat
from orchestrator.report.significance import against_joint

_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def tex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def _tex_cell(key: str, s: Stat, bold: bool, dagger: bool) -> str:
    if s.n == 0 or math.isnan(s.mean):
        return "--"
    scale, digits = (100.0, 1) if is_fraction(key) else (1.0, 2)
    mean = f"{s.mean * scale:.{digits}f}"
    if bold:
        mean = rf"\textbf{{{mean}}}"
    std = rf" {{\scriptsize $\pm$ {s.std * scale:.{digits}f}}}" if s.n > 1 and math.isfinite(s.std) else ""
    return mean + std + (r"$^\dagger$" if dagger else "")


def _best(board: DatasetBoard, key: str) -> float | None:
    """The best mean of an accuracy column (higher is better); ratios get no bold."""
    if not is_fraction(key):
        return None
    means = [e.metrics[key].mean for e in board.entries if e.metrics[key].n and not math.isnan(e.metrics[key].mean)]
    return max(means) if means else None


def latex_board(board: DatasetBoard, select_metric: str) -> str:
    tests = against_joint(board)
    cols = board.columns
    head = ["Method", *(tex_escape(column_title(c)).replace(r" \%", "") for c in cols)]
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        r"\begin{tabular}{l" + "r" * len(cols) + "}",
        r"\toprule",
        " & ".join(head) + r" \\",
        r"\midrule",
    ]
    best = {c: _best(board, c) for c in cols}
    for e in board.entries:
        cells = [tex_escape(e.method)]
        for c in cols:
            s = e.metrics[c]
            t = tests.get(e.method, {}).get(c)
            bold = best[c] is not None and s.n > 0 and abs(s.mean - best[c]) < 1e-12
            cells.append(_tex_cell(c, s, bold, t is not None and t.p_holm is not None and t.p_holm < 0.05))
        lines.append(" & ".join(cells) + r" \\")
    seeds = sorted({len(e.trials) for e in board.entries})
    caption = (
        f"{tex_escape(board.dataset)}: test metrics (accuracies in \\%) of each method's configuration chosen on "
        f"{tex_escape(select_metric)}, mean $\\pm$ sample std over {'/'.join(map(str, seeds))} seeds; best mean in "
        f"bold; $^\\dagger$: differs from {BASELINE} with Holm-adjusted $p<0.05$ (two-sided paired $t$-test over "
        "seeds, Holm over the methods of each column)."
    )
    lines += [
        r"\bottomrule",
        r"\end{tabular}",
        rf"\caption{{{caption}}}",
        rf"\label{{tab:{tex_escape(board.dataset).replace(chr(92), '')}}}",
        r"\end{table}",
    ]
    return "\n".join(lines)


def latex_table(lb: Leaderboard) -> str:
    """The leaderboard as LaTeX, one ``table`` per dataset (``\\usepackage{booktabs}``)."""
    head = f"% mmbal leaderboard of {tex_escape(lb.experiment)}; needs \\usepackage{{booktabs}}"
    return "\n\n".join([head, *(latex_board(b, lb.select_metric) for b in lb.boards)]) + "\n"
