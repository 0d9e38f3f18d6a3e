"""``mmbal prepare DATASET --raw DIR --out DIR``: raw download -> versioned prepared layout (resumable).

The dataset's prepare recipe (``DatasetSpec.recipe``, in the dataset's own module) does the work
through :func:`trainables.data.io.prepare.prepare`; every field of a recipe's ``Params`` is an
option here (``--field-name``), so a new recipe needs no change to this file.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import typing
from pathlib import Path

from trainables.data import DATASETS
from trainables.data.io.prepare import PrepareRecipe, prepare
from trainables.errors import ConfigError
from trainables.params import build_params, describe


def recipes() -> dict[str, PrepareRecipe]:
    """Registered datasets that have a prepare recipe, by name."""
    specs = {name: DATASETS.get(name) for name in DATASETS.names()}
    return {name: spec.recipe for name, spec in specs.items() if spec.recipe is not None}


def flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def add_recipe_options(p: argparse.ArgumentParser, have: dict[str, PrepareRecipe]) -> None:
    """One option per recipe param, with its meaning, range and defaults (per dataset where they differ)."""
    fields: dict[str, list[tuple[str, str, object]]] = {}  # field -> [(dataset, meaning, default)]
    for name, recipe in have.items():
        for field, _, default, meaning in describe(recipe.Params):
            fields.setdefault(field, []).append((name, meaning, default))
    for field, owners in fields.items():
        defaults = {name: default for name, _, default in owners}
        if len(owners) == len(have) and len(set(defaults.values())) == 1:
            default = f"default {next(iter(defaults.values()))!r}"
        else:
            default = "default: " + ", ".join(f"{name} {value!r}" for name, value in defaults.items())
        tp = typing.get_type_hints(have[owners[0][0]].Params)[field]
        choices = list(typing.get_args(tp)) if typing.get_origin(tp) is typing.Literal else None
        p.add_argument(
            flag(field),
            dest=f"param_{field}",
            default=None,
            choices=choices,
            metavar=None if choices else field.upper(),
            help=f"{owners[0][1]} ({default})",
        )


def register(sub: argparse._SubParsersAction) -> None:
    have = recipes()
    p = sub.add_parser("prepare", help="decode a raw dataset once into mmbal's prepared layout (data.profile=prepared)")
    p.add_argument("dataset", help=f"dataset to prepare (supported: {', '.join(have)})")
    raw_help = "; ".join(f"{name}: {r.raw_layout}" for name, r in have.items())
    p.add_argument("--raw", required=True, help=f"raw download ({raw_help})")
    p.add_argument("--out", required=True, help="output folder; rerun the same command to resume")
    lists_help = "; ".join(f"{name}: {r.lists_layout}" for name, r in have.items())
    p.add_argument("--lists", default=None, help=f"folder with the official lists ({lists_help}); default: --raw")
    add_recipe_options(p, have)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="decoding processes")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    have = recipes()
    if args.dataset not in have:
        raise ConfigError("dataset", f"mmbal prepare supports: {', '.join(have)} (got {args.dataset!r})")
    recipe = have[args.dataset]
    given = {k.removeprefix("param_"): v for k, v in vars(args).items() if k.startswith("param_") and v is not None}
    own = [f.name for f in dataclasses.fields(recipe.Params)]
    for field in given:
        if field not in own:
            allowed = ", ".join(flag(f) for f in own)
            raise ConfigError(flag(field), f"not an option of {args.dataset}; allowed: {allowed}")
    try:
        params = build_params(recipe.Params, given)
    except ConfigError as exc:  # the user typed a flag, not a key
        raise ConfigError(flag(exc.key), exc.message) from None
    if not Path(args.raw).is_dir():
        raise ConfigError("--raw", f"{args.raw} is not a folder")
    lists = Path(args.lists) if args.lists else None
    prepare(args.dataset, recipe, Path(args.raw), Path(args.out), params, lists, max(1, args.workers))
    return 0
