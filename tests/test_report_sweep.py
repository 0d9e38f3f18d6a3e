"""A tiny real sweep written in the results-folder layout, shared by the report tests.

``make_sweep`` runs real trials (``run_trial`` + ``JsonlReporter``) and writes config.json and
summary.json with the same ``orchestrator.results`` helpers the sweep engine uses. The tests in
this file check that the fixture itself honours the contract the report reads.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from orchestrator import results
from trainables.loop import run_trial
from trainables.reporting import JsonlReporter

EPOCHS = 3
# joint gets two learning rates so that there is a best-on-val choice to make; unimodal one config
CONFIGS = {
    "joint": [{"optim": {"name": "adam", "lr": 0.01}}, {"optim": {"name": "adam", "lr": 0.001}}],
    "unimodal": [{"optim": {"name": "adam", "lr": 0.01}}],
}
SEEDS = (0, 1)


def base_config(method: str, seed: int) -> dict:
    return {
        "method": method,
        "dataset": "mfeat",
        "seed": seed,
        "epochs": EPOCHS,
        "device": "cpu",
        "data": {"train_per_class": 10, "val_per_class": 10, "test_per_class": 10},
        "loader": {"batch_size": 32},
        "checkpoint": {"every": EPOCHS, "keep": 1},
    }


def make_sweep(root: Path, experiment: str = "tiny") -> Path:
    """Run every (method, config, seed) of CONFIGS x SEEDS into ``root/experiment``; return that folder."""
    torch.set_num_threads(1)  # 2 shared cores: threads only add contention on these tiny models
    out = root / experiment
    for method, configs in CONFIGS.items():
        for i, extra in enumerate(configs):
            for seed in SEEDS:
                cfg = {**base_config(method, seed), **extra}
                trial_id = f"{method}_c{i}_s{seed}"
                path = results.trial_dir(out, trial_id)
                results.write_config(path, cfg, trial_id, experiment)
                results.write_summary(path, run_trial(cfg, JsonlReporter(path, keep=1)))
    return out


def summaries(folder: Path) -> dict[str, dict]:
    """trial id -> summary.json, read with plain json (independent of the code under test)."""
    return {p.parent.name: json.loads(p.read_text()) for p in sorted((folder / "trials").glob("*/summary.json"))}


def test_fixture_follows_the_results_contract(tmp_path: Path) -> None:
    folder = make_sweep(tmp_path)
    trials = list(results.iter_trials(folder))
    assert len(trials) == sum(len(c) for c in CONFIGS.values()) * len(SEEDS)
    assert all(t.completed and len(t.history) == EPOCHS for t in trials)
    # the two seeds of one config share a config_id, the two joint learning rates do not
    ids = {(t.method, t.config["optim"]["lr"]): set() for t in trials}
    for t in trials:
        ids[(t.method, t.config["optim"]["lr"])].add(t.config_id)
    assert all(len(v) == 1 for v in ids.values()) and len({next(iter(v)) for v in ids.values()}) == 3
    s = summaries(folder)["joint_c0_s0"]
    assert s["modalities"] == ["pix", "fou"] and {"val/acc", "test/acc", "test/acc/pix", "test/missing/fou/acc"} <= set(
        s
    )
