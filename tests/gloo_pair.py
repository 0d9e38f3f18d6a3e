"""Two real gloo processes for the DDP tests: start them, and end their process group cleanly.

gloo (torch 2.14) sometimes aborts a process inside ``destroy_process_group`` with "terminate called
without an active exception" when its peer is tearing down at the same moment: seen in 2 of 25 runs of
``tests/test_runtime.py`` and 1 of 40 of its worker alone, none in 60 with a barrier first. Every
collective has completed by then and each rank has written what the test checks, so the helpers
(1) put a barrier before the teardown and (2) accept a SIGABRT only once every rank's output exists;
any other failure, or an abort before the outputs, still fails the test.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch.distributed as dist
import torch.multiprocessing as mp


def end_process_group() -> None:
    """Every rank past its last collective before any tears down."""
    dist.barrier()
    dist.destroy_process_group()


def two_gloo_ranks(worker: Callable[..., None], tmp_path: Path, *extra: object) -> list[Path]:
    """Run ``worker(rank, init_method, out, *extra)`` on ranks 0 and 1; returns ``[out.0, out.1]``,
    the files each rank wrote before :func:`end_process_group`."""
    out = tmp_path / "out"
    outputs = [Path(f"{out}.{rank}") for rank in (0, 1)]
    try:
        mp.spawn(worker, args=(f"file://{tmp_path / 'pg'}", str(out), *extra), nprocs=2, join=True)
    except mp.ProcessExitedException as exc:
        if exc.signal_name != "SIGABRT" or not all(p.exists() for p in outputs):
            raise
    return outputs
