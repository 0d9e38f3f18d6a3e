"""``mmbal bench --device cpu --small``: every section runs and prints finite, positive numbers (no timing
is asserted: the numbers only say that the code works); the step comparison is the same computation."""

from __future__ import annotations

import math
import re

import pytest
from conftest import TINY_ARGS

from orchestrator.bench.throughput import step_ratio
from orchestrator.cli import main

FIELD = re.compile(r"^([a-z_]+/[\w/]+): (\S+)$")


@pytest.mark.slow
def test_small_cpu_bench_prints_every_ratio(capsys):
    args = ["bench", "--device", "cpu", "--small", "--methods", "unimodal", "--epochs", "1", "--repeats", "1"]
    assert main([*args, *TINY_ARGS]) == 0
    out = capsys.readouterr().out
    fields = {m[1]: float(m[2]) for line in out.splitlines() if (m := FIELD.match(line))}
    expected = [
        "methods/joint/cpu_ratio",
        "methods/unimodal/cpu_ratio",
        "loader/ratio",
        "loader/prepared_samples_per_s",
        "loader/per_sample_samples_per_s",
        "step/ratio",
        "step/mmbal_ms",
        "step/plain_ms",
        "av/trial_samples_per_s",
        "av/bound_samples_per_s",
        "av/ratio",
        "av/peak_mib",
    ]
    for key in expected:
        assert key in fields and math.isfinite(fields[key]) and fields[key] > 0, (key, fields.get(key))
    assert fields["methods/joint/cpu_ratio"] == 1.0
    assert 0 <= fields["av/data_wait_fraction"] < 1
    assert fields["step/max_param_diff"] == 0.0  # the plain loop computed exactly what the trial did
    assert "av: ResNet-18 audio-visual joint" in out and "loader ratio prepared / per-sample" in out


def test_step_ratio_compares_the_same_computation():
    cfg = {"dataset": "mfeat", "device": "cpu", "data": {"train_per_class": 4}, "loader": {"batch_size": 8}}
    r = step_ratio(cfg, rounds=1)
    assert r.steps == 5 and r.rounds == 1 and r.max_param_diff == 0.0
    assert r.mmbal_s > 0 and r.plain_s > 0 and abs(r.ratio - r.mmbal_s / r.plain_s) < 1e-12
