"""Seconds per training step of a 2-rank gloo DDP ``joint`` trial, side by side in the same two processes:
the default step-hook averaging, the overlapped one (``ddp.overlap``), torch DDP, and no averaging at all
(each rank alone: the floor).

Run: ``python tests/perf/bench_ddp_overlap.py [--rounds 5] [--feature-dim 512] [--bucket-mb 1]`` (a
measurement, not a test: pytest does not collect it). Each round runs one training epoch of every path,
in rotating order, over the same shards; the medians and the ratios to the step-hook path are printed by
rank 0. The first three paths end in the same weights (``tests/test_grad_sync.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel

from trainables.config import resolve
from trainables.loop import _train_epoch, build_trial
from trainables.optim import make_optimizer
from trainables.runtime import Runtime


def _config(args: argparse.Namespace, overlap: bool) -> dict:
    return {
        "method": "joint",
        "dataset": "mfeat",
        "epochs": 1,
        "device": "cpu",
        "data": {"train_per_class": args.train_per_class, "val_per_class": 10, "test_per_class": 10},
        "loader": {"batch_size": args.batch},
        "model": {"feature_dim": args.feature_dim, "encoders": {"pix": "mlp"}},
        "ddp": {"overlap": overlap, "bucket_mb": args.bucket_mb},
    }


def _worker(rank: int, init: str, args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    runtime = lambda n: Runtime(torch.device("cpu"), rank, n)
    step, over = (build_trial(resolve(_config(args, o)), runtime(2)) for o in (False, True))
    plain = build_trial(resolve(_config(args, False)), runtime(1))
    alone = build_trial(resolve(_config(args, False)), runtime(1))  # no averaging at all: the floor
    alone = dataclasses.replace(alone, train_loader=list(step.train_loader))
    ddp = DistributedDataParallel(plain.model, bucket_cap_mb=args.bucket_mb)
    ddp_opt = make_optimizer(plain.cfg.train.optim, ddp.parameters())
    batches = list(step.train_loader)

    def torch_ddp(epoch: int) -> None:
        for b in batches:
            loss = F.cross_entropy(ddp(b["inputs"]).logits, b["label"])
            ddp_opt.zero_grad(set_to_none=True)
            loss.backward()
            ddp_opt.step()
        torch.zeros(1).sum().item()

    over_t = over
    paths = {
        "step-hook": lambda e: _train_epoch(step, e, False),
        "overlap": lambda e: _train_epoch(over_t, e, False),
        "torch DDP": torch_ddp,
        "no sync": lambda e: _train_epoch(alone, e, False),
    }
    times: dict[str, list[float]] = {k: [] for k in paths}
    names = list(paths)
    for r in range(args.rounds + 1):  # round 0 warms up
        for name in names[r % len(names) :] + names[: r % len(names)]:
            dist.barrier()
            tic = time.perf_counter()
            paths[name](r)
            dist.barrier()
            if r:
                times[name].append((time.perf_counter() - tic) / len(batches))
    if rank == 0:
        med = {k: statistics.median(v) for k, v in times.items()}
        params = sum(p.numel() for p in step.model.parameters())
        print(
            f"2 gloo ranks, joint on mfeat, {params} parameters, batch {args.batch}, {len(batches)} steps/epoch, "
            f"bucket {args.bucket_mb} MiB, {args.threads} thread(s) per rank, median of {args.rounds} rounds"
        )
        for k, v in med.items():
            print(f"{k}: {1e3 * v:.2f} ms/step, ratio to step-hook {v / med['step-hook']:.3f}")
        syncs = over.runtime.grad_syncs
        print(f"overlap: {sum(s.used for s in syncs)} launched all-reduces used, {sum(s.redone for s in syncs)} redone")
    dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--feature-dim", type=int, default=512)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--train-per-class", type=int, default=60)
    ap.add_argument("--bucket-mb", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(f"file://{tmp}/pg", args), nprocs=2, join=True)


if __name__ == "__main__":
    main()
