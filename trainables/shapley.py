"""Exact Shapley values over a few players (modalities): one implementation for every user.

The common protocol's ``test/shapley/<m>`` (on accuracies), AGM's mono-modal responses (on logits)
and sample-level valuation's per-sample contributions (on per-sample values) all call :func:`shapley`;
the value of a coalition may be a float or a tensor (anything with ``+``, ``-`` and scaling).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from itertools import combinations
from typing import Any


def subsets(players: Sequence[Hashable], empty: bool = True) -> list[frozenset]:
    """Every subset of ``players``, smallest first (the empty one first unless ``empty=False``)."""
    start = 0 if empty else 1
    return [frozenset(s) for r in range(start, len(players) + 1) for s in combinations(players, r)]


def shapley(players: Sequence[Hashable], value: Callable[[frozenset], Any]) -> dict[Hashable, Any]:
    """Exact Shapley value of each player for the set function ``value`` (called once per subset):
    ``phi_m = sum_{S not containing m} |S|! (n-|S|-1)! / n! * (v(S + m) - v(S))``."""
    n = len(players)
    cache = {s: value(s) for s in subsets(players)}
    out = {}
    for m in players:
        phi: Any = 0.0
        for s in cache:
            if m not in s:
                weight = math.factorial(len(s)) * math.factorial(n - len(s) - 1) / math.factorial(n)
                phi = phi + weight * (cache[s | {m}] - cache[s])
        out[m] = phi
    return out
