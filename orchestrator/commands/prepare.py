"""``mmbal prepare DATASET --raw DIR [--profile P] --out DIR``: a raw download or a reference layout ->
versioned prepared layout (resumable), read back with ``data.profile: prepared``.

``--profile`` is ``raw`` (a raw download of videos, the default where a dataset has that recipe) or a
``data.profile`` name (the layout a training run would read from ``--raw`` as its data root; the
default for the datasets without a raw recipe). The recipes come from the datasets
(``DatasetSpec.recipes()``, see :mod:`trainables.data.io.recipes`); every field of a recipe's
``Params`` is an option here (``--field-name``) and the layout profiles take the dataset's own
``data.*`` knobs with ``--set``, so a new dataset or recipe needs no change to this file.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import typing
from pathlib import Path

from orchestrator.cli import add_command, add_overrides
from trainables.errors import ConfigError

if typing.TYPE_CHECKING:
    from trainables.data.io.recipes import PrepareRecipe

# this command's options come from the datasets' recipes: its full parser (and torch) only when it runs
HELP = "decode a dataset once into mmbal's prepared layout (data.profile=prepared)"
EXAMPLES = """
  mmbal prepare cremad --raw /data/CREMA-D --out /data/cremad-prepared --workers 8
  mmbal prepare kinetics_sounds --profile ogm_ge --raw /data/ks-ogm --out /data/ks-prepared   # a reference layout
  # then train on it:  --set data_root=/data/cremad-prepared --set data.profile=prepared
"""


def recipes() -> dict[str, dict[str, PrepareRecipe]]:
    """Registered datasets that can be prepared: name -> {profile: recipe}."""
    from trainables.data import DATASETS

    specs = {name: DATASETS.get(name) for name in DATASETS.names()}
    return {name: r for name, spec in specs.items() if (r := spec.recipes())}


def default_profile(dataset: str, profiles: dict[str, PrepareRecipe]) -> str:
    """``raw`` where the dataset has a raw recipe, else its default ``data.profile``."""
    from trainables.data import DATASETS

    if "raw" in profiles:
        return "raw"
    return next((f.default for f in dataclasses.fields(DATASETS.get(dataset).Params) if f.name == "profile"), "")


def flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def _flag_fields(params_cls: type) -> list[str]:
    """The fields of a recipe's Params offered as options (``data``, a mapping, comes with ``--set``)."""
    return [f.name for f in dataclasses.fields(params_cls) if typing.get_type_hints(params_cls)[f.name] is not dict]


def add_recipe_options(p: argparse.ArgumentParser, have: dict[str, dict[str, PrepareRecipe]]) -> None:
    """One option per recipe param, with its meaning, range and defaults (per recipe kind where they differ)."""
    from trainables.params import describe

    users: dict[type, list[str]] = {}  # Params class -> "dataset" or "dataset/profile" using it
    for name, profiles in have.items():
        for profile, recipe in profiles.items():
            users.setdefault(recipe.Params, []).append(name if profile == "raw" else f"{name}/{profile}")
    fields: dict[str, list[tuple[str, str, object, type]]] = {}  # field -> [(users, meaning, default, Params)]
    for cls, who in users.items():
        label = who[0] if len(who) == 1 else "layouts" if all("/" in w for w in who) else ", ".join(who)
        for field, _, default, meaning in describe(cls):
            if field in _flag_fields(cls):
                fields.setdefault(field, []).append((label, meaning, default, cls))
    for field, owners in fields.items():
        defaults = {label: default for label, _, default, _ in owners}
        if len(owners) == len(users) and len(set(map(repr, defaults.values()))) == 1:
            default = f"default {next(iter(defaults.values()))!r}"
        else:
            default = "default: " + ", ".join(f"{label} {value!r}" for label, value in defaults.items())
        tp = typing.get_type_hints(owners[0][3])[field]
        choices = list(typing.get_args(tp)) if typing.get_origin(tp) is typing.Literal else None
        p.add_argument(
            flag(field),
            dest=f"param_{field}",
            default=None,
            choices=choices,
            metavar=None if choices else field.upper(),
            help=f"{owners[0][1]} ({default})",
        )


def register_brief(sub: argparse._SubParsersAction) -> None:
    """The entry in ``mmbal --help`` (no dataset is imported for it)."""
    add_command(sub, "prepare", HELP, EXAMPLES)


def register(sub: argparse._SubParsersAction) -> None:
    have = recipes()
    p = add_command(sub, "prepare", HELP, EXAMPLES)
    p.add_argument("dataset", help=f"dataset to prepare (supported: {', '.join(have)})")
    p.add_argument(
        "--raw", required=True, help="the folder to prepare: the raw download (--profile raw) or a layout's data root"
    )
    profiles_help = "; ".join(f"{name}: {', '.join(profiles)}" for name, profiles in have.items())
    p.add_argument("--profile", default=None, help=f"what --raw holds ({profiles_help}); default: raw where offered")
    p.add_argument("--out", required=True, help="output folder; rerun the same command to resume")
    raw_lists = "; ".join(f"{name}: {r['raw'].lists_layout}" for name, r in have.items() if "raw" in r)
    p.add_argument(
        "--lists", default=None, help=f"--profile raw: folder with the official lists ({raw_lists}); default: --raw"
    )
    add_recipe_options(p, have)
    add_overrides(p, "--set data.audio_dir=Audio-1004 (layout profiles: the dataset's data.* knobs)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="decoding processes")
    p.set_defaults(func=run)


def _data_values(items: list[str]) -> dict[str, object]:
    from trainables.config import parse_override

    out = {}
    for item in items:
        key, value = parse_override(item)
        if not key.startswith("data.") or key.count(".") != 1:
            raise ConfigError("--set", f"mmbal prepare takes data.KEY=VALUE only (got {item!r})")
        out[key.removeprefix("data.")] = value
    return out


def _recipe(dataset: str, profile: str | None) -> tuple[str, PrepareRecipe]:
    have = recipes()
    if dataset not in have:
        raise ConfigError("dataset", f"mmbal prepare supports: {', '.join(have)} (got {dataset!r})")
    profile = profile or default_profile(dataset, have[dataset])
    if profile not in have[dataset]:
        raise ConfigError("--profile", f"{dataset} is prepared from: {', '.join(have[dataset])} (got {profile!r})")
    return profile, have[dataset][profile]


def run(args: argparse.Namespace) -> int:
    from trainables.data.io.prepare import prepare

    profile, recipe = _recipe(args.dataset, args.profile)
    given = {k.removeprefix("param_"): v for k, v in vars(args).items() if k.startswith("param_") and v is not None}
    own = _flag_fields(recipe.Params)
    for field in given:
        if field not in own:
            allowed = ", ".join(flag(f) for f in own)
            raise ConfigError(flag(field), f"not an option of {args.dataset} --profile {profile}; allowed: {allowed}")
    try:
        params = recipe.make_params(given, _data_values(args.overrides))
    except ConfigError as exc:  # the user typed a flag, not a key
        raise ConfigError(flag(exc.key) if exc.key in own else exc.key, exc.message) from None
    if not Path(args.raw).is_dir():
        raise ConfigError("--raw", f"{args.raw} is not a folder")
    lists = Path(args.lists) if args.lists else None
    prepare(args.dataset, recipe, Path(args.raw), Path(args.out), params, lists, max(1, args.workers))
    return 0
