"""An interrupted packed sweep (Ctrl-C on the driver) resumed with ``--resume``: nothing rerun, nothing lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from orchestrator.results import iter_trials

pytestmark = pytest.mark.slow


def _sweep(tmp_path: Path) -> Path:
    raw = {
        "experiment": "resume",
        "results": str(tmp_path / "results"),
        "dataset": "mfeat",
        "epochs": 3,
        "seeds": [0, 1, 2],
        "data": {"train_per_class": 5, "val_per_class": 4, "test_per_class": 4},
        "model": {"feature_dim": 16},
        "loader": {"batch_size": 16},
        "tracking": "none",
        "checkpoint": {"every": 1, "keep": 1},
        "execution": {"mode": "packed", "max_concurrent": 1, "max_failures": 0},
        "methods": {"joint": {}, "unimodal": {}},
    }
    path = tmp_path / "resume.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _cli(path: Path, *extra: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "sweep", str(path), *extra],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_interrupted_sweep_resumes_to_completion(tmp_path):
    path = _sweep(tmp_path)
    trials_dir = tmp_path / "results" / "resume" / "trials"
    proc = _cli(path, cwd=tmp_path)
    deadline = time.time() + 240
    while time.time() < deadline and len(list(trials_dir.glob("*/summary.json"))) < 2:
        time.sleep(0.5)
    assert proc.poll() is None, proc.communicate()[0][-3000:]
    proc.send_signal(signal.SIGINT)  # Ctrl-C: Tune saves its state and stops
    log = proc.communicate(timeout=120)[0]
    done_before = {p.parent.name: p.stat().st_mtime_ns for p in trials_dir.glob("*/summary.json")}
    assert 2 <= len(done_before) < 6, log[-3000:]

    again = _cli(path, cwd=tmp_path)  # without --resume: refused, the folder is kept as it is
    out = again.communicate(timeout=120)[0]
    assert again.returncode == 2 and "add --resume to continue it" in out

    resumed = _cli(path, "--resume", cwd=tmp_path)
    log = resumed.communicate(timeout=400)[0]
    assert resumed.returncode == 0, log[-3000:]
    trials = list(iter_trials(tmp_path / "results" / "resume"))
    assert len(trials) == 6 and all(t.completed for t in trials)
    assert sorted((t.config["method"], t.seed) for t in trials) == sorted(
        (m, s) for m in ("joint", "unimodal") for s in (0, 1, 2)
    )
    for t in trials:
        assert [r["epoch"] for r in t.history] == [1, 2, 3], t.trial_id  # every epoch once
        assert t.summary["test/acc"] == t.history[-1]["test/acc"]
    for tid, mtime in done_before.items():  # finished trials were not rerun
        assert (trials_dir / tid / "summary.json").stat().st_mtime_ns == mtime
    assert json.loads((trials_dir / trials[0].trial_id / "config.json").read_text())["_meta"]["experiment"] == "resume"
    # the restored run kept Tune's own loggers off (execution.tune_loggers defaults to false; Tune stores callbacks)
    assert not list((tmp_path / "results" / "resume" / "_ray").rglob("progress.csv"))
