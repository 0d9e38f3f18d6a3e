"""Under DDP the projectors of MLA and MIE are built from statistics pooled over all ranks, so that every
rank holds the same projector (the one rank 0 checkpoints), equal to the one-process projector of the
pooled batch; two real gloo processes with different batches."""

from __future__ import annotations

import torch
import torch.distributed as dist
from gloo_pair import end_process_group, two_gloo_ranks

from trainables.methods import METHODS
from trainables.methods.base import EpochContext, MethodContext, StepState
from trainables.models.classifier import ModelSpec
from trainables.params import build_params
from trainables.runtime import Runtime, pooled_mean, sum_over_ranks

SPEC = ModelSpec({"a": (6,), "b": (4,)}, {"a": "mlp", "b": "mlp"}, 8, "concat", 3)


def _batch(rank: int, n: int = 8) -> dict:
    g = torch.Generator().manual_seed(100 + rank)  # each rank sees other samples
    x = {"a": torch.randn(n, 6, generator=g) + rank, "b": torch.randn(n, 4, generator=g) * (1 + rank)}
    return {"inputs": x, "label": torch.randint(0, 3, (n,), generator=g), "index": torch.arange(n)}


def _build(method: str, params: dict, all_reduce=None):
    torch.manual_seed(0)  # the same initial weights everywhere
    ctx = MethodContext(["a", "b"], 3, 2, torch.device("cpu"), 0, all_reduce)
    m = METHODS.get(method)(build_params(METHODS.get(method).Params, params), ctx)
    model = m.build_model(SPEC)
    for module in list(model.modules()):  # the mlp's input BatchNorm normalises by each rank's own batch, a
        for name, child in list(module.named_children()):  # per-rank nonlinearity: out of this exactness test
            if isinstance(child, torch.nn.modules.batchnorm._BatchNorm):
                setattr(module, name, torch.nn.Identity())
    return m, model


def _epoch_context(epoch: int, batches: list[dict], all_reduce=None) -> EpochContext:
    return EpochContext(epoch, batches, torch.device("cpu"), lambda b: b, all_reduce or (lambda t: t))


def _worker(rank: int, init: str, out: str, method: str, params: dict) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    rt = Runtime(torch.device("cpu"), rank, 2)
    m, model = _build(method, params, rt.all_reduce)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rt.sync_gradients(opt)
    if method == "mie":  # the epoch's statistics pass over this rank's shard (covariance=dataset)
        m.on_epoch_start(model, _epoch_context(1, [_batch(rank), _batch(rank + 2)], rt.all_reduce))
    m.training_step(model, _batch(rank), {"main": opt}, StepState(1, 0, 1, 1))
    torch.save({"method": m.state_dict(), "model": model.state_dict()}, f"{out}.{rank}")
    end_process_group()


def _run_two_ranks(tmp_path, method: str, params: dict) -> list[dict]:
    return [torch.load(p) for p in two_gloo_ranks(_worker, tmp_path, method, params)]


def test_helpers_are_the_plain_operations_on_one_process() -> None:
    x = torch.randn(5, 3)
    assert torch.equal(pooled_mean(x), x.mean(0))
    a, b = torch.ones(2), torch.zeros(3)
    assert sum_over_ranks([a, b]) == [a, b]


def test_mla_projector_is_the_same_on_both_ranks_and_is_the_pooled_batch_one(tmp_path) -> None:
    from trainables.methods.mla import owm_alpha, update_projector

    params = {"projection": "replace", "normalize": "none"}
    got = _run_two_ranks(tmp_path, "mla", params)
    assert torch.equal(got[0]["method"]["P"], got[1]["method"]["P"])
    _, model = _build("mla", params)
    with torch.no_grad():  # MLA projects with features of the weights before the batch's steps
        feats = [model.encode(_batch(r)["inputs"]) for r in (0, 1)]
    P = torch.eye(8)
    for m in ("a", "b"):
        P = update_projector(P, torch.cat([f[m] for f in feats]), owm_alpha(0, 1))
    torch.testing.assert_close(got[0]["method"]["P"], P)
    alone = update_projector(update_projector(torch.eye(8), feats[0]["a"], 0.1), feats[0]["b"], 0.1)
    assert not torch.allclose(P, alone)  # rank 0's own batch would give another projector


MIE_EXACT = {"alternation": "batch", "rho": 0.0, "mixup": 0.0}  # no per-rank nonlinearity: DDP == one big batch


def _pooled_batch(ranks: tuple[int, ...]) -> dict:
    parts = [_batch(r) for r in ranks]
    return {
        "inputs": {k: torch.cat([b["inputs"][k] for b in parts]) for k in ("a", "b")},
        "label": torch.cat([b["label"] for b in parts]),
        "index": torch.arange(8 * len(parts)),
    }


def test_mie_batch_covariance_is_pooled_so_a_ddp_step_is_the_one_process_step_of_both_batches(tmp_path) -> None:
    params = {**MIE_EXACT, "covariance": "batch"}
    got = _run_two_ranks(tmp_path, "mie", params)
    m, model = _build("mie", params)
    names = [k for k, _ in model.named_parameters()]  # BatchNorm buffers stay per rank, as under torch DDP
    assert all(torch.equal(got[0]["model"][k], got[1]["model"][k]) for k in names)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    m.training_step(model, _pooled_batch((0, 1)), {"main": opt}, StepState(1, 0, 1, 1))
    for k, v in model.named_parameters():  # the gradient is linear in G once P is shared: G_0 P + G_1 P
        torch.testing.assert_close(got[0]["model"][k], v, msg=k)


def test_mie_dataset_projectors_are_the_same_on_both_ranks_and_those_of_all_shards(tmp_path) -> None:
    params = {**MIE_EXACT, "covariance": "dataset"}
    got = _run_two_ranks(tmp_path, "mie", params)
    P0, P1 = got[0]["method"]["P"], got[1]["method"]["P"]
    assert set(P0) == {"a", "b"} and all(torch.equal(x, y) for m in P0 for x, y in zip(P0[m], P1[m], strict=True))
    m, model = _build("mie", params)
    m.on_epoch_start(model, _epoch_context(1, [_batch(r) for r in (0, 2, 1, 3)]))
    for mod in ("a", "b"):
        for x, y in zip(P0[mod], m.P[mod], strict=True):
            torch.testing.assert_close(x, y)
