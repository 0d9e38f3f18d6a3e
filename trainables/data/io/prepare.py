"""Writer of the prepared layout that :mod:`trainables.data.io.prepared` reads: a dataset's prepare
recipe (:mod:`trainables.data.io.recipes`) applied to a folder (``mmbal prepare``).

Resumable and idempotent: each clip is first written to ``OUT/.work/<key>.npz`` (or
``<key>.skip.json``) atomically, ``<key>`` a hash of its split and id; a rerun skips finished clips
(and refuses a ``.work`` made with other params). When every clip is done, one array per modality and
``samples.json`` are written under temporary names and renamed, and ``manifest.json`` (params,
library versions, sha256 of every file) comes last; then ``.work`` is removed. A finished folder with
the same params is left untouched; other params are refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
from collections.abc import Callable, Iterable
from dataclasses import asdict
from importlib import metadata
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from trainables.data.io.lists import SampleError
from trainables.data.io.prepared import FORMAT, VERSION
from trainables.data.io.recipes import Plan, PrepareParams, PrepareRecipe, RawClip
from trainables.errors import ConfigError, DataError
from trainables.reporting import atomic_write_text

DTYPES = {"feature": np.float16, "frames": np.uint8}


def recorded_params(dataset: str, recipe: PrepareRecipe, p: PrepareParams) -> dict[str, Any]:
    """The params as the manifest records them (and as a rerun must match them)."""
    return {"dataset": dataset, "profile": recipe.profile, **asdict(p)}


def work_key(clip: RawClip) -> str:
    """A file name for a clip's work files (ids may hold ``/``; a clip may be listed in two splits)."""
    return hashlib.sha256(f"{clip.split}\0{clip.id}".encode()).hexdigest()[:24]


def _work_one(args: tuple[RawClip, PrepareRecipe, PrepareParams, str]) -> str:
    clip, recipe, p, work = args
    base = Path(work) / work_key(clip)
    try:
        stored = recipe.decode(clip, p)
    except SampleError as err:
        if p.on_error == "raise":
            return f"error:{err}"
        atomic_write_text(
            base.with_suffix(".skip.json"), json.dumps({"id": clip.id, "kind": err.kind, "message": str(err)})
        )
        return "skipped"
    meta = {m: {**entry, "shape": list(arr.shape)} for m, (arr, entry) in stored.items()}
    tmp = base.with_name(f".{base.name}.tmp.npz")
    np.savez(tmp, **{m: arr for m, (arr, _) in stored.items()}, __meta__=np.array(json.dumps(meta)))
    os.replace(tmp, base.with_suffix(".npz"))  # the clip is done once this name exists
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
    for pkg in ("mmbal", "numpy", "torch", "torchvision", "torchaudio", "av", "pillow"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _array_shapes(work: Path, done: list[RawClip], specs: dict[str, dict[str, Any]]) -> dict[str, tuple[int, ...]]:
    """The shape of each modality's array, checking that every clip fits it (one line naming the clip)."""
    shapes: dict[str, tuple[int, ...]] = {}
    first: dict[str, tuple[str, list[int]]] = {}
    rows = dict.fromkeys(specs, 0)
    for clip in done:
        with np.load(work / f"{work_key(clip)}.npz") as z:
            meta = json.loads(str(z["__meta__"]))
        for m, spec in specs.items():
            shape = meta[m]["shape"]
            item = shape if spec["kind"] == "feature" else shape[1:]
            ref = first.setdefault(m, (clip.id, item))
            if item != ref[1]:
                hint = "; pass --size to store frames at one size" if spec["kind"] == "frames" else ""
                raise DataError(f"{clip.where}: {m} of {clip.id} has shape {item}, of {ref[0]} {ref[1]}{hint}")
            rows[m] += 1 if spec["kind"] == "feature" else shape[0]
    for m in specs:
        shapes[m] = (rows[m], *first[m][1])
    return shapes


def _write_arrays(out: Path, work: Path, done: list[RawClip], specs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """``<modality>.npy`` and ``samples.json`` from the finished clips (written aside, then renamed)."""
    shapes = _array_shapes(work, done, specs)
    arrays = {
        m: np.lib.format.open_memmap(out / f".{m}.npy.tmp", mode="w+", dtype=DTYPES[spec["kind"]], shape=shapes[m])
        for m, spec in specs.items()
    }
    cursor = dict.fromkeys(specs, 0)
    samples = []
    for clip in done:
        with np.load(work / f"{work_key(clip)}.npz") as z:
            meta = json.loads(str(z["__meta__"]))
            entries = {}
            for m, arr in arrays.items():
                x = z[m]
                n = 1 if specs[m]["kind"] == "feature" else len(x)
                arr[cursor[m] : cursor[m] + n] = x
                entries[m] = {"row": cursor[m], **{k: v for k, v in meta[m].items() if k != "shape"}}
                cursor[m] += n
        samples.append({"id": clip.id, "label": clip.label, "split": clip.split, "modalities": entries})
    for arr in arrays.values():
        arr.flush()
    arrays.clear()  # close the maps before renaming
    for m in specs:
        os.replace(out / f".{m}.npy.tmp", out / f"{m}.npy")
    atomic_write_text(out / "samples.json", json.dumps(samples))
    return samples


def _assemble(
    out: Path, work: Path, dataset: str, recipe: PrepareRecipe, plan: Plan, p: PrepareParams
) -> dict[str, Any]:
    done = [c for c in plan.clips if (work / f"{work_key(c)}.npz").is_file()]
    skipped = [json.loads(f.read_text()) for c in plan.clips if (f := work / f"{work_key(c)}.skip.json").is_file()]
    if not done:
        raise DataError(f"{out}: every clip was skipped; nothing to prepare")
    specs = recipe.modalities(p)
    samples = _write_arrays(out, work, done, specs)
    shapes = {m: list(np.load(out / f"{m}.npy", mmap_mode="r").shape) for m in specs}
    modalities = {
        m: {**spec, "file": f"{m}.npy", "dtype": np.dtype(DTYPES[spec["kind"]]).name, "shape": shapes[m],
            "sha256": sha256(out / f"{m}.npy")}
        for m, spec in specs.items()
    }  # fmt: skip
    return {
        "format": FORMAT,
        "version": VERSION,
        "dataset": dataset,
        "profile": recipe.profile,
        "class_names": list(plan.class_names),
        "params": recorded_params(dataset, recipe, p),
        "versions": versions(),
        "decoder": recipe.decoder,
        "split_source": plan.split_source,
        "notes": plan.notes,
        "sizes": {s: sum(1 for x in samples if x["split"] == s) for s in dict.fromkeys(x["split"] for x in samples)},
        "skipped": skipped,
        "samples_sha256": sha256(out / "samples.json"),
        "modalities": modalities,
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
    """Run (or resume) the preparation of ``dataset`` with ``recipe``; returns the manifest.

    Args:
        dataset: the registered name, recorded in the manifest (the reader checks it).
        recipe: one of the dataset's recipes (``DatasetSpec.recipes()``).
        raw: the folder to prepare; lists: folder of the official lists (default ``raw``).
        out: output folder; p: an instance of ``recipe.Params``.
        workers: decoding processes (clips are independent).
        log: progress lines.

    Raises:
        ConfigError: ``out`` holds a finished preparation, or an unfinished one, with other params.
        DataError: the folder is unusable, a clip is bad and ``on_error`` is ``raise``, or clips do not
            fit one array (frames of several sizes stored as decoded).
    """
    manifest_path = out / "manifest.json"
    recorded = recorded_params(dataset, recipe, p)
    if manifest_path.is_file():
        old = json.loads(manifest_path.read_text())
        if old.get("params") == recorded:
            log(f"{out} is already prepared with these params (manifest {sha256(manifest_path)[:12]}); nothing to do")
            return old
        raise ConfigError(
            "--out", f"{out} holds a preparation with other params {old.get('params')}; choose another --out"
        )
    plan = recipe.plan(Path(raw), Path(lists or raw), p)
    work = _start_work(out, recorded)
    todo = [
        c for c in plan.clips if not any((work / f"{work_key(c)}{ext}").is_file() for ext in (".npz", ".skip.json"))
    ]
    done = len(plan.clips) - len(todo)
    log(f"prepare {dataset} ({recipe.profile}): {len(plan.clips)} clips, {done} already done, {len(todo)} to do")
    jobs = [(c, recipe, p, str(work)) for c in todo]
    if workers > 1 and len(jobs) > 1:
        with get_context("spawn").Pool(workers) as pool:
            _check(pool.imap_unordered(_work_one, jobs, chunksize=4))
    else:
        _check(map(_work_one, jobs))
    manifest = _assemble(out, work, dataset, recipe, plan, p)
    atomic_write_text(manifest_path, json.dumps(manifest, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    log(f"wrote {manifest_path}: {manifest['sizes']}, skipped {len(manifest['skipped'])}")
    return manifest
