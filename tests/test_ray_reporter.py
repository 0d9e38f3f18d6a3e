"""The Ray reporter without Ray: what it sends per epoch, where the summary rides, how PBT states are retargeted."""

from __future__ import annotations

import json
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from orchestrator.results import SUMMARY_KEY
from orchestrator.run.reporter import STATE_FILE, RayReporter, retarget_optim


class FakeCheckpoint:
    """Ray's Checkpoint as the reporter uses it: from_directory (copied, as Ray uploads it) and as_directory."""

    def __init__(self, path: str) -> None:
        self.path = path

    @classmethod
    def from_directory(cls, d: str) -> FakeCheckpoint:
        kept = tempfile.mkdtemp()
        shutil.copytree(d, kept, dirs_exist_ok=True)
        return cls(kept)

    @contextmanager
    def as_directory(self):
        yield self.path


def make(epochs=3, attach=True, optim=None, restore_from=None):
    sent = []
    rep = RayReporter(
        lambda m, checkpoint=None: sent.append((m, checkpoint)),
        lambda: restore_from,
        FakeCheckpoint,
        epochs=epochs,
        attach_checkpoint=attach,
        optim=optim,
    )
    return rep, sent


def test_last_row_waits_for_the_summary_and_checkpoints_go_where_asked():
    rep, sent = make()
    rep.report({"epoch": 1, "val/acc": 0.1}, {"epoch": 1, "w": 1})
    rep.report({"epoch": 2, "val/acc": 0.2}, None)
    rep.report({"epoch": 3, "val/acc": 0.3, "test/acc": 0.25}, {"epoch": 3, "w": 3})
    assert [m["epoch"] for m, _ in sent] == [1, 2]  # epoch 3 is held
    rep.finish({"status": "completed", "test/acc": 0.25})
    assert [m["epoch"] for m, _ in sent] == [1, 2, 3]
    assert json.loads(sent[2][0][SUMMARY_KEY])["test/acc"] == 0.25
    assert sent[1][1] is None
    state = torch.load(Path(sent[2][1].path) / STATE_FILE, weights_only=True)
    assert state == {"epoch": 3, "w": 3}
    other, sent_other = make(attach=False)  # a DDP rank other than 0: same rows, no checkpoints
    other.report({"epoch": 1}, {"epoch": 1})
    assert sent_other == [({"epoch": 1}, None)]
    with pytest.raises(RuntimeError, match="without reporting its last epoch"):
        make()[0].finish({})


def sgd_state(lr: float, momentum: float = 0.9):
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([{"params": [a]}, {"params": [b], "lr": lr / 10}], lr=lr, momentum=momentum)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    a.grad, b.grad = torch.ones(2), torch.ones(2)
    opt.step()
    sched.step()  # one decay: group lrs are lr/2 and lr/20
    return {
        "optimizers": {"main": opt.state_dict()},
        "schedulers": {"main": sched.state_dict()},
        "config": {"optim": {"lr": lr, "momentum": momentum, "weight_decay": 0.0}},
    }, (a, b)


def test_pbt_retarget_scales_every_group_and_keeps_the_schedule():
    state, _ = sgd_state(0.1)
    retarget_optim(state, {"lr": 0.3, "momentum": 0.5, "weight_decay": 0.0})
    groups = state["optimizers"]["main"]["param_groups"]
    assert [g["lr"] for g in groups] == pytest.approx([0.15, 0.015])  # 0.3 after one halving; group ratio kept
    assert [g["initial_lr"] for g in groups] == pytest.approx([0.3, 0.03])
    assert [g["momentum"] for g in groups] == [0.5, 0.5]
    assert state["schedulers"]["main"]["base_lrs"] == pytest.approx([0.3, 0.03])
    # loading it gives an optimizer that steps with the new rate
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([{"params": [a]}, {"params": [b], "lr": 1.0}], lr=1.0)
    opt.load_state_dict(state["optimizers"]["main"])
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.15, 0.015])
    same, _ = sgd_state(0.1)
    before = json.dumps(same["optimizers"]["main"]["param_groups"])
    retarget_optim(same, {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.0})  # a retry: nothing changes
    assert json.dumps(same["optimizers"]["main"]["param_groups"]) == before


def test_restoring_a_finished_state_resends_its_last_row(tmp_path):
    torch.save(
        {
            "epoch": 3,
            "model": {},
            "history": [{"epoch": 1}, {"epoch": 2}, {"epoch": 3, "test/acc": 0.5}],
            "config": {"optim": {"lr": 0.1}},
            "optimizers": {},
            "schedulers": {},
        },
        tmp_path / STATE_FILE,
    )
    rep, sent = make(restore_from=FakeCheckpoint(str(tmp_path)), optim={"lr": 0.1})
    assert rep.restore()["epoch"] == 3
    rep.finish({"status": "completed"})
    assert sent[0][0]["epoch"] == 3 and sent[0][0]["test/acc"] == 0.5 and SUMMARY_KEY in sent[0][0]


def test_a_diverged_trial_sends_its_last_row_with_the_summary():
    rep, sent = make(epochs=5)
    rep.report({"epoch": 1, "train/loss": 1.0}, None)
    rep.report({"epoch": 2, "train/loss": float("nan")}, None)
    rep.finish({"status": "diverged", "diverged": {"epoch": 2}})
    assert len(sent) == 3 and sent[-1][0]["epoch"] == 2
    assert json.loads(sent[-1][0][SUMMARY_KEY])["status"] == "diverged"


def test_a_pickle_in_ray_storage_is_refused_without_running(tmp_path):
    import os

    from trainables.errors import DataError

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'PWNED'}",))

    torch.save({"epoch": 1, "config": {}, "model": {}, "history": [], "x": Payload()}, tmp_path / STATE_FILE)
    rep, _ = make(restore_from=FakeCheckpoint(str(tmp_path)))
    with pytest.raises(DataError, match="state.pt: not a valid mmbal checkpoint"):
        rep.restore()
    assert not (tmp_path / "PWNED").exists()
