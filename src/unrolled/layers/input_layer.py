"""Input and InputLayer: where a functional graph starts."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from unrolled import _checks
from unrolled.layers.base import Layer, unique_name

__all__ = ["Input", "InputLayer"]


def _shape_tuple(shape: Any, arg: str, owner: str) -> tuple:
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (shape,)
    if not isinstance(shape, (list, tuple)) or not all(
            s is None or (isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 0)
            for s in shape):
        raise TypeError(
            f"{owner}: `{arg}` must be a tuple of sizes (non-negative integers, or None for a size "
            f"known only at call time), got {shape!r}. For sequences of 8 features use "
            f"shape=(None, 8): (timesteps, features), without the batch axis.")
    return tuple(None if s is None else int(s) for s in shape)


class InputLayer(Layer):
    """The entry point of a model: it holds the shape and dtype its data will have.

    Usually made through `Input(shape)`, which returns its output tensor. A Sequential model may
    start with one to fix its input shape.

    Args:
        shape: the shape of one sample, without the batch axis: `(timesteps, features)` for
            sequences; `None` marks a size known only at call time.
        batch_size: a fixed batch size (stateful recurrent layers need one). Default None.
        dtype: the data's dtype, "float32" by default; "int32" for token ids fed to Embedding.
        batch_shape: the full shape including the batch axis, instead of shape and batch_size.
        name: the layer's name; `input_layer`, `input_layer_1`, ... by default.
        sparse, ragged, optional, input_tensor: accepted for Keras configs; sparse and ragged
            data are not supported.
    """

    def __init__(self, shape: Sequence[Any] | None = None, batch_size: int | None = None,
                 dtype: Any = None, sparse: bool | None = None, batch_shape: Any = None,
                 input_tensor: Any = None, optional: bool = False, name: str | None = None,
                 ragged: bool | None = None, **kwargs: Any):
        owner = "InputLayer"
        if "batch_input_shape" in kwargs:  # Keras 2 configs
            batch_shape = kwargs.pop("batch_input_shape")
        legacy_shape = kwargs.pop("input_shape", None)
        if shape is None and batch_shape is None:
            shape = legacy_shape
        if sparse or ragged:
            raise ValueError(f"{owner}: sparse and ragged inputs are not supported; feed dense "
                             f"arrays (pad sequences to a common length and use a mask).")
        if shape is not None and batch_shape is not None:
            raise ValueError(f"{owner}: give `shape` (without the batch axis) or `batch_shape` "
                             f"(with it), not both.")
        if input_tensor is not None:
            raise ValueError(f"{owner}: `input_tensor` is not supported; use Input(shape=...).")
        if shape is None and batch_shape is None:
            raise ValueError(f"{owner}: give the shape of one sample, e.g. shape=(None, 8) for "
                             f"sequences of 8 features.")
        if batch_shape is not None:
            batch_shape = _shape_tuple(batch_shape, "batch_shape", owner)
        else:
            batch_shape = (batch_size,) + _shape_tuple(shape, "shape", owner)
        super().__init__(name=name if name is not None else unique_name("input_layer"), **kwargs)
        input_dtype = np.dtype(dtype if not isinstance(dtype, dict) else
                               dtype.get("config", {}).get("name", "float32")) if dtype else None
        self.dtype = (input_dtype or np.dtype("float32")).name
        self.batch_shape = batch_shape
        self.sparse = False
        self.ragged = False
        self.optional = bool(optional)
        self.built = True
        from unrolled.models.node import Node, SymbolicTensor

        tensor = SymbolicTensor(batch_shape, self.dtype, name=self.name)
        Node(self, (), {}, tensor)
        self.output = tensor

    def call(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"InputLayer '{self.name}' is not called on data; it starts a model. Use "
                        f"Input(...) to get its tensor and pass that to other layers.")

    def compute_output_shape(self, input_shape: Any = None) -> tuple:
        return self.batch_shape

    def get_config(self) -> dict:
        return {"batch_shape": list(self.batch_shape), "dtype": self.dtype, "sparse": False,
                "ragged": False, "name": self.name, "optional": self.optional}

    def __repr__(self) -> str:
        return (f"InputLayer(name={self.name!r}, batch_shape={_checks.shape_str(self.batch_shape)}, "
                f"dtype={self.dtype})")


def Input(shape: Sequence[Any] | None = None, batch_size: int | None = None, dtype: Any = None,
          sparse: bool | None = None, batch_shape: Any = None, name: str | None = None,
          tensor: Any = None, optional: bool = False) -> Any:
    """A symbolic input tensor: the start of a functional model.

    Args:
        shape: one sample's shape without the batch axis, e.g. `(None, 8)` for sequences of any
            length with 8 features.
        batch_size: a fixed batch size (needed by stateful recurrent layers). Default None.
        dtype: "float32" by default; "int32" for token ids.
        batch_shape: the full shape with the batch axis, instead of shape and batch_size.
        name: the input's name (its InputLayer's name).

    Returns:
        A `SymbolicTensor` of shape `(batch_size, *shape)`.

    Example:
        >>> from unrolled import Input, Model, layers
        >>> x = Input(shape=(None, 8))               # (batch, timesteps, features)
        >>> x.shape
        (None, None, 8)
        >>> h = layers.SimpleRNN(4)(x)               # (batch, units)
        >>> Model(x, h).output_shape
        (None, 4)
    """
    layer = InputLayer(shape=shape, batch_size=batch_size, dtype=dtype, sparse=sparse,
                       batch_shape=batch_shape, input_tensor=tensor, optional=optional, name=name)
    return layer.output
