"""An interrupted sweep (Ctrl-C) is not a finished one: exit 130, say how far it got, print mmbal's resume.

On the first SIGINT Ray Tune saves its state and returns from ``Tuner.fit`` as if the run had ended,
and logs its own hint (``tune.Tuner.restore(...)``), which is not how an mmbal sweep resumes. Here:
the trials Tune left neither terminated nor errored mark the run as interrupted, Tune's hint is
dropped from its log, and the driver raises :class:`SweepInterrupted`, which ``mmbal sweep`` turns
into one line with ``mmbal sweep SWEEP.yaml --resume ...`` and exit code 130.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any


class SweepInterrupted(KeyboardInterrupt):
    """The sweep stopped on Ctrl-C; ``finished`` of ``total`` trials have a summary."""

    def __init__(self, finished: int, total: int) -> None:
        self.finished, self.total = finished, total
        super().__init__(f"{finished} of {total} trials finished")


def finished_trials(results_dir: Path) -> int:
    """Trials with a ``summary.json`` (completed or diverged): what a resume will not run again."""
    return sum(1 for _ in (results_dir / "trials").glob("*/summary.json"))


def unfinished_trials(grid: Any) -> set[str]:
    """Ids of the trials Tune left neither terminated nor errored (pending, paused, running)."""
    trials = getattr(getattr(grid, "_experiment_analysis", None), "trials", None) or []
    return {str(t.trial_id) for t in trials if t.status not in ("TERMINATED", "ERROR")}


class _DropTuneHints(logging.Filter):
    """Tune's restore hint and its list of incomplete trials: mmbal prints its own resume command. And
    the warning that Tune's result table could not read its loggers' files (``progress.csv``,
    ``result.json``): with ``execution.tune_loggers: false`` there are none, and mmbal reads its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not (
            "has been interrupted" in msg
            or msg.startswith("Trials did not complete")
            or msg.startswith("Failed to fetch metrics for")
        )


def quiet_tune_hints() -> None:
    for name in ("ray.tune.tune", "ray.tune.analysis.experiment_analysis"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropTuneHints) for f in logger.filters):
            logger.addFilter(_DropTuneHints())
