"""Local execution (no Ray) and the results writer: the folder contract, resume, rows exactly once."""

from __future__ import annotations

import json
import os

import pytest
import torch

from orchestrator.results import ResultsWriter, iter_trials, read_jsonl
from orchestrator.run import local as local_runner
from orchestrator.run.driver import run_sweep
from orchestrator.sweep import parse_sweep
from trainables.errors import ConfigError


def raw(tmp_path, **extra) -> dict:
    r = {
        "experiment": "loc",
        "results": str(tmp_path / "results"),
        "dataset": "mfeat",
        "epochs": 2,
        "seeds": [0, 1],
        "data": {"train_per_class": 5, "val_per_class": 4, "test_per_class": 4},
        "model": {"feature_dim": 16},
        "execution": {"mode": "local", "max_failures": 0},
        "tracking": "none",
        "methods": {"joint": {}},
    }
    r.update(extra)
    return r


def test_writer_keeps_each_epoch_once_across_retries(tmp_path):
    w = ResultsWriter(tmp_path, "e")
    w.start("t1", {"method": "joint", "seed": 0})
    for e in (1, 2, 3):
        w.result("t1", {"epoch": e, "val/acc": e / 10})
    # a retry restored from the epoch-1 checkpoint reports epochs 2 and 3 again
    w.result("t1", {"epoch": 2, "val/acc": 0.25, "_node_id": "n"})
    w.result("t1", {"epoch": 3, "val/acc": 0.35, "_summary": json.dumps({"status": "completed", "val/acc": 0.35})})
    rows = read_jsonl(tmp_path / "trials" / "t1" / "metrics.jsonl")
    assert rows == [{"epoch": 1, "val/acc": 0.1}, {"epoch": 2, "val/acc": 0.25}, {"epoch": 3, "val/acc": 0.35}]
    assert w.complete("t1") is True
    assert json.loads((tmp_path / "trials" / "t1" / "summary.json").read_text())["val/acc"] == 0.35
    cfg = json.loads((tmp_path / "trials" / "t1" / "config.json").read_text())
    assert cfg["_meta"]["trial_id"] == "t1" and cfg["_meta"]["experiment"] == "e"
    w.start("t2", {"method": "joint", "seed": 0})
    w.result("t2", {"epoch": 1})
    assert w.complete("t2") is False and not (tmp_path / "trials" / "t2" / "summary.json").exists()  # stopped early


def test_local_sweep_writes_the_results_contract_and_resumes(tmp_path, monkeypatch, capsys):
    sweep = parse_sweep(raw(tmp_path, methods={"joint": {}, "unimodal": {"params": {"modality": "pix"}}}))
    calls = []
    real = local_runner.run_trial

    def crash_second(config, reporter, *a, **k):  # the second trial dies in its second epoch
        calls.append(config["method"] + str(config["seed"]))
        if len(calls) == 2:

            class Boom(RuntimeError):
                pass

            orig = reporter.report

            def report(metrics, ckpt):
                if metrics["epoch"] == 2:
                    raise Boom("node lost")
                orig(metrics, ckpt)

            reporter.report = report
        return real(config, reporter, *a, **k)

    monkeypatch.setattr(local_runner, "run_trial", crash_second)
    out = run_sweep(sweep)
    assert list(out["status"].values()) == ["completed", "error", "completed", "completed"]
    with pytest.raises(ConfigError, match="already holds this experiment; add --resume"):
        run_sweep(sweep)
    out = run_sweep(sweep, resume=True)
    assert list(out["status"].values()) == ["completed"] * 4
    assert calls == ["joint0", "joint1", "unimodal0", "unimodal1", "joint1"]  # only the failed one ran again
    trials = list(iter_trials(sweep.results_dir))
    assert [t.trial_id for t in trials] == [
        "00000_joint_s0",
        "00001_joint_s1",
        "00002_unimodal_s0",
        "00003_unimodal_s1",
    ]
    for t in trials:
        assert t.completed and [r["epoch"] for r in t.history] == [1, 2]
        assert t.summary["test/acc"] == t.history[-1]["test/acc"]
    assert trials[0].config_id == trials[1].config_id != trials[2].config_id  # seeds share a config id
    assert (sweep.results_dir / "sweep.yaml").exists()
    machine = json.loads((sweep.results_dir / "machine.json").read_text())  # for `mmbal report --readme`
    assert machine["torch"] == torch.__version__ and machine["cores"] == os.cpu_count()
    changed = parse_sweep(raw(tmp_path, epochs=3, methods={"joint": {}, "unimodal": {"params": {"modality": "pix"}}}))
    with pytest.raises(ConfigError, match="differs from the one in"):
        run_sweep(changed, resume=True)
