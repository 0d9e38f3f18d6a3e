"""The loop: determinism, exact resume, model selection on validation, no false summaries."""

import json

import pytest
import torch
from conftest import TINY_ARGS, interrupted_then_resumed, tiny_config

from orchestrator.cli import main
from orchestrator.results import read_jsonl
from trainables.loop import run_trial
from trainables.reporting import JsonlReporter, MemoryReporter


def _rows(path):
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in read_jsonl(path / "metrics.jsonl")]


def test_cli_train_twice_gives_identical_summary(tmp_path, capsys):
    args = [
        "train",
        "--method",
        "joint",
        "--dataset",
        "mfeat",
        "--epochs",
        "2",
        "--seed",
        "0",
        *TINY_ARGS,
    ]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    a, b = (tmp_path / "a" / "summary.json").read_text(), (tmp_path / "b" / "summary.json").read_text()
    assert a == b
    s = json.loads(a)
    assert {
        "test/acc",
        "test/acc/pix",
        "test/acc/fou",
        "test/missing/pix/acc",
        "test/missing/fou/acc",
        "val/acc",
    } <= set(s)
    assert len(read_jsonl(tmp_path / "a" / "metrics.jsonl")) == 2


@pytest.mark.parametrize("every,stop", [(1, 2), (2, 3)])
def test_interrupted_run_resumes_to_the_same_result(tmp_path, every, stop):
    # with every=2 and a kill after epoch 3, epoch 3's row exists without a checkpoint: it is redone once
    cfg = tiny_config(epochs=4, checkpoint={"every": every, "keep": 1})
    straight, resumed = interrupted_then_resumed(cfg, tmp_path, stop_after=stop)
    assert resumed == straight
    assert [r["epoch"] for r in _rows(tmp_path / "cut")] == [1, 2, 3, 4]  # every epoch exactly once


def _best_by_rule(rows):
    """Highest val/acc, ties to the lower val/loss, then the earliest epoch."""
    return min(rows, key=lambda r: (-r["val/acc"], r["val/loss"], r["epoch"]))["epoch"]


def test_best_epoch_is_chosen_on_validation_and_test_comes_from_it(tmp_path):
    summary = run_trial(tiny_config(epochs=4), JsonlReporter(tmp_path))
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    val = [r["val/acc"] for r in rows]
    best = _best_by_rule(rows)
    assert summary["best_epoch"] == best == rows[-1]["best/epoch"]
    assert summary["val/acc"] == max(val)
    assert all(not k.startswith("test/") for r in rows[:-1] for k in r)  # test is looked at once, at the end


def test_selection_ties_go_to_the_lower_val_loss(tmp_path, monkeypatch):
    # a saturated selection metric: every epoch ties on val/acc, so only the tie-break can choose
    from trainables.loop import Trial

    real = Trial.eval_split

    def saturated(self, loader, split, missing=False):
        out = real(self, loader, split, missing)
        return {**out, "val/acc": 1.0} if split == "val" else out

    monkeypatch.setattr(Trial, "eval_split", saturated)
    summary = run_trial(tiny_config(epochs=4, optim={"name": "adam", "lr": 0.003}), JsonlReporter(tmp_path))
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    losses = [r["val/loss"] for r in rows]
    assert losses.index(min(losses)) > 0, "the loss must fall after epoch 1 for the test to mean anything"
    assert summary["best_epoch"] == losses.index(min(losses)) + 1 == rows[-1]["best/epoch"]
    assert summary["val/loss"] == min(losses)
    assert summary["selection"] == {
        "metric": "val/acc",
        "mode": "max",
        "tie_break": "val/loss (min), then the earliest epoch",
    }


def test_best_state_tie_break_unit():
    from trainables.loop import BestState

    best = BestState(epoch=3, score=1.0, metrics={"val/acc": 1.0, "val/loss": 0.5})
    assert best.improved_by(1.0, "max", 0.4)  # same accuracy, lower loss
    assert not best.improved_by(1.0, "max", 0.5)  # a full tie keeps the earlier epoch
    assert not best.improved_by(1.0, "max", 0.6)
    assert not best.improved_by(0.9, "max", 0.1)  # the selection metric comes first
    assert best.improved_by(0.4, "min", 9.0)


def test_min_mode_selection(tmp_path):
    summary = run_trial(
        tiny_config(epochs=3, eval={"select_metric": "val/loss", "select_mode": "min"}), JsonlReporter(tmp_path)
    )
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert summary["val/loss"] == min(r["val/loss"] for r in rows)


def test_a_failed_run_leaves_no_summary(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    args = [
        "train",
        "--epochs",
        "2",
        *TINY_ARGS,
        "--out",
        str(out),
    ]
    assert main(args) == 0 and (out / "summary.json").exists()

    import trainables.loop as loop

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(loop, "_test_of_best", boom)
    args2 = [a if a != "2" else "3" for a in args]  # a longer run in a new folder
    out2 = tmp_path / "run2"
    with pytest.raises(RuntimeError):
        main([*args2[:-1], str(out2)])
    assert not (out2 / "summary.json").exists()


def test_out_dir_with_another_config_is_refused(tmp_path, capsys):
    base = [
        "train",
        "--epochs",
        "1",
        *TINY_ARGS,
        "--out",
        str(tmp_path),
    ]
    assert main(base) == 0
    assert main([*base, "--set", "optim.lr=0.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--out" in err[0] and "optim" in err[0]


def test_restart_from_best_hook_puts_best_weights_back_and_clears_optimizer_state(tmp_path, monkeypatch):
    import copy

    from trainables.methods.joint import Joint

    ends, starts, opt_state = {}, {}, {}
    step = Joint.training_step

    def on_epoch_end(self, model, ctx):
        ends[ctx.epoch] = copy.deepcopy(model.state_dict())
        return {}

    def on_epoch_start(self, model, ctx):
        starts[ctx.epoch] = copy.deepcopy(model.state_dict())
        return {}

    def training_step(self, model, batch, optimizers, state):
        if state.batch_idx == 0:
            opt_state[state.epoch] = len(optimizers["main"].state)
        return step(self, model, batch, optimizers, state)

    monkeypatch.setattr(Joint, "restart_from_best", lambda self, epoch: epoch in (0, 3))
    for name, fn in [
        ("on_epoch_end", on_epoch_end),
        ("on_epoch_start", on_epoch_start),
        ("training_step", training_step),
    ]:
        monkeypatch.setattr(Joint, name, fn)
    # select the epoch of the *highest* val loss, so that the best state is an early one, not the last
    cfg = tiny_config(epochs=4, eval={"select_metric": "val/loss", "select_mode": "max", "missing": False})
    summary = run_trial(cfg, JsonlReporter(tmp_path))
    best = summary["best_epoch"] - 1  # 0-based epoch whose end state is the best
    assert best < 2, "the test needs a best state older than the last epoch before the restart"
    same = lambda a, b: all(torch.equal(a[k], b[k]) for k in a)
    assert same(starts[3], ends[best]) and not same(starts[3], ends[2])  # restarted from the best weights
    assert same(starts[1], ends[0]) and same(starts[2], ends[1])  # other epochs continue as usual
    assert opt_state[3] == 0 and opt_state[2] > 0  # momentum cleared at the restart only


def test_memory_reporter_keeps_every_epoch_and_the_last_checkpoint(tiny):
    rep = MemoryReporter()
    summary = run_trial(tiny("joint", epochs=2, checkpoint={"every": 1, "keep": 1}), rep)
    assert [r["epoch"] for r in rep.rows] == [1, 2]
    assert rep.state is not None and rep.restore() is None
    assert summary["best_epoch"] in (1, 2)
