"""Diagnosing & Re-learning: k-means purity, the official re-init weight, the soft re-init itself, and
a diagnosis that pulls back exactly the encoder that over-fits its training set."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import interrupted_then_resumed, tiny_config
from torch.utils.data import DataLoader, Subset

from trainables.data.io.base import TensorDictDataset
from trainables.loop import run_trial
from trainables.methods.base import EpochContext, MethodContext
from trainables.methods.relearning import (
    Relearning,
    RelearningParams,
    kmeans,
    minmax_scale,
    purity,
    reinit_weight,
    soft_reinit,
)
from trainables.models.classifier import ModelSpec
from trainables.reporting import JsonlReporter


def test_kmeans_finds_separated_clusters_and_purity_counts_majorities() -> None:
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    labels = torch.arange(90) % 3
    x = centres[labels] + 0.1 * torch.randn(90, 2, generator=g)
    assert purity(labels, kmeans(x, 3, g)) == 1.0
    assert purity(torch.tensor([0, 0, 1, 1, 2, 2]), torch.tensor([0, 0, 0, 1, 1, 1])) == pytest.approx(4 / 6)
    scaled = minmax_scale(torch.tensor([[1.0, 5.0], [3.0, 5.0], [2.0, 5.0]]))
    assert scaled.tolist() == [[-1.0, -1.0], [1.0, -1.0], [0.0, -1.0]]


def test_reinit_weight_and_soft_reinit_follow_the_official_formula() -> None:
    assert reinit_weight(0.9, 0.5, 3.0) == pytest.approx(math.tanh(1.2))
    assert reinit_weight(0.5, 0.5, 3.0) == 0.0
    p = torch.nn.Parameter(torch.tensor([4.0, -2.0]))
    soft_reinit([p], [torch.tensor([0.0, 2.0])], 0.25)
    assert p.tolist() == pytest.approx([3.0, -1.0])


def _context(method: Relearning, dataset: TensorDictDataset, epoch: int) -> EpochContext:
    def subset(indices):
        return DataLoader(Subset(dataset, list(indices)), batch_size=32)

    loader = DataLoader(dataset, batch_size=32)
    return EpochContext(epoch, loader, torch.device("cpu"), lambda b: b, lambda t: t, subset)


def test_the_encoder_that_memorised_train_is_pulled_back_the_other_is_not() -> None:
    """Modality a: its training samples are separable by label, its held-out ones are noise (a
    memorised training set); modality b: label-free noise everywhere. Only a gets a large weight,
    and its parameters become exactly ``w theta0 + (1 - w) theta``."""
    torch.manual_seed(0)
    n, classes = 200, 4
    method = Relearning(
        RelearningParams(reinit_every=1, reinit_times=1, holdout_fraction=0.3),
        MethodContext(["a", "b"], classes, 4, torch.device("cpu")),
    )
    train, held = method.split(n)
    labels = torch.arange(n) % classes
    a = torch.randn(n, 4)
    a[train] = 8 * torch.nn.functional.one_hot(labels[train], 4).float() + 0.1 * torch.randn(len(train), 4)
    dataset = TensorDictDataset({"a": a, "b": torch.randn(n, 4)}, labels)
    model = method.build_model(ModelSpec({"a": (4,), "b": (4,)}, {"a": "mlp", "b": "mlp"}, 8, "concat", 4))
    method.on_epoch_start(model, _context(method, dataset, 0))
    for enc in model.encoders.values():  # "training" moved the encoders away from their init
        for q in enc.parameters():
            q.data.add_(0.05 * torch.randn_like(q))
    before = {m: [q.clone() for q in model.encoders[m].parameters()] for m in ("a", "b")}
    out = method.on_epoch_end(model, _context(method, dataset, 1))
    assert out["relearning/purity_train/a"] == 1.0 and out["relearning/purity_held/a"] < 0.6
    assert out["relearning/weight/a"] > 0.8 > 0.3 > out["relearning/weight/b"]
    for m in ("a", "b"):
        w = out[f"relearning/weight/{m}"]
        for q, q_before, q0 in zip(model.encoders[m].parameters(), before[m], method.initial[m], strict=True):
            torch.testing.assert_close(q, w * q0 + (1 - w) * q_before)
    assert method.on_epoch_end(model, _context(method, dataset, 2)) == {}  # reinit_times=1: done
    assert method.reinits == 1


def test_a_trial_holds_out_part_of_train_and_resumes_exactly(tmp_path, monkeypatch) -> None:
    cfg = tiny_config("relearning", epochs=3, params={"reinit_every": 1, "reinit_times": 1})
    straight, resumed = interrupted_then_resumed(cfg, tmp_path, stop_after=1)
    assert resumed == straight
    rows = [json.loads(r) for r in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert "train/relearning/weight/pix" in rows[1] and "train/relearning/weight/pix" not in rows[2]
    held = set(Relearning(RelearningParams(), MethodContext(["pix", "fou"], 10, 3, torch.device("cpu"))).split(60)[1])
    seen: list[int] = []
    step = Relearning.training_step

    def recording(self, model, batch, optimizers, state):
        seen.extend(batch["index"].tolist())
        return step(self, model, batch, optimizers, state)

    monkeypatch.setattr(Relearning, "training_step", recording)
    run_trial(tiny_config("relearning", epochs=1, loader={"batch_size": 27}), JsonlReporter(tmp_path / "held"))
    assert held and sorted(seen) == sorted(set(range(60)) - held)  # 54 digits = 2 full batches of 27
