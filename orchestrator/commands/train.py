"""``mmbal train``: one trial, no Ray; writes OUT/metrics.jsonl, OUT/checkpoints/, OUT/summary.json."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.cli import add_command, add_overrides
from orchestrator.run.lock import LOCK_NAME, folder_lock
from trainables.errors import ConfigError, DataError, Diverged

if TYPE_CHECKING:
    from trainables.config import Resolved
    from trainables.reporting import JsonlReporter

EXAMPLES = """
  mmbal train                                       # joint training on mfeat (built in), default settings
  mmbal train --method ogm_ge --epochs 12 --seed 1 --set params.alpha=0.5
  mmbal train --method unimodal --set params.modality=pix --out runs/pix
  mmbal train --method my_method --plugin my_methods   # a method of your own (see the README's plugins)
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "train", "run one trial locally (no Ray)", EXAMPLES)
    p.add_argument("--method", default="joint")
    p.add_argument("--dataset", default="mfeat")
    p.add_argument("--data-root", default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    add_overrides(p, "--set optim.lr=0.05 --set params.alpha=0.5")
    p.add_argument("--out", default=None, help="output folder (default runs/<method>-<dataset>-s<seed>)")
    p.add_argument("--force", action="store_true", help="write into an --out folder holding files mmbal did not write")
    p.set_defaults(func=run)


def build_config(args: argparse.Namespace) -> dict:
    from trainables.config import apply_overrides

    raw: dict = {"method": args.method, "dataset": args.dataset}
    if args.data_root:
        raw["data_root"] = args.data_root
    if args.epochs is not None:
        raw["epochs"] = args.epochs
    if args.seed is not None:
        raw["seed"] = args.seed
    return apply_overrides(raw, args.overrides)


# what `mmbal train` writes into --out (plus atomic writes' ".<name>.*" temporaries)
OWN_NAMES = {"config.json", "metrics.jsonl", "summary.json", "checkpoints", LOCK_NAME}


def check_out_path(out: Path, force: bool) -> None:
    """``--out`` is a new folder or one that only mmbal wrote (``--force`` lifts the second rule)."""
    if out.exists() and not out.is_dir():
        raise ConfigError("--out", f"{out} is a file, not a folder; give a folder for the run's outputs")
    if force or not out.is_dir():
        return
    foreign = sorted(p.name for p in out.iterdir() if not _own(p.name))
    config = out / "config.json"
    if config.is_file() and not _is_run_config(config):
        foreign.insert(0, "config.json (not an mmbal run config)")
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise ConfigError(
            "--out", f"{out} holds files mmbal did not write ({shown}); choose a new folder, or add --force"
        )


def _own(name: str) -> bool:
    return name in OWN_NAMES or any(name.startswith(f".{own}.") for own in OWN_NAMES)


def _is_run_config(path: Path) -> bool:
    try:
        cfg = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(cfg, dict) and {"method", "dataset", "optim", "checkpoint"} <= set(cfg)


def check_out_dir(reporter: JsonlReporter, config: dict) -> None:
    """Refuse to resume a folder that holds a run of a different config."""
    from trainables.reporting import dumps

    out, state = reporter.out, reporter.latest_state()
    if state is None:
        return
    saved = state["config"]
    if json.loads(dumps(saved)) != json.loads(dumps(config)):
        diff = sorted(k for k in set(saved) | set(config) if saved.get(k) != config.get(k))
        raise ConfigError(
            "--out",
            f"{out} holds a run with a different config (differs in: {', '.join(diff)}); "
            "choose another --out to start afresh, or the same settings to resume",
        )


def run(args: argparse.Namespace) -> int:
    from trainables.config import resolve

    cfg = resolve(build_config(args))
    t = cfg.train
    out = Path(args.out or f"runs/{t.method}-{t.dataset}-s{t.seed}")
    check_out_path(out, args.force)
    fresh = not out.exists()
    try:
        with folder_lock(out, "--out"):
            return _train(cfg, out)
    except (ConfigError, DataError):
        if fresh and not any((out / "checkpoints").glob("epoch_*.pt")):
            shutil.rmtree(out, ignore_errors=True)  # a run that never trained leaves no folder behind
        raise


def _train(cfg: Resolved, out: Path) -> int:
    from orchestrator.results import write_json, write_summary
    from trainables.loop import run_trial
    from trainables.reporting import JsonlReporter

    t = cfg.train
    summary_path = out / "summary.json"
    reporter = JsonlReporter(out, keep=t.checkpoint.keep)
    check_out_dir(reporter, cfg.to_dict())
    summary_path.unlink(missing_ok=True)  # a summary only ever describes a finished run; rewritten at the end
    write_json(out / "config.json", cfg.to_dict())
    try:
        summary = run_trial(cfg, reporter, progress=True)
    except Diverged as exc:
        write_summary(out, exc.summary)  # status: diverged, with its epoch and metric; the CLI exits 1
        raise
    write_summary(out, summary)
    mods = summary["modalities"]
    per = "  ".join(f"{m} {summary.get(f'test/acc/{m}', float('nan')):.4f}" for m in mods)
    print(
        f"{t.method} on {t.dataset} (seed {t.seed}): best val/acc {summary.get('val/acc', float('nan')):.4f} "
        f"at epoch {summary['best_epoch']}; test/acc {summary['test/acc']:.4f}; per modality: {per}"
    )
    print(f"wrote {summary_path}")
    return 0
