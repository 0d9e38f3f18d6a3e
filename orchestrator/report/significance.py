"""Is a method's difference to ``joint`` more than seed noise? A paired t-test per metric, over seeds.

Pairs are the seeds both configurations ran (each method's chosen config against joint's chosen
config, the configs the leaderboard shows): seed ``s`` of a method and seed ``s`` of joint share the
data split, the initialisation seed and the batch order, so their difference removes what the seed
alone moves. The test is Student's paired t-test, two-sided (``scipy.stats.ttest_rel``), on the
per-seed differences; ``n`` is the number of pairs, and no p-value is given below two pairs or when
every difference is the same (zero variance).

Why this test: with the 3 to 5 seeds a sweep runs, the Wilcoxon signed-rank test cannot reach
p < 0.05 (its smallest two-sided p with 5 pairs is 0.0625, with 3 pairs 0.25), while the t-test
can; its assumption (roughly normal differences) is the usual one for seed-to-seed variation. SciPy
gives the t distribution (a dependency for that alone; it is the standard).

Multiple comparisons: a board tests some 20 methods on each of about 9 metric columns; were no method
different from joint, raw p < 0.05 would still star about one method per column. The stars (and the
LaTeX table's dagger) therefore come from Holm-adjusted p-values (:func:`holm`), the family being one
metric column of one dataset board: every method's test against joint on that column. Holm's
step-down procedure controls the family-wise error rate (the chance of any false star in the column)
at the level read off, assumes nothing about how the tests depend on each other (they share joint's
seeds, so they are correlated), and is uniformly more powerful than Bonferroni (its adjusted p is
never larger). The raw p-value is shown next to the adjusted one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from orchestrator.report.leaderboard import BASELINE, DatasetBoard, Entry, Leaderboard, _number

LEVELS = ((0.001, "***"), (0.01, "**"), (0.05, "*"))


@dataclass(frozen=True)
class Paired:
    """A method minus joint on one metric, over the seeds both ran."""

    n: int
    diff: float  # mean of (method - joint) over the pairs
    p: float | None  # two-sided p-value; None below two pairs or with zero variance
    p_holm: float | None = None  # p Holm-adjusted over the methods of this column (set by against_joint)

    @property
    def stars(self) -> str:
        """From the Holm-adjusted p: none for a test that is not part of a family (``p_holm`` None)."""
        if self.p_holm is None:
            return ""
        return next((s for level, s in LEVELS if self.p_holm < level), "")


def holm(ps: list[float | None]) -> list[float | None]:
    """Holm-Bonferroni step-down adjusted p-values, in the order given; None stays None.

    The family is the non-None entries (``m`` of them; a None is no test and does not count): sorted
    ascending, the ``j``-th smallest (from 0) becomes ``min(1, (m - j) * p)``, raised to the largest
    such value before it so that the adjusted p-values keep the raw ones' order. Rejecting where the
    adjusted p < alpha controls the family-wise error rate at alpha under any dependence.
    """
    order = sorted((i for i, p in enumerate(ps) if p is not None), key=lambda i: ps[i])
    m, out, running = len(order), list(ps), 0.0
    for j, i in enumerate(order):
        running = max(running, min(1.0, (m - j) * ps[i]))
        out[i] = running
    return out


def per_seed(entry: Entry, key: str) -> dict[int, float]:
    """Seed -> the metric's value in that seed's summary (finite values only)."""
    out = {}
    for t in entry.trials:
        x = _number(t.summary.get(key))
        if x is not None:
            out[t.seed] = x
    return out


def paired_test(a: dict[int, float], b: dict[int, float]) -> Paired:
    """``a - b`` over the seeds in both; Student's paired t-test, two-sided."""
    seeds = sorted(set(a) & set(b))
    diffs = [a[s] - b[s] for s in seeds]
    if not diffs:
        return Paired(0, math.nan, None)
    mean = sum(diffs) / len(diffs)
    if len(diffs) < 2 or max(diffs) - min(diffs) <= 1e-12 * max(1.0, abs(mean)):
        return Paired(len(diffs), mean, None)
    from scipy import stats  # ~0.3 s to import: only when a report is written

    res = stats.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds])
    return Paired(len(diffs), mean, float(res.pvalue))


def against_joint(board: DatasetBoard) -> dict[str, dict[str, Paired]]:
    """Per method (joint excluded) and per metric column: the paired test against joint's chosen config,
    with ``p_holm`` adjusted over the methods of that column (one column of one board is one family)."""
    base = next((e for e in board.entries if e.method == BASELINE), None)
    if base is None:
        return {}
    tests = {
        e.method: {c: paired_test(per_seed(e, c), per_seed(base, c)) for c in board.columns}
        for e in board.entries
        if e.method != BASELINE
    }
    for c in board.columns:
        adjusted = holm([per[c].p for per in tests.values()])
        for per, p_holm in zip(tests.values(), adjusted, strict=True):
            per[c] = replace(per[c], p_holm=p_holm)
    return tests


def _cell(key: str, t: Paired) -> str:
    if t.n == 0:
        return "–"
    from orchestrator.report.formatting import is_fraction

    # the leaderboard's units: percentage points where the table shows percent, else 3 decimals
    scale, digits, unit = (100.0, 1, " pp") if is_fraction(key) else (1.0, 3, "")
    if t.p is None:
        return f"{t.diff * scale:+.{digits}f}{unit} (p –)"
    return f"{t.diff * scale:+.{digits}f}{unit} (p {_p(t.p)}, Holm {_p(t.p_holm)}){t.stars}"


def _p(p: float | None) -> str:
    return "–" if p is None else f"{p:.3f}" if p >= 0.001 else "<0.001"


def significance_markdown(lb: Leaderboard) -> str:
    """One Markdown table per dataset: each method minus joint per metric, with the raw and Holm-adjusted p."""
    from orchestrator.report.formatting import column_title

    lines: list[str] = []
    for board in lb.boards:
        tests = against_joint(board)
        if not tests:
            continue
        n = sorted({t.n for per in tests.values() for t in per.values() if t.n})
        lines += [
            f"## {board.dataset}: difference to {BASELINE}, paired t-test over seeds",
            "",
            f"Method minus {BASELINE} (chosen configs), mean over the seeds both ran ({'/'.join(map(str, n))} pairs); "
            "two-sided paired t-test, raw p and Holm-adjusted p (family: the methods of one column); "
            "stars from the Holm-adjusted p: * p<0.05, ** p<0.01, *** p<0.001.",
            "",
            "| method | " + " | ".join(column_title(c) for c in board.columns) + " |",
            "|---|" + "--:|" * len(board.columns),
        ]
        for method, per in tests.items():
            lines.append(f"| {method} | " + " | ".join(_cell(c, per[c]) for c in board.columns) + " |")
        lines.append("")
    return "\n".join(lines)
