"""mmbal's sweep progress: the table and progress lines (no Ray), and what a real sweep prints (a CLI run)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from orchestrator.run.progress import Progress, fmt_duration


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def describe(config):
    return config["method"], config.get("params_text", "")


def make(tty: bool, total: int = 4, width: int = 120):
    out, clock = io.StringIO(), Clock()
    return Progress("exp", total, 10, describe, stream=out, tty=tty, width=width, clock=clock), out, clock


def row(epoch: int, acc: float = 0.9) -> dict:
    return {
        "epoch": epoch,
        "val/acc": acc,
        "val/acc/pix": 0.93,
        "val/acc/fou": 0.71,
        "val/imbalance/score_ratio": 1.31,
        "train/loss": 0.2,
    }


def test_table_columns_and_eta():
    p, _, clock = make(tty=False)
    long = ",".join(f"param_{i}=0.{i}" for i in range(30))  # far too wide for 120 columns
    p.start("a_00000", {"method": "joint", "seed": 0, "epochs": 10})
    p.start("a_00001", {"method": "ogm_ge", "seed": 1, "epochs": 10, "params_text": long})
    clock.t = 10.0
    p.result("a_00000", row(5))
    p.result("a_00001", row(5))
    lines = p.lines()
    assert all(len(line) <= 120 for line in lines), [len(x) for x in lines]
    head, cols, *body = lines
    assert head.startswith("exp [") and "0/4 trials" in head and "2 running" in head
    # 10 epochs trained in 10 s; 10 left on the two running trials, 20 on the two not started
    assert "ETA 0:30" in head and "elapsed 0:10" in head
    assert cols.split()[:6] == ["trial", "method", "params", "seed", "status", "epoch"]
    joint = next(line for line in body if "joint" in line)
    assert "5/10" in joint and "90.0" in joint and "pix 93.0 fou 71.0" in joint and "1.31" in joint
    assert any("ogm_ge" in line and "param_0=0.0" in line for line in body)  # cut, not dropped
    assert body[-1].startswith("... 2 more")


def test_plain_lines_off_a_terminal():
    p, out, clock = make(tty=False, total=2)
    p.start("t0", {"method": "joint", "seed": 0, "epochs": 10})
    p.start("t1", {"method": "mla", "seed": 0, "epochs": 10})
    for e in range(1, 11):
        clock.t = e
        p.result("t0", row(e))
    p.end("t0", "done")
    p.result("t1", row(3, acc=0.5))
    p.end("t1", "stopped")
    p.close()
    lines = out.getvalue().splitlines()
    assert "\x1b" not in out.getvalue()  # no cursor movement in a log file
    assert lines[0].startswith("[1/2] done t0 joint s0 epoch 10/10 val acc 90.0% (pix 93.0 fou 71.0) ratio 1.31")
    assert lines[1].startswith("[2/2] stopped t1 mla s0 epoch 3/10")
    assert lines[-1].startswith("exp [####################] 2/2 trials") and "1 stopped early" in lines[-1]


def test_heartbeat_off_a_terminal_once_a_minute():
    p, out, clock = make(tty=False, total=1)
    p.start("t0", {"method": "joint", "seed": 0, "epochs": 10})
    n = len(out.getvalue().splitlines())
    clock.t = 30.0
    p.result("t0", row(1))
    assert len(out.getvalue().splitlines()) == n  # no line per epoch
    clock.t = 125.0
    p.result("t0", row(2))
    assert len(out.getvalue().splitlines()) == n + 1 and "1 running" in out.getvalue().splitlines()[-1]


def test_terminal_redraws_in_place():
    p, out, clock = make(tty=True, total=1)
    p.start("t0", {"method": "joint", "seed": 0, "epochs": 10})
    first = out.getvalue()
    clock.t = 2.0
    p.result("t0", row(1))
    redraw = out.getvalue()[len(first) :]
    drawn = first.count("\n")
    assert redraw.startswith(f"\x1b[{drawn}F\x1b[J")  # back over the previous drawing, then clear
    clock.t = 2.5
    p.result("t0", row(2))
    assert out.getvalue().endswith(redraw)  # at most one redraw a second


def test_fmt_duration():
    assert [fmt_duration(s) for s in (0, 61, 3725, float("nan"))] == ["0:00", "1:01", "1:02:05", "?"]


@pytest.mark.slow
def test_sweep_prints_mmbal_progress_not_tunes(tmp_path):
    """A tiny packed sweep through the CLI, stdout a pipe: short lines, method names, no Tune boxes."""
    sweep = {
        "experiment": "pp",
        "results": str(tmp_path / "results"),
        "dataset": "mfeat",
        "epochs": 2,
        "seeds": [0],
        "data": {"train_per_class": 5, "val_per_class": 4, "test_per_class": 4},
        "model": {"feature_dim": 16},
        "tracking": "none",
        "execution": {"mode": "packed", "max_concurrent": 2},
        "methods": {"joint": {}, "ogm_ge": {"params": {"alpha": {"grid": [0.4, 0.8]}}}},
    }
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(sweep))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "sweep", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout + proc.stderr
    lines = text.splitlines()
    # the progress part (everything before the leaderboard, whose Markdown table is as wide as its columns)
    progress = proc.stdout.split("# Leaderboard")[0].splitlines() + proc.stderr.splitlines()
    assert all(len(line) <= 120 for line in progress if not line.startswith("results: ")), progress
    for chatter in ("╭", "Trial status", "Current best trial", "TensorBoard", "Checkpoint successfully", "INFO"):
        assert chatter not in text, chatter
    done = [line for line in lines if line.startswith("[") and " done " in line]
    assert len(done) == 3
    assert sum("ogm_ge alpha=0.4 s0" in line for line in done) == 1 and any(" joint s0 " in x for x in done)
    assert "| joint" in text and "| ogm_ge" in text  # the leaderboard at the end, as before
    assert len(lines) < 40, text
