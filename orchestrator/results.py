"""The results folder: the one on-disk contract between sweeps, ``mmbal train`` and reports.

```
results/<experiment>/
  sweep.yaml                      # the sweep as run (after --set), for sweeps
  trials/<trial_id>/config.json   # resolved trial config + "_meta": {trial_id, config_id, experiment}
  trials/<trial_id>/metrics.jsonl # one JSON row per epoch, schema keys (epoch, train/..., val/...)
  trials/<trial_id>/summary.json  # written last and atomically, only when the trial completed
```

A trial without ``summary.json`` did not finish (running, stopped early or failed). Trials that
share a ``config_id`` differ only in their seed: reports aggregate them (mean ± std over seeds).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainables.methods import METHODS
from trainables.reporting import atomic_write_text, dumps

SEED_KEYS = ("seed",)
# keys that do not change what is trained: excluded from the config identity
NON_IDENTITY_KEYS = ("seed", "data_root", "device", "checkpoint", "_meta")


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
        return self.summary is not None

    @property
    def method(self) -> str:
        """The method's name, with its variant (``unimodal:pix``) where the method declares one."""
        name = self.config.get("method", "?")
        variant = METHODS.get(name).variant_param if name in METHODS else None
        value = self.config.get("params", {}).get(variant) if variant else None
        return f"{name}:{value}" if value else name

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", 0))

    @property
    def config_id(self) -> str:
        return self.config.get("_meta", {}).get("config_id") or config_id(self.config)


def trial_dir(results_dir: str | Path, trial_id: str) -> Path:
    return Path(results_dir) / "trials" / trial_id


def write_config(path: Path, config: dict[str, Any], trial_id: str, experiment: str) -> None:
    meta = {"trial_id": trial_id, "config_id": config_id(config), "experiment": experiment}
    atomic_write_text(path / "config.json", json.dumps(json.loads(dumps({**config, "_meta": meta})), indent=2, sort_keys=True))


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    atomic_write_text(path / "summary.json", json.dumps(json.loads(dumps(summary)), indent=2, sort_keys=True))


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
