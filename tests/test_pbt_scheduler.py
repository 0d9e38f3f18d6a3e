"""Synchronous PBT's stale STOP after an exploit and its two waits, driven through the scheduler's own
hooks (no Ray, no timing).

``tests/test_ray_sweep.py::test_pbt_moves_checkpoints_and_mutates_configs`` lost a trial's last epochs
in 4 of 93 runs with Tune's own PopulationBasedTraining (and hung in 2); these tests put the scheduler
in each of those states directly, so they fail every time with the stock class and pass with mmbal's.
"""

from __future__ import annotations

import pytest
from ray.tune.experiment import Trial
from ray.tune.schedulers import PopulationBasedTraining, TrialScheduler

from orchestrator.run.pbt import SafePopulationBasedTraining


class Controller:
    """The part of Tune's controller that PBT reads: the trials and which are live."""

    search_alg = None

    def __init__(self, trials: list[Trial]) -> None:
        self.trials = trials

    def get_trials(self) -> list[Trial]:
        return self.trials

    def get_live_trials(self) -> set[Trial]:
        return {t for t in self.trials if not t.is_finished()}


def population(cls: type, n: int, epochs: int = 6) -> tuple[PopulationBasedTraining, Controller]:
    pbt = cls(
        time_attr="epoch",
        metric="val/acc",
        mode="max",
        perturbation_interval=2,
        quantile_fraction=0.5,
        hyperparam_mutations={"trial": {"optim": {"lr": [0.1, 0.3]}}},
        synch=True,
        log_config=False,  # it writes into the trials' storage, which stub trials have none of
    )
    trials = [Trial("mmbal", config={"trial": {"epochs": epochs, "optim": {"lr": 0.1}}}, stub=True) for _ in range(n)]
    controller = Controller(trials)
    for t in trials:
        pbt.on_trial_add(controller, t)
        t.set_status(Trial.RUNNING)
    return pbt, controller


def report(pbt: PopulationBasedTraining, controller: Controller, trial: Trial, epoch: int, acc: float) -> str:
    decision = pbt.on_trial_result(controller, trial, {"epoch": epoch, "val/acc": acc})
    if decision == TrialScheduler.PAUSE:
        trial.set_status(Trial.PAUSED)
    return decision


@pytest.mark.parametrize("cls", [SafePopulationBasedTraining, PopulationBasedTraining])
def test_a_trial_that_ends_before_the_sync_point_does_not_strand_the_others(cls):
    pbt, controller = population(cls, 2)
    waiting, ended = controller.trials
    assert report(pbt, controller, ended, 1, 0.2) == TrialScheduler.CONTINUE
    assert report(pbt, controller, waiting, 2, 0.5) == TrialScheduler.PAUSE  # waits for the other at epoch 2
    ended.set_status(Trial.ERROR)  # e.g. an error or a diverged loss at epoch 1: it never reaches epoch 2
    chosen = pbt.choose_trial_to_run(controller)
    if cls is PopulationBasedTraining:
        assert chosen is None  # Tune's own: nothing will ever run again (the hang)
        return
    assert chosen is waiting
    assert pbt._next_perturbation_sync == 4  # the round at epoch 2 was held; the next is at 4


@pytest.mark.parametrize("cls", [SafePopulationBasedTraining, PopulationBasedTraining])
def test_a_trials_last_epoch_is_never_a_perturbation_point(cls):
    pbt, controller = population(cls, 2, epochs=4)
    first, second = controller.trials
    for t, acc in ((first, 0.5), (second, 0.1)):
        report(pbt, controller, t, 1, acc)
    assert report(pbt, controller, first, 2, 0.5) == TrialScheduler.PAUSE  # a perturbation point in the middle
    first.set_status(Trial.RUNNING)
    decision = report(pbt, controller, first, 4, 0.6)  # its last report: the function returns after it
    if cls is PopulationBasedTraining:
        assert decision == TrialScheduler.PAUSE  # Tune's own pauses a trial whose function is ending
        return
    assert decision == TrialScheduler.CONTINUE
    assert first.status == Trial.RUNNING


def test_a_round_is_still_held_when_every_trial_reaches_the_point():
    pbt, controller = population(SafePopulationBasedTraining, 2)
    first, second = controller.trials
    assert report(pbt, controller, first, 2, 0.5) == TrialScheduler.PAUSE
    assert pbt._next_perturbation_sync == 2
    report(pbt, controller, second, 2, 0.1)  # the last to arrive: the round at epoch 2 happens
    assert pbt._next_perturbation_sync == 4
    assert pbt._trial_state[first].last_perturbation_time == pbt._trial_state[second].last_perturbation_time == 2


class SavingController(Controller):
    """Tune 2.60's ``pause_trial(should_checkpoint=False)`` on a trial whose checkpoint save is in
    flight (``TuneController._schedule_trial_pause`` -> ``_schedule_trial_stop``): it caches a STOP for
    the trial, to run when a save of the trial next resolves, and marks the trial PAUSED."""

    def __init__(self, trials: list[Trial]) -> None:
        super().__init__(trials)
        self._cached_trial_decisions: dict[str, str] = {}

    def pause_trial(self, trial: Trial, should_checkpoint: bool = True) -> None:
        if trial.is_saving:
            self._cached_trial_decisions[trial.trial_id] = TrialScheduler.STOP
        trial.temporary_state.saving_to = None
        trial.set_status(Trial.PAUSED)


@pytest.mark.parametrize("cls", [SafePopulationBasedTraining, PopulationBasedTraining])
def test_an_exploited_trial_that_was_being_paused_keeps_no_stale_stop(cls):
    """The lower trial reached the point first and Tune is saving it to pause it when the upper trial's
    report starts the round: after the exploit it must restart and train on, not stop at its next save."""
    pbt, _ = population(cls, 2)
    upper, lower = pbt._trial_state
    controller = SavingController([upper, lower])
    pbt._trial_state[upper].last_checkpoint = "upper's checkpoint"
    pbt._trial_state[upper].last_result = {"epoch": 2, "val/acc": 0.5}
    pbt._trial_state[upper].last_score, pbt._trial_state[lower].last_score = 0.5, 0.1
    lower.temporary_state.saving_to = "the pause's save in flight"
    pbt._exploit(controller, lower, upper)
    assert lower.status == Trial.PAUSED and lower.config["trial"]["optim"]["lr"] in (0.1, 0.3)
    stale = controller._cached_trial_decisions.get(lower.trial_id)
    assert stale == (TrialScheduler.STOP if cls is PopulationBasedTraining else None)


def test_the_installed_tune_still_caches_the_stop_where_the_workaround_looks():
    """The workaround reads Tune's private ``_cached_trial_decisions`` (ray 2.60); after a Ray upgrade
    this fails until the stale-STOP path is checked again (the fake controller above models it)."""
    import inspect

    from ray.tune.execution.tune_controller import TuneController

    source = inspect.getsource(TuneController._schedule_trial_stop)
    assert "self._cached_trial_decisions[trial.trial_id] = TrialScheduler.STOP" in source
