"""System metrics of the process that runs a trial, sent with each epoch's row as ``system/*``.

W&B's own system monitor would watch the driver, where the W&B runs live (trial processes never
import wandb), not the trial. So the trial samples itself once per epoch and the values travel with
its metrics: ``system/cpu_util`` (CPU seconds per wall second since the last row: 1.0 = one core
busy), ``system/rss_gb`` (resident memory now), and on CUDA ``system/gpu/mem_peak_gb`` (peak
allocated by torch in the epoch) and ``system/gpu/util`` (device utilisation in %, where NVML is
installed). Standard library and torch only: nothing here may fail or slow a trial.
"""

from __future__ import annotations

import os
import resource
import time
from typing import Any

GB = 1024**3


def _rss_bytes() -> float:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):  # not Linux: the peak is what the OS offers
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0


class SystemStats:
    """Call :meth:`sample` once per row; each call covers the time since the previous one."""

    def __init__(self) -> None:
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def sample(self) -> dict[str, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        out: dict[str, Any] = {
            "system/cpu_util": (cpu - self._cpu) / max(wall - self._wall, 1e-9),
            "system/rss_gb": _rss_bytes() / GB,
        }
        self._wall, self._cpu = wall, cpu
        out.update(_gpu())
        return out


def _gpu() -> dict[str, float]:
    import sys

    torch = sys.modules.get("torch")  # a trial has imported torch by now; never import it just for this
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return {}
    out = {"system/gpu/mem_peak_gb": torch.cuda.max_memory_allocated() / GB}
    torch.cuda.reset_peak_memory_stats()
    try:
        out["system/gpu/util"] = float(torch.cuda.utilization())
    except Exception:  # NVML (pynvml) not installed, or no permission: memory is still reported
        pass
    return out
