"""Population-based training that neither stops an exploited trial early nor waits forever for a trial.

Tune's synchronous PBT (``search.pbt.synch: true``, mmbal's default) pauses every trial that reaches
the next perturbation point until all live trials have reached it; ``choose_trial_to_run`` then only
resumes trials that are still behind that point. On ray 2.60 the 2-trial, 4-epoch PBT sweep of
``tests/test_ray_sweep.py`` (``perturbation_interval: 2``) lost a trial's last epochs in 4 of 93 runs
here, and in 2 of them ``Tuner.fit`` then waited forever with no trial running (the CI run that hit
its time limit). Tune's debug log of a failing run showed why:

- **a stale STOP** (the root): the lower trial reached the point first and Tune began pausing it (a
  checkpoint save in flight); the upper trial arrived before the save resolved, the round exploited
  the lower trial, and Tune's ``pause_trial(should_checkpoint=False)`` on a trial that is saving
  caches a STOP decision for it. The trial restarts from the upper trial's checkpoint, and that
  STOP is executed at its next checkpoint: it ends after one more epoch, without its summary;
- **a stranded trial**: the other trial then waits at the next point for the stopped one, which never
  reports again, and nothing resumes it (the same happens when a trial errors or diverges before
  the point);
- **the last epoch as a point**: when the last epoch is a multiple of the interval, a trial is paused
  on the report its function returns after.

:class:`SafePopulationBasedTraining` changes these three, and nothing else:

- after an exploit that restarts a trial, the STOP Tune cached for that trial is dropped;
- when every live trial waits at the point and none is behind it, the round is held among them at
  once (Tune's own code, entered through ``on_trial_result`` with the waiting trial's last result)
  and they resume;
- a trial's last report (``epoch >= its config's epochs``) is never a perturbation point; nothing is
  left to train with an exploited state or an explored config, so no sweep result can change.
"""

from __future__ import annotations

from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import PopulationBasedTraining, TrialScheduler


def final_epoch(trial: Any) -> int | None:
    """The last epoch of an mmbal trial (Tune config ``{"trial": {"epochs": N}, ...}``), else None."""
    epochs = (trial.config.get("trial") or {}).get("epochs")
    return int(epochs) if epochs is not None else None


def cached_decisions(tune_controller: Any) -> dict[str, str]:
    """The controller's decisions held until a trial's save resolves (``TuneController``'s private
    ``_cached_trial_decisions``; schedulers get it wrapped, so the wrapper's controller is read)."""
    controller = getattr(tune_controller, "_tune_controller", tune_controller)
    return getattr(controller, "_cached_trial_decisions", {})  # another Ray: nothing to drop here


class SafePopulationBasedTraining(PopulationBasedTraining):
    """:class:`ray.tune.schedulers.PopulationBasedTraining` without the stale STOP and the two waits above."""

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict) -> str:
        last = final_epoch(trial)
        if last is not None and result.get(self._time_attr, 0) >= last:
            return TrialScheduler.CONTINUE  # the trial's function returns after this report
        return super().on_trial_result(tune_controller, trial, result)

    def _exploit(self, tune_controller: Any, trial: Trial, trial_to_clone: Trial) -> None:
        saving = trial.status == Trial.RUNNING and trial.is_saving
        super()._exploit(tune_controller, trial, trial_to_clone)
        if saving and trial.status == Trial.PAUSED:  # stopped mid-save to restart from the clone's state
            decisions = cached_decisions(tune_controller)
            if decisions.get(trial.trial_id) == TrialScheduler.STOP:
                del decisions[trial.trial_id]

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
