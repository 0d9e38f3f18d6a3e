"""MIE: the SAM pass leaves weights and BatchNorm buffers bit-identical and gives the hand-computed
gradient; the soft projector damps the other modality's top principal direction by exp(-tau) and
keeps its flattest; in a step the active head's gradient is exactly G P and only the active encoder
learns; test-time fusion is the mean of the unimodal softmaxes."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from conftest import without_batchnorm

from trainables.errors import ConfigError
from trainables.methods._flat_gradient import mixup
from trainables.methods.base import EpochContext, MethodContext, StepState
from trainables.methods.mie import MIE, MIEParams, flat_projector, sam_gradient, soft_projector, stage_of
from trainables.models.classifier import ModelSpec
from trainables.models.encoders import SmallCNN
from trainables.params import build_params


def test_sam_gradient_matches_hand_computation_and_restores_weights() -> None:
    a = torch.tensor([1.0, 2.0, 3.0])
    w = torch.nn.Parameter(torch.tensor([0.5, -1.0, 2.0]))
    buf = torch.zeros(2)

    def loss_fn() -> torch.Tensor:
        buf.add_(1.0)  # stands for BatchNorm running statistics updated by a forward
        return 0.5 * (a * w * w).sum()

    loss_fn().backward()
    before, rho, lam = w.detach().clone(), 0.05, 0.3
    buf.zero_()
    loss_p = sam_gradient([w], loss_fn, rho, lam, buffers=[buf])
    g = a * before
    eps = rho * g / g.norm()
    torch.testing.assert_close(w.grad, (1 - lam) * g + lam * a * (before + eps))
    assert loss_p == pytest.approx((0.5 * a * (before + eps) ** 2).sum().item())
    assert torch.equal(w.detach(), before) and torch.equal(buf, torch.zeros(2))


def test_sam_pass_leaves_cnn_weights_and_bn_buffers_bit_identical() -> None:
    torch.manual_seed(0)
    enc, head = SmallCNN((1, 8, 8), feature_dim=8), torch.nn.Linear(8, 3)
    x, y = torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    enc.train()
    torch.nn.functional.cross_entropy(head(enc(x)), y).backward()
    state = {k: v.clone() for k, v in {**enc.state_dict(), **head.state_dict()}.items()}
    params = list(enc.parameters()) + list(head.parameters())
    grads = [p.grad.clone() for p in params]
    sam_gradient(params, lambda: torch.nn.functional.cross_entropy(head(enc(x)), y), 0.5, 0.3, enc.buffers())
    after = {**enc.state_dict(), **head.state_dict()}
    assert all(torch.equal(state[k], after[k]) for k in state)  # weights, running stats, num_batches_tracked
    assert any(not torch.equal(p.grad, g) for p, g in zip(params, grads, strict=True))  # the perturbed pass counted


def test_soft_projector_damps_top_direction_and_keeps_flat_one() -> None:
    torch.manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(4, 4))
    feats = (torch.randn(500, 4) * torch.tensor([5.0, 2.0, 1.0, 0.2])) @ q.t() + 3.0
    P = soft_projector(feats, tau=0.4)
    c = feats - feats.mean(0)
    lam, U = torch.linalg.eigh(c.t() @ c / (len(feats) - 1))
    top, flat = U[:, -1], U[:, 0]
    torch.testing.assert_close(P @ top, math.exp(-0.4) * top, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(P @ flat, flat, atol=1e-5, rtol=1e-5)
    mid = U[:, 1]
    scale = math.exp(-0.4 * ((lam[1] - lam[0]) / (lam[-1] - lam[0])).item())
    torch.testing.assert_close(P @ mid, scale * mid, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(P, P.t())


OLD = {"alternation": "batch", "covariance": "batch", "head": "linear", "mixup": 0.0}  # per-batch mechanics


def _setup(**params):
    params = {**OLD, **params}
    torch.manual_seed(0)
    spec = ModelSpec({"a": (6,), "b": (4,)}, {"a": "mlp", "b": "mlp"}, 8, "concat", 3)
    method = MIE(build_params(MIEParams, params), MethodContext(["a", "b"], 3, 2, torch.device("cpu")))
    model = without_batchnorm(method.build_model(spec))
    x = {"a": torch.randn(32, 6), "b": torch.randn(32, 4)}
    return method, model, {"inputs": x, "label": torch.randint(0, 3, (32,)), "index": torch.arange(32)}


def _spy(opt: torch.optim.Optimizer, model) -> list[dict]:
    seen: list[dict] = []

    def hook(o, args, kwargs):
        enc = {m: any(p.grad is not None for p in e.parameters()) for m, e in model.encoders.items()}
        heads = {
            m: (h[0].weight.grad.clone() if h[0].weight.grad is not None else None) for m, h in model.heads.items()
        }
        seen.append({"enc": enc, "heads": heads})

    opt.register_step_pre_hook(hook)
    return seen


def test_step_projects_active_head_gradient_and_isolates_encoders() -> None:
    method, model, batch = _setup(rho=0.0, tau=2.0)
    ref_method, ref_model, _ = _setup(rho=0.0, tau=2.0, project=False)
    feat_b = model.encoders["b"](batch["inputs"]["b"]).detach()
    opt, ref_opt = torch.optim.SGD(model.parameters(), lr=0.1), torch.optim.SGD(ref_model.parameters(), lr=0.1)
    seen, ref_seen = _spy(opt, model), _spy(ref_opt, ref_model)
    stats = method.training_step(model, batch, {"main": opt}, StepState(0, 0, 1, 0))
    ref_method.training_step(ref_model, batch, {"main": ref_opt}, StepState(0, 0, 1, 0))
    assert [s["enc"] for s in seen] == [{"a": True, "b": False}, {"a": False, "b": True}]
    assert seen[0]["heads"]["b"] is None and seen[1]["heads"]["a"] is None
    expected = ref_seen[0]["heads"]["a"] @ soft_projector(feat_b, 2.0)  # a's head, damped by b's geometry
    torch.testing.assert_close(seen[0]["heads"]["a"], expected)
    assert 0 < stats["mie/damping/a"] < 1


def test_sam_step_changes_the_update_but_not_the_starting_point() -> None:
    method, model, batch = _setup(rho=0.5, flat_ratio=1.0, project=False)
    ref_method, ref_model, _ = _setup(rho=0.0, project=False)
    opt, ref_opt = torch.optim.SGD(model.parameters(), lr=0.1), torch.optim.SGD(ref_model.parameters(), lr=0.1)
    seen, ref_seen = _spy(opt, model), _spy(ref_opt, ref_model)
    stats = method.training_step(model, batch, {"main": opt}, StepState(0, 0, 1, 0))
    ref_method.training_step(ref_model, batch, {"main": ref_opt}, StepState(0, 0, 1, 0))
    assert not torch.allclose(seen[0]["heads"]["a"], ref_seen[0]["heads"]["a"])
    assert stats["mie/sharpness/a"] > 0  # the ascent step raised the loss


def test_fusion_is_mean_of_softmaxes_and_two_modalities_only() -> None:
    method, model, batch = _setup()
    model.eval()
    out = method.predict(model, batch["inputs"])
    mean = (out.modality_logits["a"].softmax(1) + out.modality_logits["b"].softmax(1)) / 2
    torch.testing.assert_close(out.logits.exp(), mean)
    only_b = method.predict(model, batch["inputs"], present=["b"])
    torch.testing.assert_close(only_b.logits.exp(), out.modality_logits["b"].softmax(1))
    with pytest.raises(ConfigError, match="exactly 2 modalities"):
        MIE(MIEParams(), MethodContext(["a", "b", "c"], 3, 2, torch.device("cpu")))
    with pytest.raises(ConfigError, match="params.flat_ratio"):
        build_params(MIEParams, {"flat_ratio": 1.5}, "params.")


# --- the IGM-style options: stages, dataset statistics, MLP heads, mixup ---------------------------
def test_stage_schedule_and_restart_points() -> None:
    assert [stage_of(e, [1]) for e in range(3)] == [(0, True), (1, True), (2, True)]
    assert [stage_of(e, [2, 3]) for e in range(6)] == [
        (0, True),
        (0, False),
        (1, True),
        (1, False),
        (1, False),
        (2, True),
    ]
    method, _, _ = _setup(alternation="stage", stage_epochs=[2, 3])
    assert [method.restart_from_best(e) for e in range(6)] == [False, False, True, False, False, True]
    batch_method, _, _ = _setup()
    assert not any(batch_method.restart_from_best(e) for e in range(4))
    with pytest.raises(ConfigError, match="params.stage_epochs"):
        MIEParams(stage_epochs=[2, 0])


def _second_moment_projectors(model, source: str, x: torch.Tensor, tau: float) -> list[torch.Tensor]:
    """By hand: the inputs of each linear layer of ``source``'s head, their uncentred second moment, P."""
    with torch.no_grad():
        h = model.encoders[source](x)
        head = model.heads[source]
        inputs = [h, head[1](head[0](h))]
        inputs.append(head[2](inputs[1]))
    return [flat_projector(z.double().t() @ z.double() / len(z), tau).float() for z in inputs]


def test_stage_step_trains_the_active_modality_with_every_mlp_layer_projected_by_dataset_moments() -> None:
    params = {"alternation": "stage", "stage_epochs": [1], "covariance": "dataset", "head": "mlp", "rho": 0.0}
    params |= {"mixup": 0.0, "tau": 2.0}
    method, model, batch = _setup(**params)
    ref_method, ref_model, _ = _setup(**params, project=False)
    ctx = EpochContext(1, [batch], torch.device("cpu"), lambda b: b)
    assert method.on_epoch_start(model, ctx) == {"mie/active/a": 0.0, "mie/active/b": 1.0}  # stage 1 trains b
    expected_P = _second_moment_projectors(model, "a", batch["inputs"]["a"], 2.0)  # a's knowledge protects
    assert set(method.P) == {"b"} and len(method.P["b"]) == 3
    for got, want in zip(method.P["b"], expected_P, strict=True):
        torch.testing.assert_close(got, want)
    opt, ref_opt = torch.optim.SGD(model.parameters(), lr=0.1), torch.optim.SGD(ref_model.parameters(), lr=0.1)
    grads, ref_grads = [], []
    for o, m, sink in ((opt, model, grads), (ref_opt, ref_model, ref_grads)):
        o.register_step_pre_hook(lambda *_, m=m, sink=sink: sink.append(_grads(m)))
    stats = method.training_step(model, batch, {"main": opt}, StepState(1, 0, 1, 1))
    ref_method.training_step(ref_model, batch, {"main": ref_opt}, StepState(1, 0, 1, 1))
    assert len(grads) == 1 and set(stats) == {"loss", "mie/loss/b", "mie/sharpness/b", "mie/damping/b"}
    assert not any(k.startswith(("encoders.a", "heads.a")) for k in grads[0])  # only b learns in b's stage
    for i, P in zip((0, 2, 3), method.P["b"], strict=True):
        key = f"heads.b.{i}.weight"
        torch.testing.assert_close(grads[0][key], ref_grads[0][key] @ P)
    assert torch.equal(grads[0]["heads.b.0.bias"], ref_grads[0]["heads.b.0.bias"])  # biases untouched
    # the first stage has nothing to protect: no projection
    fresh, fresh_model, _ = _setup(**params)
    fresh.on_epoch_start(fresh_model, EpochContext(0, [batch], torch.device("cpu"), lambda b: b))
    assert fresh.P == {}


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_mixup_mixes_the_active_input_and_its_loss_weights_both_labels() -> None:
    method, model, batch = _setup(alternation="stage", rho=0.0, project=False, mixup=1.0)
    init = copy.deepcopy(model)
    torch.manual_seed(5)
    xm, perm, lam = mixup(batch["inputs"]["a"], 1.0)
    assert 0 < lam.item() < 1 and not torch.equal(perm, torch.arange(32))
    torch.testing.assert_close(xm, lam * batch["inputs"]["a"] + (1 - lam) * batch["inputs"]["a"][perm])
    z = init.heads["a"](init.encoders["a"](xm))
    y = batch["label"]
    want = lam * torch.nn.functional.cross_entropy(z, y) + (1 - lam) * torch.nn.functional.cross_entropy(z, y[perm])
    torch.manual_seed(5)
    stats = method.training_step(
        model, batch, {"main": torch.optim.SGD(model.parameters(), lr=0.1)}, StepState(0, 0, 1, 0)
    )
    torch.testing.assert_close(stats["mie/loss/a"], want.detach())


def test_sam_in_a_real_step_perturbs_encoder_and_head_by_rho_and_restores_them_before_the_update() -> None:
    torch.manual_seed(0)
    spec = ModelSpec({"a": (1, 8, 8), "b": (4,)}, {"a": "cnn", "b": "mlp"}, 8, "concat", 3)
    params = {"alternation": "stage", "rho": 0.5, "flat_ratio": 0.5, "mixup": 0.0, "project": False}
    method = MIE(build_params(MIEParams, params), MethodContext(["a", "b"], 3, 2, torch.device("cpu")))
    model = method.build_model(spec)
    batch = {"inputs": {"a": torch.randn(6, 1, 8, 8), "b": torch.randn(6, 4)}, "label": torch.tensor([0, 1, 2] * 2)}
    enc, head = model.encoders["a"], model.heads["a"]
    start = copy.deepcopy(model.state_dict())
    one_forward = copy.deepcopy(enc)
    one_forward(batch["inputs"]["a"])  # BatchNorm statistics after exactly one training forward
    seen: list[list[torch.Tensor]] = []
    enc.register_forward_pre_hook(
        lambda *_: seen.append([p.detach().clone() for p in [*enc.parameters(), *head.parameters()]])
    )
    at_step: list[dict] = []
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    opt.register_step_pre_hook(lambda *_: at_step.append(copy.deepcopy(model.state_dict())))
    method.training_step(model, batch, {"main": opt}, StepState(0, 0, 1, 0))
    assert len(seen) == 2  # the plain forward and the forward at the perturbed point
    deltas = [w_p - w for w, w_p in zip(seen[0], seen[1], strict=True)]
    n_enc = len(list(enc.parameters()))
    assert all(d.abs().max() > 0 for d in deltas[:n_enc])  # every encoder tensor is perturbed ...
    assert all(d.abs().max() > 0 for d in deltas[n_enc:])  # ... and every head tensor
    radius = torch.linalg.vector_norm(torch.stack([d.norm() for d in deltas]))
    assert radius.item() == pytest.approx(0.5, rel=1e-4)  # jointly, by exactly rho
    restored = at_step[0]
    assert all(torch.equal(restored[k], start[k]) for k in start if ".running_" not in k and "num_batches" not in k)
    for k, v in one_forward.state_dict().items():  # the perturbed pass left no trace in BatchNorm either
        assert torch.equal(restored[f"encoders.a.{k}"], v), k


def test_stage_mode_in_a_trial_alternates_restarts_and_resumes_exactly(tmp_path) -> None:
    from conftest import interrupted_then_resumed, tiny_config

    from orchestrator.results import read_jsonl

    params = {"alternation": "stage", "stage_epochs": [1, 2], "covariance": "dataset"}
    cfg = tiny_config("mie", epochs=4, params=params, eval={"missing": False})
    straight, resumed = interrupted_then_resumed(cfg, tmp_path, stop_after=2)  # cut inside the 2-epoch stage of fou
    assert resumed == straight
    rows = read_jsonl(tmp_path / "straight" / "metrics.jsonl")
    assert [r["train/mie/active/pix"] for r in rows] == [1.0, 0.0, 0.0, 1.0]  # stages of 1, 2, 1 epochs
    assert "train/mie/damping/pix" not in rows[0] and "train/mie/damping/fou" in rows[1]  # stage 0 unprojected


# --- no host sync per step: the sync-free step gives the numbers the step gave before -------------
def _fingerprint(params: dict, epoch: int, steps: int = 3) -> tuple[list[dict[str, float]], list[float]]:
    """Statistics of ``steps`` training steps and 4 random projections of the whole final state.

    The real model (BatchNorm kept), a seeded MIE with ``params`` at ``epoch`` (its ``on_epoch_start``
    run first: the dataset statistics), SGD with momentum; float64 checksums of every state tensor.
    """
    torch.manual_seed(0)
    spec = ModelSpec({"a": (6,), "b": (4,)}, {"a": "mlp", "b": "mlp"}, 8, "concat", 3)
    method = MIE(build_params(MIEParams, params), MethodContext(["a", "b"], 3, 2, torch.device("cpu")))
    model = method.build_model(spec)
    batches = [
        {"inputs": {"a": torch.randn(16, 6), "b": torch.randn(16, 4)}, "label": torch.randint(0, 3, (16,))}
        for _ in range(steps)
    ]
    method.on_epoch_start(model, EpochContext(epoch, batches, torch.device("cpu"), lambda b: b))
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    rows = []
    for i, batch in enumerate(batches):
        stats = method.training_step(model, batch, {"main": opt}, StepState(epoch, i, steps, i))
        rows.append({k: float(v) for k, v in sorted(stats.items())})
    state = torch.cat([t.double().flatten() for t in model.state_dict().values() if t.is_floating_point()])
    directions = torch.randn(4, state.numel(), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return rows, (directions @ state).tolist()


# Recorded from main's MIE (3d44842, before the step was made sync-free) with _fingerprint, 1 thread:
# config -> (params, epoch, statistics of 3 steps, projections of the final state).
RECORDED = {
    "defaults": (
        {},
        1,
        [
            {
                "loss": 1.0878006219863892,
                "mie/damping/a": 0.972058892250061,
                "mie/damping/b": 0.9752413034439087,
                "mie/loss/a": 1.0867857933044434,
                "mie/loss/b": 1.088815450668335,
                "mie/sharpness/a": 0.022574901580810547,
                "mie/sharpness/b": 0.024253368377685547,
            },
            {
                "loss": 1.0895323753356934,
                "mie/damping/a": 0.9788661003112793,
                "mie/damping/b": 0.9816895723342896,
                "mie/loss/a": 1.0874176025390625,
                "mie/loss/b": 1.0916471481323242,
                "mie/sharpness/a": 0.007577061653137207,
                "mie/sharpness/b": 0.00818479061126709,
            },
            {
                "loss": 1.1551685333251953,
                "mie/damping/a": 0.9737288951873779,
                "mie/damping/b": 0.9729405045509338,
                "mie/loss/a": 1.1528536081314087,
                "mie/loss/b": 1.157483458518982,
                "mie/sharpness/a": 0.0276033878326416,
                "mie/sharpness/b": 0.030344724655151367,
            },
        ],
        [-0.7708497841779338, -20.683189792066578, -20.93880339905763, 1.3096958911508345],
    ),
    "batch covariance": (
        {"covariance": "batch", "mixup": 0.5, "rho": 0.5},
        0,
        [
            {
                "loss": 1.0881268978118896,
                "mie/damping/a": 0.9949953556060791,
                "mie/damping/b": 0.997134804725647,
                "mie/loss/a": 1.0859451293945312,
                "mie/loss/b": 1.0903087854385376,
                "mie/sharpness/a": 0.340162992477417,
                "mie/sharpness/b": 0.3499559164047241,
            },
            {
                "loss": 1.0888439416885376,
                "mie/damping/a": 0.9964181780815125,
                "mie/damping/b": 0.9958527684211731,
                "mie/loss/a": 1.0877009630203247,
                "mie/loss/b": 1.0899869203567505,
                "mie/sharpness/a": 0.12212264537811279,
                "mie/sharpness/b": 0.14319181442260742,
            },
            {
                "loss": 1.1682989597320557,
                "mie/damping/a": 0.9978919625282288,
                "mie/damping/b": 0.9917026162147522,
                "mie/loss/a": 1.1654067039489746,
                "mie/loss/b": 1.1711912155151367,
                "mie/sharpness/a": 0.40466880798339844,
                "mie/sharpness/b": 0.4653630256652832,
            },
        ],
        [-0.8323285574194337, -21.104564384626674, -20.70649704168841, 1.1498550643490404],
    ),
    "stage, shared linear head": (
        {"alternation": "stage", "stage_epochs": [1], "shared_head": True, "head": "linear"},
        1,
        [
            {
                "loss": 1.1832648515701294,
                "mie/damping/b": 0.8982208967208862,
                "mie/loss/b": 1.1832648515701294,
                "mie/sharpness/b": 0.026615142822265625,
            },
            {
                "loss": 1.1160478591918945,
                "mie/damping/b": 0.9329940676689148,
                "mie/loss/b": 1.1160478591918945,
                "mie/sharpness/b": 0.016525983810424805,
            },
            {
                "loss": 1.1189318895339966,
                "mie/damping/b": 0.932799220085144,
                "mie/loss/b": 1.1189318895339966,
                "mie/sharpness/b": 0.011819720268249512,
            },
        ],
        [-8.196495235992288, -13.155260690227244, -6.975604589791059, -16.902886327016574],
    ),
}


@pytest.mark.parametrize("name", list(RECORDED))
def test_step_gives_the_statistics_and_parameters_recorded_before_it_was_made_sync_free(name) -> None:
    params, epoch, want_rows, want_state = RECORDED[name]
    rows, state = _fingerprint(params, epoch)
    assert [sorted(r) for r in rows] == [sorted(r) for r in want_rows]
    # tolerances: the thread count alone moves float32 results by ~1e-7 (BLAS reduction order)
    for got, want in zip(rows, want_rows, strict=True):
        assert got == pytest.approx(want, rel=1e-5, abs=1e-6)
    assert state == pytest.approx(want_state, rel=1e-6, abs=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="torch.cuda.set_sync_debug_mode needs a GPU")
@pytest.mark.parametrize("params", [{}, {"alternation": "stage", "stage_epochs": [1]}])
def test_steps_on_a_gpu_never_wait_for_it(params) -> None:
    """What the CPU count in test_host_sync.py cannot see: a host-to-device copy from pageable memory
    (``lam``) synchronises the stream. ``covariance=batch`` is left out: its per-step ``eigh`` checks
    its LAPACK status on the host (a documented sync of that option)."""
    from conftest import tiny_config

    from trainables.config import resolve
    from trainables.loop import build_trial
    from trainables.runtime import Runtime

    trial = build_trial(resolve(tiny_config("mie", epochs=2, params=params)), Runtime.local("cuda"))
    for epoch in range(2):
        trial.train_loader.sampler.set_epoch(epoch)
        trial.method.on_epoch_start(trial.model, trial.epoch_context(epoch))
        trial.model.train()
        batches = [trial.to_device(b) for b in trial.train_loader]
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for i, batch in enumerate(batches):
                trial.method.training_step(trial.model, batch, trial.optimizers, StepState(epoch, i, len(batches), i))
        finally:
            torch.cuda.set_sync_debug_mode("default")
