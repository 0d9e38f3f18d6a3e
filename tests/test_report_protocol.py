"""The leaderboard's per-modality headline is the linear probe (issue 9's common protocol)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from test_report import fake_trial

from orchestrator import results
from orchestrator.report import leaderboard_markdown, write_report


def _add(folder: Path, tid: str, **keys: float) -> None:
    path = folder / "trials" / tid / "summary.json"
    summary = json.loads(path.read_text())
    summary.update(keys)
    results.write_summary(path.parent, summary)


def test_probe_columns_lead_and_the_gain_is_read_on_the_probe(tmp_path: Path) -> None:
    folder = tmp_path / "exp"
    # own-head accuracies say b is weak (test/acc/b = test/2); the probes say a is weak
    for seed in (0, 1):
        fake_trial(folder, f"j{seed}", "joint", 0.1, seed, 0.8, 0.6)
        _add(folder, f"j{seed}", **{"test/probe/acc/a": 0.5, "test/probe/acc/b": 0.7, "test/shapley/a": 0.2})
        fake_trial(folder, f"m{seed}", "mla", 0.1, seed, 0.7, 0.8)
        _add(folder, f"m{seed}", **{"test/probe/acc/a": 0.65, "test/probe/acc/b": 0.7, "test/shapley/a": 0.3})
    md = leaderboard_markdown(folder)
    header = next(line for line in md.splitlines() if line.startswith("| method"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    assert cols.index("probe a %") < cols.index("probe b %") < cols.index("acc a %")
    assert "Shapley a (pp)" in cols and "Δ probe a vs joint (pp)" in cols
    assert "weak modality: a, lowest linear-probe test accuracy under joint" in md
    files = write_report(folder, tmp_path / "r")
    with open(files["csv"]) as fh:
        rows = {r["method"]: r for r in csv.DictReader(fh)}
    assert rows["mla"]["weak_modality"] == "a" and rows["mla"]["gain_metric"] == "test/probe/acc"
    assert float(rows["mla"]["gain_weak_vs_joint"]) == pytest.approx(0.15)
    assert float(rows["mla"]["test/shapley/a/mean"]) == pytest.approx(0.3)


def test_results_without_probes_keep_the_own_head_gain(tmp_path: Path) -> None:
    folder = tmp_path / "exp"
    fake_trial(folder, "j", "joint", 0.1, 0, 0.8, 0.6)
    fake_trial(folder, "m", "mla", 0.1, 0, 0.7, 0.8)
    md = leaderboard_markdown(folder)
    assert "Δ acc b vs joint (pp)" in md and "probe" not in md.split("\n## ")[1].split("\n")[2]
