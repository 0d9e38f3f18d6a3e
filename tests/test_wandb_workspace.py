"""The saved W&B workspace view of a sweep (optional extra ``wandb-workspaces``): built offline and checked;
saving needs a W&B server, so here it is only shown to fail softly."""

from __future__ import annotations

import sys

import pytest

from orchestrator.report.workspace import build_workspace, save_workspace


def test_view_groups_the_sweeps_runs_by_method_with_per_modality_panels():
    pytest.importorskip("wandb_workspaces")
    view = build_workspace("quick", "proj", "team", ["pix", "fou"], ["test/missing/pix/acc", "test/missing/fou/acc"])
    assert (view.entity, view.project, view.name) == ("team", "proj", "mmbal quick")
    assert view.runset_settings.filters == "Metric(\"Group\") == 'quick'"  # the sweep's W&B group
    assert [g.name for g in view.runset_settings.groupby] == ["method"]
    names = [s.name.split(" (")[0] for s in view.sections]
    assert names == ["Validation accuracy per modality", "Imbalance", "Missing modalities", "Leaderboard"]
    lines = view.sections[0].panels
    assert [p.y for p in lines] == [["val/acc"], ["val/acc/pix"], ["val/acc/fou"]] and lines[0].x == "epoch"
    assert view.sections[2].panels[0].metrics == ["test/missing/pix/acc", "test/missing/fou/acc"]
    assert view.sections[3].panels[0].table_name == "leaderboard"  # the summary run's table


def test_without_the_extra_one_line_says_how_to_get_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb_workspaces", None)  # import fails as if not installed
    assert save_workspace(tmp_path, "p", "e", "team") is None
    assert "pip install 'mmbal[workspace]'" in capsys.readouterr().err


def test_a_failed_save_is_a_warning(tmp_path, monkeypatch, capsys):
    pytest.importorskip("wandb_workspaces")
    # no results folder here: building the view fails, as a refused save would; the caller goes on
    assert save_workspace(tmp_path / "nothing", "p", "e", "team") is None
    assert "W&B workspace view not saved" in capsys.readouterr().err
