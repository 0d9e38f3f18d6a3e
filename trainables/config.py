"""The trial config: one frozen dataclass tree, validated from a plain dict (YAML or ``--set``).

``resolve(raw)`` checks every key (the fixed sections here, ``params.*`` against the method's
``Params`` and ``data.*`` against the dataset's) and returns a :class:`Resolved` config. Errors are
:class:`ConfigError` lines naming the dotted key and what is allowed.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Any, Literal

import yaml

from trainables.data import DATASETS
from trainables.errors import ConfigError
from trainables.methods import METHODS
from trainables.models.encoders import ENCODERS
from trainables.models.fusion import FUSIONS
from trainables.params import build_params, knob


@dataclass(frozen=True)
class OptimConfig:
    name: Literal["sgd", "adam", "adamw"] = knob("sgd", "optimizer")
    lr: float = knob(0.01, "learning rate", gt=0)
    momentum: float = knob(0.9, "SGD momentum (ignored by Adam/AdamW)", ge=0, lt=1)
    weight_decay: float = knob(1e-4, "weight decay (decoupled for AdamW)", ge=0)


@dataclass(frozen=True)
class SchedConfig:
    name: Literal["none", "step", "cosine"] = knob("none", "LR schedule, stepped once per epoch")
    step_size: int = knob(70, "StepLR: epochs between decays", ge=1)
    gamma: float = knob(0.1, "StepLR: decay factor", gt=0, le=1)
    min_lr: float = knob(0.0, "cosine: final learning rate", ge=0)


@dataclass(frozen=True)
class LoaderConfig:
    batch_size: int = knob(64, "training batch size (per worker under DDP)", ge=1)
    eval_batch_size: int = knob(256, "evaluation batch size", ge=1)
    num_workers: int = knob(0, "DataLoader worker processes", ge=0)
    prefetch: bool = knob(False, "copy the next batch to the device during the current step (CUDA: side stream)")


@dataclass(frozen=True)
class ModelConfig:
    fusion: str = knob("concat", "fusion head: concat, sum, film, gated")
    feature_dim: int = knob(64, "feature size of MLP/CNN encoders (ResNet-18 gives 512)", ge=1)
    encoders: dict[str, str] = knob({}, "per-modality encoder override, e.g. {pix: mlp}; default from the dataset")

    def __post_init__(self) -> None:
        FUSIONS.get(self.fusion, key="fusion")
        for m, kind in self.encoders.items():
            ENCODERS.get(kind, key=f"encoders.{m}")


@dataclass(frozen=True)
class CheckpointConfig:
    every: int = knob(1, "checkpoint every N epochs (the last epoch always)", ge=1)
    keep: int = knob(2, "checkpoints kept on disk (>= 2 lets a corrupt latest one fall back)", ge=1)


@dataclass(frozen=True)
class EvalConfig:
    missing: bool = knob(True, "evaluate test accuracy for every non-empty subset of modalities")
    select_metric: str = knob("val/acc", "validation metric that picks the best epoch")
    select_mode: Literal["max", "min"] = knob("max", "whether larger or smaller select_metric is better")
    protocol: bool = knob(True, "after training: linear probe per encoder and Shapley values (trainables/protocol.py)")


@dataclass(frozen=True)
class DDPConfig:
    overlap: bool = knob(False, "average gradients while backward runs (bucketed async all-reduce); false: at the step")
    bucket_mb: float = knob(25.0, "overlap: size of a gradient bucket, MiB", gt=0)


@dataclass(frozen=True)
class TrainConfig:
    method: str = knob("joint", "balancing method (mmbal list methods)")
    dataset: str = knob("mfeat", "dataset (mmbal list datasets)")
    data_root: str | None = knob(None, "folder of a real dataset; embedded datasets need none")
    seed: int = knob(0, "seed of model init, data order and every random draw of the method", ge=0, lt=2**32)
    epochs: int = knob(30, "training epochs", ge=1)
    device: Literal["auto", "cpu", "cuda"] = knob("auto", "auto = cuda when available")
    precision: Literal["fp32", "bf16"] = knob("fp32", "bf16: bfloat16 autocast of training steps and evaluation")
    channels_last: bool = knob(False, "NHWC memory order for the model's 4-D weights and image inputs")
    compile: Literal["off", "inductor", "aot_eager", "eager"] = knob("off", "torch.compile each encoder (backend)")
    deterministic: bool = knob(True, "deterministic torch algorithms")
    params: dict[str, Any] = knob({}, "method parameters (mmbal list methods)")
    data: dict[str, Any] = knob({}, "dataset parameters (mmbal list datasets)")
    optim: OptimConfig = OptimConfig()
    sched: SchedConfig = SchedConfig()
    loader: LoaderConfig = LoaderConfig()
    model: ModelConfig = ModelConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    eval: EvalConfig = EvalConfig()
    ddp: DDPConfig = DDPConfig()


@dataclass(frozen=True)
class Resolved:
    """A validated trial config with the method's and dataset's params built."""

    train: TrainConfig
    method_params: Any
    data_params: Any

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self.train)
        d["params"] = asdict(self.method_params)
        d["data"] = asdict(self.data_params)
        return d


def resolve(raw: dict[str, Any]) -> Resolved:
    """Validate a raw config dict (missing keys take defaults)."""
    train = build_params(TrainConfig, raw)
    method_cls = METHODS.get(train.method, key="method")
    dataset_cls = DATASETS.get(train.dataset, key="dataset")
    method_params = build_params(method_cls.Params, train.params, "params.")
    data_params = build_params(dataset_cls.Params, train.data, "data.")
    if dataset_cls.needs_root and not train.data_root:
        raise ConfigError("data_root", f"dataset {train.dataset!r} is read from disk: give data_root (--data-root DIR)")
    return Resolved(train, method_params, data_params)


def parse_override(item: str) -> tuple[str, Any]:
    """``"optim.lr=0.1"`` -> ``("optim.lr", 0.1)``; the value is read as YAML (numbers, lists, bools)."""
    if "=" not in item:
        raise ConfigError(item, "an override must look like key=value, e.g. optim.lr=0.05")
    key, text = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(item, "an override must look like key=value, e.g. optim.lr=0.05")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    return key, value


def set_dotted(cfg: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """Return a copy of ``cfg`` with the dotted ``key`` set to ``value``."""
    out = copy.deepcopy(cfg)
    node = out
    parts = key.split(".")
    for p in parts[:-1]:
        if not isinstance(node.get(p, {}), dict):
            raise ConfigError(key, f"{p!r} is not a section")
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def apply_overrides(cfg: dict[str, Any], items: list[str]) -> dict[str, Any]:
    for item in items:
        cfg = set_dotted(cfg, *parse_override(item))
    return cfg
