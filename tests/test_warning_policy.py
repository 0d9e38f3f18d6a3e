"""The deprecation policy in pyproject's pytest filters: a deprecated API called from our code fails
the test; a deprecation inside a third-party library stays a listed warning, never silenced."""

from __future__ import annotations

import warnings

import pytest


def warn_from(module: str, category: type[Warning]) -> None:
    """Emit ``category`` as if raised by a call made in ``module`` (as ``stacklevel=2`` would attribute it)."""
    warnings.warn_explicit("old API", category, filename=f"{module}.py", lineno=1, module=module)


@pytest.mark.parametrize("category", [DeprecationWarning, PendingDeprecationWarning, FutureWarning])
@pytest.mark.parametrize("module", ["orchestrator.run.ddp", "trainables.loop"])
def test_a_deprecation_our_code_triggers_is_an_error(module: str, category: type[Warning]) -> None:
    with pytest.raises(category, match="old API"):
        warn_from(module, category)


def test_a_deprecation_inside_a_library_is_recorded_not_ignored() -> None:
    with warnings.catch_warnings(record=True) as seen:  # keeps the configured filters, records instead of printing
        warn_from("ray.tune.some_module", DeprecationWarning)
    assert [str(w.message) for w in seen] == ["old API"]
