"""The balancing-method plugin: a method owns how one training step is taken.

The loop owns epochs, data, evaluation, metrics, checkpoints and reporting; a method owns only what
makes it different. Subclass :class:`BalancingMethod`, give it a frozen ``Params`` dataclass
(fields made with :func:`trainables.params.knob`) and register it with ``@register_method("name")``
in its own module under ``trainables/methods/`` (the key is the file stem and the YAML ``method:``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.data import DataLoader

from trainables.errors import ConfigError
from trainables.models.classifier import ModelSpec, mask_inputs
from trainables.models.output import ModelOutput, MultimodalModel
from trainables.params import NoParams
from trainables.registry import Registry

METHODS: Registry[type[BalancingMethod]] = Registry("method")
register_method = METHODS.register

Batch = dict[str, Any]  # {"inputs": {modality: Tensor}, "label": Tensor, "index": Tensor, "draw": Tensor}
Optimizers = dict[str, torch.optim.Optimizer]
MakeOptimizer = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
# What a training step returns: scalars to average over the epoch. Tensors (detached, on the device)
# are summed on the device and read once per epoch, so a step never waits for the GPU; floats work too.
StepStats = dict[str, torch.Tensor | float]

# Missing-modality schemes (how a method evaluates with some modalities absent); a method names its
# own in ``BalancingMethod.missing_scheme`` and the summary records it as ``eval/missing_scheme``.
MISSING_SCHEMES = {
    "zero-input": "the absent modalities' inputs are zeroed and the model runs as usual",
    "zero-feature": "the absent modalities' encoder features are zeroed before the head",
    "drop-head": "the absent modalities' inputs are zeroed and their heads leave the test-time fusion",
    "mean-feature": "the absent modalities' features are their training mean; their heads leave the test-time fusion",
}


@dataclass(frozen=True)
class MethodContext:
    """What a method may know about the trial when it is built.

    Attributes:
        modalities: modality names in dataset order.
        num_classes: number of classes.
        epochs: total number of training epochs of the trial.
        device: torch device the trial runs on.
        seed: trial seed.
        all_reduce: sums a tensor over DDP ranks in place; ``None`` on one process. For statistics a
            step builds from its batch that must be the same on every rank (MLA's and MIE's
            projectors); see ``trainables.runtime.pooled_mean`` / ``sum_over_ranks``.
    """

    modalities: list[str]
    num_classes: int
    epochs: int
    device: torch.device
    seed: int = 0
    all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None


@dataclass
class StepState:
    """Where in training a step happens.

    Attributes:
        epoch: 0-based epoch.
        batch_idx: 0-based index of the batch inside the epoch.
        batches_per_epoch: number of training batches per epoch (on this rank).
        global_step: batches seen since the start of training.
    """

    epoch: int
    batch_idx: int
    batches_per_epoch: int
    global_step: int


@dataclass
class EpochContext:
    """Given to the epoch hooks: statistics passes over the training data happen here.

    Attributes:
        epoch: 0-based epoch about to start / just finished.
        train_loader: the training DataLoader (this rank's shard under DDP).
        device: torch device.
        to_device: moves a collated batch onto ``device``.
        all_reduce: sums a tensor over DDP ranks in place (identity on one process).
        train_subset: ``indices -> DataLoader``: an unshuffled pass over those training samples (this
            rank's share under DDP; combine ranks with ``all_reduce``), e.g. a held-out part of train or
            every training sample once whatever ``train_indices`` chose for the epoch.
    """

    epoch: int
    train_loader: DataLoader
    device: torch.device
    to_device: Callable[[Batch], Batch]
    all_reduce: Callable[[torch.Tensor], torch.Tensor] = field(default=lambda t: t)
    train_subset: Callable[[Sequence[int]], DataLoader] | None = None


class BalancingMethod:
    """Base class of all balancing methods; every hook but ``training_step`` has a default."""

    Params: ClassVar[type] = NoParams
    name: ClassVar[str] = ""
    # A parameter whose values are different models rather than hyperparameters of one (``unimodal``'s
    # ``modality``): reports show each value as its own row, ``name:value``, instead of picking one.
    variant_param: ClassVar[str | None] = None
    # How absent modalities are handled in missing-modality evaluation (a key of ``MISSING_SCHEMES``).
    missing_scheme: ClassVar[str] = "zero-input"
    # Fewest modalities the method makes sense with (a balancing method needs two to balance).
    min_modalities: ClassVar[int] = 1

    def __init__(self, params: Any, ctx: MethodContext) -> None:
        if len(ctx.modalities) < self.min_modalities:
            raise ConfigError("method", f"{self.name} needs at least {self.min_modalities} modalities")
        self.params = params
        self.ctx = ctx

    # --- model and optimisation -------------------------------------------------------------
    def build_model(self, spec: ModelSpec) -> MultimodalModel:
        """Build the model; the default is the standard ``MultimodalClassifier``."""
        return spec.build()

    def configure_optimizers(self, model: MultimodalModel, make_optimizer: MakeOptimizer) -> Optimizers:
        """Name -> optimizer; the loop gives each one the configured LR schedule."""
        return {"main": make_optimizer(model.parameters())}

    def schedule_windows(self) -> dict[str, tuple[int, int]]:
        """Optimizer name -> ``(first_epoch, epochs)``: the epochs its LR schedule runs over.

        Called after :meth:`configure_optimizers`. The loop builds that optimizer's schedule for
        ``epochs`` epochs and steps it only after epochs ``first_epoch .. first_epoch + epochs - 1``
        (0-based), so before its window the optimizer sits at its initial LR and its schedule starts
        fresh at ``first_epoch`` (a stage that begins mid-run, e.g. DI-MML's stage 2). Optimizers not
        named here are scheduled over the whole trial (the default).
        """
        return {}

    def training_step(
        self, model: MultimodalModel, batch: Batch, optimizers: Optimizers, state: StepState
    ) -> StepStats:
        """Take one optimisation step on ``batch``; return scalars to average over the epoch.

        ``loss`` is reported as ``train/loss``; other keys are reported under ``train/`` and
        should be namespaced ``<method>/...`` (e.g. ``ogm_ge/coeff/audio``). Return detached
        tensors (``loss.detach()``) rather than ``.item()``: the loop reads them once per epoch.
        """
        raise NotImplementedError

    # --- inference ---------------------------------------------------------------------------
    def predict(
        self, model: MultimodalModel, inputs: dict[str, torch.Tensor], present: Collection[str] | None = None
    ) -> ModelOutput:
        """Fused and per-modality logits for evaluation.

        Args:
            present: modalities available, handled by the method's ``missing_scheme``: ``zero-input``
                (the default: the others' inputs are zeroed), ``zero-feature`` (the others' encoder
                features are zeroed before the head) and ``drop-head`` (the others' inputs are zeroed
                and :meth:`fuse_heads` fuses the present modalities' heads) are handled here. ``None``
                means all present.
        """
        if self.missing_scheme == "zero-feature":
            return predict_zero_feature(model, inputs, self.present_modalities(present))
        if present is not None:
            inputs = mask_inputs(inputs, present)
        out = model(inputs)
        if self.missing_scheme == "drop-head":
            out.logits = self.fuse_heads({m: out.modality_logits[m] for m in self.present_modalities(present)}, out)
        return out

    def fuse_heads(self, heads: dict[str, torch.Tensor], out: ModelOutput) -> torch.Tensor:
        """``drop-head`` methods: the test-time prediction from the present modalities' logits ``heads``
        (dataset order; empty when none is present) and the model's full output ``out`` (its inputs
        already zeroed for the absent modalities). Used for every evaluation, all modalities present or not.
        """
        raise NotImplementedError(f"{self.name}: a drop-head method defines fuse_heads")

    def present_modalities(self, present: Collection[str] | None) -> list[str]:
        """The trial's modalities that are present, in dataset order (all of them for ``None``)."""
        return [m for m in self.ctx.modalities if present is None or m in present]

    # --- hooks --------------------------------------------------------------------------------
    def restart_from_best(self, epoch: int) -> bool:
        """Whether epoch ``epoch`` starts a new stage of training from the best-validation model.

        ``True``: before :meth:`on_epoch_start` of that epoch the loop puts the best-validation
        weights (selected on ``eval.select_metric``, as for the test) back into the model and clears
        every optimizer's state (momentum, Adam moments), as a fresh optimizer would start; the LR
        schedules and the method's own state are kept. Nothing happens while no epoch has been
        validated yet. Default ``False``. Keep it a pure function of ``epoch`` and the params.
        """
        return False

    def on_epoch_start(self, model: MultimodalModel, ctx: EpochContext) -> dict[str, float]:
        """Called before each training epoch (stage switches, statistics passes)."""
        return {}

    def train_indices(self, epoch: int, num_samples: int) -> list[int] | None:
        """The training samples epoch ``epoch`` visits (indices into the train split, repeats allowed).

        Called after :meth:`on_epoch_start`. ``None`` (the default) visits every sample once. The
        loop shuffles the list by ``(seed, epoch)`` and shards it over DDP ranks; ``batch["index"]``
        tells a step which samples it got. Use it to hold samples out of training (a held-out part of
        train) or to re-sample (repeat) some of them; keep the result a pure function of the method's
        checkpointed state so a resumed run visits the same samples. ``batch["draw"]`` is a sample's
        position in the returned list (its index when the list is ``None``), which tells repeated
        copies of one sample apart (e.g. a copy meant to train one modality alone).
        """
        return None

    def on_epoch_end(self, model: MultimodalModel, ctx: EpochContext) -> dict[str, float]:
        """Called after each training epoch; returned scalars are reported under ``train/``."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Method state that must survive a checkpoint/resume (tensors, counters)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


def predict_zero_feature(model: MultimodalModel, inputs: dict[str, torch.Tensor], keep: Collection[str]) -> ModelOutput:
    """The standard model's outputs with the features of modalities not in ``keep`` zeroed before the head."""
    feats = model.encode(inputs)
    feats = {m: f if m in keep else torch.zeros_like(f) for m, f in feats.items()}
    fused, per = model.head(feats)
    return ModelOutput(fused, per, feats)


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(logits, labels)


def backward_and_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """``zero_grad`` -> ``loss.backward()`` -> ``optimizer.step()``: the plain step most methods take."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def gradients_or_zeros(
    loss: torch.Tensor, params: Sequence[nn.Parameter], retain_graph: bool = False
) -> list[torch.Tensor]:
    """``d loss / d p`` for each of ``params`` (``torch.autograd.grad``, nothing accumulated in ``.grad``),
    zeros where the loss does not reach ``p``."""
    grads = torch.autograd.grad(loss, list(params), retain_graph=retain_graph, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]
