"""CLI basics: instant help (no torch/Ray/W&B import), --version, examples, shipped sweeps (list, init),
sweep --dry-run, resume from any directory, a closed pipe, sync's folder choice."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from conftest import TINY_MFEAT

from orchestrator.cli import main
from orchestrator.commands.init import SHIPPED
from orchestrator.commands.sync import experiment_dir
from trainables.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ["bench", "init", "list", "prepare", "report", "sweep", "sync", "train", "validate"]
LIGHT = [c for c in COMMANDS if c != "prepare"]  # prepare's options come from the datasets (torch)

# each command's --help in a fresh interpreter; prints the heavy modules imported after each one
HELP_IMPORTS = """
import sys
from orchestrator.cli import main
for cmd in sys.argv[1:]:
    try:
        main([*cmd.split(), "--help"])
    except SystemExit:
        pass
    print(cmd or "mmbal", *sorted(m for m in ("torch", "ray", "wandb", "numpy", "matplotlib") if m in sys.modules),
          file=sys.stderr)
"""


def python(code: str, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, **kw)


def test_help_imports_no_torch_ray_or_wandb():
    proc = python(HELP_IMPORTS, "", *LIGHT)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines == ["mmbal", *LIGHT], lines  # a name followed by a module means that help imported it


def test_version_names_mmbal_and_its_stack(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("mmbal ") and "torch " in out and "ray " in out


@pytest.mark.parametrize("command", LIGHT)
def test_every_command_help_has_examples(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = capsys.readouterr().out
    assert "\nexamples:\n" in out and f"  mmbal {command}" in out and "--plugin MODULE" in out


def test_shipped_files_are_package_data_and_reachable_from_anywhere():
    shipped = sorted(p.name for p in (ROOT / "sweeps").glob("*.yaml"))
    assert shipped and sorted(p.name for p in (SHIPPED / "sweeps").glob("*.yaml")) == shipped
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["orchestrator"]
    packaged = {p.relative_to(ROOT / "orchestrator") for g in globs for p in (ROOT / "orchestrator").glob(g)}
    assert {Path("shipped/sweeps") / n for n in shipped} | {Path("shipped/cluster.yaml")} <= packaged
    assert (SHIPPED / "cluster.yaml").read_text() == (ROOT / "cluster.yaml").read_text()


def test_list_sweeps_and_init_copy_one_to_edit(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["list", "sweeps"]) == 0
    assert "quickstart: Every balancing method against joint" in capsys.readouterr().out
    assert main(["init", "quickstart"]) == 0
    assert (tmp_path / "quickstart.yaml").read_text() == (ROOT / "sweeps" / "quickstart.yaml").read_text()
    assert main(["init", "quickstart.yaml"]) == 2  # never overwrites silently
    assert "DEST: quickstart.yaml exists; pass --force" in capsys.readouterr().err
    assert main(["init", "cluster", "conf/"]) == 0
    mounts = yaml.safe_load((tmp_path / "conf" / "cluster.yaml").read_text())["file_mounts"]
    assert mounts == {"/home/ray/mmbal": str(ROOT)}  # this checkout, wherever `ray up` runs
    assert main(["init", "nope"]) == 2
    err = capsys.readouterr().err
    assert "SWEEP: no shipped sweep 'nope'; known: " in err and "cremad_amco, " in err and "quickstart" in err


def test_dry_run_prints_the_trial_table_and_runs_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", str(ROOT / "sweeps" / "quickstart.yaml"), "--dry-run", "--set", "seeds=[0,1]"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["#", "method", "seed", "varied"]
    assert lines[1].split() == ["0", "joint", "0"]
    ogm = [line.split()[1:] for line in lines if " ogm_ge " in line]
    assert sorted(ogm) == sorted(["ogm_ge", s, f"alpha={a}"] for a in ("0.4", "0.8") for s in "01")
    assert lines[-1].startswith("18 trials of experiment quickstart; execution packed")  # 9 configs x 2 seeds
    assert not (tmp_path / "results").exists()


def tiny_sweep(path: Path) -> Path:
    raw = {
        "experiment": "anywhere",
        "dataset": "mfeat",
        "epochs": 1,
        "data": dict(TINY_MFEAT),
        "model": {"feature_dim": 16},
        "tracking": "none",
        "execution": {"mode": "local"},
        "methods": ["joint"],
    }
    path.write_text(json.dumps(raw))
    return path


def test_resume_by_results_folder_from_another_directory(tmp_path, monkeypatch, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    assert main(["sweep", str(tiny_sweep(tmp_path / "a" / "s.yaml"))]) == 0  # results relative to a/
    stored = yaml.safe_load((tmp_path / "a" / "results" / "anywhere" / "sweep.yaml").read_text())
    assert stored["results"] == str(tmp_path / "a" / "results")
    monkeypatch.chdir(tmp_path / "b")
    capsys.readouterr()
    assert main(["sweep", str(tmp_path / "a" / "results" / "anywhere"), "--resume"]) == 0
    assert "1 completed" in capsys.readouterr().out
    assert not (tmp_path / "b" / "results").exists()  # continued in a/, nothing started here
    monkeypatch.chdir(tmp_path / "a")
    assert main(["sweep", "anywhere", "--resume"]) == 0  # the experiment's name, under ./results


def test_a_closed_pipe_is_not_a_traceback():
    # the reader is gone before mmbal writes a byte (what `mmbal list datasets | head -1` ends in)
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "list", "datasets"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait() == 141
    assert "Error" not in err and "Traceback" not in err, err


def test_sync_prefers_results_over_a_same_named_folder_here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for d in ("exp/wandb", "res/exp/wandb", "results/exp/wandb"):
        (tmp_path / d).mkdir(parents=True)
    assert experiment_dir("exp", "res") == Path("res/exp")
    assert experiment_dir("exp", None) == Path("exp")  # a folder given by its path
    assert experiment_dir("other", None) == Path("results/other")


def test_video_decoding_is_an_extra_needed_by_prepare_only(monkeypatch):
    from trainables.data.io import video
    from trainables.errors import ConfigError

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not any(d.startswith("av") for d in project["dependencies"])
    assert "av>=14" in project["optional-dependencies"]["video"] and "av>=14" in project["optional-dependencies"]["dev"]
    monkeypatch.setitem(sys.modules, "av", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"pip install 'mmbal\[video\]'"):
        video._av()


def test_a_sweep_stored_with_relative_paths_still_resumes_where_it_started(tmp_path, monkeypatch):
    from orchestrator.run.driver import prepare_results
    from orchestrator.sweep import canonical, load_sweep

    monkeypatch.chdir(tmp_path)
    sweep = load_sweep(tiny_sweep(tmp_path / "s.yaml"))
    sweep.results_dir.mkdir(parents=True)
    old = yaml.safe_load((tmp_path / "s.yaml").read_text())  # as written before paths were stored absolute
    (sweep.results_dir / "sweep.yaml").write_text(canonical(old))
    prepare_results(sweep, resume=True)  # no "the sweep differs"
    (sweep.results_dir / "sweep.yaml").write_text(canonical({**old, "epochs": 2}))
    with pytest.raises(ConfigError, match="the sweep differs"):
        prepare_results(sweep, resume=True)
