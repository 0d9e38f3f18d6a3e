"""Fabricate tiny datasets in the exact on-disk layouts of the reference repos (at test time; nothing
binary is committed).

Each builder writes a few clips per class with tiny images and short signals and returns the
list of ``(clip, class_name)`` it wrote per split, so tests can check label maps and split sizes.
"""

from __future__ import annotations

import pickle
import wave
from pathlib import Path

import numpy as np
from PIL import Image

CREMAD = ["NEU", "HAP", "SAD", "FEA", "DIS", "ANG"]


def write_wav(path: Path, x: np.ndarray, rate: int = 16000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = (np.clip(x, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def write_image(path: Path, value: int, size: int = 20, mode: str = "RGB") -> None:
    """A flat image whose grey level encodes ``value`` (so tests can tell which frame was loaded)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    Image.fromarray(np.full(shape, value % 256, np.uint8), mode).save(path, quality=95)


def write_frames(
    folder: Path, n: int, name: str = "{i:06d}.jpg", start: int = 1, size: int = 20, mode: str = "RGB"
) -> None:
    for i in range(n):
        write_image(folder / name.format(i=i + start), 20 * i + 10, size, mode)


def tone(seconds: float, rate: int, freq: float, seed: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return 0.5 * np.sin(2 * np.pi * freq * t) + 0.01 * np.random.default_rng(seed).standard_normal(len(t))


def cremad_clips(per_class: dict[str, int]) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    k = 0
    for split, n in per_class.items():
        out[split] = []
        for c in CREMAD:
            for _ in range(n):
                out[split].append((f"10{k:02d}_IEO_{c}_HI", c))
                k += 1
    return out


def build_cremad_ogm(
    root: Path,
    train: int = 4,
    test: int = 1,
    frames: int = 3,
    bom: bool = True,
    seconds: float = 0.5,
    layout: str = "ogm_ge",
) -> dict[str, list[tuple[str, str]]]:
    """OGM-GE (``ogm_ge``) or PMR (``pmr``) layout: csv lists, WAVs or spectrogram pickles, 1-fps frame folders."""
    clips = cremad_clips({"train": train, "test": test})
    for split, rows in clips.items():
        text = "".join(f"{c},{lab}\n" for c, lab in rows)
        (root / f"{split}.csv").parent.mkdir(parents=True, exist_ok=True)
        (root / f"{split}.csv").write_text(("\ufeff" if bom else "") + text, encoding="utf-8")
        for i, (c, lab) in enumerate(rows):
            if layout == "ogm_ge":
                write_wav(root / "AudioWAV" / f"{c}.wav", tone(seconds, 16000, 200 + 100 * CREMAD.index(lab), i))
            else:
                (root / "Audio-1004").mkdir(parents=True, exist_ok=True)
                spec = np.random.default_rng(i).standard_normal((257, 40)).astype(np.float32)
                (root / "Audio-1004" / f"{c}.pkl").write_bytes(pickle.dumps(spec))
            write_frames(root / "Image-01-FPS" / c, frames)
    return clips


def build_cremad_mla(root: Path, train: int = 3, test: int = 1, frames: int = 4) -> dict[str, list[tuple[str, str]]]:
    """MLA layout: ``my_{split}_cre.txt`` rows ``<clip>.flv <label index>``, fbank ``.npy`` [T, 128],
    frames per split."""
    clips = cremad_clips({"train": train, "test": test})
    for split, rows in clips.items():
        root.mkdir(parents=True, exist_ok=True)
        (root / f"my_{split}_cre.txt").write_text(
            "".join(f"{c}.flv {CREMAD.index(lab)}\n" for c, lab in rows)
        )  # MLA writes indices
        for i, (c, _) in enumerate(rows):
            p = root / "audio" / f"{split}_fbank" / f"{c}.npy"
            p.parent.mkdir(parents=True, exist_ok=True)
            np.save(p, np.random.default_rng(i).standard_normal((100, 128)).astype(np.float32))
            write_frames(root / "visual" / f"{split}_imgs" / "Image-01-FPS" / c, frames)
    return clips


def build_kinetics_sounds(
    root: Path, profile: str = "ogm_ge", labels: tuple[int, ...] = (4, 27, 30), train: int = 3, test: int = 1
) -> dict[str, list[tuple[str, int]]]:
    """Kinetics-Sounds: OGM-GE ``my_{split}.txt`` rows ``clip,10,idx`` or BalanceBenchmark ``ks_{split}_overlap.txt``
    rows ``clip idx``; fbank ``.npy`` [1024, 128]; 1-fps ``frame_0000k.jpg`` folders, in each profile's folders."""
    out: dict[str, list[tuple[str, int]]] = {}
    k = 0
    for split, n in (("train", train), ("test", test)):
        adir, vdir = (
            ("audio/" + split, "visual/" + split)
            if profile == "ogm_ge"
            else (f"{split}_spec", f"{split}-frames-1fps/{split}")
        )
        out[split] = []
        for lab in labels:
            for _ in range(n):
                clip = f"-yt{k:04d}_{10 * k:06d}_{10 * k + 10:06d}"
                out[split].append((clip, lab))
                p = root / adir / f"{clip}.npy"
                p.parent.mkdir(parents=True, exist_ok=True)
                np.save(p, np.random.default_rng(k).standard_normal((1024, 128)).astype(np.float32))
                write_frames(root / vdir / clip, 4, name="frame_{i:05d}.jpg")
                k += 1
        if profile == "ogm_ge":
            (root / f"my_{split}.txt").write_text("".join(f"{c},10,{lab}\n" for c, lab in out[split]))
        else:
            (root / f"ks_{split}_overlap.txt").write_text("".join(f"{c} {lab}\n" for c, lab in out[split]))
    return out


def build_ave(
    root: Path, classes: tuple[str, ...] = ("Church bell", "Dog", "Frying (food)"), per: int = 2
) -> dict[str, list[str]]:
    """AVE (DI-MML): ``{split}Set.txt`` rows ``Category&vid&good&0&10`` (one duplicate row in train),
    pickles, frames."""
    root.mkdir(parents=True, exist_ok=True)
    out: dict[str, list[str]] = {}
    k = 0
    for split, n in (("train", per + 1), ("val", per), ("test", per)):
        rows = []
        for c in reversed(classes) if split == "test" else classes:  # DI-MML numbers classes in testSet order
            for _ in range(n):
                vid = f"vid{k:05d}"
                rows.append(f"{c}&{vid}&good&0&10")
                (root / "Audio-1004-SE").mkdir(exist_ok=True)
                (root / "Audio-1004-SE" / f"{vid}.pkl").write_bytes(pickle.dumps(np.full((257, 1004), k, np.float32)))
                write_frames(root / "Image-01-FPS-SE" / vid, 5)
                k += 1
        if split == "train":
            rows.append(rows[0].replace("&0&10", "&3&7"))  # the same video, another event
        out[split] = rows
        (root / f"{split}Set.txt").write_text("\n".join(rows) + "\n")
    return out


def build_ucf101(
    root: Path,
    classes: tuple[str, ...] = ("ApplyEyeMakeup", "Archery", "YoYo"),
    train: int = 3,
    test: int = 1,
    frames: int = 12,
) -> None:
    """UCF-101 (DI-MML): classInd/trainlist01/testlist01, jpegs_256/<video>/frame%06d.jpg, tvl1_flow/{u,v}/<video>/."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(classes)))
    g = 1
    for split, n in (("train", train), ("test", test)):
        rows = []
        for i, c in enumerate(classes):
            for _ in range(n):
                video = f"v_{c}_g{g:02d}_c01"
                g += 1
                rows.append(f"{c}/{video}.avi {i + 1}" if split == "train" else f"{c}/{video}.avi")
                write_frames(root / "jpegs_256" / video, frames, name="frame{i:06d}.jpg")
                for comp in ("u", "v"):
                    write_frames(root / "tvl1_flow" / comp / video, frames - 1, name="frame{i:06d}.jpg", mode="L")
        (root / f"{split}list01.txt").write_text("\n".join(rows) + "\n")


def build_modelnet40(root: Path, labels: tuple[int, ...] = (0, 1, 39), train: int = 3, test: int = 1) -> None:
    """ModelNet40 (DI-MML): ``{split}.txt`` rows
    ``../modelnet40_images_new_12x/<class>/<split>/<name>.obj.shaded_v001.png`` TAB ``<label>``, 12 views
    per object under ``root`` (= the modelnet40_images_new_12x folder)."""
    from trainables.data.modelnet40 import CLASSES

    for split, n in (("train", train), ("test", test)):
        rows = []
        for lab in labels:
            for j in range(n):
                stem = f"{CLASSES[lab]}/{split}/{CLASSES[lab]}_{j:04d}.obj.shaded"
                for v in range(1, 13):
                    write_image(root / f"{stem}_v{v:03d}.png", 10 * v, size=16)
                rows.append(f"../modelnet40_images_new_12x/{stem}_v001.png\t{lab}")  # as DI-MML's lists
        (root / f"{split}.txt").write_text("\n".join(rows) + "\n")


def write_flv(path: Path, seconds: float = 2.5, fps: int = 4, size: int = 32) -> None:
    """A tiny FLV (Sorenson H.263, as CREMA-D's VideoFlash) whose grey level encodes the second: 40 + 60 * s."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="flv") as out:
        stream = out.add_stream("flv", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(int(seconds * fps)):
            img = np.full((size, size, 3), 40 + 60 * (i // fps), np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def build_cremad_raw(root: Path, per_class: int = 3, seconds: float = 2.5) -> list[str]:
    """The raw CREMA-D download: ``AudioWAV/<clip>.wav`` (16 kHz) and ``VideoFlash/<clip>.flv``."""
    clips = []
    for c in CREMAD:
        for j in range(per_class):
            clip = f"10{j:02d}_DFA_{c}_XX"
            write_wav(root / "AudioWAV" / f"{clip}.wav", tone(seconds, 16000, 300 + 50 * j, j))
            write_flv(root / "VideoFlash" / f"{clip}.flv", seconds)
            clips.append(clip)
    return clips


def write_mp4(
    path: Path,
    seconds: float = 3.0,
    fps: int = 2,
    size: int = 32,
    rate: int = 16000,
    freq: float = 440.0,
    audio: bool = True,
) -> None:
    """A tiny MP4 (MPEG-4 video + AAC mono audio): grey level 40 + 60 * second, a sine at ``freq``."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        v = out.add_stream("mpeg4", rate=fps)
        v.width = v.height = size
        v.pix_fmt = "yuv420p"
        a = out.add_stream("aac", rate=rate) if audio else None
        if a is not None:
            a.layout = "mono"
        for i in range(int(seconds * fps)):
            img = np.full((size, size, 3), 40 + 60 * (i // fps), np.uint8)
            for packet in v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        if a is not None:
            x = (0.3 * np.sin(2 * np.pi * freq * np.arange(int(seconds * rate)) / rate)).astype(np.float32)
            for k in range(0, len(x), 1024):
                frame = av.AudioFrame.from_ndarray(x[None, k : k + 1024], format="fltp", layout="mono")
                frame.sample_rate, frame.pts = rate, k
                for packet in a.encode(frame):
                    out.mux(packet)
        for s in [v] + ([a] if a is not None else []):
            for packet in s.encode():
                out.mux(packet)


def build_kinetics_raw(
    root: Path, labels: tuple[int, ...] = (4, 27, 30), train: int = 3, test: int = 1
) -> dict[str, list[str]]:
    """Raw Kinetics-Sounds: ``<split>/<label>/<clip>.mp4`` and OGM-GE's ``my_{split}.txt`` rows ``clip,10,label``."""
    out: dict[str, list[str]] = {}
    k = 0
    for split, n in (("train", train), ("test", test)):
        rows = []
        for lab in labels:
            for _ in range(n):
                clip = f"yt{k:04d}_{10 * k:06d}_{10 * k + 10:06d}"
                write_mp4(root / split / str(lab) / f"{clip}.mp4", freq=300.0 + 200 * (lab % 5))
                rows.append(f"{clip},10,{lab}")
                k += 1
        (root / f"my_{split}.txt").write_text("\n".join(rows) + "\n")
        out[split] = [r.split(",")[0] for r in rows]
    return out
