"""The loader-ratio benchmark `mmbal bench` calls: both paths read the same samples; the result says how it
was measured."""

from __future__ import annotations

from orchestrator.bench.loader import loader_ratio


def test_loader_ratio_times_both_paths_over_the_same_epoch(tmp_path):
    logged = []
    r = loader_ratio(tmp_path, clips=12, workers=0, batch=4, rounds=2, image_size=16, stored_size=16, frame_hw=(24, 32),
                     log=logged.append)  # fmt: skip
    assert (tmp_path / "prepared" / "manifest.json").is_file() and any("fabricated 12 clips" in s for s in logged)
    assert len(r.rounds) == 2 and all(set(t) == {"per_sample_s", "prepared_s", "samples"} for t in r.rounds)
    assert r.samples == 6 and r.per_sample > 0 and r.prepared > 0 and abs(r.ratio - r.prepared / r.per_sample) < 1e-9
    assert "workers=0, batch=4, image 16, stored 16" in r.line() and "median of 2 rounds" in r.line()
