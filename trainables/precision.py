"""Mixed precision: the trial's autocast and the fp32 islands a method keeps inside it.

``precision: bf16`` runs every training step and evaluation under ``torch.autocast`` with bfloat16 (on
CUDA and on CPU alike, so that CPU tests exercise it); weights, gradients and optimizer state stay fp32
and no loss scaling is needed (bfloat16 has fp32's exponent range).

Some method math must not run in bfloat16: a recursive projector update (MLA's OWM ``P``), a covariance
and its eigendecomposition (MIE's soft projector). Autocast casts even fp32 inputs of a matmul to
bfloat16, so such code opts out explicitly, with :func:`fp32` on a module-level math function
(inputs are cast to fp32 and autocast is off inside) or the :func:`full_precision` context.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any, TypeVar

import torch

DTYPES = {"fp32": None, "bf16": torch.bfloat16}
F = TypeVar("F", bound=Callable[..., Any])


def autocast(precision: str, device: torch.device) -> Any:
    """The context of a step at ``precision`` (``fp32``: none; ``bf16``: bfloat16 autocast on ``device``)."""
    dtype = DTYPES[precision]
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


@contextmanager
def full_precision() -> Iterator[None]:
    """Autocast off inside (CPU and CUDA): ops run in their inputs' dtype, so give them fp32 tensors."""
    with torch.autocast("cpu", enabled=False):
        if torch.cuda.is_available():
            with torch.autocast("cuda", enabled=False):
                yield
        else:
            yield


def fp32(fn: F) -> F:
    """Decorator: run ``fn`` with autocast off and its floating tensor arguments cast to fp32.

    Results are whatever ``fn`` returns (fp32 for fp32 math); cast back where a lower dtype is needed.
    """

    def cast(x: Any) -> Any:
        return x.float() if isinstance(x, torch.Tensor) and x.is_floating_point() else x

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with full_precision():
            return fn(*(cast(a) for a in args), **{k: cast(v) for k, v in kwargs.items()})

    return wrapper  # type: ignore[return-value]
