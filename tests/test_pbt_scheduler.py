"""Synchronous PBT's two deadlocks, driven through the scheduler's own hooks (no Ray, no timing).

``tests/test_ray_sweep.py::test_pbt_moves_checkpoints_and_mutates_configs`` hung in about one run in
five with Tune's own PopulationBasedTraining; these tests put the scheduler in each stuck state
directly, so they fail every time with the stock class and pass with mmbal's.
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
