"""Gradient averaging of a DDP trial that overlaps communication with backward (``ddp.overlap``).

The default (:meth:`trainables.runtime.Runtime.sync_gradients`) averages every gradient in the optimizer's
step pre-hook, after backward has ended. :class:`OverlappedGradSync` starts earlier: the optimizer's
parameters are grouped into buckets (reverse registration order, roughly the order backward produces
them, ``bucket_mb`` each, one dtype/device per bucket); a post-accumulate-grad hook marks a parameter
ready, and when every parameter of a bucket is ready its gradients are flattened and an asynchronous
all-reduce is launched while backward goes on. The step pre-hook waits for them and writes the averages
back. Whatever a method does between backward and step stays correct:

* several backward passes before a step (SAM's two passes, gradients accumulated): a hook that fires
  again for a launched bucket means its gradients changed; that launch is waited for and dropped, and
  the bucket is collected again from the new gradients;
* gradients edited after backward (OGM-GE's scaling and noise, MLA's and MIE's head projections) or
  replaced or set to ``None``: each launched bucket remembers its gradient tensors and their version
  counters (``Tensor._version``, bumped by every in-place change); a bucket whose gradients changed is
  stale and is averaged at the step from the gradients as they are then;
* a step that follows a backward which reached only part of the model (MLA's per-modality steps):
  incomplete buckets are averaged at the step as well.

Stale and incomplete buckets are decided collectively (a small all-reduce of one flag per bucket), so
every rank then averages the same tensors in the same order, through
:func:`trainables.runtime.average_gradients`, which also keeps its rule for gradients missing on some
ranks. Launched buckets, however, require that every rank's backward reaches the same parameters in the
same order (as torch DDP without ``find_unused_parameters``): true of every registered method, whose
graphs do not depend on the data. Results equal the default path's bit for bit (sums of two ranks are
exact whatever the grouping); ``tests/test_grad_sync.py`` checks it against the default path and torch
DDP, ``tests/perf/bench_ddp_overlap.py`` times the three.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist


@dataclass
class _Bucket:
    params: list[torch.nn.Parameter]
    ready: set[int] = field(default_factory=set)
    work: Any = None  # the in-flight all-reduce of ``flat``
    flat: torch.Tensor | None = None
    launched: list[tuple[torch.Tensor, int]] = field(default_factory=list)  # (grad, its version) at launch

    def changed(self) -> bool:
        """Whether a gradient was replaced or edited in place since the launch."""
        return any(p.grad is not g or g._version != v for p, (g, v) in zip(self.params, self.launched, strict=True))

    def reset(self) -> None:
        self.ready, self.work, self.flat, self.launched = set(), None, None, []


def buckets_of(params: Iterable[torch.nn.Parameter], bucket_bytes: int) -> list[list[torch.nn.Parameter]]:
    """Consecutive groups of ``params`` of one dtype and device, each about ``bucket_bytes`` (at least one)."""
    out: list[list[torch.nn.Parameter]] = []
    open_: dict[tuple, list[torch.nn.Parameter]] = {}
    size: dict[tuple, int] = {}
    for p in params:
        key = (p.dtype, p.device)
        if key not in open_:
            open_[key], size[key] = [], 0
            out.append(open_[key])
        open_[key].append(p)
        size[key] += p.numel() * p.element_size()
        if size[key] >= bucket_bytes:
            del open_[key]
    return out


class OverlappedGradSync:
    """Hooks one optimizer's parameters so their gradients are averaged while backward runs (module doc).

    Args:
        optimizer: the optimizer whose step uses the averages (a step pre-hook is registered on it).
        world_size: number of ranks.
        all_reduce: blocking in-place sum over ranks (``Runtime.all_reduce``), for the flags and the
            gradients averaged at the step.
        bucket_mb: bucket size in MiB.
        claimed: parameters already hooked by another optimizer's sync (they are averaged at the step
            here); this one's are added to it.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        world_size: int,
        all_reduce: Callable[[torch.Tensor], torch.Tensor],
        bucket_mb: float = 25.0,
        claimed: set[int] | None = None,
    ) -> None:
        self.world_size = world_size
        self.all_reduce = all_reduce
        params = [p for g in optimizer.param_groups for p in g["params"] if p.requires_grad]
        claimed = claimed if claimed is not None else set()
        self.unhooked = [p for p in params if id(p) in claimed]
        mine = [p for p in params if id(p) not in claimed]
        claimed.update(id(p) for p in mine)
        self.buckets = [_Bucket(ps) for ps in buckets_of(reversed(mine), max(int(bucket_mb * 2**20), 1))]
        self.launches = 0  # all-reduces launched from hooks (for tests and benchmarks)
        self.used = 0  # launched all-reduces whose result a step used
        self.redone = 0  # buckets averaged at the step (stale or incomplete)
        for b in self.buckets:
            for j, p in enumerate(b.params):
                p.register_post_accumulate_grad_hook(lambda _p, b=b, j=j: self._ready(b, j))
        optimizer.register_step_pre_hook(lambda opt, args, kwargs: self.finish())

    def _ready(self, b: _Bucket, j: int) -> None:
        if b.work is not None:  # a new backward after the launch: that launch is superseded
            b.work.wait()  # long done in practice (an earlier backward); keeps nothing in flight
            b.reset()
        elif j in b.ready:  # a new backward before the bucket was complete: collect it anew
            b.ready = set()
        b.ready.add(j)
        if len(b.ready) == len(b.params):
            grads = [p.grad for p in b.params]
            if any(g is None for g in grads):  # set to None since: averaged at the step instead
                return
            b.flat = torch.cat([g.reshape(-1) for g in grads])
            b.launched = [(g, g._version) for g in grads]
            b.work = dist.all_reduce(b.flat, async_op=True)
            self.launches += 1

    def finish(self) -> None:
        """Wait for the launched all-reduces and write the averages; average the rest now."""
        from trainables.runtime import average_gradients

        redo = torch.tensor([b.work is None or b.changed() for b in self.buckets], dtype=torch.int64)
        if self.buckets:
            self.all_reduce(redo)  # a bucket any rank must redo is redone by all
        rest = list(self.unhooked)
        for b, n in zip(self.buckets, redo.tolist(), strict=True):
            if b.work is not None:
                b.work.wait()
            if n == 0:
                self.used += 1
                b.flat.div_(self.world_size)
                offset = 0
                for p in b.params:
                    k = p.grad.numel()
                    p.grad.copy_(b.flat[offset : offset + k].view_as(p.grad))
                    offset += k
            else:
                self.redone += 1
                rest.extend(b.params)
            b.reset()
        if rest:
            average_gradients(rest, self.all_reduce, self.world_size)
