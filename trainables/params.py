"""Typed, frozen parameter dataclasses and their validation from plain dicts (YAML, ``--set``).

Every sweepable knob of a method, a dataset or the trial is a field of a frozen dataclass declared
with :func:`knob` (default + one-line meaning). :func:`build_params` turns a user dict into that
dataclass and fails with one :class:`ConfigError` line naming the key and what is allowed. Type
coercion is pydantic's (``TypeAdapter``): it already knows ``Literal``, ``list[str]``, ``int | None``
and strict bool/number rules, so we do not write our own.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from typing import Any, Literal, TypeVar, get_args, get_origin

import pydantic

from trainables.errors import ConfigError

P = TypeVar("P")


def knob(
    default: Any,
    help: str,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Any:
    """A dataclass field with its default, its one-line meaning (shown by ``mmbal list``) and its range.

    ``ge``/``gt``/``le``/``lt`` bound a number (``None`` values of an optional knob are not checked);
    :func:`build_params` rejects a value outside them in one line, and ``mmbal list`` shows them.
    """
    bounds = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}
    meta = {"help": help, "bounds": bounds}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


_OPS = {
    "ge": (">=", lambda v, b: v >= b),
    "gt": (">", lambda v, b: v > b),
    "le": ("<=", lambda v, b: v <= b),
    "lt": ("<", lambda v, b: v < b),
}


def range_text(bounds: dict[str, float], integer: bool = False) -> str:
    """``{"ge": 0, "le": 1}`` -> ``"a number >= 0 and <= 1"`` (``"an integer ..."`` for int knobs)."""
    kind = "an integer" if integer else "a number"
    return kind + " " + " and ".join(f"{_OPS[k][0]} {b}" for k, b in bounds.items())


def check_bounds(obj: Any, prefix: str = "") -> None:
    """Raise ``ConfigError`` for the first field of the dataclass ``obj`` outside its declared range.

    :func:`build_params` calls it on every params object it builds; a ``__post_init__`` may call it too,
    so that a params object built directly in code is checked as well.
    """
    _check_values(type(obj), {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}, prefix)


def _check_values(cls: type, values: dict[str, Any], prefix: str = "") -> None:
    hints = _hints(cls)
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name not in values:
            continue
        bounds = f.metadata.get("bounds") or {}
        value = values[f.name]
        if not bounds or value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not all(_OPS[k][1](value, b) for k, b in bounds.items()):
            integer = hints[f.name] is int or hints[f.name] == (int | None)
            raise ConfigError(prefix + f.name, f"got {value!r}; allowed: {range_text(bounds, integer)}")


@dataclasses.dataclass(frozen=True)
class NoParams:
    """For plugins without knobs."""


@functools.cache
def _adapter(tp: Any) -> pydantic.TypeAdapter:
    return pydantic.TypeAdapter(tp, config=pydantic.ConfigDict(strict=False))


@functools.cache  # typing.get_type_hints evaluates every annotation string anew: 80% of validating a big sweep
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _allowed(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    name = getattr(tp, "__name__", None)
    return f"a value of type {name}" if name else f"a value of type {tp}"


def _coerce(tp: Any, value: Any, key: str) -> Any:
    if tp is float and isinstance(value, bool):
        raise ConfigError(key, f"got {value!r}; allowed: a number")
    try:
        return _adapter(tp).validate_python(value)
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(key, f"got {value!r}; allowed: {_allowed(tp)} ({err['msg']})") from None


def build_params(cls: type[P], values: dict[str, Any] | None, prefix: str = "") -> P:
    """Validate ``values`` against the dataclass ``cls`` (recursing into nested dataclasses).

    Args:
        cls: a (frozen) dataclass type.
        values: user-given keys; missing keys take the field defaults.
        prefix: dotted path of this section, for error messages (``params.``).

    Raises:
        ConfigError: unknown key, wrong type or value not allowed; one line.
    """
    values = dict(values or {})
    if not isinstance(values, dict):
        raise ConfigError(prefix.rstrip(".") or "config", f"expected a mapping, got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = _hints(cls)
    unknown = sorted(set(values) - set(fields))
    if unknown:
        allowed = ", ".join(sorted(fields)) or "(no keys)"
        raise ConfigError(prefix + unknown[0], f"unknown key; allowed keys: {allowed}")
    kwargs = {}
    for name, value in values.items():
        tp = hints[name]
        key = prefix + name
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(key, f"expected a mapping of {', '.join(f.name for f in dataclasses.fields(tp))}")
            kwargs[name] = build_params(tp, value, key + ".")
        else:
            kwargs[name] = _coerce(tp, value, key)
    try:
        _check_values(cls, kwargs)  # ranges first (defaults are in range): __post_init__ would name another key
        obj = cls(**kwargs)
    except (ValueError, TypeError) as exc:  # ranges and __post_init__ cross-field checks
        if isinstance(exc, ConfigError):
            raise ConfigError(prefix + exc.key, exc.message) from None
        raise ConfigError(prefix.rstrip(".") or "config", str(exc)) from None
    return obj


def describe(cls: type) -> list[tuple[str, str, Any, str]]:
    """``(name, type, default, meaning)`` for each field, for ``mmbal list``."""
    out = []
    hints = _hints(cls)
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        tp = hints[f.name]
        tname = getattr(tp, "__name__", None) if get_origin(tp) is None else None
        meaning = f.metadata.get("help", "")
        if f.metadata.get("bounds"):
            meaning += f" [{range_text(f.metadata['bounds'], tp is int or tp == (int | None))}]"
        out.append((f.name, tname or str(tp).replace("typing.", ""), default, meaning))
    return out


def to_dict(obj: Any) -> dict[str, Any]:
    """A params dataclass as a plain (JSON-able) dict."""
    return dataclasses.asdict(obj)
