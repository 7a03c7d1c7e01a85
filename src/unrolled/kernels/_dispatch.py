"""Choosing a kernel for an RNN call, and the mask/output rules every kernel shares."""

from __future__ import annotations

from typing import Any

import numpy as np

from unrolled.kernels import _numba, _outputs, _runs
from unrolled.kernels._plan import NO_MASK, Steps
from unrolled.kernels import _threads
from unrolled.kernels._threads import step_threads
from unrolled.kernels.gru import gru
from unrolled.kernels.lstm import lstm
from unrolled.kernels.simple_rnn import simple_rnn
from unrolled.layers.gru import GRUCell
from unrolled.layers.lstm import LSTMCell
from unrolled.layers.simple_rnn import SimpleRNNCell
from unrolled.layers.stacked import StackedRNNCells

__all__ = ["run", "plan_for", "kept_plan", "execute", "Plan", "KERNELS"]

# Exact classes only: a subclass may override `call`, and then only the reference loop is right.
KERNELS: dict[type, Any] = {SimpleRNNCell: simple_rnn, LSTMCell: lstm, GRUCell: gru}

_FLOATS = (np.dtype("float32"), np.dtype("float64"))


def _drops(cell: Any) -> bool:
    """Whether the cell applies dropout in training (LSTM and GRU only for 0 < rate < 1)."""
    if type(cell) is SimpleRNNCell:
        return cell.dropout > 0 or cell.recurrent_dropout > 0
    return 0 < cell.dropout < 1 or 0 < cell.recurrent_dropout < 1


def _cells_and_kernels(cell: Any, x: np.ndarray, training: bool) -> tuple[list, list] | None:
    cells = cell.cells if type(cell) is StackedRNNCells else (cell,)
    kernels = []
    dtype = x.dtype
    for c in cells:
        kernel = KERNELS.get(type(c))
        if kernel is None or not c.built or c._recorder is not None:
            return None
        if training and _drops(c):
            return None  # dropout masks are drawn per sequence by the cell: reference loop
        for w in c._weights:
            if w.value.dtype != dtype:
                return None
        kernels.append(_numba.loop_for(c, x.shape[0], x.shape[1]) or kernel)
    return cells, kernels


class Plan:
    """What `run` decides for one layer and input shape: the cells, their kernels, the thread
    limit. `RNN.__call__` keeps the plan of its last plain call (an array of the layer's dtype,
    no mask, no initial state, not training, not stateful) and reuses it while calls keep that
    shape, skipping the checks and the kernel choice. Setting any attribute of the layer or its
    cells drops the plan (`Layer.__setattr__`); so does turning the compiled loops on or off.
    """

    __slots__ = ("cells", "kernels", "work", "parts", "units", "blas", "shape", "dtype",
                 "compiled", "states", "single", "plain", "state_shapes")

    def __init__(self, cells: list, kernels: list, x: np.ndarray, single: bool):
        self.cells, self.kernels = cells, kernels
        step_works = [x.shape[0] * c.recurrent_kernel.shape[0] * c.recurrent_kernel.shape[1]
                      for c in cells]
        # the step products' multiply-adds where BLAS runs them, whose thread count is chosen
        # by the work (`_threads.in_range`); not those a compiled loop runs on one thread of its
        # own (`blas_steps`: a few rows' `rows_product`)
        self.work = max(w if getattr(k, "blas_steps", True) else 0
                        for w, k in zip(step_works, kernels))
        # blocks of rows at once: only when every kernel is a compiled loop that runs them
        self.parts = (_threads.row_parts(x.shape[0], x.shape[1] * sum(step_works))
                      if all(getattr(k, "rows", False) for k in kernels) else 1)
        # each step's units split between threads: for small batches (beside blocks of rows
        # where those are offered too), by the most blocks of units any cell's step has
        self.units = (_threads.unit_parts(x.shape[0], max(k.units for k in kernels),
                                          all(getattr(k, "units_any_batch", False)
                                              for k in kernels))
                      if all(getattr(k, "units", 0) for k in kernels) else 1)
        # whether any kernel calls BLAS: if none does, one BLAS thread and all are one setting
        self.blas = any(getattr(k, "blas", True) for k in kernels)
        self.shape, self.dtype = x.shape, x.dtype
        self.compiled = _numba.enabled
        self.states: list | None = None
        self.single = single  # one cell, not a stack: `call` takes the short route
        sizes = cells[0].state_size
        sizes = [sizes] if isinstance(sizes, (int, np.integer)) else sizes
        self.state_shapes = [(x.shape[0], int(s)) for s in sizes] if single else None
        # One cell on a small-shape compiled loop (no BLAS, so no thread setting to choose):
        # its kernel returns the layer's whole result. Not for an output large enough to come
        # from the kept buffers (unrolled.kernels._outputs): the kernel's own route takes them.
        large = x.shape[0] * x.shape[1] * cells[0].units * x.dtype.itemsize
        self.plain = (getattr(kernels[0], "plain", None)
                      if single and large < _outputs.KEEP_MIN_BYTES else None)

    def given_states(self, states: Any) -> list | None:
        """`initial_state` as a list the kernels take as it is, or None unless it is exactly
        what the layer's checks would pass unchanged: one cell, and an array (one state) or a
        list or tuple of arrays, each of the plan's dtype and the cell's state shape. None
        sends the call down the full path, whose checks give the error where there is one."""
        shapes = self.state_shapes
        if shapes is None:
            return None
        if type(states) is np.ndarray:
            states = [states]
        elif type(states) is not list and type(states) is not tuple:
            return None
        if len(states) != len(shapes):
            return None
        for s, shape in zip(states, shapes):
            if type(s) is not np.ndarray or s.dtype != self.dtype or s.shape != shape:
                return None
        return list(states)

    def call(self, rnn: Any, x: np.ndarray, states: list | None = None) -> Any:
        """The layer's return value for `x` from `states` (from `given_states`; the cell's
        initial states if None), or None when `x` or the settings differ from the plan's (the
        caller then takes the full path)."""
        if x.shape != self.shape or x.dtype != self.dtype or _numba.enabled != self.compiled:
            return None
        if states is None:
            states = self.states
        if self.plain is not None:
            return self.plain(rnn, x, states)
        if self.single and not _threads.chooses(self.work, self.parts, self.units):
            # `execute` for one cell, no mask, no thread choice: at small shapes its generality
            # is a third of the call.
            xt = x.transpose(1, 0, 2)                               # (timesteps, batch, features)
            if rnn.go_backwards:
                xt = xt[::-1]
            seq, final = self.kernels[0](self.cells[0], xt, states, NO_MASK,
                                         rnn.return_sequences)
            if seq is None:
                output = final[0]
            else:
                if rnn.return_state:
                    final[0] = final[0].copy()  # not a view that keeps the whole sequence alive
                output = seq.transpose(1, 0, 2)                     # (batch, timesteps, units)
            return (output, *final) if rnn.return_state else output
        last, outputs, final = execute(self, rnn, x, states, None)
        output = outputs if rnn.return_sequences else last
        return (output, *final) if rnn.return_state else output


def plan_for(rnn: Any, x: np.ndarray, training: bool) -> Plan | None:
    """The kernels for calling `rnn` on `x`, or None when the reference loop must run."""
    if x.ndim != 3 or x.dtype not in _FLOATS:
        return None
    found = _cells_and_kernels(rnn.cell, x, training)
    return None if found is None else Plan(*found, x, type(rnn.cell) is not StackedRNNCells)


_KEPT = ("_call_plan", "_plan")  # a layer's kept plans, in the order `run` looks at them


def kept_plan(rnn: Any, x: np.ndarray) -> Plan | None:
    """The plan `rnn` keeps for calls shaped like `x` (`_call_plan`, else the plain calls'
    `_plan`), made under the compiled loops' present setting, or None."""
    for name in _KEPT:
        kept = rnn.__dict__.get(name)
        if (kept is not None and x.shape == kept.shape and x.dtype == kept.dtype
                and _numba.enabled == kept.compiled):
            return kept
    return None


def run(rnn: Any, x: np.ndarray, states: list, mask: np.ndarray | None,
        training: bool) -> tuple[np.ndarray, np.ndarray | None, list] | None:
    """`(last, outputs, final)` exactly as `RNN._reference_loop` returns them, or None.

    None means no kernel applies (a user-written or subclassed cell, float16, training-mode
    dropout, a cell with a recorder) and the caller runs the reference loop.

    Outside training the layer keeps the plan (`_call_plan`) for its next call of the same
    shape: a generator's loop calls a layer a step at a time with the state of the call before,
    and making the plan again (the checks, binding the kernels) took 50 of the 67 us of such a
    call of a SimpleRNN(256) (RESULTS.md, round 30). The plain calls' plan (`Plan`, made just
    before by the first plain call of a shape) serves as well. Setting any attribute of the
    layer or its cells drops both.
    """
    if not training:
        kept = kept_plan(rnn, x)
        if kept is not None:
            return execute(kept, rnn, x, states, mask)
    plan = plan_for(rnn, x, training)
    if plan is None:
        return None
    if not training:
        rnn.__dict__["_call_plan"] = plan
    return execute(plan, rnn, x, states, mask)


def execute(plan: Plan, rnn: Any, x: np.ndarray, states: list, mask: np.ndarray | None
            ) -> tuple[np.ndarray, np.ndarray | None, list]:
    """Run the plan's kernels over `x` from `states` (read, never written)."""
    backwards = rnn.go_backwards
    xt = x.transpose(1, 0, 2)                                       # (timesteps, batch, features)
    if backwards:
        xt = xt[::-1]
    if mask is not None and mask.all():
        mask = None
    if mask is None:
        steps = NO_MASK
    else:
        steps = Steps(mask.T[::-1] if backwards else mask.T)        # (timesteps, batch)

    # A padded batch whose valid steps form one run a sample: only the valid rows of each span
    # of steps run (unrolled.kernels._runs). One cell only (a stack's cells would need a span's
    # sequence between them).
    spans = (_runs.plan(steps.valid, (plan.cells[0].kernel.shape[0]
                                      + plan.cells[0].recurrent_kernel.shape[0])
                        * plan.cells[0].recurrent_kernel.shape[1])
             if steps.valid is not None and plan.single else None)
    body = _each_cell if spans is None else (
        lambda plan, rnn, xt, states, steps: _by_spans(plan, rnn, x, states, steps, spans))

    # One BLAS thread for the whole call (projection chunks and step products alike: both are
    # small products), every thread, or blocks of rows on threads: timed per kind of call; see
    # _threads.
    if _threads.chooses(plan.work, plan.parts, plan.units):
        with step_threads(plan.work, (x.shape, tuple(type(c) for c in plan.cells),
                                      spans is not None), plan.parts, blas=plan.blas,
                          unit_split=plan.units):
            seq, finals, stacked = body(plan, rnn, xt, states, steps)
    else:
        seq, finals, stacked = body(plan, rnn, xt, states, steps)

    last_final = finals[-1] if stacked else finals
    h_last = last_final[0] if isinstance(last_final, list) else last_final   # (batch, units)
    valid = steps.valid
    if valid is not None and (rnn.zero_output_for_mask or rnn.unroll):
        # zero_output_for_mask: masked steps output zeros. unroll (Keras's unrolled loop): a
        # masked step repeats the previous *output*, which is zeros until the first valid step
        # and the carried h after it.
        keep = valid if rnn.zero_output_for_mask else np.logical_or.accumulate(valid, axis=0)
        if seq is not None:
            np.copyto(seq, 0, where=~keep[:, :, None])
        else:
            h_last = np.where(keep[-1][:, None], h_last, 0)
    if seq is not None:
        last = seq[-1]
        outputs = seq.transpose(1, 0, 2)                            # (batch, timesteps, units)
    else:
        last, outputs = h_last, None
    return last, outputs, finals


def _each_cell(plan: Plan, rnn: Any, xt: np.ndarray, states: list, steps: Steps
               ) -> tuple[np.ndarray | None, list, bool]:
    """Each cell's kernel over the sequence the cell below produced: `(seq, finals, stacked)`."""
    cells, kernels = plan.cells, plan.kernels
    dtype = xt.dtype
    stacked = len(cells) > 1 or type(rnn.cell) is StackedRNNCells
    per_cell = states if stacked else [states]
    finals = []
    seq = xt
    last_index = len(cells) - 1
    for i, (cell, kernel) in enumerate(zip(cells, kernels)):
        entry = per_cell[i]
        nested = isinstance(entry, (list, tuple))
        cell_states = [s if s.dtype == dtype else s.astype(dtype)
                       for s in (entry if nested else (entry,))]
        need_seq = i < last_index or rnn.return_sequences
        seq, cell_final = kernel(cell, seq, cell_states, steps, need_seq)
        if need_seq and (i < last_index or rnn.return_state or (
                steps.valid is not None and (rnn.zero_output_for_mask or rnn.unroll))):
            # Don't let a state alias (and keep alive) the sequence buffer it was written in.
            cell_final[0] = cell_final[0].copy()
        finals.append(cell_final if nested else cell_final[0])
    return seq, (finals if stacked else finals[0]), stacked


def _by_spans(plan: Plan, rnn: Any, x: np.ndarray, states: Any, steps: Steps,
              spans: _runs.Segments) -> tuple[np.ndarray | None, Any, bool]:
    """`_each_cell` for one cell, span by span. The rows are put in `spans.order` once (the
    input, the states, the mask), so that each span runs the kernel on its first rows, a view,
    with the mask for those that start or stop inside it; the other rows keep their states,
    and their outputs there are the h they carry. The outputs and states are put back in the
    caller's order at the end."""
    cell, kernel = plan.cells[0], plan.kernels[0]
    B, T = x.shape[:2]
    dtype = x.dtype
    order = spans.order
    xt = x[order].transpose(1, 0, 2)                            # (timesteps, batch, features)
    if rnn.go_backwards:
        xt = xt[::-1]
    valid = steps.valid[:, order]                               # (timesteps, batch)
    nested = isinstance(states, (list, tuple))
    current = [np.array(np.broadcast_to(s, (B, np.shape(s)[-1]))[order], dtype=dtype)
               for s in (states if nested else (states,))]      # each (batch, units), sorted
    need_seq = rnn.return_sequences
    seq = np.empty((T, B, cell.units), dtype=dtype) if need_seq else None
    for start, stop, rows in spans.spans:
        if need_seq:  # rows out of this span carry their h through it
            seq[start:stop, rows:] = current[0][rows:]
        if not rows:
            continue
        part = valid[start:stop, :rows]
        out, final = kernel(cell, xt[start:stop, :rows], [s[:rows] for s in current],
                            NO_MASK if part.all() else Steps(part), need_seq)
        if need_seq:
            seq[start:stop, :rows] = out
        for s, f in zip(current, final):
            s[:rows] = f
    back = np.argsort(order)                                    # sorted row of each row
    finals = [s[back] for s in current]
    if need_seq:
        seq = seq[:, back]
    return seq, (finals if nested else finals[0]), False
