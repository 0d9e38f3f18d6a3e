"""The orchestrator's house rules: a few rooms at the top, each saying what it owns, and imports
that never go in a circle (function-level imports included, so a late import cannot hide one)."""

from __future__ import annotations

import ast
from pathlib import Path

import orchestrator

ROOT = Path(orchestrator.__file__).parent
MAX_TOP_LEVEL = 8


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The orchestrator modules ``path`` imports, anywhere in the file (``from pkg import submodule`` counts
    as the submodule)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module in known:
            subs = {f"{node.module}.{a.name}" for a in node.names} & known
            out.update(subs)
            if len(subs) < len(node.names):  # some names are not submodules: the package (or module) itself
                out.add(node.module)
    return out


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_inside_orchestrator() -> None:
    mods = modules()
    graph = {name: imports_of(path, set(mods)) - {name} for name, path in mods.items()}
    assert sum(len(v) for v in graph.values()) > 20  # the graph was read at all
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_few_top_level_modules_and_every_subpackage_says_what_it_owns() -> None:
    top = [p for p in ROOT.iterdir() if p.suffix == ".py" and p.name != "__init__.py"]
    packages = [p for p in ROOT.iterdir() if (p / "__init__.py").is_file()]
    names = sorted(p.stem if p.suffix else p.name for p in top + packages)
    assert len(names) <= MAX_TOP_LEVEL, f"orchestrator/ holds {len(names)} modules and packages: {names}"
    for pkg in packages:
        doc = ast.get_docstring(ast.parse((pkg / "__init__.py").read_text()))
        assert doc and len(doc) > 40, f"{pkg.name}/__init__.py should open with a docstring saying what it owns"
