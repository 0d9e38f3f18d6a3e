"""A modality at chance is named in a warning and in the summary (issue 9, defect 5)."""

import warnings

import pytest
from conftest import tiny_config

from trainables.health import CHANCE_EPOCHS, chance_level, chance_run, chance_summary, warn_if_stuck
from trainables.loop import run_trial
from trainables.reporting import JsonlReporter


def _history(audio: list[float], visual: list[float] | None = None) -> list[dict]:
    visual = visual or [0.9] * len(audio)
    return [
        {"epoch": i + 1, "val/acc/audio": a, "val/acc/visual": v}
        for i, (a, v) in enumerate(zip(audio, visual, strict=True))
    ]


def test_chance_level_has_an_absolute_margin():
    assert chance_level(6) == pytest.approx(1 / 6 + 0.02)
    assert chance_level(2) == pytest.approx(0.52)


def test_a_modality_stuck_at_chance_is_recorded_and_a_healthy_one_is_not():
    hist = _history([0.17, 0.16, 0.18, 0.17, 0.17])  # 6 classes: the audio of the defect, constant output
    s = chance_summary(hist, best_epoch=5, num_classes=6)
    assert s["val/chance/audio"] == 1.0 and s["val/chance/visual"] == 0.0
    assert len(s["warnings"]) == 1 and "'audio'" in s["warnings"][0] and "5 epochs" in s["warnings"][0]


def test_a_modality_that_recovers_before_the_best_epoch_is_not_flagged():
    hist = _history([0.17, 0.17, 0.17, 0.5, 0.6])
    assert chance_summary(hist, best_epoch=5, num_classes=6)["val/chance/audio"] == 0.0
    assert chance_summary(hist, best_epoch=3, num_classes=6)["val/chance/audio"] == 1.0  # the state reported


def test_short_trials_and_short_runs_are_not_flagged():
    assert chance_summary(_history([0.1, 0.1]), 2, 10) == {
        "val/chance/audio": 0.0,
        "val/chance/visual": 0.0,
        "warnings": [],
    }
    assert chance_run(_history([0.1, 0.5, 0.1, 0.1]), "audio", 10) == 2


def test_the_warning_fires_once_when_the_run_qualifies():
    accs = [0.1] * (CHANCE_EPOCHS + 2)
    fired = []
    for n in range(1, len(accs) + 1):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            warn_if_stuck(_history(accs[:n]), 10)
        fired += [(n, str(w.message)) for w in seen]
    assert [n for n, _ in fired] == [CHANCE_EPOCHS]
    assert "'audio'" in fired[0][1]


def test_a_trial_whose_encoders_blew_up_says_so(tmp_path):
    # SGD at lr 100 drives the losses to ~1e20 and both modalities to a constant class
    with pytest.warns(RuntimeWarning, match="at chance"):
        summary = run_trial(tiny_config(epochs=4, optim={"lr": 100.0}), JsonlReporter(tmp_path))
    assert summary["val/chance/pix"] == summary["val/chance/fou"] == 1.0
    assert len(summary["warnings"]) == 2
    healthy = run_trial(tiny_config(epochs=2), JsonlReporter(tmp_path / "ok"))
    assert healthy["warnings"] == [] and healthy["val/chance/pix"] == 0.0
