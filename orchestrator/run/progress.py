"""What a sweep prints while it runs: one compact table of its trials and the overall progress with an ETA.

On a terminal the table is redrawn in place (at most once a second); off one (CI logs, ``| tee``)
each trial's end is one plain line, with a heartbeat line while nothing ends. Every line fits in
``width`` columns (120). Columns: trial id, method (the leaderboard row), the varied parameters, seed,
status, epoch, validation accuracy, per-modality validation accuracy, and the validation imbalance
score ratio. The ETA extrapolates the epochs trained so far (all trials, across the sweep) to the
epochs left; trials that end early (ASHA) take their unrun epochs out of what is left.

No Ray here: the Tune callback (:mod:`orchestrator.run.tune_progress`) feeds it, and it is tested on
its own.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

WIDTH = 120
HEARTBEAT_S = 60.0  # off a terminal: one progress line per minute while no trial ends
REDRAW_S = 1.0


@dataclass
class TrialRow:
    trial_id: str
    method: str
    params: str
    seed: int
    epochs: int
    status: str = "pending"
    epoch: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    ended_at: float = 0.0


def fmt_duration(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}" if h else f"{rem // 60}:{rem % 60:02d}"


def _pct(value: Any) -> str:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return "-"
    return f"{100 * x:.1f}" if math.isfinite(x) else "-"


def _ratio(value: Any) -> str:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return "-"
    return f"{x:.2f}" if math.isfinite(x) else "-"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


class Progress:
    """The sweep's progress, fed trial by trial, printed to ``stream``.

    Args:
        experiment: the sweep's name (first word of the progress line).
        total: trials the sweep will run (``None`` when unknown).
        epochs: epochs per trial, for the ETA.
        describe: ``describe(config) -> (method, varied params)`` for a trial config.
        stream: where to print (default ``sys.stdout`` at print time).
        tty: redraw in place (default: whether ``stream`` is a terminal and ``TERM`` is not ``dumb``).
        width: the widest line printed.
        clock: seconds, monotonic (tests pass a fake one).
    """

    def __init__(
        self,
        experiment: str,
        total: int | None,
        epochs: int,
        describe: Callable[[dict[str, Any]], tuple[str, str]],
        stream: IO[str] | None = None,
        tty: bool | None = None,
        width: int = WIDTH,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.experiment, self.total, self.epochs, self.describe = experiment, total, epochs, describe
        self._stream, self._tty, self.width, self.clock = stream, tty, width, clock
        self.rows: dict[str, TrialRow] = {}
        self.t0 = clock()
        self._drawn = 0  # lines of the last in-place drawing
        self._last_draw, self._last_line = -math.inf, self.t0  # the first heartbeat a minute in

    # -- feeding ---------------------------------------------------------------------------
    def start(self, trial_id: str, config: dict[str, Any]) -> None:
        method, params = self.describe(config)
        row = self.rows.get(trial_id)
        if row is None:
            row = self.rows[trial_id] = TrialRow(
                trial_id, method, params, int(config.get("seed", 0)), int(config.get("epochs", self.epochs))
            )
        row.status = "running"
        self.tick()

    def result(self, trial_id: str, metrics: dict[str, Any]) -> None:
        row = self.rows.get(trial_id)
        if row is None:
            return
        row.epoch = int(metrics.get("epoch", row.epoch) or 0)
        row.metrics = {k: v for k, v in metrics.items() if k.startswith("val/")}
        self.tick()

    def end(self, trial_id: str, status: str) -> None:
        """``status``: ``done``, ``stopped`` (ended before its last epoch) or ``failed``."""
        row = self.rows.get(trial_id)
        if row is None:
            return
        row.status, row.ended_at = status, self.clock()
        if self.tty:
            self.tick(force=True)
        else:
            self._print([self._plain(row)])

    def close(self) -> None:
        """The last drawing (terminal) or the last progress line (off one)."""
        if self.tty:
            self.tick(force=True)
        else:
            self._print([self.header()])

    # -- output ------------------------------------------------------------------------------
    @property
    def stream(self) -> IO[str]:
        return self._stream or sys.stdout

    @property
    def tty(self) -> bool:
        if self._tty is None:
            isatty = getattr(self.stream, "isatty", lambda: False)
            self._tty = bool(isatty()) and os.environ.get("TERM") != "dumb"
        return self._tty

    def tick(self, force: bool = False) -> None:
        """Redraw (terminal, at most once per second) or print a heartbeat (off one, once a minute)."""
        now = self.clock()
        if self.tty:
            if force or now - self._last_draw >= REDRAW_S:
                self._last_draw = now
                self._redraw(self.lines())
        elif now - self._last_line >= HEARTBEAT_S and any(r.status == "running" for r in self.rows.values()):
            self._last_line = now
            self._print([self.header()])

    def _redraw(self, lines: list[str]) -> None:
        up = f"\x1b[{self._drawn}F" if self._drawn else ""
        self.stream.write(up + "\x1b[J" + "".join(line + "\n" for line in lines))
        self.stream.flush()
        self._drawn = len(lines)

    def _print(self, lines: list[str]) -> None:
        self._last_line = self.clock()
        self.stream.write("".join(_cut(line, self.width) + "\n" for line in lines))
        self.stream.flush()

    # -- text ---------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in ("pending", "running", "done", "stopped", "failed")}
        for r in self.rows.values():
            out[r.status] = out.get(r.status, 0) + 1
        return out

    def eta_s(self) -> float:
        """Seconds left: the epochs still to train at the rate trained so far."""
        total = self.total if self.total is not None else len(self.rows)
        ended = {"done", "stopped", "failed"}
        unseen = max(0, total - len(self.rows)) * self.epochs
        left = unseen + sum(r.epochs - r.epoch for r in self.rows.values() if r.status not in ended)
        worked = sum(r.epoch for r in self.rows.values())
        if left == 0:
            return 0.0
        return (self.clock() - self.t0) / worked * left if worked else math.nan

    def header(self) -> str:
        c = self.counts()
        ended = c["done"] + c["stopped"] + c["failed"]
        total = self.total if self.total is not None else max(len(self.rows), 1)
        bar_w = 20
        filled = int(bar_w * ended / total) if total else bar_w
        parts = [
            f"{self.experiment} [{'#' * filled}{'.' * (bar_w - filled)}] {ended}/{total} trials",
            f"{c['running']} running",
        ]
        if c["stopped"]:
            parts.append(f"{c['stopped']} stopped early")
        if c["failed"]:
            parts.append(f"{c['failed']} failed")
        parts.append(f"elapsed {fmt_duration(self.clock() - self.t0)}")
        parts.append(f"ETA {fmt_duration(self.eta_s())}")
        return _cut(" · ".join(parts), self.width)

    def _modalities(self) -> list[str]:
        seen: dict[str, None] = {}
        for r in self.rows.values():
            for k in r.metrics:
                parts = k.split("/")
                if len(parts) == 3 and parts[1] == "acc":
                    seen[parts[2]] = None
        return list(seen)

    def _cells(self, row: TrialRow, mods: list[str]) -> list[str]:
        per_mod = " ".join(f"{m} {_pct(row.metrics[f'val/acc/{m}'])}" for m in mods if f"val/acc/{m}" in row.metrics)
        return [
            row.trial_id,
            row.method,
            row.params or "-",
            str(row.seed),
            row.status,
            f"{row.epoch}/{row.epochs}",
            _pct(row.metrics.get("val/acc")),
            per_mod or "-",
            _ratio(row.metrics.get("val/imbalance/score_ratio")),
        ]

    def table(self, rows: list[TrialRow]) -> list[str]:
        """Aligned columns; the params and per-modality columns give way first when the line is too wide."""
        mods = self._modalities()
        head = ["trial", "method", "params", "seed", "status", "epoch", "val acc%", "val acc% per modality", "ratio"]
        cells = [self._cells(r, mods) for r in rows]
        widths = [max(len(x) for x in col) for col in zip(head, *cells, strict=True)]
        over = sum(widths) + 2 * (len(widths) - 1) - self.width
        for i in (2, 7, 1, 0):  # params, per-modality, method, trial: cut in this order
            if over <= 0:
                break
            cut = min(over, widths[i] - 6)
            if cut > 0:
                widths[i] -= cut
                over -= cut
        right = {3, 5, 6, 8}
        out = []
        for line in [head, *cells]:
            fields = [
                _cut(x, w).rjust(w) if i in right else _cut(x, w).ljust(w)
                for i, (x, w) in enumerate(zip(line, widths, strict=True))
            ]
            out.append(_cut("  ".join(fields).rstrip(), self.width))
        return out

    def lines(self) -> list[str]:
        """The header and the table: running trials first, then the failed, then the most recent ends."""
        rank = {"running": 0, "failed": 1, "stopped": 2, "done": 2, "pending": 3}
        rows = sorted(self.rows.values(), key=lambda r: (rank.get(r.status, 4), -r.ended_at, r.trial_id))
        room = max(5, shutil.get_terminal_size((self.width, 40)).lines - 4)
        shown = [r for r in rows if r.status != "pending"][:room]
        out = [self.header(), *self.table(shown)]
        hidden = len(self.rows) - len(shown)
        waiting = (self.total - len(self.rows)) if self.total is not None else 0
        if hidden or waiting > 0:
            out.append(f"... {hidden + max(0, waiting)} more (pending or ended earlier)")
        return out

    def _plain(self, row: TrialRow) -> str:
        """One trial's end, off a terminal."""
        c = self.counts()
        total = self.total if self.total is not None else len(self.rows)
        ended = c["done"] + c["stopped"] + c["failed"]
        mods = " ".join(
            f"{k.split('/')[2]} {_pct(v)}" for k, v in row.metrics.items() if k.count("/") == 2 and "/acc/" in k
        )
        text = (
            f"[{ended}/{total}] {row.status} {row.trial_id} {row.method}"
            + (f" {row.params}" if row.params else "")
            + f" s{row.seed} epoch {row.epoch}/{row.epochs} val acc {_pct(row.metrics.get('val/acc'))}%"
            + (f" ({mods})" if mods else "")
            + f" ratio {_ratio(row.metrics.get('val/imbalance/score_ratio'))} · ETA {fmt_duration(self.eta_s())}"
        )
        return _cut(text, self.width)


def sweep_progress(sweep: Any, stream: IO[str] | None = None) -> Progress:
    """The progress of a checked :class:`~orchestrator.sweep.Sweep` (trial count, epochs, varied params)."""
    from orchestrator.sweep import method_label
    from orchestrator.sweep.naming import TrialNamer, varied_params

    namer = TrialNamer(sweep)

    def describe(config: dict[str, Any]) -> tuple[str, str]:
        row = method_label(config)
        return row, varied_params(config, namer.keys_of(config, row))

    searcher = sweep.keys.search.searcher in ("optuna", "hyperopt")
    total = sweep.keys.search.samples if searcher else len(sweep.trials)
    if searcher:
        epochs = max(int(t.get("epochs", 1)) for t in sweep.spaces.values())
    else:
        epochs = max((int(t.config["epochs"]) for t in sweep.trials), default=1)
    return Progress(sweep.experiment, total, epochs, describe, stream=stream)
