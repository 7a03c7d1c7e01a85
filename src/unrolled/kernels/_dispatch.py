"""Choosing a kernel for an RNN call, and the mask/output rules every kernel shares."""

from __future__ import annotations

from typing import Any

import numpy as np

from unrolled.kernels import _numba
from unrolled.kernels._plan import NO_MASK, Steps
from unrolled.kernels._threads import step_threads
from unrolled.kernels.gru import gru
from unrolled.kernels.lstm import lstm
from unrolled.kernels.simple_rnn import simple_rnn
from unrolled.layers.gru import GRUCell
from unrolled.layers.lstm import LSTMCell
from unrolled.layers.simple_rnn import SimpleRNNCell
from unrolled.layers.stacked import StackedRNNCells

__all__ = ["run", "KERNELS"]

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
        kernels.append(_numba.loop_for(c, x.shape[0]) or kernel)
    return cells, kernels


def run(rnn: Any, x: np.ndarray, states: list, mask: np.ndarray | None,
        training: bool) -> tuple[np.ndarray, np.ndarray | None, list] | None:
    """`(last, outputs, final)` exactly as `RNN._reference_loop` returns them, or None.

    None means no kernel applies (a user-written or subclassed cell, float16, training-mode
    dropout, a cell with a recorder) and the caller runs the reference loop.
    """
    if x.ndim != 3 or x.dtype not in _FLOATS:
        return None
    found = _cells_and_kernels(rnn.cell, x, training)
    if found is None:
        return None
    cells, kernels = found
    dtype = x.dtype
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

    stacked = len(cells) > 1 or type(rnn.cell) is StackedRNNCells
    per_cell = states if stacked else [states]
    finals = []
    seq = xt
    last_index = len(cells) - 1
    # One BLAS thread for the whole call (projection chunks and step products alike: both are
    # small products), unless a step's h W is large; see _threads.
    work = max(x.shape[0] * c.recurrent_kernel.shape[0] * c.recurrent_kernel.shape[1]
               for c in cells)
    with step_threads(work):
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

    h_last = cell_final[0]                                          # (batch, units)
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
    return last, outputs, finals if stacked else finals[0]
