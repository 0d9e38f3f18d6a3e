"""The two-rank helper accepts gloo's teardown abort only after every rank wrote its output."""

import os

import pytest
import torch.multiprocessing as mp
from gloo_pair import two_gloo_ranks


def _abort_after_writing(rank: int, init: str, out: str) -> None:
    with open(f"{out}.{rank}", "w") as fh:
        fh.write("done")
    if rank == 0:
        os.abort()


def _abort_before_writing(rank: int, init: str, out: str) -> None:
    if rank == 0:
        os.abort()
    with open(f"{out}.{rank}", "w") as fh:
        fh.write("done")


def _raise(rank: int, init: str, out: str) -> None:
    with open(f"{out}.{rank}", "w") as fh:
        fh.write("done")
    raise ValueError("a rank failed")


def test_an_abort_after_both_outputs_is_teardown_noise(tmp_path):
    assert [p.read_text() for p in two_gloo_ranks(_abort_after_writing, tmp_path)] == ["done", "done"]


def test_an_abort_before_the_outputs_or_an_error_fails(tmp_path):
    with pytest.raises(mp.ProcessExitedException, match="SIGABRT"):
        two_gloo_ranks(_abort_before_writing, tmp_path)
    with pytest.raises(mp.ProcessRaisedException, match="a rank failed"):
        two_gloo_ranks(_raise, tmp_path)
