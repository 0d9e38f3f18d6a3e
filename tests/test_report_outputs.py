"""Report outputs: the plotted series, valid PNG files, the HTML page in headless chromium, the W&B run."""

from __future__ import annotations

import base64
import json
import re
import struct
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from matplotlib.container import BarContainer
from test_report_sweep import make_sweep

from orchestrator.cli import main
from orchestrator.report import write_report
from orchestrator.report.leaderboard import build_leaderboard
from orchestrator.report.plots import board_figures
from orchestrator.report.text import csv_rows

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sweep(tmp_path_factory.mktemp("sweep"))


@pytest.fixture(scope="module")
def report(sweep: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_report(sweep, tmp_path_factory.mktemp("report"))


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (which must come first)."""
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def hand_curve(trial_dirs: list[Path], key: str) -> tuple[list[int], np.ndarray, np.ndarray]:
    rows = [[json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()] for d in trial_dirs]
    vals = np.array([[r[key] for r in rs] for rs in rows])  # seeds x epochs
    return [r["epoch"] for r in rows[0]], vals.mean(0), vals.std(0, ddof=1)


def test_plotted_series_are_the_seed_means_of_the_chosen_configs(sweep: Path) -> None:
    lb = build_leaderboard(sweep)
    (board,) = lb.boards
    figs = board_figures(board)
    assert sorted(figs) == ["mfeat-imbalance", "mfeat-missing", "mfeat-val_acc"]
    axes = figs["mfeat-val_acc"].axes
    assert [a.get_title() for a in axes] == ["fused"] + [
        f"{m} (weak)" if m == board.weak else m for m in ("pix", "fou")
    ]
    # unimodal (pix) has no curve where it has no metric: the fou panel and the imbalance ratio
    for ax, want in zip(axes, (["joint", "unimodal"], ["joint", "unimodal"], ["joint"]), strict=True):
        assert sorted(line.get_label() for line in ax.get_lines()) == want
    joint = next(e for e in board.entries if e.method == "joint")
    epochs, mean, std = hand_curve([t.path for t in joint.trials], "val/acc/pix")
    line = next(li for li in axes[1].get_lines() if li.get_label() == "joint")
    assert list(line.get_xdata()) == epochs == [1, 2, 3]
    np.testing.assert_allclose(line.get_ydata(), 100 * mean)
    # joint's ±1 std band is the filled area in joint's colour
    (band,) = [c for c in axes[1].collections if np.allclose(c.get_facecolor()[0][:3], to_rgb(line.get_color()))]
    band = band.get_paths()[0].vertices[:, 1]
    np.testing.assert_allclose([band.min(), band.max()], [100 * (mean - std).min(), 100 * (mean + std).max()])
    imb = figs["mfeat-imbalance"].axes[0]
    assert [li.get_label() for li in imb.get_lines()] == ["joint", "_balanced"]
    _, ratio, _ = hand_curve([t.path for t in joint.trials], "val/imbalance/score_ratio")
    np.testing.assert_allclose(imb.get_lines()[0].get_ydata(), ratio)
    bars = figs["mfeat-missing"].axes[0]
    containers = [c for c in bars.containers if isinstance(c, BarContainer)]
    assert [c.get_label() for c in containers] == ["joint", "unimodal"]
    assert [t.get_text() for t in bars.get_xticklabels()] == ["all", "only pix", "only fou"]
    want = [
        100 * np.mean([t.summary[k] for t in joint.trials])
        for k in ("test/acc", "test/missing/pix/acc", "test/missing/fou/acc")
    ]
    np.testing.assert_allclose([p.get_height() for p in containers[0]], want)


def test_png_files_are_valid(report: dict[str, Path]) -> None:
    plots = {k: p for k, p in report.items() if k.startswith("plot/")}
    assert len(plots) == 3
    for p in plots.values():
        w, h = png_size(p.read_bytes())
        assert w > 300 and h > 300


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is absent (Debian: apt-get install chromium)")
def test_html_page_shows_the_table_in_headless_chromium(sweep: Path, report: dict[str, Path], tmp_path: Path) -> None:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", report["html"].resolve().as_uri()]  # fmt: skip
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
    table = re.search(r'<table id="leaderboard-mfeat">.*?</table>', dom, re.S)
    assert table, dom[:500]
    header, rows = csv_rows(build_leaderboard(sweep))
    cells = re.findall(r"<td[^>]*>(.*?)</td>", table.group(0))
    joint = dict(zip(header, next(r for r in rows if r[1] == "joint"), strict=True))
    methods = {c.split(" ")[0] for c in cells}  # a method cell may carry the failed-seed flag: "joint ⚠"
    assert "joint" in methods and "unimodal" in methods
    assert f"{100 * joint['test/acc/mean']:.1f} ± {100 * joint['test/acc/std']:.1f}" in cells
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([^"]+)"', dom)
    assert [a for a, _ in images] == ["mfeat-val_acc", "mfeat-imbalance", "mfeat-missing"]
    assert all(base64.b64decode(b)[:8] == PNG_SIGNATURE for _, b in images)


def read_wandb_records(path: Path) -> list:
    """Records of a ``.wandb`` file: a 7-byte header, then LevelDB-style log records in 32 KiB blocks."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, buf, out = path.read_bytes(), 7, b"", []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        buf, pos = buf + data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # FULL or LAST fragment
            rec = pb.Record()
            rec.ParseFromString(buf)
            out.append(rec)
            buf = b""
        elif kind == 0:
            break
    return out


def wait_for_exit_record(path: Path, timeout_s: float = 30.0) -> list:
    """The records once the run's ``exit`` record is on disk.

    ``run.finish()`` can return before wandb-core has flushed the file (seen with wandb 0.31 on a
    second run in one process), so the reader polls for the record that closes a run.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            recs = read_wandb_records(path)
        except Exception:  # a record caught half-written: read again
            recs = []
        if any(r.WhichOneof("record_type") == "exit" for r in recs) or time.monotonic() > deadline:
            return recs
        time.sleep(0.2)


@pytest.fixture
def wandb_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var, sub in (
        ("WANDB_DIR", "wb"),
        ("WANDB_CACHE_DIR", "cache"),
        ("WANDB_CONFIG_DIR", "cfg"),
        ("WANDB_DATA_DIR", "data"),
    ):
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    return tmp_path / "wb"


def test_wandb_summary_run_offline(sweep: Path, wandb_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["report", str(sweep), "--out", str(tmp_path / "rep"), "--wandb", "--wandb-project", "mmbal-test"]
    assert main(argv) == 0
    found = re.search(r"W&B summary run in group 'tiny': (\S+) \(upload with `wandb sync", capsys.readouterr().out)
    assert found, "the CLI names the offline run folder"
    folder = Path(found.group(1))
    assert folder.name.startswith("offline-run-") and folder.parent.parent == sweep  # W&B writes beside the trial runs
    recs = wait_for_exit_record(next(folder.glob("run-*.wandb")))
    run = next(r.run for r in recs if r.WhichOneof("record_type") == "run")
    assert (run.run_group, run.job_type, run.display_name, run.project) == (
        "tiny",
        "summary",
        "tiny-summary",
        "mmbal-test",
    )
    # stable within this results folder (a later report resumes it), unique to this sweep instance
    assert run.run_id == f"tiny-{(sweep / 'instance_id').read_text().strip()}-summary"
    logged = {
        tuple(i.nested_key): json.loads(i.value_json) for r in recs if r.HasField("history") for i in r.history.item
    }
    assert logged[("leaderboard", "_type")] == "table-file"
    table = json.loads((folder / "files" / logged[("leaderboard", "path")]).read_text())
    header, rows = csv_rows(build_leaderboard(sweep))
    assert table["columns"] == header and len(table["data"]) == 2
    got = dict(zip(header, next(r for r in table["data"] if r[1] == "joint"), strict=True))
    want = dict(zip(header, next(r for r in rows if r[1] == "joint"), strict=True))
    assert got["test/acc/mean"] == pytest.approx(want["test/acc/mean"]) and got["config"] == want["config"]
    for stem in ("mfeat-val_acc", "mfeat-imbalance", "mfeat-missing"):
        assert logged[(f"plots/{stem}", "_type")] == "image-file"
        assert (folder / "files" / logged[(f"plots/{stem}", "path")]).read_bytes()[:8] == PNG_SIGNATURE


def test_wandb_disabled_makes_no_run(
    sweep: Path, report: dict[str, Path], wandb_env: Path, monkeypatch, capsys
) -> None:
    from orchestrator.report.summary_run import log_summary_run

    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert log_summary_run(sweep, "p", "g", files=report) is None
    assert "W&B is disabled" in capsys.readouterr().err


def test_wandb_failure_is_a_warning(sweep: Path, report: dict[str, Path], wandb_env: Path, monkeypatch, capsys) -> None:
    import wandb

    from orchestrator.report.summary_run import log_summary_run

    def broken(*args, **kwargs):
        raise RuntimeError("no wandb today")

    monkeypatch.setattr(wandb, "init", broken)
    assert log_summary_run(sweep, "p", "g", files=report) is None
    assert "W&B summary run not written (RuntimeError: no wandb today)" in capsys.readouterr().err
