"""``mmbal list methods|datasets``: names, parameters, defaults and meanings."""

from __future__ import annotations

import argparse
import sys

from trainables.data import DATASETS
from trainables.methods import METHODS
from trainables.params import describe
from trainables.registry import Registry


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list methods or datasets with their parameters")
    p.add_argument("what", choices=["methods", "datasets"])
    p.set_defaults(func=run)


def format_registry(registry: Registry, prefix: str) -> str:
    """One line per name (its docstring's first line, else its module's), then its params."""
    lines = []
    for name in registry.names():
        cls = registry.get(name)
        doc = (cls.__doc__ or sys.modules[cls.__module__].__doc__ or "").strip()
        lines.append(f"{name}: {doc.splitlines()[0] if doc else ''}")
        for field, tp, default, meaning in describe(cls.Params):
            lines.append(f"    {prefix}{field} ({tp}, default {default!r}): {meaning}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.what == "methods":
        print(format_registry(METHODS, "params."))
    else:
        print(format_registry(DATASETS, "data."))
    return 0
