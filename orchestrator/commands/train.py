"""``mmbal train``: one trial, no Ray; writes OUT/metrics.jsonl, OUT/checkpoints/, OUT/summary.json."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from orchestrator.cli import add_overrides
from orchestrator.results import write_json, write_summary
from trainables.config import apply_overrides, resolve
from trainables.errors import ConfigError
from trainables.loop import run_trial
from trainables.reporting import JsonlReporter, dumps


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="run one trial locally (no Ray)")
    p.add_argument("--method", default="joint")
    p.add_argument("--dataset", default="mfeat")
    p.add_argument("--data-root", default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    add_overrides(p, "--set optim.lr=0.05 --set params.alpha=0.5")
    p.add_argument("--out", default=None, help="output folder (default runs/<method>-<dataset>-s<seed>)")
    p.set_defaults(func=run)


def build_config(args: argparse.Namespace) -> dict:
    raw: dict = {"method": args.method, "dataset": args.dataset}
    if args.data_root:
        raw["data_root"] = args.data_root
    if args.epochs is not None:
        raw["epochs"] = args.epochs
    if args.seed is not None:
        raw["seed"] = args.seed
    return apply_overrides(raw, args.overrides)


def check_out_dir(reporter: JsonlReporter, config: dict) -> None:
    """Refuse to resume a folder that holds a run of a different config."""
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
    cfg = resolve(build_config(args))
    t = cfg.train
    out = Path(args.out or f"runs/{t.method}-{t.dataset}-s{t.seed}")
    summary_path = out / "summary.json"
    reporter = JsonlReporter(out, keep=t.checkpoint.keep)
    check_out_dir(reporter, cfg.to_dict())
    summary_path.unlink(missing_ok=True)  # a summary only ever describes a finished run; rewritten at the end
    write_json(out / "config.json", cfg.to_dict())
    summary = run_trial(cfg, reporter, progress=True)
    write_summary(out, summary)
    mods = summary["modalities"]
    per = "  ".join(f"{m} {summary.get(f'test/acc/{m}', float('nan')):.4f}" for m in mods)
    print(
        f"{t.method} on {t.dataset} (seed {t.seed}): best val/acc {summary.get('val/acc', float('nan')):.4f} "
        f"at epoch {summary['best_epoch']}; test/acc {summary['test/acc']:.4f}; per modality: {per}"
    )
    print(f"wrote {summary_path}")
    return 0
