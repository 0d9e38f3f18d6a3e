import json
import subprocess
import sys
from pathlib import Path

from orchestrator.results import ResultsWriter, TrialRecord, config_id, iter_trials
from orchestrator.sweep import method_label
from trainables.config import resolve


def _rec(config):
    return TrialRecord("t", None, config, [], None)


def test_variant_param_makes_separate_methods_and_seed_does_not_change_config_id():
    def label(params):
        return method_label(resolve({"method": "unimodal", "dataset": "mfeat", "params": params}).to_dict())

    assert label({"modality": "fou"}) == "unimodal:fou"
    assert label({"modality": ""}) == "unimodal"
    assert method_label(resolve({"method": "joint", "dataset": "mfeat"}).to_dict()) == "joint"
    # the record reads the label written with the trial; a folder from before _meta.method: the bare name
    assert _rec({"method": "unimodal", "params": {"modality": "fou"}, "_meta": {"method": "unimodal:fou"}}).method == (
        "unimodal:fou"
    )
    assert _rec({"method": "unimodal", "params": {"modality": "fou"}}).method == "unimodal"
    a = {"method": "joint", "seed": 0, "optim": {"lr": 0.1}, "data_root": "/a"}
    assert config_id(a) == config_id({**a, "seed": 3, "data_root": "/b"})
    assert config_id(a) != config_id({**a, "optim": {"lr": 0.2}})


def test_the_writer_records_the_label_and_reading_needs_no_method_registry(tmp_path: Path) -> None:
    config = resolve({"method": "unimodal", "dataset": "mfeat", "params": {"modality": "pix"}}).to_dict()
    writer = ResultsWriter(tmp_path, "exp")
    writer.start("t1", config, method_label(config))
    writer.start("t2", {"method": "joint", "seed": 0})  # no label given: the method name
    assert json.loads((tmp_path / "trials" / "t1" / "config.json").read_text())["_meta"]["method"] == "unimodal:pix"
    assert [t.method for t in iter_trials(tmp_path)] == ["unimodal:pix", "joint"]
    # a fresh interpreter reads the folder and builds its leaderboard without importing any method
    code = (
        "import sys; from orchestrator.results import iter_trials; import orchestrator.report; "
        f"assert [t.method for t in iter_trials({str(tmp_path)!r})] == ['unimodal:pix', 'joint']; "
        "print(sorted(m for m in sys.modules if m.startswith('trainables.methods')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
