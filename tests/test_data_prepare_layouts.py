"""`mmbal prepare DATASET --profile LAYOUT`: a prepared sample is the sample the layout's own loader gives.

For every dataset and layout profile, on the tiny fixtures in the exact layouts: the same classes, splits,
ids, labels and validation carve; evaluation samples equal (frames bit for bit; features to float16, i.e.
the per-sample value rounded to float16 is exactly the prepared one); and, with frames stored as decoded
(``--size 0``), training samples equal bit for bit under the same seed (same frame picks, crops, flips).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pytest
import torch
from fixtures_data import (
    build_ave,
    build_cremad_mla,
    build_cremad_ogm,
    build_kinetics_sounds,
    build_modelnet40,
    build_ucf101,
    write_frames,
    write_image,
)
from PIL import Image

from orchestrator.cli import main
from trainables.config import resolve
from trainables.data import DATASETS
from trainables.data.io.assemble import RealDataParams
from trainables.data.io.audio import FeatureLoader
from trainables.data.io.frames import FrameFolder, pick_frames
from trainables.data.io.layout import LayoutDataset, Lists
from trainables.data.io.lists import Sample
from trainables.data.io.prepared import nearest
from trainables.errors import DataError
from trainables.params import knob

CASES = {
    "cremad-ogm_ge": ("cremad", "ogm_ge", lambda r: build_cremad_ogm(r, train=2)),
    "cremad-mla": ("cremad", "mla", lambda r: build_cremad_mla(r, train=2)),
    "cremad-pmr": ("cremad", "pmr", lambda r: build_cremad_ogm(r, train=2, layout="pmr")),
    "cremad-dimml": ("cremad", "dimml", lambda r: build_cremad_ogm(r, train=2, layout="pmr")),
    "kinetics_sounds-ogm_ge": ("kinetics_sounds", "ogm_ge", lambda r: build_kinetics_sounds(r, "ogm_ge", train=2)),
    "kinetics_sounds-balancebench": (
        "kinetics_sounds",
        "balancebench",
        lambda r: build_kinetics_sounds(r, "balancebench", train=2),
    ),
    "ave-dimml": ("ave", "dimml", build_ave),
    "ucf101-dimml": ("ucf101", "dimml", lambda r: build_ucf101(r, train=2)),
    "modelnet40-dimml": ("modelnet40", "dimml", lambda r: build_modelnet40(r, train=2)),
}


def texture(root):
    """Give every fixture image a seeded random texture (flat images would hide a wrong crop, flip or resize)."""
    for k, path in enumerate(sorted(p for p in root.rglob("*") if p.suffix in (".jpg", ".png"))):
        with Image.open(path) as im:
            a = np.asarray(im, dtype=np.int16)
        noise = np.random.default_rng(k).integers(-60, 60, a.shape)
        Image.fromarray(np.clip(a + noise, 0, 255).astype(np.uint8), im.mode).save(path, quality=95)


def build(name, root, **data):
    cfg = resolve({"dataset": name, "data_root": str(root), "data": {"image_size": 32, **data}})
    return DATASETS.get(name)().build(cfg.data_params, str(root), 0)


def prepare(name, profile, raw, out, *extra):
    return main(["prepare", name, "--raw", str(raw), "--profile", profile, "--out", str(out), "--workers", "1", *extra])


def assert_same_splits(per, fast):
    assert fast.class_names == per.class_names and fast.modalities == per.modalities
    assert fast.info["val"]["ids"] == per.info["val"]["ids"]
    for split in ("train", "val", "test"):
        a, b = getattr(per, split).samples, getattr(fast, split).samples
        assert [(s.id, s.label) for s in a] == [(s.id, s.label) for s in b], split


def feature_modalities(bundle):
    return {
        m
        for m, f in bundle.train.loaders.items()
        if type(f).__name__ in ("WavSpectrogram", "FeatureFile", "PreparedFeature")
    }


@pytest.mark.parametrize("case", list(CASES))
def test_prepared_samples_equal_the_layout_loaders(case, tmp_path):
    name, profile, make = CASES[case]
    make(tmp_path / "raw")
    texture(tmp_path / "raw")
    per = build(name, tmp_path / "raw", profile=profile)
    assert prepare(name, profile, tmp_path / "raw", tmp_path / "out", "--size", "0") == 0
    fast = build(name, tmp_path / "out", profile="prepared")
    assert fast.info["prepared_from"] == profile
    assert_same_splits(per, fast)
    features = feature_modalities(per)
    for split, train in (("train", True), ("train", False), ("val", False), ("test", False)):
        a, b = getattr(per, split), getattr(fast, split)
        a, b = a.subset(range(len(a)), train), b.subset(range(len(b)), train)
        for i in range(len(a)):
            torch.manual_seed(i)  # training: the same draws (frame picks, crop, flip) on both paths
            x = a[i]["inputs"]
            torch.manual_seed(i)
            y = b[i]["inputs"]
            for m in x:
                want = x[m].half().float() if m in features else x[m]  # features are stored as float16
                assert torch.equal(want, y[m]), f"{split}[{i}] {m} train={train}"


def test_frames_stored_at_the_image_size_give_the_same_evaluation_samples(tmp_path, caplog):
    build_cremad_ogm(tmp_path / "raw", train=2)
    texture(tmp_path / "raw")
    per = build("cremad", tmp_path / "raw", num_frames=2, image_size=16)  # 20 x 20 frames resized down
    assert prepare("cremad", "ogm_ge", tmp_path / "raw", tmp_path / "out", "--size", "16") == 0
    assert np.load(tmp_path / "out" / "visual.npy", mmap_mode="r").shape[1:] == (16, 16, 3)
    fast = build("cremad", tmp_path / "out", profile="prepared", num_frames=2, image_size=16)
    for split in ("val", "test"):  # evaluation: the stored frame is the resized one the loader computes
        a, b = getattr(per, split), getattr(fast, split)
        for i in range(len(a)):
            assert torch.equal(a[i]["inputs"]["visual"], b[i]["inputs"]["visual"])
            assert torch.equal(a[i]["inputs"]["audio"].half().float(), b[i]["inputs"]["audio"])
    x = fast.train[0]["inputs"]["visual"]  # training crops are cut from the stored 16 x 16 frames
    assert x.shape == (2, 3, 16, 16) and torch.isfinite(x).all()
    assert fast.info["stored_frame_size"] == {"visual": [16, 16]} and not caplog.records
    build("cremad", tmp_path / "out", profile="prepared", image_size=24)
    assert "visual frames are stored at 16 x 16 and resized again to data.image_size 24" in caplog.text


def grey_index(x):
    """Frame index of a fixture frame (grey level 20 * i + 10) from a normalised [3, H, W] or [H, W] tensor."""
    g = x[0].mean() * 0.229 + 0.485 if x.dim() == 3 else (x.mean() + 1) / 2
    return int(round((g.item() * 255 - 10) / 20))


def test_long_folders_keep_a_subset_and_training_draws_map_onto_it(tmp_path):
    build_ucf101(tmp_path / "raw", train=2, frames=12)  # 12 RGB frames, 11 flow frames per video
    per = build("ucf101", tmp_path / "raw", image_size=20, flow_frames=3, augment=False)
    args = ("--size", "0", "--max-frames", "6", "--set", "data.flow_frames=3")
    assert prepare("ucf101", "dimml", tmp_path / "raw", tmp_path / "out", *args) == 0
    fast = build("ucf101", tmp_path / "out", profile="prepared", image_size=20, flow_frames=3, augment=False)
    assert_same_splits(per, fast)
    entry = fast.train.samples[0].files
    assert entry["rgb"]["at"] == [1, 3, 6, 8, 10]  # centres of 5 segments + the evaluation frame 6
    assert entry["flow"]["starts"] == [0, 4, 8] and entry["flow"]["at"] == [0, 1, 2, 4, 5, 6, 8, 9, 10]
    for split in ("val", "test"):  # evaluation picks are kept: equal samples
        a, b = getattr(per, split), getattr(fast, split)
        for i in range(len(a)):
            assert all(torch.equal(a[i]["inputs"][m], b[i]["inputs"][m]) for m in ("rgb", "flow"))
    for seed in range(12):  # training: the same draw, moved to the nearest kept frame / window
        torch.manual_seed(seed)
        drawn = pick_frames(12, 1, True)[0]
        torch.manual_seed(seed)
        x = fast.train[0]["inputs"]
        assert grey_index(x["rgb"][0]) == entry["rgb"]["at"][nearest(entry["rgb"]["at"], drawn)]
        first = grey_index(x["flow"][0, 0])
        assert first in entry["flow"]["starts"] and [grey_index(f[0]) for f in x["flow"]] == [
            first,
            first + 1,
            first + 2,
        ]
    with pytest.raises(DataError, match="keeps only some windows of 3 frames"):
        build("ucf101", tmp_path / "out", profile="prepared", flow_frames=5)


def test_ave_official_validation_list_is_kept_and_can_be_dropped(tmp_path):
    build_ave(tmp_path / "raw")
    assert prepare("ave", "dimml", tmp_path / "raw", tmp_path / "out", "--size", "0") == 0
    per = build("ave", tmp_path / "raw", official_val=False, val_fraction=0.34)
    fast = build("ave", tmp_path / "out", profile="prepared", official_val=False, val_fraction=0.34)
    assert_same_splits(per, fast)  # the stored val list is not used; the same carve from train


def write_v1(root, n_per_class=3, frames=2, size=16):
    """A version 1 prepared folder (raw CREMA-D as the first `mmbal prepare` wrote it)."""
    from trainables.data.io.prepare import sha256

    root.mkdir()
    n = 6 * n_per_class
    audio = np.arange(n * 4 * 5, dtype=np.float16).reshape(n, 4, 5)
    video = np.zeros((n, 3, size, size, 3), np.uint8)
    samples = []
    for i in range(n):
        video[i, :frames] = 40 * np.arange(1, frames + 1)[:, None, None, None]
        split = "test" if i % n_per_class == 0 else "train"
        samples.append({"id": f"c{i:02d}", "label": i // n_per_class, "split": split, "frames": frames})
    np.save(root / "audio.npy", audio)
    np.save(root / "frames.npy", video)
    (root / "samples.json").write_text(json.dumps(samples))
    arrays = {
        "audio": {"file": "audio.npy", "dtype": "float16", "shape": [n, 4, 5]},
        "visual": {"file": "frames.npy", "dtype": "uint8", "shape": [n, 3, size, size, 3]},
    }
    man = {"format": "mmbal-prepared", "version": 1, "dataset": "cremad", "class_names": list("abcdef")}
    man.update(arrays=arrays, samples_sha256=sha256(root / "samples.json"), params={}, skipped=[])
    (root / "manifest.json").write_text(json.dumps(man))
    return audio


def test_version_1_folders_are_still_read(tmp_path):
    audio = write_v1(tmp_path / "v1")
    b = build("cremad", tmp_path / "v1", profile="prepared", image_size=16)
    assert b.modalities["audio"].shape == (1, 4, 5) and b.modalities["visual"].shape == (1, 3, 16, 16)
    s = b.test.samples[1]
    x = b.test[1]["inputs"]
    assert torch.equal(x["audio"], torch.from_numpy(audio[int(s.id[1:])].astype(np.float32))[None])
    assert (
        abs((x["visual"][0, 0, 0, 0] * 0.229 + 0.485).item() * 255 - 80) < 1e-3
    )  # centre of 2 valid frames: the second
    assert len(b.train) + len(b.val) == 12 and len(b.test) == 6


def test_rerun_is_idempotent_other_params_are_refused_and_mistakes_are_one_line(tmp_path, capsys):
    build_cremad_mla(tmp_path / "raw", train=2)
    out = tmp_path / "out"
    assert prepare("cremad", "mla", tmp_path / "raw", out, "--size", "16") == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    capsys.readouterr()
    assert prepare("cremad", "mla", tmp_path / "raw", out, "--size", "16") == 0
    assert (
        "already prepared" in capsys.readouterr().out
        and {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    )
    man = json.loads((out / "manifest.json").read_text())
    assert man["params"]["data"]["audio_frames"] is None and "image_size" not in man["params"]["data"]
    mistakes = {
        ("--size", "16", "--set", "data.audio_frames=512"): "holds a preparation with other params",
        ("--set", "data.image_size=64"): "data.image_size: acts when training, not on what prepare stores; use --size",
        ("--set", "optim.lr=0.1"): "--set: mmbal prepare takes data.KEY=VALUE only",
        ("--set", "data.nope=1"): "data.nope: unknown key; allowed keys:",
        ("--frames", "2"): "--frames: not an option of cremad --profile mla; allowed: --size, --on-error, --max-frames",
        ("--lists", str(tmp_path)): "--lists: --profile mla reads the lists of its layout under --raw",
    }
    for extra, message in mistakes.items():
        assert (
            prepare("cremad", "mla", tmp_path / "raw", tmp_path / "other" if "--lists" in extra else out, *extra) == 2
        )
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for f in (tmp_path / "raw" / "visual" / "test_imgs" / "Image-01-FPS" / "1012_IEO_NEU_HI").iterdir():
        write_image(f, 0, size=24)  # one clip's frames are larger than the others'
    assert prepare("cremad", "mla", tmp_path / "raw", tmp_path / "native", "--size", "0") == 1
    err = capsys.readouterr().err
    assert "1012_IEO_NEU_HI has shape [24, 24, 3]" in err and "pass --size" in err and "Traceback" not in err


def test_interrupted_layout_prepare_resumes_to_identical_output(tmp_path, monkeypatch):
    from trainables.data.io.recipes import LayoutRecipe

    build_kinetics_sounds(tmp_path / "raw", train=2)
    assert prepare("kinetics_sounds", "ogm_ge", tmp_path / "raw", tmp_path / "straight", "--size", "16") == 0
    real, calls = LayoutRecipe.decode, []

    def crashing(self, clip, p):
        if len(calls) == 4:
            raise KeyboardInterrupt
        calls.append(clip.id)
        return real(self, clip, p)

    monkeypatch.setattr(LayoutRecipe, "decode", crashing)
    assert prepare("kinetics_sounds", "ogm_ge", tmp_path / "raw", tmp_path / "cut", "--size", "16") == 130  # Ctrl-C
    assert not (tmp_path / "cut" / "manifest.json").exists()
    monkeypatch.setattr(LayoutRecipe, "decode", lambda self, clip, p: calls.append(clip.id) or real(self, clip, p))
    assert prepare("kinetics_sounds", "ogm_ge", tmp_path / "raw", tmp_path / "cut", "--size", "16") == 0
    assert len(calls) == 9 and len(set(calls)) == 9  # the 4 finished clips were not decoded again
    for f in ("audio.npy", "visual.npy", "samples.json"):
        assert (tmp_path / "cut" / f).read_bytes() == (tmp_path / "straight" / f).read_bytes()


class Signal(FeatureLoader):
    """A feature loader of the toy layout: ``<id>.npy`` holding a [2, 3] array."""

    def shape(self):
        return (2, 3)

    def __call__(self, sample, train):
        return torch.from_numpy(np.load(sample.files["sig"]).astype(np.float32))


@dataclass(frozen=True)
class ToyParams(RealDataParams):
    profile: Literal["flat", "prepared"] = knob("flat", "flat: clips.txt + <id>.npy + <id>/ frames")


class ToyLayout(LayoutDataset):
    """A dataset declared outside trainables/data: its lists and loaders are all `mmbal prepare` needs."""

    Params = ToyParams
    name = "toy_layout"

    def read_lists(self, params, root, issues):
        splits = {}
        for line in (root / "clips.txt").read_text().split():
            i, label, split = line.split(",")
            splits.setdefault(split, []).append(
                Sample(i, int(label), f"clips.txt: {i}", {"sig": root / f"{i}.npy", "cam": root / i})
            )
        return Lists(splits, ["x", "y"])

    def loaders(self, params):
        return {"sig": Signal(), "cam": FrameFolder("cam", 2, params.image_size, params.augment)}


def test_a_new_layout_dataset_is_preparable_with_no_other_change(tmp_path, monkeypatch):
    monkeypatch.setitem(DATASETS._items, "toy_layout", ToyLayout)  # what @register_dataset does in its own file
    raw = tmp_path / "raw"
    raw.mkdir()
    rows = [f"c{k},{k % 2},{'test' if k < 2 else 'train'}" for k in range(8)]
    (raw / "clips.txt").write_text("\n".join(rows))
    for k in range(8):
        np.save(raw / f"c{k}.npy", np.full((2, 3), k / 3, np.float32))
        write_frames(raw / f"c{k}", 3 + k % 2, size=18)
    assert prepare("toy_layout", "flat", raw, tmp_path / "out", "--size", "0") == 0
    man = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert list(man["modalities"]) == ["sig", "cam"] and man["modalities"]["cam"]["shape"] == [28, 18, 18, 3]
    per, fast = build("toy_layout", raw), build("toy_layout", tmp_path / "out", profile="prepared")
    assert_same_splits(per, fast)
    for i in range(len(per.test)):
        assert torch.equal(fast.test[i]["inputs"]["sig"], per.test[i]["inputs"]["sig"].half().float())
        assert torch.equal(fast.test[i]["inputs"]["cam"], per.test[i]["inputs"]["cam"])
