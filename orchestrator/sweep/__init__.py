"""The sweep file: what to compare, how to search, where and how to run; parsed and checked in full.

- :mod:`~orchestrator.sweep.spec`: the sweep keys as frozen dataclasses, :class:`Sweep`, :class:`TrialPlan`.
- :mod:`~orchestrator.sweep.load`: reading, ``--set`` overrides, :func:`load_sweep` / :func:`parse_sweep`.
- :mod:`~orchestrator.sweep.expand`: one ``methods:`` entry -> its resolved trial configs.
- :mod:`~orchestrator.sweep.checks`: cross-checks between searcher, scheduler, mode and seeds.
- :mod:`~orchestrator.sweep.space`: the search-space vocabulary (``grid``, ``choice``, ``loguniform``, ...).
"""

from orchestrator.sweep.expand import method_label
from orchestrator.sweep.load import canonical, load_sweep, parse_sweep
from orchestrator.sweep.spec import Sweep, SweepErrors, TrialPlan

__all__ = ["Sweep", "SweepErrors", "TrialPlan", "canonical", "load_sweep", "method_label", "parse_sweep"]
