"""The recurrent-cell contract, written down once.

A cell computes one timestep: `output, new_states = cell(x_t, states)`. `RNN` runs it over time and
`StackedRNNCells` chains several cells into one. Anything with `call(inputs, states)` and
`state_size` is a cell (as in Keras); subclassing `RNNCell` adds input checking, the notebook's call
forms and dropout masks held fixed across the timesteps of one sequence.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from unrolled import _checks, _random
from unrolled.layers.base import Layer

__all__ = ["RNNCell"]


def _size_shape(size: Any) -> tuple:
    return (int(size),) if isinstance(size, (int, np.integer)) else tuple(int(s) for s in size)


def describe_states(cell: Any, batch: Any = "batch") -> str:
    """The nesting a cell's states must have, e.g. '[[h (batch, 4)], [h (batch, 6), c (batch, 6)]]'."""
    cells = getattr(cell, "cells", None)
    if cells is not None and _is_stack(cell):
        parts = [describe_states(c, batch) for c in cells]
        return "[" + ", ".join(p if p.startswith("[") else f"[{p}]" for p in parts) + "]"
    sizes = cell.state_size
    names = getattr(cell, "state_names", None)
    if isinstance(sizes, (int, np.integer)):
        return f"{(names or ['h'])[0]} {_checks.shape_str((batch,) + _size_shape(sizes))}"
    names = names or [f"s{i}" for i in range(len(sizes))]
    return "[" + ", ".join(f"{n} {_checks.shape_str((batch,) + _size_shape(s))}"
                           for n, s in zip(names, sizes)) + "]"


def _is_stack(cell: Any) -> bool:
    from unrolled.layers.stacked import StackedRNNCells

    return isinstance(cell, StackedRNNCells)


def check_states(states: Any, cell: Any, batch: int, dtype: np.dtype, owner: str,
                 arg: str = "states") -> Any:
    """Validate `states` against `cell.state_size` and convert every array to `dtype`.

    The nesting is kept: a bare array stays bare and a list or tuple becomes a list, one entry per
    cell for a stack, one array per state otherwise.
    """
    def fail(problem: str) -> None:
        raise ValueError(
            f"{owner}: `{arg}` {problem}. Expected {describe_states(cell, batch)}"
            f"{' (one entry per cell)' if _is_stack(cell) else ''}."
        )

    if _is_stack(cell):
        if not isinstance(states, (list, tuple)):
            fail(f"must be a list with one entry per cell of the stack, got {_kind(states)}")
        if len(states) != len(cell.cells):
            flat = len(states) > len(cell.cells)
            fail(f"has {len(states)} entries but the stack has {len(cell.cells)} cells"
                 + (" (a flat list of arrays is not accepted: nest the states per cell)"
                    if flat else ""))
        return [check_states(s, c, batch, dtype, owner, f"{arg}[{k}]")
                for k, (s, c) in enumerate(zip(states, cell.cells))]

    sizes = cell.state_size
    single = isinstance(sizes, (int, np.integer))
    size_list = [sizes] if single else list(sizes)
    nested = isinstance(states, (list, tuple))
    if not nested:
        if not single:
            fail(f"must be a list of {len(size_list)} arrays, got {_kind(states)}")
        items = [states]
    else:
        items = list(states)
        if len(items) != len(size_list):
            fail(f"has {len(items)} entries, expected {len(size_list)}")
    checked = []
    for k, (item, size) in enumerate(zip(items, size_list)):
        if isinstance(item, (list, tuple)):
            fail(f"entry {k} is a nested {type(item).__name__}, expected an array")
        array = _checks.as_float_array(item, arg, owner, dtype)
        want = (batch,) + _size_shape(size)
        if array.shape != want:
            fail(f"{'entry ' + str(k) + ' ' if nested else ''}has shape "
                 f"{_checks.shape_str(array.shape)}, expected {_checks.shape_str(want)}")
        checked.append(array)
    return checked if nested else checked[0]


def _kind(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of {len(value)}"
    shape = getattr(value, "shape", None)
    return f"an array of shape {_checks.shape_str(shape)}" if shape is not None else repr(value)


def takes_training(fn: Any) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "training" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


class RNNCell(Layer):
    """Base class for recurrent cells: one timestep, `(output, new_states) = cell(x_t, states)`.

    Subclasses set `state_size` (an int for one state, a list for several) and `output_size`,
    create weights in `build(input_shape)` and compute one step in
    `call(inputs, states, training=False)`. `inputs` is `(batch, features)`; `states` is a bare
    array or a list, and `new_states` mirrors that nesting.

    Calling a cell accepts the forms found in the wild: `cell(x, states)`,
    `cell(inputs=x, states=h)` (Keras 2 and the notebook) and `cell(sequence=x, states=h)`
    (Keras 3).

    Dropout: a subclass with `dropout` / `recurrent_dropout` rates uses `get_dropout_mask` and
    `get_recurrent_dropout_mask`; a mask is drawn once per sequence (once per direct call) and
    reused at every timestep, and applies only with `training=True`.
    """

    state_size: Any = None
    output_size: Any = None
    dropout: float = 0.0
    recurrent_dropout: float = 0.0
    # Set by `unrolled.trace` while it runs; `call` reports its intermediate values through
    # `_record` only then, so the normal path pays one attribute check per step.
    _recorder: Any = None

    def __init__(self, *, seed: int | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise TypeError(f"{type(self).__name__}: `seed` must be an integer or None, got {seed!r}.")
        self.seed = seed
        self._rng = _random.seed_rng(int(seed) if seed is not None else _random.make_default_seed())
        self._dropout_mask: np.ndarray | None = None
        self._recurrent_dropout_mask: np.ndarray | None = None

    def get_initial_state(self, batch_size: int) -> list[np.ndarray]:
        """Zeros for every state: a list with one `(batch_size, size)` array per state."""
        sizes = [self.state_size] if isinstance(self.state_size, (int, np.integer)) else self.state_size
        return [np.zeros((batch_size,) + _size_shape(s), dtype=self.dtype) for s in sizes]

    def _record(self, **values: Any) -> None:
        """Hand this step's named intermediate values (x_t, z, h, gates, ...) to the recorder."""
        if self._recorder is not None:
            self._recorder.record(self, values)

    # ---------------------------------------------------------------- dropout masks

    def _draw_mask(self, like: np.ndarray, rate: float) -> np.ndarray:
        if rate >= 1.0:
            return np.zeros_like(like)
        keep = 1.0 - rate
        return (self._rng.random(like.shape) < keep).astype(like.dtype) / like.dtype.type(keep)

    def get_dropout_mask(self, step_input: np.ndarray) -> np.ndarray | None:
        """The input dropout mask for this sequence, drawn on first use; None without dropout."""
        if self._dropout_mask is None and self.dropout > 0:
            self._dropout_mask = self._draw_mask(step_input, self.dropout)
        return self._dropout_mask

    def get_recurrent_dropout_mask(self, step_state: np.ndarray) -> np.ndarray | None:
        """The recurrent dropout mask for this sequence, drawn on first use; None without it."""
        if self._recurrent_dropout_mask is None and self.recurrent_dropout > 0:
            self._recurrent_dropout_mask = self._draw_mask(step_state, self.recurrent_dropout)
        return self._recurrent_dropout_mask

    def reset_dropout_mask(self) -> None:
        if self._dropout_mask is not None:  # RNN resets after every call: skip __setattr__
            self._dropout_mask = None

    def reset_recurrent_dropout_mask(self) -> None:
        if self._recurrent_dropout_mask is not None:
            self._recurrent_dropout_mask = None

    # ---------------------------------------------------------------- calling

    def __call__(self, inputs: Any = None, states: Any = None, training: bool = False, *,
                 sequence: Any = None, **kwargs: Any) -> tuple[np.ndarray, Any]:
        owner = type(self).__name__
        if kwargs:
            raise TypeError(
                f"{owner}() got unexpected keyword argument(s) {sorted(kwargs)}; a cell is called "
                f"as cell(inputs, states, training=False)."
            )
        if inputs is not None and sequence is not None:
            raise TypeError(f"{owner}: pass the step input once, as `inputs` or as `sequence`, not both.")
        x = sequence if inputs is None else inputs
        if x is None:
            raise TypeError(f"{owner}: missing the step input; call cell(inputs, states).")
        x = _checks.as_float_array(x, "inputs", owner, np.dtype(self.dtype))
        if x.ndim != 2:
            raise ValueError(
                f"{owner}: a cell computes one timestep, so `inputs` must be 2-D "
                f"(batch, features); got shape {_checks.shape_str(x.shape)}."
                + (" To run over a whole sequence (batch, timesteps, features), wrap the cell: "
                   f"RNN({owner}(...)) or use the matching layer." if x.ndim == 3 else
                   " Add a batch axis, e.g. x[None, :]." if x.ndim == 1 else "")
            )
        self._maybe_build(x.shape)
        self.check_input_features(x.shape[-1], "inputs")
        if states is None:
            raise TypeError(
                f"{owner}: missing `states`. For the first step pass zeros, e.g. "
                f"states=cell.get_initial_state({x.shape[0]})."
            )
        states = check_states(states, self, x.shape[0], np.dtype(self.dtype), owner)
        try:
            if takes_training(self.call):
                return self.call(x, states, training=training)
            return self.call(x, states)
        finally:
            self.reset_dropout_mask()
            self.reset_recurrent_dropout_mask()
