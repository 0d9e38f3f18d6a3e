import numpy as np
import pytest

from trainables.config import resolve
from trainables.data import DATASETS
from trainables.data.io.base import stratified_split
from trainables.data.mfeat import load_views
from trainables.errors import ConfigError


def test_stratified_split_is_stratified_disjoint_and_seeded():
    labels = np.repeat(np.arange(3), 10)
    a = stratified_split(labels, {"train": 4, "val": 0.3, "test": -1}, seed=1)
    b = stratified_split(labels, {"train": 4, "val": 0.3, "test": -1}, seed=1)
    c = stratified_split(labels, {"train": 4, "val": 0.3, "test": -1}, seed=2)
    for name in a:
        assert np.array_equal(a[name], b[name])
    assert not np.array_equal(a["train"], c["train"])
    for name, n in (("train", 4), ("val", 3), ("test", 3)):
        assert np.bincount(labels[a[name]], minlength=3).tolist() == [n] * 3
    everything = np.concatenate(list(a.values()))
    assert len(np.unique(everything)) == len(everything) == 30
    with pytest.raises(ValueError):
        stratified_split(labels, {"train": 11}, seed=0)


def test_mfeat_asset_is_read_once_and_shared_read_only():
    """The decompressed asset is cached per process: the views are shared (read-only, so a trial cannot
    change the next one's data), the labels are each caller's own copy, and two builds are equal."""
    views, labels = load_views()
    again, labels2 = load_views()
    assert all(again[v] is x for v, x in views.items())
    with pytest.raises(ValueError):
        views["fou"][0, 0] = 1.0
    labels[0] = 99
    assert labels2[0] != 99 and load_views()[1][0] != 99
    cfg = resolve({"dataset": "mfeat", "data": {"train_per_class": 2}})
    a, b = (DATASETS.get("mfeat")().build(cfg.data_params, None, 0) for _ in range(2))
    for split in ("train", "val", "test"):
        x, y = getattr(a, split), getattr(b, split)
        assert x.labels.equal(y.labels)
        assert all(x.inputs[m].equal(y.inputs[m]) for m in a.modalities)
        x.inputs["fou"].add_(1.0)  # the built tensors are the trial's own: editing them leaves the asset alone
    assert not a.train.inputs["fou"].equal(DATASETS.get("mfeat")().build(cfg.data_params, None, 0).train.inputs["fou"])


def test_mfeat_asset_is_the_uci_data():
    views, labels = load_views()
    dims = {v: x.shape for v, x in views.items()}
    assert dims == {
        "fou": (2000, 76),
        "fac": (2000, 216),
        "kar": (2000, 64),
        "pix": (2000, 240),
        "zer": (2000, 47),
        "mor": (2000, 6),
    }
    assert np.bincount(labels).tolist() == [200] * 10
    assert views["pix"].min() == 0 and views["pix"].max() == 6  # grey levels of the 2x3 window averages


def test_mfeat_default_bundle_shapes_and_split_sizes():
    cfg = resolve({"dataset": "mfeat"})
    bundle = DATASETS.get("mfeat")().build(cfg.data_params, None, 0)
    assert list(bundle.modalities) == ["pix", "fou"]
    assert bundle.modalities["pix"].shape == (1, 16, 15) and bundle.modalities["pix"].encoder == "cnn"
    assert bundle.modalities["fou"].shape == (76,)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (500, 500, 1000)
    item = bundle.train[0]
    assert item["inputs"]["pix"].shape == (1, 16, 15) and item["inputs"]["fou"].shape == (76,)
    ids = [set(d.indices.tolist()) for d in (bundle.train, bundle.val, bundle.test)]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])


def test_mfeat_any_views_and_bad_view_message():
    cfg = resolve({"dataset": "mfeat", "data": {"modalities": ["kar", "mor", "zer"]}})
    bundle = DATASETS.get("mfeat")().build(cfg.data_params, None, 0)
    assert {m: s.shape for m, s in bundle.modalities.items()} == {"kar": (64,), "mor": (6,), "zer": (47,)}
    with pytest.raises(ConfigError, match=r"data.modalities.*allowed: distinct views among fou, fac"):
        resolve({"dataset": "mfeat", "data": {"modalities": ["pix", "audio"]}})
