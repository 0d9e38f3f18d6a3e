"""How a trial reports: one small interface, a JSONL writer locally, Ray's reporter in Tune/Train.

``report(metrics, checkpoint)`` is called once per epoch; ``checkpoint`` is the full trial state
(a dict for ``torch.save``) on checkpoint epochs and ``None`` otherwise. ``restore()`` returns the
latest saved state, or ``None`` for a fresh start.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any, Protocol

import torch

from trainables.errors import DataError

# a trial state holds at least these keys (trainables.loop._state)
STATE_KEYS = ("epoch", "config", "model", "history")


class Reporter(Protocol):
    def restore(self) -> dict[str, Any] | None: ...

    def report(self, metrics: dict[str, float], checkpoint: dict[str, Any] | None) -> None: ...


def current_umask() -> int:
    """The process umask, read without changing it where Linux shows it (``/proc/self/status``);
    elsewhere set and restored at once."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temp_beside(path: Path, suffix: str = "") -> tuple[int, str]:
    """A temporary file next to ``path`` for an atomic replace, with the permissions a plain ``open``
    would give (``0o666`` minus the umask): ``mkstemp`` makes files 0600, which colleagues reading a
    shared results folder cannot open."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.fchmod(fd, 0o666 & ~current_umask())
    return fd, tmp


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write via a temporary file and ``os.replace`` so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_beside(path)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_beside(path)
    os.close(fd)
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_state(path: str | os.PathLike) -> dict[str, Any]:
    """A trial state saved by mmbal, read with ``weights_only=True``: tensors and plain containers only.

    A checkpoint may come from a shared folder or bucket: a pickle that names any other object (code to
    run) is refused, never executed. Anything that is not an mmbal trial state is a :class:`DataError`
    naming the file.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # arbitrary bytes fail in many ways (pickle, zip, struct, EOF, ...)
        raise DataError(f"{path}: not a valid mmbal checkpoint ({_load_reason(exc)})") from None
    missing = [k for k in STATE_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise DataError(f"{path}: not a valid mmbal checkpoint (no {', '.join(missing)} in it)")
    return state


def _load_reason(exc: BaseException) -> str:
    text = str(exc)
    named = re.search(r"GLOBAL (\S+)", text)
    if "Weights only load failed" in text and named:
        return f"it names GLOBAL {named.group(1)}, not only tensors and plain containers; refused, nothing ran"
    if "WeightsUnpickler error:" in text:  # torch's long advice around a one-line cause
        text = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation", 1)[0]
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return f"unreadable: {first[:160]}"


def json_safe(value: Any) -> Any:
    """Plain JSON: NaN/inf become strings, tensors and numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def dumps(obj: Any) -> str:
    return json.dumps(json_safe(obj), sort_keys=True)


def newest_intact(ckpts: list[Path]) -> dict[str, Any] | None:
    """The state of the newest checkpoint that loads; each one skipped is named on stderr.

    Raises:
        DataError: there are checkpoints but none of them loads.
    """
    errors = []
    for path in reversed(ckpts):
        try:
            state = load_state(path)
        except DataError as exc:
            errors.append(str(exc))
            continue
        for line in errors:
            print(f"mmbal: skipped a checkpoint: {line}; resuming from {path.name}", file=sys.stderr)
        return state
    if errors:
        raise DataError(errors[0] + (f" (and {len(errors) - 1} older ones)" if len(errors) > 1 else ""))
    return None


class MemoryReporter:
    """Keeps the rows and the last checkpoint in memory: ``run_trial`` from a script or notebook
    (ablations) without writing a run folder. Nothing to resume from."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.state: dict[str, Any] | None = None

    def restore(self) -> dict[str, Any] | None:
        return None

    def report(self, metrics: dict[str, float], checkpoint: dict[str, Any] | None) -> None:
        self.rows.append(metrics)
        self.state = checkpoint or self.state


class JsonlReporter:
    """Local reporter: ``OUT/metrics.jsonl`` (one line per epoch) and ``OUT/checkpoints/*.pt``.

    On restore, ``metrics.jsonl`` is rewritten from the history stored in the checkpoint, so a run
    killed between saving a checkpoint and appending its line still ends with every line once.
    """

    def __init__(self, out_dir: str | os.PathLike, keep: int = 2) -> None:
        self.out = Path(out_dir)
        self.ckpt_dir = self.out / "checkpoints"
        self.metrics_path = self.out / "metrics.jsonl"
        self.keep = keep
        self._latest: tuple[dict[str, Any] | None] | None = None

    def checkpoints(self) -> list[Path]:
        return sorted(self.ckpt_dir.glob("epoch_*.pt"))

    def latest_state(self) -> dict[str, Any] | None:
        """The newest intact checkpoint's state (read once); a corrupt newer one is skipped, and said so."""
        if self._latest is None:
            self._latest = (newest_intact(self.checkpoints()),)
        return self._latest[0]

    def restore(self) -> dict[str, Any] | None:
        state = self.latest_state()
        self._latest = None  # a later restore (a retry) reads the disk again
        if state is None:
            if self.metrics_path.exists():
                self.metrics_path.unlink()  # lines without a checkpoint cannot be resumed from
            return None
        atomic_write_text(self.metrics_path, "".join(dumps(r) + "\n" for r in state["history"]))
        return state

    def report(self, metrics: dict[str, float], checkpoint: dict[str, Any] | None) -> None:
        if checkpoint is not None:
            atomic_torch_save(checkpoint, self.ckpt_dir / f"epoch_{int(metrics['epoch']):04d}.pt")
            for old in self.checkpoints()[: -self.keep]:
                old.unlink()
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.metrics_path, "a") as fh:
            fh.write(dumps(metrics) + "\n")
