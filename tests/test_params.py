"""Every numeric knob declares its range; a value outside it is one ConfigError line naming the key."""

import dataclasses

import pytest

from trainables.config import TrainConfig, resolve
from trainables.data import DATASETS
from trainables.errors import ConfigError
from trainables.methods import METHODS
from trainables.params import build_params, check_bounds, describe


def _params_classes():
    yield "train", TrainConfig
    for section in ("optim", "sched", "loader", "model", "checkpoint", "eval"):
        yield section, type(getattr(TrainConfig(), section))
    yield from ((f"method {n}", METHODS.get(n).Params) for n in METHODS.names())
    yield from ((f"dataset {n}", DATASETS.get(n).Params) for n in DATASETS.names())


@pytest.mark.parametrize(("label", "cls"), list(_params_classes()), ids=lambda x: x if isinstance(x, str) else "")
def test_defaults_lie_inside_their_declared_ranges(label, cls):
    check_bounds(build_params(cls, {}))


@pytest.mark.parametrize(
    ("key", "section", "value", "allowed"),
    [
        ("optim.lr", "optim", {"lr": -0.1}, "a number > 0"),
        ("optim.lr", "optim", {"lr": 0}, "a number > 0"),
        ("loader.batch_size", "loader", {"batch_size": 0}, "an integer >= 1"),
        ("model.feature_dim", "model", {"feature_dim": 0}, "an integer >= 1"),
        ("checkpoint.every", "checkpoint", {"every": 0}, "an integer >= 1"),
        ("checkpoint.keep", "checkpoint", {"keep": 0}, "an integer >= 1"),
        ("epochs", None, 0, "an integer >= 1"),
        ("params.alpha", "params", {"alpha": -1.0}, "a number >= 0"),
    ],
)
def test_out_of_range_values_are_one_line_naming_the_key(key, section, value, allowed):
    raw = {"method": "ogm_ge", section or key: value}
    with pytest.raises(ConfigError) as err:
        resolve(raw)
    assert err.value.key == key and allowed in err.value.message and "\n" not in err.value.line()


def test_none_of_an_optional_knob_is_not_range_checked_and_ranges_are_listed():
    resolve({"method": "di_mml", "params": {"duc_start": None}})
    with pytest.raises(ConfigError, match="params.duc_start: got -1; allowed: an integer >= 0"):
        resolve({"method": "di_mml", "params": {"duc_start": -1}})
    rows = {name: meaning for name, _, _, meaning in describe(type(TrainConfig().optim))}
    assert rows["lr"].endswith("[a number > 0]")


def test_a_params_object_built_in_code_is_checked_when_it_asks():
    params_cls = METHODS.get("mie").Params
    assert any(f.metadata.get("bounds") for f in dataclasses.fields(params_cls))
    with pytest.raises(ConfigError, match="flat_ratio"):
        params_cls(flat_ratio=1.5)
