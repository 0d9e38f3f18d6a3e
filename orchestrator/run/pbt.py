"""Population-based training that cannot deadlock on a trial's last epoch or on a trial that ended early.

Tune's synchronous PBT (``search.pbt.synch: true``, mmbal's default) pauses every trial that reaches
the next perturbation point until all live trials have reached it; ``choose_trial_to_run`` then only
resumes trials that are still behind that point. Two situations leave a paused trial with nobody to
wake it, and ``Tuner.fit`` waits forever with no trial running (seen on ray 2.60, about one sweep in
five for 2 trials x 4 epochs with ``perturbation_interval: 2``):

- the perturbation point is a trial's **last epoch**: Tune pauses the trial on the report its function
  returns after, and the race between the pause and the function's end can terminate the other trial
  while this one waits;
- a trial **ends before** the point (an error, a diverged loss, fewer epochs): the others wait at the
  point for a report that never comes.

:class:`SafePopulationBasedTraining` changes both, and nothing else:

- a trial's last report (``epoch >= its config's epochs``) is never a perturbation point; nothing is
  left to train with an exploited state or an explored config, so no sweep result can change;
- when every live trial waits at the point and none is behind it, the round is held among them at
  once (Tune's own code, entered through ``on_trial_result`` with the waiting trial's last result)
  and they resume.
"""

from __future__ import annotations

from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import PopulationBasedTraining, TrialScheduler


def final_epoch(trial: Any) -> int | None:
    """The last epoch of an mmbal trial (Tune config ``{"trial": {"epochs": N}, ...}``), else None."""
    epochs = (trial.config.get("trial") or {}).get("epochs")
    return int(epochs) if epochs is not None else None


class SafePopulationBasedTraining(PopulationBasedTraining):
    """:class:`ray.tune.schedulers.PopulationBasedTraining` without its two synchronous-mode deadlocks."""

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict) -> str:
        last = final_epoch(trial)
        if last is not None and result.get(self._time_attr, 0) >= last:
            return TrialScheduler.CONTINUE  # the trial's function returns after this report
        return super().on_trial_result(tune_controller, trial, result)

    def choose_trial_to_run(self, tune_controller: Any) -> Trial | None:
        chosen = super().choose_trial_to_run(tune_controller)
        if chosen is None and self._synch:
            waiting = self.stranded_trials(tune_controller)
            if waiting:
                trial = waiting[0]
                self.on_trial_result(tune_controller, trial, self._trial_state[trial].last_result)
                chosen = super().choose_trial_to_run(tune_controller)
        return chosen

    def stranded_trials(self, tune_controller: Any) -> list[Trial]:
        """The live trials, when every one of them is paused at the sync point (else [])."""
        live = [t for t in tune_controller.get_live_trials() if not t.is_finished()]
        sync = self._next_perturbation_sync
        if live and all(t.status == Trial.PAUSED and self._trial_state[t].last_train_time >= sync for t in live):
            return sorted(live, key=lambda t: t.trial_id)
        return []
