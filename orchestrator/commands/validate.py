"""``mmbal validate SWEEP.yaml ...``: every expanded trial config resolved; all problems, one line each."""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from orchestrator.cli import add_command, add_overrides
from trainables.errors import ConfigError

EXAMPLES = """
  mmbal validate sweeps/*.yaml                      # every problem of every file, one line each
  mmbal validate my_sweep.yaml --set epochs=2 --plugin my_methods
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "validate", "check sweep files without running anything (no Ray)", EXAMPLES)
    p.add_argument("sweeps", nargs="+", metavar="SWEEP.yaml")
    add_overrides(p, "--set epochs=2 (as for mmbal sweep)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from orchestrator.sweep import SweepErrors, load_sweep

    bad = 0
    for path in args.sweeps:
        try:
            sweep = load_sweep(path, args.overrides, args.plugins)
        except SweepErrors as exc:
            bad += 1
            for line in exc.lines():
                print(f"mmbal validate: error: {line}", file=sys.stderr)
            continue
        except ConfigError as exc:
            bad += 1
            print(f"mmbal validate: error: {exc.with_source(exc.source or path).line()}", file=sys.stderr)
            continue
        per = Counter(p.label for p in sweep.trials)
        what = (
            ", ".join(f"{k} {v}" for k, v in per.items())
            or f"{sweep.keys.search.samples} {sweep.keys.search.searcher} samples"
        )
        print(
            f"{path}: ok: {len(sweep.trials) or sweep.keys.search.samples} trials ({what}); "
            f"execution {sweep.keys.execution.mode}, searcher {sweep.keys.search.searcher}, "
            f"scheduler {sweep.keys.search.scheduler}"
        )
    return 1 if bad else 0
