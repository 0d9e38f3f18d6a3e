"""Which Ray a sweep uses: no --address starts one here, never a cluster someone else left running."""

import pytest
import ray

from orchestrator.run.driver import start_ray


@pytest.fixture
def captured(monkeypatch):
    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    return calls


def test_no_address_starts_a_local_ray_instead_of_joining_the_last_cluster(captured, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    start_ray(None)
    assert captured[0]["address"] == "local" and captured[0]["include_dashboard"] is False


def test_ray_address_of_a_submitted_job_and_explicit_addresses_are_kept(captured, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    start_ray(None)
    monkeypatch.delenv("RAY_ADDRESS")
    start_ray("auto")
    assert [c["address"] for c in captured] == [None, "auto"]
