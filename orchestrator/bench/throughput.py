"""Throughput measurements ``mmbal bench`` prints: the loop against a plain PyTorch loop, and the
ResNet-18 audio-visual trial against its model-only bound.

Both compare two things side by side in one process, alternating rounds so that a change of the
machine's load hits both alike, and take medians; nothing is asserted on time (the numbers are
reported). Neither writes anything but a temporary fabricated data set.

* :func:`step_ratio`: the loop's training epoch (``trainables.loop._train_epoch``: the method's
  ``training_step`` plus the loop's statistics) of ``joint`` against a plain loop (forward, cross-entropy,
  ``zero_grad``, backward, step) on a copy of the same model, the same optimizer settings and the same
  collated batches. Both end in identical weights, which :class:`StepRatio` records.
* :func:`av_bench`: ``joint`` with ResNet-18 audio and visual encoders on CREMA-D fabricated in the
  OGM-GE layout and prepared (``data.profile: prepared``), the trial's real DataLoader (workers, pinned
  memory) feeding the loop's training epoch, against the same model's training step on synthetic
  tensors already on the device (the bound: no data at all). Also the fraction of the epoch the host
  waited for the next batch, and the peak memory (CUDA: allocated by torch; CPU: the process's RSS).
"""

from __future__ import annotations

import copy
import dataclasses
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from trainables.config import resolve
from trainables.loop import Trial, _train_epoch, build_trial
from trainables.optim import make_optimizer
from trainables.runtime import Runtime


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclasses.dataclass
class StepRatio:
    """Seconds per training step of mmbal's loop and of a plain loop (medians over rounds)."""

    mmbal_s: float
    plain_s: float
    ratio: float
    steps: int  # steps per epoch
    rounds: int
    max_param_diff: float  # largest |w_mmbal - w_plain| after all rounds: 0 = the same computation

    def fields(self) -> dict[str, float]:
        return {
            "step/mmbal_ms": 1e3 * self.mmbal_s,
            "step/plain_ms": 1e3 * self.plain_s,
            "step/ratio": self.ratio,
            "step/max_param_diff": self.max_param_diff,
        }


def _plain_epoch(trial: Trial, model: torch.nn.Module, opt: torch.optim.Optimizer, batches: list) -> float:
    """What a hand-written PyTorch loop does per batch; the mean loss (read once, at the end)."""
    model.train()
    total = torch.zeros((), device=trial.runtime.device)
    for batch in batches:
        b = trial.to_device(batch)
        with trial.autocast():
            loss = F.cross_entropy(model(b["inputs"]).logits, b["label"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.detach()
    return total.item() / max(len(batches), 1)


def step_ratio(config: dict[str, Any], rounds: int = 5) -> StepRatio:
    """mmbal's training epoch of ``joint`` vs a plain loop, same model, optimizer settings and batches."""
    cfg = resolve({**config, "method": "joint"})
    trial = build_trial(cfg, Runtime.local(cfg.train.device))
    batches = list(trial.train_loader)
    plain = copy.deepcopy(trial.model)
    plain_opt = make_optimizer(cfg.train.optim, plain.parameters())
    ours = dataclasses.replace(trial, train_loader=batches)
    device = trial.runtime.device
    times: dict[str, list[float]] = {"mmbal": [], "plain": []}
    runs = {
        "mmbal": lambda e: _train_epoch(ours, e, False),
        "plain": lambda e: _plain_epoch(trial, plain, plain_opt, batches),
    }
    for r in range(rounds + 1):  # round 0 warms up both
        for name in list(runs) if r % 2 == 0 else list(runs)[::-1]:
            _sync(device)
            tic = time.perf_counter()
            runs[name](r)
            _sync(device)
            if r:
                times[name].append((time.perf_counter() - tic) / len(batches))
    diff = max((a - b).abs().max().item() for a, b in zip(trial.model.parameters(), plain.parameters(), strict=True))
    med = {k: statistics.median(v) for k, v in times.items()}
    return StepRatio(med["mmbal"], med["plain"], med["mmbal"] / med["plain"], len(batches), rounds, diff)


class TimedLoader:
    """A DataLoader whose ``next()`` time (the host waiting for data) is added up."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.wait_s = 0.0
        self.samples = 0

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)

    def __iter__(self) -> Iterator[Any]:
        it = iter(self.loader)
        while True:
            tic = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                return
            self.wait_s += time.perf_counter() - tic
            self.samples += len(batch["label"])
            yield batch


@dataclasses.dataclass
class AVBench:
    """The audio-visual ResNet-18 trial against its model-only bound."""

    trial_sps: float  # samples/s of the training epochs (loader + loop), warm-up epoch dropped
    bound_sps: float  # samples/s of the model's training step on synthetic tensors on the device
    ratio: float
    data_wait: float  # fraction of the timed epochs the host spent waiting for the next batch
    peak_mib: float
    peak_kind: str
    device: str
    batch: int
    workers: int
    image_size: int
    samples: int  # per epoch
    epochs: int

    def fields(self) -> dict[str, float]:
        return {
            "av/trial_samples_per_s": self.trial_sps,
            "av/bound_samples_per_s": self.bound_sps,
            "av/ratio": self.ratio,
            "av/data_wait_fraction": self.data_wait,
            "av/peak_mib": self.peak_mib,
        }


def _prepared_cremad(
    root: Path, clips: int, frame_hw: tuple[int, int], size: int, workers: int, data: dict[str, Any]
) -> Path:
    from orchestrator.bench.loader import fabricate_cremad_ogm
    from trainables.data import DATASETS
    from trainables.data.io.prepare import prepare

    if not (root / "train.csv").is_file():
        fabricate_cremad_ogm(root, clips, frame_hw)
    recipe = DATASETS.get("cremad").recipes()["ogm_ge"]
    params = recipe.make_params({"size": size}, data)
    prepare("cremad", recipe, root, root / "prepared", params, workers=max(workers, 1), log=lambda s: None)
    return root / "prepared"


def _bound(trial: Trial, shapes: dict[str, tuple], batch: int, steps: int) -> float:
    """Samples/s of the trial's model alone: forward, loss, backward and step on synthetic device tensors."""
    device = trial.runtime.device
    model = copy.deepcopy(trial.model).train()
    opt = make_optimizer(trial.cfg.train.optim, model.parameters())
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = {m: torch.rand((batch, *s), generator=gen).to(device) for m, s in shapes.items()}
    y = torch.randint(trial.data.num_classes, (batch,), generator=gen).to(device)
    x = trial.to_device({"inputs": x, "label": y, "index": None})

    def step() -> None:
        with trial.autocast():
            loss = F.cross_entropy(model(x["inputs"]).logits, x["label"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    _sync(device)
    tic = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return steps * batch / (time.perf_counter() - tic)


def av_bench(
    device: str = "cuda",
    small: bool = False,
    root: Path | None = None,
    workers: int = 4,
    batch: int = 64,
    epochs: int = 3,
    overrides: dict[str, Any] | None = None,
    prefetch: bool = False,
    log: Callable[[str], None] = print,
) -> AVBench:
    """ResNet-18 audio-visual ``joint`` on prepared CREMA-D: trial samples/s, model-only bound, their ratio.

    Args:
        small: a tiny run that finishes in seconds on CPU (for tests): 16 clips, 32 px frames, 0.5 s of
            audio in a 33 x 173 spectrogram, batch 4.
        root: where to fabricate and prepare the data (a temporary folder when None; reused when it
            already holds them).
        overrides: extra trial config (e.g. ``{"precision": "bf16"}``), applied to trial and bound alike.
        prefetch: ``loader.prefetch`` of the trial.
    """
    clips, frame_hw, size = (16, (24, 32), 32) if small else (1024, (360, 480), 224)
    audio: dict[str, Any] = {}  # the OGM-GE spectrogram: 3 s at 22,050 Hz, STFT 512 / hop 353
    if small:
        batch, workers, epochs = 4, 0, 2
        audio = {"audio_seconds": 0.5, "n_fft": 64, "hop": 64}
    root = Path(root or tempfile.mkdtemp(prefix="mmbal-av-bench-"))
    tic = time.perf_counter()
    prepared = _prepared_cremad(root, clips, frame_hw, size, workers, audio)
    log(f"av: {clips} clips fabricated and prepared under {root} in {time.perf_counter() - tic:.1f} s")
    cfg = {
        "method": "joint",
        "dataset": "cremad",
        "data_root": str(prepared),
        "device": device,
        "epochs": epochs,
        "data": {"profile": "prepared", "image_size": size, "num_frames": 1},
        "loader": {"batch_size": batch, "num_workers": workers, "prefetch": prefetch},
        **(overrides or {}),
    }
    trial = build_trial(resolve(cfg), Runtime.local(device))
    dev = trial.runtime.device
    timed = TimedLoader(trial.train_loader)
    trial = dataclasses.replace(trial, train_loader=timed)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    seconds = wait = 0.0
    samples = 0
    for epoch in range(epochs):
        timed.sampler.set_epoch(epoch)
        timed.wait_s, timed.samples = 0.0, 0
        _sync(dev)
        tic = time.perf_counter()
        _train_epoch(trial, epoch, False)  # ends by reading the statistics: the device is done
        if epoch > 0 or epochs == 1:  # the first epoch starts workers and warms caches up
            seconds += time.perf_counter() - tic
            wait += timed.wait_s
            samples += timed.samples
    first = next(iter(timed.loader))
    shapes = {m: tuple(t.shape[1:]) for m, t in first["inputs"].items()}
    bound = _bound(trial, shapes, batch, max(len(timed), 3))
    trial_sps = samples / seconds
    if dev.type == "cuda":
        peak, kind = torch.cuda.max_memory_allocated(dev) / 2**20, "cuda max_memory_allocated"
    else:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
        peak, kind = rss / (2**20 if sys.platform == "darwin" else 2**10), "process max RSS"
    return AVBench(
        trial_sps,
        bound,
        trial_sps / bound,
        wait / seconds,
        peak,
        kind,
        str(dev),
        batch,
        workers,
        size,
        len(timed) and samples // max(epochs - 1, 1),
        epochs,
    )
