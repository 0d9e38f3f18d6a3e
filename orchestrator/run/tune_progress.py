"""The Tune callback that feeds mmbal's progress table (:mod:`orchestrator.run.progress`).

Tune's own console output (its trial table, config and result boxes) is switched off by the Tune
runner (``RunConfig(verbose=0)`` unless ``mmbal sweep --verbose``); this callback prints instead.
Tune pickles its callbacks with the experiment state (for ``Tuner.restore``), so the progress object
is dropped from the pickled state and rebuilt from the sweep on resume (:meth:`setup`).
"""

from __future__ import annotations

import sys
from typing import Any

from ray import tune

from orchestrator.run.progress import Progress
from trainables.config import resolve


class TuneProgress(tune.Callback):
    """Trial start/result/end -> :class:`~orchestrator.run.progress.Progress`; ``make()`` builds it."""

    def __init__(self, make: Any) -> None:
        self.make = make
        self.progress: Progress | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"make": self.make, "progress": None}

    def setup(self, **info: Any) -> None:
        self.progress = self.make()

    def _p(self) -> Progress:
        if self.progress is None:
            self.progress = self.make()
        return self.progress

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._p().start(trial.trial_id, resolve(trial.config["trial"]).to_dict())

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self._p().result(trial.trial_id, result)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        p = self._p()
        row = p.rows.get(trial.trial_id)
        p.end(trial.trial_id, "stopped" if row is not None and row.epoch < row.epochs else "done")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._p().end(trial.trial_id, "failed")
        where = getattr(trial, "error_file", None) or getattr(trial, "path", None)
        print(f"mmbal: trial {trial.trial_id} failed; its traceback: {where}", file=sys.stderr)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self._p().tick()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._p().close()
