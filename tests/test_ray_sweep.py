"""Sweeps on a real (small) Ray: packed trials, ASHA early stopping, PBT, a 2-worker DDP trial."""

from __future__ import annotations

import importlib.util
import logging
import time
from pathlib import Path

import pytest
import torch
from conftest import start_local_ray

from orchestrator.results import iter_trials
from orchestrator.run.driver import run_sweep
from orchestrator.sweep import parse_sweep
from trainables.config import resolve
from trainables.loop import build_trial, run_trial
from trainables.reporting import JsonlReporter
from trainables.runtime import Runtime

TINY = {"train_per_class": 5, "val_per_class": 6, "test_per_class": 4}


@pytest.fixture(scope="module", autouse=True)
def ray_instance():
    import ray

    start_local_ray()
    yield
    ray.shutdown()


@pytest.fixture(autouse=True)
def cpus_given_back():
    """A test that failed inside ``Tuner.fit`` (or timed out) can leave trial actors holding the CPUs,
    and the next test's trials would wait for them forever: then Ray is restarted."""
    import ray

    yield
    deadline = time.monotonic() + 20
    while ray.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    if ray.available_resources().get("CPU", 0) < 2:
        ray.shutdown()
        start_local_ray()


def raw(tmp_path: Path, name: str, **extra) -> dict:
    r = {
        "experiment": name,
        "results": str(tmp_path / "results"),
        "dataset": "mfeat",
        "epochs": 2,
        "seeds": [0],
        "data": dict(TINY),
        "model": {"feature_dim": 16},
        "loader": {"batch_size": 16},
        "tracking": "none",
        "execution": {"mode": "packed", "max_failures": 0},
        "methods": {"joint": {}},
    }
    r.update(extra)
    return r


def test_packed_trials_match_a_local_run(tmp_path):
    sweep = parse_sweep(
        raw(tmp_path, "packed", seeds=[0, 1], methods={"joint": {}, "unimodal": {"params": {"modality": "pix"}}})
    )
    out = run_sweep(sweep)
    assert sorted(out["status"].values()) == ["completed"] * 4
    trials = list(iter_trials(sweep.results_dir))
    assert len(trials) == 4 and all(t.completed for t in trials)
    for t in trials:
        assert [r["epoch"] for r in t.history] == [1, 2]
        assert not any(k.startswith("_") or k in ("pid", "config", "checkpoint_path") for r in t.history for k in r)
        # the trial process's own system metrics ride with its rows (W&B's monitor would watch the driver)
        assert all(r["system/rss_gb"] > 0 and r["system/cpu_util"] >= 0 for r in t.history)
        assert t.config["_meta"]["name"] == f"{t.config['_meta']['method']}-s{t.seed}"  # readable in Tune mode too
    # the same config trained in this process gives the very same numbers (deterministic CPU training)
    t0 = next(t for t in trials if t.config["method"] == "unimodal" and t.seed == 1)
    local = run_trial({k: v for k, v in t0.config.items() if k != "_meta"}, JsonlReporter(tmp_path / "local"))
    assert local["test/acc"] == pytest.approx(t0.summary["test/acc"], abs=1e-9)
    assert local["val/acc/pix"] == pytest.approx(t0.summary["val/acc/pix"], abs=1e-9)


@pytest.mark.parametrize("tune_loggers", [False, True])
def test_tune_loggers_option_reaches_tune(tmp_path, tune_loggers):
    """``execution.tune_loggers`` on: Tune writes its JSON/CSV/TensorBoard files into each trial's folder in
    Ray's storage; off (the default): none of them, and mmbal's own results are the same."""
    execution = {"mode": "packed", "max_failures": 0, "tune_loggers": tune_loggers}
    sweep = parse_sweep(raw(tmp_path, f"loggers-{tune_loggers}", epochs=1, execution=execution))
    assert list(run_sweep(sweep)["status"].values()) == ["completed"]
    (trial,) = iter_trials(sweep.results_dir)
    assert trial.completed and [r["epoch"] for r in trial.history] == [1]
    tune_dir = sweep.results_dir / "_ray" / sweep.experiment / trial.trial_id
    assert tune_dir.is_dir()
    written = {p.name for p in tune_dir.iterdir() if p.is_file()}
    tune_files = {"progress.csv", "result.json", "params.json", "params.pkl"}
    assert (tune_files <= written) if tune_loggers else not (tune_files & written), written
    assert any(n.startswith("events.out.tfevents") for n in written) == tune_loggers
    # Tune's warning that its result table found none of its loggers' files is dropped (mmbal reads its own)
    warning = "Failed to fetch metrics for 1 trial(s):"
    record = logging.LogRecord("ray.tune.analysis.experiment_analysis", logging.WARNING, "", 0, warning, None, None)
    assert not logging.getLogger(record.name).filter(record)


def test_asha_stops_the_bad_trials_early(tmp_path):
    lrs = [0.2, 1e-6, 1e-6, 1e-6]
    sweep = parse_sweep(
        raw(
            tmp_path,
            "asha",
            epochs=4,
            optim={"lr": 0.1},
            methods={"joint": {"optim": {"lr": {"grid": lrs}}}},
            search={"scheduler": "asha", "asha": {"grace_period": 1, "reduction_factor": 2}},
            execution={"mode": "packed", "max_concurrent": 1, "max_failures": 0},
        )
    )
    run_sweep(sweep)
    trials = list(iter_trials(sweep.results_dir))
    by_lr = {}
    for t in trials:
        by_lr.setdefault(t.config["optim"]["lr"], []).append(t)
    (good,) = by_lr[0.2]
    assert good.completed and len(good.history) == 4
    stopped = [t for t in by_lr[1e-6] if not t.completed]
    assert stopped, "ASHA stopped none of the lr=1e-6 trials"
    assert all(len(t.history) < 4 for t in stopped)


@pytest.mark.slow
def test_pbt_moves_checkpoints_and_mutates_configs(tmp_path):
    sweep = parse_sweep(
        raw(
            tmp_path,
            "pbt",
            epochs=4,
            optim={"lr": 0.1},
            methods={"joint": {"optim": {"lr": {"grid": [0.2, 1e-6]}}}},
            search={
                "scheduler": "pbt",
                "pbt": {"perturbation_interval": 2, "quantile_fraction": 0.5, "mutations": {"optim.lr": [0.1, 0.3]}},
            },
            execution={"mode": "packed", "max_failures": 0},
        )
    )
    out = run_sweep(sweep)
    trials = list(iter_trials(sweep.results_dir))
    assert sorted(out["status"].values()) == ["completed", "completed"]
    # the bad trial exploited the good one: its config now carries a mutated learning rate
    assert sorted(t.config["optim"]["lr"] for t in trials) != [1e-6, 0.2]
    assert all([r["epoch"] for r in t.history] == [1, 2, 3, 4] for t in trials)


@pytest.mark.slow
def test_ddp_trial_reports_all_reduced_metrics(tmp_path):
    sweep = parse_sweep(
        raw(
            tmp_path,
            "ddp",
            epochs=2,
            optim={"lr": 0.2},
            data={"train_per_class": 8, "val_per_class": 7, "test_per_class": 4},
            execution={"mode": "ddp", "num_workers": 2, "cpus_per_worker": 1, "max_failures": 0},
        )
    )
    out = run_sweep(sweep)
    (trial,) = iter_trials(sweep.results_dir)
    assert list(out["status"].values()) == ["completed"] and trial.completed
    assert [r["epoch"] for r in trial.history] == [1, 2]
    last = trial.history[-1]
    # rebuild the trial in this process and evaluate the final (rank 0) weights on the *whole* val split
    ckpts = sorted((sweep.results_dir / "_ray" / "ddp-ddp" / trial.trial_id).glob("checkpoint_*/state.pt"))
    states = [torch.load(c, map_location="cpu", weights_only=True) for c in ckpts]
    final = max(states, key=lambda s: s["epoch"])
    assert final["epoch"] == 2
    cfg = resolve({k: v for k, v in trial.config.items() if k != "_meta"})
    tr = build_trial(cfg, Runtime.local("cpu"))
    tr.model.load_state_dict(final["model"])
    tr.method.load_state_dict(final["method"])
    full = tr.eval_split(tr.val_loader, "val")
    for key in ("val/acc", "val/acc/pix", "val/acc/fou"):  # counts over all 70 val samples: exact
        assert last[key] == pytest.approx(full[key], abs=1e-9), key
    assert last["val/loss"] == pytest.approx(full["val/loss"], rel=1e-4)  # float32 sums in another order
    # and it is not what either rank saw alone (so the check above can tell them apart)
    halves = [
        tr.eval_split(
            torch.utils.data.DataLoader(
                torch.utils.data.Subset(tr.data.val, list(range(r, len(tr.data.val), 2))), batch_size=64
            ),
            "val",
        )
        for r in (0, 1)
    ]
    assert any(h[k] != pytest.approx(full[k], abs=1e-3) for h in halves for k in ("val/acc/pix", "val/acc/fou"))


@pytest.mark.parametrize("searcher", ["optuna", "hyperopt"])
def test_model_based_searcher_searches_one_method_space(tmp_path, searcher):
    if importlib.util.find_spec(searcher) is None:
        pytest.skip(f"{searcher} not installed (an optional searcher: pip install -e '.[search]')")
    sweep = parse_sweep(
        raw(
            tmp_path,
            searcher,
            methods={
                "joint": {
                    "optim": {"lr": {"loguniform": [1e-3, 0.3]}},
                    "model": {"fusion": {"choice": ["concat", "sum"]}},
                }
            },
            search={"searcher": searcher, "samples": 3},
            execution={"mode": "packed", "max_concurrent": 2, "max_failures": 0},
        )
    )
    out = run_sweep(sweep)
    trials = list(iter_trials(sweep.results_dir))
    assert sorted(out["status"].values()) == ["completed"] * 3 and len(trials) == 3
    lrs = [t.config["optim"]["lr"] for t in trials]
    assert len(set(lrs)) == 3 and all(1e-3 <= x <= 0.3 for x in lrs)
    assert {t.config["model"]["fusion"] for t in trials} <= {"concat", "sum"}
