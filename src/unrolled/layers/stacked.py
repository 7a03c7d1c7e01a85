"""StackedRNNCells: several cells chained into one cell, one state entry per cell."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from unrolled.layers._serialization import deserialize_layer, serialize_layer
from unrolled.layers.base import Layer
from unrolled.layers.cell import RNNCell, takes_training

__all__ = ["StackedRNNCells"]


def _output_size(cell: Any) -> Any:
    size = getattr(cell, "output_size", None)
    if size is not None:
        return size
    state = cell.state_size
    return state[0] if isinstance(state, (list, tuple)) else state


class StackedRNNCells(RNNCell):
    """Cells that feed each other within one timestep, behaving as a single cell.

    At each step cell 1 reads `x_t`, cell 2 reads cell 1's output, and so on; the stack's output is
    the last cell's output. Each cell keeps its own state, so the states are one entry per cell::

        h1_t = cell_1(x_t,  h1_{t-1})
        h2_t = cell_2(h1_t, h2_{t-1})        ...        output_t = hK_t

    where:
        x_t   (batch, features)         the step input
        hk_t  (batch, units_k)          cell k's state (an LSTM cell has two: [h, c])

    `RNN(StackedRNNCells(cells))`, or simply `RNN(cells)`, runs the stack over time.

    Args:
        cells: a list of cells (built-in or user-written), applied in order.
        name, dtype, trainable: as for every layer; `dtype` defaults to the first cell's.

    Call arguments:
        inputs: `(batch, features)`, one timestep.
        states: one entry per cell, each nested as that cell expects:
            `[[h1], [h2, c2]]` for a SimpleRNNCell then an LSTMCell. A cell's entry may also be a
            bare array when the cell has a single state.

    Returns:
        `(output, new_states)`: output `(batch, units_last)`; `new_states` mirrors the nesting of
        `states`, cell by cell.

    Example:
        >>> import numpy as np
        >>> from unrolled import layers
        >>> stack = layers.StackedRNNCells([layers.SimpleRNNCell(4), layers.SimpleRNNCell(3)])
        >>> stack.state_size
        [4, 3]
        >>> x_t = np.ones((2, 5), dtype="float32")
        >>> out, states = stack(x_t, stack.get_initial_state(2))
        >>> out.shape, [s[0].shape for s in states]   # (batch, 3), one state per cell
        ((2, 3), [(2, 4), (2, 3)])
    """

    def __init__(self, cells: Sequence[Any], **kwargs: Any):
        if isinstance(cells, (str, bytes)) or not isinstance(cells, (list, tuple)):
            raise TypeError(
                f"StackedRNNCells: `cells` must be a list of cells, got {type(cells).__name__}. "
                f"For example StackedRNNCells([SimpleRNNCell(4), SimpleRNNCell(4)])."
            )
        if not cells:
            raise ValueError("StackedRNNCells: `cells` is empty; give at least one cell.")
        for k, cell in enumerate(cells):
            for attr in ("call", "state_size"):
                if not hasattr(cell, attr):
                    raise TypeError(
                        f"StackedRNNCells: cells[{k}] ({type(cell).__name__}) has no `{attr}`; every "
                        f"cell needs call(inputs, states) and state_size."
                    )
        if kwargs.get("dtype") is None and isinstance(cells[0], Layer):
            kwargs["dtype"] = cells[0].dtype
        super().__init__(**kwargs)
        self.cells = list(cells)
        for cell in self.cells:
            self._adopt(cell)

    @property
    def state_size(self) -> list:
        return [cell.state_size for cell in self.cells]

    @property
    def output_size(self) -> Any:
        return _output_size(self.cells[-1])

    def _sublayers(self) -> list[Layer]:
        return [c for c in self.cells if isinstance(c, Layer)]

    def build(self, input_shape: Any) -> None:
        batch = input_shape[0]
        for cell in self.cells:
            if isinstance(cell, Layer) and not cell.built:
                cell._maybe_build(tuple(input_shape))
            size = _output_size(cell)
            input_shape = (batch, size) if isinstance(size, (int, np.integer)) else (batch, *size)
        super().build(input_shape)
        self._build_shape = None  # the stack's input is the first cell's; it checks its own

    def check_input_features(self, features: int, arg: str) -> None:
        first = self.cells[0]
        if isinstance(first, Layer):
            first.check_input_features(features, arg)

    def get_initial_state(self, batch_size: int) -> list:
        """One entry per cell: that cell's own initial state (zeros)."""
        states = []
        for cell in self.cells:
            fn = getattr(cell, "get_initial_state", None)
            if fn is not None:
                states.append(fn(batch_size=batch_size))
            elif isinstance(cell.state_size, (int, np.integer)):
                states.append(np.zeros((batch_size, cell.state_size), dtype=self.dtype))
            else:
                states.append([np.zeros((batch_size, s), dtype=self.dtype) for s in cell.state_size])
        return states

    def call(self, inputs: np.ndarray, states: Sequence[Any], training: bool = False
             ) -> tuple[np.ndarray, list]:
        new_states = []
        for cell, cell_states in zip(self.cells, states):
            nested = isinstance(cell_states, (list, tuple))
            step = cell.call if isinstance(cell, Layer) else (cell if callable(cell) else cell.call)
            kwargs = {"training": training} if takes_training(step) else {}
            inputs, cell_new = step(inputs, list(cell_states) if nested else [cell_states], **kwargs)
            if not nested and isinstance(cell_new, (list, tuple)) and len(cell_new) == 1:
                cell_new = cell_new[0]
            new_states.append(cell_new)
        return inputs, new_states

    # ---------------------------------------------------------------- backward (training)

    def forward_step(self, inputs: np.ndarray, states: list, training: bool = False
                     ) -> tuple[np.ndarray, list, dict]:
        """`call` for training: each cell's step is cached for `backward_step`."""
        from unrolled.training.backprop import forward_step

        new_states, caches, bare = [], [], []
        for cell, cell_states in zip(self.cells, states):
            nested = isinstance(cell_states, (list, tuple))
            inputs, cell_new, cache = forward_step(
                cell, inputs, list(cell_states) if nested else [cell_states], training)
            new_states.append(list(cell_new) if nested or len(cell_new) != 1 else cell_new[0])
            caches.append(cache)
            bare.append(not nested)
        return inputs, new_states, {"cells": caches, "bare": bare}

    def backward_step(self, cache: dict, d_output: np.ndarray, d_new_states: list,
                      grads: Any) -> tuple[np.ndarray, list]:
        """Back through the stack, last cell first: cell k's input gradient is cell k-1's
        output gradient. `d_new_states` and the returned `d_states` have one entry per cell."""
        from unrolled.training.backprop import backward_step

        d_states: list = [None] * len(self.cells)
        d = d_output                                                     # (batch, units_last)
        for k in range(len(self.cells) - 1, -1, -1):
            d_cell_new = d_new_states[k]
            d_cell_new = [d_cell_new] if cache["bare"][k] else list(d_cell_new)
            d, d_cell = backward_step(self.cells[k], cache["cells"][k], d, d_cell_new, grads)
            d_states[k] = d_cell[0] if cache["bare"][k] else list(d_cell)
        return d, d_states

    def reset_dropout_mask(self) -> None:
        for cell in self.cells:
            if hasattr(cell, "reset_dropout_mask"):
                cell.reset_dropout_mask()

    def reset_recurrent_dropout_mask(self) -> None:
        for cell in self.cells:
            if hasattr(cell, "reset_recurrent_dropout_mask"):
                cell.reset_recurrent_dropout_mask()

    def get_config(self) -> dict:
        config = super().get_config()
        config["cells"] = [serialize_layer(c) for c in self.cells if hasattr(c, "get_config")]
        return config

    @classmethod
    def from_config(cls, config: dict) -> "StackedRNNCells":
        """Rebuild from `get_config()`; each entry of `cells` names one of unrolled's cells."""
        config = dict(config)
        cells = [deserialize_layer(c, f"cells[{k}]") if isinstance(c, dict) else c
                 for k, c in enumerate(config.pop("cells", []))]
        return cls(cells, **config)

    def __repr__(self) -> str:
        inner = ", ".join(repr(c) for c in self.cells)
        return f"StackedRNNCells([{inner}])"
