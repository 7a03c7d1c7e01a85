"""Derivatives of the activation functions, for backpropagation.

`activation_vjp(act, z, y, d_y)` turns the gradient with respect to an activation's output
`y = act(z)` into the gradient with respect to its input `z`. For the element-wise activations
that is `d_z = d_y * act'(z)`, and `act'` is written in whichever of `z` or `y` is simpler
(`tanh' = 1 - y^2`, `sigmoid' = y (1 - y)`); softmax mixes the elements and needs the full
vector-Jacobian product.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from unrolled import activations

__all__ = ["activation_vjp"]


def _sig(z: np.ndarray) -> np.ndarray:
    return activations.sigmoid(z)


_ELEMENTWISE: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "linear": lambda z, y: np.ones_like(z),
    "tanh": lambda z, y: 1 - y * y,
    "sigmoid": lambda z, y: y * (1 - y),
    "relu": lambda z, y: (z > 0).astype(z.dtype),
    "relu6": lambda z, y: ((z > 0) & (z < 6)).astype(z.dtype),
    "leaky_relu": lambda z, y: np.where(z >= 0, 1, 0.2).astype(z.dtype),
    "elu": lambda z, y: np.where(z > 0, 1, y + 1).astype(z.dtype),
    "selu": lambda z, y: np.where(z > 0, 1.0507009873554805,
                                  1.0507009873554805 * 1.6732632423543772 * np.exp(np.minimum(z, 0))
                                  ).astype(z.dtype),
    "hard_sigmoid": lambda z, y: np.where((z > -3) & (z < 3), 1 / 6, 0).astype(z.dtype),
    "hard_tanh": lambda z, y: ((z > -1) & (z < 1)).astype(z.dtype),
    "softplus": lambda z, y: _sig(z),
    "softsign": lambda z, y: 1 / np.square(1 + np.abs(z)),
    "exponential": lambda z, y: y,
    "silu": lambda z, y: _sig(z) * (1 + z * (1 - _sig(z))),
}


def activation_vjp(act: Callable, z: np.ndarray, y: np.ndarray, d_y: np.ndarray) -> np.ndarray:
    """`d_z` from `d_y` for `y = act(z)`.

    Raises:
        NotImplementedError: for an activation without a derivative here (say which, and how to
            add one: `derivatives._ELEMENTWISE[name] = lambda z, y: ...`).
    """
    name = activations.serialize(act)
    if name == "softmax":
        return y * (d_y - np.sum(d_y * y, axis=-1, keepdims=True))
    if name == "log_softmax":
        return d_y - np.exp(y) * np.sum(d_y, axis=-1, keepdims=True)
    derivative = _ELEMENTWISE.get(name)
    if derivative is None:
        raise NotImplementedError(
            f"No derivative for the activation {name!r}, so it cannot be trained through. Known: "
            f"{sorted(_ELEMENTWISE) + ['softmax', 'log_softmax']}. Add one with "
            f"unrolled.training.derivatives._ELEMENTWISE[{name!r}] = lambda z, y: <d act/dz>."
        )
    return d_y * derivative(z, y)
