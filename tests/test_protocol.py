"""The common protocol on a real trial: probe accuracy and Shapley values, the same recipe for every method."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config

from trainables.config import resolve
from trainables.loop import build_trial, run_trial
from trainables.methods import METHODS
from trainables.models.classifier import mask_inputs
from trainables.probe import probe_accuracy
from trainables.protocol import common_protocol
from trainables.reporting import JsonlReporter
from trainables.runtime import Runtime


def _split(dataset) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    items = [dataset[i] for i in range(len(dataset))]
    inputs = {m: torch.stack([it["inputs"][m] for it in items]) for m in items[0]["inputs"]}
    return inputs, torch.stack([torch.as_tensor(it["label"]) for it in items])


@torch.no_grad()
def test_protocol_equals_a_direct_computation():
    trial = build_trial(resolve(tiny_config("mla", epochs=1)), Runtime.local("cpu"))
    out = common_protocol(trial)
    model = trial.model.eval()
    (tr_in, tr_y), (te_in, te_y) = _split(trial.data.train), _split(trial.data.test)
    tr_f, te_f = model.encode(tr_in), model.encode(te_in)
    for m in ("pix", "fou"):
        direct = probe_accuracy(tr_f[m], tr_y, te_f[m], te_y, trial.data.num_classes)
        assert out[f"test/probe/acc/{m}"] == pytest.approx(direct, abs=1e-12)

    def v(present):
        logits = trial.method.predict(model, mask_inputs(te_in, present)).logits
        return logits.argmax(1).eq(te_y).double().mean().item()

    phi_pix = 0.5 * (v({"pix"}) - v(set())) + 0.5 * (v({"pix", "fou"}) - v({"fou"}))
    assert out["test/shapley/pix"] == pytest.approx(phi_pix, abs=1e-12)
    assert out["test/shapley/pix"] + out["test/shapley/fou"] == pytest.approx(v({"pix", "fou"}) - v(set()))
    assert out["time/protocol_s"] > 0


@pytest.mark.parametrize("method", sorted(METHODS.names()))
def test_every_method_summary_has_the_common_measures(tmp_path, method):
    summary = run_trial(tiny_config(method, epochs=2), JsonlReporter(tmp_path))
    encoded = [m for m in ("pix", "fou") if f"test/acc/{m}" in summary]  # unimodal encodes one
    assert encoded
    for m in encoded:
        assert 0.0 <= summary[f"test/probe/acc/{m}"] <= 1.0
    for m in ("pix", "fou"):
        assert f"test/shapley/{m}" in summary
    assert summary["eval/missing_scheme"] == METHODS.get(method).missing_scheme
    assert summary["eval/shapley_scheme"] == "zero-input"
    assert not any(k.startswith("time/") for k in summary)  # the summary holds nothing time-dependent


def test_the_protocol_can_be_switched_off(tmp_path):
    summary = run_trial(tiny_config(epochs=1, eval={"protocol": False}), JsonlReporter(tmp_path))
    assert not any(k.startswith(("test/probe/", "test/shapley/")) for k in summary)
    assert summary["eval/shapley_scheme"] is None


def test_features_gathered_over_two_ranks_equal_one_process():
    # two threads stand in for two DDP ranks: each reads its strided shard, all_reduce sums over both
    import threading

    from torch.utils.data import DataLoader, Subset

    from trainables.protocol import gather_features

    trial = build_trial(resolve(tiny_config(epochs=1)), Runtime.local("cpu"))
    model, data = trial.model.eval(), trial.data.test
    barrier, slots = threading.Barrier(2, timeout=60), [None, None]  # a failing rank breaks it, no hang

    def make_all_reduce(rank):
        def all_reduce(t):
            slots[rank] = t.clone()
            barrier.wait()
            t.copy_(slots[0] + slots[1])
            barrier.wait()
            return t

        return all_reduce

    out = [None, None]

    def rank(r):
        shard = Subset(data, list(range(r, len(data), 2)))
        loader = DataLoader(shard, batch_size=7)  # a batch size that splits unevenly
        out[r] = gather_features(model, loader, len(data), trial.to_device, make_all_reduce(r))

    threads = [threading.Thread(target=rank, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    single = gather_features(model, DataLoader(data, batch_size=64), len(data), trial.to_device, lambda t: t)
    for feats, labels in out:
        assert torch.equal(labels, single[1])
        for m in ("pix", "fou"):
            torch.testing.assert_close(feats[m], single[0][m], rtol=0, atol=1e-6)
