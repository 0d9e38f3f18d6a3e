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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm  # progress bars; quiet when stdout is not a terminal

from trainables.acceleration import DevicePrefetcher, prepare_model, to_memory_format
from trainables.config import Resolved, resolve
from trainables.data import DATASETS, DataBundle
from trainables.divergence import first_nonfinite
from trainables.errors import ConfigError, Diverged
from trainables.evaluate import evaluate
from trainables.health import chance_summary, warn_if_stuck
from trainables.methods import METHODS
from trainables.methods.base import BalancingMethod, Batch, EpochContext, MethodContext, StepState, StepStats
from trainables.models.classifier import ModelSpec
from trainables.models.output import MultimodalModel
from trainables.optim import make_optimizer, make_scheduler
from trainables.precision import autocast
from trainables.protocol import SHAPLEY_SCHEME, common_protocol
from trainables.reporting import Reporter
from trainables.runtime import Runtime, rng_state, seed_everything, set_rng_state
from trainables.sampling import Drawn, EpochSampler
from trainables.worker_seeds import EpochSeeded, loader_generator


@dataclass
class Trial:
    """Everything built for one trial."""

    cfg: Resolved
    runtime: Runtime
    data: DataBundle
    method: BalancingMethod
    model: MultimodalModel
    optimizers: dict[str, torch.optim.Optimizer]
    schedulers: dict[str, Any]
    train_loader: DataLoader
    val_loader: DataLoader
    test_loader: DataLoader
    windows: dict[str, tuple[int, int]] = field(default_factory=dict)  # optimizer -> (first epoch, epochs)

    @property
    def modalities(self) -> list[str]:
        return list(self.data.modalities)

    def to_device(self, batch: Batch) -> Batch:
        device, nhwc = self.runtime.device, self.cfg.train.channels_last
        return {
            "inputs": {m: to_memory_format(x.to(device, non_blocking=True), nhwc) for m, x in batch["inputs"].items()},
            "label": batch["label"].to(device, non_blocking=True),
            "index": batch["index"],
            **({"draw": batch["draw"]} if "draw" in batch else {}),
        }

    def autocast(self) -> Any:
        """The autocast context of training steps and evaluation (``precision``)."""
        return autocast(self.cfg.train.precision, self.runtime.device)

    def epoch_context(self, epoch: int) -> EpochContext:
        return EpochContext(
            epoch, self.train_loader, self.runtime.device, self.to_device, self.runtime.all_reduce, self.train_subset
        )

    def train_subset(self, indices: Sequence[int]) -> DataLoader:
        """Unshuffled loader over the given training samples, this rank's share (positions ``rank::world``)."""
        mine = list(indices)[self.runtime.rank :: self.runtime.world_size]
        batch_size = self.cfg.train.loader.eval_batch_size
        return DataLoader(Subset(self.data.train, mine), batch_size=batch_size, shuffle=False)

    def eval_split(self, loader: DataLoader, split: str, missing: bool = False) -> dict[str, float]:
        args = (self.modalities, self.data.num_classes, self.to_device, self.runtime.all_reduce, missing)
        with self.autocast():
            return evaluate(self.method, self.model, loader, split, *args)


# Model selection: ties in the selection metric (a saturated val/acc of 1.0, equal accuracies on a small
# split) go to the lower validation loss, not to the earliest epoch, which would pick an undertrained state.
TIE_BREAK = "val/loss"


def selection_rule(metric: str, mode: str) -> dict[str, str]:
    """How the best epoch was picked, as recorded in the summary (``selection``)."""
    return {"metric": metric, "mode": mode, "tie_break": f"{TIE_BREAK} (min), then the earliest epoch"}


@dataclass
class BestState:
    """The best-validation epoch so far: its selection score, ``val/*`` metrics and weights."""

    epoch: int | None = None
    score: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    model: dict[str, Any] | None = None
    method: dict[str, Any] | None = None

    def improved_by(self, score: float, mode: str, tie_break: float | None = None) -> bool:
        """Whether an epoch with ``score`` (and ``tie_break`` = its ``val/loss``) beats the best so far."""
        if self.score is None:
            return True
        if score != self.score:
            return score > self.score if mode == "max" else score < self.score
        held = self.metrics.get(TIE_BREAK)
        return tie_break is not None and held is not None and tie_break < held

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> BestState:
        return cls(**state)


def _shard(dataset: Any, runtime: Runtime) -> Any:
    """Disjoint, unpadded contiguous-stride shard of an eval split for this rank."""
    if runtime.world_size == 1:
        return dataset
    return Subset(dataset, list(range(runtime.rank, len(dataset), runtime.world_size)))


def build_trial(cfg: Resolved, runtime: Runtime) -> Trial:
    train_cfg = cfg.train
    seed_everything(train_cfg.seed, train_cfg.deterministic)
    data = DATASETS.get(train_cfg.dataset)().build(cfg.data_params, train_cfg.data_root, train_cfg.seed)
    encoders = {m: train_cfg.model.encoders.get(m, spec.encoder) for m, spec in data.modalities.items()}
    shapes = {m: s.shape for m, s in data.modalities.items()}
    spec = ModelSpec(shapes, encoders, train_cfg.model.feature_dim, train_cfg.model.fusion, data.num_classes)
    all_reduce = runtime.all_reduce if runtime.world_size > 1 else None
    method_ctx = MethodContext(
        list(data.modalities), data.num_classes, train_cfg.epochs, runtime.device, train_cfg.seed, all_reduce
    )
    method = METHODS.get(train_cfg.method)(cfg.method_params, method_ctx)
    model = method.build_model(spec).to(runtime.device)
    prepare_model(model, train_cfg.channels_last, train_cfg.compile)
    runtime.broadcast_model(model)
    optimizers = method.configure_optimizers(model, lambda ps: make_optimizer(train_cfg.optim, ps))
    for optimizer in optimizers.values():
        runtime.sync_gradients(optimizer, train_cfg.ddp.overlap, train_cfg.ddp.bucket_mb)
    windows = {k: (0, train_cfg.epochs) for k in optimizers} | method.schedule_windows()
    schedulers = {k: make_scheduler(train_cfg.sched, o, max(windows[k][1], 1)) for k, o in optimizers.items()}
    loader = train_cfg.loader
    sampler = EpochSampler(len(data.train), runtime.world_size, runtime.rank, train_cfg.seed)
    loader_kw = dict(
        num_workers=loader.num_workers,
        pin_memory=runtime.device.type == "cuda",
        persistent_workers=loader.num_workers > 0,
    )
    per_rank = len(data.train) // runtime.world_size
    train_loader = DataLoader(
        Drawn(EpochSeeded(data.train, train_cfg.seed, sampler.shared_epoch)),  # draws by (seed, epoch, index)
        batch_size=loader.batch_size,
        sampler=sampler,
        drop_last=per_rank > loader.batch_size,
        generator=loader_generator(train_cfg.seed),  # workers' base seeds: never from the global RNG
        **loader_kw,
    )

    def eval_loader(dataset: Any) -> DataLoader:
        return DataLoader(
            _shard(dataset, runtime),
            batch_size=loader.eval_batch_size,
            shuffle=False,
            generator=loader_generator(train_cfg.seed),
            **loader_kw,
        )

    return Trial(
        cfg,
        runtime,
        data,
        method,
        model,
        optimizers,
        schedulers,
        train_loader,
        eval_loader(data.val),
        eval_loader(data.test),
        windows,
    )


def _train_epoch(trial: Trial, epoch: int, progress: bool) -> dict[str, float]:
    """One pass over this rank's training shard; the method's step statistics averaged over all batches.

    Step statistics stay on the device (tensors are summed there) and are read once, at the end of
    the epoch, so the host never waits for the device inside the epoch.
    """
    train_cfg = trial.cfg.train
    trial.model.train()
    num_batches = len(trial.train_loader)
    sums: StepStats = {}
    batches = trial.train_loader
    if train_cfg.loader.prefetch:
        batches = DevicePrefetcher(batches, trial.to_device, trial.runtime.device)
    if progress and trial.runtime.is_main:
        batches = tqdm(batches, desc=f"epoch {epoch + 1}/{train_cfg.epochs}", leave=False, disable=None)
    for i, batch in enumerate(batches):
        state = StepState(epoch, i, num_batches, epoch * num_batches + i)
        with trial.autocast():
            batch = batch if train_cfg.loader.prefetch else trial.to_device(batch)
            out = trial.method.training_step(trial.model, batch, trial.optimizers, state)
        for k, v in out.items():
            v = v.detach().to(torch.float64) if isinstance(v, torch.Tensor) else float(v)
            sums[k] = sums[k] + v if k in sums else v
    keys = sorted(sums)
    values = [torch.as_tensor(sums[k], dtype=torch.float64).reshape(()).cpu() for k in keys]
    stats = torch.stack([*values, torch.tensor(float(num_batches), dtype=torch.float64)])
    trial.runtime.all_reduce(stats)  # mean over all batches of all ranks
    return {f"train/{k}": stats[i].item() / stats[-1].item() for i, k in enumerate(keys)}


def _state(trial: Trial, epoch: int, best: BestState, history: list) -> dict[str, Any]:
    return {
        "epoch": epoch,
        "config": trial.cfg.to_dict(),
        "model": trial.model.state_dict(),
        "optimizers": {k: o.state_dict() for k, o in trial.optimizers.items()},
        "schedulers": {k: s.state_dict() for k, s in trial.schedulers.items()},
        "method": trial.method.state_dict(),
        "rng": rng_state(),
        "best": best.to_dict(),
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


def _set_epoch_samples(trial: Trial, epoch: int) -> None:
    """The samples the method wants this epoch to visit (every one once unless it says otherwise)."""
    indices = trial.method.train_indices(epoch, len(trial.data.train))
    try:
        trial.train_loader.sampler.set_indices(indices)
    except ValueError as exc:
        raise ValueError(f"{trial.cfg.train.method}.train_indices: {exc}") from None


def _step_schedulers(trial: Trial, row: dict[str, Any], epoch: int) -> None:
    """Record each optimizer's learning rate of the epoch that ran, then step its schedule inside its window."""
    with warnings.catch_warnings():  # an optimizer idle in this stage (DI-MML's stage-2 head) is fine
        warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()` before"))
        for k, s in trial.schedulers.items():
            row[f"train/lr/{k}"] = s.get_last_lr()[0]
            first, length = trial.windows.get(k, (0, trial.cfg.train.epochs))
            if first <= epoch < first + length:
                s.step()


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
    runtime = runtime or Runtime.local(cfg.train.device)
    trial = build_trial(cfg, runtime)
    train_cfg = cfg.train
    best = BestState()
    history: list[dict[str, Any]] = []
    start = 0
    state = reporter.restore()
    if state is not None:
        _load(trial, state)
        start, best, history = state["epoch"], BestState.from_dict(state["best"]), state["history"]
    for epoch in range(start, train_cfg.epochs):
        tic = time.perf_counter()
        row: dict[str, Any] = {"epoch": epoch + 1}
        trial.train_loader.sampler.set_epoch(epoch)
        trial.train_loader.sampler.set_indices(None)  # statistics passes in on_epoch_start see every sample
        if trial.method.restart_from_best(epoch) and best.model is not None:
            _restart_from_best(trial, best)
        row.update(
            {f"train/{k}": v for k, v in trial.method.on_epoch_start(trial.model, trial.epoch_context(epoch)).items()}
        )
        _set_epoch_samples(trial, epoch)
        row.update(_train_epoch(trial, epoch, progress))
        row.update(
            {f"train/{k}": v for k, v in trial.method.on_epoch_end(trial.model, trial.epoch_context(epoch)).items()}
        )
        _step_schedulers(trial, row, epoch)
        trial.runtime.broadcast_buffers(trial.model)  # every rank evaluates what the checkpoint holds
        row.update(trial.eval_split(trial.val_loader, "val"))
        row["time/epoch_s"] = time.perf_counter() - tic
        score = row.get(train_cfg.eval.select_metric)
        if score is None:
            reported = ", ".join(sorted(row))
            raise ConfigError(
                "eval.select_metric", f"{train_cfg.eval.select_metric!r} is not reported; reported: {reported}"
            )
        if (bad := first_nonfinite(row, trial.model)) is not None:  # stop: no checkpoint, no test, no rerun
            history.append(row)
            reporter.report(row, None)
            raise Diverged(epoch + 1, *bad, summarize(cfg, trial.data, best, history, diverged=(epoch + 1, *bad)))
        if best.improved_by(score, train_cfg.eval.select_mode, row.get(TIE_BREAK)):
            best = BestState(
                epoch + 1,
                score,
                {k: v for k, v in row.items() if k.startswith("val/")},
                copy.deepcopy(trial.model.state_dict()),
                copy.deepcopy(trial.method.state_dict()),
            )
        last = epoch + 1 == train_cfg.epochs
        if last:
            row.update(_test_of_best(trial, best))
        history.append(row)
        if trial.runtime.is_main:
            warn_if_stuck(history, trial.data.num_classes)
        save = last or (epoch + 1) % train_cfg.checkpoint.every == 0
        reporter.report(row, _state(trial, epoch + 1, best, history) if save else None)
    return summarize(cfg, trial.data, best, history)


def _restart_from_best(trial: Trial, best: BestState) -> None:
    """The method's ``restart_from_best`` hook: best-validation weights back, optimizer state cleared."""
    trial.model.load_state_dict(best.model)
    for optimizer in trial.optimizers.values():
        optimizer.state.clear()


def _test_of_best(trial: Trial, best: BestState) -> dict[str, Any]:
    """Test metrics of the best-validation state; the last state is put back afterwards."""
    last_model, last_method = copy.deepcopy(trial.model.state_dict()), copy.deepcopy(trial.method.state_dict())
    trial.model.load_state_dict(best.model)
    trial.method.load_state_dict(best.method)
    out = trial.eval_split(trial.test_loader, "test", missing=trial.cfg.train.eval.missing)
    if trial.cfg.train.eval.protocol:  # probes and Shapley values, the same for every method
        out.update(common_protocol(trial))
    out["best/epoch"] = best.epoch
    trial.model.load_state_dict(last_model)
    trial.method.load_state_dict(last_method)
    return out


def summarize(
    cfg: Resolved, data: DataBundle, best: BestState, history: list[dict[str, Any]], diverged: tuple | None = None
) -> dict[str, Any]:
    """The trial's summary; ``diverged = (epoch, metric, value)`` marks a trial stopped by a non-finite loss."""
    final = history[-1]
    test = {k: v for k, v in final.items() if k.startswith("test/")}
    stopped = {"diverged": dict(zip(("epoch", "metric", "value"), diverged, strict=True))} if diverged else {}
    return {
        "status": "diverged" if diverged else "completed",
        **stopped,
        "method": cfg.train.method,
        "dataset": cfg.train.dataset,
        "seed": cfg.train.seed,
        "epochs": cfg.train.epochs,
        "best_epoch": best.epoch,
        "selection": selection_rule(cfg.train.eval.select_metric, cfg.train.eval.select_mode),
        **best.metrics,
        **chance_summary(history, best.epoch, data.num_classes),
        **test,
        "eval/missing_scheme": METHODS.get(cfg.train.method).missing_scheme,
        "eval/shapley_scheme": SHAPLEY_SCHEME if cfg.train.eval.protocol else None,
        "config": cfg.to_dict(),
        "data_info": data.info,
        "modalities": list(data.modalities),
    }
