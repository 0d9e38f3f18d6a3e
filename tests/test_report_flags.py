"""Failed seeds are flagged in the leaderboard, not averaged in silently (issue 9, defect 5)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from test_report import fake_trial

from orchestrator import results
from orchestrator.report import leaderboard_markdown, write_report
from orchestrator.report.flags import outliers, seed_flags


class T:
    def __init__(self, seed: int, **summary) -> None:
        self.seed, self.summary = seed, {"val/loss": 0.5, "test/acc": 0.9, **summary}


def test_outliers_by_median_and_mad():
    assert outliers({0: 0.99, 1: 0.995, 2: 0.64}) == {2: "outlier: test/acc 64.0 vs median 99.0 of the seeds"}
    assert outliers({0: 0.90, 1: 0.93, 2: 0.86}) == {}  # seed noise
    assert set(outliers({0: 0.29, 1: 1.0})) == {0, 1}  # two seeds: which one failed is unknown
    assert outliers({0: 0.90, 1: 0.95}) == {} and outliers({0: 0.5}) == {}
    # a wide but consistent spread is not an outlier (5 scaled MADs)
    assert outliers({i: x for i, x in enumerate([0.5, 0.6, 0.7, 0.8, 0.9])}) == {}


def test_seed_flags_name_chance_divergence_and_outliers():
    trials = [
        T(0),
        T(1, **{"val/chance/audio": 1.0, "val/chance/visual": 0.0, "test/acc": 0.88}),
        T(2, **{"val/loss": "nan"}),
        T(3, **{"test/acc": 0.3}),
    ]
    flags = seed_flags(trials)
    assert flags[1] == ["at chance: audio"]
    assert flags[2] == ["diverged (non-finite val/loss or test/acc)"]
    assert flags[3] == ["outlier: test/acc 30.0 vs median 89.0 of the seeds"]
    assert 0 not in flags


def _mark_at_chance(folder: Path, tid: str) -> None:
    path = folder / "trials" / tid / "summary.json"
    summary = json.loads(path.read_text())
    summary["val/chance/b"] = 1.0
    results.write_summary(path.parent, summary)


def test_the_report_marks_the_row_and_lists_the_failed_seeds(tmp_path: Path) -> None:
    folder = tmp_path / "exp"
    for seed, test in enumerate([0.99, 0.98, 0.29]):
        fake_trial(folder, f"d{seed}", "dmrnet", 0.1, seed, 0.9, test)
    for seed in range(3):
        fake_trial(folder, f"j{seed}", "joint", 0.1, seed, 0.9, 0.9)
    _mark_at_chance(folder, "d2")
    md = leaderboard_markdown(folder)
    assert "| dmrnet ⚠ |" in md and "| joint |" in md
    assert "- dmrnet seed 2: at chance: b; outlier: test/acc 29.0 vs median 98.0 of the seeds" in md
    files = write_report(folder, tmp_path / "r")
    with open(files["csv"]) as fh:
        rows = {r["method"]: r for r in csv.DictReader(fh)}
    assert rows["dmrnet"]["flagged_seeds"].startswith("2: at chance: b, outlier")
    assert rows["joint"]["flagged_seeds"] == ""
    assert "dmrnet ⚠" in files["html"].read_text()
