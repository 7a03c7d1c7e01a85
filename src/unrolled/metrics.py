"""Metrics: running averages over an epoch, computed as Keras computes them.

A metric keeps a weighted `total` and `count` across batches: `update_state(y_true, y_pred,
sample_weight)` adds one batch, `result()` is `total / count`, `reset_state()` starts over (fit does
so every epoch). Each batch contributes one value per sample — the per-element values averaged over
every axis after the batch — weighted by the sample weight (1 by default).

Example:
    >>> import numpy as np
    >>> from unrolled import metrics
    >>> m = metrics.get("accuracy")              # plain equality, as keras.metrics.get gives
    >>> m.update_state(np.array([1, 2, 3]), np.array([1, 2, 0]))
    >>> round(float(m.result()), 4)
    0.6667
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from unrolled import _checks, losses
from unrolled.losses import squeeze_or_expand_to_same_rank

__all__ = ["Metric", "Mean", "MeanMetricWrapper", "Accuracy", "BinaryAccuracy",
           "CategoricalAccuracy", "SparseCategoricalAccuracy", "MeanSquaredError",
           "MeanAbsoluteError", "get", "accuracy", "binary_accuracy", "categorical_accuracy",
           "sparse_categorical_accuracy"]


def accuracy(y_true: Any, y_pred: Any) -> np.ndarray:
    """1.0 where `y_true == y_pred` element-wise, else 0.0."""
    y_pred = np.asarray(y_pred)
    y_true = np.asarray(y_true, dtype=y_pred.dtype)
    y_true, y_pred = squeeze_or_expand_to_same_rank(y_true, y_pred)
    return (y_true == y_pred).astype("float32")


def binary_accuracy(y_true: Any, y_pred: Any, threshold: float = 0.5) -> np.ndarray:
    """1.0 where `(y_pred > threshold)` equals `y_true`."""
    y_pred = np.asarray(y_pred)
    y_true = np.asarray(y_true)
    y_true, y_pred = squeeze_or_expand_to_same_rank(y_true, y_pred)
    return (y_true == (y_pred > threshold).astype(y_true.dtype)).astype("float32")


def categorical_accuracy(y_true: Any, y_pred: Any) -> np.ndarray:
    """1.0 where the arg-max of one-hot `y_true` equals the arg-max of `y_pred`."""
    return (np.argmax(y_true, axis=-1) == np.argmax(y_pred, axis=-1)).astype("float32")


def sparse_categorical_accuracy(y_true: Any, y_pred: Any) -> np.ndarray:
    """1.0 where the integer class `y_true` equals the arg-max of `y_pred`."""
    y_pred = np.asarray(y_pred)
    y_true = np.asarray(y_true)
    if y_true.ndim == y_pred.ndim and y_true.shape[-1] == 1:
        y_true = y_true[..., 0]
    matches = (y_true.astype(np.float64) == np.argmax(y_pred, axis=-1)).astype("float32")
    if matches.ndim > 1 and matches.shape[-1] == 1:
        matches = matches[..., 0]
    return matches


class Metric:
    """Base class: `update_state`, `result`, `reset_state`, and a `name`."""

    def __init__(self, name: str | None = None, dtype: Any = "float32"):
        self.name = name or _checks.snake_case(type(self).__name__)
        self.dtype = np.dtype(dtype or "float32")
        self.reset_state()

    def reset_state(self) -> None:
        raise NotImplementedError

    def update_state(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError

    def result(self) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        """A stateless use: the metric on this batch alone."""
        self.reset_state()
        self.update_state(*args, **kwargs)
        result = self.result()
        self.reset_state()
        return result

    def get_config(self) -> dict:
        return {"name": self.name, "dtype": self.dtype.name}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class Mean(Metric):
    """The weighted mean of every value seen: `total / count`."""

    def reset_state(self) -> None:
        self.total = self.dtype.type(0)
        self.count = self.dtype.type(0)

    def update_state(self, values: Any, sample_weight: Any = None) -> None:
        values = np.asarray(values, dtype=self.dtype)
        if sample_weight is not None:
            sw = np.asarray(sample_weight, dtype=self.dtype)
            values, sw = squeeze_or_expand_to_same_rank(values, sw)
            if values.ndim > sw.ndim:                    # average the axes the weights lack
                values = values.mean(axis=tuple(range(sw.ndim, values.ndim)))
            sw = np.broadcast_to(sw, values.shape)
            values = values * sw
            if sw.ndim > 1:
                sw = sw.mean(axis=tuple(range(1, sw.ndim)))
        if values.ndim > 1:                              # one value per sample
            values = values.mean(axis=tuple(range(1, values.ndim)))
        self.total = self.dtype.type(self.total + values.sum())
        if sample_weight is not None:
            self.count = self.dtype.type(self.count + sw.sum())
        else:
            self.count = self.dtype.type(self.count + (values.shape[0] if values.ndim else 1))

    def result(self) -> np.ndarray:
        return self.dtype.type(self.total / self.count) if self.count else self.dtype.type(0)


class MeanMetricWrapper(Mean):
    """The running mean of a per-sample function `fn(y_true, y_pred)`."""

    def __init__(self, fn: Callable, name: str | None = None, dtype: Any = "float32",
                 **fn_kwargs: Any):
        self._fn = fn
        self._fn_kwargs = fn_kwargs
        super().__init__(name=name or getattr(fn, "__name__", None), dtype=dtype)

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        super().update_state(self._fn(y_true, y_pred, **self._fn_kwargs), sample_weight)


class Accuracy(MeanMetricWrapper):
    """How often `y_pred` equals `y_true` exactly."""

    def __init__(self, name: str = "accuracy", dtype: Any = "float32"):
        super().__init__(accuracy, name=name, dtype=dtype)


class BinaryAccuracy(MeanMetricWrapper):
    """How often `y_pred > threshold` matches the 0/1 label."""

    def __init__(self, name: str = "binary_accuracy", dtype: Any = "float32",
                 threshold: float = 0.5):
        super().__init__(binary_accuracy, name=name, dtype=dtype, threshold=threshold)


class CategoricalAccuracy(MeanMetricWrapper):
    """How often the predicted class (arg-max) matches the one-hot label."""

    def __init__(self, name: str = "categorical_accuracy", dtype: Any = "float32"):
        super().__init__(categorical_accuracy, name=name, dtype=dtype)


class SparseCategoricalAccuracy(MeanMetricWrapper):
    """How often the predicted class (arg-max) matches the integer label."""

    def __init__(self, name: str = "sparse_categorical_accuracy", dtype: Any = "float32"):
        super().__init__(sparse_categorical_accuracy, name=name, dtype=dtype)


class MeanSquaredError(MeanMetricWrapper):
    """The running mean squared error."""

    def __init__(self, name: str = "mean_squared_error", dtype: Any = "float32"):
        super().__init__(losses.mean_squared_error, name=name, dtype=dtype)


class MeanAbsoluteError(MeanMetricWrapper):
    """The running mean absolute error."""

    def __init__(self, name: str = "mean_absolute_error", dtype: Any = "float32"):
        super().__init__(losses.mean_absolute_error, name=name, dtype=dtype)


_BY_NAME: dict[str, Callable[[], Metric]] = {
    "accuracy": Accuracy, "acc": Accuracy,
    "binary_accuracy": BinaryAccuracy, "categorical_accuracy": CategoricalAccuracy,
    "sparse_categorical_accuracy": SparseCategoricalAccuracy,
    "mean_squared_error": MeanSquaredError, "mse": MeanSquaredError,
    "mean_absolute_error": MeanAbsoluteError, "mae": MeanAbsoluteError,
}


def get(identifier: Any) -> Metric:
    """A metric from a name ("mae", "sparse_categorical_accuracy", ...), a function or an instance.

    Note: "accuracy" alone is exact-equality accuracy here, as in `keras.metrics.get`; `compile`
    picks binary, categorical or sparse categorical accuracy from the shapes, as Keras's does.
    """
    if isinstance(identifier, Metric):
        return identifier
    if isinstance(identifier, str):
        key = identifier.lower()
        if key not in _BY_NAME:
            raise ValueError(
                f"Unknown metric {identifier!r}.{_checks.closest(key, _BY_NAME)} Known: "
                f"{sorted(_BY_NAME)}."
            )
        metric = _BY_NAME[key]()
        metric.name = identifier
        return metric
    if callable(identifier):
        return MeanMetricWrapper(identifier)
    raise TypeError(f"A metric must be a name, a function or a Metric, got {identifier!r}.")


def for_compile(identifier: Any, y_true: np.ndarray, y_pred: np.ndarray) -> Metric:
    """Keras compile's choice: "accuracy"/"acc" become binary accuracy for one output unit,
    sparse categorical when `y_true` holds class ids, categorical otherwise."""
    if isinstance(identifier, str) and identifier.lower() in ("accuracy", "acc"):
        y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
        if y_pred.shape[-1] == 1:
            metric: Metric = BinaryAccuracy(name=identifier)
        elif y_true.ndim < y_pred.ndim or (y_true.shape[-1] == 1 and y_pred.shape[-1] > 1):
            metric = SparseCategoricalAccuracy(name=identifier)
        else:
            metric = CategoricalAccuracy(name=identifier)
        return metric
    return get(identifier)
