"""Resuming after ``kill -9`` of the sweep driver: Tune's own state may have been cut mid-write.

Tune writes its state files (``experiment_state-*.json``, ``basic-variant-state-*.json``, ...) into
the experiment folder by copying them there, not atomically: a driver killed during that copy leaves
an empty or truncated file, and ``Tuner.restore`` then logs an ERROR traceback, starts the experiment
over and fails. mmbal's results folder knows which trials finished (``summary.json``), so instead:
the cut Tune state is set aside (``<experiment>.cut``), the unfinished trials' folders are dropped,
and a fresh Tune run trains the unfinished trials from their start. Finished trials are kept as
they are. One line on stderr says so.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import sys
from pathlib import Path

from orchestrator.results import ResultsWriter, iter_trials
from orchestrator.sweep import Sweep
from trainables.reporting import dumps

_STAMP = re.compile(r"-\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d")


def cut_tune_state(experiment_path: str) -> str | None:
    """The newest Tune state file of a local experiment folder that does not load (empty, cut), else None."""
    root = Path(experiment_path)
    if "://" in experiment_path or not root.is_dir():
        return None  # remote storage: Tune's own checks only
    groups: dict[str, list[Path]] = {}
    for p in root.iterdir():
        if p.is_file() and p.suffix in (".json", ".pkl") and not p.name.startswith("."):
            groups.setdefault(_STAMP.sub("", p.name), []).append(p)
    for files in groups.values():
        newest = max(files, key=lambda p: p.name)
        if not _loads(newest.read_bytes()):
            return newest.name
    return None


def _loads(data: bytes) -> bool:
    if not data:
        return False
    import ray.cloudpickle as cloudpickle  # Tune's own format for most of these files

    try:
        cloudpickle.loads(data)
        return True
    except Exception:  # a cut pickle fails in many ways
        pass
    try:
        json.loads(data)
        return True
    except ValueError:
        return False


def restart_unfinished(sweep: Sweep, writer: ResultsWriter, experiment_path: str, cut: str) -> Sweep:
    """Set the cut Tune state aside and return ``sweep`` reduced to the trials without a summary."""
    root = Path(experiment_path)
    aside = root.with_name(root.name + ".cut")
    n = 1
    while aside.exists():
        n += 1
        aside = root.with_name(f"{root.name}.cut{n}")
    root.rename(aside)
    finished = set()
    for t in iter_trials(writer.results_dir):
        if t.summary is not None:
            finished.add(dumps({k: v for k, v in t.config.items() if k != "_meta"}))
        else:
            shutil.rmtree(t.path)  # trained again from its start, under a new trial id
    todo = copy.copy(sweep)
    todo.trials = [p for p in sweep.trials if dumps(p.config) not in finished] if sweep.trials else []
    left = len(todo.trials) if sweep.trials else sweep.keys.search.samples
    print(
        f"mmbal sweep: Ray Tune's state was cut by a kill ({cut} does not load; set aside in {aside.name}); "
        f"restarting the {left} unfinished trials from their start, {len(finished)} finished ones kept",
        file=sys.stderr,
    )
    return todo
