"""Every registered method on every dataset and ``data.profile`` the loaders read (issues 13 and 14).

``tests/test_methods_common.py`` runs each method on tiny mfeat only; a method must also train on the
synthetic data and on every real layout, whose inputs differ in kind (log-STFT and fbank spectrograms,
stacks of video frames ``[T, 3, H, W]``, optical-flow stacks ``[T, 2, H, W]``, single views), in
modality names (``audio``/``visual``, ``rgb``/``flow``, ``front``/``rear``, ``fast``/``slow``, ``pix``/``fou``),
in number (mfeat with three views: a method for two must generalise or refuse at build time, then skipped)
and in label spaces (Kinetics-Sounds has 31 classes and ModelNet40 40, most of them absent from a tiny
split). For each (method, profile) the trial is built as the loop builds it, two epochs of the method's
hooks and training steps run with every mechanism switched on (``ACTIVE``), and then:

* every step's loss (and every other step statistic named like a loss) is finite, so are the parameters,
  and every encoder the model has was updated;
* the model output (``method.predict``, what evaluation, the leaderboard and W&B read) has fused logits
  and one ``[B, C]`` finite logit tensor per modality the model encodes, and the model encodes every
  modality of the dataset (``unimodal`` aside, which encodes the one it is given);
* the test split's metrics under missing modalities carry the schema's names (``test/acc``,
  ``test/acc/<m>``, ``test/imbalance/*``, ``test/missing/<subset>/acc``).

Cost: each fixture is written once per session (tiny images: ``image_size`` 16, the smallest allowed;
spectrograms cut to 16 time frames; 2-3 clips per class), batches of 3, and the real datasets' ResNet-18
encoders replaced by the small CNN (``model.encoders``); ``test_joint_with_the_reference_encoders``
trains each real profile once with the ResNet-18 encoders its dataset asks for.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fixtures_data import (
    build_ave,
    build_cremad_mla,
    build_cremad_ogm,
    build_kinetics_sounds,
    build_modelnet40,
    build_ucf101,
)
from PIL import Image

from orchestrator.cli import main
from trainables.config import resolve
from trainables.errors import ConfigError
from trainables.evaluate import evaluate
from trainables.loop import BestState, _restart_from_best, _set_epoch_samples, _step_schedulers, build_trial
from trainables.methods import METHODS
from trainables.methods.base import StepState
from trainables.metrics import modality_subsets, subset_key
from trainables.runtime import Runtime

EPOCHS = 2
# Params that switch every mechanism on within EPOCHS epochs (warm-ups, stage switches, re-initialisations
# and re-weighting periods shortened); the others run at their defaults.
ACTIVE: dict[str, dict[str, Any]] = {
    "opm": {"warmup_epochs": 0, "ogm": True},
    "dmrnet": {"weak_epochs": 1},
    "greedy": {"start_epoch": 0, "alpha": 0.0},
    "di_mml": {"duc_start": 0, "stage2_epochs": 1},
    "gblending": {"super_epoch": 1},
    "relearning": {"reinit_every": 1},
    "valuation": {"warmup_epochs": 1},
    "umt": {"teacher_epochs": 1},
}
# Methods whose model encodes only some of the dataset's modalities, and why.
SUBSET_MODELS = {"unimodal": "trains the one modality it is given (params.modality)"}

TINY_MFEAT = {"train_per_class": 1, "val_per_class": 1, "test_per_class": 1}
SMALL_AUDIO = {"audio_frames": 16}  # spectrogram time frames after cutting (the features' bins are fixed)


def textured(make: Callable[[Path], Any]) -> Callable[[Path], None]:
    """``make``, then a seeded random texture on every image it wrote: the fixtures' flat frames are the same
    in every clip, and a batch of identical inputs has no variance for BatchNorm (ResNet-18 then diverges)."""

    def build(root: Path) -> None:
        make(root)
        for k, path in enumerate(sorted(p for p in root.rglob("*") if p.suffix in (".jpg", ".png"))):
            with Image.open(path) as im:
                a, mode = np.asarray(im, dtype=np.int16), im.mode
            noise = np.random.default_rng(k).integers(-60, 60, a.shape)
            Image.fromarray(np.clip(a + noise, 0, 255).astype(np.uint8), mode).save(path, quality=95)

    return build


def _prepared(root: Path) -> None:
    """CREMA-D in the PMR layout, run through `mmbal prepare` (frames stored at 16 x 16)."""
    textured(lambda r: build_cremad_ogm(r, train=2, frames=3, layout="pmr"))(root / "raw")
    args = ["prepare", "cremad", "--raw", str(root / "raw"), "--profile", "pmr", "--out", str(root / "out")]
    assert main([*args, "--workers", "1", "--size", "16", "--set", "data.audio_frames=16"]) == 0


# profile id -> (dataset, data params, fixture builder writing the data root, data root under it)
PROFILES: dict[str, tuple[str, dict[str, Any], Callable[[Path], Any] | None, str]] = {
    "synthetic": ("synthetic", {"train_per_class": 3, "val_per_class": 2, "test_per_class": 2}, None, ""),
    "mfeat": ("mfeat", TINY_MFEAT, None, ""),
    # three modalities: a method written for two must generalise, or refuse at build time naming the count
    "mfeat-3views": ("mfeat", {"modalities": ["pix", "fou", "kar"], **TINY_MFEAT}, None, ""),
    "cremad-ogm_ge": (
        "cremad",
        {"profile": "ogm_ge", "audio_rate": 1000, "audio_seconds": 0.5, "n_fft": 32, "hop": 32},
        lambda r: build_cremad_ogm(r, train=2, frames=1, seconds=0.5),
        "",
    ),
    "cremad-mla": ("cremad", {"profile": "mla", **SMALL_AUDIO}, lambda r: build_cremad_mla(r, train=2, frames=3), ""),
    # "dimml" is the same layout and loaders under PMR's other name (cremad.PROFILES["dimml"] is PROFILES["pmr"])
    "cremad-pmr": (
        "cremad",
        {"profile": "pmr", **SMALL_AUDIO},
        lambda r: build_cremad_ogm(r, train=2, frames=3, layout="pmr"),
        "",
    ),
    "cremad-prepared": ("cremad", {"profile": "prepared"}, _prepared, "out"),
    "kinetics_sounds-ogm_ge": (
        "kinetics_sounds",
        {"profile": "ogm_ge", **SMALL_AUDIO},
        lambda r: build_kinetics_sounds(r, "ogm_ge", train=3),
        "",
    ),
    "kinetics_sounds-balancebench": (
        "kinetics_sounds",
        {"profile": "balancebench", **SMALL_AUDIO},
        lambda r: build_kinetics_sounds(r, "balancebench", train=3),
        "",
    ),
    "ave-dimml": ("ave", {"profile": "dimml", **SMALL_AUDIO, "num_frames": 2}, lambda r: build_ave(r, per=1), ""),
    "ucf101-dimml": (
        "ucf101",
        {"profile": "dimml", "flow_frames": 2},
        lambda r: build_ucf101(r, train=3, frames=4),
        "",
    ),
    "modelnet40-dimml": ("modelnet40", {"profile": "dimml"}, lambda r: build_modelnet40(r, train=3), ""),
}
REAL = [p for p, (_, _, make, _) in PROFILES.items() if make is not None]


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Callable[[str], str | None]:
    """Profile id -> its data root, each fixture written once per session, on first use."""
    base = tmp_path_factory.mktemp("every_dataset")
    built: dict[str, str | None] = {}

    def root_of(profile: str) -> str | None:
        if profile not in built:
            _, _, make, sub = PROFILES[profile]
            if make is None:
                built[profile] = None
            else:
                (make if profile == "cremad-prepared" else textured(make))(base / profile)
                built[profile] = str(base / profile / sub)
        return built[profile]

    return root_of


def config(method: str, profile: str, root: str | None, reference_encoders: bool = False, **extra) -> dict:
    dataset, data, _, _ = PROFILES[profile]
    real = root is not None
    cfg: dict[str, Any] = {
        "method": method,
        "dataset": dataset,
        "epochs": EPOCHS,
        "seed": 0,
        "data": {**data, **({"image_size": 16} if real else {})},
        "loader": {"batch_size": 3, "eval_batch_size": 8},
        "model": {"feature_dim": 16},
        "params": ACTIVE.get(method, {}),
        **({"data_root": root} if real else {}),
        **extra,
    }
    if real and not reference_encoders:
        cfg["model"]["encoders"] = {m: "cnn" for m in _modalities(dataset)}
    return cfg


def _modalities(dataset: str) -> tuple[str, ...]:
    return {"ucf101": ("rgb", "flow"), "modelnet40": ("front", "rear")}.get(dataset, ("audio", "visual"))


def train_and_check(cfg: dict) -> None:
    """Two epochs of hooks and steps as the loop runs them, then the output and metric checks."""
    try:
        trial = build_trial(resolve(cfg), Runtime.local("cpu"))
    except ConfigError as exc:
        if len(cfg["data"].get("modalities", ())) > 2 and "modalities" in str(exc):
            pytest.skip(f"refuses more than two modalities: {exc}")
        raise
    method, model, name = trial.method, trial.model, cfg["method"]
    best = BestState()
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    losses: dict[str, list[torch.Tensor]] = {}  # every step statistic named like a loss (the divergence check's)
    for epoch in range(EPOCHS):
        trial.train_loader.sampler.set_epoch(epoch)
        trial.train_loader.sampler.set_indices(None)
        if method.restart_from_best(epoch) and best.model is not None:
            _restart_from_best(trial, best)
        method.on_epoch_start(model, trial.epoch_context(epoch))
        _set_epoch_samples(trial, epoch)
        model.train()
        n = len(trial.train_loader)
        for i, batch in enumerate(trial.train_loader):
            out = method.training_step(model, trial.to_device(batch), trial.optimizers, StepState(epoch, i, n, i))
            for key, value in out.items():
                if "loss" in key:
                    losses.setdefault(key, []).append(torch.as_tensor(value).detach())
        method.on_epoch_end(model, trial.epoch_context(epoch))
        _step_schedulers(trial, {}, epoch)
        best = BestState(epoch + 1, 0.0, {}, model.state_dict(), method.state_dict())
    assert losses.get("loss"), "no training step ran"
    for key, values in losses.items():
        assert all(torch.isfinite(v).all() for v in values), f"{name}: {key} {[v.tolist() for v in values]}"
    assert all(torch.isfinite(p).all() for p in model.parameters()), f"{name}: a parameter is not finite"

    modalities, k = trial.modalities, trial.data.num_classes
    encoded = list(model.modalities)
    if name in SUBSET_MODELS:
        assert encoded and set(encoded) <= set(modalities), encoded
    else:
        assert encoded == modalities, f"{name} encodes {encoded}, the dataset has {modalities}"
    moved = {k for k, p in model.named_parameters() if not torch.equal(p.detach(), before[k])}
    for m in encoded:  # each encoder trained (a re-initialisation would move it too; the other checks stand)
        assert any(k.startswith(f"encoders.{m}.") for k in moved), f"{name}: the encoder of {m} never moved"
    batch = trial.to_device(next(iter(trial.test_loader)))
    b = len(batch["label"])
    model.eval()
    with torch.no_grad():
        outputs = {"all present": method.predict(model, batch["inputs"])}
        for m in modalities:
            outputs[f"only {m}"] = method.predict(model, batch["inputs"], present=[m])
    for case, out in outputs.items():
        assert out.logits.shape == (b, k) and torch.isfinite(out.logits).all(), case
        if case == "all present":
            got = sorted(out.modality_logits)
            assert got == sorted(encoded), f"{name}: modality_logits {got}, the model encodes {encoded}"
            for m, logit in out.modality_logits.items():
                assert logit.shape == (b, k), f"{name}: modality_logits[{m}] {tuple(logit.shape)}, want {(b, k)}"
                assert torch.isfinite(logit).all(), f"{name}: modality_logits[{m}] not finite"

    metrics = evaluate(method, model, trial.test_loader, "test", modalities, k, trial.to_device, lambda t: t, True)
    keys = ["test/acc", "test/f1", "test/loss"]
    keys += [f"test/{s}/{m}" for s in ("acc", "score") for m in encoded]
    keys += [f"test/missing/{subset_key(s)}/acc" for s in modality_subsets(modalities) if len(s) < len(modalities)]
    if len(encoded) > 1:
        keys += ["test/imbalance/score_ratio", "test/imbalance/acc_gap", "test/imbalance/dominant"]
    missing = [key for key in keys if key not in metrics]
    assert not missing, f"{name}: {missing} not reported; got {sorted(metrics)}"
    for key in keys:
        value = metrics[key]
        if "/acc" in key and not key.endswith("acc_gap"):
            assert 0.0 <= value <= 1.0, (key, value)
    assert math.isfinite(metrics["test/loss"]), metrics["test/loss"]
    for m in set(modalities) - set(encoded):  # nothing made up for a modality the model never sees
        assert f"test/acc/{m}" not in metrics


@pytest.mark.parametrize("profile", list(PROFILES))
@pytest.mark.parametrize("name", METHODS.names())
def test_method_trains_and_reports_on_the_profile(data_root, name, profile):
    train_and_check(config(name, profile, data_root(profile)))


@pytest.mark.parametrize("profile", REAL)
def test_joint_with_the_reference_encoders(data_root, profile):
    """The real datasets' own encoders (ResNet-18 on every modality) on the smallest inputs."""
    train_and_check(config("joint", profile, data_root(profile), reference_encoders=True))
