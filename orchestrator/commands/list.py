"""``mmbal list methods|datasets|sweeps``: names, parameters, defaults and meanings; the shipped sweeps."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from orchestrator.cli import add_command

if TYPE_CHECKING:
    from trainables.registry import Registry

EXAMPLES = """
  mmbal list methods                                # each method, its params.* with defaults and meanings
  mmbal list datasets | less
  mmbal list sweeps                                 # the shipped sweeps; copy one with mmbal init NAME
  mmbal list methods --plugin my_methods            # including your own
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "list", "list methods or datasets with their parameters, or the shipped sweeps", EXAMPLES)
    p.add_argument("what", choices=["methods", "datasets", "sweeps"])
    p.set_defaults(func=run)


def format_registry(registry: Registry, prefix: str) -> str:
    """One line per name (its docstring's first line, else its module's), then its params."""
    from trainables.params import describe

    lines = []
    for name in registry.names():
        cls = registry.get(name)
        doc = (cls.__doc__ or sys.modules[cls.__module__].__doc__ or "").strip()
        lines.append(f"{name}: {doc.splitlines()[0] if doc else ''}")
        if scheme := getattr(cls, "missing_scheme", None):  # methods only
            from trainables.methods.base import MISSING_SCHEMES

            lines.append(f"    missing modalities ({scheme}): {MISSING_SCHEMES.get(scheme, '?')}")
        for field, tp, default, meaning in describe(cls.Params):
            lines.append(f"    {prefix}{field} ({tp}, default {default!r}): {meaning}")
    return "\n".join(lines)


def format_sweeps() -> str:
    """One line per shipped sweep: its name and the first line of its description."""
    from orchestrator.commands.init import shipped_sweeps, sweep_summary

    return "\n".join(f"{name}: {sweep_summary(path)}" for name, path in shipped_sweeps().items())


def run(args: argparse.Namespace) -> int:
    if args.what == "methods":
        from trainables.methods import METHODS

        print(format_registry(METHODS, "params."))
    elif args.what == "datasets":
        from trainables.data import DATASETS

        print(format_registry(DATASETS, "data."))
    else:
        print(format_sweeps())
    return 0
