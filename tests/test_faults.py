"""Fault and bad-input cases of a new user, as one table (issue 11).

Each case is data: the ``mmbal`` command line, what to prepare first, and what must come back: the
exit code (2 user mistake, 1 bad data, 130 interrupt, 0 when mmbal copes), one line on stderr that
holds ``needle``, no traceback, and (``check``) nothing half-written or executed. One assertion
pattern runs them all; commands run in this process except the ones that need a signal.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TINY_ARGS
from fixtures_data import build_cremad_ogm

from orchestrator.cli import main
from orchestrator.report.leaderboard import build_leaderboard
from orchestrator.report.text import markdown

SMALL = [*TINY_ARGS, "--set", "model.feature_dim=16", "--set", "loader.batch_size=16"]
TRAIN = ["train", "--epochs", "2", *SMALL, "--out", "{out}"]
LONG = ["train", *SMALL, "--set", "eval.missing=false", "--out", "{out}"]


class Payload:
    """A pickle that runs code when it is unpickled with ``weights_only=False``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_payload(path: Path, tmp: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 1, "config": {}, "model": {}, "history": [], "x": Payload(tmp / "PWNED")}, path)


def no_payload_ran(tmp: Path, out: Path) -> None:
    assert not (tmp / "PWNED").exists(), "code from a checkpoint ran"


@dataclass(frozen=True)
class Case:
    name: str
    argv: list[str]  # after ``mmbal``; ``{out}`` and ``{tmp}`` are filled in
    code: int
    needle: str  # must be in the one stderr line ("" = stderr stays empty)
    setup: Callable[[Path, Path, Path], Callable | None] | None = None  # (tmp, out, finished run) -> cleanup
    check: Callable[[Path, Path], None] | None = None  # (tmp, out)
    signal_after: tuple[str, int] | None = None  # (file glob under out that must appear, signal)
    limit_s: int = 0  # in-process cases: fail (SIGALRM) when the command runs longer
    ray: bool = False  # a Ray sweep: runs as a subprocess; Ray's own log lines may precede the needle


def copy_finished(tmp: Path, out: Path, done: Path) -> None:
    shutil.copytree(done, out)


def corrupt_latest(tmp: Path, out: Path, done: Path) -> None:
    copy_finished(tmp, out, done)
    (out / "summary.json").unlink()
    (out / "checkpoints" / "epoch_0002.pt").write_bytes(b"\x00garbage")


def payload_latest(tmp: Path, out: Path, done: Path) -> None:
    copy_finished(tmp, out, done)
    (out / "summary.json").unlink()
    write_payload(out / "checkpoints" / "epoch_0002.pt", tmp)


def payload_only(tmp: Path, out: Path, done: Path) -> None:
    write_payload(out / "checkpoints" / "epoch_0001.pt", tmp)


def junk_only(tmp: Path, out: Path, done: Path) -> None:
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "epoch_0001.pt").write_text("junk")


def summary_written(tmp: Path, out: Path) -> None:
    assert (out / "summary.json").exists()


def cli(argv: list[str], cwd: Path, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "TQDM_DISABLE": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    env["PYTHONWARNINGS"] = "ignore::RuntimeWarning"  # tiny runs may trip the stuck-modality warning; not a fault
    return subprocess.Popen([sys.executable, "-m", "orchestrator.cli", *argv], cwd=cwd, env=env, text=True, **kw)


def wait_for(proc: subprocess.Popen, ready: Callable[[], bool], what: str, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and not ready() and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None and ready(), f"{what} did not happen"


def holding(argv: list[str], folder: Callable[[Path, Path], Path]):
    """Setup: a real mmbal run that holds ``folder`` (its lock file names it) while the case runs."""

    def setup(tmp: Path, out: Path, done: Path):
        lock = folder(tmp, out) / ".mmbal.lock"
        quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        proc = cli([a.format(out=out, tmp=tmp) for a in argv], tmp, **quiet)
        wait_for(proc, lambda: lock.exists() and lock.read_text().startswith("pid"), "lock")
        return lambda: (proc.kill(), proc.wait())

    return setup


def local_sweep(tmp: Path, epochs: int = 2, **extra) -> Path:
    raw = {
        "experiment": "faults",
        "results": str(tmp / "results"),
        "dataset": "mfeat",
        "epochs": epochs,
        "seeds": [0],
        "data": {"train_per_class": 5, "val_per_class": 4, "test_per_class": 4},
        "model": {"feature_dim": 16},
        "loader": {"batch_size": 16},
        "tracking": "none",
        "execution": {"mode": "local", "max_failures": 0},
        "methods": {"joint": {}},
        **extra,
    }
    (tmp / "sweep.yaml").write_text(yaml.safe_dump(raw))
    return tmp / "sweep.yaml"


def sweep_running(tmp: Path, out: Path, done: Path):
    local_sweep(tmp, epochs=100000)
    return holding(["sweep", "{tmp}/sweep.yaml"], lambda tmp, out: tmp / "results" / "faults")(tmp, out, done)


def foreign_config(tmp: Path, out: Path, done: Path) -> None:
    out.mkdir()
    (out / "config.json").write_text('{"learning_rate": 3}')


def foreign_file(tmp: Path, out: Path, done: Path) -> None:
    out.mkdir()
    (out / "notes.txt").write_text("mine")


def diverged_summary(tmp: Path, out: Path) -> None:
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["diverged"]["metric"] == "train/loss"
    assert summary["diverged"]["epoch"] >= 1 and "test/acc" not in summary


def lr_sweep(tmp: Path, out: Path, done: Path) -> None:
    local_sweep(tmp, methods={"joint": {"optim": {"lr": {"grid": [0.05, 1.0e6]}}}})


def diverged_apart(tmp: Path, out: Path) -> None:
    lb = build_leaderboard(tmp / "results" / "faults")
    assert len(lb.completed) == 1 and len(lb.diverged) == 1 and not lb.missing
    assert lb.completed[0].config["optim"]["lr"] == 0.05  # the diverged one is not averaged in
    assert "## Diverged (1 trials, not in the averages)" in markdown(lb)


def empty_train_csv(tmp: Path, out: Path, done: Path) -> None:
    build_cremad_ogm(tmp / "cremad")
    (tmp / "cremad" / "train.csv").write_text("\n")


def grid_of(n: int) -> dict:
    return {"grid": [i / n for i in range(n)]}


def ray_sweep(tmp: Path, out: Path, done: Path) -> None:
    local_sweep(tmp, seeds=[0, 1, 2, 3], execution={"mode": "packed", "max_concurrent": 1, "max_failures": 0})


RAY_DONE = "results/faults/trials/*/summary.json"


def all_four_done(tmp: Path, out: Path) -> None:
    assert len(list(tmp.glob(RAY_DONE))) == 4 and len(list(tmp.glob("results/faults/trials/*"))) == 4


def cut_state(tmp: Path) -> None:
    """What a kill during Tune's (non-atomic) copy of its searcher state leaves: an empty file."""
    newest = max((tmp / "results/faults/_ray/faults").glob("basic-variant-state-*.json"))
    newest.write_bytes(b"")


def nothing_written(tmp: Path, out: Path) -> None:
    assert not out.exists(), "a rejected config left a folder behind"


def config_kept(tmp: Path, out: Path) -> None:
    assert (out / "config.json").read_text() == '{"learning_rate": 3}'


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Ray's GCS, raylet and workers under a sweep driver this test started)."""
    ps = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
    rows = [r.split() for r in ps.splitlines()]
    children: dict[int, list[int]] = {}
    for p, pp in rows:
        children.setdefault(int(pp), []).append(int(p))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def end_all(pids: list[int]) -> None:
    """Kill what this test's driver started and left behind (each by its pid)."""
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def killed(argv: list[str], pattern: str):
    """Setup: run ``argv`` until ``pattern`` appears under tmp, then kill -9 it (and, for a sweep, Ray)."""

    def setup(tmp: Path, out: Path, done: Path) -> None:
        quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        proc = cli([a.format(out=out, tmp=tmp) for a in argv], tmp, **quiet)
        wait_for(proc, lambda: bool(list(tmp.glob(pattern))), pattern)
        tree = descendants(proc.pid)
        proc.kill()
        proc.wait()
        end_all(tree)

    return setup


CASES = [
    Case(
        "checkpoint pickle runs code (only checkpoint)",
        TRAIN,
        1,
        "epoch_0001.pt: not a valid mmbal checkpoint (it names GLOBAL posix.system",
        payload_only,
        no_payload_ran,
    ),
    Case(
        "checkpoint pickle runs code (latest, an intact older one)",
        TRAIN,
        0,
        "skipped a checkpoint: ",
        payload_latest,
        lambda tmp, out: (no_payload_ran(tmp, out), summary_written(tmp, out)),
    ),
    Case(
        "corrupt latest checkpoint falls back to the older one",
        TRAIN,
        0,
        "epoch_0002.pt: not a valid mmbal checkpoint (unreadable: ",
        corrupt_latest,
        summary_written,
    ),
    Case("junk epoch_0001.pt", TRAIN, 1, "epoch_0001.pt: not a valid mmbal checkpoint (unreadable", junk_only),
    Case(
        "second mmbal train on a busy --out",
        TRAIN,
        2,
        "--out: {out} is in use by another mmbal run (pid ",
        holding(["train", "--epochs", "100000", *SMALL, "--out", "{out}"], lambda tmp, out: out),
    ),
    Case(
        "second sweep driver on a busy results folder",
        ["sweep", "{tmp}/sweep.yaml", "--resume"],
        2,
        "experiment: {tmp}/results/faults is in use by another mmbal run (pid ",
        sweep_running,
    ),
    Case("--out is a regular file", TRAIN, 2, "--out: {out} is a file, not a folder", lambda t, o, d: o.touch()),
    Case(
        "--out holds a foreign config.json",
        TRAIN,
        2,
        "holds files mmbal did not write (config.json (not an mmbal run config)); choose a new folder, or add --force",
        foreign_config,
        config_kept,
    ),
    Case("--out holds a foreign file", TRAIN, 2, "holds files mmbal did not write (notes.txt)", foreign_file),
    Case(
        "optim.lr=1e6: NaN loss",
        [*TRAIN, "--set", "optim.lr=1e6"],
        1,
        "mmbal train: diverged: train/loss is nan at epoch ",
        check=diverged_summary,
    ),
    Case(
        "a sweep with a diverging config",
        ["sweep", "{tmp}/sweep.yaml"],
        1,
        "diverged: train/loss is nan at epoch ",
        lr_sweep,
        diverged_apart,
    ),
    Case(
        "synthetic data.fast_dim=0",
        [*TRAIN, "--dataset", "synthetic", "--set", "data.fast_dim=0"],
        2,
        "data.fast_dim: got 0; allowed: an integer >= 1",
        check=nothing_written,
    ),
    Case(
        "validate: execution.max_failures=-1",
        ["validate", "{tmp}/sweep.yaml"],
        1,
        "execution.max_failures: got -1; allowed: an integer >= 0",
        lambda t, o, d: local_sweep(t, execution={"mode": "local", "max_failures": -1}),
    ),
    Case(
        "validate: a grid value out of range (mfeat test_per_class 0)",
        ["validate", "{tmp}/sweep.yaml"],
        1,
        "data.test_per_class: got 0; allowed: an integer >= 1",
        lambda t, o, d: local_sweep(t, data={"test_per_class": {"grid": [4, 0]}}),
    ),
    Case(
        "empty train.csv (CREMA-D)",
        ["train", "--dataset", "cremad", "--data-root", "{tmp}/cremad", "--epochs", "1", "--out", "{out}"],
        1,
        "data error: {tmp}/cremad/train.csv: list file is empty",
        empty_train_csv,
        nothing_written,
    ),
    Case(
        "validate a 10^6-point grid",
        ["validate", "{tmp}/sweep.yaml"],
        1,
        "search.max_trials: the sweep expands to 1000000 trials (joint 1000000), more than search.max_trials = 10000",
        lambda t, o, d: local_sweep(t, optim={"lr": {"grid": list(range(1, 1001))}, "momentum": grid_of(1000)}),
        limit_s=30,
    ),
    Case(
        "SIGINT of mmbal train",
        [*LONG, "--epochs", "100000"],
        130,
        "mmbal train: interrupted; rerun the same command to resume",
        signal_after=("out/checkpoints/epoch_*.pt", signal.SIGINT),
        check=lambda t, o: not (o / "summary.json").exists() or pytest.fail("summary of an interrupted run"),
    ),
    Case(
        "kill -9 of mmbal train, then the same command",
        [*LONG, "--epochs", "60"],
        0,
        "",
        killed([*LONG, "--epochs", "60"], "out/checkpoints/epoch_*.pt"),
        summary_written,
    ),
    Case(
        "SIGINT of a Ray sweep",
        ["sweep", "{tmp}/sweep.yaml"],
        130,
        "of 4 trials finished; resume with: mmbal sweep {tmp}/sweep.yaml --resume",
        ray_sweep,
        signal_after=("results/faults/trials/*/summary.json", signal.SIGINT),
        ray=True,
    ),
    Case(
        "kill -9 of a Ray sweep driver, then --resume",
        ["sweep", "{tmp}/sweep.yaml", "--resume"],
        0,
        "",
        lambda t, o, d: (ray_sweep(t, o, d), killed(["sweep", "{tmp}/sweep.yaml"], RAY_DONE)(t, o, d)),
        all_four_done,
        ray=True,
    ),
    Case(
        "kill -9 of a sweep driver cut Tune's state file, then --resume",
        ["sweep", "{tmp}/sweep.yaml", "--resume"],
        0,
        "mmbal sweep: Ray Tune's state was cut by a kill (basic-variant-state-",
        lambda t, o, d: (ray_sweep(t, o, d), killed(["sweep", "{tmp}/sweep.yaml"], RAY_DONE)(t, o, d), cut_state(t)),
        all_four_done,
        ray=True,
    ),
    Case("--force writes beside a foreign file", [*TRAIN, "--force"], 0, "", foreign_file, summary_written),
]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished 2-epoch tiny run (checkpoints of epochs 1 and 2 kept)."""
    out = tmp_path_factory.mktemp("done") / "run"
    assert main([a.format(out=out) for a in TRAIN]) == 0
    return out


def _too_slow(*_):
    raise TimeoutError("the command ran past the case's limit_s")


def run_case(case: Case, tmp: Path, out: Path, capsys) -> tuple[int, str]:
    argv = [a.format(out=out, tmp=tmp) for a in case.argv]
    if case.signal_after is None and not case.ray:
        capsys.readouterr()
        signal.signal(signal.SIGALRM, _too_slow)
        signal.alarm(case.limit_s)
        try:
            code = main(argv)
        finally:
            signal.alarm(0)
        return code, capsys.readouterr().err
    proc = cli(argv, tmp, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    tree: list[int] = []
    if case.signal_after is not None:
        pattern, sig = case.signal_after
        wait_for(proc, lambda: bool(list(tmp.glob(pattern))), pattern)
        tree = descendants(proc.pid)
        proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=400)
    finally:
        end_all(tree)
    return proc.returncode, err


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_fault_case(case: Case, tmp_path, finished, capsys):
    out = tmp_path / "out"
    cleanup = case.setup(tmp_path, out, finished) if case.setup else None
    try:
        code, err = run_case(case, tmp_path, out, capsys)
    finally:
        if callable(cleanup):
            cleanup()
    lines = err.strip().splitlines()
    assert "Traceback" not in err, err[-3000:]
    assert code == case.code, err[-3000:]
    needle = case.needle.format(out=out, tmp=tmp_path)
    assert "ERROR" not in err, err[-3000:]
    if case.ray:  # Ray logs on stderr too (its workers' lines may come last); mmbal's own line is one
        ours = [line for line in lines if line.startswith("mmbal ")]
        assert "Tuner.restore" not in err, "Ray's resume hint instead of mmbal's"
        assert not needle or (len(ours) == 1 and needle in ours[0]), (ours, lines[-5:])
    else:
        assert lines == [] if not needle else len(lines) == 1 and needle in lines[0], lines
    if case.check:
        case.check(tmp_path, out)


def test_nonfinite_parameters_stop_a_trial_even_with_a_finite_loss():
    from trainables.divergence import first_nonfinite

    model = torch.nn.Linear(2, 2)
    assert first_nonfinite({"train/loss": 0.5}, model) is None
    with torch.no_grad():
        model.weight[0, 0] = float("inf")
    metric, value = first_nonfinite({"train/loss": 0.5, "val/acc": float("nan")}, model)
    assert metric == "parameters" and value != value
    assert first_nonfinite({"train/loss": float("inf")}, model) == ("train/loss", float("inf"))


def _numeric_knobs_without_range(cls: type, prefix: str) -> list[str]:
    import dataclasses

    from trainables.params import _hints

    out = []
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out += _numeric_knobs_without_range(tp, f"{prefix}{f.name}.")
        elif tp in (int, float, int | None, float | None) and not f.metadata.get("bounds"):
            out.append(prefix + f.name)
    return out


def test_every_numeric_knob_declares_its_range():
    from orchestrator.sweep.spec import SweepKeys
    from orchestrator.tracking import TrackingSpec
    from trainables.config import TrainConfig
    from trainables.data import DATASETS
    from trainables.methods import METHODS

    classes = {"": TrainConfig, "sweep.": SweepKeys, "tracking.": TrackingSpec}
    classes.update({f"params[{n}].": METHODS.get(n).Params for n in METHODS.names()})
    classes.update({f"data[{n}].": DATASETS.get(n).Params for n in DATASETS.names()})
    bare = [k for prefix, cls in classes.items() for k in _numeric_knobs_without_range(cls, prefix)]
    assert not bare, f"numeric knobs without ge/gt/le/lt: {bare}"
