"""MIE ablation: IGM's mechanics one knob at a time, 3 seeds, on mfeat with the quickstart's settings.

Run: ``nice -n 15 python tests/perf/ablate_mie.py --out /tmp/mie_ablation.jsonl`` (a measurement, not a
test: pytest does not collect it; 10-60 s a trial on one CPU core), then ``--table`` to print mean ± std
per variant. Training settings are sweeps/quickstart.yaml's (12 epochs unless a variant says otherwise,
SGD 0.05, batch 32, feature size 32). The table in trainables/methods/mie.py comes from this run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from typing import Any

from trainables.loop import run_trial
from trainables.reporting import JsonlReporter

STAGE = {"alternation": "stage", "stage_epochs": [1]}
VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "covariance=batch": {"covariance": "batch"},
    "head=linear": {"head": "linear"},
    "mixup=0": {"mixup": 0.0},
    "shared_head=true": {"shared_head": True},
    "old (batch, batch, linear, no mixup)": {"covariance": "batch", "head": "linear", "mixup": 0.0},
    "stage [1]": STAGE,
    "stage [1], covariance=batch": {**STAGE, "covariance": "batch"},
    "stage [1], head=linear": {**STAGE, "head": "linear"},
    "stage [1], mixup=0": {**STAGE, "mixup": 0.0},
    "stage [1], shared_head=true": {**STAGE, "shared_head": True},
    "stage [1], project=false": {**STAGE, "project": False},
    "stage [1], 24 epochs": {**STAGE, "_epochs": 24},
    "stage [3]": {"alternation": "stage", "stage_epochs": [3]},
    "48 epochs: defaults": {"_epochs": 48},
    "48 epochs: stage [6, 12]": {"alternation": "stage", "stage_epochs": [6, 12], "_epochs": 48},
}
BASE = {
    "method": "mie",
    "dataset": "mfeat",
    "data": {"train_per_class": 40, "val_per_class": 30, "test_per_class": 100},
    "model": {"feature_dim": 32},
    "loader": {"batch_size": 32},
    "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4},
    "checkpoint": {"every": 1000, "keep": 1},
}
KEYS = ["val/acc", "test/acc", "test/acc/pix", "test/acc/fou"]


def run(out: str, seeds: list[int], only: list[str]) -> None:
    with open(out, "a") as fh:
        for name, variant in VARIANTS.items():
            if only and name not in only:
                continue
            for seed in seeds:
                params = dict(variant)  # a fresh copy per seed
                epochs = params.pop("_epochs", 12)
                cfg = {**BASE, "epochs": epochs, "seed": seed, "params": params}
                summary = run_trial(cfg, JsonlReporter(tempfile.mkdtemp()))
                row = {"variant": name, "seed": seed, "best_epoch": summary["best_epoch"]}
                fh.write(json.dumps(row | {k: summary[k] for k in KEYS}) + "\n")
                fh.flush()


def table(path: str) -> None:
    rows: dict[str, list[dict]] = {}
    for line in open(path):
        r = json.loads(line)
        rows.setdefault(r["variant"], []).append(r)
    print("| variant | " + " | ".join(KEYS) + " |")
    for name, rs in rows.items():
        cells = [
            f"{100 * statistics.mean(r[k] for r in rs):.1f} ± {100 * statistics.stdev(r[k] for r in rs):.1f}"
            for k in KEYS
        ]
        print(f"| {name} ({len(rs)} seeds) | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/mie_ablation.jsonl")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--only", nargs="*", default=[], help="variant names to run (default: all)")
    parser.add_argument("--table", action="store_true", help="print the table of --out and exit")
    args = parser.parse_args()
    if args.table:
        table(args.out)
    else:
        run(args.out, [int(s) for s in args.seeds.split(",")], args.only)
