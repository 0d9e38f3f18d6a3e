"""W&B: offline runs written by a (local-mode) sweep, read back from the ``.wandb`` files themselves."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from orchestrator.commands import sync
from orchestrator.run.driver import run_sweep
from orchestrator.sweep import parse_sweep
from orchestrator.tracking import TrackingSpec, make_tracker, offline_runs, resolve_mode

FAKE_KEY = "f" * 36 + "0123"  # what a 40-character API key looks like; must never reach a file


def read_wandb_records(path: Path) -> list:
    """Records of a ``.wandb`` file: W&B's LevelDB-style log (7-byte header, 32 KiB blocks, chunks of
    crc32/len16/type8 + protobuf ``Record``). wandb 0.31 ships no Python reader of its own."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    out, pos, block, pending = [], 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (2, 3):  # first / middle piece of a record split across blocks
            pending += chunk
            continue
        if kind not in (1, 4):
            continue
        rec = pb.Record()
        rec.ParseFromString(pending + chunk)
        pending = b""
        out.append(rec)
    return out


def wait_for_exit_record(folder: Path, timeout_s: float = 30.0) -> list:
    """The run's records once wandb-core has written them out to the end (it does so asynchronously:
    once, in a full test session, the file was not there yet right after ``run.finish()``)."""
    import time

    deadline = time.time() + timeout_s
    while True:
        files = list(folder.glob("*.wandb"))
        try:
            recs = read_wandb_records(files[0]) if len(files) == 1 else []
        except Exception:  # a record still being written
            recs = []
        if any(r.WhichOneof("record_type") == "exit" for r in recs) or time.time() > deadline:
            return recs
        time.sleep(0.2)


def history(records: list) -> list[dict[str, float]]:
    import json

    rows = []
    for r in records:
        if r.WhichOneof("record_type") == "history":
            rows.append({"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in r.history.item})
    return rows


def final_summary(records: list) -> dict:
    """The run's summary as W&B ends it: every summary update folded in order (offline runs write no
    wandb-summary.json; the history's own summary updates come as records too)."""
    import json

    out: dict = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            for i in r.summary.update:
                out["/".join(i.nested_key) or i.key] = json.loads(i.value_json)
    return out


def deprecated_features(records: list) -> list[str]:
    """W&B features our calls used that W&B has deprecated. W&B reports them with ``termwarn`` (not a
    Python warning, and quiet in our silent runs) and in the run's telemetry, read here."""
    return [
        f.name
        for r in records
        if r.WhichOneof("record_type") == "telemetry"
        for f, _ in r.telemetry.deprecated.ListFields()
    ]


def sweep_raw(tmp_path: Path, tracking) -> dict:
    return {
        "experiment": "wb",
        "results": str(tmp_path / "results"),
        "dataset": "mfeat",
        "epochs": 2,
        "seeds": [0],
        "data": {"train_per_class": 5, "val_per_class": 4, "test_per_class": 4},
        "model": {"feature_dim": 16},
        "execution": {"mode": "local"},
        "tracking": tracking,
        "methods": {"joint": {}, "unimodal": {"params": {"modality": "fou"}}},
    }


def test_offline_runs_carry_per_modality_curves_against_epoch(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    sweep = parse_sweep(sweep_raw(tmp_path, {"backend": "wandb", "project": "p"}))
    run_sweep(sweep)
    capsys.readouterr()
    runs = offline_runs(sweep.results_dir)
    summary = [p for p in runs if p.name.endswith("-summary")]  # the sweep's leaderboard run
    runs = [p for p in runs if p not in summary]
    assert len(summary) == 1 and [p.name.startswith("offline-run-") for p in runs] == [True, True]
    seen = {}
    for folder in runs:
        recs = wait_for_exit_record(folder)
        (run,) = [r.run for r in recs if r.WhichOneof("record_type") == "run"]
        metrics = {
            (r.metric.name, r.metric.glob_name, r.metric.step_metric)
            for r in recs
            if r.WhichOneof("record_type") == "metric"
        }
        assert ("", "*", "epoch") in metrics  # every curve is drawn against epoch
        rows = history(recs)
        assert [row["epoch"] for row in rows] == [1, 2]
        # joint reports both modalities and their imbalance; unimodal (fou alone) its one modality
        per_epoch = {"val/acc", "val/acc/fou", "train/loss"} | (
            {"val/acc/pix", "val/imbalance/score_ratio"} if run.job_type == "joint" else set()
        )
        for row in rows:
            assert per_epoch <= set(row), set(row)
        # test metrics are end values of the selected state: in the summary, never on the epoch axis
        assert not [k for row in rows for k in row if k.startswith(("test/", "best/"))]
        assert {"test/acc/fou", "test/missing/pix/acc", "test/missing/fou/acc"} <= set(final_summary(recs))
        seen[run.job_type] = (run.run_group, run.run_id.split("-", 2)[2], rows[-1]["val/acc/fou"])
        assert deprecated_features(recs) == []
    assert deprecated_features(wait_for_exit_record(summary[0])) == []  # the summary run's calls too
    assert set(seen) == {"joint", "unimodal"}
    assert all(group == "wb" for group, _, _ in seen.values())
    # the curves are the results folder's rows, value for value
    import json

    trial = sweep.results_dir / "trials" / seen["joint"][1]
    last = json.loads((trial / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["val/acc/fou"] == pytest.approx(seen["joint"][2])
    # mmbal sync finds exactly these runs (the dry run lists what `wandb sync` would upload)
    sync.run(type("A", (), {"experiment": "wb", "results": str(tmp_path / "results"), "dry_run": True})())
    assert capsys.readouterr().out.split() == [str(p) for p in offline_runs(sweep.results_dir)]  # summary run too
    # the API key reaches no file: not the configs, results, W&B run files or logs
    for f in sweep.results_dir.rglob("*"):
        if f.is_file() and not f.is_symlink():
            assert FAKE_KEY.encode() not in f.read_bytes(), f


def test_wandb_failure_never_fails_a_trial(tmp_path, monkeypatch, capsys):
    import wandb

    def broken(*args, **kwargs):
        raise TimeoutError("no network")

    monkeypatch.setattr(wandb, "init", broken)
    monkeypatch.setenv("WANDB_MODE", "offline")
    sweep = parse_sweep(sweep_raw(tmp_path, "wandb"))
    out = run_sweep(sweep)
    assert out["status"] and set(out["status"].values()) == {"completed"}
    assert len(list((sweep.results_dir / "trials").glob("*/summary.json"))) == 2
    err = capsys.readouterr().err
    assert err.count("W&B init failed (TimeoutError: no network)") == 1


def test_tracking_none_writes_no_wandb_files(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    sweep = parse_sweep({**sweep_raw(tmp_path, "none"), "methods": {"joint": {}}})
    run_sweep(sweep)
    assert not (sweep.results_dir / "wandb").exists()
    with pytest.raises(Exception, match="no W&B runs"):
        sync.run(type("A", (), {"experiment": "wb", "results": str(tmp_path / "results"), "dry_run": True})())


def test_mode_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_mode(TrackingSpec()) == "offline"
    (tmp_path / ".netrc").write_text(f"machine api.wandb.ai\n  login user\n  password {FAKE_KEY}\n")
    (tmp_path / ".netrc").chmod(0o600)
    assert resolve_mode(TrackingSpec()) == "online"  # `wandb login` was run
    (tmp_path / ".netrc").unlink()
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    assert resolve_mode(TrackingSpec()) == "online"
    assert resolve_mode(TrackingSpec(mode="offline")) == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_mode(TrackingSpec(mode="online")) == "disabled"
    assert type(make_tracker(TrackingSpec(), "e", tmp_path)).__name__ == "Tracker"  # disabled = no W&B at all


def test_trial_runs_agree_with_summary_json_and_are_named_tagged(tmp_path, monkeypatch, capsys):
    """Each trial's W&B summary is its summary.json (best-validation epoch, test of that state), read
    back from the offline .wandb records; names are ``<method>[-<varied params>]-s<seed>``."""
    import json

    monkeypatch.setenv("WANDB_MODE", "offline")
    raw = sweep_raw(tmp_path, {"backend": "wandb", "project": "proj-x"})
    raw.update(epochs=4, seeds=[0, 1])
    raw["methods"] = {"joint": {"optim": {"lr": {"grid": [0.05, 0.3]}}}, "unimodal": {"params": {"modality": "fou"}}}
    sweep = parse_sweep(raw)
    run_sweep(sweep)
    capsys.readouterr()
    runs = [p for p in offline_runs(sweep.results_dir) if not p.name.endswith("-summary")]
    instance = (sweep.results_dir / "instance_id").read_text().strip()
    names, selected_before_last = set(), 0
    for folder in runs:
        recs = wait_for_exit_record(folder)
        (run,) = [r.run for r in recs if r.WhichOneof("record_type") == "run"]
        trial = next(p for p in (sweep.results_dir / "trials").iterdir() if run.run_id.endswith(p.name))
        assert run.run_id == f"wb-{instance}-{trial.name}"  # this sweep instance's runs only
        want = json.loads((trial / "summary.json").read_text())
        meta = json.loads((trial / "config.json").read_text())["_meta"]
        got = final_summary(recs)
        for key, value in want.items():
            if isinstance(value, (int, float, str)) and not isinstance(value, bool):
                assert got.get(key) == value, (trial.name, key, got.get(key), value)
        last_row = json.loads((trial / "metrics.jsonl").read_text().splitlines()[-1])
        selected_before_last += want["best_epoch"] < last_row["epoch"]
        assert run.display_name == meta["name"]
        # system metrics of the process that ran the trial, on the epoch axis like every curve
        assert all(r["system/rss_gb"] > 0 and "system/cpu_util" in r for r in history(recs))
        assert run.project == "proj-x" and run.run_group == "wb"
        assert set(run.tags) == {meta["method"], "mfeat", "wb"}
        names.add(run.display_name)
    assert names == {
        "joint-lr=0.05-s0",
        "joint-lr=0.05-s1",
        "joint-lr=0.3-s0",
        "joint-lr=0.3-s1",
        "unimodal:fou-s0",
        "unimodal:fou-s1",
    }
    # the check means something only where the selected epoch is not the last one
    assert selected_before_last >= 1


def test_summary_run_is_this_sweep_instances_with_native_charts(tmp_path, monkeypatch, capsys):
    """Two copies of one experiment name get two summary runs; the summary run logs to the sweep's
    project, with line-series charts per modality and the leaderboard as a table."""
    import json

    monkeypatch.setenv("WANDB_MODE", "offline")
    ids = []
    for copy in ("a", "b"):
        raw = {**sweep_raw(tmp_path / copy, {"backend": "wandb", "project": "proj-y"}), "methods": {"joint": {}}}
        sweep = parse_sweep(raw)
        run_sweep(sweep)
        capsys.readouterr()
        (folder,) = [p for p in offline_runs(sweep.results_dir) if p.name.endswith("-summary")]
        recs = wait_for_exit_record(folder)
        (run,) = [r.run for r in recs if r.WhichOneof("record_type") == "run"]
        assert run.project == "proj-y" and run.job_type == "summary"
        ids.append(run.run_id)
        logged = {
            tuple(i.nested_key) or (i.key,): json.loads(i.value_json)
            for r in recs
            if r.HasField("history")
            for i in r.history.item
        }
        # a line-series chart is its table (step, lineKey, lineVal) plus a Vega panel in the run config
        for chart in ("val_acc/fused", "val_acc/pix", "val_acc/fou", "imbalance"):
            entry = logged[(f"charts/mfeat/{chart}_table", "path")]
            table = json.loads((folder / "files" / entry).read_text())
            assert table["columns"] == ["step", "lineKey", "lineVal"]
            assert [(step, line) for step, line, _ in table["data"]] == [(1, "joint"), (2, "joint")]
        (trial,) = (sweep.results_dir / "trials").iterdir()
        rows = [json.loads(line) for line in (trial / "metrics.jsonl").read_text().splitlines()]
        entry = logged[("charts/mfeat/val_acc/pix_table", "path")]
        table = json.loads((folder / "files" / entry).read_text())
        assert [v for _, _, v in table["data"]] == pytest.approx([r["val/acc/pix"] for r in rows])  # one seed
        assert logged[("leaderboard", "_type")] == "table-file"
    assert ids[0] != ids[1] and all(i.startswith("wb-") and i.endswith("-summary") for i in ids)


def test_report_wandb_project_defaults_to_the_sweeps(tmp_path):
    from orchestrator.commands.report import sweep_project

    assert sweep_project(tmp_path) == "mmbal"  # no sweep.yaml: a folder of `mmbal train` runs
    (tmp_path / "sweep.yaml").write_text("experiment: e\ntracking: {backend: wandb, project: mine}\n")
    assert sweep_project(tmp_path) == "mine"
    (tmp_path / "sweep.yaml").write_text("experiment: e\ntracking: none\n")
    assert sweep_project(tmp_path) == "mmbal"


def test_system_stats_measure_this_process():
    from orchestrator.run.system import SystemStats

    stats = SystemStats()
    ballast = bytearray(200 * 2**20)  # 200 MiB resident
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    t = __import__("time").process_time()
    while __import__("time").process_time() - t < 0.3:  # busy: one core
        pass
    row = stats.sample()
    # busy CPU seconds over wall seconds: above 0, at most every core (the shared machine slows the loop)
    assert row["system/rss_gb"] > 0.19 and 0.0 < row["system/cpu_util"] <= (__import__("os").cpu_count() or 1)
    del ballast
