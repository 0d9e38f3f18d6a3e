"""DMRNet's mechanism: closed-form KL, feature-level modality dropping, deterministic evaluation,
weak-modality choice and hard-combination loss, resume with the method state."""

import math

import pytest
import torch
from conftest import interrupted_then_resumed, tiny_config

from trainables.errors import ConfigError
from trainables.methods.base import EpochContext, MethodContext, StepState
from trainables.methods.dmrnet import (
    DMRNet,
    DMRNetParams,
    combination_table,
    gaussian_kl,
    hard_loss,
    sample_combinations,
    single_modality_variance,
)
from trainables.models.classifier import ModelSpec

SPEC = ModelSpec({"a": (5,), "b": (3,)}, {"a": "mlp", "b": "mlp"}, 4, "concat", 3)


def _method(**params) -> DMRNet:
    return DMRNet(DMRNetParams(**params), MethodContext(["a", "b"], 3, 10, torch.device("cpu")))


def _batch(n: int = 8) -> dict:
    g = torch.Generator().manual_seed(1)
    return {
        "inputs": {"a": torch.randn(n, 5, generator=g), "b": torch.randn(n, 3, generator=g)},
        "label": torch.arange(n) % 3,
        "index": torch.arange(n),
    }


def test_kl_matches_closed_form_by_hand_and_torch_distributions():
    # one dim: mu = 1, var = e -> 0.5 * (e + 1 - 1 - 1) = 0.5 * (e - 1); second sample: standard normal -> 0
    mu, logvar = torch.tensor([[1.0], [0.0]]), torch.tensor([[1.0], [0.0]])
    assert gaussian_kl(mu, logvar).item() == pytest.approx(0.5 * (0.5 * (math.e - 1)))
    torch.manual_seed(0)
    mu, logvar = torch.randn(6, 4), torch.randn(6, 4)
    normal = torch.distributions.Normal
    ref = torch.distributions.kl_divergence(normal(mu, (0.5 * logvar).exp()), normal(0.0, 1.0))
    assert gaussian_kl(mu, logvar).item() == pytest.approx(ref.sum(1).mean().item(), rel=1e-5)


def test_combinations_are_the_non_empty_subsets_drawn_uniformly():
    assert combination_table(2).tolist() == [[1, 0], [0, 1], [1, 1]]
    t3 = combination_table(3)
    assert len({tuple(r) for r in t3.tolist()}) == 7 and t3.sum(1).min() == 1
    torch.manual_seed(0)
    draws = sample_combinations(30000, 2)
    freq = [(draws == row).all(1).float().mean().item() for row in combination_table(2)]
    assert freq == pytest.approx([1 / 3] * 3, abs=0.01)


def test_absent_modality_features_are_zeroed_in_training():
    model = _method().build_model(SPEC).train()
    mask = torch.tensor([[1.0, 0.0]]).repeat(8, 1)  # only "a" present for every sample
    out = model(_batch()["inputs"], mask)
    out.logits.sum().backward()
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in model.encoders["b"].parameters())
    assert any(p.grad is not None and p.grad.abs().max() > 0 for p in model.encoders["a"].parameters())


def test_evaluation_uses_mu_and_is_deterministic_while_training_samples():
    method = _method()
    model = method.build_model(SPEC)
    x = _batch()["inputs"]
    model.train()
    model(x)  # move BN statistics once so that eval mode is not trivially the init
    assert not torch.equal(model(x).logits, model(x).logits)  # e = mu + sigma * eps
    model.eval()
    first, second = method.predict(model, x), method.predict(model, x)
    assert torch.equal(first.logits, second.logits)
    assert torch.equal(first.logits, model.classifier(first.extras["mu"]))
    # per-modality logits are the model's own prediction with only that modality's features present
    assert torch.equal(first.modality_logits["a"], method.predict(model, x, present=["a"]).logits)


def test_single_modality_variance_and_hard_loss_by_hand():
    logvar = torch.log(torch.tensor([[1.0, 3.0], [4.0, 4.0], [9.0, 9.0], [2.0, 2.0]]))
    mask = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 0.0]])
    sums, counts = single_modality_variance(logvar, mask)
    assert sums.tolist() == pytest.approx([2.0 + 2.0, 4.0]) and counts.tolist() == [2.0, 1.0]
    ce = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert hard_loss(ce, mask, 0).item() == pytest.approx((1.0 + 4.0) / 4)  # samples 0 and 3 saw only "a"
    assert hard_loss(ce, mask, 1).item() == pytest.approx(2.0 / 4)


def test_weak_modality_is_the_larger_variance_and_hard_loss_starts_after_the_choice():
    method = _method(weak_epochs=2, beta=0.5)
    model = method.build_model(SPEC)
    opt = {"main": torch.optim.SGD(model.parameters(), lr=0.0)}
    torch.manual_seed(0)
    assert "dmrnet/hard" not in method.training_step(model, _batch(), opt, StepState(0, 0, 1, 0))
    ctx = lambda e: EpochContext(e, None, torch.device("cpu"), lambda b: b)
    diag = method.on_epoch_end(model, ctx(0))
    assert method.var_count.sum() > 0 and method.weak == -1  # accumulated; no choice before the last epoch
    assert set(diag) == {"dmrnet/variance/a", "dmrnet/variance/b"}
    method.var_sum = torch.tensor([3.0, 8.0], dtype=torch.float64)  # mean variances 1 (a) and 2 (b)
    method.var_count = torch.tensor([3.0, 4.0], dtype=torch.float64)
    diag = method.on_epoch_end(model, ctx(1))
    assert method.weak == 1 and diag["dmrnet/weak/b"] == 1.0 and diag["dmrnet/variance/b"] == pytest.approx(2.0)
    out = {k: float(v) for k, v in method.training_step(model, _batch(), opt, StepState(2, 0, 1, 2)).items()}
    assert out["loss"] == pytest.approx(out["dmrnet/ce"] + 1e-3 * out["dmrnet/kl"] + 0.5 * out["dmrnet/hard"], rel=1e-5)


def test_bad_params_and_fusion_are_one_line_errors():
    with pytest.raises(ConfigError, match="weak_epochs"):
        DMRNetParams(weak_epochs=0)
    with pytest.raises(ConfigError, match="model.fusion"):
        _method().build_model(ModelSpec({"a": (5,), "b": (3,)}, {"a": "mlp", "b": "mlp"}, 4, "sum", 3))


def test_resume_after_the_weak_choice_gives_the_same_result(tmp_path):
    fast = {"feature_dim": 16, "encoders": {"pix": "mlp"}}  # the state restore is under test, not the encoder
    cfg = tiny_config("dmrnet", epochs=3, params={"weak_epochs": 1}, eval={"missing": False}, model=fast)
    straight, resumed = interrupted_then_resumed(cfg, tmp_path, stop_after=2)
    assert resumed == straight
    rows = (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()
    assert (
        '"train/dmrnet/hard"' in rows[2]
        and sum(f'"train/dmrnet/weak/{m}": 1.0' in rows[2] for m in ("pix", "fou")) == 1
    )


def test_variance_accumulates_from_every_step_of_every_epoch_into_the_weak_choice():
    method = _method(weak_epochs=2)
    model = method.build_model(SPEC)
    opt = {"main": torch.optim.SGD(model.parameters(), lr=0.05)}  # the embedding changes between steps
    seen = []
    model.register_forward_hook(lambda mod, args, out: seen.append((out.extras["logvar"].detach(), out.extras["mask"])))
    ctx = lambda e: EpochContext(e, None, torch.device("cpu"), lambda b: b)
    torch.manual_seed(0)
    for epoch in range(2):
        for i in range(3):
            batch = _batch(12)
            batch["inputs"] = {m: x + 0.3 * (3 * epoch + i) for m, x in batch["inputs"].items()}
            method.training_step(model, batch, opt, StepState(epoch, i, 3, 3 * epoch + i))
        diag = method.on_epoch_end(model, ctx(epoch))
    assert len(seen) == 6
    sums, counts = torch.zeros(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    for logvar, mask in seen:  # by hand: mean variance of each sample that saw exactly one modality
        var = logvar.exp().mean(1).double()
        for i in range(2):
            alone = (mask[:, i] > 0) & (mask.sum(1) == 1)
            sums[i] += var[alone].sum()
            counts[i] += alone.sum()
    assert counts.min() > 0
    torch.testing.assert_close(method.var_sum, sums)
    assert torch.equal(method.var_count, counts)
    mean = sums / counts
    assert method.weak == int(mean.argmax()) and diag[f"dmrnet/weak/{['a', 'b'][method.weak]}"] == 1.0
    assert diag["dmrnet/variance/a"] == pytest.approx(mean[0].item())
