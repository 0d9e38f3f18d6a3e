"""No host sync per training step: a GPU trial must never wait for the device inside an epoch.

``torch.cuda.set_sync_debug_mode`` needs a GPU, so on CPU the syncs are counted where they would
happen: a dispatch mode sees every op that reads a tensor's value on the host (``.item()``,
``bool(t)``, ``float(t)``, ``int(t)``: ``aten._local_scalar_dense``), every op whose output size
depends on values (``nonzero``, boolean-mask indexing, ``masked_select``, ``torch.equal``), and
``Tensor.cpu/tolist/numpy`` are patched (on a CPU tensor they never reach the dispatcher).
"""

from __future__ import annotations

import contextlib
from collections import Counter

import pytest
import torch
from conftest import tiny_config
from torch.utils._python_dispatch import TorchDispatchMode

from trainables.config import resolve
from trainables.evaluate import evaluate
from trainables.loop import _train_epoch, build_trial
from trainables.methods import METHODS
from trainables.methods.base import StepState
from trainables.runtime import Runtime

aten = torch.ops.aten
SYNC_OPS = {aten._local_scalar_dense.default, aten.nonzero.default, aten.masked_select.default, aten.equal.default}
BOOL_INDEX_OPS = {aten.index.Tensor, aten.index_put.default, aten.index_put_.default}

# Params that switch every mechanism on from the first epochs (warm-ups and stage switches shortened).
ACTIVE = {
    "opm": {"warmup_epochs": 0, "ogm": True},
    "dmrnet": {"weak_epochs": 1},
    "greedy": {"start_epoch": 0},
    "di_mml": {"duc_start": 0, "stage2_epochs": 1},
}
# Syncs per step a method may keep, with the reason.
ALLOWED = {
    "opm": (1, "bool of the p_exe draw: a CPU RNG tensor, read on the host without waiting for the device"),
}
# Known to sync per step today.
PENDING: dict[str, str] = {}


class HostSyncs(TorchDispatchMode):
    """Counts, by name, the ops that make the host wait for the device."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in SYNC_OPS:
            self.counts[str(func)] += 1
        elif func in BOOL_INDEX_OPS:
            indices = args[1] if len(args) > 1 else kwargs.get("indices", [])
            if any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices):
                self.counts[f"{func} (boolean mask)"] += 1
        return func(*args, **kwargs)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@contextlib.contextmanager
def host_syncs(monkeypatch):
    """Context that yields a :class:`HostSyncs` counting everything that would sync on a GPU."""
    mode = HostSyncs()
    with monkeypatch.context() as mp:
        for name in ("cpu", "tolist", "numpy"):
            original = getattr(torch.Tensor, name)

            def counted(self, *a, _name=name, _original=original, **kw):
                mode.counts[f"Tensor.{_name}"] += 1
                return _original(self, *a, **kw)

            mp.setattr(torch.Tensor, name, counted)
        with mode:
            yield mode


def test_the_detector_sees_each_kind_of_sync(monkeypatch):
    x = torch.randn(5)
    reads = [
        lambda: x.sum().item(),
        lambda: bool(x.sum() > 0),
        lambda: float(x.sum()),
        lambda: int(x.argmax()),
        lambda: x.tolist(),
        lambda: x.cpu(),
        lambda: x[x > 0],
        lambda: torch.equal(x, x),
    ]
    for read in reads:
        with host_syncs(monkeypatch) as syncs:
            read()
        assert syncs.total >= 1
    with host_syncs(monkeypatch) as syncs:
        (x * 2 + x[torch.tensor([0, 1])].sum()).softmax(0)
    assert syncs.total == 0


def _params(name: str) -> list:
    marks = [pytest.mark.xfail(reason=PENDING[name], strict=False)] if name in PENDING else []
    return pytest.param(name, marks=marks)


def _walk_steps(name: str, device: str, around_step) -> None:
    """Three epochs of ``name`` (every mechanism on, ``ACTIVE``), each training step run inside
    ``around_step(epoch, i)`` (a context manager). Epoch hooks run outside it: they may read the device
    once per epoch; batches are moved to the device outside it too (the loop's prefetch does that)."""
    trial = build_trial(resolve(tiny_config(name, epochs=3, params=ACTIVE.get(name, {}))), Runtime.local(device))
    method, model = trial.method, trial.model
    for epoch in range(3):
        trial.train_loader.sampler.set_epoch(epoch)
        method.on_epoch_start(model, trial.epoch_context(epoch))
        model.train()
        batches = [trial.to_device(b) for b in trial.train_loader]
        for i, batch in enumerate(batches):
            with around_step(epoch, i):
                method.training_step(model, batch, trial.optimizers, StepState(epoch, i, len(batches), i))
        method.on_epoch_end(model, trial.epoch_context(epoch))


@pytest.mark.parametrize("name", [_params(n) for n in METHODS.names()])
def test_training_step_never_waits_for_the_device(monkeypatch, name):
    allowed, reason = ALLOWED.get(name, (0, ""))

    @contextlib.contextmanager
    def counted(epoch: int, i: int):
        with host_syncs(monkeypatch) as syncs:
            yield
        assert syncs.total <= allowed, f"{name} epoch {epoch} step {i}: {dict(syncs.counts)} ({reason or 'none'})"

    _walk_steps(name, "cpu", counted)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="torch.cuda.set_sync_debug_mode needs a GPU")
@pytest.mark.parametrize("name", [n for n in METHODS.names() if n not in ALLOWED])
def test_training_step_on_a_gpu_never_waits_for_it(name):
    """What the CPU count cannot see: host-to-device copies from pageable memory (a CPU tensor moved
    to the GPU inside a step) synchronise the stream; CUDA's sync debug mode raises on any sync."""

    @contextlib.contextmanager
    def strict(epoch: int, i: int):
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            yield
        finally:
            torch.cuda.set_sync_debug_mode("default")

    _walk_steps(name, "cuda", strict)


def _trial_of(train_per_class: int):
    cfg = tiny_config("joint", epochs=1, data={"train_per_class": train_per_class, "val_per_class": train_per_class})
    return build_trial(resolve(cfg), Runtime.local("cpu"))


def test_an_epoch_reads_the_device_a_fixed_number_of_times_whatever_its_length(monkeypatch):
    counts = []
    for n in (4, 16):  # 3 and 10 batches of 16
        trial = _trial_of(n)
        with host_syncs(monkeypatch) as syncs:
            _train_epoch(trial, 0, progress=False)
        counts.append(syncs.total)
    assert counts[0] == counts[1], counts


def test_evaluation_reads_the_device_a_fixed_number_of_times_whatever_the_split_size(monkeypatch):
    counts = []
    for n in (4, 16):
        trial = _trial_of(n)
        loader = torch.utils.data.DataLoader(trial.data.val, batch_size=8)
        with host_syncs(monkeypatch) as syncs:
            args = (trial.modalities, trial.data.num_classes, trial.to_device, trial.runtime.all_reduce)
            evaluate(trial.method, trial.model, loader, "val", *args, missing=True)
        counts.append(syncs.total)
    assert counts[0] == counts[1], counts
