import pytest
import torch

from trainables.errors import ConfigError
from trainables.models.classifier import ModelSpec, mask_inputs
from trainables.models.encoders import build_encoder
from trainables.models.fusion import build_fusion


def test_concat_modality_logits_are_weight_slices_with_shared_bias():
    torch.manual_seed(0)
    head = build_fusion("concat", {"a": 3, "b": 2}, 4)
    fa, fb = torch.randn(5, 3), torch.randn(5, 2)
    fused, per = head({"a": fa, "b": fb})
    w, b = head.fc.weight, head.fc.bias
    assert torch.allclose(per["a"], fa @ w[:, :3].T + b / 2)
    assert torch.allclose(per["b"], fb @ w[:, 3:].T + b / 2)
    assert torch.allclose(per["a"] + per["b"], fused, atol=1e-6)  # slices add up to the fused logits


def test_sum_modality_logits_are_branches():
    head = build_fusion("sum", {"a": 3, "b": 2}, 4)
    fa, fb = torch.randn(5, 3), torch.randn(5, 2)
    fused, per = head({"a": fa, "b": fb})
    assert torch.allclose(per["a"], head.branches["a"](fa))
    assert torch.allclose(fused, per["a"] + per["b"])


@pytest.mark.parametrize("kind", ["film", "gated"])
def test_two_modality_heads_zero_the_other_features(kind):
    head = build_fusion(kind, {"a": 3, "b": 2}, 4)
    fa, fb = torch.randn(5, 3), torch.randn(5, 2)
    fused, per = head({"a": fa, "b": fb})
    assert fused.shape == (5, 4)
    assert torch.allclose(per["a"], head.fuse({"a": fa, "b": torch.zeros_like(fb)}))
    with pytest.raises(ConfigError):
        build_fusion(kind, {"a": 3, "b": 2, "c": 1}, 4)


@pytest.mark.parametrize(
    "shape,x",
    [
        ((1, 32, 24), torch.randn(2, 1, 32, 24)),
        ((2, 32, 32), torch.randn(2, 2, 32, 32)),
        ((3, 3, 32, 32), torch.randn(2, 3, 3, 32, 32)),
    ],
)
def test_resnet18_channels_and_frame_pooling(shape, x):
    enc = build_encoder("resnet18", shape, 512).eval()
    assert enc.net.conv1.in_channels == shape[-3]
    out = enc(x)
    assert out.shape == (2, 512)
    if x.dim() == 5:  # frames folded into the batch and mean-pooled
        per_frame = torch.stack([enc(x[:, t]) for t in range(x.shape[1])], 1).mean(1)
        assert torch.allclose(out, per_frame, atol=1e-5)


def test_classifier_output_and_zero_input_masking():
    spec = ModelSpec({"a": (1, 8, 8), "b": (5,)}, {"a": "cnn", "b": "mlp"}, 8, "concat", 3)
    model = spec.build()
    inputs = {"a": torch.randn(4, 1, 8, 8), "b": torch.randn(4, 5)}
    out = model(inputs)
    assert out.logits.shape == (4, 3) and set(out.modality_logits) == {"a", "b"} and out.features["a"].shape == (4, 8)
    masked = mask_inputs(inputs, ["a"])
    assert torch.equal(masked["a"], inputs["a"]) and not masked["b"].any()


def test_mlp_encoder_normalises_its_input():
    # issue 9, defect 5: an unnormalised input (log-STFT magnitudes) blew the mlp up under SGD
    torch.manual_seed(0)
    enc = build_encoder("mlp", (12,), 8).train()
    x = torch.randn(32, 12)
    assert torch.allclose(enc(x), enc(1000.0 * x + 50.0), atol=1e-4)  # batch statistics remove scale and offset


def test_mlp_on_large_inputs_learns_under_sgd():
    # the defect's setting in small: inputs of magnitude ~1e3, SGD lr 0.01; before normalisation the
    # first steps blew the ReLU layers up and the modality sat at chance (ln K) from then on
    torch.manual_seed(0)
    k, n, d = 4, 256, 20
    labels = torch.arange(n) % k
    x = 1000.0 * (torch.randn(n, d) + 3.0 * torch.nn.functional.one_hot(labels, d).float()) + 500.0
    model = torch.nn.Sequential(build_encoder("mlp", (d,), 16), torch.nn.Linear(16, k))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for _ in range(10):
        for i in range(0, n, 32):
            loss = torch.nn.functional.cross_entropy(model(x[i : i + 32]), labels[i : i + 32])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(x).argmax(1) == labels).float().mean().item()
    assert acc > 0.85  # 0.94; without the normalisation exactly 0.25 (chance), loss ln 4
