"""The :class:`trainables.reporting.Reporter` of a trial under Ray (Tune function or Ray Train worker).

Checkpoints go through Ray's Checkpoint API (a folder holding ``state.pt``), so Tune/Train keep the
last K, move them to shared storage, hand them back on retry or resume, and PBT can copy them between
trials. The last epoch's row is held back until ``run_trial`` returns, then sent with the trial's
summary under ``_summary``: the driver writes ``summary.json`` from it, and every rank still reports
exactly once per epoch.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import Any

import torch

from orchestrator.results import SUMMARY_KEY
from trainables.reporting import dumps, load_state

STATE_FILE = "state.pt"


class RayReporter:
    """Reports through ``report_fn`` (``ray.tune.report`` or ``ray.train.report``).

    Args:
        report_fn: Ray's ``report(metrics, checkpoint=...)``.
        get_checkpoint: Ray's ``get_checkpoint()``.
        checkpoint_cls: Ray's ``Checkpoint`` (``from_directory``).
        epochs: the trial's last epoch (its row waits for the summary).
        attach_checkpoint: False on DDP ranks other than 0 (rank 0's state is the trial's).
        optim: the trial's ``optim`` section; a restored state trained with other optimizer
            hyperparameters (PBT's explore step) is moved onto these.
    """

    def __init__(
        self,
        report_fn: Callable[..., None],
        get_checkpoint: Callable[[], Any],
        checkpoint_cls: Any,
        epochs: int,
        attach_checkpoint: bool = True,
        optim: dict[str, Any] | None = None,
    ) -> None:
        self.report_fn, self.get_checkpoint, self.checkpoint_cls = report_fn, get_checkpoint, checkpoint_cls
        self.epochs = epochs
        self.optim = optim
        self.attach = attach_checkpoint
        self._held: tuple[dict[str, Any], dict[str, Any] | None] | None = None
        self._last: dict[str, Any] | None = None

    def restore(self) -> dict[str, Any] | None:
        ckpt = self.get_checkpoint()
        if ckpt is None:
            return None
        with ckpt.as_directory() as d:
            path = os.path.join(d, STATE_FILE)
            state = load_state(path) if os.path.exists(path) else None
        if state is not None and self.optim is not None:
            retarget_optim(state, self.optim)
        if state is not None and state["epoch"] >= self.epochs:
            # a finished state (PBT copied a trial's last checkpoint): no epoch is left to run, so the
            # last row of its history goes out again with the summary
            self._held = (dict(state["history"][-1]), None)
        return state

    def report(self, metrics: dict[str, float], checkpoint: dict[str, Any] | None) -> None:
        if int(metrics["epoch"]) >= self.epochs:
            self._held = (dict(metrics), checkpoint)
            return
        self._send(metrics, checkpoint)

    def finish(self, summary: dict[str, Any]) -> None:
        """Send the held last row with the summary attached."""
        if self._held is None and summary.get("status") == "diverged" and self._last is not None:
            self._held = (self._last, None)  # stopped before its last epoch: its last row goes out again
        if self._held is None:
            raise RuntimeError("run_trial returned without reporting its last epoch")
        metrics, checkpoint = self._held
        self._held = None
        self._send({**metrics, SUMMARY_KEY: dumps(summary)}, checkpoint)

    def _send(self, metrics: dict[str, Any], checkpoint: dict[str, Any] | None) -> None:
        self._last = dict(metrics)
        if checkpoint is None or not self.attach:
            self.report_fn(metrics)
            return
        with tempfile.TemporaryDirectory(prefix="mmbal-ckpt-") as d:
            torch.save(checkpoint, os.path.join(d, STATE_FILE))
            self.report_fn(metrics, checkpoint=self.checkpoint_cls.from_directory(d))


def retarget_optim(state: dict[str, Any], optim: dict[str, Any]) -> None:
    """Put the optimizer hyperparameters of ``optim`` into a saved trial state, in place.

    A state restores its optimizers' ``param_groups`` (lr, momentum, weight decay), so after PBT
    mutates ``optim.lr`` the copied state would keep training at the donor's rate. Learning rates are
    scaled by ``new / old`` so that per-group multipliers and the scheduler's progress are kept.
    """
    old = state.get("config", {}).get("optim", {})
    ratio = optim["lr"] / old["lr"] if old.get("lr") else 1.0
    for opt in state.get("optimizers", {}).values():
        for group in opt["param_groups"]:
            for key in ("lr", "initial_lr"):
                if key in group:
                    group[key] *= ratio
            for key in ("momentum", "weight_decay"):
                if key in group and optim.get(key) is not None and old.get(key) != optim[key]:
                    group[key] = optim[key]
    for sched in state.get("schedulers", {}).values():
        for key in ("base_lrs", "_last_lr"):
            if isinstance(sched.get(key), list):
                sched[key] = [x * ratio for x in sched[key]]
