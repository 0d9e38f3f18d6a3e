"""Two Ray nodes on this machine (head + worker on loopback): one sweep's trials land on both, one storage path."""

from __future__ import annotations

import json
import os

import pytest

from orchestrator.results import iter_trials
from orchestrator.run.driver import run_sweep
from orchestrator.sweep import parse_sweep

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_nodes():
    import ray
    from ray.cluster_utils import Cluster

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False, "object_store_memory": 80 * 2**20},
    )
    cluster.add_node(num_cpus=1, object_store_memory=80 * 2**20)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_trials_run_on_both_nodes_into_one_storage(two_nodes, tmp_path):
    import ray

    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    raw = {
        "experiment": "two",
        "results": str(tmp_path / "results"),
        "storage": str(tmp_path / "shared"),
        "dataset": "mfeat",
        "epochs": 3,
        "seeds": [0, 1],
        "data": {"train_per_class": 5, "val_per_class": 4, "test_per_class": 4},
        "model": {"feature_dim": 16},
        "tracking": "none",
        "execution": {"mode": "packed", "cpus_per_trial": 1, "max_failures": 0},
        "methods": {"joint": {}},
    }
    out = run_sweep(parse_sweep(raw), address=two_nodes.address)
    assert sorted(out["status"].values()) == ["completed", "completed"]
    trials = list(iter_trials(tmp_path / "results" / "two"))
    nodes = {json.loads((t.path / "ray.json").read_text())["node_id"] for t in trials}
    assert nodes == {n["NodeID"] for n in ray.nodes() if n["Alive"]}  # one trial per node (1 CPU each)
    # both trials' checkpoints and Tune state sit under the one storage path
    exp = tmp_path / "shared" / "two"
    assert (exp / "tuner.pkl").exists()
    assert {p.name for p in exp.iterdir() if p.is_dir()} == {t.trial_id for t in trials}
    assert all(list((exp / t.trial_id).glob("checkpoint_*")) for t in trials)
