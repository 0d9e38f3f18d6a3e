"""The results folder: the one on-disk contract between sweeps, ``mmbal train`` and reports.

```
results/<experiment>/
  sweep.yaml                      # the sweep as run (after --set), for sweeps
  machine.json                    # the machine the sweep (re)started on (CPU, torch): report --readme
  trials/<trial_id>/config.json   # resolved trial config + "_meta": {trial_id, config_id, experiment, method}
  trials/<trial_id>/metrics.jsonl # one JSON row per epoch, schema keys (epoch, train/..., val/...)
  trials/<trial_id>/summary.json  # written last and atomically, when the trial completed or diverged
```

A trial without ``summary.json`` did not finish (running, stopped early or failed); one whose
summary says ``status: diverged`` stopped at a non-finite loss and counts as failed, never in averages. Trials that
share a ``config_id`` differ only in their seed: reports aggregate them (mean ± std over seeds).
``_meta.method`` is the trial's leaderboard row (``unimodal:pix`` for a method with a variant), so
reading a results folder needs no method registry.

:class:`ResultsWriter` writes the folder from the driver, in all three execution modes: the local
runner calls it directly, the Tune callback from the Ray driver. It makes a retried or resumed trial
end with every epoch's row exactly once: a row for epoch ``e`` drops any stored rows for epochs
``>= e`` (they came from an attempt that died after its last checkpoint) before it is appended.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.tracking import Tracker
from trainables.reporting import atomic_write_text, dumps

# keys that do not change what is trained: excluded from the config identity
NON_IDENTITY_KEYS = ("seed", "data_root", "device", "checkpoint", "_meta")
# what a trial sends besides the schema metrics; kept out of metrics.jsonl
SUMMARY_KEY = "_summary"
PRIVATE_PREFIX = "_"


def config_id(config: dict[str, Any]) -> str:
    """Short stable id of a resolved config, ignoring the seed and where/how it runs."""
    core = {k: v for k, v in config.items() if k not in NON_IDENTITY_KEYS}
    return hashlib.sha1(dumps(core).encode()).hexdigest()[:10]


@dataclass
class TrialRecord:
    """One trial as read back from disk."""

    trial_id: str
    path: Path
    config: dict[str, Any]
    history: list[dict[str, Any]]
    summary: dict[str, Any] | None

    @property
    def completed(self) -> bool:
        """Trained to its last epoch (a diverged trial has a summary too, with ``status: diverged``)."""
        return self.summary is not None and self.summary.get("status", "completed") == "completed"

    @property
    def diverged(self) -> bool:
        return self.summary is not None and self.summary.get("status") == "diverged"

    @property
    def method(self) -> str:
        """The leaderboard row: the method, with its variant (``unimodal:pix``) where it has one.

        Read from ``_meta.method``; a folder written before that key existed falls back to the bare
        method name (variants of one method then count as its configs).
        """
        return self.config.get("_meta", {}).get("method") or self.config.get("method", "?")

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", 0))

    @property
    def config_id(self) -> str:
        return self.config.get("_meta", {}).get("config_id") or config_id(self.config)


def trial_dir(results_dir: str | Path, trial_id: str) -> Path:
    return Path(results_dir) / "trials" / trial_id


def write_json(path: Path, obj: Any) -> None:
    """Indented, sorted, JSON-safe (NaN as ``"nan"``) and atomic: a reader never sees half a file."""
    atomic_write_text(path, json.dumps(json.loads(dumps(obj)), indent=2, sort_keys=True))


def write_config(
    path: Path,
    config: dict[str, Any],
    trial_id: str,
    experiment: str,
    method: str | None = None,
    name: str | None = None,
) -> None:
    """``config.json`` with its ``_meta`` block; ``method`` is the leaderboard row (default: ``config["method"]``),
    ``name`` the readable trial name (``<method>[-<varied params>]-s<seed>``, W&B's run name)."""
    meta = {"trial_id": trial_id, "config_id": config_id(config), "experiment": experiment}
    meta["method"] = method or config.get("method", "?")
    if name:
        meta["name"] = name
    write_json(path / "config.json", {**config, "_meta": meta})


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    write_json(path / "summary.json", summary)


def summary_status(trial_path: Path) -> str | None:
    """``completed`` or ``diverged`` from ``summary.json``; ``None`` while the trial has no summary."""
    path = trial_path / "summary.json"
    if not path.exists():
        return None
    return str(json.loads(path.read_text()).get("status", "completed"))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a torn last line of an interrupted write; everything before it is valid
    return rows


def iter_trials(results_dir: str | Path) -> Iterator[TrialRecord]:
    """Every trial folder under ``results_dir/trials`` (sorted by id)."""
    root = Path(results_dir) / "trials"
    for d in sorted(p for p in root.glob("*") if p.is_dir()):
        cfg_path = d / "config.json"
        if not cfg_path.exists():
            continue
        summary_path = d / "summary.json"
        yield TrialRecord(
            trial_id=d.name,
            path=d,
            config=json.loads(cfg_path.read_text()),
            history=read_jsonl(d / "metrics.jsonl"),
            summary=json.loads(summary_path.read_text()) if summary_path.exists() else None,
        )


class ResultsWriter:
    """Writes ``trials/<trial_id>/{config.json, metrics.jsonl, summary.json}`` and feeds the tracker.

    Args:
        results_dir: ``results/<experiment>``.
        experiment: the experiment name (recorded in each config's ``_meta``).
        tracker: W&B (or the no-op tracker).
        namer: ``namer(config, method) -> name``, the readable trial name recorded as ``_meta.name``
            (:class:`orchestrator.sweep.naming.TrialNamer`); without it, no name is recorded.
    """

    def __init__(
        self,
        results_dir: str | Path,
        experiment: str,
        tracker: Tracker | None = None,
        namer: Callable[[dict[str, Any], str], str] | None = None,
    ) -> None:
        self.results_dir = Path(results_dir)
        self.experiment = experiment
        self.tracker = tracker or Tracker()
        self.namer = namer
        self.pending: dict[str, dict[str, Any]] = {}

    def path(self, trial_id: str) -> Path:
        return trial_dir(self.results_dir, trial_id)

    def start(self, trial_id: str, config: dict[str, Any], method: str | None = None) -> None:
        """A trial (re)starts: its config is (re)written; a summary from an older config is dropped.

        ``method`` is the trial's leaderboard row (``orchestrator.sweep.method_label``).
        """
        d = self.path(trial_id)
        d.mkdir(parents=True, exist_ok=True)
        old = d / "config.json"
        if old.exists():
            stored = {k: v for k, v in json.loads(old.read_text()).items() if k != "_meta"}
            if stored != json.loads(dumps(config)):  # PBT changed its hyperparameters
                (d / "summary.json").unlink(missing_ok=True)
        name = self.namer(config, method or config.get("method", "?")) if self.namer else None
        write_config(d, config, trial_id, self.experiment, method, name)
        self.tracker.start(trial_id, json.loads((d / "config.json").read_text()))

    def result(self, trial_id: str, metrics: dict[str, Any]) -> None:
        """One epoch's row; the trial's summary may ride along under ``_summary`` (JSON text)."""
        if SUMMARY_KEY in metrics:
            self.pending[trial_id] = json.loads(metrics[SUMMARY_KEY])
        row = {k: v for k, v in metrics.items() if not k.startswith(PRIVATE_PREFIX)}
        self.append_row(trial_id, row)
        self.tracker.log(trial_id, row)

    def append_row(self, trial_id: str, row: dict[str, Any]) -> None:
        path = self.path(trial_id) / "metrics.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        epoch = row.get("epoch")
        rows = read_jsonl(path)
        if epoch is not None and any(r.get("epoch", 0) >= epoch for r in rows):
            kept = [r for r in rows if r.get("epoch", 0) < epoch] + [row]
            atomic_write_text(path, "".join(dumps(r) + "\n" for r in kept))
            return
        with open(path, "a") as fh:
            fh.write(dumps(row) + "\n")

    def complete(self, trial_id: str, summary: dict[str, Any] | None = None) -> bool:
        """The trial ended; ``summary.json`` is written only if it trained to its last epoch or diverged."""
        summary = summary if summary is not None else self.pending.pop(trial_id, None)
        if summary is not None:
            write_summary(self.path(trial_id), summary)
            # W&B's summary is summary.json as written (NaN as "nan"), not the last epoch's row
            summary = json.loads((self.path(trial_id) / "summary.json").read_text())
        self.tracker.finish(trial_id, ok=summary is not None, summary=summary)
        return summary is not None

    def error(self, trial_id: str) -> None:
        self.pending.pop(trial_id, None)
        self.tracker.finish(trial_id, ok=False)

    def close(self) -> None:
        self.tracker.close()

    def write_sweep(self, text: str) -> None:
        atomic_write_text(self.results_dir / "sweep.yaml", text)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 0.1}}`` -> ``{"optim.lr": 0.1}`` (an empty dict stays a value)."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
