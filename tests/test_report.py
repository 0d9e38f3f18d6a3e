"""Leaderboard numbers against hand computations, partial sweeps, user mistakes and ``mmbal report``."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_report_sweep import make_sweep, summaries

from orchestrator import results
from orchestrator.cli import main
from orchestrator.report import leaderboard_markdown, write_report
from trainables.errors import ConfigError

TEST_KEYS = ["test/acc", "test/f1", "test/acc/pix", "test/acc/fou", "test/imbalance/score_ratio",
             "test/missing/pix/acc", "test/missing/fou/acc", "test/probe/acc/pix", "test/probe/acc/fou",
             "test/shapley/pix", "test/shapley/fou"]  # fmt: skip


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sweep(tmp_path_factory.mktemp("sweep"))


def read_csv(path: Path) -> dict[str, dict[str, str]]:
    with open(path) as fh:
        return {row["method"]: row for row in csv.DictReader(fh)}


def hand_leaderboard(folder: Path) -> dict[str, dict]:
    """Independent computation from the summary files: best config on mean val/acc, numpy mean/std(ddof=1)."""
    groups: dict[tuple[str, float], list[dict]] = {}
    for s in summaries(folder).values():
        groups.setdefault((s["method"], s["config"]["optim"]["lr"]), []).append(s)
    out = {}
    for method in {m for m, _ in groups}:
        cands = {lr: ss for (m, lr), ss in groups.items() if m == method}
        lr = max(cands, key=lambda k: np.mean([s["val/acc"] for s in cands[k]]))
        ss = cands[lr]
        out[method] = {"lr": lr, "n": len(ss), "val": np.mean([s["val/acc"] for s in ss])}
        for k in TEST_KEYS:
            if all(k in s for s in ss):  # unimodal has no metrics for the modality it does not model
                v = np.array([float(s[k]) for s in ss])
                out[method][k] = (v.mean(), v.std(ddof=1))
    return out


def test_table_numbers_equal_a_hand_computation(sweep: Path, tmp_path: Path) -> None:
    files = write_report(sweep, tmp_path / "rep")
    rows = read_csv(files["csv"])
    hand = hand_leaderboard(sweep)
    assert set(rows) == {"joint", "unimodal"}
    for method, h in hand.items():
        row = rows[method]
        assert int(row["n_seeds"]) == h["n"] == 2
        assert float(row["select_mean"]) == pytest.approx(h["val"])
        for k in TEST_KEYS:
            if k not in h:
                assert row[f"{k}/mean"] == "", k
                continue
            assert float(row[f"{k}/mean"]) == pytest.approx(h[k][0]), k
            assert float(row[f"{k}/std"]) == pytest.approx(h[k][1]), k
    # the chosen joint config is the learning rate with the better mean validation accuracy
    chosen = rows["joint"]["config"]
    assert chosen == f"optim.lr={hand['joint']['lr']}" and rows["joint"]["n_configs"] == "2"
    # weak modality = the lower joint linear-probe test accuracy (the per-modality headline); the gain is
    # the difference of means
    weak = min(["pix", "fou"], key=lambda m: hand["joint"][f"test/probe/acc/{m}"][0])
    assert rows["unimodal"]["weak_modality"] == weak
    if f"test/probe/acc/{weak}" in hand["unimodal"]:
        gain = hand["unimodal"][f"test/probe/acc/{weak}"][0] - hand["joint"][f"test/probe/acc/{weak}"][0]
        assert float(rows["unimodal"]["gain_weak_vs_joint"]) == pytest.approx(gain)
    else:  # unimodal(pix) has no accuracy on fou: no gain is made up
        gain = None
        assert rows["unimodal"]["gain_weak_vs_joint"] == ""
    # the Markdown shows the same numbers in percent, and names the weak modality in the header
    md = files["markdown"].read_text()
    m, s = hand["joint"]["test/acc"]
    assert f"| {100 * m:.1f} ± {100 * s:.1f} |" in md
    assert f"weak modality: {weak}" in md and f"Δ probe {weak} vs joint (pp)" in md
    assert gain is None or f"{100 * gain:+.1f}" in md
    assert md == leaderboard_markdown(sweep)  # the sweep's end-of-run leaderboard is the same text


def fake_trial(
    folder: Path, tid: str, method: str, lr: float, seed: int, val: float, test: float, dataset: str = "mfeat"
) -> None:
    """A hand-made completed trial (no training): known numbers for exact expectations."""
    cfg = {"method": method, "dataset": dataset, "seed": seed, "epochs": 2, "optim": {"lr": lr}}
    path = results.trial_dir(folder, tid)
    results.write_config(path, cfg, tid, folder.name)
    rows = [{"epoch": e, "val/acc": val, "val/acc/a": val, "val/acc/b": val / 2} for e in (1, 2)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = {
        "method": method,
        "dataset": dataset,
        "seed": seed,
        "modalities": ["a", "b"],
        "best_epoch": 2,
        "val/acc": val,
        "val/loss": 1 - val,
        "test/acc": test,
        "test/acc/a": test,
        "test/acc/b": test / 2,
        "test/f1": test,
    }
    results.write_summary(path, summary)


def test_selection_uses_validation_never_test(tmp_path: Path) -> None:
    folder = tmp_path / "exp"
    # config lr=0.1: mean val 0.7, mean test 0.55; config lr=0.2: mean val 0.6 but test 0.9 (must lose)
    for seed, (val, test) in enumerate([(0.8, 0.5), (0.6, 0.6)]):
        fake_trial(folder, f"j1_s{seed}", "joint", 0.1, seed, val, test)
    for seed in (0, 1):
        fake_trial(folder, f"j2_s{seed}", "joint", 0.2, seed, 0.6, 0.9)
    write_report(folder, tmp_path / "r")
    row = read_csv(tmp_path / "r" / "leaderboard.csv")["joint"]
    assert row["config"] == "optim.lr=0.1"
    assert float(row["test/acc/mean"]) == pytest.approx(0.55)
    assert float(row["test/acc/std"]) == pytest.approx(math.sqrt(0.005))  # sample std of (0.5, 0.6)
    assert float(row["select_std"]) == pytest.approx(math.sqrt(0.02))  # of (0.8, 0.6)
    # minimising val/loss (= 1 - val/acc here) picks the same config
    write_report(folder, tmp_path / "r2", "val/loss", "min")
    assert read_csv(tmp_path / "r2" / "leaderboard.csv")["joint"]["config"] == "optim.lr=0.1"


def test_one_table_per_dataset_and_no_gain_without_joint(tmp_path: Path) -> None:
    folder = tmp_path / "exp"
    fake_trial(folder, "a", "joint", 0.1, 0, 0.8, 0.6, dataset="mfeat")  # test/acc/b = 0.3 < a: b is weak
    fake_trial(folder, "b", "mla", 0.1, 0, 0.7, 0.8, dataset="mfeat")
    fake_trial(folder, "c", "mla", 0.1, 0, 0.5, 0.4, dataset="synthetic")
    md = leaderboard_markdown(folder)
    assert (
        "## mfeat (weak modality: b," in md
        and "## synthetic (no joint baseline in these results: no gain column)" in md
    )
    assert md.count("Δ acc") == 1
    files = write_report(folder, tmp_path / "r")
    with open(files["csv"]) as fh:
        rows = {(r["dataset"], r["method"]): r for r in csv.DictReader(fh)}
    assert float(rows[("mfeat", "mla")]["gain_weak_vs_joint"]) == pytest.approx(0.4 - 0.3)
    assert rows[("synthetic", "mla")]["gain_weak_vs_joint"] == "" and rows[("synthetic", "mla")]["weak_modality"] == ""
    assert sorted(p.name for p in (tmp_path / "r" / "plots").glob("*.png")) == [
        "mfeat-val_acc.png",
        "synthetic-val_acc.png",
    ]  # fmt: skip  (no imbalance or missing data in these trials)


def test_partial_sweep_reports_what_finished_and_lists_the_rest(sweep: Path, tmp_path: Path) -> None:
    folder = tmp_path / "partial"
    shutil.copytree(sweep, folder, ignore=shutil.ignore_patterns("report", "checkpoints"))
    (folder / "trials" / "unimodal_c0_s1" / "summary.json").unlink()
    files = write_report(folder)
    md = files["markdown"].read_text()
    assert "Partial: 5 of 6 trials finished" in md
    assert "- unimodal_c0_s1: unimodal, seed 1, 3 of 3 epochs logged" in md
    row = read_csv(files["csv"])["unimodal"]
    s = summaries(folder)["unimodal_c0_s0"]
    assert (
        row["n_seeds"] == "1"
        and row["test/acc/std"] == ""
        and float(row["test/acc/mean"]) == pytest.approx(s["test/acc"])
    )
    assert "unimodal_c0_s1" in files["html"].read_text()


def test_no_finished_trial_says_so(tmp_path: Path) -> None:
    path = results.trial_dir(tmp_path, "t0")
    results.write_config(path, {"method": "joint", "seed": 0, "epochs": 5}, "t0", "exp")
    assert "No trial has finished yet." in leaderboard_markdown(tmp_path)
    with pytest.raises(ConfigError, match="no trial .* has finished yet"):
        write_report(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out" / "report.html").exists()


@pytest.mark.parametrize("layout", ["missing", "empty", "train_run"])
def test_not_a_results_folder_is_one_line(tmp_path: Path, layout: str, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "x"
    if layout != "missing":
        folder.mkdir()
    if layout == "train_run":
        (folder / "metrics.jsonl").write_text("{}\n")
    assert main(["report", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("mmbal report: error: EXPERIMENT_DIR:") and str(folder) in err
    assert ("single `mmbal train` run" in err) == (layout == "train_run")


def test_bad_select_metric(sweep: Path) -> None:
    with pytest.raises(ConfigError, match="never test"):
        leaderboard_markdown(sweep, "test/acc")
    with pytest.raises(ConfigError, match=r"'val/nope' is not a number in .*available: val/acc"):
        leaderboard_markdown(sweep, "val/nope")


def test_cli_writes_every_file(sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["report", str(sweep), "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# Leaderboard: tiny")
    names = sorted(p.relative_to(tmp_path / "o").as_posix() for p in (tmp_path / "o").rglob("*") if p.is_file())
    assert names == ["configs.csv", "configs.md", "leaderboard.csv", "leaderboard.md", "leaderboard.tex",
                     "plots/mfeat-imbalance.png", "plots/mfeat-missing.png", "plots/mfeat-val_acc.png",
                     "report.html", "seeds.csv"]  # fmt: skip
