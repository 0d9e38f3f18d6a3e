"""Diverged trials in reports: listed on their own, never averaged into the leaderboard.

A trial whose training loss (or a parameter) stopped being finite ends with ``status: diverged`` and
the epoch and metric in its ``summary.json`` (:mod:`trainables.divergence`). Its validation numbers
are those of a broken model (chance level at best), so averaging them in would make a method look
worse, or a config look stable, for the wrong reason. The leaderboard keeps only completed trials;
this module names the diverged ones under the tables.
"""

from __future__ import annotations

from orchestrator.results import TrialRecord


def diverged_trials(trials: list[TrialRecord]) -> list[TrialRecord]:
    """The trials whose summary says ``status: diverged``."""
    return [t for t in trials if t.diverged]


def diverged_lines(trials: list[TrialRecord]) -> list[str]:
    """One line per diverged trial: id, method, seed, the metric that stopped it and the epoch."""
    out = []
    for t in diverged_trials(trials):
        info = (t.summary or {}).get("diverged") or {}
        what = f"{info.get('metric', '?')} = {info.get('value', '?')} at epoch {info.get('epoch', '?')}"
        out.append(f"{t.trial_id}: {t.method}, seed {t.seed}, {what}")
    return out


def diverged_markdown(trials: list[TrialRecord]) -> list[str]:
    """The Markdown section (empty when no trial diverged)."""
    lines = diverged_lines(trials)
    if not lines:
        return []
    return [f"## Diverged ({len(lines)} trials, not in the averages)", "", *(f"- {x}" for x in lines), ""]
