"""GPU-readiness options, exercised on CPU: bf16 autocast for every method (and fp32 islands inside it),
channels_last, torch.compile of the encoders, and the device prefetcher."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_config

from trainables.acceleration import DevicePrefetcher, to_memory_format
from trainables.config import resolve
from trainables.loop import build_trial, run_trial
from trainables.methods import METHODS
from trainables.methods.base import StepState
from trainables.precision import fp32, full_precision
from trainables.reporting import JsonlReporter
from trainables.runtime import Runtime


def _trial(name: str = "joint", **extra):
    return build_trial(resolve(tiny_config(name, **extra)), Runtime.local("cpu"))


@pytest.mark.parametrize("name", METHODS.names())
def test_bf16_autocast_runs_every_method_with_finite_loss(name):
    trial = _trial(name, precision="bf16")
    dtypes = set()
    for mod in trial.model.modules():
        if isinstance(mod, torch.nn.Linear | torch.nn.Conv2d):
            mod.register_forward_hook(lambda m, i, o: dtypes.add(o.dtype))
    trial.model.train()
    for i, batch in enumerate(trial.train_loader):
        with trial.autocast():
            out = trial.method.training_step(
                trial.model, trial.to_device(batch), trial.optimizers, StepState(0, i, 9, i)
            )
        assert math.isfinite(float(out["loss"]))
        if i == 1:
            break
    assert torch.bfloat16 in dtypes  # the step really ran in bf16
    assert all(p.dtype == torch.float32 for p in trial.model.parameters())  # weights stay fp32


def test_bf16_trial_reports_finite_metrics(tmp_path):
    summary = run_trial(tiny_config("joint", epochs=1, precision="bf16"), JsonlReporter(tmp_path))
    assert math.isfinite(summary["val/acc"]) and math.isfinite(summary["test/acc"])


def test_fp32_islands_inside_bf16_autocast():
    a = torch.randn(8, 8)

    @fp32
    def gram(x: torch.Tensor) -> torch.Tensor:
        return x.t() @ x

    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (a @ a).dtype == torch.bfloat16
        with full_precision():
            assert (a @ a).dtype == torch.float32
        assert gram(a.bfloat16()).dtype == torch.float32  # bf16 inputs are cast up as well
        inside = gram(a)
        assert (a @ a).dtype == torch.bfloat16  # autocast is back after the island
    assert torch.equal(inside, a.t() @ a)  # exactly the fp32 result computed without autocast


def test_channels_last_model_and_inputs_give_the_same_step():
    plain, nhwc = _trial("joint"), _trial("joint", channels_last=True)
    convs = [m for m in nhwc.model.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    assert not any(c.weight.is_contiguous(memory_format=torch.channels_last) for c in plain.model.modules()
                   if isinstance(c, torch.nn.Conv2d) and c.in_channels > 1)  # fmt: skip
    rgb = to_memory_format(torch.randn(2, 3, 4, 4), True)
    assert rgb.is_contiguous(memory_format=torch.channels_last) and not rgb.is_contiguous()
    assert to_memory_format(torch.randn(2, 3, 4, 4), False).is_contiguous()
    batch = next(iter(plain.train_loader))
    image = next(x for x in nhwc.to_device(batch)["inputs"].values() if x.dim() == 4)
    assert image.is_contiguous(memory_format=torch.channels_last)
    outs = [
        t.method.training_step(t.model, t.to_device(batch), t.optimizers, StepState(0, 0, 1, 0)) for t in (plain, nhwc)
    ]
    assert torch.allclose(outs[0]["loss"], outs[1]["loss"], atol=1e-5)
    for p, q in zip(plain.model.parameters(), nhwc.model.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-5)


def test_compile_wraps_each_encoder_in_place(tmp_path):
    trial = _trial("joint", compile="eager")  # the eager backend: compiles the graph capture, not kernels
    assert all(e._compiled_call_impl is not None for e in trial.model.encoders.values())
    assert set(trial.model.state_dict()) == set(_trial("joint").model.state_dict())  # names unchanged
    summary = run_trial(tiny_config("joint", epochs=1, compile="eager"), JsonlReporter(tmp_path))
    assert math.isfinite(summary["test/acc"])


def test_prefetcher_keeps_one_batch_ahead_and_yields_moved_batches():
    pulled = []

    def loader():
        for i in range(4):
            pulled.append(i)
            yield {"x": torch.full((2,), float(i))}

    seen = []
    for b in DevicePrefetcher(list(loader()), lambda b: {"x": b["x"] + 100}, torch.device("cpu")):
        seen.append(b["x"][0].item())
    assert seen == [100, 101, 102, 103]
    pulled.clear()

    class Gen:
        def __iter__(self):
            return loader()

        def __len__(self):
            return 4

    moved = []
    it = iter(DevicePrefetcher(Gen(), lambda b: moved.append(int(b["x"][0])) or b, torch.device("cpu")))
    next(it)
    assert pulled == [0, 1] and moved == [0, 1]  # batch 1's copy was issued before batch 0 was handed out


def test_prefetch_changes_no_result(tmp_path):
    straight = run_trial(tiny_config("ogm_ge", epochs=2), JsonlReporter(tmp_path / "a"))
    prefetched = run_trial(
        tiny_config("ogm_ge", epochs=2, loader={"batch_size": 16, "prefetch": True}), JsonlReporter(tmp_path / "b")
    )
    straight["config"].pop("loader"), prefetched["config"].pop("loader")
    assert prefetched == straight
