"""Beyond the leaderboard's one row per method: every configuration tried, and every seed.

- :func:`configs_markdown` / :func:`config_rows`: every configuration of every method (not only the
  chosen one, e.g. ogm_ge alpha 0.4 and 0.8), with its selection metric and test metrics over seeds;
  the chosen one is marked.
- :func:`seed_rows`: one row per completed trial (method, config, seed, best epoch, selection metric,
  test metrics), the numbers every mean ± std of the reports comes from.
"""

from __future__ import annotations

import csv
import io
import math

from orchestrator.report.formatting import column_title, fmt_stat
from orchestrator.report.leaderboard import DatasetBoard, Leaderboard, _labels, _number, _stat
from orchestrator.results import TrialRecord


def _groups(lb: Leaderboard, board: DatasetBoard) -> dict[str, dict[str, list[TrialRecord]]]:
    """method -> config id -> trials, for one dataset."""
    out: dict[str, dict[str, list[TrialRecord]]] = {}
    for t in lb.completed:
        if str(t.summary.get("dataset") or t.config.get("dataset", "?")) == board.dataset:
            out.setdefault(t.method, {}).setdefault(t.config_id, []).append(t)
    return out


def config_rows(lb: Leaderboard) -> tuple[list[str], list[list[object]]]:
    """Every configuration tried: dataset, method, config id, its varied params, chosen?, seeds, stats."""
    metrics = [lb.select_metric, *dict.fromkeys(c for b in lb.boards for c in b.columns)]
    header = ["dataset", "method", "config_id", "config", "chosen", "n_seeds", "seeds"]
    header += [f"{m}/{part}" for m in metrics for part in ("mean", "std")]
    rows: list[list[object]] = []
    for board in lb.boards:
        chosen = {e.method: e.config_id for e in board.entries}
        for method, groups in sorted(_groups(lb, board).items()):
            labels = _labels(groups) if len(groups) > 1 else {}
            for cid, trials in sorted(groups.items(), key=lambda kv: (kv[0] != chosen.get(method), kv[0])):
                row: list[object] = [board.dataset, method, cid, labels.get(cid, ""), cid == chosen.get(method)]
                row += [len(trials), ";".join(str(t.seed) for t in sorted(trials, key=lambda t: t.seed))]
                for m in metrics:
                    s = _stat(trials, m)
                    row += ["" if math.isnan(s.mean) else s.mean, "" if math.isnan(s.std) else s.std]
                rows.append(row)
    return header, rows


def configs_markdown(lb: Leaderboard) -> str:
    """Every configuration tried, per dataset: selection metric and test metrics over seeds."""
    lines = [f"# Every configuration tried: {lb.experiment}", ""]
    lines.append(f"Per configuration, mean ± sample std over its seeds; ✓ = chosen on {lb.select_metric}.")
    lines.append("")
    for board in lb.boards:
        cols = [lb.select_metric, *board.columns]
        chosen = {e.method: e.config_id for e in board.entries}
        lines += [f"## {board.dataset}", ""]
        lines.append("| method | config | chosen | seeds | " + " | ".join(column_title(c) for c in cols) + " |")
        lines.append("|---|---|:-:|--:|" + "--:|" * len(cols))
        for method, groups in sorted(_groups(lb, board).items()):
            labels = _labels(groups) if len(groups) > 1 else {}
            for cid, trials in sorted(groups.items()):
                cfg = f"{cid}: {labels[cid]}" if labels.get(cid) else cid
                mark = "✓" if cid == chosen.get(method) else ""
                stats = " | ".join(fmt_stat(c, _stat(trials, c)) for c in cols)
                lines.append(f"| {method} | {cfg.replace('|', '/')} | {mark} | {len(trials)} | {stats} |")
        lines.append("")
    return "\n".join(lines)


def seed_rows(lb: Leaderboard) -> tuple[list[str], list[list[object]]]:
    """One row per completed trial: its method, config, seed and numbers (raw fractions)."""
    metrics = [lb.select_metric, *dict.fromkeys(c for b in lb.boards for c in b.columns)]
    header = ["dataset", "method", "config_id", "seed", "trial_id", "best_epoch", *metrics]
    rows: list[list[object]] = []
    for t in sorted(lb.completed, key=lambda t: (str(t.summary.get("dataset")), t.method, t.config_id, t.seed)):
        row: list[object] = [t.summary.get("dataset", ""), t.method, t.config_id, t.seed, t.trial_id]
        row.append(t.summary.get("best_epoch", ""))
        row += ["" if (x := _number(t.summary.get(m))) is None else x for m in metrics]
        rows.append(row)
    return header, rows


def to_csv(header: list[str], rows: list[list[object]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()
