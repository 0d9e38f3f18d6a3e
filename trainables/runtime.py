"""Where a trial runs: device, seeding, and the (optional) process group of a DDP trial."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist


@dataclass
class Runtime:
    """Device and rank of this process. ``world_size > 1`` means a DDP trial (Ray Train sets up
    ``torch.distributed``; gloo on CPU, NCCL on GPU)."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    _hooked: set[int] = field(default_factory=set, repr=False)  # parameters an overlapped sync owns
    grad_syncs: list = field(default_factory=list, repr=False)  # the overlapped syncs (their counters)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def local(cls, device: str = "auto") -> Runtime:
        return cls(pick_device(device))

    @classmethod
    def from_process_group(cls, device: str = "auto") -> Runtime:
        """The runtime of a process inside an initialised ``torch.distributed`` group."""
        if not (dist.is_available() and dist.is_initialized()):
            return cls.local(device)
        dev = pick_device(device)
        if dev.type == "cuda":
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", torch.cuda.current_device())))
        return cls(dev, dist.get_rank(), dist.get_world_size())

    def all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        """Sum ``t`` over ranks in place (a no-op on one process). CPU tensors travel via the
        group's device when the backend needs it (NCCL)."""
        if self.world_size == 1:
            return t
        if dist.get_backend() == "nccl" and t.device.type != "cuda":
            buf = t.to(self.device)
            dist.all_reduce(buf)
            t.copy_(buf.cpu())
        else:
            dist.all_reduce(t)
        return t

    def sync_gradients(self, optimizer: torch.optim.Optimizer, overlap: bool = False, bucket_mb: float = 25.0) -> None:
        """Average gradients over ranks before every ``optimizer.step()``.

        Hooked on the optimizer rather than wrapping the model in DDP so that every method works
        unchanged, including those that take several backward passes or optimizer steps per batch
        (MLA, SAM-based MIE): whatever gradient a method built is averaged right before it is used.
        With ``overlap`` the all-reduces start during backward instead
        (:class:`trainables.grad_sync.OverlappedGradSync`), with the same result.
        """
        if self.world_size == 1:
            return
        if overlap:
            from trainables.grad_sync import OverlappedGradSync

            sync = OverlappedGradSync(optimizer, self.world_size, self.all_reduce, bucket_mb, self._hooked)
            self.grad_syncs.append(sync)
            return

        def hook(opt: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
            average_gradients([p for g in opt.param_groups for p in g["params"]], self.all_reduce, self.world_size)

        optimizer.register_step_pre_hook(hook)

    def broadcast_model(self, model: torch.nn.Module) -> None:
        """Start every rank from rank 0's weights and buffers."""
        if self.world_size == 1:
            return
        for t in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(t.data, src=0)

    def broadcast_buffers(self, model: torch.nn.Module) -> None:
        """Give every rank rank 0's buffers (BatchNorm running statistics), as DDP's ``broadcast_buffers``.

        Gradients are averaged but buffers are updated from each rank's own batches, so without this
        each rank would evaluate its shard with other running statistics than the checkpoint (rank 0's).
        """
        if self.world_size == 1:
            return
        for t in model.buffers():
            dist.broadcast(t.data, src=0)


def average_gradients(params: list[torch.Tensor], all_reduce, world_size: int) -> None:
    """Average ``params``' gradients over ranks with two collectives, whatever each rank computed.

    First the ranks vote on which parameters have a gradient anywhere (one small all-reduce), so
    every rank then reduces the same tensors in the same order even if a method left a gradient
    ``None`` on one rank only (otherwise the collectives would not match and the job would hang).
    A parameter with no gradient on any rank stays ``None`` (the optimizer skips it, as without
    DDP); one with a gradient somewhere counts as zero where it is missing, as DDP does. The
    gradients then travel in one flat buffer per dtype/device instead of one collective per tensor.
    """
    present = torch.tensor([p.grad is not None for p in params], dtype=torch.int64)
    all_reduce(present)
    live = [p for p, n in zip(params, present.tolist(), strict=True) if n > 0]
    buckets: dict[tuple, list[torch.Tensor]] = {}
    for p in live:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        buckets.setdefault((p.grad.dtype, p.grad.device), []).append(p)
    for ps in buckets.values():
        flat = torch.cat([p.grad.reshape(-1) for p in ps])
        all_reduce(flat)
        flat.div_(world_size)
        offset = 0
        for p in ps:
            n = p.grad.numel()
            p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
            offset += n


def sum_over_ranks(tensors: list[torch.Tensor], all_reduce=None) -> list[torch.Tensor]:
    """Each tensor summed over DDP ranks, with one collective for all of them (new tensors).

    ``all_reduce`` sums in place over ranks (``Runtime.all_reduce``); ``None`` (one process)
    returns the tensors unchanged. They travel flattened in one buffer of the first one's dtype.
    """
    if all_reduce is None:
        return tensors
    flat = torch.cat([t.reshape(-1).to(tensors[0].dtype) for t in tensors])
    all_reduce(flat)
    out, offset = [], 0
    for t in tensors:
        out.append(flat[offset : offset + t.numel()].view(t.shape).to(t.dtype))
        offset += t.numel()
    return out


def pooled_mean(x: torch.Tensor, all_reduce=None) -> torch.Tensor:
    """Mean over dim 0 of ``x`` pooled over the rows of every rank (each row counts once).

    The same tensor on every rank; ``x.mean(0)`` itself on one process (``all_reduce`` ``None``).
    """
    if all_reduce is None:
        return x.mean(0)
    count = torch.full((1,), float(x.shape[0]), dtype=x.dtype, device=x.device)  # a fill: no host-to-device copy
    total, count = sum_over_ranks([x.sum(0), count], all_reduce)
    return total / count


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        from trainables.errors import ConfigError

        raise ConfigError("device", "cuda was asked for but no CUDA device is visible; allowed: auto, cpu")
    return torch.device(name)


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed python, numpy and torch; make CPU (and cuDNN) kernels deterministic."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def rng_state() -> dict:
    """Every generator's state, in types ``torch.load(weights_only=True)`` accepts (numpy's keys as a tensor)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached))
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def to_device_without_sync(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU tensor on ``device`` without the host waiting for the device.

    A host-to-device copy from pageable memory synchronises the stream; from pinned memory with
    ``non_blocking`` it is queued (the pinned block is kept until the copy has run). Same values.
    """
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)
