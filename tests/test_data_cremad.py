"""CREMA-D profiles on fabricated fixtures: shapes, label map, splits, bad data, and `mmbal train` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from fixtures_data import CREMAD, build_cremad_mla, build_cremad_ogm

from orchestrator.cli import main
from trainables.config import resolve
from trainables.data import DATASETS
from trainables.errors import ConfigError, DataError


def build(root, **data):
    cfg = resolve({"dataset": "cremad", "data_root": str(root), "data": {"image_size": 32, **data}})
    return DATASETS.get("cremad")().build(cfg.data_params, str(root), 0)


@pytest.fixture(scope="module")
def ogm(tmp_path_factory):
    root = tmp_path_factory.mktemp("ogm")
    return root, build_cremad_ogm(root)


def test_ogm_ge_profile_shapes_labels_and_seeded_val(ogm):
    root, clips = ogm
    b = build(root)
    assert b.class_names == CREMAD and b.info["profile"] == "ogm_ge"
    assert {n: len(getattr(b, n)) for n in ("train", "val", "test")} == {
        "train": 18,
        "val": 6,
        "test": 6,
    }  # 1 of 4 per class
    item = b.train[0]
    assert item["inputs"]["audio"].shape == (1, 257, 188) and item["inputs"]["visual"].shape == (1, 3, 32, 32)
    assert b.modalities["audio"].shape == (1, 257, 188) and b.modalities["visual"].encoder == "resnet18"
    label_of = dict(clips["train"] + clips["test"])
    for ds in (b.train, b.val, b.test):
        for s in ds.samples:
            assert CREMAD[s.label] == label_of[s.id]
    val = b.info["val"]
    assert sorted(s.id for s in b.val.samples) == val["ids"] and val["seed"] == 0 and len(val["ids_sha256"]) == 64
    assert not set(val["ids"]) & {s.id for s in b.train.samples}
    assert build(root).info["val"]["ids"] == val["ids"]  # seeded
    assert build(root, val_seed=1).info["val"]["ids"] != val["ids"]
    assert b.info["skipped_total"] == 0


def test_eval_frame_pick_is_the_centre_frame(ogm):
    root, _ = ogm
    b = build(root, num_frames=1)
    x = b.test[0]["inputs"]["visual"]  # 3 frames with grey levels 10, 30, 50: the centre one is 30
    expected = (torch.tensor(30 / 255.0) - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(x[0].mean((1, 2)), expected, atol=0.03)


def test_mla_and_pmr_profiles(tmp_path):
    build_cremad_mla(tmp_path / "mla")
    b = build(tmp_path / "mla", profile="mla")
    x = b.test[0]["inputs"]
    assert x["audio"].shape == (1, 128, 1024) and x["visual"].shape == (3, 3, 32, 32)
    assert x["audio"][0, :, 100:].eq(0).all() and x["audio"][0, :, :100].ne(0).any()  # [100, 128] stored time-first
    assert {len(b.train), len(b.val), len(b.test)} == {12, 6}
    build_cremad_ogm(tmp_path / "pmr", train=2, layout="pmr")
    b = build(tmp_path / "pmr", profile="pmr", audio_frames=64)
    assert b.train[0]["inputs"]["audio"].shape == (1, 257, 64) and b.train[0]["inputs"]["visual"].shape == (
        3,
        3,
        32,
        32,
    )


def _break(root, clips):
    """Apply every bad-data case to a fresh OGM-GE fixture; returns the broken clip ids by kind."""
    tr = clips["train"]
    (root / "AudioWAV" / f"{tr[0][0]}.wav").unlink()  # missing file
    (root / "AudioWAV" / f"{tr[1][0]}.wav").write_bytes(b"RIFF\x00\x00not a wave")  # corrupt WAV
    jpg = sorted((root / "Image-01-FPS" / tr[2][0]).iterdir())[0]
    jpg.write_bytes(jpg.read_bytes()[:40])  # truncated JPEG
    lines = (root / "train.csv").read_text(encoding="utf-8-sig").splitlines()
    lines[3] = f"{tr[3][0]},XXX"  # label outside the class list
    lines[4] = "no-comma-here"  # row that does not parse
    lines[5] = f"../../{tr[5][0]},NEU"  # escapes the data root
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    return tr


@pytest.mark.parametrize(
    "case, needle",
    [
        ("missing", r"train.csv, line 1: file .*AudioWAV/1000_IEO_NEU_HI.wav not found"),
        ("label", r"train.csv, line 4: label 'XXX' is not one of NEU HAP SAD FEA DIS ANG"),
        ("parse", r"train.csv, line 5: cannot parse 'no-comma-here'"),
        ("path", r"train.csv, line 6: path .* escapes the data root"),
    ],
)
def test_bad_rows_raise_naming_file_and_row(tmp_path, case, needle):
    clips = build_cremad_ogm(tmp_path, train=2, frames=2)
    tr = clips["train"]
    if case == "missing":
        (tmp_path / "AudioWAV" / f"{tr[0][0]}.wav").unlink()
    else:
        lines = (tmp_path / "train.csv").read_text(encoding="utf-8-sig").splitlines()
        i = {"label": 3, "parse": 4, "path": 5}[case]
        lines[i] = {"label": f"{tr[i][0]},XXX", "parse": "no-comma-here", "path": f"../../{tr[i][0]},NEU"}[case]
        (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=needle):
        build(tmp_path)


def test_corrupt_files_raise_when_loaded_naming_file_and_row(tmp_path):
    tr = build_cremad_ogm(tmp_path, train=2, frames=2)["train"]
    (tmp_path / "AudioWAV" / f"{tr[0][0]}.wav").write_bytes(b"RIFF\x00\x00not a wave")
    jpg = sorted((tmp_path / "Image-01-FPS" / tr[1][0]).iterdir())[0]
    jpg.write_bytes(jpg.read_bytes()[:40])
    b = build(tmp_path)
    for clip, needle in ((tr[0][0], "not a readable PCM WAV"), (tr[1][0], "cannot decode image")):
        ds = next(d for d in (b.train, b.val) if any(s.id == clip for s in d.samples))
        i = next(i for i, s in enumerate(ds.samples) if s.id == clip)
        with pytest.raises(DataError, match=rf"train.csv, line \d+: .*{needle}.*on_error=skip"):
            for _ in range(4):  # a training pick may miss the broken frame once; evaluation is deterministic
                ds[i]


def test_skip_counts_every_bad_sample(tmp_path):
    clips = build_cremad_ogm(tmp_path, train=3, frames=1)
    _break(tmp_path, clips)
    b = build(tmp_path, on_error="skip")
    assert b.info["skipped"] == {"train": {"missing": 1, "corrupt": 2, "label": 1, "parse": 1, "path": 1}}
    assert b.info["skipped_total"] == 6 and len(b.info["skipped_examples"]) == 6
    assert len(b.train) + len(b.val) == 18 - 6 and len(b.test) == 6
    kept = {s.id for s in b.train.samples + b.val.samples}
    assert not kept & {c for c, _ in clips["train"][:6]}
    for ds in (b.train, b.val):
        for i in range(len(ds)):
            ds[i]  # every kept sample loads


def test_bad_config_keys_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match="data.profile"):
        resolve({"dataset": "cremad", "data_root": str(tmp_path), "data": {"profile": "nope"}})
    with pytest.raises(ConfigError, match="data.image_size: got 4"):
        resolve({"dataset": "cremad", "data_root": str(tmp_path), "data": {"image_size": 4}})
    with pytest.raises(ConfigError, match="data_root"):
        resolve({"dataset": "cremad"})


def test_missing_list_file_is_a_data_error_line(tmp_path, capsys):
    assert main(["train", "--dataset", "cremad", "--data-root", str(tmp_path), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "data error" in err and "train.csv: list file not found" in err and "Traceback" not in err


def test_mmbal_train_end_to_end_on_the_ogm_ge_layout(ogm, tmp_path):
    root, _ = ogm
    out = tmp_path / "run"
    rc = main(
        [
            "train",
            "--method",
            "joint",
            "--dataset",
            "cremad",
            "--data-root",
            str(root),
            "--epochs",
            "1",
            "--set",
            "data.image_size=32",
            "--set",
            "data.n_fft=64",
            "--set",
            "data.hop=64",
            "--set",
            "data.audio_seconds=0.5",
            "--set",
            "loader.batch_size=16",
            "--set",
            "eval.missing=false",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["modalities"] == ["audio", "visual"] and summary["data_info"]["sizes"] == {
        "train": 18,
        "val": 6,
        "test": 6,
    }
    assert summary["data_info"]["modalities"]["audio"] == [1, 33, 173]  # n_fft 64, 0.5 s at hop 64
    assert (
        np.isfinite(summary["test/acc"])
        and "test/acc/audio" in summary
        and len(summary["data_info"]["val"]["ids"]) == 6
    )
