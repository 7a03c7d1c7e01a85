"""`trace`: run a layer normally with a recorder attached and keep every value it computed.

The recorder is the hook on main: `RNN._recorder` (the loop calls `begin_step` / `end_step`) and
`RNNCell._recorder` (each cell's `call` hands its named intermediate values to `record`). Nothing
here recomputes a formula; a trace holds copies of the arrays the layer itself produced.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["trace", "Trace", "Step", "leaf_cells"]

_MISSING = object()


def leaf_cells(cell: Any) -> list:
    """The cells that compute, in depth order: a stack (of stacks) is flattened."""
    from unrolled.layers.stacked import StackedRNNCells

    if isinstance(cell, StackedRNNCells):
        return [leaf for c in cell.cells for leaf in leaf_cells(c)]
    return [cell]


def _copy_tree(tree: Any) -> Any:
    if isinstance(tree, (list, tuple)):
        return [_copy_tree(item) for item in tree]
    return None if tree is None else np.array(tree, copy=True)


class Step:
    """One timestep of a trace.

    Attributes:
        k: the processing index (0, 1, ...); with `go_backwards` the first step processed is the
            last timestep.
        t: the timestep of the input it read, `x[:, t]`.
        mask: `(batch,)` booleans, True where the step is real for that sample; None without mask.
        cells: one dict per cell (depth order) of the values that cell recorded: for a
            SimpleRNNCell `x_t, h_prev, xU, hW, b, z, h`; an empty dict for a cell that records
            nothing (a user-written cell).
        output: `(batch, units)` what the layer output at this step, after masking.
        states: the states after this step, nested as the cell's states, after masking.
    """

    def __init__(self, k: int, t: int, mask: np.ndarray | None, cells: list[dict] | None = None,
                 output: np.ndarray | None = None, states: Any = None):
        self.k, self.t, self.mask = k, t, mask
        self.cells = cells if cells is not None else []
        self.output, self.states = output, states

    def __repr__(self) -> str:
        return f"Step(k={self.k}, t={self.t}, cells={[sorted(c) for c in self.cells]})"


class _Recorder:
    """Receives the hooks' calls and assembles `Step`s."""

    def __init__(self, cells: list):
        self.cells = cells
        self.steps: list[Step] = []
        self.current: Step | None = None

    def _new_step(self, k: int, t: int, mask: Any) -> Step:
        return Step(k, t, None if mask is None else np.array(mask, dtype=bool),
                    [{} for _ in self.cells])

    def begin_step(self, rnn: Any, k: int, t: int, step_mask: Any) -> None:
        self.current = self._new_step(k, t, step_mask)

    def record(self, cell: Any, values: dict) -> None:
        if self.current is None:  # a bare cell called outside an RNN loop: one step
            self.current = self._new_step(0, 0, None)
        index = next((i for i, c in enumerate(self.cells) if c is cell), None)
        if index is None:  # pragma: no cover - a cell reached that trace did not attach to
            return
        self.current.cells[index] = {name: np.array(value, copy=True)
                                     for name, value in values.items() if value is not None}

    def end_step(self, rnn: Any, output: Any, states: Any) -> None:
        step = self.current if self.current is not None else self._new_step(len(self.steps), 0, None)
        step.output = np.array(output, copy=True)
        step.states = _copy_tree(states)
        self.steps.append(step)
        self.current = None


class Trace:
    """Every value a layer computed on one input, step by step and cell by cell.

    Made by `unrolled.trace(layer, x)`. The steps are in processing order (reversed time with
    `go_backwards`, as the layer's returned sequence is).

    Attributes:
        layer: the traced object (an `RNN`, a `SimpleRNN`, or a bare cell).
        cells: the computing cells in depth order (one for a single cell, several for a stack).
        x: the input, `(batch, timesteps, features)` for a layer, `(batch, features)` for a cell.
        mask: `(batch, timesteps)` booleans or None.
        initial_states: the states the first step started from, nested as the cell's states.
        steps: a list of `Step`.
        result: exactly what the call returned.
        is_cell: True when a bare cell (one step) was traced.
    """

    def __init__(self, layer: Any, cells: list, x: np.ndarray, mask: Any, initial_states: Any,
                 steps: list[Step], result: Any, is_cell: bool, initial_state_arg: Any = None,
                 mask_arg: Any = None):
        self.layer = layer
        # The arguments as given, so the same call can be made again without the recorder.
        self.initial_state_arg = initial_state_arg
        self.mask_arg = mask_arg
        self.cells = cells
        self.x = x
        self.mask = mask
        self.initial_states = initial_states
        self.steps = steps
        self.result = result
        self.is_cell = is_cell

    # ---------------------------------------------------------------- reading it

    @property
    def batch(self) -> int:
        return int(self.x.shape[0])

    @property
    def depth(self) -> int:
        return len(self.cells)

    @property
    def h(self) -> np.ndarray:
        """Every step's output, `(batch, steps, units)`, in processing order."""
        return np.stack([s.output for s in self.steps], axis=1)

    @property
    def final_states(self) -> Any:
        """The states after the last step, nested as the cell's states."""
        return self.steps[-1].states

    @property
    def output(self) -> Any:
        """The layer's main output as the call returned it (the first entry with return_state)."""
        if self.is_cell or getattr(self.layer, "return_state", False):
            return self.result[0]
        return self.result

    def values(self, name: str, cell: int = -1) -> np.ndarray:
        """One recorded quantity over the steps, `(batch, steps, ...)`, e.g. `values("z")`.

        Args:
            name: a name the cell records (SimpleRNNCell: x_t, h_prev, xU, hW, b, z, h).
            cell: which cell of a stack, by depth index; default the last.
        """
        found = [s.cells[cell].get(name) for s in self.steps]
        if any(v is None for v in found):
            known = sorted(self.steps[0].cells[cell]) if self.steps else []
            raise KeyError(f"Trace.values: cell {cell} recorded no {name!r}; it recorded {known}.")
        if found[0].ndim == 1:  # a weight such as b: the same every step
            return np.stack(found, axis=0)
        return np.stack(found, axis=1)

    def __len__(self) -> int:
        return len(self.steps)

    def __repr__(self) -> str:
        what = type(self.layer).__name__
        return (f"Trace({what}, batch={self.batch}, steps={len(self.steps)}, "
                f"cells={self.depth}{', masked' if self.mask is not None else ''})")

    def __str__(self) -> str:
        from unrolled.explain._text import trace_text

        return trace_text(self)

    def _repr_html_(self) -> str:
        from unrolled.explain.page import page_html

        return page_html(self, inline=True)

    def save_html(self, path: str) -> str:
        """Write the interactive page (one self-contained HTML file) to `path`; returns the path."""
        from unrolled.explain.page import write_page

        return write_page(self, path)


def _attach(objects: list, recorder: _Recorder) -> list:
    saved = []
    for obj in objects:
        saved.append((obj, obj.__dict__.get("_recorder", _MISSING)))
        obj._recorder = recorder
    return saved


def _detach(saved: list) -> None:
    for obj, previous in saved:
        if previous is _MISSING:
            obj.__dict__.pop("_recorder", None)
        else:
            obj._recorder = previous


def trace(layer: Any, x: Any, initial_state: Any = None, mask: Any = None, *,
          training: bool = False) -> Trace:
    """Run `layer` on `x` as usual and record every intermediate value, step by step.

    A recorder is attached to the layer's loop and to every cell, the layer is called normally
    (so the reference loop that defines its numbers runs), and the recorder is detached again,
    even on error. The result of the call is kept in `Trace.result`: it is what `layer(x, ...)`
    returns.

    Args:
        layer: an `RNN` (`SimpleRNN`, `RNN(cell)`, `RNN([cells])`, ...) or a bare cell
            (`SimpleRNNCell`, `StackedRNNCells`, ...), which computes one step. Or a model
            (`Sequential`, functional `Model`) or a wrapper (`Bidirectional`,
            `TimeDistributed`): it runs once and every recurrent layer inside is traced on the
            input, mask and states it was really given; a `ModelTrace` is returned, whose
            `traces[name]` are `Trace`s (a Bidirectional's as `forward_<name>` and
            `backward_<name>`) and whose `outputs[name]` are every layer's outputs.
        x: `(batch, timesteps, features)` for a layer; `(batch, features)` for a cell; what the
            model takes for a model (e.g. integer ids for one starting with Embedding).
        initial_state: as the layer's `initial_state` (or the cell's `states`); default zeros.
        mask: `(batch, timesteps)` booleans, for a layer.
        training: passed on to the call (dropout applies when True).

    Returns:
        A `Trace` (a `ModelTrace` for a model or wrapper). In a notebook it shows the interactive
        page; `str()` gives a text table.

    Example:
        >>> import numpy as np
        >>> import unrolled
        >>> rnn = unrolled.layers.SimpleRNN(3, return_sequences=True)
        >>> tr = unrolled.trace(rnn, np.ones((2, 4, 5), dtype="float32"))
        >>> len(tr.steps), sorted(tr.steps[0].cells[0])
        (4, ['b', 'h', 'hW', 'h_prev', 'xU', 'x_t', 'z'])
        >>> bool(np.array_equal(tr.h, tr.result))        # (batch, timesteps, units)
        True
    """
    from unrolled.layers.base import Layer
    from unrolled.layers.rnn import RNN

    if isinstance(layer, RNN):
        return _trace_rnn(layer, x, initial_state, mask, training)
    if hasattr(layer, "call") and hasattr(layer, "state_size"):
        if mask is not None:
            raise ValueError(
                f"trace: `mask` applies to a layer over time; {type(layer).__name__} is a cell, "
                f"which computes one step. Trace RNN({type(layer).__name__}(...)) to use a mask."
            )
        return _trace_cell(layer, x, initial_state, training)
    from unrolled.explain._models import is_container, trace_model

    if is_container(layer):
        return trace_model(layer, x, mask, training=training, initial_state=initial_state)
    kind = type(layer).__name__
    hint = ""
    raise TypeError(
        f"trace: `layer` must be a recurrent layer (SimpleRNN, RNN, ...) or a cell "
        f"(SimpleRNNCell, StackedRNNCells, ...), got {kind}"
        f"{'' if isinstance(layer, Layer) else ' (not an unrolled layer)'}.{hint}"
    )


def _trace_rnn(layer: Any, x: Any, initial_state: Any, mask: Any, training: bool) -> Trace:
    from unrolled import _checks

    owner = f"trace({type(layer).__name__} '{layer.name}')"
    array = _checks.as_float_array(x, "x", owner, np.dtype(layer.dtype))
    if array.ndim != 3:
        raise ValueError(f"{owner}: `x` must be (batch, timesteps, features), got shape "
                         f"{_checks.shape_str(array.shape)}.")
    batch = array.shape[0]
    if initial_state is not None:
        initial = _copy_tree(initial_state if isinstance(initial_state, (list, tuple))
                             else [initial_state])
    elif layer.stateful and layer.states is not None:
        initial = _copy_tree(layer.states)
    else:
        layer._maybe_build(array.shape)
        initial = _copy_tree(layer.get_initial_state(batch))
    cells = leaf_cells(layer.cell)
    recorder = _Recorder(cells)
    saved = _attach([layer] + [c for c in cells if hasattr(c, "_record")], recorder)
    try:
        result = layer(array, initial_state=initial_state, mask=mask, training=training)
    finally:
        _detach(saved)
    mask_array = None if mask is None else layer._check_mask(mask, batch, array.shape[1], owner)
    return Trace(layer, cells, array, mask_array, initial, recorder.steps, result, is_cell=False,
                 initial_state_arg=initial_state, mask_arg=mask)


def _trace_cell(cell: Any, x: Any, initial_state: Any, training: bool) -> Trace:
    from unrolled import _checks

    owner = f"trace({type(cell).__name__})"
    array = _checks.as_float_array(x, "x", owner, np.dtype(getattr(cell, "dtype", "float32")))
    if array.ndim != 2:
        raise ValueError(
            f"{owner}: a cell computes one step, so `x` must be (batch, features), got shape "
            f"{_checks.shape_str(array.shape)}. To trace a sequence, trace RNN(cell).")
    states = initial_state
    if states is None:
        if hasattr(cell, "_maybe_build"):
            cell._maybe_build(array.shape)
        states = cell.get_initial_state(array.shape[0])
    initial = _copy_tree(states if isinstance(states, (list, tuple)) else [states])
    cells = leaf_cells(cell)
    recorder = _Recorder(cells)
    saved = _attach([c for c in cells if hasattr(c, "_record")], recorder)
    try:
        result = cell(array, states, training=training)
    finally:
        _detach(saved)
    output, new_states = result
    recorder.current = recorder.current or recorder._new_step(0, 0, None)
    recorder.end_step(None, output, new_states if isinstance(new_states, (list, tuple))
                      else [new_states])
    return Trace(cell, cells, array, None, initial, recorder.steps, result, is_cell=True)
