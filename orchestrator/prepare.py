"""``mmbal prepare``: a raw download -> mmbal's versioned, memory-mappable prepared layout.

Recipes (``data.profile=prepared`` reads the result):

``cremad``
    ``RAW/AudioWAV/<clip>.wav`` and ``RAW/VideoFlash/<clip>.flv``; the label is the third ``_``
    field of the clip name. Audio: OGM-GE's log-STFT (:func:`trainables.data.io.audio.ogm_spectrogram`),
    ``[257, 188]``. Split: OGM-GE's ``train.csv`` / ``test.csv`` when found in ``--lists`` (default
    RAW), else a seeded stratified one.
``kinetics_sounds``
    ``RAW/**/<clip>.mp4`` (any folder depth) and OGM-GE's ``my_train.txt`` / ``my_test.txt`` (rows
    ``<clip>,10,<label index>``) in ``--lists`` (default RAW). Audio: the video's audio track at
    16 kHz as the normalised Kaldi fbank of the MLA / Kinetics-Sounds features, stored ``[128, 1024]``.

Frames (both): decoded with PyAV at 1 fps (the centre of each second, up to ``frames`` of them),
resized to ``size`` x ``size`` and stored as uint8; audio features are stored as float16.

Resumable and idempotent: each clip is first written to ``OUT/.work/<clip>.npz`` (or
``<clip>.skip.json``) atomically; a rerun skips finished clips (and refuses a ``.work`` made with
other params). When every clip is done, the arrays and ``samples.json`` are written under temporary
names and renamed, and ``manifest.json`` (params, library versions, sha256 of every file) comes
last; then ``.work`` is removed. A finished folder with the same params is left untouched; other
params are refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from trainables.data.io.audio import kaldi_fbank, ogm_spectrogram, read_wav
from trainables.data.io.base import holdout, stratified_split
from trainables.data.cremad import CLASSES
from trainables.data.io.lists import SampleError, SplitRows, read_rows
from trainables.data.io.prepared import FORMAT, VERSION
from trainables.data.io.video import decode_audio, decode_frames
from trainables.errors import ConfigError, DataError
from trainables.reporting import atomic_write_text


@dataclass(frozen=True)
class PrepareParams:
    """What determines the prepared bytes (recorded in the manifest; a rerun must match)."""

    dataset: str = "cremad"
    frames: int = 3
    size: int = 224
    fps: float = 1.0
    audio_rate: int = 22050
    audio_seconds: float = 3.0
    n_fft: int = 512
    hop: int = 353
    fbank_rate: int = 16000
    mel_bins: int = 128
    fbank_frames: int = 1024
    test_fraction: float = 0.1
    split_seed: int = 0
    on_error: str = "raise"


def cremad_items(raw: Path, lists: Path, p: PrepareParams) -> list[dict[str, Any]]:
    """``[{id, label, split, wav, video, where}]`` from the raw folder, split by OGM-GE's lists if present."""
    wavs = sorted((raw / "AudioWAV").glob("*.wav"))
    if not wavs:
        raise DataError(f"{raw / 'AudioWAV'}: no .wav files (expected the raw CREMA-D download)")
    labels = {}
    for w in wavs:
        parts = w.stem.split("_")
        if len(parts) < 3 or parts[2] not in CLASSES:
            raise DataError(f"{w}: cannot read the emotion from the file name (expected ActorID_Sentence_EMOTION_Level)")
        labels[w.stem] = CLASSES.index(parts[2])
    split = {}
    if (lists / "train.csv").is_file() and (lists / "test.csv").is_file():
        for name in ("train", "test"):
            for row in read_rows(lists / f"{name}.csv", SplitRows(","), 2):
                if isinstance(row, SampleError):
                    raise DataError(str(row))
                split[row.fields[0]] = name
        source = f"{lists}/train.csv, test.csv"
    else:
        ids = sorted(labels)
        rows = stratified_split(np.array([labels[i] for i in ids]), {"test": holdout(p.test_fraction), "train": -1}, p.split_seed)
        split = {ids[i]: name for name, picked in rows.items() for i in picked}
        source = f"stratified, test_fraction {p.test_fraction}, seed {p.split_seed}"
    items = [
        {
            "id": s,
            "label": labels[s],
            "split": split[s],
            "wav": str(raw / "AudioWAV" / f"{s}.wav"),
            "video": str(raw / "VideoFlash" / f"{s}.flv"),
            "where": f"clip {s}",
        }
        for s in sorted(labels)
        if s in split
    ]
    return [dict(it, split_source=source) for it in items]


KS_CLASSES = [str(i) for i in range(31)]


def kinetics_items(raw: Path, lists: Path, p: PrepareParams) -> list[dict[str, Any]]:
    """``[{id, label, split, video, where}]`` from OGM-GE's lists and the videos found anywhere under ``raw``."""
    videos = {v.stem: v for v in sorted(raw.rglob("*.mp4"))}
    items = []
    for split in ("train", "test"):
        path = lists / f"my_{split}.txt"
        for row in read_rows(path, SplitRows(","), 3):
            if isinstance(row, SampleError):
                raise DataError(str(row))
            clip, label = row.fields[0], row.fields[2]
            if not label.isdigit() or int(label) >= len(KS_CLASSES):
                raise DataError(f"{row.where}: label {label!r} is not a class index 0..{len(KS_CLASSES) - 1}")
            video = videos.get(clip, raw / f"{clip}.mp4")  # a missing video is reported when it is decoded
            items.append({"id": clip, "label": int(label), "split": split, "video": str(video), "where": row.where})
    if len({it["id"] for it in items}) != len(items):
        raise DataError(f"{lists}: a clip is listed twice in my_train.txt / my_test.txt")
    return [dict(it, split_source=f"{lists}/my_train.txt, my_test.txt") for it in items]


RECIPES = {"cremad": (cremad_items, list(CLASSES)), "kinetics_sounds": (kinetics_items, KS_CLASSES)}


def audio_shape(p: PrepareParams) -> tuple[int, int]:
    if p.dataset == "cremad":
        return (p.n_fft // 2 + 1, int(round(p.audio_rate * p.audio_seconds)) // p.hop + 1)
    return (p.mel_bins, p.fbank_frames)


def process(item: dict[str, Any], p: PrepareParams) -> dict[str, np.ndarray]:
    """Features of one clip (raises :class:`SampleError`)."""
    if p.dataset == "cremad":
        x, rate = read_wav(Path(item["wav"]), item["where"])
        if len(x) == 0:
            raise SampleError("corrupt", f"{item['where']}: {item['wav']} holds no samples")
        audio = ogm_spectrogram(x, rate, p.audio_rate, p.audio_seconds, p.n_fft, p.hop).numpy().astype(np.float16)
    else:  # stored [F, T] like every audio feature in mmbal
        x = decode_audio(Path(item["video"]), p.fbank_rate, item["where"])
        audio = kaldi_fbank(x, p.fbank_rate, p.mel_bins, p.fbank_frames).T.numpy().astype(np.float16)
    frames = decode_frames(Path(item["video"]), p.frames, p.fps, p.size, item["where"])
    return {"audio": audio, "frames": frames}


def _work_one(args: tuple[dict[str, Any], PrepareParams, str]) -> str:
    item, p, work = args
    base = Path(work) / item["id"]
    try:
        arrays = process(item, p)
    except SampleError as err:
        if p.on_error == "raise":
            return f"error:{err}"
        atomic_write_text(base.with_suffix(".skip.json"), json.dumps({"kind": err.kind, "message": str(err)}))
        return "skipped"
    tmp = base.with_name(f".{item['id']}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, base.with_suffix(".npz"))
    return "done"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("mmbal", "numpy", "torch", "torchaudio", "av", "pillow"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _assemble(out: Path, work: Path, items: list[dict[str, Any]], p: PrepareParams) -> dict[str, Any]:
    done = [it for it in items if (work / f"{it['id']}.npz").is_file()]
    skipped = [
        json.loads((work / f"{it['id']}.skip.json").read_text()) for it in items if (work / f"{it['id']}.skip.json").is_file()
    ]
    if not done:
        raise DataError(f"{out}: every clip was skipped; nothing to prepare")
    a_shape = (len(done), *audio_shape(p))
    tmp_a, tmp_f = out / ".audio.npy.tmp", out / ".frames.npy.tmp"
    audio = np.lib.format.open_memmap(tmp_a, mode="w+", dtype=np.float16, shape=a_shape)
    frames = np.lib.format.open_memmap(tmp_f, mode="w+", dtype=np.uint8, shape=(len(done), p.frames, p.size, p.size, 3))
    samples = []
    for i, it in enumerate(done):
        with np.load(work / f"{it['id']}.npz") as z:
            audio[i] = z["audio"]
            n = len(z["frames"])
            frames[i, :n] = z["frames"]
        samples.append({"id": it["id"], "label": it["label"], "split": it["split"], "frames": n})
    audio.flush()
    frames.flush()
    del audio, frames
    os.replace(tmp_a, out / "audio.npy")
    os.replace(tmp_f, out / "frames.npy")
    atomic_write_text(out / "samples.json", json.dumps(samples))
    return {
        "format": FORMAT,
        "version": VERSION,
        "dataset": p.dataset,
        "class_names": RECIPES[p.dataset][1],
        "params": asdict(p),
        "versions": versions(),
        "decoder": "PyAV (FFmpeg)",
        "split_source": items[0]["split_source"],
        "sizes": {s: sum(1 for x in samples if x["split"] == s) for s in ("train", "test")},
        "skipped": skipped,
        "samples_sha256": _sha256(out / "samples.json"),
        "arrays": {
            "audio": {"file": "audio.npy", "dtype": "float16", "shape": list(a_shape), "sha256": _sha256(out / "audio.npy")},
            "visual": {
                "file": "frames.npy",
                "dtype": "uint8",
                "shape": [len(done), p.frames, p.size, p.size, 3],
                "sha256": _sha256(out / "frames.npy"),
            },
        },
    }


def prepare(
    raw: Path, out: Path, p: PrepareParams, lists: Path | None = None, workers: int = 1, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Run (or resume) a preparation; returns the manifest.

    Raises:
        ConfigError: ``out`` holds a finished preparation with other params.
        DataError: the raw folder is unusable, or a clip is bad and ``on_error`` is ``raise``.
    """
    if p.dataset not in RECIPES:
        raise ConfigError("dataset", f"mmbal prepare supports: {', '.join(RECIPES)} (got {p.dataset!r})")
    manifest_path = out / "manifest.json"
    if manifest_path.is_file():
        old = json.loads(manifest_path.read_text())
        if old.get("params") == asdict(p):
            log(f"{out} is already prepared with these params (manifest {_sha256(manifest_path)[:12]}); nothing to do")
            return old
        raise ConfigError("--out", f"{out} holds a preparation with other params {old.get('params')}; choose another --out")
    items = RECIPES[p.dataset][0](Path(raw), Path(lists or raw), p)
    work = out / ".work"
    work.mkdir(parents=True, exist_ok=True)
    stamp = work / "params.json"
    if stamp.is_file() and json.loads(stamp.read_text()) != asdict(p):
        # finished clips of an interrupted run with other params must not be mixed into this one
        raise ConfigError(
            "--out",
            f"{work} holds an unfinished prepare with other params {stamp.read_text()}; "
            "rerun with those params to resume, or delete that folder to start afresh",
        )
    atomic_write_text(stamp, json.dumps(asdict(p), sort_keys=True))
    todo = [it for it in items if not (work / f"{it['id']}.npz").is_file() and not (work / f"{it['id']}.skip.json").is_file()]
    log(f"prepare {p.dataset}: {len(items)} clips, {len(items) - len(todo)} already done, {len(todo)} to do")
    jobs = [(it, p, str(work)) for it in todo]
    if workers > 1 and len(jobs) > 1:
        with get_context("spawn").Pool(workers) as pool:
            results = pool.imap_unordered(_work_one, jobs, chunksize=4)
            _check(results)
    else:
        _check(map(_work_one, jobs))
    manifest = _assemble(out, work, items, p)
    atomic_write_text(manifest_path, json.dumps(manifest, indent=2, sort_keys=True))
    shutil.rmtree(work, ignore_errors=True)
    log(f"wrote {manifest_path}: {manifest['sizes']}, skipped {len(manifest['skipped'])}")
    return manifest


def _check(results) -> None:  # noqa: ANN001 - an iterator of _work_one results
    for r in results:
        if r.startswith("error:"):
            raise DataError(r[len("error:") :] + " (rerun with --on-error skip to skip bad clips; finished clips are kept)")
