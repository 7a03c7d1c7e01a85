"""Loss functions, exact to Keras 3, each with its gradient written next to it.

A loss has two parts, as in Keras:

1. a per-sample function that reduces the last axis, `values = fn(y_true, y_pred)`,
   `(batch, ..., classes) -> (batch, ...)` (mean squared error, crossentropy, ...);
2. a reduction: with the default "sum_over_batch_size",
   `loss = sum(values * sample_weight) / values.size` — note the division by the number of
   values, not by the sum of the weights.

Training needs `dL/dy_pred`; `Loss.value_and_grad(y_true, y_pred, sample_weight)` returns the loss
and that gradient, and each loss class writes its gradient (`grad`) right under its formula.

Example:
    >>> import numpy as np
    >>> from unrolled import losses
    >>> y_true = np.array([[0.0], [1.0]]); y_pred = np.array([[0.5], [0.5]])
    >>> float(losses.MeanSquaredError()(y_true, y_pred))
    0.25
    >>> loss, d_pred = losses.get("mse").value_and_grad(y_true, y_pred)
    >>> d_pred.ravel()                       # 2 (y_pred - y_true) / 2 values
    array([ 0.5, -0.5])
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from unrolled import _checks

__all__ = ["Loss", "MeanSquaredError", "MeanAbsoluteError", "Huber", "BinaryCrossentropy",
           "CategoricalCrossentropy", "SparseCategoricalCrossentropy", "get", "serialize",
           "mean_squared_error", "mean_absolute_error", "huber", "binary_crossentropy",
           "categorical_crossentropy", "sparse_categorical_crossentropy"]

EPSILON = 1e-7  # keras.config.epsilon(): probabilities are clipped into [EPSILON, 1 - EPSILON]
_REDUCTIONS = ("sum_over_batch_size", "sum", "mean", "mean_with_sample_weight", "none", None)


def squeeze_or_expand_to_same_rank(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keras's rank reconciliation: when ranks differ by one and the longer one ends in 1,
    `(batch,)` against `(batch, 1)` becomes `(batch, 1)` and `(batch, 1)`."""
    if a.ndim == b.ndim + 1 and a.shape[-1] == 1:
        return (a, b[..., None]) if b.ndim == 1 else (a[..., 0], b)
    if b.ndim == a.ndim + 1 and b.shape[-1] == 1:
        return (a[..., None], b) if a.ndim == 1 else (a, b[..., 0])
    return a, b


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(np.zeros_like(x), -x)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.exp(_log_sigmoid(x))


class Loss:
    """Base class. Subclasses define `fn(y_true, y_pred)` (per-sample values) and
    `grad(y_true, y_pred, d_values)` (its gradient with respect to `y_pred`).

    Args:
        name: the loss's name (shown in logs).
        reduction: "sum_over_batch_size" (default), "sum", "mean", "mean_with_sample_weight"
            (divide by the sum of the weights) or "none".
    """

    _default_name = "loss"

    def __init__(self, name: str | None = None, reduction: str | None = "sum_over_batch_size",
                 dtype: Any = None):
        if reduction not in _REDUCTIONS:
            raise ValueError(f"{type(self).__name__}: `reduction` must be one of "
                             f"{[r for r in _REDUCTIONS if r]} or None, got {reduction!r}.")
        self.name = name or self._default_name
        self.reduction = reduction
        self.dtype = dtype

    def fn(self, y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def grad(self, y_true: np.ndarray, y_pred: np.ndarray, d_values: np.ndarray) -> np.ndarray:
        raise NotImplementedError(
            f"{type(self).__name__} has no gradient: define grad(y_true, y_pred, d_values) "
            f"returning dL/dy_pred to train with it."
        )

    # ---------------------------------------------------------------- shared plumbing

    def _prepare(self, y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
        y_pred = np.asarray(y_pred)
        if y_pred.dtype.kind != "f":
            y_pred = y_pred.astype(self.dtype or "float32")
        y_true = np.asarray(y_true, dtype=y_pred.dtype)
        return self._align(y_true, y_pred)

    def _align(self, y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return squeeze_or_expand_to_same_rank(y_true, y_pred)

    def _weights(self, values: np.ndarray, sample_weight: Any, mask: Any) -> np.ndarray | None:
        """One weight per value: sample_weight broadcast, times the mask (scaled as Keras does)."""
        weight = None
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            valid = mask.sum()
            if self.reduction in ("mean", "sum_over_batch_size"):
                scale = mask.size / valid if valid else 0.0
                weight = np.where(mask, scale, 0.0).astype(values.dtype)
            else:
                weight = mask.astype(values.dtype)
        if sample_weight is not None:
            sw = np.asarray(sample_weight, dtype=values.dtype)
            if sw.ndim == values.ndim + 1 and sw.shape[-1] == 1:
                sw = sw[..., 0]                           # (batch, 1) weights for (batch,) values
            sw = sw.reshape(sw.shape + (1,) * (values.ndim - sw.ndim))  # (batch,) for (batch, T)
            weight = sw if weight is None else weight * sw
        if weight is None:
            return None
        return np.broadcast_to(weight, values.shape).astype(values.dtype)

    def _divisor(self, values: np.ndarray, weight: np.ndarray | None) -> Any:
        if self.reduction == "mean_with_sample_weight" and weight is not None:
            return weight.sum()
        return values.dtype.type(values.size)

    def __call__(self, y_true: Any, y_pred: Any, sample_weight: Any = None, mask: Any = None
                 ) -> np.ndarray:
        """The reduced loss (a scalar), or the per-sample values with reduction="none"."""
        y_true, y_pred = self._prepare(y_true, y_pred)
        values = self.fn(y_true, y_pred)                                  # (batch, ...)
        return self._reduce(values, self._weights(values, sample_weight, mask))

    def _reduce(self, values: np.ndarray, weight: np.ndarray | None) -> np.ndarray:
        """The per-sample `values` weighted and reduced as `reduction` says."""
        if weight is not None:
            values = values * weight
        if self.reduction in ("none", None) or values.ndim == 0:
            return values
        total = values.sum()
        if self.reduction == "sum":
            return total
        divisor = self._divisor(values, weight)
        return values.dtype.type(total / divisor) if divisor else values.dtype.type(0)

    def value_and_grad(self, y_true: Any, y_pred: Any, sample_weight: Any = None,
                       mask: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """`(loss, dloss/dy_pred)`; the gradient has `y_pred`'s shape."""
        if self.reduction in ("none", None):
            raise ValueError(f"{type(self).__name__}: a gradient needs a scalar loss; use a "
                             f"reduction other than 'none'.")
        shape = np.shape(y_pred)
        given = (y_true, y_pred)
        y_true, y_pred_a = self._prepare(y_true, y_pred)
        values = self.fn(y_true, y_pred_a)                                # (batch, ...)
        weight = self._weights(values, sample_weight, mask)
        if type(self).__call__ is Loss.__call__:
            loss = self._reduce(values, weight)                           # as __call__ gives
        else:  # a subclass computes its value its own way
            loss = self(*given, sample_weight, mask)
        d_values = np.ones_like(values) if weight is None else weight     # (batch, ...)
        if self.reduction != "sum":
            divisor = self._divisor(values, weight)
            d_values = d_values / divisor if divisor else np.zeros_like(values)
        d_pred = self.grad(y_true, y_pred_a, d_values)
        return loss, d_pred.reshape(shape)

    def get_config(self) -> dict:
        return {"name": self.name, "reduction": self.reduction}

    @classmethod
    def from_config(cls, config: dict) -> "Loss":
        config = {k: v for k, v in config.items() if k != "dtype"}
        return cls(**config)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reduction={self.reduction!r})"


class MeanSquaredError(Loss):
    """`values = mean((y_true - y_pred)^2, axis=-1)`; gradient `2 (y_pred - y_true) / classes`."""

    _default_name = "mean_squared_error"

    # Both in place on their one full-size temporary: at (256, 100, 1024) each temporary is
    # 105 MB of fresh memory, and the value and gradient took 240 ms of a 3.3 s training step
    # with five. The squares' sum is a dot product over the last axis (einsum: one pass, no
    # array of squares), the same numbers in __call__ and value_and_grad.

    @staticmethod
    def _values(diff: np.ndarray) -> np.ndarray:
        n = diff.shape[-1]
        return np.einsum("...i,...i->...", diff, diff) / diff.dtype.type(n)  # (batch, ...)

    def fn(self, y_true, y_pred):
        return self._values(np.subtract(y_true, y_pred))

    def grad(self, y_true, y_pred, d_values):
        n = y_pred.shape[-1]
        scale = d_values[..., None] * 2
        diff = np.subtract(y_pred, y_true)
        if np.result_type(scale, diff) != diff.dtype or diff.shape != np.broadcast_shapes(
                scale.shape, diff.shape):
            return scale * diff / n                                      # like y_pred
        np.multiply(scale, diff, out=diff)
        return np.divide(diff, n, out=diff)

    def value_and_grad(self, y_true, y_pred, sample_weight=None, mask=None):
        """One difference `y_pred - y_true` for both (three passes over the batch's values
        instead of seven): the value from its squares' sums, the gradient
        `diff * 2 d_values / classes` in place on it."""
        y_true_a, y_pred_a = self._prepare(y_true, y_pred)
        if (self.reduction in ("none", None) or y_true_a.shape != y_pred_a.shape
                or y_pred_a.ndim < 2):
            return super().value_and_grad(y_true, y_pred, sample_weight, mask)
        diff = np.subtract(y_pred_a, y_true_a)
        values = self._values(diff)                                      # (batch, ...)
        weight = self._weights(values, sample_weight, mask)
        loss = self._reduce(values, weight)
        divisor = diff.dtype.type(1) if self.reduction == "sum" else self._divisor(values, weight)
        if not divisor:
            return loss, np.zeros_like(diff).reshape(np.shape(y_pred))
        two = diff.dtype.type(2)
        if weight is None:
            np.multiply(diff, two / (divisor * diff.shape[-1]), out=diff)
        else:
            np.multiply(diff, (weight * (two / (divisor * diff.shape[-1])))[..., None], out=diff)
        return loss, diff.reshape(np.shape(y_pred))


class MeanAbsoluteError(Loss):
    """`values = mean(|y_true - y_pred|, axis=-1)`; gradient `sign(y_pred - y_true) / classes`."""

    _default_name = "mean_absolute_error"

    def fn(self, y_true, y_pred):
        return np.mean(np.abs(y_true - y_pred), axis=-1)

    def grad(self, y_true, y_pred, d_values):
        return d_values[..., None] * np.sign(y_pred - y_true) / y_pred.shape[-1]


class Huber(Loss):
    """Quadratic for small errors, linear for large ones; `e = y_pred - y_true`::

        values = mean(0.5 e^2 if |e| <= delta else delta |e| - 0.5 delta^2, axis=-1)
    """

    _default_name = "huber_loss"

    def __init__(self, delta: float = 1.0, reduction: str | None = "sum_over_batch_size",
                 name: str | None = None, dtype: Any = None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.delta = float(delta)

    def fn(self, y_true, y_pred):
        e = y_pred - y_true
        a = np.abs(e)
        d = e.dtype.type(self.delta)
        return np.mean(np.where(a <= d, 0.5 * e * e, d * a - 0.5 * d * d), axis=-1)

    def grad(self, y_true, y_pred, d_values):
        e = y_pred - y_true
        d = e.dtype.type(self.delta)
        slope = np.where(np.abs(e) <= d, e, d * np.sign(e))
        return d_values[..., None] * slope / y_pred.shape[-1]

    def get_config(self) -> dict:
        return {**super().get_config(), "delta": self.delta}


class BinaryCrossentropy(Loss):
    """`values = mean(-(y log p + (1 - y) log(1 - p)), axis=-1)` with `p = sigmoid(y_pred)` when
    `from_logits`, else `p = clip(y_pred, EPSILON, 1 - EPSILON)`.

    The gradient with logits is `(sigmoid(y_pred) - y) / classes`; with probabilities it is
    `(p - y) / (p (1 - p)) / classes` inside the clip range and 0 outside (the clip's gradient).
    `label_smoothing` s replaces y by `y (1 - s) + s / 2`.
    """

    _default_name = "binary_crossentropy"

    def __init__(self, from_logits: bool = False, label_smoothing: float = 0.0, axis: int = -1,
                 reduction: str | None = "sum_over_batch_size", name: str | None = None,
                 dtype: Any = None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.from_logits = bool(from_logits)
        self.label_smoothing = float(label_smoothing)
        if axis != -1:
            raise ValueError("BinaryCrossentropy: only axis=-1 is supported.")
        self.axis = axis

    def _smooth(self, y):
        s = self.label_smoothing
        return y * (1 - s) + 0.5 * s if s else y

    def fn(self, y_true, y_pred):
        y = self._smooth(y_true)
        if self.from_logits:
            per = -(y * _log_sigmoid(y_pred) + (1 - y) * _log_sigmoid(-y_pred))
        else:
            p = np.clip(y_pred, EPSILON, 1 - EPSILON)
            per = -(y * np.log(p) + (1 - y) * np.log(1 - p))
        return np.mean(per, axis=-1)

    def grad(self, y_true, y_pred, d_values):
        y = self._smooth(y_true)
        n = y_pred.shape[-1]
        if self.from_logits:
            d = _sigmoid(y_pred) - y
        else:
            inside = (y_pred > EPSILON) & (y_pred < 1 - EPSILON)
            p = np.clip(y_pred, EPSILON, 1 - EPSILON)
            d = np.where(inside, -y / p + (1 - y) / (1 - p), 0)
        return (d_values[..., None] * d / n).astype(y_pred.dtype)

    def get_config(self) -> dict:
        return {**super().get_config(), "from_logits": self.from_logits,
                "label_smoothing": self.label_smoothing, "axis": self.axis}


class CategoricalCrossentropy(Loss):
    """`values = -sum(y * log p, axis=-1)` over one-hot `y`, where `p = softmax(y_pred)` when
    `from_logits`, else `p = clip(y_pred / sum(y_pred), EPSILON, 1 - EPSILON)`.

    With logits the gradient is `softmax(y_pred) * sum(y) - y`. `label_smoothing` s replaces y by
    `y (1 - s) + s / classes`.
    """

    _default_name = "categorical_crossentropy"

    def __init__(self, from_logits: bool = False, label_smoothing: float = 0.0, axis: int = -1,
                 reduction: str | None = "sum_over_batch_size", name: str | None = None,
                 dtype: Any = None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.from_logits = bool(from_logits)
        self.label_smoothing = float(label_smoothing)
        if axis != -1:
            raise ValueError(f"{type(self).__name__}: only axis=-1 is supported.")
        self.axis = axis

    def _targets(self, y_true, y_pred):
        s = self.label_smoothing
        return y_true * (1 - s) + s / y_pred.shape[-1] if s else y_true

    def _check(self, y, y_pred):
        if y.shape != y_pred.shape:
            raise ValueError(
                f"{type(self).__name__}: y_true {_checks.shape_str(y.shape)} and y_pred "
                f"{_checks.shape_str(y_pred.shape)} must have the same shape (one-hot targets). "
                f"For integer class ids use SparseCategoricalCrossentropy."
            )

    def fn(self, y_true, y_pred):
        y = self._targets(y_true, y_pred)
        self._check(y, y_pred)
        return -np.sum(y * self._log_probs(y_pred), axis=-1)

    def _log_probs(self, y_pred):
        if self.from_logits:
            return _log_softmax(y_pred)
        p = y_pred / y_pred.sum(axis=-1, keepdims=True)
        return np.log(np.clip(p, EPSILON, 1 - EPSILON))

    def grad(self, y_true, y_pred, d_values):
        y = self._targets(y_true, y_pred)
        return self._grad_from_targets(y, y_pred, d_values)

    def _grad_from_targets(self, y, y_pred, d_values):
        d_values = d_values[..., None]
        if self.from_logits:
            return d_values * (_softmax(y_pred) * y.sum(axis=-1, keepdims=True) - y)
        total = y_pred.sum(axis=-1, keepdims=True)                         # (batch, ..., 1)
        p = y_pred / total
        inside = (p > EPSILON) & (p < 1 - EPSILON)
        d_p = np.where(inside, -y / np.clip(p, EPSILON, 1 - EPSILON), 0)   # dL/dp
        # p = y_pred / total: dL/dy_pred_j = (dL/dp_j - sum_i dL/dp_i p_i) / total
        d_pred = (d_p - (d_p * p).sum(axis=-1, keepdims=True)) / total
        return (d_values * d_pred).astype(y_pred.dtype)

    def get_config(self) -> dict:
        return {**super().get_config(), "from_logits": self.from_logits,
                "label_smoothing": self.label_smoothing, "axis": self.axis}


class SparseCategoricalCrossentropy(CategoricalCrossentropy):
    """Categorical crossentropy with integer class ids: `y_true` is `(batch, ...)` (or with a
    trailing axis of 1) and `y_pred` is `(batch, ..., classes)`."""

    _default_name = "sparse_categorical_crossentropy"

    def __init__(self, from_logits: bool = False, ignore_class: int | None = None,
                 reduction: str | None = "sum_over_batch_size", name: str | None = None,
                 dtype: Any = None):
        Loss.__init__(self, name=name, reduction=reduction, dtype=dtype)
        if ignore_class is not None:
            raise ValueError("SparseCategoricalCrossentropy: `ignore_class` is not supported; "
                             "give those samples sample_weight 0 instead.")
        self.from_logits = bool(from_logits)
        self.label_smoothing = 0.0
        self.ignore_class = None

    def _align(self, y_true, y_pred):
        return y_true, y_pred

    def _one_hot(self, y_true, y_pred):
        ids = y_true
        if ids.ndim == y_pred.ndim and ids.shape[-1] == 1:
            ids = ids[..., 0]
        if ids.shape != y_pred.shape[:-1]:
            raise ValueError(
                f"SparseCategoricalCrossentropy: y_true {_checks.shape_str(y_true.shape)} should "
                f"hold one class id per prediction row of y_pred {_checks.shape_str(y_pred.shape)}, "
                f"i.e. have shape {_checks.shape_str(y_pred.shape[:-1])}. For one-hot targets use "
                f"CategoricalCrossentropy."
            )
        ids = ids.astype(np.int64)
        classes = y_pred.shape[-1]
        if ids.size and (ids.min() < 0 or ids.max() >= classes):
            raise ValueError(f"SparseCategoricalCrossentropy: class ids must be in [0, {classes}), "
                             f"got values from {ids.min()} to {ids.max()}.")
        return np.eye(classes, dtype=y_pred.dtype)[ids]

    def fn(self, y_true, y_pred):
        return -np.sum(self._one_hot(y_true, y_pred) * self._log_probs(y_pred), axis=-1)

    def grad(self, y_true, y_pred, d_values):
        return self._grad_from_targets(self._one_hot(y_true, y_pred), y_pred, d_values)

    def get_config(self) -> dict:
        return {"name": self.name, "reduction": self.reduction, "from_logits": self.from_logits,
                "ignore_class": None}


def _function(cls: type, doc: str) -> Callable:
    def fn(y_true: Any, y_pred: Any, **kwargs: Any) -> np.ndarray:
        loss = cls(reduction="none", **kwargs)
        return loss(y_true, y_pred)

    fn.__name__ = cls._default_name
    fn.__doc__ = doc
    return fn


mean_squared_error = _function(MeanSquaredError, "Per-sample mean squared error over the last axis.")
mean_absolute_error = _function(MeanAbsoluteError, "Per-sample mean absolute error over the last axis.")
huber = _function(Huber, "Per-sample Huber loss over the last axis.")
binary_crossentropy = _function(BinaryCrossentropy, "Per-sample binary crossentropy.")
categorical_crossentropy = _function(CategoricalCrossentropy, "Per-sample categorical crossentropy.")
sparse_categorical_crossentropy = _function(SparseCategoricalCrossentropy,
                                            "Per-sample sparse categorical crossentropy.")

_BY_NAME: dict[str, type] = {
    "mean_squared_error": MeanSquaredError, "mse": MeanSquaredError,
    "mean_absolute_error": MeanAbsoluteError, "mae": MeanAbsoluteError,
    "huber": Huber, "huber_loss": Huber,
    "binary_crossentropy": BinaryCrossentropy, "bce": BinaryCrossentropy,
    "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
}
_BY_CLASS = {cls.__name__: cls for cls in set(_BY_NAME.values())}


def serialize(loss: Loss) -> dict:
    return {"class_name": type(loss).__name__, "config": loss.get_config()}


def get(identifier: Any) -> Loss:
    """A loss from a Keras name ("mse", "sparse_categorical_crossentropy", ...), a class name, a
    config dict, or an instance."""
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, str):
        if identifier in _BY_NAME:
            loss = _BY_NAME[identifier]()
            loss.name = identifier
            return loss
        if identifier in _BY_CLASS:
            return _BY_CLASS[identifier]()
        raise ValueError(
            f"Unknown loss {identifier!r}.{_checks.closest(identifier, list(_BY_NAME) + list(_BY_CLASS))}"
            f" Known: {sorted(_BY_NAME)}, or pass an instance such as "
            f"losses.SparseCategoricalCrossentropy(from_logits=True)."
        )
    if isinstance(identifier, dict) and identifier.get("class_name") in _BY_CLASS:
        return _BY_CLASS[identifier["class_name"]].from_config(identifier.get("config", {}))
    if callable(identifier) and getattr(identifier, "__name__", None) in _BY_NAME:
        return get(identifier.__name__)
    raise TypeError(f"`loss` must be a name like 'mse', a config dict or a Loss, got {identifier!r}.")
