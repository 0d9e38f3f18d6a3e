"""MLA projector ablation: replace/none, replace/frobenius and off, 3 seeds, on mfeat and on synthetic.

Run: ``nice -n 15 python tests/perf/ablate_mla.py --out /tmp/mla_ablation.jsonl`` (a measurement, not a
test: pytest does not collect it; about 20 s a trial on one CPU core). Training settings are the
quickstart's (sweeps/quickstart.yaml: 12 epochs, SGD 0.05, batch 32, feature size 32) on both datasets.
One JSON line per trial: best-validation test metrics, the projector's last trace(P)/d and gradient
ratio, and, for the "data or fusion?" question, test accuracies of other fusions of the same two heads
of the best-validation model: equal weights, the fixed weight best on validation, and the oracle (a
sample counts when any head is right). ``--table`` prints mean ± std per dataset and variant. The
numbers in trainables/methods/mla.py come from the default run and from ``--datasets mfeat --epochs 40``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from typing import Any

import torch

from trainables.config import resolve
from trainables.loop import build_trial, run_trial
from trainables.reporting import MemoryReporter
from trainables.runtime import Runtime

VARIANTS = {
    "replace/none": {"projection": "replace", "normalize": "none"},
    "replace/frobenius": {"projection": "replace", "normalize": "frobenius"},
    "off": {"projection": "off"},
}
COMMON = {
    "epochs": 12,
    "model": {"feature_dim": 32},
    "loader": {"batch_size": 32},
    "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4},
}
DATA = {"mfeat": {"train_per_class": 40, "val_per_class": 30, "test_per_class": 100}, "synthetic": {}}


@torch.no_grad()
def _head_logits(cfg: dict, best_model: dict) -> dict[str, tuple[dict[str, torch.Tensor], torch.Tensor]]:
    """Per-modality logits and labels of the best-validation model on val and test."""
    trial = build_trial(resolve(cfg), Runtime.local("cpu"))
    trial.model.load_state_dict(best_model)
    trial.model.eval()
    out = {}
    for split, loader in (("val", trial.val_loader), ("test", trial.test_loader)):
        per: dict[str, list[torch.Tensor]] = {}
        ys = []
        for batch in loader:
            o = trial.model(batch["inputs"])
            for m, z in o.modality_logits.items():
                per.setdefault(m, []).append(z)
            ys.append(batch["label"])
        out[split] = ({m: torch.cat(z) for m, z in per.items()}, torch.cat(ys))
    return out


def fusion_study(cfg: dict, best_model: dict) -> dict[str, float]:
    """Test accuracy of other late fusions of the same heads (two modalities)."""
    logits = _head_logits(cfg, best_model)
    (val, yv), (test, yt) = logits["val"], logits["test"]
    a, b = list(test)

    def acc(z: torch.Tensor, y: torch.Tensor) -> float:
        return float((z.argmax(1) == y).float().mean())

    grid = [i / 20 for i in range(21)]
    best_w = max(grid, key=lambda w: (acc(w * val[a] + (1 - w) * val[b], yv), -abs(w - 0.5)))
    right = [(test[m].argmax(1) == yt) for m in (a, b)]
    return {
        "fusion/equal": acc(test[a] + test[b], yt),
        "fusion/val_best_w": best_w,
        "fusion/val_best": acc(best_w * test[a] + (1 - best_w) * test[b], yt),
        "fusion/oracle": float((right[0] | right[1]).float().mean()),
        "fusion/only_second_right": float((~right[0] & right[1]).float().mean()),
    }


def run(dataset: str, variant: str, seed: int, epochs: int) -> dict[str, Any]:
    cfg = {"method": "mla", "dataset": dataset, "seed": seed, "data": DATA[dataset], **COMMON}
    cfg["params"], cfg["epochs"] = VARIANTS[variant], epochs
    cfg["checkpoint"] = {"every": epochs, "keep": 1}
    rep = MemoryReporter()
    summary = run_trial(cfg, rep)
    last = rep.rows[-1]
    row = {"dataset": f"{dataset} {epochs} epochs", "variant": variant, "seed": seed}
    row.update({k: v for k, v in summary.items() if k.startswith(("test/acc", "val/acc"))})
    row["proj/trace"] = last.get("train/mla/proj/trace")
    row["proj/grad_ratio"] = last.get("train/mla/proj/grad_ratio")
    row.update(fusion_study(cfg, rep.state["best"]["model"]))
    return row


def table(path: str) -> None:
    rows = [json.loads(line) for line in open(path)]
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        keys = [k for k in next(r for r in rows if r["dataset"] == dataset) if k not in ("dataset", "variant", "seed")]
        print(f"## {dataset}")
        for variant in VARIANTS:
            sel = [r for r in rows if r["dataset"] == dataset and r["variant"] == variant]
            if not sel:
                continue
            cells = []
            for k in keys:
                vals = [r[k] for r in sel if r.get(k) is not None]
                if vals:
                    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
                    cells.append(f"{k} {statistics.mean(vals):.3f} ± {sd:.3f}")
            print(f"{variant} (n={len(sel)}): " + "; ".join(cells))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="mla_ablation.jsonl")
    ap.add_argument("--datasets", nargs="+", default=list(DATA))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--table", action="store_true", help="only print the table of --out")
    args = ap.parse_args()
    if not args.table:
        torch.set_num_threads(1)
        with open(args.out, "a") as f:
            for dataset in args.datasets:
                for variant in VARIANTS:
                    for seed in args.seeds:
                        f.write(json.dumps(run(dataset, variant, seed, args.epochs)) + "\n")
                        f.flush()
    table(args.out)


if __name__ == "__main__":
    main()
