"""The one training loop: setup -> epochs (train, validate, report, checkpoint) -> test of the best.

``run_trial(config, reporter)`` serves ``mmbal train`` (JSONL reporter, no Ray), a packed Ray Tune
trial and every worker of a DDP trial. Model selection uses the validation split only; the test
split is evaluated once, on the best-validation state, after the last epoch.
"""

from __future__ import annotations

import copy
import re
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler, Subset

from trainables.config import Resolved, resolve
from trainables.data import DATASETS, DataBundle
from trainables.evaluate import evaluate
from trainables.methods import METHODS
from trainables.methods.base import BalancingMethod, Batch, EpochContext, MethodContext, StepState
from trainables.models.classifier import ModelSpec
from trainables.optim import make_optimizer, make_scheduler
from trainables.reporting import Reporter
from trainables.runtime import Runtime, rng_state, seed_everything, set_rng_state

try:  # progress bars are a nicety: tqdm stays quiet when stdout is not a terminal
    from tqdm.auto import tqdm
except ImportError:  # pragma: no cover
    tqdm = None


@dataclass
class Trial:
    """Everything built for one trial."""

    cfg: Resolved
    rt: Runtime
    data: DataBundle
    method: BalancingMethod
    model: torch.nn.Module
    optimizers: dict[str, torch.optim.Optimizer]
    schedulers: dict[str, Any]
    train_loader: DataLoader
    val_loader: DataLoader
    test_loader: DataLoader

    @property
    def modalities(self) -> list[str]:
        return list(self.data.modalities)

    def to_device(self, batch: Batch) -> Batch:
        dev = self.rt.device
        return {
            "inputs": {m: x.to(dev, non_blocking=True) for m, x in batch["inputs"].items()},
            "label": batch["label"].to(dev, non_blocking=True),
            "index": batch["index"],
        }

    def eval_split(self, loader: DataLoader, split: str, missing: bool = False) -> dict[str, float]:
        return evaluate(
            self.method,
            self.model,
            loader,
            split,
            self.modalities,
            self.data.num_classes,
            self.to_device,
            self.rt.all_reduce,
            missing,
        )


def _shard(ds: Any, rt: Runtime) -> Any:
    """Disjoint, unpadded contiguous-stride shard of an eval split for this rank."""
    return ds if rt.world_size == 1 else Subset(ds, list(range(rt.rank, len(ds), rt.world_size)))


def build_trial(cfg: Resolved, rt: Runtime) -> Trial:
    t = cfg.train
    seed_everything(t.seed, t.deterministic)
    data = DATASETS.get(t.dataset)().build(cfg.data_params, t.data_root, t.seed)
    encoders = {m: t.model.encoders.get(m, spec.encoder) for m, spec in data.modalities.items()}
    spec = ModelSpec(
        {m: s.shape for m, s in data.modalities.items()}, encoders, t.model.feature_dim, t.model.fusion, data.num_classes
    )
    mctx = MethodContext(list(data.modalities), data.num_classes, t.epochs, rt.device, t.seed)
    method = METHODS.get(t.method)(cfg.method_params, mctx)
    model = method.build_model(spec).to(rt.device)
    rt.broadcast_model(model)
    optimizers = method.configure_optimizers(model, lambda ps: make_optimizer(t.optim, ps))
    for opt in optimizers.values():
        rt.sync_gradients(opt)
    schedulers = {k: make_scheduler(t.sched, o, t.epochs) for k, o in optimizers.items()}
    sampler = DistributedSampler(data.train, num_replicas=rt.world_size, rank=rt.rank, shuffle=True, seed=t.seed)
    lk = dict(num_workers=t.loader.num_workers, pin_memory=rt.device.type == "cuda", persistent_workers=t.loader.num_workers > 0)
    per_rank = len(data.train) // rt.world_size
    train_loader = DataLoader(
        data.train, batch_size=t.loader.batch_size, sampler=sampler, drop_last=per_rank > t.loader.batch_size, **lk
    )
    ev = lambda ds: DataLoader(_shard(ds, rt), batch_size=t.loader.eval_batch_size, shuffle=False, **lk)  # noqa: E731
    return Trial(cfg, rt, data, method, model, optimizers, schedulers, train_loader, ev(data.val), ev(data.test))


def _train_epoch(trial: Trial, epoch: int, progress: bool) -> dict[str, float]:
    t = trial.cfg.train
    trial.model.train()
    trial.train_loader.sampler.set_epoch(epoch)
    n = len(trial.train_loader)
    sums: dict[str, float] = {}
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if t.amp and trial.rt.device.type == "cuda" else nullcontext()
    batches = trial.train_loader
    if progress and tqdm is not None and trial.rt.is_main:
        batches = tqdm(batches, desc=f"epoch {epoch + 1}/{t.epochs}", leave=False, disable=None)
    for i, batch in enumerate(batches):
        with autocast:
            out = trial.method.training_step(
                trial.model, trial.to_device(batch), trial.optimizers, StepState(epoch, i, n, epoch * n + i)
            )
        for k, v in out.items():
            sums[k] = sums.get(k, 0.0) + float(v)
    stats = torch.tensor([sums[k] for k in sorted(sums)] + [float(n)], dtype=torch.float64)
    trial.rt.all_reduce(stats)  # mean over all batches of all ranks
    return {f"train/{k}": stats[i].item() / stats[-1].item() for i, k in enumerate(sorted(sums))}


def _state(trial: Trial, epoch: int, best: dict, history: list) -> dict[str, Any]:
    return {
        "epoch": epoch,
        "config": trial.cfg.to_dict(),
        "model": trial.model.state_dict(),
        "optimizers": {k: o.state_dict() for k, o in trial.optimizers.items()},
        "schedulers": {k: s.state_dict() for k, s in trial.schedulers.items()},
        "method": trial.method.state_dict(),
        "rng": rng_state(),
        "best": best,
        "history": history,
    }


def _load(trial: Trial, state: dict[str, Any]) -> None:
    trial.model.load_state_dict(state["model"])
    for k, o in trial.optimizers.items():
        o.load_state_dict(state["optimizers"][k])
    for k, s in trial.schedulers.items():
        s.load_state_dict(state["schedulers"][k])
    trial.method.load_state_dict(state["method"])
    set_rng_state(state["rng"])


def _better(value: float, best: float | None, mode: str) -> bool:
    return best is None or (value > best if mode == "max" else value < best)


def run_trial(
    config: dict[str, Any] | Resolved, reporter: Reporter, runtime: Runtime | None = None, progress: bool = False
) -> dict[str, Any]:
    """Train one trial to the end (resuming from ``reporter.restore()`` when it has a state).

    Returns:
        the summary: best-validation epoch and metrics, the test metrics of that state, the
        resolved config and the data info. Contains nothing time-dependent, so two runs with the
        same config and seed give identical summaries.
    """
    cfg = config if isinstance(config, Resolved) else resolve(config)
    rt = runtime or Runtime.local(cfg.train.device)
    trial = build_trial(cfg, rt)
    t = cfg.train
    best: dict[str, Any] = {"epoch": None, "score": None, "metrics": {}, "model": None, "method": None}
    history: list[dict[str, Any]] = []
    start = 0
    state = reporter.restore()
    if state is not None:
        _load(trial, state)
        start, best, history = state["epoch"], state["best"], state["history"]
    ctx = lambda e: EpochContext(e, trial.train_loader, rt.device, trial.to_device, rt.all_reduce)  # noqa: E731
    for epoch in range(start, t.epochs):
        tic = time.perf_counter()
        row: dict[str, Any] = {"epoch": epoch + 1}
        row.update({f"train/{k}": v for k, v in trial.method.on_epoch_start(trial.model, ctx(epoch)).items()})
        row.update(_train_epoch(trial, epoch, progress))
        row.update({f"train/{k}": v for k, v in trial.method.on_epoch_end(trial.model, ctx(epoch)).items()})
        with warnings.catch_warnings():  # an optimizer idle in this stage (DI-MML's stage-2 head) is fine
            warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()` before"))
            for k, s in trial.schedulers.items():
                row[f"train/lr/{k}"] = s.get_last_lr()[0]
                s.step()
        row.update(trial.eval_split(trial.val_loader, "val"))
        row["time/epoch_s"] = time.perf_counter() - tic
        score = row.get(t.eval.select_metric)
        if score is None:
            from trainables.errors import ConfigError

            raise ConfigError(
                "eval.select_metric", f"{t.eval.select_metric!r} is not reported; reported: {', '.join(sorted(row))}"
            )
        if _better(score, best["score"], t.eval.select_mode):
            best = {
                "epoch": epoch + 1,
                "score": score,
                "metrics": {k: v for k, v in row.items() if k.startswith("val/")},
                "model": copy.deepcopy(trial.model.state_dict()),
                "method": copy.deepcopy(trial.method.state_dict()),
            }
        last = epoch + 1 == t.epochs
        if last:
            row.update(_test_of_best(trial, best))
        history.append(row)
        save = last or (epoch + 1) % t.checkpoint.every == 0
        reporter.report(row, _state(trial, epoch + 1, best, history) if save else None)
    return summarize(cfg, trial.data, best, history)


def _test_of_best(trial: Trial, best: dict[str, Any]) -> dict[str, Any]:
    """Test metrics of the best-validation state; the last state is put back afterwards."""
    last_model, last_method = copy.deepcopy(trial.model.state_dict()), copy.deepcopy(trial.method.state_dict())
    trial.model.load_state_dict(best["model"])
    trial.method.load_state_dict(best["method"])
    out = trial.eval_split(trial.test_loader, "test", missing=trial.cfg.train.eval.missing)
    out["best/epoch"] = best["epoch"]
    trial.model.load_state_dict(last_model)
    trial.method.load_state_dict(last_method)
    return out


def summarize(cfg: Resolved, data: DataBundle, best: dict[str, Any], history: list[dict[str, Any]]) -> dict[str, Any]:
    final = history[-1]
    test = {k: v for k, v in final.items() if k.startswith("test/")}
    return {
        "status": "completed",
        "method": cfg.train.method,
        "dataset": cfg.train.dataset,
        "seed": cfg.train.seed,
        "epochs": cfg.train.epochs,
        "best_epoch": best["epoch"],
        **best["metrics"],
        **test,
        "config": cfg.to_dict(),
        "data_info": data.info,
        "modalities": list(data.modalities),
    }
