"""What the built-in cells (SimpleRNNCell, LSTMCell, GRUCell) and their layers have in common.

Every built-in cell holds the same Keras arguments (units, activation, initializers, regularizers,
constraints, dropout rates, seed) and the same three weights: `kernel (features, k*units)`,
`recurrent_kernel (units, k*units)` and `bias`, where `k` is the number of gate blocks fused along
the columns (1 for SimpleRNN, 4 for LSTM, 3 for GRU). Every built-in layer is `RNN` around one such
cell, with the cell's arguments flattened into its own signature and config, as in Keras.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from unrolled import _checks, activations, initializers
from unrolled._memory import aligned_empty
from unrolled.layers.base import Layer
from unrolled.layers.cell import RNNCell
from unrolled.layers.rnn import RNN

__all__ = ["BuiltinCell", "BuiltinRNN"]

_ALIAS_DOC = (
    "Read-only alias of `{attr}` {shape}, the notebook's `{name}`. It is used as in Keras, with "
    "row vectors: `{use}`; the textbook's column form `{col}` uses its transpose. k is the number "
    "of gate blocks fused along the last axis: 1 for SimpleRNN, 4 for LSTM ([i|f|c|o]), 3 for GRU "
    "([z|r|h])."
)


def _unbuilt(layer: Any, name: str) -> AttributeError:
    return AttributeError(
        f"{type(layer).__name__} '{layer.name}' has no weights yet, so `{name}` does not exist: "
        f"call the layer on an input once, or call build(input_shape) first."
    )


def _alias(attr: str, name: str, shape: str, use: str, col: str) -> property:
    def get(self: Any) -> np.ndarray | None:
        cell = getattr(self, "cell", self)
        if not cell.built:
            raise _unbuilt(self, name)
        return getattr(cell, attr)

    def refuse(self: Any, value: Any) -> None:
        raise AttributeError(
            f"`{name}` is a read-only alias of `{attr}`. Change the weight with set_weights(), or "
            f"write into it in place: layer.{name}[...] = new_values."
        )

    return property(get, refuse, doc=_ALIAS_DOC.format(attr=attr, shape=shape, name=name,
                                                         use=use, col=col))


_U = _alias("kernel", "U", "(features, k*units)", "x_t @ U", "U x_t")
_W = _alias("recurrent_kernel", "W", "(units, k*units)", "h_{t-1} @ W", "W h_{t-1}")
_B = _alias("bias", "b", "(k*units,) (GRU with reset_after: (2, 3*units))", "x_t @ U + b", "+ b")


def own_arguments(scope: dict) -> dict:
    """A constructor's named arguments, from `locals()` taken on its first line: the built-in
    classes spell their Keras signatures out in full and hand everything on to these bases."""
    return {k: v for k, v in scope.items() if k not in ("self", "kwargs", "__class__")}


def dropped(array: np.ndarray, masks: Any, count: int) -> list[np.ndarray]:
    """`array` once per gate block, each times its dropout mask.

    `masks` is None (no dropout), one mask shared by every block (Keras's implementation 2), or a
    list of one mask per block (implementation 1, which Keras uses whenever recurrent_dropout > 0).
    """
    if masks is None:
        return [array] * count
    if isinstance(masks, (list, tuple)):
        return [array * m for m in masks]
    return [array * masks] * count


def blocks_matmul(arrays: list[np.ndarray], weight: np.ndarray) -> np.ndarray:
    """`concat_g(arrays[g] @ weight[:, block g])`; one matmul when every block shares its input."""
    if all(a is arrays[0] for a in arrays):
        return arrays[0] @ weight
    width = weight.shape[1] // len(arrays)
    return np.concatenate([a @ weight[:, g * width:(g + 1) * width]
                           for g, a in enumerate(arrays)], axis=-1)


def block_mask(masks: Any, g: int) -> Any:
    """Gate block g's dropout mask: its own (implementation 1), the shared one, or None."""
    return masks[g] if isinstance(masks, (list, tuple)) else masks


def blocks_matmul_backward(array: np.ndarray, masks: Any, weight: np.ndarray,
                           d_out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradients of `blocks_matmul(dropped(array, masks, k), weight)` for the upstream gradient
    `d_out` (batch, k*units): `(d_weight, d_array)`.

    Block g of the weight only ever saw block g's (dropped) input::

        d_weight[:, block g] = dropped_g^T  d_out[:, block g]        (features, units)
        d_array             = sum_g (d_out[:, block g] weight[:, block g]^T) * mask_g
    """
    count = len(masks) if isinstance(masks, (list, tuple)) else 1
    if count == 1:
        x = array if masks is None else array * masks
        d_array = d_out @ weight.T                                   # (batch, features)
        return x.T @ d_out, (d_array if masks is None else d_array * masks)
    width = weight.shape[1] // count
    blocks = [slice(g * width, (g + 1) * width) for g in range(count)]
    d_weight = np.concatenate([(array * masks[g]).T @ d_out[:, b] for g, b in enumerate(blocks)],
                              axis=1)                                # (features, k*units)
    d_array = sum((d_out[:, b] @ weight[:, b].T) * masks[g] for g, b in enumerate(blocks))
    return d_weight, d_array


class BuiltinCell(RNNCell):
    """Base of SimpleRNNCell, LSTMCell and GRUCell: Keras's arguments, weights, config and repr.

    A subclass sets `_blocks` (gate blocks fused along the weights' columns), may override
    `_bias_shape` and `_bias_initializer`, and writes `call`.
    """

    _blocks = 1
    # With Keras's implementation 1 a dropout mask is drawn per gate block (a list of masks).
    dropout_mask_count: int | None = None

    def __init__(self, units: int, *, activation: Any, use_bias: bool, kernel_initializer: Any,
                 recurrent_initializer: Any, bias_initializer: Any, kernel_regularizer: Any,
                 recurrent_regularizer: Any, bias_regularizer: Any, kernel_constraint: Any,
                 recurrent_constraint: Any, bias_constraint: Any, dropout: float,
                 recurrent_dropout: float, seed: int | None, **kwargs: Any):
        owner = type(self).__name__
        units = _checks.positive_int(units, "units", owner)
        super().__init__(seed=seed, **kwargs)
        self.units = units
        self.activation = activations.get(activation, argument="activation")
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer,
                                                   argument="kernel_initializer")
        self.recurrent_initializer = initializers.get(recurrent_initializer,
                                                      argument="recurrent_initializer")
        self.bias_initializer = initializers.get(bias_initializer, argument="bias_initializer")
        self.kernel_regularizer = kernel_regularizer
        self.recurrent_regularizer = recurrent_regularizer
        self.bias_regularizer = bias_regularizer
        self.kernel_constraint = kernel_constraint
        self.recurrent_constraint = recurrent_constraint
        self.bias_constraint = bias_constraint
        self.dropout = _checks.rate(dropout, "dropout", owner)
        self.recurrent_dropout = _checks.rate(recurrent_dropout, "recurrent_dropout", owner)
        self.state_size = units
        self.output_size = units

    U, W, b = _U, _W, _B

    def _bias_shape(self) -> tuple:
        return (self._blocks * self.units,)

    def _bias_initializer(self) -> Any:
        return self.bias_initializer

    def build(self, input_shape: Any) -> None:
        width = self._blocks * self.units
        self.kernel = self.add_weight((input_shape[-1], width), self.kernel_initializer,
                                      name="kernel")
        self.recurrent_kernel = self.add_weight((self.units, width), self.recurrent_initializer,
                                                name="recurrent_kernel")
        self._stack_weights()
        self.bias = (self.add_weight(self._bias_shape(), self._bias_initializer(), name="bias")
                     if self.use_bias else None)
        super().build(input_shape)

    def _stack_weights(self) -> None:
        # The recurrent kernel and the kernel as two views of one array, `[W; U]` (W's rows, then
        # U's), each still its own weight, written in place like any other. The compiled loops
        # multiply `[h | x_t]` by `[W; U]` and can read it where it is instead of copying it
        # (unrolled.kernels._numba); as two arrays they needed the copy.
        # The array starts on a cache line (unrolled._memory), as the loops' packed panels do.
        weights = {w.name: w for w in self._weights}
        W, U = weights["recurrent_kernel"], weights["kernel"]
        stacked = aligned_empty((W.value.shape[0] + U.value.shape[0],) + W.value.shape[1:],
                                np.result_type(W.value, U.value))
        np.concatenate([W.value, U.value], out=stacked)
        W.value, U.value = stacked[:self.units], stacked[self.units:]
        object.__setattr__(self, "recurrent_kernel", W.value)
        object.__setattr__(self, "kernel", U.value)

    def __setstate__(self, state: dict) -> None:
        # A copy (copy.deepcopy, pickle) copies the two views each on its own; they are made
        # views of one `[W; U]` again, as after build.
        self.__dict__.update(state)
        if any(w.name == "recurrent_kernel" for w in self.__dict__.get("_weights", ())):
            self._stack_weights()

    def _draw_mask(self, like: np.ndarray, rate: float) -> Any:
        if self.dropout_mask_count is None:
            return super()._draw_mask(like, rate)
        return [RNNCell._draw_mask(self, like, rate) for _ in range(self.dropout_mask_count)]

    def _step_masks(self, x: np.ndarray, h: np.ndarray, training: bool) -> tuple[Any, Any]:
        """This sequence's (input, recurrent) dropout masks; as in Keras's LSTM and GRU a rate
        acts only when 0 < rate < 1."""
        if not training:
            return None, None
        input_masks = self.get_dropout_mask(x) if 0.0 < self.dropout < 1.0 else None
        state_masks = (self.get_recurrent_dropout_mask(h) if 0.0 < self.recurrent_dropout < 1.0
                       else None)
        return input_masks, state_masks

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            units=self.units,
            activation=activations.serialize(self.activation),
            use_bias=self.use_bias,
            kernel_initializer=initializers.serialize(self.kernel_initializer),
            recurrent_initializer=initializers.serialize(self.recurrent_initializer),
            bias_initializer=initializers.serialize(self.bias_initializer),
            kernel_regularizer=self.kernel_regularizer,
            recurrent_regularizer=self.recurrent_regularizer,
            bias_regularizer=self.bias_regularizer,
            kernel_constraint=self.kernel_constraint,
            recurrent_constraint=self.recurrent_constraint,
            bias_constraint=self.bias_constraint,
            dropout=self.dropout,
            recurrent_dropout=self.recurrent_dropout,
            seed=self.seed,
        )
        return config

    def _repr_fields(self) -> list[str]:
        fields = [f"units={self.units}", f"activation={activations.serialize(self.activation)}"]
        if self.dropout:
            fields.append(f"dropout={self.dropout}")
        if self.recurrent_dropout:
            fields.append(f"recurrent_dropout={self.recurrent_dropout}")
        return fields


class GatedCell(BuiltinCell):
    """Base of LSTMCell and GRUCell: adds `recurrent_activation` and Keras's hidden
    `implementation` switch (1 draws one dropout mask per gate block; forced when
    recurrent_dropout > 0)."""

    def __init__(self, units: int, *, recurrent_activation: Any, implementation: int = 2,
                 **kwargs: Any):
        super().__init__(units, **kwargs)
        self.recurrent_activation = activations.get(recurrent_activation,
                                                    argument="recurrent_activation")
        if implementation not in (1, 2):
            raise ValueError(
                f"{type(self).__name__}: `implementation` must be 1 or 2, got {implementation!r}. "
                f"Both compute the same numbers; 1 draws one dropout mask per gate."
            )
        self.implementation = 1 if self.recurrent_dropout != 0.0 else int(implementation)
        if self.implementation == 1:
            self.dropout_mask_count = self._blocks

    def get_config(self) -> dict:
        config = super().get_config()
        config["recurrent_activation"] = activations.serialize(self.recurrent_activation)
        return config

    def _repr_fields(self) -> list[str]:
        fields = super()._repr_fields()
        fields.insert(2, "recurrent_activation="
                      + str(activations.serialize(self.recurrent_activation)))
        return fields


class BuiltinRNN(RNN):
    """Base of SimpleRNN, LSTM and GRU: `RNN` around a cell built from the layer's own arguments.

    A subclass sets `_cell_class` and `_cell_args` (the cell arguments its config lists) and hands
    all its arguments to `__init__`: those in `_cell_args` (and Keras's hidden `implementation`) go
    to the cell, the rest to `RNN`. The cell's configuration reads through the layer
    (`layer.units`), and `get_config` is flat, as in Keras.
    """

    _input_ndim = 3
    _cell_class: type = BuiltinCell
    _cell_args: tuple = ()
    _seed_in_config = True  # Keras's SimpleRNN leaves `seed` out of its config; LSTM and GRU not

    def __init__(self, *, activity_regularizer: Any, seed: int | None, **arguments: Any):
        owner = type(self).__name__
        cell_args = {k: arguments.pop(k) for k in self._cell_args}
        if "implementation" in arguments:
            cell_args["implementation"] = arguments.pop("implementation")
        cell_args["units"] = _checks.positive_int(cell_args["units"], "units", owner)
        use_cudnn = arguments.pop("use_cudnn", None)
        if use_cudnn is not None and (isinstance(use_cudnn, np.ndarray)
                                      or use_cudnn not in ("auto", True, False)):
            raise ValueError(
                f"{owner}: `use_cudnn` must be 'auto', True or False, got {use_cudnn!r}. It is "
                f"accepted for Keras compatibility only: unrolled always computes with NumPy."
            )
        cell_class = self._cell_class
        cell = cell_class(**cell_args, seed=seed, dtype=arguments.get("dtype"),
                          trainable=arguments.get("trainable", True),
                          name=_checks.snake_case(cell_class.__name__))
        super().__init__(cell, **arguments)
        self.activity_regularizer = activity_regularizer
        if use_cudnn is not None:
            self.use_cudnn = use_cudnn

    U, W, b = _U, _W, _B

    def __getattr__(self, name: str) -> Any:
        # The cell's configuration reads through the layer (layer.units, layer.activation, ...).
        cell = self.__dict__.get("cell")
        if cell is not None and (name in self._cell_args or name in ("seed", "implementation")):
            return getattr(cell, name)
        if name in ("U", "W", "b"):  # the alias property found no weights
            raise _unbuilt(self, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def get_config(self) -> dict:
        config = super().get_config()
        cell_config = config.pop("cell")["config"]
        config.update({k: cell_config[k] for k in self._cell_args})
        config["activity_regularizer"] = self.activity_regularizer
        if self._seed_in_config:
            config["seed"] = cell_config["seed"]
        return config

    def _repr_fields(self) -> list[str]:
        return self.cell._repr_fields() + self._flag_fields()

    def _repr_weight_owner(self) -> Layer:
        return self.cell

    __repr__ = Layer.__repr__
