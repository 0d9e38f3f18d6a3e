"""List files, safe paths, bad-data policy and the lazily loading dataset shared by the real datasets.

Every problem with a sample (a row that does not parse, a label outside the class list, a path
that escapes the data root, a missing or corrupt file) is a :class:`SampleError` naming the file
and the list row. ``data.on_error: raise`` turns the first one into a :class:`DataError`;
``skip`` drops the sample and counts it per kind in ``DataBundle.info["skipped"]``. Nothing is
dropped silently: every skip is counted and logged.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from trainables.errors import DataError

log = logging.getLogger("mmbal.data")
KINDS = ("parse", "label", "path", "missing", "corrupt", "duplicate")


class SampleError(DataError):
    """A bad sample; ``kind`` is one of :data:`KINDS` (the counter ``on_error: skip`` increments)."""

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        super().__init__(message)


@dataclass(frozen=True)
class Row:
    """One non-empty line of a list file: its fields and where it came from (for error messages)."""

    source: str
    line: int
    fields: tuple[str, ...]

    @property
    def where(self) -> str:
        return f"{self.source}, line {self.line}"


@dataclass
class Sample:
    """One resolved sample: id, class index, files per modality, and the row it came from."""

    id: str
    label: int
    where: str
    files: dict[str, Any] = field(default_factory=dict)


def read_rows(path: Path, split: Callable[[str], list[str]], min_fields: int) -> Iterator[Row | SampleError]:
    """Yield each non-blank line of ``path`` as a :class:`Row`, or a ``parse`` error for a short row.

    The file is read as UTF-8 with an optional BOM (Windows-made CSVs carry one).

    Raises:
        DataError: the list file itself is missing, empty or not UTF-8 text.
    """
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{path}: list file not found") from None
    except (UnicodeDecodeError, OSError) as exc:
        raise DataError(f"{path}: cannot read list file ({exc})") from None
    if not text.strip():
        raise DataError(f"{path}: list file is empty (expected one sample per line)")
    for i, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        parts = [p.strip() for p in split(raw.strip())]
        if len(parts) < min_fields or not all(parts[:min_fields]):
            yield SampleError("parse", f"{path}, line {i}: cannot parse {raw.strip()!r} (expected {min_fields} fields)")
        else:
            yield Row(str(path), i, tuple(parts))


class SplitRows:
    """Picklable row splitter: on ``sep``, or on whitespace when ``sep`` is None."""

    def __init__(self, sep: str | None) -> None:
        self.sep = sep

    def __call__(self, line: str) -> list[str]:
        return line.split(self.sep) if self.sep else line.split()


def safe_path(root: Path, *parts: str, where: str) -> Path:
    """``root/parts...``, refusing absolute parts and ``..`` that lead outside ``root``."""
    base = os.path.realpath(root)
    full = os.path.realpath(os.path.join(base, *parts))
    if os.path.commonpath([base, full]) != base:
        raise SampleError("path", f"{where}: path {os.path.join(*parts)!r} escapes the data root {root}")
    return Path(full)


def require(path: Path, where: str, is_dir: bool = False) -> Path:
    """Raise a ``missing`` error unless ``path`` exists (as a folder when ``is_dir``)."""
    ok = path.is_dir() if is_dir else path.is_file()
    if not ok:
        raise SampleError("missing", f"{where}: {'folder' if is_dir else 'file'} {path} not found")
    return path


class Issues:
    """Applies ``on_error`` to sample errors and counts what was skipped, per kind and split."""

    def __init__(self, on_error: str) -> None:
        self.on_error = on_error
        self.counts: dict[str, dict[str, int]] = {}
        self.examples: list[str] = []

    def handle(self, err: SampleError, split: str) -> None:
        if self.on_error == "raise":
            raise DataError(str(err)) from None
        per = self.counts.setdefault(split, {})
        per[err.kind] = per.get(err.kind, 0) + 1
        if len(self.examples) < 20:
            self.examples.append(str(err))
        log.warning("skipped sample: %s", err)

    @property
    def total(self) -> int:
        return sum(sum(c.values()) for c in self.counts.values())

    def info(self) -> dict[str, Any]:
        return {
            "on_error": self.on_error,
            "skipped_total": self.total,
            "skipped": self.counts,
            "skipped_examples": self.examples,
        }


def collect(
    rows: Iterator[Row | SampleError], resolve: Callable[[Row], Sample], issues: Issues, split: str
) -> list[Sample]:
    """Resolve each row to a :class:`Sample`; bad rows go through ``issues``; duplicate ids are errors."""
    out: list[Sample] = []
    seen: dict[str, str] = {}
    for row in rows:
        try:
            if isinstance(row, SampleError):
                raise row
            s = resolve(row)
            if s.id in seen:
                raise SampleError("duplicate", f"{row.where}: sample {s.id!r} already listed at {seen[s.id]}")
            seen[s.id] = row.where
            out.append(s)
        except SampleError as err:
            issues.handle(err, split)
    return out


Loader = Callable[[Sample, bool], torch.Tensor]


class LazyDataset(Dataset):
    """Map-style dataset that decodes each sample's files on access.

    Args:
        samples: resolved samples of this split.
        loaders: modality -> ``f(sample, train) -> Tensor``; may raise :class:`SampleError`.
        train: training-time behaviour (random frame picks, augmentation).
    """

    def __init__(self, samples: list[Sample], loaders: dict[str, Loader], train: bool) -> None:
        self.samples = samples
        self.loaders = loaders
        self.train = train

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, i: int) -> dict[str, torch.Tensor]:
        s = self.samples[i]
        return {m: f(s, self.train) for m, f in self.loaders.items()}

    def __getitem__(self, i: int) -> dict[str, Any]:
        try:
            inputs = self.load(i)
        except SampleError as err:  # a file went bad after build (or was never verified)
            raise DataError(
                f"{err} (set data.on_error=skip to check every sample up front and skip bad ones)"
            ) from None
        return {"inputs": inputs, "label": torch.tensor(self.samples[i].label), "index": i}

    def subset(self, rows: list[int], train: bool) -> LazyDataset:
        return LazyDataset([self.samples[r] for r in rows], self.loaders, train)


def verify(samples: list[Sample], loaders: dict[str, Loader], issues: Issues, split: str) -> list[Sample]:
    """Decode every sample once (``on_error: skip``) so that corrupt files are known and counted before training."""
    probe = LazyDataset(samples, loaders, train=False)

    def check(i: int) -> SampleError | None:
        try:
            probe.load(i)
        except SampleError as err:
            return err
        return None

    # decoding (PIL, numpy, torch STFT) releases the GIL for most of its time: a few threads help
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        errors = list(pool.map(check, range(len(samples))))
    good = []
    for s, err in zip(samples, errors, strict=True):
        if err is None:
            good.append(s)
        else:
            issues.handle(err, split)
    return good
