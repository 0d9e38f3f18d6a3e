"""Throughput options of a trial that change no result beyond floating-point rounding.

* ``channels_last``: the model's 4-D weights and 4-D inputs in NHWC memory order (faster convolutions
  with cuDNN on tensor cores; harmless elsewhere).
* ``compile``: each encoder compiled in place with ``torch.compile`` (``nn.Module.compile``), so that
  parameter names, checkpoints and methods that call ``model.encoders[m]`` are unchanged. The value is
  the backend: ``inductor`` (the fast one; needs a C++ compiler on CPU), ``aot_eager``/``eager``
  (for debugging a compile problem).
* ``loader.prefetch``: :class:`DevicePrefetcher` copies the next batch to the device while the current
  step runs: on CUDA on a side stream from pinned memory (the loader pins when the device is CUDA), so
  the copy overlaps compute; on CPU it only keeps one batch ahead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import nn


def prepare_model(model: nn.Module, channels_last: bool, compile_backend: str) -> nn.Module:
    """Apply ``channels_last`` and ``compile`` to ``model`` in place (see the module doc)."""
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if compile_backend != "off":
        for encoder in getattr(model, "encoders", {}).values():
            encoder.compile(backend=compile_backend)
    return model


def to_memory_format(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """``x`` in NHWC order when ``channels_last`` and ``x`` is a 4-D image batch."""
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


class DevicePrefetcher:
    """Iterates ``loader``, yielding batches already moved by ``to_device``, one batch ahead.

    On CUDA the copy of batch ``i + 1`` is issued on a side stream before batch ``i`` is yielded; the
    consumer's stream waits for that copy (an event, not a host sync) and the tensors are recorded on it
    so the caching allocator does not reuse their memory early.
    """

    def __init__(self, loader: Iterable, to_device: Callable[[Any], Any], device: torch.device) -> None:
        self.loader = loader
        self.to_device = to_device
        self.device = device
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def _issue(self, batch: Any) -> tuple[Any, Any]:
        if self.stream is None:
            return self.to_device(batch), None
        with torch.cuda.stream(self.stream):
            moved = self.to_device(batch)
            event = torch.cuda.Event()
            event.record(self.stream)
        return moved, event

    def _ready(self, moved: Any, event: Any) -> Any:
        if event is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_event(event)
            for t in _tensors(moved):
                if t.device.type == "cuda":
                    t.record_stream(current)
        return moved

    def __iter__(self) -> Iterator[Any]:
        it = iter(self.loader)
        try:
            pending = self._issue(next(it))
        except StopIteration:
            return
        for batch in it:
            ahead = self._issue(batch)
            yield self._ready(*pending)
            pending = ahead
        yield self._ready(*pending)


def _tensors(x: Any) -> Iterator[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        yield x
    elif isinstance(x, dict):
        for v in x.values():
            yield from _tensors(v)
    elif isinstance(x, list | tuple):
        for v in x:
            yield from _tensors(v)
