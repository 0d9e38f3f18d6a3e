"""Audio front-end against hand computations, deterministic frame picks, list parsing and path safety."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from fixtures_data import write_image, write_wav

from trainables.data.io.audio import FeatureFile, kaldi_fbank, load_feature, ogm_spectrogram, read_wav, tile_clip
from trainables.data.io.frames import ImageTransform, list_frames, pick_frames
from trainables.data.io.lists import Issues, Sample, SampleError, collect, read_rows, safe_path
from trainables.errors import DataError


def test_ogm_spectrogram_of_a_bin_centred_tone_matches_the_hann_formula():
    # a tone at exactly bin k: periodic Hann gives |X[k]| = A * N / 4 and |X[k +- 1]| = A * N / 8, nothing elsewhere
    rate, n_fft, k, amp = 22050, 512, 10, 0.5
    t = np.arange(3 * rate) / rate
    x = amp * np.sin(2 * np.pi * (k * rate / n_fft) * t)
    spec = ogm_spectrogram(x, rate)
    assert spec.shape == (257, 188)  # 1 + floor(66150 / 353) frames
    mid = spec[:, 94]
    assert mid[k].item() == pytest.approx(np.log(amp * n_fft / 4), abs=1e-3)
    assert mid[k - 1].item() == pytest.approx(np.log(amp * n_fft / 8), abs=1e-3)
    assert mid[k + 1].item() == pytest.approx(np.log(amp * n_fft / 8), abs=1e-3)
    assert mid[k + 5 :].max().item() < np.log(1e-2)


def test_ogm_spectrogram_clips_to_one_and_tiles_short_clips():
    rate = 22050
    spec = ogm_spectrogram(np.full(rate // 2, 2.0), rate)  # 0.5 s of 2.0: tiled to 3 s, clipped to 1.0
    assert spec.shape == (257, 188)
    assert spec[0, 50].item() == pytest.approx(np.log(256.0), abs=1e-4)  # DC bin = sum of the Hann window
    assert tile_clip(np.array([0.5, 2.0, -3.0]), 7).tolist() == [0.5, 1.0, -1.0, 0.5, 1.0, -1.0, 0.5]
    # the first frame is centred on sample 0: half of the window sees padding (zeros vs the mirrored signal)
    w = torch.hann_window(512)
    assert spec[0, 0].item() == pytest.approx(np.log(w[256:].sum().item()), abs=1e-4)
    reflected = ogm_spectrogram(np.full(rate // 2, 2.0), rate, pad_mode="reflect")
    assert reflected[0, 0].item() == pytest.approx(np.log(256.0), abs=1e-4) and torch.equal(
        reflected[:, 1:-1], spec[:, 1:-1]
    )


def test_wav_reader_and_resampled_spectrogram_shape(tmp_path):
    x = 0.25 * np.sin(np.linspace(0, 200, 16000))
    write_wav(tmp_path / "a.wav", x, 16000)
    y, rate = read_wav(tmp_path / "a.wav")
    assert rate == 16000 and np.abs(y - x).max() < 1e-4
    assert ogm_spectrogram(y, rate).shape == (257, 188)


def test_kaldi_fbank_shape_and_normalisation():
    fb = kaldi_fbank(np.random.default_rng(0).standard_normal(16000) * 0.1, 16000)
    assert fb.shape == (1024, 128)
    assert torch.all(fb[98:] == (0 + 4.2677393) / (2 * 4.5689974))  # 1 s = 98 frames, then zero padding, normalised


def test_feature_file_pads_cuts_and_checks_bins(tmp_path):
    np.save(tmp_path / "f.npy", np.ones((50, 128), np.float32))
    s = Sample("f", 0, "list, line 1", {"audio": tmp_path / "f.npy"})
    out = FeatureFile(128, 64, time_first=True)(s, False)
    assert out.shape == (1, 128, 64) and out[0, :, :50].eq(1).all() and out[0, :, 50:].eq(0).all()
    assert FeatureFile(128, 20, time_first=True)(s, False).shape == (1, 128, 20)
    with pytest.raises(SampleError, match="feature bins"):
        FeatureFile(257, 64, time_first=False)(s, False)


def test_pickled_features_load_arrays_but_refuse_code(tmp_path):
    (tmp_path / "ok.pkl").write_bytes(pickle.dumps(np.arange(6, dtype=np.float32).reshape(2, 3)))
    assert load_feature(tmp_path / "ok.pkl", "w").tolist() == [[0, 1, 2], [3, 4, 5]]
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(print))
    with pytest.raises(SampleError, match="refusing to load builtins.print") as e:
        load_feature(tmp_path / "evil.pkl", "list.txt, line 3")
    assert e.value.kind == "corrupt" and "list.txt, line 3" in str(e.value)


def test_frame_picks_one_per_segment_seeded_and_centred_for_eval():
    assert pick_frames(10, 3, train=False) == [1, 5, 8]  # floor((i + 0.5) * 10 / 3)
    assert pick_frames(2, 3, train=False) == [0, 1, 1]
    g = lambda: torch.Generator().manual_seed(7)
    a, b = pick_frames(10, 3, True, g()), pick_frames(10, 3, True, g())
    assert a == b  # seeded
    draws = [pick_frames(10, 3, True, torch.Generator().manual_seed(s)) for s in range(60)]
    # segments [0, 3), [3, 6), [6, 10): one frame in each, every frame reachable
    assert all(0 <= d[0] < 3 <= d[1] < 6 <= d[2] < 10 for d in draws)
    assert {f for d in draws for f in d} == set(range(10))
    assert pick_frames(1, 3, True, g()) == [0, 0, 0]


def test_frames_listed_in_natural_order(tmp_path):
    for i in (10, 2, 1):
        write_image(tmp_path / f"frame_{i}.jpg", i)
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in list_frames(tmp_path, "w")] == ["frame_1.jpg", "frame_2.jpg", "frame_10.jpg"]


def test_image_transform_normalises_and_resizes():
    x = torch.full((2, 3, 20, 20), 124, dtype=torch.uint8)
    out = ImageTransform(8, train=False, augment=True)(x)
    assert out.shape == (2, 3, 8, 8) and torch.allclose(out[:, 0], torch.tensor((124 / 255 - 0.485) / 0.229))
    flow = ImageTransform(8, train=False, augment=True)(torch.full((4, 2, 20, 20), 255, dtype=torch.uint8))
    assert flow.shape == (4, 2, 8, 8) and torch.allclose(flow, torch.ones_like(flow))  # [0, 255] -> [-1, 1]
    with pytest.raises(TypeError, match="uint8"):  # resizing acts on the decoded pixels, as the references' PIL
        ImageTransform(8, train=False, augment=False)(x.float())
    u8 = torch.uint8
    x = torch.cat([torch.full((1, 1, 20, 20), 255, dtype=u8), torch.full((1, 1, 20, 20), 128, dtype=u8)], 1)  # u = +max
    u = [ImageTransform(20, train=True, augment=True)(x)[0, 0].mean().item() for _ in range(40)]
    assert {round(v, 4) for v in u} == {1.0, -1.0}  # a flip mirrors u (sign change), no flip keeps it


def test_rows_bom_blank_lines_and_parse_errors(tmp_path):
    p = tmp_path / "l.csv"
    p.write_text("\ufeffa,NEU\n\nbroken\nb,HAP\n", encoding="utf-8")
    rows = list(read_rows(p, lambda s: s.split(","), 2))
    assert [r.fields for r in rows if not isinstance(r, SampleError)] == [("a", "NEU"), ("b", "HAP")]
    errs = [r for r in rows if isinstance(r, SampleError)]
    assert len(errs) == 1 and "l.csv, line 3" in str(errs[0]) and "'broken'" in str(errs[0])
    with pytest.raises(DataError, match="list file not found"):
        list(read_rows(tmp_path / "nope.csv", str.split, 2))


def test_safe_path_refuses_escapes(tmp_path):
    assert safe_path(tmp_path, "a", "b.wav", where="w") == tmp_path.resolve() / "a" / "b.wav"
    for bad in ("../x.wav", "/etc/passwd", "a/../../x"):
        with pytest.raises(SampleError, match="escapes the data root") as e:
            safe_path(tmp_path, bad, where="train.csv, line 4")
        assert e.value.kind == "path" and "train.csv, line 4" in str(e.value)


def test_issues_raise_or_count_and_duplicates(tmp_path):
    p = tmp_path / "l.txt"
    p.write_text("a 0\nb 1\na 0\n")
    rows = lambda: read_rows(p, str.split, 2)
    resolve = lambda r: Sample(r.fields[0], int(r.fields[1]), r.where)
    with pytest.raises(DataError, match=r"l.txt, line 3: sample 'a' already listed at .*line 1"):
        collect(rows(), resolve, Issues("raise"), "train")
    issues = Issues("skip")
    assert [s.id for s in collect(rows(), resolve, issues, "train")] == ["a", "b"]
    assert issues.counts == {"train": {"duplicate": 1}} and issues.total == 1
