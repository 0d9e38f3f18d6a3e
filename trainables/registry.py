"""Name -> class registries for methods, datasets, encoders and fusion heads.

A plugin registers itself with a decorator in its own module; the package ``__init__`` imports every
module of its folder so that adding a plugin touches exactly one file. Helpers the plugins share live
in ``_``-prefixed modules or in subpackages (``trainables/data/io/``), which are not imported as plugins.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from trainables.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of plugins; unknown names fail with the list of known ones."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            try:
                obj.name = name  # type: ignore[attr-defined]
            except (AttributeError, TypeError):
                pass
            return obj

        return deco

    def get(self, name: str, *, key: str | None = None) -> T:
        if name not in self._items:
            known = ", ".join(sorted(self._items)) or "(none)"
            raise ConfigError(key or self.kind, f"unknown {self.kind} {name!r}; known: {known}")
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def import_submodules(package_name: str) -> None:
    """Import every plugin module of a package so that their ``@register`` decorators run.

    Plugins are the package's own modules; ``_``-prefixed modules and subpackages are helpers and skipped.
    """
    package = importlib.import_module(package_name)
    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_") and not info.ispkg:
            importlib.import_module(f"{package_name}.{info.name}")
