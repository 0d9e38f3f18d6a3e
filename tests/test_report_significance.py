"""Reports researchers cite: paired tests against joint, the LaTeX table, every config and seed, unimodal
references in the plots, and report files readable by colleagues (the umask, not mkstemp's 0600)."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import stat
from pathlib import Path

import pytest

from orchestrator import results
from orchestrator.report import leaderboard_markdown, write_report
from orchestrator.report.leaderboard import build_leaderboard
from orchestrator.report.significance import against_joint, holm, paired_test

SEEDS = (0, 1, 2, 3)
BASE = {0: 0.80, 1: 0.84, 2: 0.78, 3: 0.82}  # joint's test acc per seed: a 6 pp spread across seeds


def fake_trial(root: Path, method: str, seed: int, acc: float, params: dict | None = None, row: str | None = None):
    """A finished trial with hand-set numbers (the reports read only the results folder)."""
    config = {"method": method, "dataset": "mfeat", "seed": seed, "epochs": 2, "params": params or {}}
    tid = f"{row or method}_{json.dumps(params or {}, sort_keys=True).__hash__() % 1000:03d}_s{seed}"
    path = results.trial_dir(root, tid)
    results.write_config(path, config, tid, root.name, row)
    mods = ["pix"] if row == "unimodal:pix" else ["pix", "fou"]
    per_mod = {f"val/acc/{m}": acc - 0.1 for m in mods}
    history = [{"epoch": e, "val/acc": acc - 0.05 / e, **per_mod} for e in (1, 2)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    summary = {"status": "completed", "dataset": "mfeat", "modalities": mods, "seed": seed, "best_epoch": 2}
    summary.update({"val/acc": acc, "test/acc": acc, **{f"test/acc/{m}": acc - 0.1 for m in mods}})
    results.write_summary(path, summary)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "exp"
    for s in SEEDS:
        fake_trial(root, "joint", s, BASE[s])
        fake_trial(root, "better", s, BASE[s] + 0.05 + 0.002 * s)  # +5 pp on every seed
        fake_trial(root, "noisy", s, BASE[s] + (0.03, -0.03, 0.02, -0.02)[s])  # +0 pp on average
        fake_trial(root, "ogm_ge", s, BASE[s] + 0.01 * s, {"alpha": 0.4})
        fake_trial(root, "ogm_ge", s, BASE[s] - 0.01, {"alpha": 0.8})
        fake_trial(root, "unimodal", s, 0.7, {"modality": "pix"}, row="unimodal:pix")
    return root


def test_paired_t_test_is_students_on_the_seed_differences():
    # differences 1, 2, 3: t = mean / (sd / sqrt(n)) = 2 / (1 / sqrt 3); with 2 degrees of freedom the
    # t distribution's CDF has a closed form, F(t) = 1/2 + t / (2 sqrt(2 + t^2)), so p = 1 - t / sqrt(2 + t^2)
    t = 2 * math.sqrt(3)
    res = paired_test({0: 1.0, 1: 2.0, 2: 3.0, 9: 100.0}, {0: 0.0, 1: 0.0, 2: 0.0})  # seed 9 has no pair
    assert res.n == 3 and res.diff == pytest.approx(2.0)
    assert res.p == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-9)
    assert paired_test({0: 0.5}, {0: 0.4}).p is None  # one pair: no test
    assert paired_test({0: 0.5, 1: 0.6}, {0: 0.4, 1: 0.5}).p is None  # constant difference: no variance


def test_leaderboard_shows_the_paired_difference_to_joint(folder: Path):
    (board,) = build_leaderboard(folder).boards
    tests = against_joint(board)
    assert tests["better"]["test/acc"].p < 0.001 and tests["noisy"]["test/acc"].p > 0.5
    # an unpaired test would not see it: the seed spread of joint (6 pp) swamps a 5 pp gain
    assert tests["better"]["test/acc"].n == 4
    text = leaderboard_markdown(folder)
    section = text.split("difference to joint, paired t-test over seeds")[1]
    assert "over the seeds both ran (4 pairs)" in section  # unimodal:pix has no fou column: not a "0 pairs"
    better = next(line for line in section.splitlines() if line.startswith("| better |"))
    noisy = next(line for line in section.splitlines() if line.startswith("| noisy |"))
    assert "+5.3 pp (p <0.001, Holm <0.001)***" in better
    assert "stars from the Holm-adjusted p" in section
    assert "*" not in noisy and ("(p 0.9" in noisy or "(p 1.000, Holm 1.000)" in noisy)


def test_latex_table_is_booktabs_with_escapes_bold_and_daggers(folder: Path, tmp_path: Path):
    files = write_report(folder, tmp_path / "rep")
    tex = files["latex"].read_text()
    assert tex.count(r"\toprule") == tex.count(r"\midrule") == tex.count(r"\bottomrule") == 1
    assert tex.count(r"\begin{tabular}") == tex.count(r"\end{tabular}") == 1 and "booktabs" in tex
    spec = tex.split(r"\begin{tabular}{")[1].split("}")[0]
    body = tex.split(r"\midrule")[1].split(r"\bottomrule")[0].strip().splitlines()
    assert all(line.count(" & ") == len(spec) - 1 and line.endswith(r"\\") for line in body)
    assert any(line.startswith(r"ogm\_ge & ") for line in body) and "unimodal:pix" in tex  # _ escaped
    better = next(line for line in body if line.startswith("better &"))
    mean = 100 * (sum(BASE.values()) / len(BASE) + 0.053)
    assert better.split(" & ")[1].startswith(rf"\textbf{{{mean:.1f}}}") and r"$^\dagger$" in better.split(" & ")[1]
    noisy = next(line for line in body if line.startswith("noisy &"))
    assert r"\dagger" not in noisy.split(" & ")[1]


def test_every_configuration_and_every_seed(folder: Path, tmp_path: Path):
    files = write_report(folder, tmp_path / "rep")
    configs = list(csv.DictReader(io.StringIO(files["configs_csv"].read_text())))
    ogm = [r for r in configs if r["method"] == "ogm_ge"]
    assert sorted(r["config"] for r in ogm) == ["params.alpha=0.4", "params.alpha=0.8"]
    assert [r["chosen"] for r in ogm if r["config"] == "params.alpha=0.4"] == ["True"]  # higher mean val/acc
    assert float(next(r for r in ogm if r["chosen"] == "False")["test/acc/mean"]) == pytest.approx(
        sum(BASE.values()) / 4 - 0.01
    )
    assert "alpha=0.8" in files["configs"].read_text()
    seeds = list(csv.DictReader(io.StringIO(files["seeds_csv"].read_text())))
    assert len(seeds) == 6 * len(SEEDS)
    joint = {int(r["seed"]): float(r["test/acc"]) for r in seeds if r["method"] == "joint"}
    assert joint == pytest.approx(BASE)


def test_unimodal_reference_is_dashed_in_its_modality_panel(folder: Path):
    from orchestrator.report.plots import board_figures

    (board,) = build_leaderboard(folder).boards
    fused, pix, fou = board_figures(board)["mfeat-val_acc"].axes
    styles = {
        ax.get_title().split()[0]: {ln.get_label(): ln.get_linestyle() for ln in ax.get_lines()}
        for ax in (fused, pix, fou)
    }
    assert styles["pix"]["pix alone"] == "--" and styles["pix"]["joint"] == "-"
    assert styles["fused"]["pix alone"] == "--"
    assert "pix alone" not in styles["fou"]


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_result_and_report_files_follow_the_umask(folder: Path, tmp_path: Path, umask: int):
    old = os.umask(umask)
    try:
        fake_trial(tmp_path / "exp2", "joint", 0, 0.8)
        fake_trial(tmp_path / "exp2", "joint", 1, 0.82)
        files = write_report(tmp_path / "exp2", tmp_path / "rep")
        results.ResultsWriter(tmp_path / "exp2", "exp2").write_sweep("experiment: exp2\n")
    finally:
        os.umask(old)
    made = [*files.values(), *(tmp_path / "exp2" / "trials").rglob("*.json"), tmp_path / "exp2" / "sweep.yaml"]
    assert len(made) > 10
    for f in made:
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~umask, f


def test_differences_are_in_the_leaderboards_units():
    from orchestrator.report.significance import Paired, _cell

    # Shapley values are shown in pp in the leaderboard, so their difference is too (it was printed as
    # a fraction, +0.1, for a 5 pp gain); ratios keep the leaderboard's 3 decimals
    assert _cell("test/shapley/pix", Paired(3, 0.05, 0.2, 0.6)) == "+5.0 pp (p 0.200, Holm 0.600)"
    assert _cell("test/probe/acc/fou", Paired(3, -0.012, 0.0004, 0.0008)) == "-1.2 pp (p <0.001, Holm <0.001)***"
    # the stars are the Holm-adjusted p's: a raw 0.012 that Holm lifts to 0.180 gets none
    assert _cell("test/probe/acc/fou", Paired(3, 0.012, 0.012, 0.18)) == "+1.2 pp (p 0.012, Holm 0.180)"
    assert _cell("test/imbalance/score_ratio", Paired(3, -0.0512, None)) == "-0.051 (p –)"


def test_holm_adjusts_step_down_by_hand():
    # sorted: 0.005, 0.01, 0.03, 0.04 (m = 4) -> 4 * 0.005 = 0.02, 3 * 0.01 = 0.03, 2 * 0.03 = 0.06,
    # 1 * 0.04 = 0.04 raised to 0.06 (the adjusted p keep the raw order); back in the given order:
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # None is no test: it stays None and does not count in m (m = 2 here, not 4)
    assert holm([None, 0.02, None, 0.01]) == [None, pytest.approx(0.02), None, pytest.approx(0.02)]
    # capped at 1: 3 * 0.2 = 0.6, 2 * 0.55 = 1.1 -> 1, and 1 * 0.6 = 0.6 raised to that 1
    assert holm([0.2, 0.6, 0.55]) == pytest.approx([0.6, 1.0, 1.0])
    assert holm([]) == [] and holm([None]) == [None] and holm([0.03]) == [0.03]  # one test: unadjusted
    ps = [0.001, 0.2, 0.011, 0.04, 0.012, 0.5, 0.013]
    adjusted = holm(ps)
    by_raw = [a for _, a in sorted(zip(ps, adjusted, strict=True))]
    assert by_raw == sorted(by_raw) and all(a >= p for p, a in zip(ps, adjusted, strict=True))


@pytest.fixture
def marginal(tmp_path: Path) -> Path:
    """joint, a clear gain, a null method, a unimodal row, and "marginal": raw p < 0.05 that Holm lifts above."""
    root = tmp_path / "exp"
    for s in SEEDS:
        fake_trial(root, "joint", s, BASE[s])
        fake_trial(root, "better", s, BASE[s] + 0.05 + 0.002 * s)
        fake_trial(root, "noisy", s, BASE[s] + (0.03, -0.03, 0.02, -0.02)[s])
        fake_trial(root, "marginal", s, BASE[s] + (0.01, 0.03, 0.01, 0.02)[s])
        fake_trial(root, "unimodal", s, 0.7, {"modality": "pix"}, row="unimodal:pix")
    return root


def test_holm_family_is_one_column_across_methods(marginal: Path):
    (board,) = build_leaderboard(marginal).boards
    tests = against_joint(board)
    for c in board.columns:  # each column is adjusted over the methods, on its own
        raw = [per[c].p for per in tests.values()]
        assert [per[c].p_holm for per in tests.values()] == holm(raw)
    # test/acc has 4 tests (unimodal:pix included), test/acc/fou 3 (unimodal:pix has no fou): the same
    # raw p of "better" is multiplied by 4 in one column and by 3 in the other
    better = tests["better"]
    assert better["test/acc"].p == pytest.approx(better["test/acc/fou"].p)
    assert better["test/acc"].p_holm == pytest.approx(4 * better["test/acc"].p)
    assert better["test/acc/fou"].p_holm == pytest.approx(3 * better["test/acc/fou"].p)
    assert tests["unimodal:pix"]["test/acc/fou"].p_holm is None


def test_raw_p_below_005_that_fails_holm_gets_no_star_and_no_dagger(marginal: Path, tmp_path: Path):
    (board,) = build_leaderboard(marginal).boards
    t = against_joint(board)["marginal"]["test/acc"]
    assert t.p < 0.05 <= t.p_holm and t.stars == ""  # raw 0.035, Holm 2 * 0.035 (second smallest of 4)
    text = leaderboard_markdown(marginal)
    section = text.split("difference to joint, paired t-test over seeds")[1]
    row = next(line for line in section.splitlines() if line.startswith("| marginal |"))
    assert f"(p {t.p:.3f}, Holm {t.p_holm:.3f})" in row and "*" not in row
    files = write_report(marginal, tmp_path / "rep")
    tex = files["latex"].read_text()
    body = tex.split(r"\midrule")[1].split(r"\bottomrule")[0].strip().splitlines()
    assert r"\dagger" not in next(line for line in body if line.startswith("marginal &"))
    assert r"$^\dagger$" in next(line for line in body if line.startswith("better &")).split(" & ")[1]
    assert "Holm-adjusted $p<0.05$" in tex
