"""`mmbal prepare` from raw videos: layout, manifest, reading back, idempotence, resume after interruption, bad videos
(the layout profiles are in ``test_data_prepare_layouts.py``)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from fixtures_data import CREMAD, build_cremad_raw

from orchestrator.cli import main
from trainables.config import resolve
from trainables.data import DATASETS
from trainables.data.cremad import CremaDPrepareParams, CremaDRecipe
from trainables.data.io.audio import ogm_spectrogram, read_wav
from trainables.data.io.base import DatasetSpec
from trainables.data.io.prepare import prepare
from trainables.data.io.prepared import read_manifest, read_samples
from trainables.data.io.recipes import RawClip, VideoParams, VideoRecipe
from trainables.errors import ConfigError, DataError
from trainables.params import knob

ARGS = ["--size", "32", "--frames", "3", "--workers", "1"]


def sha(p):
    return hashlib.sha256(p.read_bytes()).hexdigest()


def prepare_cremad(raw, out, **params):
    return prepare("cremad", CremaDRecipe(), raw, out, CremaDPrepareParams(**params), log=lambda s: None)


def build(root, **data):
    cfg = resolve(
        {"dataset": "cremad", "data_root": str(root), "data": {"profile": "prepared", "image_size": 32, **data}}
    )
    return DATASETS.get("cremad")().build(cfg.data_params, str(root), 0)


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    return root, build_cremad_raw(root, per_class=3)


@pytest.fixture(scope="module")
def prepared(raw, tmp_path_factory):
    out = tmp_path_factory.mktemp("prep") / "out"
    assert main(["prepare", "cremad", "--raw", str(raw[0]), "--out", str(out), *ARGS]) == 0
    return out


def test_prepared_layout_and_manifest(raw, prepared):
    man = json.loads((prepared / "manifest.json").read_text())
    assert sorted(p.name for p in prepared.iterdir()) == ["audio.npy", "manifest.json", "samples.json", "visual.npy"]
    assert man["format"] == "mmbal-prepared" and man["version"] == 2 and man["sizes"] == {"train": 12, "test": 6}
    assert man["params"]["size"] == 32 and man["versions"]["av"] != "not installed" and man["skipped"] == []
    assert (
        man["profile"] == "raw" and man["params"]["profile"] == "raw" and list(man["modalities"]) == ["audio", "visual"]
    )
    for key in ("audio", "visual"):
        arr = man["modalities"][key]
        assert sha(prepared / arr["file"]) == arr["sha256"]
        loaded = np.load(prepared / arr["file"], mmap_mode="r")
        assert list(loaded.shape) == arr["shape"] and loaded.dtype == np.dtype(arr["dtype"])
    assert man["modalities"]["audio"]["shape"] == [18, 1, 257, 188] and man["modalities"]["visual"]["shape"] == [
        36,
        32,
        32,
        3,
    ]
    samples = json.loads((prepared / "samples.json").read_text())
    assert all(s["modalities"]["visual"]["n"] == 2 for s in samples)  # 2.5 s at 1 fps: frames at 0.5 s and 1.5 s
    assert [s["modalities"]["visual"]["row"] for s in samples] == list(range(0, 36, 2))  # frames one clip after another
    assert all(CREMAD[s["label"]] == s["id"].split("_")[2] for s in samples)


def test_prepared_profile_reads_the_same_features_as_the_official_path(raw, prepared):
    b = build(prepared, num_frames=1)
    assert (len(b.train), len(b.val), len(b.test)) == (6, 6, 6) and len(b.info["manifest_sha256"]) == 64
    item = b.test[0]
    sid = b.test.samples[0].id
    x, rate = read_wav(raw[0] / "AudioWAV" / f"{sid}.wav")
    official = ogm_spectrogram(x, rate)
    assert item["inputs"]["audio"].shape == (1, 257, 188)
    assert torch.allclose(item["inputs"]["audio"][0], official, atol=0.02)  # float16 storage
    # eval pick of 1 out of 2 stored frames is frame 1 (second 1): grey level 100
    grey = item["inputs"]["visual"][0, 0].mean() * 0.229 + 0.485
    assert abs(grey.item() * 255 - 100) < 4


def test_rerun_is_idempotent_and_other_params_are_refused(raw, prepared, capsys):
    before = {p.name: (p.stat().st_mtime_ns, sha(p)) for p in prepared.iterdir()}
    assert main(["prepare", "cremad", "--raw", str(raw[0]), "--out", str(prepared), *ARGS]) == 0
    assert "already prepared" in capsys.readouterr().out
    assert {p.name: (p.stat().st_mtime_ns, sha(p)) for p in prepared.iterdir()} == before
    assert (
        main(["prepare", "cremad", "--raw", str(raw[0]), "--out", str(prepared), "--size", "48", "--workers", "1"]) == 2
    )
    assert "holds a preparation with other params" in capsys.readouterr().err


def test_interrupted_prepare_resumes_to_identical_output(raw, prepared, tmp_path, monkeypatch):
    out = tmp_path / "out"
    real, calls = CremaDRecipe.decode, []

    def crashing(self, clip, p):
        if len(calls) == 5:
            raise KeyboardInterrupt
        calls.append(clip.id)
        return real(self, clip, p)

    monkeypatch.setattr(CremaDRecipe, "decode", crashing)
    with pytest.raises(KeyboardInterrupt):
        prepare_cremad(raw[0], out, size=32)
    assert not (out / "manifest.json").exists() and len(list((out / ".work").glob("*.npz"))) == 5
    with pytest.raises(DataError, match="not a finished `mmbal prepare cremad` output"):
        build(out)
    with pytest.raises(ConfigError, match=r"\.work holds an unfinished prepare with other params"):
        prepare_cremad(raw[0], out, size=48)
    monkeypatch.setattr(CremaDRecipe, "decode", lambda self, clip, p: calls.append(clip.id) or real(self, clip, p))
    prepare_cremad(raw[0], out, size=32)
    assert len(calls) == 18 and len(set(calls)) == 18  # the 5 finished clips were not redone
    for name in ("audio.npy", "visual.npy", "samples.json"):
        assert sha(out / name) == sha(prepared / name)
    assert not (out / ".work").exists()


def test_bad_video_raises_or_is_skipped_and_recorded(tmp_path):
    clips = build_cremad_raw(tmp_path / "raw", per_class=3, seconds=1.0)
    (tmp_path / "raw" / "VideoFlash" / f"{clips[3]}.flv").write_bytes(b"FLV\x01 this is not a video")
    with pytest.raises(DataError, match=rf"clip {clips[3]}: cannot decode video .*{clips[3]}.flv"):
        prepare_cremad(tmp_path / "raw", tmp_path / "a", size=32)
    man = prepare_cremad(tmp_path / "raw", tmp_path / "b", size=32, on_error="skip")
    assert (
        len(man["skipped"]) == 1 and man["skipped"][0]["kind"] == "corrupt" and clips[3] in man["skipped"][0]["message"]
    )
    assert sum(man["sizes"].values()) == 17 and build(tmp_path / "b").info["prepare_skipped"] == man["skipped"]


def test_ogm_ge_lists_decide_the_split_and_bad_raw_folders_are_one_line(tmp_path, capsys):
    clips = build_cremad_raw(tmp_path / "raw", per_class=2, seconds=1.0)
    (tmp_path / "raw" / "train.csv").write_text("".join(f"{c},{c.split('_')[2]}\n" for c in clips[:9]))
    (tmp_path / "raw" / "test.csv").write_text("".join(f"{c},{c.split('_')[2]}\n" for c in clips[9:]))
    man = prepare_cremad(tmp_path / "raw", tmp_path / "o", size=16, frames=1)
    assert man["sizes"] == {"train": 9, "test": 3} and man["split_source"].endswith("train.csv, test.csv")
    assert main(["prepare", "cremad", "--raw", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]) == 2
    assert main(["prepare", "cremad", "--raw", str(tmp_path), "--out", str(tmp_path / "x"), "--workers", "1"]) == 1
    err = capsys.readouterr().err
    assert "--raw: " in err and "AudioWAV: no .wav files" in err and "Traceback" not in err
    assert main(["prepare", "mfeat", "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "y")]) == 2
    assert (
        "dataset: mmbal prepare supports: ave, cremad, kinetics_sounds, modelnet40, ucf101 (got 'mfeat')"
        in capsys.readouterr().err
    )
    assert (
        main(["prepare", "ave", "--raw", str(tmp_path / "raw"), "--profile", "raw", "--out", str(tmp_path / "y")]) == 2
    )
    assert "--profile: ave is prepared from: dimml (got 'raw')" in capsys.readouterr().err


def test_kinetics_sounds_prepare_from_mp4(tmp_path):
    from fixtures_data import build_kinetics_raw, write_mp4

    from trainables.data.io.audio import kaldi_fbank

    clips = build_kinetics_raw(tmp_path / "raw")
    write_mp4(tmp_path / "raw" / "train" / "4" / f"{clips['train'][1]}.mp4", audio=False)  # a video without sound
    out = tmp_path / "out"
    assert main(["prepare", "kinetics_sounds", "--raw", str(tmp_path / "raw"), "--out", str(out), "--size", "32",
                 "--frames", "3", "--workers", "1", "--on-error", "skip"]) == 0  # fmt: skip
    man = json.loads((out / "manifest.json").read_text())
    assert man["sizes"] == {"train": 8, "test": 3} and man["modalities"]["audio"]["shape"] == [11, 1, 128, 1024]
    assert len(man["skipped"]) == 1 and "has no audio track" in man["skipped"][0]["message"]
    cfg = resolve(
        {"dataset": "kinetics_sounds", "data_root": str(out), "data": {"profile": "prepared", "image_size": 32}}
    )
    b = DATASETS.get("kinetics_sounds")().build(cfg.data_params, str(out), 0)
    assert (len(b.train), len(b.val), len(b.test)) == (5, 3, 3) and b.class_names[30] == "30"
    item = b.test[0]
    assert item["inputs"]["audio"].shape == (1, 128, 1024) and item["inputs"]["visual"].shape == (3, 3, 32, 32)
    # AAC is lossy: the stored fbank follows the fbank of the sine that was encoded, not bit for bit
    lab = b.test.samples[0].label
    rate, t = 16000, np.arange(3 * 16000) / 16000
    expected = kaldi_fbank(0.3 * np.sin(2 * np.pi * (300.0 + 200 * (lab % 5)) * t), rate).T[:, 10:280]
    got = item["inputs"]["audio"][0][:, 10:280]
    assert np.corrcoef(got.flatten().numpy(), expected.flatten().numpy())[0, 1] > 0.99  # another tone gives ~0.6
    assert [b.class_names[s.label] for s in b.test.samples] == ["4", "27", "30"]


@dataclass(frozen=True)
class ToyParams(VideoParams):
    level: int = knob(7, "grey level of every stored frame")


class ToyRecipe(VideoRecipe):
    """A recipe declared outside trainables/data: one row ``id,label,split`` per clip in ``clips.txt``."""

    Params = ToyParams
    class_names = ["x", "y"]
    raw_layout = "clips.txt"
    lists_layout = "none"

    def clips(self, raw, lists, p):
        rows = [line.split(",") for line in (raw / "clips.txt").read_text().split()]
        return [RawClip(i, int(label), split, f"clips.txt, row {i}", {}) for i, label, split in rows], "clips.txt"

    def audio_shape(self, p):
        return (2, 3)

    def audio(self, clip, p):
        return np.full((2, 3), clip.label, np.float32)

    def frames(self, clip, p):
        return np.full((1, p.size, p.size, 3), p.level, np.uint8)


class Toy(DatasetSpec):
    recipe = ToyRecipe()


def test_a_new_dataset_with_a_recipe_needs_no_other_change(tmp_path, monkeypatch):
    monkeypatch.setitem(DATASETS._items, "toy", Toy)  # what @register_dataset("toy") does in its own file
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "clips.txt").write_text("a,0,train\nb,1,train\nc,1,test\n")
    out = tmp_path / "out"
    args = ["prepare", "toy", "--raw", str(tmp_path / "raw"), "--out", str(out)]
    args += ["--size", "16", "--level", "9", "--workers", "1"]
    assert main(args) == 0
    man, _ = read_manifest(out, "toy")
    expected = {
        "dataset": "toy",
        "profile": "raw",
        "frames": 3,
        "size": 16,
        "fps": 1.0,
        "on_error": "raise",
        "level": 9,
    }
    assert man["params"] == expected
    assert man["class_names"] == ["x", "y"] and man["split_source"] == "clips.txt"
    frames, audio = np.load(out / "visual.npy"), np.load(out / "audio.npy")
    assert frames.shape == (3, 16, 16, 3) and (frames == 9).all()  # one frame per clip, no padding
    assert audio.shape == (3, 1, 2, 3) and audio[:, 0, 0, 0].tolist() == [0, 1, 1]
    assert {k: [s.id for s in v] for k, v in read_samples(out, man).items()} == {"train": ["a", "b"], "test": ["c"]}
