"""W&B curves: one run per trial, grouped by experiment, with ``epoch`` as every curve's step.

Written from the driver (the results writer calls it in all three execution modes), so trial
processes never import wandb. W&B is a convenience: every call is guarded, a failure is one warning
line and that run is dropped, never the trial. Offline unless told otherwise (``WANDB_MODE``, or an
API key in the environment); ``mmbal sync EXPERIMENT`` uploads the offline runs later. The API key is
read by wandb itself from its usual places and is never put into a config, a result or a log line.

What a trial's run shows is what its results folder holds: the curves are ``metrics.jsonl``'s
per-epoch rows (against ``epoch``), and the run's summary is ``summary.json`` (best-validation epoch,
test metrics of that state), set when the trial completes. Test metrics (and ``best/epoch``) are end
values, logged to the summary only, never as a point on the epoch axis. Runs are named
``<method>[-<varied params>]-s<seed>`` (``_meta.name``), tagged with method, dataset and experiment,
and their ids carry the sweep *instance* (:func:`instance_id`), so two copies of one experiment name
(two clones, two machines) never write into each other's runs.
"""

from __future__ import annotations

import math
import os
import re
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from trainables.params import knob


@dataclass(frozen=True)
class TrackingSpec:
    """The sweep's ``tracking:`` keys (``tracking: wandb`` and ``tracking: none`` are short forms)."""

    backend: Literal["wandb", "none"] = knob("wandb", "wandb or none")
    project: str = knob("mmbal", "W&B project")
    entity: str | None = knob(None, "W&B entity (team or user); default: the account's")
    mode: Literal["auto", "offline", "online"] = knob(
        "auto", "auto: WANDB_MODE if set, else online with an API key, else offline"
    )
    timeout_s: float = knob(15.0, "upper bound on W&B init/finish waits, so a sweep never hangs on the network", gt=0)


def resolve_mode(spec: TrackingSpec) -> str:
    """``WANDB_MODE`` wins (CI sets ``disabled``); then the sweep's mode; ``auto`` is online only with a key
    (``WANDB_API_KEY`` or a ``wandb login`` entry in ~/.netrc)."""
    env = os.environ.get("WANDB_MODE")
    if env:
        return env
    if spec.mode != "auto":
        return spec.mode
    return "online" if os.environ.get("WANDB_API_KEY") or _netrc_login() else "offline"


def _netrc_login() -> bool:
    """``wandb login`` stores the key in ~/.netrc; only whether an entry exists is looked at."""
    try:
        import netrc

        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def run_id(group: str, name: str) -> str:
    """Stable W&B run id of a run in ``group`` (a trial id, or ``summary``), so a resumed run continues.

    W&B ids allow letters, digits, ``_`` and ``-``; anything else becomes ``-``, and the id is cut at
    120 characters.
    """
    return re.sub(r"[^A-Za-z0-9_-]", "-", f"{group}-{name}")[:120]


INSTANCE_FILE = "instance_id"
END_PREFIXES = ("test/", "best/")  # values of the selected state, known once the trial ends: summary only


def instance_id(results_dir: str | os.PathLike) -> str:
    """This sweep instance's id (8 hex digits), made once and kept in ``<results_dir>/instance_id``.

    A resumed sweep (same folder) keeps it, so its runs continue; another folder running the same
    experiment name gets its own, so W&B runs are never shared between two copies of a sweep.
    """
    path = Path(results_dir) / INSTANCE_FILE
    try:
        found = path.read_text().strip()
    except OSError:
        found = ""
    if re.fullmatch(r"[0-9a-f]{8}", found):
        return found
    from trainables.reporting import atomic_write_text

    new = uuid.uuid4().hex[:8]
    atomic_write_text(path, new + "\n")
    return new


def scalar_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """The values of ``summary.json`` a W&B summary shows: numbers and strings (config and lists stay out)."""
    return {k: v for k, v in summary.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}


class Tracker:
    """No tracking (``tracking: none``)."""

    def start(self, trial_id: str, config: dict[str, Any]) -> None: ...

    def log(self, trial_id: str, row: dict[str, Any]) -> None: ...

    def finish(self, trial_id: str, ok: bool, summary: dict[str, Any] | None = None) -> None: ...

    def close(self) -> None: ...


class WandbTracker(Tracker):
    """One W&B run per trial (``group`` = experiment, ``job_type`` = method, ``name`` = the readable trial
    name, tags = method, dataset, experiment; id = experiment, sweep instance and trial id)."""

    def __init__(self, spec: TrackingSpec, experiment: str, wandb_dir: str | os.PathLike) -> None:
        self.spec = spec
        self.experiment = experiment
        self.dir = Path(wandb_dir)
        self.mode = resolve_mode(spec)
        self.instance = instance_id(self.dir)
        self.runs: dict[str, Any] = {}
        self._warned = False

    def _warn(self, what: str, exc: BaseException) -> None:
        if not self._warned:  # one line per sweep is enough; the trials go on either way
            print(
                f"mmbal: warning: W&B {what} failed ({type(exc).__name__}: {exc}); the sweep goes on without it",
                file=sys.stderr,
            )
            self._warned = True

    def start(self, trial_id: str, config: dict[str, Any]) -> None:
        if trial_id in self.runs or self.mode == "disabled":
            return
        try:
            import wandb

            self.dir.mkdir(parents=True, exist_ok=True)
            settings = bounded_settings(self.spec.timeout_s)
            meta = config.get("_meta", {})
            tags = [str(t)[:64] for t in (meta.get("method") or config.get("method"), config.get("dataset"))]
            run = wandb.init(
                project=self.spec.project,
                entity=self.spec.entity,
                group=self.experiment,
                job_type=config.get("method"),
                name=meta.get("name") or trial_id,
                tags=list(dict.fromkeys([*tags, self.experiment[:64]])),
                id=run_id(f"{self.experiment}-{self.instance}", trial_id),
                resume="allow",
                config=_config(config),
                dir=str(self.dir),
                mode=self.mode,
                reinit="create_new",
                settings=settings,
            )
            # every curve is drawn against the epoch, not W&B's internal step
            run.define_metric("epoch")
            run.define_metric("*", step_metric="epoch")
            self.runs[trial_id] = run
        except Exception as exc:  # W&B must never fail a trial
            self._warn("init", exc)

    def log(self, trial_id: str, row: dict[str, Any]) -> None:
        run = self.runs.get(trial_id)
        if run is None:
            return
        try:
            run.log(
                {
                    k: v
                    for k, v in row.items()
                    if isinstance(v, (int, float))
                    and not isinstance(v, bool)
                    and math.isfinite(v)
                    and not k.startswith(END_PREFIXES)
                }
            )
        except Exception as exc:  # W&B must never fail a trial
            self._warn("log", exc)
            self.runs.pop(trial_id, None)

    def finish(self, trial_id: str, ok: bool, summary: dict[str, Any] | None = None) -> None:
        run = self.runs.pop(trial_id, None)
        if run is None:
            return
        try:
            if summary is not None:  # after the last row, so these values win over the last epoch's
                run.summary.update(scalar_summary(summary))
            run.finish(exit_code=0 if ok else 1)
        except Exception as exc:  # W&B must never fail a trial
            self._warn("finish", exc)

    def close(self) -> None:
        for trial_id in list(self.runs):
            self.finish(trial_id, ok=False)


def _config(config: dict[str, Any]) -> dict[str, Any]:
    """The trial config as W&B shows it (the ``_meta`` block flattened into plain keys)."""
    out = {k: v for k, v in config.items() if k != "_meta"}
    out.update({f"meta/{k}": v for k, v in config.get("_meta", {}).items()})
    return out


def make_tracker(spec: TrackingSpec, experiment: str, results_dir: str | os.PathLike) -> Tracker:
    """The tracker a sweep asked for; W&B files go to ``results/<experiment>/wandb/``."""
    if spec.backend == "none" or resolve_mode(spec) == "disabled":
        return Tracker()
    return WandbTracker(spec, experiment, results_dir)


def bounded_settings(timeout_s: float) -> Any:
    """W&B settings shared by every run mmbal makes: quiet, no code or system stats saved, and every
    network wait bounded by ``timeout_s`` so an interrupted or offline sweep never hangs."""
    import wandb

    t = timeout_s
    return wandb.Settings(
        silent=True,
        console="off",
        init_timeout=t,
        finish_timeout=t,
        x_file_stream_timeout_seconds=t,
        x_graphql_timeout_seconds=t,
        x_disable_stats=True,
        save_code=False,
    )


def offline_runs(results_dir: str | os.PathLike) -> list[Path]:
    """Offline (and interrupted online) W&B run folders of an experiment, oldest first."""
    root = Path(results_dir) / "wandb"
    return sorted(p for p in root.glob("*run-*") if p.is_dir() and not p.is_symlink())
