"""Failed seeds: named in the leaderboard instead of being averaged in silently.

A leaderboard row is a mean over seeds; one failed seed (a modality that died, a run that diverged,
a run far from the others) turns 99 ± 1 into 64.7 ± 50.0 without saying why. Each seed of a row is
checked from its ``summary.json`` alone:

- ``at chance: <m>``: the trial recorded ``val/chance/<m>`` = 1 (:mod:`trainables.health`: the
  modality's val accuracy stayed at chance up to the best epoch);
- ``diverged``: the trial's status says so, or its ``val/loss`` or ``test/acc`` is not a finite number;
- ``outlier`` (three seeds or more): its ``test/acc`` is further from the seeds' median than
  ``max(OUTLIER_MIN_GAP, OUTLIER_MADS * 1.4826 * MAD)`` (median and MAD over the row's seeds; the
  scaled MAD estimates a standard deviation robustly, so one failed seed cannot hide itself by
  inflating the spread as it would inflate a standard deviation);
- ``seeds disagree`` (exactly two seeds): they differ by more than ``OUTLIER_MIN_GAP``; both are
  flagged, as two numbers cannot say which one failed.

Flagged seeds stay in the mean (a method that fails one seed in three has that in its record); the
report marks the row and lists each flagged seed with its reasons.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

OUTLIER_METRIC = "test/acc"
OUTLIER_MIN_GAP = 0.10  # 10 accuracy points: far beyond seed noise on the datasets here (~1-3 pp)
OUTLIER_MADS = 5.0


def _finite(value: Any) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _reasons(summary: dict[str, Any]) -> list[str]:
    out = [
        f"at chance: {k.removeprefix('val/chance/')}"
        for k, v in summary.items()
        if k.startswith("val/chance/") and _finite(v) == 1.0
    ]
    status = summary.get("status", "completed")
    if status == "diverged" or any(_finite(summary.get(k)) is None for k in ("val/loss", OUTLIER_METRIC)):
        out.append("diverged" if status == "diverged" else "diverged (non-finite val/loss or test/acc)")
    return out


def outliers(values: dict[Any, float]) -> dict[Any, str]:
    """Key -> reason for each value far from the others (see the module doc)."""
    if len(values) == 2:
        a, b = values.values()
        if abs(a - b) <= OUTLIER_MIN_GAP:
            return {}
        return {k: f"seeds disagree: {OUTLIER_METRIC} {100 * a:.1f} vs {100 * b:.1f}" for k in values}
    if len(values) < 3:
        return {}
    med = statistics.median(values.values())
    far = max(OUTLIER_MIN_GAP, OUTLIER_MADS * 1.4826 * statistics.median(abs(v - med) for v in values.values()))
    return {
        k: f"outlier: {OUTLIER_METRIC} {100 * x:.1f} vs median {100 * med:.1f} of the seeds"
        for k, x in values.items()
        if abs(x - med) > far
    }


def seed_flags(trials: list[Any]) -> dict[int, list[str]]:
    """Seed -> reasons, for the seeds of one leaderboard row that failed (others absent).

    Args:
        trials: the row's trials (anything with ``seed`` and ``summary``).
    """
    flags = {t.seed: _reasons(t.summary or {}) for t in trials}
    values = {t.seed: x for t in trials if (x := _finite((t.summary or {}).get(OUTLIER_METRIC))) is not None}
    for seed, reason in outliers(values).items():
        flags[seed].append(reason)
    return {s: r for s, r in sorted(flags.items()) if r}
