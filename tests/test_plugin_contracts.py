"""Contract tests for every registered dataset (and its prepare recipe), encoder and fusion head:
registering one enrols it here. Methods have theirs in ``tests/test_methods_common.py``."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from orchestrator.cli import main
from trainables.data import DATASETS
from trainables.data.io.recipes import LayoutRecipe, PrepareParams
from trainables.errors import DataError
from trainables.models.classifier import ModelSpec
from trainables.models.encoders import ENCODERS, build_encoder
from trainables.models.fusion import FUSIONS
from trainables.models.output import ModelOutput, MultimodalModel
from trainables.params import build_params

ROOTLESS = [n for n in DATASETS.names() if not DATASETS.get(n).needs_root]
FROM_FOLDER = [n for n in DATASETS.names() if DATASETS.get(n).needs_root]
RECIPES = [(n, p) for n in DATASETS.names() for p in DATASETS.get(n).recipes()]


def listed_block(out: str, name: str) -> list[str]:
    """The lines ``mmbal list`` prints for one plugin (its header and its indented params)."""
    lines = out.splitlines()
    start = lines.index(next(line for line in lines if line.startswith(f"{name}: ")))
    block = [lines[start]]
    for line in lines[start + 1 :]:
        if not line.startswith(" "):
            break
        block.append(line)
    return block


@pytest.mark.parametrize("name", DATASETS.names())
def test_dataset_params_build_from_defaults_and_every_knob_is_listed(name, capsys):
    cls = DATASETS.get(name).Params
    params = build_params(cls, {})
    assert dataclasses.is_dataclass(params) and cls.__dataclass_params__.frozen
    assert main(["list", "datasets"]) == 0
    block = listed_block(capsys.readouterr().out, name)
    for field in dataclasses.fields(cls):
        assert field.metadata.get("help"), f"data.{field.name} has no one-line meaning"
        assert any(line.strip().startswith(f"data.{field.name} (") for line in block[1:]), field.name


@pytest.mark.parametrize("name", ROOTLESS)
def test_rootless_dataset_samples_match_its_modality_specs(name):
    bundle = DATASETS.get(name)().build(build_params(DATASETS.get(name).Params, {}), None, 0)
    assert bundle.num_classes >= 2 and bundle.modalities
    for split in (bundle.train, bundle.val, bundle.test):
        assert len(split) > 0
        item = split[0]
        assert set(item["inputs"]) == set(bundle.modalities)
        for m, spec in bundle.modalities.items():
            assert tuple(item["inputs"][m].shape) == spec.shape and spec.encoder in ENCODERS
        assert 0 <= int(item["label"]) < bundle.num_classes


@pytest.mark.parametrize("name", FROM_FOLDER)
def test_folder_dataset_on_an_empty_root_is_a_data_error_naming_a_file(name, tmp_path):
    with pytest.raises(DataError, match=str(tmp_path)):
        DATASETS.get(name)().build(build_params(DATASETS.get(name).Params, {}), str(tmp_path), 0)


@pytest.mark.parametrize("name,profile", RECIPES, ids=[f"{n}-{p}" for n, p in RECIPES])
def test_recipe_params_modalities_and_command_options(name, profile, capsys):
    recipe = DATASETS.get(name).recipes()[profile]
    assert issubclass(recipe.Params, PrepareParams) and recipe.profile == profile
    params = recipe.make_params({}, {})
    specs = recipe.modalities(params)
    assert specs and all(s["kind"] in ("feature", "frames") for s in specs.values())
    for spec in specs.values():
        assert (
            all(d > 0 for d in spec["shape"])
            if spec["kind"] == "feature"
            else spec["pick"] in ("segments", "window", "single")
        )
    if isinstance(recipe, LayoutRecipe):  # the stored modalities are the layout's, in the model's order
        assert list(specs) == list(DATASETS.get(name)().loaders(recipe.data_params(params.data, "raise")))
    assert recipe.raw_layout and recipe.lists_layout and recipe.decoder
    with pytest.raises(SystemExit):
        main(["prepare", "--help"])
    usage = capsys.readouterr().out
    assert name in usage.split("supported:")[1].split(")")[0]
    assert profile in " ".join(usage.split("what --raw holds")[1].split("--out OUT")[0].split())
    for field in dataclasses.fields(recipe.Params):
        assert field.metadata.get("help"), field.name
        assert field.name == "data" or f"--{field.name.replace('_', '-')}" in usage, field.name


@pytest.mark.parametrize("shape", [(1, 16, 15), (3, 32, 32), (2, 3, 32, 32)], ids=["map", "image", "frames"])
@pytest.mark.parametrize("kind", ENCODERS.names())
def test_encoder_maps_its_input_shape_to_its_feature_dim(kind, shape):
    torch.manual_seed(0)
    enc = build_encoder(kind, shape, 512).eval()
    x = torch.randn(3, *shape)
    with torch.no_grad():
        out = enc(x)
        assert enc.out_dim == 512 and out.shape == (3, 512) and torch.isfinite(out).all()
        assert torch.allclose(enc(x[:1]), out[:1], atol=1e-5)  # samples do not mix
    small = build_encoder(kind, shape, 16).eval()
    with torch.no_grad():
        assert small(x).shape == (3, small.out_dim)
    assert small.out_dim in (16, enc.out_dim)  # feature_dim is honoured, or the width is fixed by the architecture


@pytest.mark.parametrize("kind", FUSIONS.names())
def test_fusion_head_gives_model_output_with_per_modality_logits(kind):
    torch.manual_seed(0)
    model = ModelSpec({"a": (5,), "b": (7,)}, {"a": "mlp", "b": "mlp"}, 8, kind, 3).build().eval()
    inputs = {"a": torch.randn(4, 5), "b": torch.randn(4, 7)}
    with torch.no_grad():
        out = model(inputs)
        changed_b = model({"a": inputs["a"], "b": torch.randn(4, 7)})
    assert isinstance(model, MultimodalModel) and isinstance(out, ModelOutput) and out.logits.shape == (4, 3)
    assert list(out.modality_logits) == ["a", "b"] and all(v.shape == (4, 3) for v in out.modality_logits.values())
    assert {m: f.shape for m, f in out.features.items()} == {"a": (4, 8), "b": (4, 8)}
    # a modality's logits see that modality only: what per-modality accuracy measures
    assert torch.allclose(changed_b.modality_logits["a"], out.modality_logits["a"])
    assert not torch.allclose(changed_b.modality_logits["b"], out.modality_logits["b"])
    assert not torch.allclose(changed_b.logits, out.logits)
