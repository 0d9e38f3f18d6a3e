"""cluster.yaml against Ray's own autoscaler schema, and the facts the README relies on."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

CLUSTER = Path(__file__).resolve().parents[1] / "cluster.yaml"


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load(CLUSTER.read_text())


def schema() -> dict:
    import ray.autoscaler

    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


def test_cluster_yaml_validates_against_ray_schema(config):
    jsonschema.validate(config, schema())
    # the launcher's own path: merge the AWS defaults, then validate (what `ray up` does before launching)
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(config)))


def test_schema_check_can_fail(config):
    bad = copy.deepcopy(config)
    bad["available_node_types"]["gpu_worker"]["min_wokers"] = 0  # a typo the launcher must reject
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema())


def test_image_matches_installed_ray_and_setup_installs_mmbal(config):
    assert config["docker"]["image"] == f"rayproject/ray:{ray.__version__}-py311-gpu"
    assert config["available_node_types"]["head"]["resources"] == {"CPU": 0}  # trials never land on the head
    worker = config["available_node_types"]["gpu_worker"]
    assert worker["min_workers"] == 0 < worker["max_workers"] <= config["max_workers"]
    (mount,) = config["file_mounts"]
    assert any(mount in cmd and "pip install" in cmd for cmd in config["setup_commands"])


DOCKERFILE = CLUSTER.parent / "orchestrator" / "docker" / "Dockerfile"


def test_file_mounts_do_not_depend_on_where_ray_up_runs(config):
    for local in config["file_mounts"].values():
        assert local.startswith(("/", "~")), f"file_mounts source {local!r} is relative to the cwd of `ray up`"


def test_dockerfile_builds_on_the_cluster_image_and_installs_mmbal(config):
    text = DOCKERFILE.read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert f"ARG RAY_IMAGE={config['docker']['image']}" in lines and "FROM ${RAY_IMAGE}" in lines
    assert any(line.startswith("RUN pip install") and line.rstrip().endswith(". && mmbal --version") for line in lines)
    copied = [part for line in lines if line.startswith("COPY") for part in line.split()[2:-1]]
    assert {"pyproject.toml", "orchestrator", "trainables", "sweeps"} <= set(copied)
    assert all((CLUSTER.parent / p).exists() for p in copied)  # the build context is the checkout's root
    assert "orchestrator/docker/Dockerfile" in (CLUSTER.parent / "cluster.yaml").read_text()
