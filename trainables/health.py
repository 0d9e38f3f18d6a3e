"""Trial health: a modality that stays at chance is named, in a warning and in the summary.

A modality can die silently: an encoder that blew up in the first epoch outputs one class from then
on, its accuracy sits at chance and a leaderboard would average that in as the method's result.
The rule here, from the per-epoch rows the loop already writes (no extra pass):

- a modality is *at chance* in an epoch when its validation accuracy ``val/acc/<m>`` (the method's
  own head or slice) is at most ``1/K + CHANCE_MARGIN`` (K classes);
- it *stays* at chance when that holds for ``CHANCE_EPOCHS`` consecutive epochs (a shorter trial
  is never flagged). A ``RuntimeWarning`` is raised when that happens;
- the summary records ``val/chance/<m>``: 1.0 when the modality is at chance in the state the
  summary reports (the best epoch) after having stayed there, else 0.0, and ``warnings``: one line
  per such modality. A modality at chance for a few early epochs that then learns is not flagged.

The margin is absolute (2 points): a modality stuck on the majority class of a mildly imbalanced
split (CREMA-D: 17.1% vs 1/6 = 16.7%) is caught, a weak modality that learns something is not.
"""

from __future__ import annotations

import warnings
from typing import Any

CHANCE_MARGIN = 0.02
CHANCE_EPOCHS = 3


def chance_level(num_classes: int) -> float:
    """The accuracy bound under which a modality counts as at chance."""
    return 1.0 / num_classes + CHANCE_MARGIN


def _modalities(history: list[dict[str, Any]]) -> list[str]:
    keys = dict.fromkeys(k for row in history for k in row if k.startswith("val/acc/"))
    return [k.removeprefix("val/acc/") for k in keys]


def chance_run(history: list[dict[str, Any]], modality: str, num_classes: int, upto: int | None = None) -> int:
    """Consecutive epochs, ending at epoch ``upto`` (1-based; default the last row), with ``modality`` at chance."""
    rows = [r for r in history if upto is None or r["epoch"] <= upto]
    bound, run = chance_level(num_classes), 0
    for row in reversed(rows):
        acc = row.get(f"val/acc/{modality}")
        if acc is None or acc > bound:
            break
        run += 1
    return run


def warn_if_stuck(history: list[dict[str, Any]], num_classes: int) -> None:
    """Warn (once per modality, at the epoch it qualifies) when a modality has stayed at chance."""
    need = CHANCE_EPOCHS
    for m in _modalities(history):
        if chance_run(history, m, num_classes) == need:
            warnings.warn(
                f"modality {m!r}: val/acc/{m} at chance (<= {chance_level(num_classes):.3f}) for the last {need} "
                f"epochs (epoch {history[-1]['epoch']}); its encoder may have died",
                RuntimeWarning,
                stacklevel=2,
            )


def chance_summary(history: list[dict[str, Any]], best_epoch: int | None, num_classes: int) -> dict[str, Any]:
    """``val/chance/<m>`` per modality and the ``warnings`` lines, for the summary of the best epoch."""
    out: dict[str, Any] = {}
    lines = []
    for m in _modalities(history):
        run = chance_run(history, m, num_classes, best_epoch)
        stuck = run >= CHANCE_EPOCHS
        out[f"val/chance/{m}"] = 1.0 if stuck else 0.0
        if stuck:
            lines.append(
                f"modality {m!r} at chance (val/acc/{m} <= {chance_level(num_classes):.3f}) "
                f"for {run} epochs up to the best epoch {best_epoch}"
            )
    out["warnings"] = lines
    return out
