"""Driver-side writer of the results folder (see :mod:`orchestrator.results`) and of W&B curves.

The same object serves the three execution modes: the local runner calls it directly, the Tune
callback calls it from the Ray driver. It makes a retried or resumed trial end with every epoch's row
exactly once: a row for epoch ``e`` drops any stored rows for epochs ``>= e`` (they came from an
attempt that died after its last checkpoint) before it is appended.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from orchestrator.results import read_jsonl, trial_dir, write_config, write_summary
from orchestrator.tracking import Tracker
from trainables.reporting import atomic_write_text, dumps

# what a trial sends besides the schema metrics; kept out of metrics.jsonl
SUMMARY_KEY = "_summary"
PRIVATE_PREFIX = "_"


class ResultsWriter:
    """Writes ``trials/<trial_id>/{config.json, metrics.jsonl, summary.json}`` and feeds the tracker.

    Args:
        results_dir: ``results/<experiment>``.
        experiment: the experiment name (recorded in each config's ``_meta``).
        tracker: W&B (or the no-op tracker).
    """

    def __init__(self, results_dir: str | Path, experiment: str, tracker: Tracker | None = None) -> None:
        self.results_dir = Path(results_dir)
        self.experiment = experiment
        self.tracker = tracker or Tracker()
        self.pending: dict[str, dict[str, Any]] = {}

    def path(self, trial_id: str) -> Path:
        return trial_dir(self.results_dir, trial_id)

    def start(self, trial_id: str, config: dict[str, Any]) -> None:
        """A trial (re)starts: its config is (re)written; a summary from an older config is dropped."""
        d = self.path(trial_id)
        d.mkdir(parents=True, exist_ok=True)
        old = d / "config.json"
        if old.exists():
            stored = {k: v for k, v in json.loads(old.read_text()).items() if k != "_meta"}
            if stored != json.loads(dumps(config)):  # PBT changed its hyperparameters
                (d / "summary.json").unlink(missing_ok=True)
        write_config(d, config, trial_id, self.experiment)
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
        """The trial ended; ``summary.json`` is written only if it trained to its last epoch."""
        summary = summary if summary is not None else self.pending.pop(trial_id, None)
        if summary is not None:
            write_summary(self.path(trial_id), summary)
        self.tracker.finish(trial_id, ok=summary is not None)
        return summary is not None

    def error(self, trial_id: str) -> None:
        self.pending.pop(trial_id, None)
        self.tracker.finish(trial_id, ok=False)

    def close(self) -> None:
        self.tracker.close()

    def write_sweep(self, text: str) -> None:
        atomic_write_text(self.results_dir / "sweep.yaml", text)
