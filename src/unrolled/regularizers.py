"""Weight penalties added to the training loss, as Keras's `kernel_regularizer=` etc.

A regularizer maps a weight array `w` to a scalar penalty; training adds every layer's penalties
to the loss, so the reported loss includes them (as in Keras), and adds their gradients to the
weights' gradients::

    L1(l1):        penalty = l1 * sum(|w|)          gradient = l1 * sign(w)  (+l1 at w = 0)
    L2(l2):        penalty = l2 * sum(w^2)          gradient = 2 * l2 * w
    L1L2(l1, l2):  both terms

Keras's defaults: `L1()` and `L2()` use 0.01; `L1L2()` uses 0 for both. Layers accept a
regularizer object, a name ("l1", "l2", "l1_l2") or a Keras config dict.

Example:
    >>> import numpy as np
    >>> from unrolled import regularizers
    >>> w = np.array([1.0, -2.0])
    >>> float(regularizers.L2(0.1)(w)), regularizers.L2(0.1).gradient(w)
    (0.5, array([ 0.2, -0.4]))
"""

from __future__ import annotations

from typing import Any

import numpy as np

from unrolled import _checks

__all__ = ["Regularizer", "L1", "L2", "L1L2", "get", "serialize"]


class Regularizer:
    """Base class: `__call__(w) -> penalty` and `gradient(w) -> d penalty / d w`."""

    def __call__(self, w: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def gradient(self, w: np.ndarray) -> np.ndarray:
        raise NotImplementedError(
            f"{type(self).__name__} has no gradient(w); add one returning d penalty / d w to "
            f"train with it."
        )

    def get_config(self) -> dict:
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v:g}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class L1L2(Regularizer):
    """`l1 * sum(|w|) + l2 * sum(w^2)`."""

    def __init__(self, l1: float = 0.0, l2: float = 0.0):
        for name, value in (("l1", l1), ("l2", l2)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{type(self).__name__}: `{name}` must be a non-negative number, "
                                 f"got {value!r}.")
        self.l1 = float(l1)
        self.l2 = float(l2)

    def __call__(self, w: np.ndarray) -> np.ndarray:
        w = np.asarray(w)
        f = w.dtype.type
        penalty = f(0)
        if self.l1:
            penalty = penalty + f(self.l1) * np.sum(np.abs(w))
        if self.l2:
            penalty = penalty + f(self.l2) * np.sum(np.square(w))
        return f(penalty)

    def gradient(self, w: np.ndarray) -> np.ndarray:
        w = np.asarray(w)
        f = w.dtype.type
        # |w| has no slope at 0; like JAX (Keras's reference backend) take +1 there, so a
        # zero-initialised bias under L1 moves exactly as it does in Keras.
        sign = np.where(w >= 0, f(1), f(-1))
        return f(self.l1) * sign + f(2 * self.l2) * w

    def get_config(self) -> dict:
        return {"l1": self.l1, "l2": self.l2}


class L1(L1L2):
    """`l1 * sum(|w|)`; default l1=0.01."""

    def __init__(self, l1: float = 0.01):
        super().__init__(l1=l1)

    def get_config(self) -> dict:
        return {"l1": self.l1}


class L2(L1L2):
    """`l2 * sum(w^2)`; default l2=0.01."""

    def __init__(self, l2: float = 0.01):
        super().__init__(l2=l2)

    def get_config(self) -> dict:
        return {"l2": self.l2}


_BY_NAME = {"l1": L1, "l2": L2, "l1_l2": L1L2, "l1l2": L1L2, "L1": L1, "L2": L2, "L1L2": L1L2}


def serialize(regularizer: Regularizer | None) -> Any:
    if regularizer is None:
        return None
    return {"class_name": type(regularizer).__name__, "config": regularizer.get_config()}


def get(identifier: Any, argument: str = "regularizer") -> Regularizer | None:
    """A regularizer from None, a name ("l2"), a config dict, or an instance/callable."""
    if identifier is None or isinstance(identifier, Regularizer):
        return identifier
    if isinstance(identifier, str):
        if identifier not in _BY_NAME:
            raise ValueError(f"`{argument}`: unknown regularizer {identifier!r}."
                             f"{_checks.closest(identifier, _BY_NAME)} Known: 'l1', 'l2', 'l1_l2'.")
        return _BY_NAME[identifier]()
    if isinstance(identifier, dict):
        name = identifier.get("class_name")
        if name not in _BY_NAME:
            raise ValueError(f"`{argument}`: unknown regularizer class {name!r}.")
        return _BY_NAME[name](**identifier.get("config", {}))
    if callable(identifier):
        return identifier
    raise TypeError(f"`{argument}` must be None, a name like 'l2', a config dict or a "
                    f"Regularizer, got {identifier!r}.")
