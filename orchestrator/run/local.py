"""``execution.mode: local``: the sweep's trials one after another in this process, no Ray.

The debugging path: breakpoints and tracebacks work as in ``mmbal train``. Each trial writes
``metrics.jsonl`` and its checkpoints into its own results folder (``JsonlReporter``), so an
interrupted sweep resumes where it stopped: finished trials are skipped, the others restart from
their last checkpoint.
"""

from __future__ import annotations

import sys
import time
import traceback
from typing import Any

from orchestrator.results import ResultsWriter, summary_status
from orchestrator.run.system import SystemStats
from orchestrator.sweep import Sweep, TrialPlan
from trainables.errors import ConfigError, DataError, Diverged
from trainables.loop import run_trial
from trainables.reporting import JsonlReporter


def local_trial_id(plan: TrialPlan) -> str:
    """Stable and readable: the position in the expanded sweep, the method label and the seed."""
    return f"{plan.index:05d}_{plan.label}_s{plan.config['seed']}"


class _TrackedReporter(JsonlReporter):
    """The local JSONL reporter that also feeds W&B through the results writer."""

    def __init__(self, writer: ResultsWriter, trial_id: str, keep: int) -> None:
        super().__init__(writer.path(trial_id), keep=keep)
        self.writer, self.trial_id = writer, trial_id
        self.stats = SystemStats()

    def report(self, metrics: dict[str, float], checkpoint: dict[str, Any] | None) -> None:
        metrics = {**metrics, **self.stats.sample()}
        super().report(metrics, checkpoint)
        self.writer.tracker.log(self.trial_id, metrics)


def run_local(sweep: Sweep, writer: ResultsWriter) -> dict[str, str]:
    """Run every trial not finished yet; returns ``trial_id -> completed|diverged|error``.

    A trial that raises is retried up to ``execution.max_failures`` times from its last checkpoint,
    then recorded as an error; the sweep goes on. User mistakes (``ConfigError``) stop the sweep.
    """
    status: dict[str, str] = {}
    for plan in sweep.trials:
        tid = local_trial_id(plan)
        done = summary_status(writer.path(tid))
        if done is not None:  # completed, or diverged (it would diverge again)
            status[tid] = done
            continue
        status[tid] = _run_one(sweep, writer, plan, tid)
    return status


def _run_one(sweep: Sweep, writer: ResultsWriter, plan: TrialPlan, tid: str) -> str:
    attempts = sweep.keys.execution.max_failures + 1
    for attempt in range(attempts):
        writer.start(tid, plan.config, plan.method)
        tic = time.perf_counter()
        try:
            summary = run_trial(plan.config, _TrackedReporter(writer, tid, plan.config["checkpoint"]["keep"]))
        except Diverged as exc:
            writer.complete(tid, exc.summary)
            print(f"trial {tid}: {plan.label} seed {plan.config['seed']} diverged: {exc}", file=sys.stderr)
            return "diverged"
        except (ConfigError, DataError, KeyboardInterrupt):
            writer.error(tid)
            raise
        except Exception:  # one trial's crash must not end the sweep
            print(
                f"mmbal sweep: trial {tid} failed (attempt {attempt + 1}/{attempts}):\n{traceback.format_exc()}",
                file=sys.stderr,
            )
            writer.error(tid)
            continue
        writer.complete(tid, summary)
        print(
            f"trial {tid}: {plan.label} seed {plan.config['seed']} done in {time.perf_counter() - tic:.1f}s; "
            f"val/acc {summary.get('val/acc', float('nan')):.4f} test/acc {summary.get('test/acc', float('nan')):.4f}"
        )
        return "completed"
    return "error"
