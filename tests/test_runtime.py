"""Gradient averaging of a DDP trial, on two real gloo processes."""

import json

import torch
import torch.distributed as dist
from gloo_pair import end_process_group, two_gloo_ranks

from trainables.runtime import Runtime


def _worker(rank: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    rt = Runtime(torch.device("cpu"), rank, 2)
    w, b, c = (torch.nn.Parameter(torch.zeros(3)) for _ in range(3))
    opt = torch.optim.SGD([w, b, c], lr=1.0)
    rt.sync_gradients(opt)
    w.grad = torch.full((3,), 1.0 + 2 * rank)  # 1 on rank 0, 3 on rank 1 -> mean 2
    if rank == 0:
        b.grad = torch.full((3,), 2.0)  # only rank 0 has it: counts as 0 on rank 1 -> mean 1
    # c has no gradient anywhere: it must stay untouched (and no collective may hang on it)
    opt.step()
    with open(f"{out}.{rank}", "w") as fh:
        json.dump({"w": w.tolist(), "b": b.tolist(), "c_grad": c.grad is None, "c": c.tolist()}, fh)
    end_process_group()


def test_gradients_are_averaged_identically_even_when_one_rank_lacks_one(tmp_path):
    got = [json.loads(p.read_text()) for p in two_gloo_ranks(_worker, tmp_path)]
    assert got[0] == got[1]  # the ranks stay in lockstep
    assert got[0]["w"] == [-2.0] * 3 and got[0]["b"] == [-1.0] * 3
    assert got[0]["c_grad"] and got[0]["c"] == [0.0] * 3


def _bn_worker(rank: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    rt = Runtime(torch.device("cpu"), rank, 2)
    bn = torch.nn.BatchNorm1d(3, affine=False)
    bn(torch.randn(8, 3) + 10.0 * rank)  # each rank's running statistics follow its own batches
    rt.broadcast_buffers(bn)
    with open(f"{out}.{rank}", "w") as fh:
        json.dump({"mean": bn.running_mean.tolist(), "var": bn.running_var.tolist()}, fh)
    end_process_group()


def test_buffers_are_rank_zeros_after_broadcast(tmp_path):
    # without it each rank evaluated its shard with its own BatchNorm statistics, not the checkpoint's
    got = [json.loads(p.read_text()) for p in two_gloo_ranks(_bn_worker, tmp_path)]
    assert got[0] == got[1] and max(got[0]["mean"]) < 5.0  # rank 0's (inputs around 0, not 10)
