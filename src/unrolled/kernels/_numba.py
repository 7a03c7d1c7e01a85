"""Compiled whole-sequence loops (Numba), for small shapes, when Numba is installed.

At small shapes a NumPy kernel's time is Python's: every step is 3 (SimpleRNN) to 12 (GRU)
NumPy calls of about a microsecond each, whatever their size. These loops run the whole
sequence, projection included, in one compiled call. They compute what the NumPy kernels
compute, in the same order per number (projection `x U`, then `+ b`, then `+ h W`), as plain
loops; tests/test_kernels.py proves them equal to the reference loop.

Used automatically when all of these hold:
- `numba` imports (`pip install unrolled[numba]`) and `UNROLLED_NUMBA` is not "0";
- one step's `h W` is at most `WORK_MAX[gates]` multiply-adds (above it the NumPy kernel, with
  BLAS's blocked matmul, wins);
- the activations are tanh, sigmoid, relu or linear (others run in the NumPy kernel).

Costs, paid once per process: importing Numba (0.5-2 s) on the first small call, and loading
each compiled loop from Numba's cache (`cache=True`: compiled once per machine and dtype, about
5-15 s each the very first time, stored next to this file or in Numba's user cache directory).
`import unrolled` never imports Numba. `UNROLLED_NUMBA=0` (read at the first call) turns the
compiled loops off; so does setting `unrolled.kernels._numba.enabled = False`.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np

from unrolled import activations

__all__ = ["available", "loop_for", "WORK_MAX"]

# The largest step product `(batch, units) @ (units, gates*units)`, in multiply-adds, run
# compiled, by number of gates. Measured interleaved (benchmarks/RESULTS.md), compiled vs NumPy
# kernel: SimpleRNN 1.9x faster at (4, 2), 1.6x at (8, 8), 0.75x at (16, 16); LSTM and GRU
# 5.8-6x at (4, 2), 2.1-2.7x at (16, 16), 0.85-1.0x at (32, 32). A SimpleRNN step is only 3
# NumPy calls, a gated step 10-12, so the compiled loop pays longer for gated cells.
WORK_MAX = {1: 1 << 11, 3: 1 << 16, 4: 1 << 16}

LINEAR, TANH, SIGMOID, RELU = 0, 1, 2, 3
_CODES = {activations.linear: LINEAR, activations.tanh: TANH, activations.sigmoid: SIGMOID,
          activations.relu: RELU}

_loops: dict[str, Callable] | None = None
_failed = False
# Read once, at the first call that could use a compiled loop; tests and the benchmark flip it.
enabled: bool | None = None
_NO_MASK = np.ones((1, 1), dtype=np.bool_)
_classes: tuple = ()


def available() -> bool:
    """Whether compiled loops may run: Numba importable and not turned off by UNROLLED_NUMBA=0."""
    global enabled
    if enabled is None:
        enabled = os.environ.get("UNROLLED_NUMBA", "1") != "0"
    return enabled and not _failed and _compiled() is not None


def _compiled() -> dict[str, Callable] | None:
    global _loops, _failed
    if _loops is None and not _failed:
        try:
            from unrolled.kernels import _numba_loops
        except ImportError:
            _failed = True
        else:
            _loops = _numba_loops.LOOPS
    return _loops


def loop_for(cell: Any, batch: int) -> Callable | None:
    """The compiled kernel for `cell` at this batch size, or None (the NumPy kernel runs)."""
    global _classes
    if not _classes:
        from unrolled.layers.gru import GRUCell
        from unrolled.layers.lstm import LSTMCell

        _classes = (LSTMCell, GRUCell)
    LSTMCell, GRUCell = _classes
    gates = 1
    codes = [_CODES.get(cell.activation)]
    kind = type(cell)
    if kind is LSTMCell or kind is GRUCell:
        gates = 4 if kind is LSTMCell else 3
        codes.append(_CODES.get(cell.recurrent_activation))
    if None in codes or batch * cell.units * gates * cell.units > WORK_MAX[gates]:
        return None
    if not available():
        return None
    if kind is LSTMCell:
        return _lstm
    if kind is GRUCell:
        return _gru
    return _simple_rnn


def _prepare(cell: Any, xt: np.ndarray, steps: Any, need_seq: bool):
    T, B = xt.shape[:2]
    valid = steps.valid
    mask = _NO_MASK if valid is None else np.ascontiguousarray(valid)
    seq = np.empty((T if need_seq else 1, B, cell.units), dtype=xt.dtype)
    return xt, mask, seq


def _bias(bias: Any, width: int, dtype: np.dtype) -> np.ndarray:
    return np.zeros(width, dtype=dtype) if bias is None else bias


def _simple_rnn(cell, xt, states, steps, need_seq):
    loops = _loops
    xt, mask, seq = _prepare(cell, xt, steps, need_seq)
    U = cell.units
    h = loops["simple_rnn"](xt, cell.kernel, cell.recurrent_kernel, _bias(cell.bias, U, xt.dtype),
                            states[0], mask, steps.valid is not None, _CODES[cell.activation],
                            seq, need_seq)
    return (seq if need_seq else None), [h]


def _lstm(cell, xt, states, steps, need_seq):
    loops = _loops
    xt, mask, seq = _prepare(cell, xt, steps, need_seq)
    U = cell.units
    h, c = loops["lstm"](xt, cell.kernel, cell.recurrent_kernel,
                         _bias(cell.bias, 4 * U, xt.dtype), states[0], states[1], mask,
                         steps.valid is not None, _CODES[cell.activation],
                         _CODES[cell.recurrent_activation], seq, need_seq)
    return (seq if need_seq else None), [h, c]


def _gru(cell, xt, states, steps, need_seq):
    loops = _loops
    xt, mask, seq = _prepare(cell, xt, steps, need_seq)
    U = cell.units
    bias = cell.bias
    if cell.reset_after:
        b_in = _bias(None if bias is None else bias[0], 3 * U, xt.dtype)
        b_rec = _bias(None if bias is None else bias[1], 3 * U, xt.dtype)
    else:
        b_in, b_rec = _bias(bias, 3 * U, xt.dtype), np.zeros(3 * U, dtype=xt.dtype)
    h = loops["gru"](xt, cell.kernel, cell.recurrent_kernel, b_in, b_rec, states[0], mask,
                     steps.valid is not None, cell.reset_after, _CODES[cell.activation],
                     _CODES[cell.recurrent_activation], seq, need_seq)
    return (seq if need_seq else None), [h]
