"""DI-MML's mechanism: detached stage 1, DUC reaches only the student, dimension selection by hand,
certainty-weighted inference, frozen encoders in stage 2, the schedule, and resume with its state."""

import math

import pytest
import torch
from conftest import interrupted_then_resumed, tiny_config

from trainables.errors import ConfigError
from trainables.methods.base import EpochContext, MethodContext, StepState
from trainables.methods.di_mml import (
    DIMML,
    DIMMLParams,
    certainty_fusion,
    duc_loss,
    effective_dims,
    nearest_centroid_hits,
    only_dims,
    schedule,
    select_dims,
)
from trainables.models.classifier import ModelSpec

SPEC = ModelSpec({"a": (1, 6, 6), "b": (3,)}, {"a": "cnn", "b": "mlp"}, 4, "concat", 3)


def _method(epochs: int = 10, **params) -> DIMML:
    return DIMML(DIMMLParams(**params), MethodContext(["a", "b"], 3, epochs, torch.device("cpu")))


def _batch(n: int = 6, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "inputs": {"a": torch.randn(n, 1, 6, 6, generator=g), "b": torch.randn(n, 3, generator=g)},
        "label": torch.arange(n) % 3,
        "index": torch.arange(n),
    }


def _grads(method, model, batch) -> dict[str, torch.Tensor]:
    """Encoder gradients of one stage-1 step (lr 0 keeps the weights; set_to_none keeps them fresh)."""
    opt = {"main": torch.optim.SGD(model.parameters(), lr=0.0)}
    method.training_step(model, batch, opt, StepState(0, 0, 1, 0))
    return {m: torch.cat([p.grad.flatten() for p in model.encoders[m].parameters()]) for m in ("a", "b")}


def test_duc_matches_infonce_by_hand_and_gives_the_teacher_no_gradient():
    student = torch.tensor([[1.0, 5.0], [2.0, 5.0]], requires_grad=True)
    teacher = torch.tensor([[1.0, 7.0], [0.0, 7.0]], requires_grad=True)
    loss = duc_loss(student, teacher, torch.tensor([0]), temperature=1.0)  # dim 1 is not selected
    # logits s_i t_j: [[1, 0], [2, 0]]; positives on the diagonal
    hand = (-math.log(math.e / (math.e + 1)) - math.log(1 / (math.e**2 + 1))) / 2
    assert loss.item() == pytest.approx(hand)
    loss.backward()
    assert teacher.grad is None or teacher.grad.abs().max() == 0
    assert student.grad[:, 0].abs().max() > 0 and student.grad[:, 1].abs().max() == 0
    assert duc_loss(student, teacher, torch.tensor([], dtype=torch.long), 1.0).item() == 0.0


def test_dimension_selection_matches_a_hand_made_case():
    y = torch.tensor([0, 0, 1, 1])
    # modality a: dim 0 separates the classes (4 hits); dims 1, 2 have equal centroids -> ties go to class 0 (2 hits)
    a = torch.tensor([[0.0, 0, 1], [0, 1, 0], [1, 0, 0], [1, 1, 1]])
    # modality b: dims 1 and 2 separate the classes, dim 0 does not
    b = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 1], [1, 1, 1]])
    cent_a = torch.tensor([[0.0, 0.5, 0.5], [1.0, 0.5, 0.5]])
    assert nearest_centroid_hits(a, y, cent_a).tolist() == [4, 2, 2]
    eff = select_dims({"a": a, "b": b}, y, 2)
    assert eff["a"].tolist() == [True, False, False]  # 4 > mean 8/3
    assert eff["b"].tolist() == [False, True, True]  # 4 > mean 10/3, 2 is not
    assert effective_dims(torch.tensor([3, 1, 2])).tolist() == [True, False, False]  # strictly above the mean
    only = only_dims(eff)
    assert only[("a", "b")].tolist() == [0] and only[("b", "a")].tolist() == [1, 2]


def test_stage1_is_detached_and_duc_moves_only_the_student():
    torch.manual_seed(0)
    method = _method()
    model = method.build_model(SPEC).train()
    base = _grads(method, model, _batch())
    changed = _batch()
    changed["inputs"]["a"] = changed["inputs"]["a"] + 1.0
    assert torch.equal(_grads(method, model, changed)["b"], base["b"])  # no gradient crosses modalities
    method.only = {("a", "b"): torch.tensor([0, 1, 2, 3])}  # teacher a, student b
    with_duc = _grads(method, model, _batch())
    assert torch.equal(with_duc["a"], base["a"])  # the teacher's encoder gets nothing from DUC
    assert not torch.allclose(with_duc["b"], base["b"])


def test_certainty_weighting_by_hand_and_per_sample():
    l1 = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    l2 = torch.tensor([[0.0, 1.0], [0.0, 3.0]])
    c1, c2 = math.e**2 / (math.e**2 + 1), math.e / (math.e + 1)
    w1 = math.exp(c1 / 0.5) / (math.exp(c1 / 0.5) + math.exp(c2 / 0.5))
    out = certainty_fusion([l1, l2], temperature=0.5)
    assert out[0].tolist() == pytest.approx([2 * w1, 1 - w1])
    d1, d2 = 0.5, math.e**3 / (math.e**3 + 1)  # the second sample trusts head 2 more than the first does
    v1 = math.exp(d1 / 0.5) / (math.exp(d1 / 0.5) + math.exp(d2 / 0.5))
    assert out[1].tolist() == pytest.approx([0.0, 3 * (1 - v1)])


def test_prediction_adds_the_fusion_head_only_from_stage2():
    method = _method()
    model = method.build_model(SPEC).eval()
    x = _batch()["inputs"]
    raw = model(x)
    heads = [raw.modality_logits["a"], raw.modality_logits["b"]]
    assert torch.allclose(method.predict(model, x).logits, certainty_fusion(heads, 1.0))
    method.stage = 2
    assert torch.allclose(method.predict(model, x).logits, certainty_fusion([*heads, raw.logits], 1.0))


def test_an_absent_modality_has_no_vote():
    method = _method()
    model = method.build_model(SPEC).eval()
    x = _batch()["inputs"]
    only_a = model({"a": x["a"], "b": torch.zeros_like(x["b"])})
    assert torch.allclose(method.predict(model, x, present=("a",)).logits, only_a.modality_logits["a"])
    method.stage = 2
    want = certainty_fusion([only_a.modality_logits["a"], only_a.logits], 1.0)
    assert torch.allclose(method.predict(model, x, present=("a",)).logits, want)


def test_stage2_trains_only_the_fusion_head_on_frozen_encoders():
    method = _method(epochs=10, stage2_epochs=3)
    model = method.build_model(SPEC).train()
    opts = method.configure_optimizers(model, lambda ps: torch.optim.SGD(ps, lr=0.1))
    method.on_epoch_start(model, EpochContext(7, None, torch.device("cpu"), lambda b: b))
    assert method.stage == 2
    before = {k: v.clone() for k, v in model.state_dict().items()}
    method.training_step(model, _batch(), opts, StepState(7, 0, 1, 70))
    moved = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert moved and all(k.startswith("fusion.") for k in moved)  # BN running stats of encoders included


def test_schedule_official_at_170_epochs_scaled_otherwise_and_checked():
    assert schedule(DIMMLParams(), 170) == (20, 150)
    assert schedule(DIMMLParams(), 30) == (3, 26)
    assert schedule(DIMMLParams(), 1) == (0, 1)  # no room for stage 2
    assert schedule(DIMMLParams(duc_start=10, stage2_epochs=5), 30) == (10, 25)
    with pytest.raises(ConfigError, match="params.stage2_epochs"):
        schedule(DIMMLParams(stage2_epochs=30), 30)
    with pytest.raises(ConfigError, match="params.duc_start.*0 .. 24"):
        schedule(DIMMLParams(duc_start=25, stage2_epochs=5), 30)


def test_selection_pass_equals_select_dims_on_eval_features():
    torch.manual_seed(0)
    method = _method()
    model = method.build_model(SPEC)
    batches = [_batch(6, s) for s in range(3)]
    ctx = EpochContext(method.duc_start, batches, torch.device("cpu"), lambda b: b)
    method.on_epoch_start(model, ctx)
    model.eval()
    with torch.no_grad():
        feats = [model.encode(b["inputs"]) for b in batches]
    ref = select_dims({m: torch.cat([f[m] for f in feats]).double() for m in ("a", "b")}, torch.arange(18) % 3, 3)
    assert {m: e.tolist() for m, e in method.effective.items()} == {m: e.tolist() for m, e in ref.items()}
    assert set(method.only) == {("a", "b"), ("b", "a")}


def test_resume_during_duc_gives_the_same_result(tmp_path):
    params = {"duc_start": 0, "stage2_epochs": 1, "temperature": 1.0}
    fast = {"feature_dim": 16, "encoders": {"pix": "mlp"}}  # the state restore is under test, not the encoder
    cfg = tiny_config("di_mml", epochs=3, params=params, eval={"missing": False}, model=fast)
    # DUC dims were selected at the start of epoch 1 and are needed in epoch 2
    straight, resumed = interrupted_then_resumed(cfg, tmp_path, stop_after=1)
    assert resumed == straight
    rows = (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()
    assert '"train/di_mml/duc"' in rows[1] and '"train/di_mml/stage": 2.0' in rows[2]


@pytest.mark.parametrize(
    ("sched", "stage2_lr", "main_lr", "fusion_lr"),
    [  # epochs 5 = stage 1 (3) + stage 2 (2); optim.lr 0.05
        ({"name": "step", "step_size": 1, "gamma": 0.1}, None, [0.05, 0.005, 0.0005], [0.05, 0.005]),
        ({"name": "cosine"}, 0.02, [0.05, 0.0375, 0.0125], [0.02, 0.01]),  # each cosine spans its own stage
    ],
)
def test_stage2_starts_at_its_own_lr_with_its_own_schedule(tmp_path, sched, stage2_lr, main_lr, fusion_lr):
    """Stage 2 is a fresh optimizer (official): at ``stage2_lr`` (default optim.lr), scheduled over stage 2."""
    from orchestrator.results import read_jsonl
    from trainables.loop import run_trial
    from trainables.reporting import JsonlReporter

    params = {"duc_start": 0, "stage2_epochs": 2} | ({"stage2_lr": stage2_lr} if stage2_lr else {})
    fast = {"feature_dim": 16, "encoders": {"pix": "mlp"}}
    cfg = tiny_config("di_mml", epochs=5, params=params, eval={"missing": False}, model=fast, sched=sched)
    cfg["optim"] = {"lr": 0.05}
    run_trial(cfg, JsonlReporter(tmp_path))
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["train/di_mml/stage"] for r in rows] == [1.0, 1.0, 1.0, 2.0, 2.0]
    assert [r["train/lr/main"] for r in rows[:3]] == pytest.approx(main_lr)  # stage 1's schedule spans stage 1
    assert [r["train/lr/fusion"] for r in rows[3:]] == pytest.approx(fusion_lr)
