"""How report numbers read, shared by the Markdown, CSV and HTML outputs: cells, titles, status lines.

Accuracies and F1 are shown in percent, the score ratio as is, the gain in percentage points.
"""

from __future__ import annotations

import math

from orchestrator.report.leaderboard import BASELINE, DatasetBoard, Entry, Leaderboard, Stat

DASH = "–"
FLAG = "⚠"  # a row with failed seeds (listed under the table, see report/flags.py)


def is_fraction(key: str) -> bool:
    """Metrics shown in percent: accuracies and F1 (``acc_gap`` and ratios stay as they are)."""
    parts = key.split("/")
    return "acc" in parts or "f1" in parts or "shapley" in parts


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
    if parts[1] == "probe" and len(parts) == 4:
        return f"probe {parts[3]} %"
    if parts[1] == "shapley" and len(parts) == 3:
        return f"Shapley {parts[2]} (pp)"
    if parts[1] == "acc" and len(parts) == 3:
        return f"acc {parts[2]} %"
    return key


def table(lb: Leaderboard, board: DatasetBoard) -> tuple[list[str], list[list[str]]]:
    """Header and formatted cells of one dataset's table (shared by Markdown and HTML)."""
    header = ["method", "config", "seeds", f"{lb.select_metric} (selects)", *map(column_title, board.columns)]
    if board.weak:
        measure = "probe" if board.gain_metric == "test/probe/acc" else "acc"
        header.append(f"Δ {measure} {board.weak} vs {BASELINE} (pp)")
    rows = []
    for e in board.entries:
        cfg = e.config_id if e.n_configs == 1 else f"{e.config_id}: {e.label} (best of {e.n_configs})"
        row = [
            f"{e.method} {FLAG}" if e.flags else e.method,
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
    total = len(lb.completed) + len(lb.missing) + len(lb.diverged)
    diverged = f" {len(lb.diverged)} diverged (listed below, not in the averages)." if lb.diverged else ""
    if not lb.missing:
        return f"All {total} trials finished.{diverged}"
    return (
        f"Partial: {len(lb.completed)} of {total} trials finished; "
        f"{len(lb.missing)} without summary.json (listed below).{diverged}"
    )


def method_line(lb: Leaderboard) -> str:
    return (
        f"Per method, the configuration with the best mean {lb.select_metric} ({lb.select_mode}) over seeds; "
        "its test metrics as mean ± sample std (ddof=1) over seeds. "
        "Columns 'probe X': a linear probe on X's frozen encoder, one recipe for every method (compare these); "
        "'acc X': the method's own head or slice for X; 'Shapley X': X's Shapley value on test accuracy "
        "(absent modalities zeroed at the input for every method); "
        "'only X': test accuracy with only modalities X present, through each method's own missing-modality scheme."
    )


def board_title(board: DatasetBoard) -> str:
    if board.weak:
        measure = "linear-probe" if board.gain_metric == "test/probe/acc" else "per-modality"
        return f"{board.dataset} (weak modality: {board.weak}, lowest {measure} test accuracy under {BASELINE})"
    return f"{board.dataset} (no {BASELINE} baseline in these results: no gain column)"


def missing_lines(lb: Leaderboard) -> list[str]:
    out = []
    for t in lb.missing:
        epochs = t.config.get("epochs", "?")
        logged = f"{len(t.history)} of {epochs} epochs logged"
        out.append(f"{t.trial_id}: {t.method}, seed {t.seed}, {logged} (running, stopped or failed)")
    return out


def flag_lines(board: DatasetBoard) -> list[str]:
    """One line per failed seed of a dataset's rows: ``method seed 2: at chance: audio``."""
    return [f"{e.method} seed {seed}: {'; '.join(reasons)}" for e in board.entries for seed, reasons in e.flags.items()]
