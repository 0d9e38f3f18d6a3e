"""``mmbal list methods|datasets``: names, parameters, defaults and meanings."""

from __future__ import annotations

import argparse

from trainables.data import DATASETS
from trainables.methods import METHODS
from trainables.params import describe


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list methods or datasets with their parameters")
    p.add_argument("what", choices=["methods", "datasets"])
    p.set_defaults(func=run)


def format_registry(registry, prefix: str) -> str:
    lines = []
    for name in registry.names():
        cls = registry.get(name)
        doc = (cls.__doc__ or cls.__module__ and __import__(cls.__module__, fromlist=["x"]).__doc__ or "").strip()
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
