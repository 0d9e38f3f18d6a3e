"""Plugins: a method defined outside mmbal trains with ``mmbal train --plugin``, in a sweep (``plugins:``)
locally and in packed Ray trials (whose worker processes import it too), and from an entry point."""

from __future__ import annotations

import json
import os
import sys
import textwrap

import pytest
from conftest import TINY_ARGS, TINY_MFEAT, start_local_ray

from orchestrator.cli import main
from trainables import plugins
from trainables.methods import METHODS

# the README's example, verbatim: a method in a file of its own, outside the mmbal source tree
EXAMPLE = '''
"""smooth_joint.py: joint training on a label-smoothed fused loss, as an mmbal plugin."""
from dataclasses import dataclass

import torch.nn.functional as F

from trainables.methods.base import BalancingMethod, backward_and_step, register_method
from trainables.params import knob


@dataclass(frozen=True)
class SmoothParams:
    smoothing: float = knob(0.1, "label smoothing of the fused cross-entropy", ge=0, lt=1)


@register_method("smooth_joint")
class SmoothJoint(BalancingMethod):
    """Joint training with label smoothing (a plugin example)."""

    Params = SmoothParams

    def training_step(self, model, batch, optimizers, state):
        out = model(batch["inputs"])
        loss = F.cross_entropy(out.logits, batch["label"], label_smoothing=self.params.smoothing)
        backward_and_step(optimizers["main"], loss)
        return {"loss": loss.detach()}
'''
NAME = "mmbal_plugin_smooth"


@pytest.fixture(autouse=True)
def forget_plugins():
    """Each test imports its plugins afresh, and leaves the registries as it found them (other test files
    iterate over them)."""
    from trainables.data import DATASETS

    saved = {r: dict(r._items) for r in (METHODS, DATASETS)}
    loaded, modules = dict(plugins._LOADED), set(sys.modules)
    yield
    for r, items in saved.items():
        r._items.clear()
        r._items.update(items)
    plugins._LOADED.clear()
    plugins._LOADED.update(loaded)
    for name in set(sys.modules) - modules:
        if name.startswith("mmbal_"):
            del sys.modules[name]


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("plugin")
    (d / f"{NAME}.py").write_text(EXAMPLE)
    return d


def write(path, text: str):
    path.write_text(textwrap.dedent(text))
    return path


def sweep_file(tmp_path, mode: str, name: str, **execution):
    raw = {
        "experiment": name,
        "results": str(tmp_path / "results"),
        "plugins": [NAME],
        "dataset": "mfeat",
        "epochs": 2,
        "seeds": [0],
        "data": dict(TINY_MFEAT),
        "model": {"feature_dim": 16},
        "loader": {"batch_size": 16},
        "tracking": "none",
        "execution": {"mode": mode, "max_failures": 0, **execution},
        "methods": {"smooth_joint": {"params": {"smoothing": {"grid": [0.0, 0.2]}}}},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(json.dumps(raw))  # JSON is YAML
    return path


def summaries(results):
    return sorted(json.loads(p.read_text())["config"]["params"]["smoothing"] for p in results.rglob("summary.json"))


def test_train_and_list_take_a_plugin_from_the_current_directory(plugin_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(plugin_dir)  # not on sys.path: found as `python -m` would
    out = tmp_path / "run"
    args = ["--plugin", NAME, "--method", "smooth_joint", "--epochs", "2", "--set", "params.smoothing=0.3"]
    assert main(["train", *args, *TINY_ARGS, "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["method"] == "smooth_joint" and summary["config"]["params"]["smoothing"] == 0.3
    assert main(["list", "methods", "--plugin", NAME]) == 0
    assert "smooth_joint: Joint training with label smoothing" in capsys.readouterr().out


def test_a_sweep_lists_its_plugins_and_records_them_for_resume(plugin_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(plugin_dir))
    path = sweep_file(tmp_path, "local", "plugin_local")
    assert main(["sweep", str(path)]) == 0
    assert summaries(tmp_path / "results") == [0.0, 0.2]
    assert f"- {NAME}" in (tmp_path / "results" / "plugin_local" / "sweep.yaml").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["packed", "ddp"])
def test_ray_trial_processes_import_the_plugin(plugin_dir, tmp_path, monkeypatch, mode):
    import ray

    start_local_ray()
    try:
        # imported after Ray started, from a folder on no PYTHONPATH: the workers get it from the trial's settings
        monkeypatch.syspath_prepend(str(plugin_dir))
        assert str(plugin_dir) not in os.environ.get("PYTHONPATH", "")
        path = sweep_file(tmp_path, mode, f"plugin_{mode}", **({"num_workers": 1} if mode == "ddp" else {}))
        assert main(["sweep", str(path)]) == 0
    finally:
        ray.shutdown()
    assert summaries(tmp_path / "results") == [0.0, 0.2]


def test_entry_point_group_registers_an_installed_package(tmp_path, monkeypatch):
    write(tmp_path / "mmbal_ep_demo.py", EXAMPLE.replace('"smooth_joint"', '"ep_smooth_joint"'))
    dist = tmp_path / "mmbal_ep_demo-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mmbal-ep-demo\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[mmbal.plugins]\ndemo = mmbal_ep_demo\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "ep_smooth_joint" not in METHODS
    plugins.load_entry_points()
    assert "ep_smooth_joint" in METHODS


def test_entry_points_are_scanned_again_only_when_sys_path_changes(tmp_path, monkeypatch):
    """A packed Ray actor loads the entry points before each trial; the metadata scan runs once per sys.path."""
    scans = []

    def counting(group):
        scans.append(group)
        return []

    monkeypatch.setattr(plugins, "entry_points", counting)
    monkeypatch.setattr(plugins, "_SCANNED", None)
    plugins.load_entry_points()
    plugins.load_entry_points()
    assert scans == [plugins.GROUP]
    monkeypatch.syspath_prepend(str(tmp_path))  # a new folder may hold a new distribution
    plugins.load_entry_points()
    assert scans == [plugins.GROUP] * 2


@pytest.mark.parametrize(
    "source,needle",
    [
        (None, "--plugin: cannot import plugin 'mmbal_no_such_plugin' (ModuleNotFoundError: No module named"),
        ("x = 1\nraise RuntimeError('boom')\n", "(RuntimeError: boom at "),
        ("def broken(:\n", "(SyntaxError: "),
    ],
)
def test_a_plugin_that_fails_to_import_is_one_line(tmp_path, monkeypatch, capsys, source, needle):
    name = "mmbal_no_such_plugin"
    if source is not None:
        name = "mmbal_bad_plugin"
        (tmp_path / f"{name}.py").write_text(source)
        monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["list", "methods", "--plugin", name]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and name in err[0], err


def test_sweep_plugins_must_be_module_names(tmp_path):
    from orchestrator.sweep import SweepErrors, parse_sweep

    with pytest.raises(SweepErrors) as exc:
        parse_sweep({"experiment": "x", "plugins": ["os; rm -rf"], "methods": ["joint"], "tracking": "none"})
    assert "plugins: got 'os; rm -rf'; allowed: a module name" in exc.value.lines()[0]
