from orchestrator.results import TrialRecord, config_id


def _rec(config):
    return TrialRecord("t", None, config, [], None)


def test_variant_param_makes_separate_methods_and_seed_does_not_change_config_id():
    assert _rec({"method": "unimodal", "params": {"modality": "fou"}}).method == "unimodal:fou"
    assert _rec({"method": "unimodal", "params": {"modality": ""}}).method == "unimodal"
    assert _rec({"method": "joint", "params": {}}).method == "joint"
    a = {"method": "joint", "seed": 0, "optim": {"lr": 0.1}, "data_root": "/a"}
    assert config_id(a) == config_id({**a, "seed": 3, "data_root": "/b"})
    assert config_id(a) != config_id({**a, "optim": {"lr": 0.2}})
