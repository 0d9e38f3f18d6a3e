"""``mmbal report --readme``: the README table from a real results folder, naming the machine (issue 9)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from test_report import fake_trial

from orchestrator.cli import main
from orchestrator.report.formatting import fmt_stat
from orchestrator.report.leaderboard import build_leaderboard
from orchestrator.report.readme import MACHINE_FILE, machine_info, write_machine


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "exp"
    for seed, (val, test) in enumerate([(0.8, 0.5), (0.7, 0.6), (0.75, 0.55)]):
        fake_trial(folder, f"j{seed}", "joint", 0.1, seed, val, test)
        fake_trial(folder, f"m{seed}", "mla", 0.1, seed, val - 0.1, test + 0.2)
    return folder


def test_the_readme_table_is_the_leaderboard_and_names_the_recorded_machine(tmp_path, capsys):
    folder = _folder(tmp_path)
    write_machine(folder)
    assert main(["report", str(folder), "--readme"]) == 0
    out = capsys.readouterr().out
    assert f"the sweep's machine: {machine_info()['cpu']}" in out and f"torch {torch.__version__}" in out
    lb = build_leaderboard(folder)
    rows = {
        line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ") and "---" not in line
    }
    assert rows["method"].split("|")[2].strip() == "test acc %"
    for e in lb.boards[0].entries:  # the same numbers as the leaderboard
        assert f"| {fmt_stat('test/acc', e.metrics['test/acc'])} |" in rows[e.method]
    assert (folder / "report" / "readme.md").read_text() in out


def test_without_a_recorded_machine_the_table_says_whose_it_is(tmp_path, capsys):
    folder = _folder(tmp_path)
    assert not (folder / MACHINE_FILE).exists()
    assert main(["report", str(folder), "--readme", "--out", str(tmp_path / "r")]) == 0
    assert "the machine of this report (the sweep recorded none)" in capsys.readouterr().out
    recorded = {"cpu": "Some CPU", "cores": 64, "gpu": None, "torch": "9.9", "torch_threads": 1, "python": "3.x"}
    (folder / MACHINE_FILE).write_text(json.dumps(recorded))
    assert main(["report", str(folder), "--readme", "--out", str(tmp_path / "r")]) == 0
    assert "Some CPU (64 cores, no GPU), torch 9.9" in capsys.readouterr().out


def test_the_machine_records_the_threads_each_trial_ran_with(tmp_path, capsys):
    from orchestrator.run.driver import _trial_threads
    from orchestrator.sweep.load import load_sweep

    root = Path(__file__).resolve().parents[1] / "sweeps"
    packed = load_sweep(root / "mfeat_all.yaml", ["execution.cpus_per_trial=1"])
    local = load_sweep(root / "mfeat_all.yaml", ["execution.mode=local"])
    assert _trial_threads(packed) == 1 and _trial_threads(local) is None
    folder = _folder(tmp_path)
    write_machine(folder, _trial_threads(packed))
    assert json.loads((folder / MACHINE_FILE).read_text())["torch_threads"] == 1
    assert main(["report", str(folder), "--readme"]) == 0
    assert "intra-op threads per trial: 1)" in capsys.readouterr().out
