"""Activations applied in place, for the kernels' preallocated buffers.

Each entry computes the same function as its `unrolled.activations` counterpart, writing into the
array it is given instead of allocating a new one. An activation without an in-place form runs
as is and its result is copied back, so any activation works in a kernel.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from unrolled import activations

__all__ = ["in_place"]


def _tanh(a: np.ndarray) -> None:
    np.tanh(a, out=a)


def _sigmoid(a: np.ndarray) -> None:
    # 1 / (1 + exp(-a)); exp overflows to inf for a < -88 (float32), giving the exact limit 0.
    # The kernels run this inside np.errstate(over="ignore").
    np.negative(a, out=a)
    np.exp(a, out=a)
    a += 1
    np.reciprocal(a, out=a)


def _relu(a: np.ndarray) -> None:
    np.maximum(a, 0, out=a)


def _linear(a: np.ndarray) -> None:
    return None


_IN_PLACE: dict[Callable, Callable[[np.ndarray], None]] = {
    activations.tanh: _tanh,
    activations.sigmoid: _sigmoid,
    activations.relu: _relu,
    activations.linear: _linear,
}


def in_place(fn: Callable) -> Callable[[np.ndarray], None]:
    """A function that overwrites its argument `a` with `fn(a)`."""
    fast = _IN_PLACE.get(fn)
    if fast is not None:
        return fast

    def apply(a: np.ndarray) -> None:
        a[...] = fn(a)

    return apply
