"""DDP trials on a joined cluster that grows: concurrency follows the resource requests, not the
cluster's size when the sweep started (the shipped cluster.yaml starts with a head of CPU: 0 and no workers)."""

from __future__ import annotations

import os
import threading
import time

import pytest

from orchestrator.results import iter_trials
from orchestrator.run.driver import run_sweep
from orchestrator.sweep import parse_sweep

pytestmark = pytest.mark.slow


def test_ddp_trials_all_ask_for_workers_before_any_node_exists(tmp_path):
    import ray
    from ray.cluster_utils import Cluster

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "include_dashboard": False, "object_store_memory": 80 * 2**20},
    )
    ray.init(address=cluster.address, log_to_driver=False)
    raw = {
        "experiment": "grow",
        "results": str(tmp_path / "results"),
        "dataset": "mfeat",
        "epochs": 2,
        "seeds": [0, 1],
        "data": {"train_per_class": 5, "val_per_class": 4, "test_per_class": 4},
        "model": {"feature_dim": 16},
        "tracking": "none",
        "execution": {"mode": "ddp", "num_workers": 1, "cpus_per_worker": 1, "max_failures": 0},
        "methods": {"joint": {}},
    }
    out: dict = {}
    sweep = parse_sweep(raw)
    thread = threading.Thread(target=lambda: out.update(run_sweep(sweep, address=cluster.address)))
    try:
        thread.start()
        started = lambda: len(list((tmp_path / "results" / "grow" / "trials").glob("*/config.json")))
        deadline = time.monotonic() + 120
        while started() < 2 and time.monotonic() < deadline:
            time.sleep(1)
        both_waiting = started()
        cluster.add_node(num_cpus=2, object_store_memory=80 * 2**20)  # what the autoscaler does for the demand
        thread.join(timeout=600)
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert both_waiting == 2, "only one DDP trial asked for its workers while the cluster had no CPU"
    assert sorted(out["status"].values()) == ["completed", "completed"]
    assert all(t.completed for t in iter_trials(tmp_path / "results" / "grow"))
