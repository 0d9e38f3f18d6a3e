"""``mmbal init SWEEP [DEST]``: copy a shipped sweep (or ``cluster.yaml``) to edit.

``mmbal init cluster`` run from a source checkout writes that checkout's absolute path into the copy's
``file_mounts``, so ``ray up`` syncs it from whatever folder it is run in.

The files ship inside the package (``orchestrator/shipped/``: links to the top-level ``sweeps/`` and
``cluster.yaml`` in a checkout, copies in an installed wheel), so this works from any directory.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from orchestrator.cli import add_command
from trainables.errors import ConfigError

SHIPPED = Path(__file__).resolve().parents[1] / "shipped"
CHECKOUT = Path(__file__).resolve().parents[2]  # the source checkout, when mmbal runs from one
MOUNT = "/home/ray/mmbal: ~/mmbal"  # cluster.yaml's file_mounts line for the checkout

EXAMPLES = """
  mmbal list sweeps                                 # what is shipped
  mmbal init quickstart                             # -> ./quickstart.yaml
  mmbal init cremad_ogm_ge configs/                 # -> configs/cremad_ogm_ge.yaml
  mmbal init cluster                                # -> ./cluster.yaml, for ray up
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "init", "copy a shipped sweep (or cluster.yaml) to edit", EXAMPLES)
    p.add_argument("sweep", metavar="SWEEP", help="a name from `mmbal list sweeps`, or cluster")
    p.add_argument("dest", metavar="DEST", nargs="?", default=".", help="file or folder (default: here)")
    p.add_argument("--force", action="store_true", help="overwrite DEST if it exists")
    p.set_defaults(func=run)


def shipped_sweeps() -> dict[str, Path]:
    """name -> shipped sweep file, sorted by name."""
    return {p.stem: p for p in sorted((SHIPPED / "sweeps").glob("*.yaml"))}


def sweep_summary(path: Path, width: int = 100) -> str:
    """The first line of the sweep's description (the comment paragraph after the command line)."""
    comments = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        comments.append(line.lstrip("#").strip())
    text = next((c for c in comments[1:] if c), "")
    return text if len(text) <= width else text[: width - 3].rstrip() + "..."


def run(args: argparse.Namespace) -> int:
    name = args.sweep.removesuffix(".yaml")
    known = shipped_sweeps()
    source = SHIPPED / "cluster.yaml" if name == "cluster" else known.get(name)
    if source is None:
        raise ConfigError("SWEEP", f"no shipped sweep {args.sweep!r}; known: {', '.join(known)}, cluster")
    dest = Path(args.dest)
    if dest.is_dir() or args.dest.endswith(("/", "\\")):
        dest = dest / source.name
    if dest.exists() and not args.force:
        raise ConfigError("DEST", f"{dest} exists; pass --force to overwrite it, or another DEST")
    dest.parent.mkdir(parents=True, exist_ok=True)
    text = source.read_text()
    if name == "cluster" and (CHECKOUT / "pyproject.toml").is_file():  # `ray up` syncs this checkout
        text = text.replace(MOUNT, f"/home/ray/mmbal: {CHECKOUT}")
    dest.write_text(text)
    then = "ray up" if name == "cluster" else "mmbal sweep"
    print(f"wrote {dest}; edit it, then: {then} {dest}")
    return 0
