"""``mmbal`` command line. Each subcommand lives in ``orchestrator/commands/<name>.py`` and exposes
``register(subparsers)``; user mistakes become one line on stderr and exit code 2, never a traceback.

Help is instant: command modules import torch, Ray and W&B inside their ``run``, never at the top
(``tests/test_cli_basics.py`` checks the import set). A command whose options come from the
registries (``prepare``: one option per recipe parameter) also defines ``register_brief``, used
unless it is the command being run.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

from trainables.errors import ConfigError, DataError, Diverged, Interrupted


def add_overrides(parser: argparse.ArgumentParser, example: str) -> None:
    """The ``--set KEY=VALUE`` option every command that takes a config shares (values read as YAML)."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override any key (repeatable), e.g. {example}",
    )


def add_plugin_option(parser: argparse.ArgumentParser) -> None:
    """``--plugin MODULE``, on every subcommand (see :mod:`trainables.plugins`)."""
    parser.add_argument(
        "--plugin",
        dest="plugins",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first, to register your own methods/datasets/encoders (repeatable)",
    )


def plugins_in(argv: list[str]) -> list[str]:
    """The ``--plugin`` values of a command line, read before the parser exists (their datasets may add options)."""
    out = []
    for i, a in enumerate(argv):
        if a == "--plugin" and i + 1 < len(argv):
            out.append(argv[i + 1])
        elif a.startswith("--plugin="):
            out.append(a.split("=", 1)[1])
    return out


EXAMPLES = """examples:
  mmbal list methods                                  # every method, its params and defaults
  mmbal train --method ogm_ge --epochs 12             # one trial, no Ray (mfeat is built in)
  mmbal init quickstart && mmbal sweep quickstart.yaml --dry-run
  mmbal sweep quickstart.yaml                         # the sweep on Ray Tune, then the leaderboard
  mmbal report results/quickstart                     # leaderboard, plots and an HTML page

`mmbal COMMAND --help` shows each command's options and examples."""


def add_command(sub: argparse._SubParsersAction, name: str, help: str, examples: str) -> argparse.ArgumentParser:
    """A subcommand parser with its help line and an ``examples:`` epilog (kept as written)."""
    return sub.add_parser(
        name,
        help=help,
        description=help[:1].upper() + help[1:] + ".",
        epilog="examples:\n" + examples.strip("\n"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def version() -> str:
    """``mmbal X (torch Y, ray Z, Python W)`` from the installed metadata (nothing is imported)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as v

    def of(dist: str) -> str:
        try:
            return v(dist)
        except PackageNotFoundError:
            return "not installed"

    py = ".".join(map(str, sys.version_info[:3]))
    return f"mmbal {of('mmbal')} (torch {of('torch')}, ray {of('ray')}, wandb {of('wandb')}, Python {py})"


class _Version(argparse.Action):
    """``--version``, read from the metadata only when asked (lookups cost time on every other command)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # type: ignore[no-untyped-def]
        print(version())
        parser.exit()


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command`` (the one being run) gets the full form of a ``register_brief`` command."""
    from orchestrator import commands

    parser = argparse.ArgumentParser(
        prog="mmbal",
        description="Multimodal learning under modality imbalance, on Ray.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_Version, nargs=0, help="show the versions of mmbal, torch, ray and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            module = importlib.import_module(f"orchestrator.commands.{info.name}")
            brief = getattr(module, "register_brief", None)
            (module.register if brief is None or info.name == command else brief)(sub)
    for p in sub.choices.values():
        add_plugin_option(p)
    return parser


def _quiet_broken_pipe() -> int:
    """``mmbal list datasets | head``: the reader left; no traceback, and none at exit either."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 141  # 128 + SIGPIPE, as a shell reports a command killed by it


def main(argv: list[str] | None = None) -> int:
    from trainables.plugins import load_plugins

    argv = sys.argv[1:] if argv is None else argv
    try:
        load_plugins(plugins_in(argv))  # before the parser: a plugin dataset's prepare recipe adds options
    except ConfigError as exc:
        print(f"mmbal: error: {exc.line()}", file=sys.stderr)
        return 2
    command = next((a for a in argv if not a.startswith("-")), None)  # top-level options take no value
    args = build_parser(command).parse_args(argv)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except ConfigError as exc:
        print(f"mmbal {args.command}: error: {exc.line()}", file=sys.stderr)
        return 2
    except DataError as exc:
        print(f"mmbal {args.command}: data error: {exc}", file=sys.stderr)
        return 1
    except Diverged as exc:
        print(f"mmbal {args.command}: diverged: {exc}; try a smaller optim.lr", file=sys.stderr)
        return 1
    except Interrupted as exc:
        print(f"mmbal {args.command}: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"mmbal {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
