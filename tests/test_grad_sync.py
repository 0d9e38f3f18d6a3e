"""Overlapped DDP gradient averaging (``ddp.overlap``) on two real gloo processes: the same parameters as
the default step-hook path (bit for bit) for methods with several backward passes and steps per batch or
gradients edited between backward and step, and as torch DDP for ``joint``."""

from __future__ import annotations

import torch
import torch.distributed as dist
from conftest import tiny_config
from gloo_pair import end_process_group, two_gloo_ranks
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel

from trainables.config import resolve
from trainables.grad_sync import buckets_of
from trainables.loop import _train_epoch, build_trial
from trainables.optim import make_optimizer
from trainables.runtime import Runtime

METHODS = ["joint", "ogm_ge", "mla", "mie", "greedy", "di_mml"]
EPOCHS = 2


def _config(method: str, overlap: bool) -> dict:
    # bucket_mb small enough that the tiny model has several buckets
    return tiny_config(method, epochs=EPOCHS, ddp={"overlap": overlap, "bucket_mb": 0.01})


def _ours(method: str, overlap: bool) -> dict:
    cfg = resolve(_config(method, overlap))
    trial = build_trial(cfg, Runtime(torch.device("cpu"), dist.get_rank(), 2))
    for epoch in range(EPOCHS):
        trial.train_loader.sampler.set_epoch(epoch)
        trial.method.on_epoch_start(trial.model, trial.epoch_context(epoch))
        _train_epoch(trial, epoch, False)
        trial.method.on_epoch_end(trial.model, trial.epoch_context(epoch))
    syncs = trial.runtime.grad_syncs
    counts = {k: sum(getattr(s, k) for s in syncs) for k in ("launches", "used", "redone")}
    return {"weights": {k: v.detach().clone() for k, v in trial.model.named_parameters()}, **counts}


def _torch_ddp() -> dict:
    """``joint`` by hand on the same shards: torch DDP around the model, a plain loop."""
    cfg = resolve(_config("joint", False))
    trial = build_trial(cfg, Runtime(torch.device("cpu"), dist.get_rank(), 1))  # no step hook: DDP averages
    trial_sharded = build_trial(cfg, Runtime(torch.device("cpu"), dist.get_rank(), 2))  # the same shards
    model = DistributedDataParallel(trial.model)
    opt = make_optimizer(cfg.train.optim, model.parameters())
    for epoch in range(EPOCHS):
        trial_sharded.train_loader.sampler.set_epoch(epoch)
        for batch in trial_sharded.train_loader:
            loss = F.cross_entropy(model(batch["inputs"]).logits, batch["label"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return {"weights": {k: v.detach().clone() for k, v in trial.model.named_parameters()}}


def _worker(rank: int, init: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    results = {f"{m}/{'overlap' if o else 'step'}": _ours(m, o) for m in METHODS for o in (False, True)}
    results["joint/torch_ddp"] = _torch_ddp()
    torch.save(results, f"{out}.{rank}")
    end_process_group()


def test_overlapped_sync_gives_the_weights_of_the_step_hook_and_of_torch_ddp(tmp_path):
    ranks = [torch.load(p, weights_only=False) for p in two_gloo_ranks(_worker, tmp_path)]
    for case in ranks[0]:
        for k, v in ranks[0][case]["weights"].items():  # ranks in lockstep
            assert torch.equal(v, ranks[1][case]["weights"][k]), (case, k)
    got = ranks[0]
    for m in METHODS:
        step, over = got[f"{m}/step"], got[f"{m}/overlap"]
        for k, v in step["weights"].items():
            assert torch.equal(v, over["weights"][k]), (m, k)
        assert over["launches"] > 0, m  # all-reduces really started from the backward hooks
    assert got["joint/overlap"]["redone"] == 0 and got["joint/overlap"]["used"] == got["joint/overlap"]["launches"]
    assert got["ogm_ge/overlap"]["redone"] > 0  # OGM-GE edits encoder gradients after backward: redone
    for k, v in got["joint/step"]["weights"].items():
        assert torch.allclose(v, got["joint/torch_ddp"]["weights"][k], rtol=0, atol=1e-6), k


def test_buckets_group_consecutive_parameters_by_dtype_and_size():
    ps = [
        torch.nn.Parameter(torch.zeros(n, dtype=d))
        for n, d in [(4, torch.float32), (4, torch.float64), (4, torch.float32), (4, torch.float32)]
    ]
    groups = buckets_of(ps, bucket_bytes=32)
    index = {id(p): i for i, p in enumerate(ps)}
    assert [[index[id(p)] for p in g] for g in groups] == [[0, 2], [1], [3]]
