"""Writer of the prepared layout that :mod:`trainables.data.io.prepared` reads: a dataset's prepare
recipe applied to its raw download (``mmbal prepare``).

A dataset with a recipe sets ``DatasetSpec.recipe`` to a :class:`PrepareRecipe`: which clips the raw
folder holds and their split, how one clip's audio feature is computed and its stored shape, the
class names, and a ``Params`` dataclass with every knob that decides the stored bytes. Frames are
decoded the same way for every recipe: with PyAV at ``fps`` (the centre of each ``1 / fps``
interval, up to ``frames`` of them), resized to ``size`` x ``size`` and stored as uint8; audio
features are stored as float16.

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
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from importlib import metadata
from multiprocessing import get_context
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from trainables.data.io.lists import SampleError
from trainables.data.io.prepared import FORMAT, VERSION
from trainables.data.io.video import decode_frames
from trainables.errors import ConfigError, DataError
from trainables.params import check_bounds, knob
from trainables.reporting import atomic_write_text


@dataclass(frozen=True)
class PrepareParams:
    """Knobs of every recipe; a recipe's ``Params`` subclass adds its own. All of them are recorded in
    the manifest, and a rerun must match them. ``mmbal prepare`` offers each as ``--field-name``."""

    frames: int = knob(3, "frames stored per clip, 1 per second", ge=1)
    size: int = knob(224, "side of the stored square frames", ge=16)
    fps: float = knob(1.0, "frames decoded per second of video", gt=0)
    on_error: Literal["raise", "skip"] = knob("raise", "a bad clip stops, or is skipped and recorded")

    def __post_init__(self) -> None:
        check_bounds(self)  # also when built in code rather than from the command line


@dataclass(frozen=True)
class RawClip:
    """One clip to prepare: its id, class index, official split, raw files by role, and where it was
    found (for error messages)."""

    id: str
    label: int
    split: str
    where: str
    files: dict[str, str]


class PrepareRecipe:
    """A dataset's prepare hook (set an instance as ``DatasetSpec.recipe``).

    Attributes:
        Params: frozen dataclass, a subclass of :class:`PrepareParams`.
        class_names: one name per class index (recorded in the manifest).
        raw_layout: what ``--raw`` holds, for the command's help.
        lists_layout: what ``--lists`` holds, for the command's help.
    """

    Params: ClassVar[type[PrepareParams]] = PrepareParams
    class_names: ClassVar[list[str]] = []
    raw_layout: ClassVar[str] = ""
    lists_layout: ClassVar[str] = ""

    def clips(self, raw: Path, lists: Path, p: Any) -> tuple[list[RawClip], str]:  # pragma: no cover - abstract
        """The clips of a raw folder, in stored order, and where their split came from.

        Raises:
            DataError: the raw folder or a list is unusable.
        """
        raise NotImplementedError

    def audio_shape(self, p: Any) -> tuple[int, int]:  # pragma: no cover - abstract
        """``[F, T]`` of the stored audio feature."""
        raise NotImplementedError

    def audio(self, clip: RawClip, p: Any) -> np.ndarray:  # pragma: no cover - abstract
        """The ``[F, T]`` audio feature of one clip (raises :class:`SampleError`)."""
        raise NotImplementedError

    def frames(self, clip: RawClip, p: Any) -> np.ndarray:
        """Up to ``p.frames`` uint8 frames ``[n, size, size, 3]`` of ``clip.files["video"]``."""
        return decode_frames(Path(clip.files["video"]), p.frames, p.fps, p.size, clip.where)

    def decode(self, clip: RawClip, p: Any) -> dict[str, np.ndarray]:
        """What is stored for one clip (raises :class:`SampleError`)."""
        audio = self.audio(clip, p).astype(np.float16)
        return {"audio": audio, "frames": self.frames(clip, p)}


def recorded_params(dataset: str, p: PrepareParams) -> dict[str, Any]:
    """The params as the manifest records them (and as a rerun must match them)."""
    return {"dataset": dataset, **asdict(p)}


def _work_one(args: tuple[RawClip, PrepareRecipe, PrepareParams, str]) -> str:
    clip, recipe, p, work = args
    base = Path(work) / clip.id
    try:
        arrays = recipe.decode(clip, p)
    except SampleError as err:
        if p.on_error == "raise":
            return f"error:{err}"
        atomic_write_text(base.with_suffix(".skip.json"), json.dumps({"kind": err.kind, "message": str(err)}))
        return "skipped"
    tmp = base.with_name(f".{clip.id}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, base.with_suffix(".npz"))
    return "done"


def _check(results: Iterable[str]) -> None:
    for r in results:
        if r.startswith("error:"):
            raise DataError(
                r[len("error:") :] + " (rerun with --on-error skip to skip bad clips; finished clips are kept)"
            )


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def versions() -> dict[str, str]:
    """Versions of the libraries that decide the prepared bytes."""
    out = {"python": platform.python_version()}
    for pkg in ("mmbal", "numpy", "torch", "torchaudio", "av", "pillow"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _write_arrays(
    out: Path, work: Path, done: list[RawClip], audio_shape: tuple[int, ...], p: PrepareParams
) -> list[dict]:
    """``audio.npy``, ``frames.npy`` and ``samples.json`` from the finished clips (renamed into place)."""
    tmp_a, tmp_f = out / ".audio.npy.tmp", out / ".frames.npy.tmp"
    audio = np.lib.format.open_memmap(tmp_a, mode="w+", dtype=np.float16, shape=audio_shape)
    frames = np.lib.format.open_memmap(tmp_f, mode="w+", dtype=np.uint8, shape=(len(done), p.frames, p.size, p.size, 3))
    samples = []
    for i, clip in enumerate(done):
        with np.load(work / f"{clip.id}.npz") as z:
            audio[i] = z["audio"]
            n = len(z["frames"])
            frames[i, :n] = z["frames"]
        samples.append({"id": clip.id, "label": clip.label, "split": clip.split, "frames": n})
    audio.flush()
    frames.flush()
    del audio, frames
    os.replace(tmp_a, out / "audio.npy")
    os.replace(tmp_f, out / "frames.npy")
    atomic_write_text(out / "samples.json", json.dumps(samples))
    return samples


def _assemble(
    out: Path,
    work: Path,
    dataset: str,
    recipe: PrepareRecipe,
    clips: list[RawClip],
    split_source: str,
    p: PrepareParams,
) -> dict[str, Any]:
    done = [c for c in clips if (work / f"{c.id}.npz").is_file()]
    skipped = [
        json.loads((work / f"{c.id}.skip.json").read_text()) for c in clips if (work / f"{c.id}.skip.json").is_file()
    ]
    if not done:
        raise DataError(f"{out}: every clip was skipped; nothing to prepare")
    a_shape = (len(done), *recipe.audio_shape(p))
    v_shape = [len(done), p.frames, p.size, p.size, 3]
    samples = _write_arrays(out, work, done, a_shape, p)
    return {
        "format": FORMAT,
        "version": VERSION,
        "dataset": dataset,
        "class_names": list(recipe.class_names),
        "params": recorded_params(dataset, p),
        "versions": versions(),
        "decoder": "PyAV (FFmpeg)",
        "split_source": split_source,
        "sizes": {s: sum(1 for x in samples if x["split"] == s) for s in ("train", "test")},
        "skipped": skipped,
        "samples_sha256": sha256(out / "samples.json"),
        "arrays": {
            "audio": {
                "file": "audio.npy",
                "dtype": "float16",
                "shape": list(a_shape),
                "sha256": sha256(out / "audio.npy"),
            },
            "visual": {"file": "frames.npy", "dtype": "uint8", "shape": v_shape, "sha256": sha256(out / "frames.npy")},
        },
    }


def _start_work(out: Path, recorded: dict[str, Any]) -> Path:
    """``OUT/.work``, stamped with the params; an unfinished one made with other params is refused."""
    work = out / ".work"
    work.mkdir(parents=True, exist_ok=True)
    stamp = work / "params.json"
    if stamp.is_file() and json.loads(stamp.read_text()) != recorded:
        # finished clips of an interrupted run with other params must not be mixed into this one
        raise ConfigError(
            "--out",
            f"{work} holds an unfinished prepare with other params {stamp.read_text()}; "
            "rerun with those params to resume, or delete that folder to start afresh",
        )
    atomic_write_text(stamp, json.dumps(recorded, sort_keys=True))
    return work


def prepare(
    dataset: str,
    recipe: PrepareRecipe,
    raw: Path,
    out: Path,
    p: PrepareParams,
    lists: Path | None = None,
    workers: int = 1,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run (or resume) the preparation of ``dataset`` with its ``recipe``; returns the manifest.

    Args:
        dataset: the registered name, recorded in the manifest (the reader checks it).
        recipe: the dataset's :class:`PrepareRecipe`.
        raw: the raw download; lists: folder of the official lists (default ``raw``).
        out: output folder; p: an instance of ``recipe.Params``.
        workers: decoding processes (clips are independent).
        log: progress lines.

    Raises:
        ConfigError: ``out`` holds a finished preparation, or an unfinished one, with other params.
        DataError: the raw folder is unusable, or a clip is bad and ``on_error`` is ``raise``.
    """
    manifest_path = out / "manifest.json"
    recorded = recorded_params(dataset, p)
    if manifest_path.is_file():
        old = json.loads(manifest_path.read_text())
        if old.get("params") == recorded:
            log(f"{out} is already prepared with these params (manifest {sha256(manifest_path)[:12]}); nothing to do")
            return old
        raise ConfigError(
            "--out", f"{out} holds a preparation with other params {old.get('params')}; choose another --out"
        )
    clips, split_source = recipe.clips(Path(raw), Path(lists or raw), p)
    work = _start_work(out, recorded)
    todo = [c for c in clips if not (work / f"{c.id}.npz").is_file() and not (work / f"{c.id}.skip.json").is_file()]
    log(f"prepare {dataset}: {len(clips)} clips, {len(clips) - len(todo)} already done, {len(todo)} to do")
    jobs = [(c, recipe, p, str(work)) for c in todo]
    if workers > 1 and len(jobs) > 1:
        with get_context("spawn").Pool(workers) as pool:
            _check(pool.imap_unordered(_work_one, jobs, chunksize=4))
    else:
        _check(map(_work_one, jobs))
    manifest = _assemble(out, work, dataset, recipe, clips, split_source, p)
    atomic_write_text(manifest_path, json.dumps(manifest, indent=2, sort_keys=True))
    shutil.rmtree(work, ignore_errors=True)
    log(f"wrote {manifest_path}: {manifest['sizes']}, skipped {len(manifest['skipped'])}")
    return manifest
