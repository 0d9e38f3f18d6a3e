"""Report figures (matplotlib, headless): per-modality curves, imbalance curves, missing-modality bars.

Figures are built on :class:`matplotlib.figure.Figure` directly, never through ``pyplot``, so nothing
needs a display and no global figure state leaks between calls. Every curve is the mean over the
seeds of a method's chosen config, with a ±1 sample-std band (ddof=1) where there are two seeds or more.
"""

from __future__ import annotations

import math
import os
import statistics
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from orchestrator.report.leaderboard import DatasetBoard, Entry
from orchestrator.results import TrialRecord
from trainables.reporting import temp_beside

PERCENT_SCALE = 100.0
PLOT_KINDS = ("val_acc", "imbalance", "missing")  # file stems end with -<kind>.png


def epoch_series(trials: list[TrialRecord], key: str) -> tuple[list[int], list[float], list[float]]:
    """Per epoch, the mean and sample std of ``key`` over the trials that logged a finite value.

    Returns:
        (epochs, means, stds); std is NaN where a single trial has the epoch.
    """
    by_epoch: dict[int, list[float]] = {}
    for t in trials:
        for row in t.history:
            try:
                x = float(row[key])
            except (KeyError, TypeError, ValueError):
                continue
            if "epoch" in row and math.isfinite(x):
                by_epoch.setdefault(int(row["epoch"]), []).append(x)
    epochs = sorted(by_epoch)
    means = [statistics.fmean(by_epoch[e]) for e in epochs]
    stds = [statistics.stdev(by_epoch[e]) if len(by_epoch[e]) > 1 else math.nan for e in epochs]
    return epochs, means, stds


def _colors(board: DatasetBoard) -> dict[str, str]:
    """One colour per method, the same in every figure of a report."""
    return {m: f"C{i % 10}" for i, m in enumerate(sorted(e.method for e in board.entries))}


REFERENCE = "unimodal:"  # leaderboard rows of one modality trained alone: drawn as dashed references


def reference_modality(entry: Entry) -> str | None:
    """``pix`` for the row ``unimodal:pix`` (a modality trained alone), else None."""
    return entry.method[len(REFERENCE) :] if entry.method.startswith(REFERENCE) else None


def _curve(ax, entry: Entry, key: str, color: str, scale: float) -> bool:
    epochs, means, stds = epoch_series(entry.trials, key)
    if not epochs:
        return False
    ref = reference_modality(entry)
    ax.plot(
        epochs,
        [m * scale for m in means],
        color=color,
        label=f"{ref} alone" if ref else entry.method,
        linestyle="--" if ref else "-",
        marker=None if ref or len(epochs) >= 12 else "o",
    )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    lo = [(m - s) * scale for m, s in zip(means, stds, strict=True)]
    hi = [(m + s) * scale for m, s in zip(means, stds, strict=True)]
    if any(math.isfinite(v) for v in lo):
        ax.fill_between(epochs, lo, hi, color=color, alpha=0.2, linewidth=0)
    return True


def modality_curves(board: DatasetBoard) -> Figure:
    """One panel for the fused model and one per modality: validation accuracy (%) over epochs, a line per method.

    A modality trained alone (the ``unimodal:<m>`` rows) is a dashed reference line in its modality's
    panel and in the fused panel: how far each method's branch is from what the modality reaches alone.
    """
    panels = [("fused", "val/acc"), *((m, f"val/acc/{m}") for m in board.modalities)]
    fig = Figure(figsize=(4.2 * len(panels), 3.6), layout="constrained")
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    colors = _colors(board)
    for ax, (title, key) in zip(axes, panels, strict=True):
        for e in board.entries:
            ref = reference_modality(e)
            if ref is None or title in (ref, "fused"):
                _curve(ax, e, key, colors[e.method], PERCENT_SCALE)
        ax.set_title(f"{title}{' (weak)' if title == board.weak else ''}")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation accuracy (%)")
    axes[-1].legend(loc="best", fontsize="small")
    fig.suptitle(f"{board.dataset}: validation accuracy per modality (mean ± std over seeds)")
    return fig


def imbalance_curves(board: DatasetBoard) -> Figure | None:
    """Validation imbalance score ratio (dominant / weak modality score; 1 = balanced) over epochs."""
    fig = Figure(figsize=(6.0, 3.8), layout="constrained")
    ax = fig.subplots()
    colors = _colors(board)
    drawn = [_curve(ax, e, "val/imbalance/score_ratio", colors[e.method], 1.0) for e in board.entries]
    if not any(drawn):
        return None
    ax.axhline(1.0, color="grey", linestyle="--", linewidth=1, label="_balanced")  # "_" keeps it out of the legend
    ax.set_xlabel("epoch")
    ax.set_ylabel("score ratio (dominant / weak)")
    ax.set_title(f"{board.dataset}: validation imbalance score ratio (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    return fig


def missing_bars(board: DatasetBoard) -> Figure | None:
    """Grouped bars: test accuracy (%) with all modalities and with each subset present, a bar per method."""
    keys = [c for c in board.columns if c.startswith("test/missing/")]
    if not keys:
        return None
    groups = ["test/acc", *keys]
    names = ["all", *(k.split("/")[2] for k in keys)]
    fig = Figure(figsize=(max(5.0, 1.6 * len(groups) + 1.5), 3.8), layout="constrained")
    ax = fig.subplots()
    colors = _colors(board)
    width = 0.8 / max(1, len(board.entries))
    for i, e in enumerate(sorted(board.entries, key=lambda e: e.method)):
        stats = [e.metrics[k] for k in groups]
        xs = [g + (i - (len(board.entries) - 1) / 2) * width for g in range(len(groups))]
        heights = [s.mean * PERCENT_SCALE if s.n else 0.0 for s in stats]
        errs = [s.std * PERCENT_SCALE if s.n > 1 else 0.0 for s in stats]
        ax.bar(xs, heights, width, yerr=errs, capsize=3, color=colors[e.method], label=e.method)
    ax.set_xticks(range(len(groups)), [f"only {n}" if n != "all" else n for n in names])
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{board.dataset}: test accuracy with modalities missing (mean ± std over seeds)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    return fig


def board_figures(board: DatasetBoard) -> dict[str, Figure]:
    """The figures of one dataset, keyed by a file stem; figures without data are left out."""
    figs = {"val_acc": modality_curves(board), "imbalance": imbalance_curves(board), "missing": missing_bars(board)}
    return {f"{board.dataset}-{k}": f for k, f in figs.items() if f is not None}


def save_png(fig: Figure, path: Path) -> Path:
    """Save atomically (temporary file + rename) so a reader never sees half a PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_beside(path, suffix=".png")  # the umask's permissions, not mkstemp's 0600
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=110)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
