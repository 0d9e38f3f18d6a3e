"""Plugins: modules outside mmbal that register methods, datasets, encoders or fusion heads.

A plugin is an ordinary module whose import runs ``@register_method`` / ``@register_dataset`` /
``ENCODERS.register`` decorators. Three ways to load one, all ending in :func:`load_plugins`:

- ``--plugin MODULE`` on every ``mmbal`` command (repeatable);
- ``plugins: [MODULE, ...]`` in a sweep file (stored in ``results/<experiment>/sweep.yaml``, so a
  resumed sweep imports them again);
- the entry-point group ``mmbal.plugins`` of an installed package, loaded by every command::

      [project.entry-points."mmbal.plugins"]
      my_methods = "my_package.methods"     # a module, or "module:function" (called with no arguments)

Ray trial processes (packed trials and every DDP worker) import the same list before they build a
trial (:func:`plugin_specs` travels in the trial's execution settings; :func:`import_specs` runs at
worker start). Each spec carries the folder the module was found in on the driver, put on the worker's
``sys.path`` where that folder exists (one machine, or a shared disk); on other nodes the module must
be installed (a package in the cluster's image) or on their ``PYTHONPATH``.

Only module names are accepted (no attribute paths, nothing evaluated): a sweep file names code to
import exactly as ``--plugin`` does. The current directory is searched too (after everything else), so
``mmbal train --plugin my_method`` finds ``./my_method.py``.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
import traceback
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from trainables.errors import ConfigError

GROUP = "mmbal.plugins"
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")

# module name -> the sys.path entry it was imported from (None: an installed package / entry point)
_LOADED: dict[str, str | None] = {}


def _why(exc: BaseException) -> str:
    """The exception in one line, with the plugin's own line that raised it where there is one."""
    where = ""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "importlib" not in f.filename]
    if frames and not isinstance(exc, ModuleNotFoundError):
        where = f" at {frames[-1].filename}:{frames[-1].lineno}"
    return f"{type(exc).__name__}: {exc}{where}"


def import_plugin(name: str, key: str = "--plugin") -> None:
    """Import one plugin module; any failure is a :class:`ConfigError` (one line naming the module)."""
    if not isinstance(name, str) or not _MODULE.fullmatch(name):
        raise ConfigError(key, f"got {name!r}; allowed: a module name such as my_methods or my_pkg.methods")
    if name in _LOADED:
        return
    if os.getcwd() not in sys.path:  # ./my_method.py is found without PYTHONPATH (last, so it shadows nothing)
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(name)
    except Exception as exc:
        hint = "; install it or put its folder on PYTHONPATH" if isinstance(exc, ModuleNotFoundError) else ""
        raise ConfigError(key, f"cannot import plugin {name!r} ({_why(exc)}){hint}") from None
    _LOADED[name] = _root(module, name)


def _root(module: Any, name: str) -> str | None:
    """The ``sys.path`` folder holding ``name`` (``.../src`` for ``src/pkg/mod.py``), None if not a file."""
    file = getattr(module, "__file__", None)
    if not file:
        return None
    path = Path(file).resolve()
    depth = name.count(".") + (1 if path.name == "__init__.py" else 0)
    return str(path.parents[depth])


# the entry points found for one sys.path: scanning every installed distribution's metadata takes tens
# of milliseconds, which a packed Ray actor would pay again for each trial it runs
_SCANNED: tuple[tuple[str, ...], Any] | None = None


def _entry_points() -> Any:
    """``entry_points(group=GROUP)``, scanned again only when ``sys.path`` changed."""
    global _SCANNED
    key = tuple(sys.path)
    if _SCANNED is None or _SCANNED[0] != key:
        _SCANNED = (key, entry_points(group=GROUP))
    return _SCANNED[1]


def load_entry_points() -> None:
    """Load every installed ``mmbal.plugins`` entry point (once per process)."""
    for ep in _entry_points():
        if f"ep:{ep.name}" in _LOADED:
            continue
        try:
            obj = ep.load()
            if callable(obj):
                obj()
        except Exception as exc:
            raise ConfigError(GROUP, f"entry point {ep.name} = {ep.value} failed ({_why(exc)})") from None
        _LOADED[f"ep:{ep.name}"] = None


def load_plugins(names: list[str] | None = None, key: str = "--plugin") -> None:
    """Installed entry points, then ``names`` in order."""
    load_entry_points()
    for name in names or []:
        import_plugin(name, key)


def plugin_specs() -> list[dict[str, str | None]]:
    """What a Ray trial process needs to import this process's plugins: ``[{module, path}, ...]``."""
    return [{"module": m, "path": p} for m, p in _LOADED.items() if not m.startswith("ep:")]


def import_specs(specs: list[dict[str, str | None]]) -> None:
    """Worker side: entry points, then each plugin from its driver folder if this node has it."""
    for spec in specs:
        path = spec.get("path")
        if path and os.path.isdir(path) and path not in sys.path:
            sys.path.append(path)
    load_plugins([str(s["module"]) for s in specs], key="plugins")
