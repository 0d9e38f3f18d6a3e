"""Kinetics-Sounds, AVE, UCF-101 and ModelNet40 on fabricated fixtures: shapes, label maps, splits, bad rows."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from fixtures_data import build_ave, build_kinetics_sounds, build_modelnet40, build_ucf101

from trainables.config import resolve
from trainables.data import DATASETS
from trainables.data.io.frames import flow_window
from trainables.data.modelnet40 import CLASSES, view_path
from trainables.errors import DataError

REAL = ("ave", "cremad", "kinetics_sounds", "modelnet40", "ucf101")


def build(name, root, **data):
    cfg = resolve({"dataset": name, "data_root": str(root), "data": {"image_size": 32, **data}})
    return DATASETS.get(name)().build(cfg.data_params, str(root), 0)


def sizes(b):
    return (len(b.train), len(b.val), len(b.test))


@pytest.mark.parametrize("name", REAL)
def test_every_real_dataset_needs_a_root_and_validates_on_error(name):
    assert DATASETS.get(name).needs_root
    with pytest.raises(Exception, match="data.on_error"):
        resolve({"dataset": name, "data_root": "/x", "data": {"on_error": "ignore"}})


@pytest.mark.parametrize("profile", ["ogm_ge", "balancebench"])
def test_kinetics_sounds_profiles(tmp_path, profile):
    clips = build_kinetics_sounds(tmp_path, profile)
    b = build("kinetics_sounds", tmp_path, profile=profile)
    assert b.num_classes == 31 and b.class_names[30] == "30" and sizes(b) == (6, 3, 3)
    x = b.test[0]["inputs"]
    assert x["audio"].shape == (1, 128, 1024) and x["visual"].shape == (3, 3, 32, 32)
    truth = dict(clips["train"] + clips["test"])
    assert all(s.label == truth[s.id] for d in (b.train, b.val, b.test) for s in d.samples)
    stored = np.load(tmp_path / b.info["audio_dir"].format(split="test") / f"{b.test.samples[0].id}.npy")
    assert torch.equal(x["audio"][0], torch.from_numpy(stored).T)  # [T, F] file fed as [F, T]


def test_kinetics_sounds_label_outside_class_list(tmp_path):
    build_kinetics_sounds(tmp_path)
    with open(tmp_path / "my_test.txt", "a") as fh:
        fh.write("ytXXXX_0_10,10,31\n")
    with pytest.raises(DataError, match=r"my_test.txt, line 4: label '31' is not a class index 0..30"):
        build("kinetics_sounds", tmp_path)


def test_ave_official_val_duplicates_and_feature_shape(tmp_path):
    build_ave(tmp_path)
    b = build("ave", tmp_path)
    assert b.class_names == ["Frying (food)", "Dog", "Church bell"] and sizes(b) == (9, 6, 6)  # testSet.txt order
    assert b.info["duplicates_removed"] == {"train": 1} and b.info["val"]["source"] == "official validation list"
    x = b.train[0]["inputs"]
    assert x["audio"].shape == (1, 257, 1004) and x["visual"].shape == (4, 3, 32, 32)
    assert x["audio"].eq(int(b.train.samples[0].id[3:])).all()  # the pickle of that video (filled with its number)
    carved = build("ave", tmp_path, official_val=False, val_fraction=0.34)
    assert sizes(carved) == (6, 3, 6)


def test_ave_bad_category_names_the_row(tmp_path):
    build_ave(tmp_path)
    with open(tmp_path / "valSet.txt", "a") as fh:
        fh.write("Helicopter&vid99999&good&0&10\n")
    with pytest.raises(
        DataError, match=r"valSet.txt, line 7: category 'Helicopter' is not among the 3 categories of testSet"
    ):
        build("ave", tmp_path)
    assert build("ave", tmp_path, on_error="skip").info["skipped"] == {"val": {"label": 1}}


def test_ucf101_rgb_and_flow_stack(tmp_path):
    build_ucf101(tmp_path)
    b = build("ucf101", tmp_path)
    assert b.class_names == ["ApplyEyeMakeup", "Archery", "YoYo"] and sizes(b) == (6, 3, 3)
    assert [b.class_names[s.label] for s in b.test.samples] == ["ApplyEyeMakeup", "Archery", "YoYo"]
    x = b.test[0]["inputs"]
    assert x["rgb"].shape == (1, 3, 32, 32) and x["flow"].shape == (10, 2, 32, 32)
    # 11 flow frames with grey levels 10, 30, ...: the centred window of 10 starts at 0 -> levels 10..190
    levels = ((x["flow"][:, 0].mean((1, 2)) + 1) / 2 * 255).round()
    assert torch.allclose(levels, torch.arange(10, 200, 20, dtype=torch.float32), atol=2)
    assert flow_window(11, 10, False) == list(range(10)) and flow_window(4, 6, False) == [0, 1, 2, 3, 3, 3]
    assert flow_window(30, 10, False) == list(range(10, 20))


def test_ucf101_train_label_must_match_its_folder(tmp_path):
    build_ucf101(tmp_path)
    lines = (tmp_path / "trainlist01.txt").read_text().splitlines()
    lines[0] = lines[0].rsplit(" ", 1)[0] + " 3"
    (tmp_path / "trainlist01.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"trainlist01.txt, line 1: label '3' does not name class 'ApplyEyeMakeup'"):
        build("ucf101", tmp_path)


def test_modelnet40_front_and_rear_views(tmp_path):
    build_modelnet40(tmp_path)
    b = build("modelnet40", tmp_path, augment=False)
    assert b.num_classes == 40 and b.class_names[39] == "xbox" and sizes(b) == (6, 3, 3)
    x = b.test[0]["inputs"]
    assert x["front"].shape == (3, 32, 32) and x["rear"].shape == (3, 32, 32)
    grey = lambda t: (t[0].mean() * 0.229 + 0.485) * 255  # undo the red normalisation
    assert abs(grey(x["front"]) - 10) < 2 and abs(grey(x["rear"]) - 70) < 2  # v001 and v007 renders
    assert sorted({s.label for s in b.test.samples}) == [0, 1, 39]
    assert (
        view_path("a/b.obj.shaded_v001.png", "v007") == "a/b.obj.shaded_v007.png"
        and view_path("v001/x.png", "v007") is None
    )
    assert CLASSES.index("night_stand") == 23


def test_modelnet40_missing_view_is_reported(tmp_path):
    build_modelnet40(tmp_path)
    (tmp_path / "airplane/train/airplane_0000.obj.shaded_v007.png").unlink()
    with pytest.raises(DataError, match=r"train.txt, line 1: file .*airplane_0000.obj.shaded_v007.png not found"):
        build("modelnet40", tmp_path)
    with pytest.raises(
        DataError, match=r"train.txt, line 1: path '../modelnet40_images_new_12x/airplane.*' escapes the data root"
    ):
        build("modelnet40", tmp_path, list_prefix="")


PROFILE_OF = {"cremad": "mla", "kinetics_sounds": "balancebench"}


@pytest.mark.parametrize("name", REAL)
def test_a_sweep_per_dataset_validates(tmp_path, name, capsys):
    from orchestrator.cli import main

    data = {"image_size": 64, "on_error": "skip", **({"profile": PROFILE_OF[name]} if name in PROFILE_OF else {})}
    sweep = {
        "experiment": f"{name}-smoke",
        "dataset": name,
        "data_root": "/data/x",
        "data": data,
        "epochs": 2,
        "methods": {"joint": {}},
        "seeds": [0, 1],
    }
    path = tmp_path / "s.yaml"
    path.write_text(json.dumps(sweep))  # JSON is YAML
    assert main(["validate", str(path)]) == 0, capsys.readouterr().err
    assert "ok: 2 trials" in capsys.readouterr().out
    sweep["data"]["num_frames"] = 0
    path.write_text(json.dumps(sweep))
    assert main(["validate", str(path)]) == 1
    assert "data.num_frames: got 0" in capsys.readouterr().err
