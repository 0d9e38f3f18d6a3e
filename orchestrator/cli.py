"""``mmbal`` command line. Each subcommand lives in ``orchestrator/commands/<name>.py`` and exposes
``register(subparsers)``; user mistakes become one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
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


def build_parser() -> argparse.ArgumentParser:
    from orchestrator import commands

    parser = argparse.ArgumentParser(prog="mmbal", description="Multimodal learning under modality imbalance, on Ray.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"orchestrator.commands.{info.name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
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
