"""The sweep YAML's search-space vocabulary: fixed values, ``grid`` and sampled distributions.

A value in a sweep is either fixed (``lr: 0.01``) or a one-key mapping naming a distribution::

    lr: {loguniform: [1.0e-3, 1.0e-1]}     # log-uniform in [low, high)
    alpha: {grid: [0.1, 0.5, 1.0]}         # every value is run (a grid dimension)
    fusion: {choice: [concat, sum]}        # one value drawn at random per sample

Draws use our own seeded numpy generator, so the expanded trial list is a pure function of the
sweep file (``mmbal validate`` checks exactly the configs that ``mmbal sweep`` runs). The same
distributions convert to Ray Tune domains for the model-based searchers and PBT.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from trainables.errors import ConfigError

# name -> (argument names, is it sampled at random?)
DISTRIBUTIONS: dict[str, tuple[tuple[str, ...], bool]] = {
    "grid": (("values",), False),
    "choice": (("values",), True),
    "uniform": (("low", "high"), True),
    "quniform": (("low", "high", "q"), True),
    "loguniform": (("low", "high"), True),
    "qloguniform": (("low", "high", "q"), True),
    "randint": (("low", "high"), True),
    "qrandint": (("low", "high", "q"), True),
    "lograndint": (("low", "high"), True),
}
ALLOWED = ", ".join(DISTRIBUTIONS)


@dataclass(frozen=True)
class Dist:
    """One distribution of the sweep, with the dotted key it sits at (for error messages)."""

    kind: str
    args: tuple[Any, ...]
    key: str

    @property
    def is_grid(self) -> bool:
        return self.kind == "grid"

    @property
    def values(self) -> list[Any]:
        return list(self.args[0])

    def sample(self, rng: np.random.Generator) -> Any:
        """One draw (Tune's conventions: ``randint`` excludes ``high``, q-forms round to multiples of q)."""
        k, a = self.kind, self.args
        if k == "choice":
            return self.values[int(rng.integers(len(self.values)))]
        if k in ("uniform", "quniform"):
            x = float(rng.uniform(a[0], a[1]))
            return _quantize(x, a[2]) if k == "quniform" else x
        if k in ("loguniform", "qloguniform"):
            x = float(math.exp(rng.uniform(math.log(a[0]), math.log(a[1]))))
            return _quantize(x, a[2]) if k == "qloguniform" else x
        if k == "randint":
            return int(rng.integers(a[0], a[1]))
        if k == "qrandint":  # Tune: high inclusive, multiples of q
            return int(_quantize(int(rng.integers(a[0], a[1] + 1)), a[2]))
        if k == "lograndint":
            return int(math.floor(math.exp(rng.uniform(math.log(a[0]), math.log(a[1])))))
        raise AssertionError(k)

    def corners(self) -> list[Any]:
        """Extreme values, to validate a space whose draws are not known in advance (model-based searchers)."""
        k, a = self.kind, self.args
        if k in ("grid", "choice"):
            return self.values
        if k == "randint":
            return [a[0], a[1] - 1]
        if k == "lograndint":
            return [a[0], a[1] - 1]
        return [a[0], a[1]]

    def to_tune(self) -> Any:
        """The equivalent Ray Tune domain (``ray.tune`` is imported only here)."""
        from ray import tune

        if self.kind == "grid":
            return tune.grid_search(self.values)
        if self.kind == "choice":
            return tune.choice(self.values)
        return getattr(tune, self.kind)(*self.args)


def _quantize(x: float, q: float) -> float:
    return round(round(x / q) * q, 12)


def _parse(kind: str, raw: Any, key: str) -> Dist:
    names, _ = DISTRIBUTIONS[kind]
    if names == ("values",):
        if not isinstance(raw, list) or not raw:
            raise ConfigError(key, f"{kind} takes a non-empty list of values, e.g. {{{kind}: [0.1, 0.5]}}")
        return Dist(kind, (list(raw),), key)
    if not isinstance(raw, list) or len(raw) != len(names) or not all(_is_number(v) for v in raw):
        raise ConfigError(key, f"{kind} takes [{', '.join(names)}] (numbers), got {raw!r}")
    low, high = raw[0], raw[1]
    if not low < high:
        raise ConfigError(key, f"{kind}: low must be < high, got [{low}, {high}]")
    if kind.startswith(("log", "qlog")) and low <= 0:
        raise ConfigError(key, f"{kind}: low must be > 0, got {low}")
    if kind.endswith("randint") and not all(isinstance(v, int) for v in raw):
        raise ConfigError(key, f"{kind} takes integers, got {raw!r}")
    if len(raw) == 3 and raw[2] <= 0:
        raise ConfigError(key, f"{kind}: q must be > 0, got {raw[2]}")
    return Dist(kind, tuple(raw), key)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def looks_like_dist(value: Any) -> bool:
    """A one-key mapping whose key is a distribution name."""
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in DISTRIBUTIONS


def find_dists(tree: Any, prefix: str = "") -> list[Dist]:
    """Every distribution in a nested config tree (depth-first, in key order)."""
    if looks_like_dist(tree):
        kind, raw = next(iter(tree.items()))
        return [_parse(kind, raw, prefix.rstrip("."))]
    if isinstance(tree, dict):
        return [d for k, v in tree.items() for d in find_dists(v, f"{prefix}{k}.")]
    return []


def substitute(tree: Any, values: dict[str, Any], prefix: str = "") -> Any:
    """A copy of ``tree`` with the distribution at each dotted key replaced by ``values[key]``."""
    if looks_like_dist(tree):
        return values[prefix.rstrip(".")]
    if isinstance(tree, dict):
        return {k: substitute(v, values, f"{prefix}{k}.") for k, v in tree.items()}
    return tree


def to_tune_space(tree: Any) -> Any:
    """``tree`` with every distribution replaced by its Ray Tune domain."""
    if looks_like_dist(tree):
        kind, raw = next(iter(tree.items()))
        return _parse(kind, raw, "").to_tune()
    if isinstance(tree, dict):
        return {k: to_tune_space(v) for k, v in tree.items()}
    return tree


def expand(tree: dict[str, Any], samples: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    """Concrete configs: ``samples`` random draws, each crossed with every grid point.

    Random values are drawn per (sample, grid point), once, so that every seed later runs the
    very same config (Tune's own generator would redraw them per seed).
    """
    dists = find_dists(tree)
    grids = [d for d in dists if d.is_grid]
    randoms = [d for d in dists if not d.is_grid]
    out = []
    for _ in range(samples if randoms else 1):
        for point in itertools.product(*(g.values for g in grids)):
            values = {g.key: v for g, v in zip(grids, point, strict=True)}
            values.update({r.key: r.sample(rng) for r in randoms})
            out.append(substitute(tree, values))
    return out
