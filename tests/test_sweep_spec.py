"""Sweep files: the search-space vocabulary, expansion over seeds, and one-line errors before Ray starts."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from orchestrator.sweep import SweepErrors, load_sweep, parse_sweep
from orchestrator.sweep import space as ss

REPO = Path(__file__).resolve().parents[1]
TINY = {"train_per_class": 5, "val_per_class": 4, "test_per_class": 4}


def base(**extra) -> dict:
    raw = {
        "experiment": "t",
        "dataset": "mfeat",
        "epochs": 2,
        "data": dict(TINY),
        "tracking": "none",
        "methods": {"joint": {}},
    }
    raw.update(extra)
    return raw


def errors_of(raw: dict) -> list[str]:
    with pytest.raises(SweepErrors) as info:
        parse_sweep(raw, "bad.yaml")
    return info.value.lines()


def test_grid_crosses_seeds_and_grid_points_in_order():
    raw = base(
        seeds=[0, 1, 2],
        methods={"joint": {"optim": {"lr": {"grid": [0.1, 0.01]}}}, "unimodal": {"params": {"modality": "pix"}}},
    )
    sweep = parse_sweep(raw)
    got = [(t.label, t.config["optim"]["lr"], t.config["seed"]) for t in sweep.trials]
    assert got == [
        ("joint", 0.1, 0),
        ("joint", 0.1, 1),
        ("joint", 0.1, 2),
        ("joint", 0.01, 0),
        ("joint", 0.01, 1),
        ("joint", 0.01, 2),
        ("unimodal", 0.01, 0),
        ("unimodal", 0.01, 1),
        ("unimodal", 0.01, 2),
    ]
    assert [t.index for t in sweep.trials] == list(range(9))
    # shared keys reach every method; the method's own keys win
    assert all(t.config["data"]["train_per_class"] == 5 and t.config["epochs"] == 2 for t in sweep.trials)
    assert sweep.trials[-1].config["params"] == {"modality": "pix"}


def test_random_draws_are_shared_by_all_seeds_and_reproducible():
    raw = base(
        seeds=[0, 1],
        search={"searcher": "random", "samples": 3},
        methods={
            "joint": {"optim": {"lr": {"loguniform": [1e-3, 1e-1]}}, "model": {"fusion": {"grid": ["concat", "sum"]}}}
        },
    )
    a, b = parse_sweep(raw), parse_sweep(raw)
    assert len(a.trials) == 3 * 2 * 2
    lrs = [t.config["optim"]["lr"] for t in a.trials]
    assert lrs == [t.config["optim"]["lr"] for t in b.trials]
    for i in range(0, len(lrs), 2):  # consecutive trials are the same config on seeds 0 and 1
        assert lrs[i] == lrs[i + 1] and a.trials[i].config["seed"] == 0 and a.trials[i + 1].config["seed"] == 1
    assert len(set(lrs)) == 6 and all(1e-3 <= x < 1e-1 for x in lrs)


def test_distributions_follow_tune_conventions():
    rng = np.random.default_rng(0)
    draws = {
        k: [ss._parse(k, a, "x").sample(rng) for _ in range(400)]
        for k, a in [
            ("randint", [2, 5]),
            ("qrandint", [0, 10, 5]),
            ("quniform", [0.0, 1.0, 0.25]),
            ("lograndint", [1, 100]),
            ("choice", ["a", "b"]),
            ("qloguniform", [1e-3, 1.0, 1e-3]),
        ]
    }
    assert set(draws["randint"]) == {2, 3, 4}  # high excluded
    assert set(draws["qrandint"]) == {0, 5, 10}  # high included, multiples of q
    assert set(draws["quniform"]) <= {0.0, 0.25, 0.5, 0.75, 1.0}
    assert min(draws["lograndint"]) >= 1 and max(draws["lograndint"]) <= 99
    assert set(draws["choice"]) == {"a", "b"}
    assert all(math.isclose(x / 1e-3, round(x / 1e-3), abs_tol=1e-6) for x in draws["qloguniform"])
    # log-uniform: the median of draws in [1e-3, 1e-1] sits near the geometric mean 1e-2
    lu = [ss._parse("loguniform", [1e-3, 1e-1], "x").sample(rng) for _ in range(2000)]
    assert 0.007 < float(np.median(lu)) < 0.014


def test_bad_sweep_reports_every_problem_once_with_file_and_key(tmp_path):
    raw = base(
        foo=1,
        seeds=[0, 1],
        execution={"mode": "ddp"},
        search={"scheduler": "pbt", "pbt": {"mutations": {"optim.lr": [0.1, 0.01]}}},
        methods={
            "joint": {"optim": {"lr": {"normal": [0.0, 1.0]}}},
            "nosuch": {},
            "unimodal": {"params": {"bogus": 1}},
            "ogm": {"method": "unimodal", "optim": {"lr": {"uniform": [1]}}},
        },
    )
    lines = errors_of(raw)
    expected = [
        "bad.yaml: foo: unknown key",
        "bad.yaml: search.scheduler: pbt needs execution.mode packed",
        "bad.yaml: methods.joint.optim.lr: unknown distribution 'normal'",
        "bad.yaml: methods.nosuch.method: unknown method 'nosuch'; known: ",
        "bad.yaml: methods.unimodal.params.bogus: unknown key; allowed keys: modality",
        "bad.yaml: methods.ogm.optim.lr: uniform takes [low, high]",
    ]
    assert len(lines) == len(expected), lines
    for line, start in zip(lines, expected, strict=True):
        assert line.startswith(start), (line, start)
        assert "\n" not in line


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (
            {"search": {"searcher": "optuna"}, "methods": {"joint": {"optim": {"lr": {"grid": [0.1, 0.2]}}}}},
            "optuna cannot take grid",
        ),
        ({"search": {"searcher": "hyperopt"}, "seeds": [0, 1]}, "seeds: hyperopt cannot take a grid dimension"),
        (
            {"search": {"searcher": "grid"}, "methods": {"joint": {"optim": {"lr": {"uniform": [0.1, 0.2]}}}}},
            "needs search.searcher random",
        ),
        ({"dataset": "cremad", "data": {}}, "data_root: dataset 'cremad' is read from disk"),
        ({"execution": {"mode": "local"}, "search": {"scheduler": "asha"}}, "asha needs Ray"),
        ({"metric": "test/acc"}, "metric: got 'test/acc'; allowed: a val/"),
        ({"seed": 3}, "seed: not a top-level sweep key; use seeds"),
        ({"search": {"searcher": "bayes"}}, "search.searcher: got 'bayes'"),
    ],
)
def test_each_kind_of_mistake_is_one_clear_line(extra, needle):
    lines = errors_of(base(**extra))
    assert any(needle in line for line in lines), lines


def test_pbt_mutations_are_checked_against_the_trial_config():
    lines = errors_of(
        base(search={"scheduler": "pbt", "pbt": {"mutations": {"optim.lrr": {"loguniform": [1e-3, 1e-1]}}}})
    )
    assert any("search.pbt.mutations.optim.lrr" in line and "unknown key" in line for line in lines), lines
    ok = parse_sweep(
        base(search={"scheduler": "pbt", "pbt": {"mutations": {"optim.lr": {"loguniform": [1e-3, 1e-1]}}}})
    )
    assert ok.keys.search.pbt.mutations == {"optim.lr": {"loguniform": [1e-3, 1e-1]}}


def test_set_overrides_apply_to_sweep_and_trial_keys(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(base()))
    sweep = load_sweep(path, ["epochs=3", "execution.mode=local", "methods.joint.optim.lr=0.5", "seeds=[4, 5]"])
    assert sweep.keys.execution.mode == "local"
    assert [(t.config["epochs"], t.config["optim"]["lr"], t.config["seed"]) for t in sweep.trials] == [
        (3, 0.5, 4),
        (3, 0.5, 5),
    ]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_cli_rejects_a_bad_sweep_before_ray_starts(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(base(methods={"joint": {"params": {"alpha": 1}}}, execution={"mode": "packed"})))
    out = _cli("sweep", str(bad), cwd=tmp_path)
    assert out.returncode == 2
    assert (
        out.stderr.strip()
        == f"mmbal sweep: error: {bad}: methods.joint.params.alpha: unknown key; allowed keys: (no keys)"
    )
    assert "Traceback" not in out.stderr and "Ray" not in out.stdout + out.stderr
    assert not (tmp_path / "results").exists()  # nothing half-written
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(base()))
    nobody = _cli("sweep", str(good), "--address", "127.0.0.1:1", cwd=tmp_path)  # nothing listens on port 1
    assert nobody.returncode == 2 and "--address: no Ray head answers at 127.0.0.1:1" in nobody.stderr
    assert not (tmp_path / "results").exists()
    val = _cli("validate", str(bad), cwd=tmp_path)
    assert val.returncode == 1 and val.stderr.count("\n") == 1 and "methods.joint.params.alpha" in val.stderr


def test_shipped_sweeps_validate():
    paths = sorted(str(p) for p in (REPO / "sweeps").glob("*.yaml"))
    assert any(p.endswith("quickstart.yaml") for p in paths)
    out = _cli("validate", *paths, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count(": ok: ") == len(paths)


@pytest.mark.parametrize("name", ["cremad_protocol.yaml", "mfeat_all.yaml"])
def test_protocol_sweeps_run_every_registered_method_under_one_protocol(name):
    """A new method must join the shared-protocol sweeps, and none of them may bring its own recipe."""
    from trainables.methods import METHODS

    spec = yaml.safe_load((REPO / "sweeps" / name).read_text())
    assert sorted(spec["methods"]) == sorted(METHODS.names())
    for method, entry in spec["methods"].items():
        assert set(entry or {}) <= {"params"}, f"{name}: {method} overrides the shared protocol"
