"""``mmbal report EXPERIMENT_DIR --readme``: the README's results table, produced from a real run.

The table is the leaderboard's own numbers (same selection, same mean ± std), trimmed to what a
README shows, with the machine it was measured on: ``mmbal sweep`` records the driver machine in
``results/<experiment>/machine.json`` when it starts; a folder without one is labelled with the
machine of the report instead, and says so. Float results depend on the CPU's BLAS kernels and
thread counts, so the text says the table is from that machine, not that every machine prints it.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

from orchestrator.report.formatting import FLAG, column_title, flag_lines, fmt_stat
from orchestrator.report.leaderboard import Leaderboard, build_leaderboard
from trainables.reporting import atomic_write_text

MACHINE_FILE = "machine.json"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(trial_threads: int | None = None) -> dict[str, Any]:
    """CPU model and cores, GPU (if any), torch, Python and OS versions of this machine, and the torch
    intra-op threads each trial runs with (``trial_threads``; this process's count when not given).
    Results of a seed can differ between thread counts (reduction order), so the count is recorded."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "gpu": gpu,
        "torch": torch.__version__,
        "torch_threads": trial_threads or torch.get_num_threads(),
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
    }


def write_machine(results_dir: str | Path, trial_threads: int | None = None) -> None:
    """Record the machine a sweep runs on (called by the sweep driver at each (re)start)."""
    info = machine_info(trial_threads)
    atomic_write_text(Path(results_dir) / MACHINE_FILE, json.dumps(info, indent=1) + "\n")


def describe_machine(m: dict[str, Any]) -> str:
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ", no GPU"
    return (
        f"{m.get('cpu', '?')} ({m.get('cores', '?')} cores{gpu}), torch {m.get('torch', '?')} "
        f"(intra-op threads per trial: {m.get('torch_threads', '?')}), "
        f"Python {m.get('python', '?')}, {m.get('os', '?')}"
    )


def _columns(modalities: list[str], have: list[str]) -> list[str]:
    keys = ["test/acc"]
    for prefix in ("test/probe/acc", "test/acc", "test/shapley"):
        keys += [f"{prefix}/{m}" for m in modalities]
    keys += [f"test/missing/{m}/acc" for m in modalities]
    return [k for k in keys if k in have]


def readme_markdown(lb: Leaderboard, machine: dict[str, Any], recorded: bool) -> str:
    """The README table(s) of a leaderboard and the sentence that says where and how they were made."""
    where = "the sweep's machine" if recorded else "the machine of this report (the sweep recorded none)"
    seeds = sorted({t.seed for t in lb.completed})
    lines = [
        f"Produced by `mmbal report {lb.results_dir} --readme` from a real run; {where}: {describe_machine(machine)}.",
        f"Mean ± sample std over seeds {', '.join(map(str, seeds))}; per method the config with the best mean "
        f"{lb.select_metric} on validation. Floating-point results depend on the CPU's BLAS kernels and thread "
        "counts: another machine may print other digits.",
        "",
    ]
    for board in lb.boards:
        cols = _columns(board.modalities, board.columns)
        lines += [f"**{board.dataset}**", ""] if len(lb.boards) > 1 else []
        lines.append("| method | " + " | ".join(column_title(c) for c in cols) + " |")
        lines.append("|---|" + "--:|" * len(cols))
        for e in board.entries:
            name = e.method + (f" ({e.label}, best of {e.n_configs} on val)" if e.n_configs > 1 else "")
            name += f" {FLAG}" if e.flags else ""
            lines.append(f"| {name} | " + " | ".join(fmt_stat(c, e.metrics[c]) for c in cols) + " |")
        lines.append("")
        lines += [f"{FLAG} {line}" for line in flag_lines(board)]
    return "\n".join(lines).rstrip() + "\n"


def write_readme(
    results_dir: str | Path, out_dir: str | Path | None = None, select_metric: str = "val/acc", select_mode: str = "max"
) -> tuple[str, Path]:
    """The README table of a results folder, written to ``<out>/readme.md``; returns ``(text, path)``."""
    lb = build_leaderboard(results_dir, select_metric, select_mode)
    path = Path(results_dir) / MACHINE_FILE
    recorded = path.exists()
    machine = json.loads(path.read_text()) if recorded else machine_info()
    text = readme_markdown(lb, machine, recorded)
    out = (Path(out_dir) if out_dir is not None else Path(results_dir) / "report") / "readme.md"
    atomic_write_text(out, text)
    return text, out
