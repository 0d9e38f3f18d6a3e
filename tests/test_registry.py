"""The plugin registries: duplicate names raise, key = file stem, unknown names list the known ones,
and the package import finds every plugin module and no helper."""

from __future__ import annotations

from pathlib import Path

import pytest

import trainables.data
import trainables.methods
from trainables.data import DATASETS
from trainables.errors import ConfigError
from trainables.methods import METHODS
from trainables.models.encoders import ENCODERS
from trainables.models.fusion import FUSIONS
from trainables.registry import Registry, import_submodules


def test_a_second_plugin_under_a_taken_name_raises():
    reg: Registry[type] = Registry("thing")

    class A: ...

    class B: ...

    assert reg.register("a")(A) is A and A.name == "a"
    assert reg.register("a")(A) is A  # the same class again (a module imported twice) is harmless
    with pytest.raises(ValueError, match="thing 'a' is registered twice"):
        reg.register("a")(B)
    assert reg.get("a") is A


@pytest.mark.parametrize(
    "registry,package", [(METHODS, "trainables.methods"), (DATASETS, "trainables.data")], ids=["methods", "datasets"]
)
def test_key_is_the_file_stem(registry, package):
    for name in registry.names():
        assert registry.get(name).__module__ == f"{package}.{name}"


@pytest.mark.parametrize(
    "package,registry,helpers",
    [(trainables.data, DATASETS, set()), (trainables.methods, METHODS, {"base"})],
    ids=["datasets", "methods"],
)
def test_every_plugin_module_registers_its_stem(package, registry, helpers):
    stems = {p.stem for p in Path(package.__file__).parent.glob("*.py") if not p.stem.startswith("_")}
    assert stems - helpers == set(registry.names())


@pytest.mark.parametrize(
    "registry,key",
    [(METHODS, "method"), (DATASETS, "dataset"), (ENCODERS, "model.encoders"), (FUSIONS, "model.fusion")],
)
def test_unknown_name_is_one_line_listing_the_known_ones(registry, key):
    with pytest.raises(ConfigError) as err:
        registry.get("no-such-plugin", key=key)
    assert err.value.key == key
    assert err.value.message == f"unknown {registry.kind} 'no-such-plugin'; known: {', '.join(registry.names())}"


def test_import_submodules_skips_private_modules_and_subpackages(tmp_path, monkeypatch):
    pkg = tmp_path / "toyplugins"
    (pkg / "io").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "alpha.py").write_text("LOADED = True\n")
    for helper in (pkg / "_shared.py", pkg / "io" / "__init__.py"):
        helper.write_text("raise RuntimeError('a helper was imported as a plugin')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import_submodules("toyplugins")
    import toyplugins.alpha

    assert toyplugins.alpha.LOADED
