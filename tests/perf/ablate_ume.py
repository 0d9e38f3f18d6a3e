"""UME on mfeat: ume (mean of logits / of probabilities) against joint and umt, and the paper's own setup
(the two unimodal models trained in separate runs, each selected on its own validation accuracy, then
their logits averaged), 3 seeds.

Run: ``nice -n 15 python tests/perf/ablate_ume.py --out /tmp/ume_ablation.jsonl`` (a measurement, not a
test: pytest does not collect it; about 20 s a trial on one CPU core). Settings are sweeps/mfeat_all.yaml's
(12 epochs, SGD 0.05, batch 32, feature size 32, 40/30/100 digits per class). One JSON line per trial:
best-validation test metrics and best epoch; the ``separate`` rows are the ensemble of the best-validation
``unimodal`` models of one seed. ``--table`` prints mean ± std per variant. The numbers in
trainables/methods/ume.py come from the default run.
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
    "joint": ("joint", {}),
    "umt": ("umt", {}),
    "ume/logits": ("ume", {"combine": "logits"}),
    "ume/probs": ("ume", {"combine": "probs"}),
    "unimodal:pix": ("unimodal", {"modality": "pix"}),
    "unimodal:fou": ("unimodal", {"modality": "fou"}),
}
COMMON = {
    "dataset": "mfeat",
    "epochs": 12,
    "data": {"train_per_class": 40, "val_per_class": 30, "test_per_class": 100},
    "model": {"feature_dim": 32},
    "loader": {"batch_size": 32},
    "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4},
    "checkpoint": {"every": 12, "keep": 1},
}


@torch.no_grad()
def test_logits(cfg: dict, best_model: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The best-validation model's fused test logits and the labels."""
    trial = build_trial(resolve(cfg), Runtime.local("cpu"))
    trial.model.load_state_dict(best_model)
    trial.model.eval()
    zs, ys = [], []
    for batch in trial.test_loader:
        zs.append(trial.model(batch["inputs"]).logits)
        ys.append(batch["label"])
    return torch.cat(zs), torch.cat(ys)


def run(variant: str, seed: int) -> tuple[dict[str, Any], tuple[torch.Tensor, torch.Tensor] | None]:
    method, params = VARIANTS[variant]
    cfg = {**COMMON, "method": method, "params": params, "seed": seed}
    rep = MemoryReporter()
    summary = run_trial(cfg, rep)
    row = {"variant": variant, "seed": seed}
    row.update({k: v for k, v in summary.items() if k.startswith(("test/acc", "best_epoch"))})
    logits = test_logits(cfg, rep.state["best"]["model"]) if method == "unimodal" else None
    return row, logits


def table(path: str) -> None:
    rows = [json.loads(line) for line in open(path)]
    keys = ["test/acc", "test/acc/pix", "test/acc/fou", "best_epoch"]
    for variant in dict.fromkeys(r["variant"] for r in rows):
        sel = [r for r in rows if r["variant"] == variant]
        cells = []
        for k in keys:
            vals = [r[k] for r in sel if r.get(k) is not None]
            if vals:
                sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
                scale = 1 if k == "best_epoch" else 100
                cells.append(f"{k} {scale * statistics.mean(vals):.1f} ± {scale * sd:.1f}")
        print(f"{variant} (n={len(sel)}): " + "; ".join(cells))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="ume_ablation.jsonl")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument("--table", action="store_true", help="only print the table of --out")
    args = ap.parse_args()
    if not args.table:
        torch.set_num_threads(1)
        with open(args.out, "a") as f:
            for seed in args.seeds:
                members = {}
                for variant in args.variants:
                    row, logits = run(variant, seed)
                    f.write(json.dumps(row) + "\n")
                    f.flush()
                    if logits is not None:
                        members[variant] = logits
                if len(members) == 2:  # the paper's setup: separate runs, each selected alone, logits averaged
                    (za, y), (zb, _) = members.values()
                    acc = float(((za + zb).argmax(1) == y).float().mean())
                    f.write(json.dumps({"variant": "separate/logits", "seed": seed, "test/acc": acc}) + "\n")
                    f.flush()
    table(args.out)


if __name__ == "__main__":
    main()
