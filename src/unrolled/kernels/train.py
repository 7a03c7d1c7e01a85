"""Whole-sequence training kernels: forward with a tape, and BPTT, for the built-in cells.

`RNN.forward_train` / `RNN.backward` run these for an RNN whose cell is exactly SimpleRNNCell,
LSTMCell or GRUCell (both `reset_after` forms); `RNN._forward_train` / `RNN._backward`, the
readable per-step reference (one `cell.backward_step` per timestep), run for everything else.
tests/test_train_kernels.py proves the two give the same result, input gradient, weight
gradients, `d_initial_state` and `step_grads` for every option.

What is stored (processing order k = 0..T-1, time-major; kept between calls, `_Buffers`)::

    X   (T, batch, features)        the input, reversed with go_backwards
    P   (T, batch, G*units)         pre-activations: x_t U + b (one matmul for all steps), then
                                    plus each step's recurrent term
    A   (T, batch, G*units)         post-activation gates (G = 1 SimpleRNN, 4 LSTM, 3 GRU)
    H   (T+1, batch, units)         states h_0 .. h_T (masked steps carry h over); C for LSTM
    TC  (T, batch, units)           LSTM: act(c_t)
    RH  (T, batch, units)           GRU: r_h = (h W + b_rec)[h block] (reset_after) or r * h
                                    (reset_after=False)

The compiled SimpleRNN and LSTM loops keep X and H in one array instead, X and H being views
of it, and add the input term in each step's product (`_forward_compiled`)::

    XH  (T+1, batch, features + units (+ 1))   [x_k | h_k | 1], the 1 where there is a bias

The backward walks k = T-1 .. 0 writing each step's pre-activation gradient `dZ_k` into a
`(T, batch, G*units)` buffer (the step's only products are `dZ_k W^T` and, for
reset_after=False, `d_a W_h^T`), then once for the whole sequence::

    dW += H[:-1]^T dZ      (units, T*batch) @ (T*batch, G*units)
    dU += X^T dZ           (features, T*batch) @ (T*batch, G*units)
    db += dZ summed over steps and batch
    dX  = dZ U^T           (T*batch, G*units) @ (G*units, features)

where the tape has XH, the first three are one product, `[dU; dW; db] = XH[:-1]^T dZ`.

Activation derivatives are computed once for all steps from the stored P and A. Softmax-like
activations (which mix a gate's units) take their vector-Jacobian product per step.

Falls back (returns None) for: user-written or subclassed cells, StackedRNNCells, training with
dropout or recurrent dropout, a trace recorder attached, float16 or non-float dtypes, an
activation with no known derivative (the reference then raises its clear error), and RNN
subclasses that override the loop's methods. `ENABLED = False` (or `UNROLLED_TRAIN_KERNEL=0` in
the environment) forces the reference everywhere, for testing and measuring.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np

from unrolled import _env, activations
from unrolled.kernels import _numba, _threads
from unrolled.kernels._activations import elementwise, in_place
from unrolled.kernels._dispatch import _FLOATS
from unrolled.kernels._numba import _NO_MASK  # the compiled loops' `valid` when nothing is masked
from unrolled.kernels._threads import step_threads
from unrolled.layers.gru import GRUCell
from unrolled.layers.lstm import LSTMCell
from unrolled.layers.rnn import RNN
from unrolled.layers.simple_rnn import SimpleRNNCell
from unrolled.training.derivatives import _ELEMENTWISE, activation_vjp

__all__ = ["forward", "backward", "ENABLED"]

ENABLED = _env.flag("UNROLLED_TRAIN_KERNEL")

_GATES = {SimpleRNNCell: 1, LSTMCell: 4, GRUCell: 3}
_ALONG_AXIS = ("softmax", "log_softmax")  # derivatives mixing a gate's units: vjp per step
# RNN methods whose override means the layer's loop is not the one these kernels reproduce.
_LOOP_METHODS = ("_forward_train", "_backward", "_masked_step", "_previous_output",
                 "_add_to_previous_output", "get_initial_state")


# ------------------------------------------------------------------ activations

class _Act:
    """An activation as the kernels use it: in place forward, derivative for all steps at once."""

    __slots__ = ("fn", "name", "apply", "whole", "per_step")

    def __init__(self, fn: Any):
        self.fn = fn
        self.name = activations.serialize(fn)
        self.apply = in_place(fn)
        self.whole = elementwise(fn)         # may run on several gate blocks at once
        self.per_step = self.name in _ALONG_AXIS

    @staticmethod
    def supported(fn: Any) -> bool:
        try:
            name = activations.serialize(fn)
        except TypeError:
            return False
        return name in _ELEMENTWISE or name in _ALONG_AXIS

    def on(self, a: np.ndarray, blocks: int) -> None:
        """Apply in place to `a` (batch, blocks*units), each block alone unless elementwise."""
        if self.whole or blocks == 1:
            self.apply(a)
            return
        width = a.shape[1] // blocks
        for g in range(blocks):
            self.apply(a[:, g * width:(g + 1) * width])

    def derivative(self, z: np.ndarray, y: np.ndarray, out: np.ndarray) -> None:
        """`out = act'(z)` for every step at once, written from whichever of z, y = act(z) is
        simpler (ones for a per-step vjp activation, which `vjp_step` then applies)."""
        name = self.name
        if name == "tanh":
            np.multiply(y, y, out=out)
            np.subtract(1, out, out=out)                            # 1 - y^2
        elif name == "sigmoid":
            np.subtract(1, y, out=out)
            out *= y                                                # y (1 - y)
        elif name == "linear" or self.per_step:
            out.fill(1)
        else:
            out[...] = _ELEMENTWISE[name](z, y)

    def vjp_step(self, z: np.ndarray, y: np.ndarray, d: np.ndarray, blocks: int) -> None:
        """Softmax-like: overwrite `d` (batch, blocks*units) with each block's vjp."""
        width = d.shape[1] // blocks
        for g in range(blocks):
            s = slice(g * width, (g + 1) * width)
            d[:, s] = activation_vjp(self.fn, z[:, s], y[:, s], d[:, s])


_ACTS: dict = {}


def _act(fn: Any) -> _Act:
    """`_Act(fn)`, kept for unrolled's own activations (a user's callables are not kept)."""
    found = _ACTS.get(fn)
    if found is None:
        found = _Act(fn)
        if getattr(fn, "__module__", None) == activations.__name__:
            _ACTS[fn] = found
    return found


def _drops(cell: Any) -> bool:
    """Whether the cell applies dropout in training (LSTM and GRU only for 0 < rate < 1)."""
    if type(cell) is SimpleRNNCell:
        return cell.dropout > 0 or cell.recurrent_dropout > 0
    return 0 < cell.dropout < 1 or 0 < cell.recurrent_dropout < 1


def _compiled(cell: Any, dtype: np.dtype) -> Any:
    """The compiled loops (unrolled.kernels._numba_train) for this cell, or None: float32, the
    default activations (tanh; sigmoid gates), C-contiguous weights, Numba and SciPy's BLAS
    available and not turned off (UNROLLED_NUMBA=0 / `_numba.enabled = False`)."""
    if dtype != np.float32 or cell.activation is not activations.tanh:
        return None
    if type(cell) is not SimpleRNNCell and cell.recurrent_activation is not activations.sigmoid:
        return None
    if not all(w.value.flags.c_contiguous for w in cell._weights):
        return None
    if not (_numba.available() and _numba._blas_available()):
        return None
    global _scipy_warm
    if not _scipy_warm:
        _warm_blas(scipy_too=True)
        _numba.compile_products_first(("panel_product",))  # every training loop calls it
        _scipy_warm = True
    from unrolled.kernels import _numba_train

    return _numba_train


_numpy_warm = _scipy_warm = False


def _warm_blas(scipy_too: bool) -> None:
    """One (512, 512) product on NumPy's OpenBLAS, and on SciPy's (the compiled loops'
    `np.dot`) with `scipy_too`. Measured on the 2-core benchmark machine, one BLAS thread: in a
    process whose OpenBLAS has only run smaller products, each `(128, 256) @ (256, 256)` takes
    1.5-1.75 ms, (256, 25600) @ (25600, 256) 288 ms and (25600, 256) @ (256, 64) 83 ms; after
    one product this large, 0.43, 98 and 25 ms, for the rest of the process. About 13 ms each,
    once."""
    a = np.ones((512, 512), dtype=np.float32)
    np.matmul(a, a)
    if scipy_too:
        import scipy.linalg.blas

        scipy.linalg.blas.sgemm(1.0, a, a)


def applies(rnn: Any, training: bool) -> bool:
    """Whether the training kernel runs for this layer (else the reference per-step path)."""
    if not ENABLED:
        return False
    cell = rnn.cell
    if type(cell) not in _GATES or cell._recorder is not None or rnn._recorder is not None:
        return False
    if training and _drops(cell):
        return False
    if np.dtype(rnn.dtype) not in _FLOATS:
        return False
    cls = type(rnn)
    if any(getattr(cls, m) is not getattr(RNN, m) for m in _LOOP_METHODS):
        return False
    acts = [cell.activation] + ([cell.recurrent_activation] if type(cell) is not SimpleRNNCell
                                else [])
    return all(_Act.supported(a) for a in acts)


# ------------------------------------------------------------------ the tape

class _Buffers:
    """The whole-sequence arrays of one layer's training calls, kept from one call to the next.

    A training step writes several (timesteps, batch, units)-sized arrays (the tape, then the
    backward's gradients): about 750 MB a step for SimpleRNN (256, 100, 256, 1024). Fresh
    memory costs the kernel a page fault and a zeroed page per 4 KiB (per 2 MiB with huge
    pages); on the benchmark machine (a 2-vCPU virtual machine) that was 0.25-0.7 s of system
    time a step, more while other libraries in the process allocate and free, against 5.6 s of
    computing. So `empty(name, ...)` hands out the array the previous call used under that name
    when nothing else holds it any more, and a new one otherwise: a cache still held by its
    caller (`cache["steps"]` and `cache["step_grads"]` are views of these arrays), or an
    explanation built from it, keeps its numbers. The arrays stay allocated with the layer, as
    large as its largest training call, and go with it.
    """

    __slots__ = ("arrays", "__weakref__")

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}

    def empty(self, name: str, shape: tuple, dtype: Any) -> np.ndarray:
        kept = self.arrays.get(name)
        if (kept is not None and kept.shape == shape and kept.dtype == dtype
                and sys.getrefcount(kept) <= _UNHELD):
            return kept
        kept = None                     # let the old one go (when nothing else holds it)
        self.arrays.pop(name, None)     # before the new one is allocated
        fresh = self.arrays[name] = np.empty(shape, dtype=dtype)
        return fresh

    def zeros(self, name: str, shape: tuple, dtype: Any) -> np.ndarray:
        out = self.empty(name, shape, dtype)
        out.fill(0)
        return out


def _unheld_count() -> int:
    # sys.getrefcount of an array held only by a `_Buffers` dict, seen as `empty` sees it
    # (the count differs between Python versions).
    probe = _Buffers()
    probe.arrays["x"] = np.empty(0)
    kept = probe.arrays.get("x")
    return sys.getrefcount(kept)


_UNHELD = _unheld_count()
_buffers: "weakref.WeakKeyDictionary[Any, _Buffers]" = weakref.WeakKeyDictionary()


def buffers(rnn: Any) -> _Buffers:
    """The kept training arrays of the layer `rnn` (see `_Buffers`)."""
    found = _buffers.get(rnn)
    if found is None:
        found = _buffers[rnn] = _Buffers()
    return found


class _Tape:
    """Everything one training forward keeps for its backward (see the module docstring)."""

    __slots__ = ("kind", "cell", "T", "B", "F", "U", "X", "XH", "P", "A", "H", "C", "TC", "RH",
                 "valid", "keep", "inv", "masked", "order", "act", "rec", "dtype", "compiled",
                 "need_dx", "parts", "buffers")


class _PerStep(Sequence):
    """A list with one entry per step, each built on access from the tape (`_step(k)`)."""

    def __init__(self, tape: _Tape):
        self._tape = tape

    def __len__(self) -> int:
        return self._tape.T

    def __getitem__(self, k: Any) -> Any:
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        return self._step(range(self._tape.T)[k])

    def _step(self, k: int) -> Any:
        raise NotImplementedError


class _StepGrads(_PerStep):
    """`cache["step_grads"]` as the reference lists it, built on access from the backward's
    buffers: step k's `{"t", "output": d_y, "states": [d_h, (d_c)]}`, zero on masked samples."""

    def __init__(self, tape: _Tape, d_out: np.ndarray, d_states: list):
        super().__init__(tape)
        self._d_out, self._d_states = d_out, d_states

    def _step(self, k: int) -> Any:
        tape = self._tape
        out = self._d_out[k]
        states = [d[k + 1] for d in self._d_states]
        if tape.valid is not None:
            inv = tape.inv[k]
            out = np.where(inv, 0, out).astype(out.dtype, copy=False)
            states = [np.where(inv, 0, s).astype(s.dtype, copy=False) for s in states]
        return {"t": tape.order[k], "output": out, "states": states}


class _Steps(_PerStep):
    """`cache["steps"]` for the kernel path: step k's `{"t", "cell": {...}}`, the cell values the
    reference records (x_t, h_prev, z, h, gates ...) as views of the tape. On a masked sample
    the states are the carried ones (the reference keeps the cell's discarded output there)."""

    def _step(self, k: int) -> Any:
        tape = self._tape
        U = tape.U
        cell = {"x_t": tape.X[k], "h_prev": tape.H[k], "h": tape.H[k + 1]}
        if tape.kind == "simple":
            cell.update(z=tape.P[k], h=tape.A[k])
        elif tape.kind == "lstm":
            a = tape.A[k]
            cell.update(c_prev=tape.C[k], c=tape.C[k + 1], z=tape.P[k], i=a[:, :U],
                        f=a[:, U:2 * U], g=a[:, 2 * U:3 * U], o=a[:, 3 * U:])
        else:
            a = tape.A[k]
            cell.update(z=a[:, :U], r=a[:, U:2 * U], hh=a[:, 2 * U:])
        return {"t": tape.order[k], "cell": cell}


# ------------------------------------------------------------------ forward

def forward(rnn: Any, sequences: Any, initial_state: Any, mask: Any,
            training: bool) -> tuple[Any, dict] | None:
    """`(result, cache)` exactly as `RNN._forward_train` returns them, or None (no kernel)."""
    if not applies(rnn, training):
        return None
    owner = f"{type(rnn).__name__} '{rnn.name}'"
    x, states, mask = rnn._prepare(sequences, initial_state, mask, owner)
    cell = rnn.cell
    dtype = x.dtype
    if dtype not in _FLOATS or any(w.value.dtype != dtype for w in cell._weights):
        return None
    T, B, F = x.shape[1], x.shape[0], x.shape[2]
    global _numpy_warm
    if not _numpy_warm:
        _warm_blas(scipy_too=False)
        _numpy_warm = True
    compiled = _compiled(cell, dtype)
    try:
        with _phase_threads(rnn, B, T, "forward", compiled is not None):
            if compiled is not None:
                tape = _forward(rnn, cell, x, states, mask, compiled)
            else:
                with step_threads(T * B * F * cell.kernel.shape[1]):  # the hoisted projection
                    tape = _forward(rnn, cell, x, states, mask, None)
    finally:
        for reset in ("reset_dropout_mask", "reset_recurrent_dropout_mask"):
            if hasattr(cell, reset):
                getattr(cell, reset)()

    T, H = tape.T, tape.H
    valid = tape.valid
    keep = None
    if valid is not None and (rnn.zero_output_for_mask or rnn.unroll):
        # zero_output_for_mask: masked steps output zeros. unroll: a masked step repeats the
        # previous output, zeros before the first valid step (RNN._masked_step).
        keep = valid if rnn.zero_output_for_mask else np.logical_or.accumulate(valid, axis=0)
    final = [H[T].copy()] + ([tape.C[T].copy()] if tape.kind == "lstm" else [])
    if rnn.stateful:
        rnn.states = [np.array(s) for s in final]
    if rnn.return_sequences and keep is None:
        # The tape's states where they lie, not a copy (7 ms of an LSTM (128, 200, 64, 256)
        # training step), read-only: the backward reads them. A caller still holding it when
        # the next call comes makes that call's tape new arrays (`_Buffers`).
        output = H[1:].transpose(1, 0, 2)                           # (batch, timesteps, units)
        output.flags.writeable = False
    elif rnn.return_sequences:
        output = np.ascontiguousarray(H[1:].transpose(1, 0, 2))
        np.copyto(output, 0, where=~keep.T[:, :, None])
    else:
        output = H[T].copy()                                        # (batch, units)
        if keep is not None:
            np.copyto(output, 0, where=~keep[-1][:, None])
    result = (output, *final) if rnn.return_state else output
    cache = {"x_shape": x.shape, "mask": mask, "steps": _Steps(tape), "final": final,
             "stacked": False, "output_shape": (tape.B, tape.U), "train_tape": tape}
    return result, cache


def _forward(rnn: Any, cell: Any, x: np.ndarray, states: list, mask: np.ndarray | None,
             compiled: Any) -> _Tape:
    B, T, F = x.shape
    U = cell.units
    dtype = x.dtype
    kind = {SimpleRNNCell: "simple", LSTMCell: "lstm", GRUCell: "gru"}[type(cell)]
    G = _GATES[type(cell)]
    tape = _Tape()
    tape.kind, tape.cell, tape.T, tape.B, tape.F, tape.U, tape.dtype = kind, cell, T, B, F, U, dtype
    tape.buffers = kept = buffers(rnn)
    tape.act = _act(cell.activation)
    tape.rec = _act(cell.recurrent_activation) if kind != "simple" else None
    order = list(range(T - 1, -1, -1)) if rnn.go_backwards else list(range(T))
    tape.order = order

    xt = x.transpose(1, 0, 2)
    # The compiled SimpleRNN and LSTM loops keep x_k and h_k side by side, and a 1 with a bias:
    # XH[k] = [x_k | h_k | 1]. Each step is one product XH[k] [U; W; b], and all the weight
    # gradients one XH^T dZ (`_grads`).
    tape.XH = None
    if compiled is not None and kind != "gru":
        ones = cell.bias is not None
        tape.XH = kept.empty("XH", (T + 1, B, F + U + ones), dtype)
        if ones:
            tape.XH[:, :, F + U] = 1
        X = tape.XH[:T, :, :F]
    else:
        X = kept.empty("X", (T, B, F), dtype)                       # processing order
    np.copyto(X, xt[::-1] if rnn.go_backwards else xt)
    tape.X = X
    if mask is not None and not mask.all():
        valid = mask.T[::-1] if rnn.go_backwards else mask.T        # (timesteps, batch)
        tape.valid = np.ascontiguousarray(valid)
        tape.keep = tape.valid[:, :, None]                          # (timesteps, batch, 1)
        tape.inv = ~tape.keep
        tape.masked = tape.inv.any(axis=(1, 2)).tolist()
    else:
        tape.valid = tape.inv = tape.keep = None
        tape.masked = [False] * T

    bias = cell.bias
    if kind == "gru" and bias is not None and cell.reset_after:
        b_in, b_rec = bias[0], bias[1]
    else:
        b_in, b_rec = bias, None
    P = kept.empty("P", (T, B, G * U), dtype)                       # pre-activations
    if tape.XH is None:
        _matmul(X.reshape(T * B, F), cell.kernel, P.reshape(T * B, G * U))  # all x_t U at once
    A = kept.empty("A", P.shape, dtype)                             # post-activation gates
    if tape.XH is None:
        H = kept.empty("H", (T + 1, B, U), dtype)                   # h_0 .. h_T
    else:
        H = tape.XH[:, :, F:F + U]
    np.copyto(H[0], states[0])
    tape.P, tape.A, tape.H = P, A, H
    tape.C = tape.TC = tape.RH = None
    tape.compiled = compiled
    if tape.compiled is not None:                                   # (the loops add b_in)
        _forward_compiled(tape, cell, b_in, b_rec, states)
        return tape
    if b_in is not None:
        P += b_in
    with np.errstate(over="ignore"):
        if kind == "simple":
            _forward_simple(tape, cell)
        elif kind == "lstm":
            tape.C = kept.empty("C", (T + 1, B, U), dtype)
            np.copyto(tape.C[0], states[1])
            tape.TC = kept.empty("TC", (T, B, U), dtype)
            _forward_lstm(tape, cell)
        else:
            tape.RH = kept.empty("RH", (T, B, U), dtype)
            _forward_gru(tape, cell, b_rec)
    return tape


def _forward_compiled(tape: _Tape, cell: Any, b_in: np.ndarray | None,
                      b_rec: np.ndarray | None, states: list) -> None:
    """The per-step loop compiled (float32, tanh/sigmoid): the same tape, a pass or two a step.
    SimpleRNN and LSTM: each step's product is `XH[k] [U; W; b]` (tape.XH; `x_t U` and the bias
    with it). GRU: `tape.P` holds `x_t U`; the loop adds `b_in` (zeros without a bias)."""
    nb, T, B, U = tape.compiled, tape.T, tape.B, tape.U
    valid, use_mask = (tape.valid, True) if tape.valid is not None else (_NO_MASK, False)
    W = cell.recurrent_kernel
    tape.parts = _threads.blocks(B)                   # ROWS chosen: blocks of rows at once
    if tape.kind != "gru":                          # [U; W; b]  (features + units (+ 1), G*units)
        UW = np.concatenate([cell.kernel, W] + ([b_in[None]] if b_in is not None else []))
        own = _own_product(UW, tape.parts, B)
    else:
        own = _own_product(W, tape.parts, B)
    if tape.kind == "simple":
        _by_rows(nb.simple_forward, (tape.P, tape.A, tape.XH, UW, tape.F, valid, use_mask, own),
                 B, tape.parts)
    elif tape.kind == "lstm":
        tape.C = tape.buffers.empty("C", (T + 1, B, U), tape.dtype)
        np.copyto(tape.C[0], states[1])
        tape.TC = tape.buffers.empty("TC", (T, B, U), tape.dtype)
        args = (tape.P, tape.A, tape.XH, tape.C, tape.TC, UW, tape.F, valid, use_mask)
        units = _threads.units() if tape.parts == 1 else 1     # UNITS chosen
        if units > 1:
            _threads.by_units(nb.lstm_forward, (*args, True), B, units)
        else:
            _by_rows(nb.lstm_forward, (*args, own), B, tape.parts)
    else:
        bias = _numba._zeros_if_none(b_in, tape.P.shape[2], tape.dtype)
        tape.RH = tape.buffers.empty("RH", (T, B, U), tape.dtype)
        b_rec = _numba._zeros_if_none(b_rec, 3 * U, tape.dtype)
        _by_rows(nb.gru_forward, (tape.P, tape.A, tape.H, tape.RH, W, bias, b_rec, valid,
                                  use_mask, cell.reset_after, own), B, tape.parts)


# Batch rows never meet in a recurrent layer, so the compiled loops can run blocks of rows on
# separate threads (they release the GIL), with one hand-off per call instead of one per step
# as a BLAS product split over threads pays. The thread choice (unrolled.kernels._threads,
# timed per layer, batch and phase) offers it for steps of more than STEP_WORK_MIN
# multiply-adds and sequences with at least this many (a thread start costs ~0.1 ms).
ROW_BLOCK_WORK_MIN = 1 << 24
_by_rows = _threads.by_rows


def _own_product(W: np.ndarray, parts: int, batch: int) -> bool:
    """Whether the compiled loops multiply by `W` with their own panel product (see _numba).

    Always in row blocks: there each block's products run on one thread, where the panel
    product beats OpenBLAS at every size measured. A training step is not held to the forward
    pass's memory budget, and each block's packed copy of W (and of W^T for the backward) is
    small next to the tape. LSTM (256, 100, 256, 1024): 13.2 s a step with BLAS on two
    threads, 11.8 s in two row blocks with panels. On one thread, weights over
    `_numba.OWN_GEMM_BYTES` go to BLAS, which then has every core, but for a batch of at most
    `_numba.OWN_GEMM_ROWS` rows (up to `_numba.OWN_SMALL_BATCH_BYTES`), as in the forward
    pass: for a few rows BLAS packs all of W again at every step. A training step of LSTM
    (4, 100, 32, 512) took 68 ms so, against torch's 23 (RESULTS.md, round 27).
    """
    return (W.nbytes <= _numba.OWN_GEMM_BYTES or parts > 1
            or (batch <= _numba.OWN_GEMM_ROWS and W.nbytes <= _numba.OWN_SMALL_BATCH_BYTES))


def _row_parts(B: int, step_work: int, work: int) -> int:
    """How many row blocks the compiled loops may run at once (1: on this thread only): at most
    one a CPU the process may use."""
    cores = _threads.cores()
    if (cores < 2 or _threads.MODE != "auto" or B < 2 * _threads.ROW_BLOCK_MIN
            or work < ROW_BLOCK_WORK_MIN or step_work <= _threads.STEP_WORK_MIN
            or _threads.limited()):
        return 1
    return min(cores, B // _threads.ROW_BLOCK_MIN)


def _phase_threads(rnn: Any, B: int, T: int, phase: str, compiled: bool) -> Any:
    """The thread setting of one phase ("forward" or "backward") of a training call, timed
    for this layer, batch size and phase (unrolled.kernels._threads.step_threads): one BLAS
    thread or every thread; or, for the compiled loops with rows enough, one BLAS thread or
    blocks of batch rows at once (`ROWS`; the loops read `_threads.parts()`), where the
    whole-sequence products run in blocks of rows as well (`_matmul`, `_at_b`), each on one
    BLAS thread; or, for an LSTM's compiled loops on a small batch (`_unit_split`), one BLAS
    thread or each step's units in parts (`UNITS`; `_numba_train.lstm_forward_units`), the
    whole-sequence products again in blocks on one BLAS thread each. Loops and products alike
    run on Numba's threads (`_numba_train.lstm_forward_blocks`, `at_b_blocks`): with the
    products on the pool's, in a process where torch had started GNU OpenMP with its default
    spin, Numba's thread spun after the backward's loop on the CPU the pool's block needed; a
    step at (4, 100, 32, 512) under units took 27.7-28.3 ms so, against 21.0-23.4, and with
    loops and products on the pool, at (32, 100, 16, 64) in blocks of rows, 6.0 ms against 4.4
    with torch's steps in between, 4.2 against 4.0 without (RESULTS.md, round 29).

    Beside row blocks, BLAS never gets more than one thread: after a product on two threads,
    OpenBLAS's second thread spins for about 0.1 s waiting for the next, on the CPU the pool's
    block needs, and that took LSTM (32, 100, 16, 64) training steps from 6.1-7.0 ms to
    10.6-10.8 (RESULTS.md, round 17). On the shared 2-core machine each setting is fastest at
    some load: LSTM (256, 100, 256, 1024) took 11.8 s a step in two row blocks and 13.2 s with
    BLAS on two threads while a core was idle, and with a busy core an every-thread try of
    LSTM (32, 100, 16, 64) took 43 ms instead of 21. A setting r times slower is tried again
    every (r - 1) / 2% calls, less often while its tries keep losing (`_threads.BACKOFF_MARGIN`).

    Units against the settings offered before them, each held for a run of steps in one
    process (RESULTS.md, round 28): an LSTM (4, 100, 32, 512) training step took 20.3-20.5 ms
    under units, 25.0-25.3 with BLAS's own threads for the weights' gradients, 30.1 on one
    thread; (8, 100, 32, 512) 35.1 under units, 56.6 on one thread."""
    cell = rnn.cell
    G, U = _GATES[type(cell)], cell.units
    step_work = B * G * U * U
    parts = _row_parts(B, step_work, T * step_work) if compiled else 1
    return step_threads(step_work, (id(rnn), B, phase, "kernel"), parts, every_thread=False,
                        unit_split=_unit_split(cell, B) if compiled else 1)


def _unit_split(cell: Any, B: int) -> int:
    """How many parts an LSTM's compiled loops may split each step's units into (`UNITS`;
    1: not offered): as the forward pass's units forms (`unrolled.kernels._numba`), under
    `_threads.UNIT_ROWS_MAX` rows, where the loops' own product takes the weights, and from
    2 * ROW_BLOCK_MIN rows (where blocks of rows are offered) only for weights over
    `_numba.OWN_GEMM_BYTES`, which a core's L2 does not hold."""
    size = cell.recurrent_kernel.nbytes
    if (type(cell) is not LSTMCell or not _own_product(cell.recurrent_kernel, 1, B)
            or (B >= 2 * _threads.ROW_BLOCK_MIN and size <= _numba.OWN_GEMM_BYTES)):
        return 1
    from unrolled.kernels._numba_loops import GATE_UNITS  # loaded with the compiled loops

    return _threads.unit_parts(B, -(-cell.units // GATE_UNITS))


def _forward_simple(tape: _Tape, cell: Any) -> None:
    P, A, H, inv, masked, act = tape.P, tape.A, tape.H, tape.inv, tape.masked, tape.act
    W = cell.recurrent_kernel
    hW = np.empty((tape.B, tape.U), dtype=tape.dtype)
    for k in range(tape.T):
        np.matmul(H[k], W, out=hW)                                  # h_{t-1} W
        P[k] += hW                                                  # z  (batch, units)
        np.copyto(A[k], P[k])
        act.on(A[k], 1)                                             # act(z)
        np.copyto(H[k + 1], A[k])
        if masked[k]:
            np.copyto(H[k + 1], H[k], where=inv[k])                 # masked: keep h_{t-1}


def _forward_lstm(tape: _Tape, cell: Any) -> None:
    P, A, H, C, TC = tape.P, tape.A, tape.H, tape.C, tape.TC
    inv, masked, act, rec = tape.inv, tape.masked, tape.act, tape.rec
    U = tape.U
    W = cell.recurrent_kernel
    hW = np.empty((tape.B, 4 * U), dtype=tape.dtype)
    ig = np.empty((tape.B, U), dtype=tape.dtype)
    for k in range(tape.T):
        np.matmul(H[k], W, out=hW)
        P[k] += hW                                                  # z  (batch, 4*units)
        a = A[k]
        np.copyto(a, P[k])
        if rec.whole:
            # One call on the contiguous row (a strided view is 2x slower); the candidate's
            # block is then written again from P.
            rec.apply(a)                                            # i, f, o
            np.copyto(a[:, 2 * U:3 * U], P[k][:, 2 * U:3 * U])
        else:
            for g in (0, 1, 3):
                rec.apply(a[:, g * U:(g + 1) * U])
        act.apply(a[:, 2 * U:3 * U])                                # g, the candidate
        i, f, g, o = a[:, :U], a[:, U:2 * U], a[:, 2 * U:3 * U], a[:, 3 * U:]
        c = C[k + 1]
        np.multiply(f, C[k], out=c)
        np.multiply(i, g, out=ig)
        c += ig                                                     # c_t = f c_{t-1} + i g
        np.copyto(TC[k], c)
        act.apply(TC[k])                                            # act(c_t)
        np.multiply(o, TC[k], out=H[k + 1])                         # h_t = o act(c_t)
        if masked[k]:
            np.copyto(H[k + 1], H[k], where=inv[k])
            np.copyto(c, C[k], where=inv[k])


def _forward_gru(tape: _Tape, cell: Any, b_rec: np.ndarray | None) -> None:
    P, A, H, RH = tape.P, tape.A, tape.H, tape.RH
    inv, masked, act, rec = tape.inv, tape.masked, tape.act, tape.rec
    U, B, dtype = tape.U, tape.B, tape.dtype
    W = cell.recurrent_kernel
    reset_after = cell.reset_after
    if reset_after:
        R = np.empty((B, 3 * U), dtype=dtype)                       # h_{t-1} W + b_rec
    else:
        W_zr, W_h = np.ascontiguousarray(W[:, :2 * U]), np.ascontiguousarray(W[:, 2 * U:])
        R = np.empty((B, 2 * U), dtype=dtype)                       # h_{t-1} W_zr
    tmp = np.empty((B, U), dtype=dtype)
    for k in range(tape.T):
        p, a = P[k], A[k]
        if reset_after:
            np.matmul(H[k], W, out=R)
            if b_rec is not None:
                R += b_rec
            p[:, :2 * U] += R[:, :2 * U]
        else:
            np.matmul(H[k], W_zr, out=R)
            p[:, :2 * U] += R
        if rec.whole:
            # One call on the contiguous row (a strided view is 2x slower); the candidate's
            # block is overwritten below.
            np.copyto(a, p)
            rec.apply(a)                                            # z, r
        else:
            np.copyto(a[:, :2 * U], p[:, :2 * U])
            rec.on(a[:, :2 * U], 2)                                 # z, r
        z, r = a[:, :U], a[:, U:2 * U]
        if reset_after:
            np.copyto(RH[k], R[:, 2 * U:])                          # r_h
            np.multiply(r, RH[k], out=tmp)                          # r * r_h
        else:
            np.multiply(r, H[k], out=RH[k])                         # r * h_{t-1}
            np.matmul(RH[k], W_h, out=tmp)                          # (r * h_{t-1}) W_h
        p[:, 2 * U:] += tmp                                         # a, the candidate's input
        hh = a[:, 2 * U:]
        np.copyto(hh, p[:, 2 * U:])
        act.apply(hh)                                               # hh = act(a)
        h = H[k + 1]
        np.multiply(z, H[k], out=h)                                 # z h_{t-1}
        np.subtract(1, z, out=tmp)
        tmp *= hh
        h += tmp                                                    # + (1 - z) hh
        if masked[k]:
            np.copyto(h, H[k], where=inv[k])


# ------------------------------------------------------------------ backward

def backward(rnn: Any, cache: dict, d_result: Any, grads: Any) -> np.ndarray:
    """BPTT over the tape `forward` kept: returns dL/dx `(batch, timesteps, features)`, adds
    the weight gradients to `grads` and sets `cache["d_initial_state"]` and
    `cache["step_grads"]` as `RNN._backward` does."""
    tape: _Tape = cache["train_tape"]
    T, B, U, dtype = tape.T, tape.B, tape.U, tape.dtype
    tape.need_dx = cache.get("input_grad", True)    # False: a training step's first layer
    n_states = 2 if tape.kind == "lstm" else 1
    if rnn.return_state:
        d_output, *d_final = d_result
    else:
        d_output, d_final = d_result, [None] * n_states
    kept = tape.buffers
    if d_output is not None and rnn.return_sequences:               # gradient on each output
        d_out = kept.empty("d_out", (T, B, U), dtype)
        np.copyto(d_out, np.asarray(d_output).transpose(1, 0, 2))
    else:
        d_out = kept.zeros("d_out", (T, B, U), dtype)
        if d_output is not None:
            np.copyto(d_out[T - 1], np.asarray(d_output))
    d_states = []                                                   # (T+1, batch, units) each:
    for i, d in enumerate(d_final):                                 # [k+1] reaches step k's new
        buf = kept.empty(f"d_state{i}", (T + 1, B, U), dtype)      # state, [0] the initial one
        if d is None:
            buf[T] = 0
        else:
            np.copyto(buf[T], np.asarray(d))
        d_states.append(buf)

    G = _GATES[type(tape.cell)]
    work = T * B * max(tape.U, tape.F) * G * U
    if tape.compiled is not None:
        with np.errstate(over="ignore"), _phase_threads(rnn, B, T, "backward", True):
            d_x = _backward_compiled(rnn, tape, d_out, d_states, grads)
        cache["d_initial_state"] = [d[0].copy() for d in d_states]
        cache["step_grads"] = _StepGrads(tape, d_out, d_states)
        return d_x
    D = kept.empty("D", (T, B, G * U), dtype)                       # act'(pre-activation)
    blocks = _blocks(tape)
    for sl, act in blocks:
        act.derivative(tape.P[:, :, sl], tape.A[:, :, sl], D[:, :, sl])
    if tape.kind == "lstm":
        Dc = kept.empty("Dc", (T, B, U), dtype)                     # act'(c_t)
        tape.act.derivative(tape.C[1:], tape.TC, Dc)
    else:
        Dc = None
    # One BLAS thread for the whole-sequence products too, unless they are very large: on a
    # busy 2-core machine two threads made X^T dZ, (16, 3200) @ (3200, 64), take 87 ms instead
    # of 0.3 ms (SimpleRNN (32, 100, 16, 64) training: 200 ms, 16 ms with one thread).
    with (np.errstate(over="ignore"), _phase_threads(rnn, B, T, "backward", False),
          step_threads(work)):
        if tape.kind == "simple":
            d_x = _backward_simple(rnn, tape, d_out, d_states, D, grads)
        elif tape.kind == "lstm":
            d_x = _backward_lstm(rnn, tape, d_out, d_states, D, Dc, grads)
        else:
            d_x = _backward_gru(rnn, tape, d_out, d_states, D, grads)
    cache["d_initial_state"] = [d[0].copy() for d in d_states]
    cache["step_grads"] = _StepGrads(tape, d_out, d_states)
    return d_x


def _blocks(tape: _Tape) -> list:
    """(columns, activation) for each gate block of the pre-activation."""
    U = tape.U
    if tape.kind == "simple":
        return [(slice(0, U), tape.act)]
    if tape.kind == "lstm":
        return [(slice(0, 2 * U), tape.rec), (slice(2 * U, 3 * U), tape.act),
                (slice(3 * U, 4 * U), tape.rec)]
    return [(slice(0, 2 * U), tape.rec), (slice(2 * U, 3 * U), tape.act)]


class _Rule:
    """The masked-step rule read backwards, per step (RNN._backward)."""

    def __init__(self, rnn: Any, tape: _Tape, d_out: np.ndarray):
        self.tape, self.d_out = tape, d_out
        self.pass_total = not (rnn.zero_output_for_mask or rnn.unroll)
        self.unroll = rnn.unroll and not rnn.zero_output_for_mask
        self.gh = np.empty((tape.B, tape.U), dtype=tape.dtype)      # dL/dh_t, all of it
        self.ghz = np.empty_like(self.gh)                           # the same, masked rows zero

    def into(self, k: int, d_h_new: np.ndarray) -> np.ndarray:
        """dL/dh_t that the cell's step k sees: d_output + d_new_state, zero on masked rows."""
        np.add(d_h_new, self.d_out[k], out=self.gh)
        if not self.tape.masked[k]:
            return self.gh
        np.copyto(self.ghz, self.gh)
        np.copyto(self.ghz, 0, where=self.tape.inv[k])
        return self.ghz

    def carry(self, k: int, d_h_prev: np.ndarray, d_h_new: np.ndarray) -> None:
        """Masked rows of step k: the states' gradient passes to step k-1 (plus the output's,
        which was the previous state's h, or the previous output's with unroll)."""
        if not self.tape.masked[k]:
            return
        inv = self.tape.inv[k]
        np.copyto(d_h_prev, self.gh if self.pass_total else d_h_new, where=inv)
        if self.unroll and k > 0:
            np.add(self.d_out[k - 1], self.d_out[k], out=self.d_out[k - 1], where=inv)


def _product_blocks(size: int) -> int:
    """How many blocks a whole-sequence product, splittable `size` ways, runs in at once,
    each with one BLAS thread: as many as the loops' blocks of rows (`ROWS`) or parts of each
    step's units (`UNITS`) run in now, at most `size`; 1 otherwise. Under
    either, BLAS has one thread (`step_threads`): its own threads would spin on the CPUs the
    next call's loops need (see `_phase_threads`)."""
    return max(1, min(max(_threads.parts(), _threads.units()), size))


def _matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """`out = a @ b` for a whole sequence's rows; under row blocks or units
    (`_product_blocks`), in blocks of `a`'s rows at once, each with one BLAS thread, on
    Numba's threads, where the loops ran (the pool's where their forms do not take the blocks;
    see `_phase_threads`)."""
    _threads.matmul(a, b, out, _product_blocks(a.shape[0]), native=True)


def _at_b(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`a^T b` for a weight gradient, `a` (T*batch, m), `b` (T*batch, n): a sum over many rows;
    under row blocks or units, in blocks of the result's columns at once, each with one BLAS
    thread (`_at_b_sums`; see `_phase_threads`)."""
    return _at_b_sums([a], b, False)[0][0]


def _at_b_sums(pairs: list, b: np.ndarray, sums: bool) -> tuple[list, np.ndarray | None]:
    """`[a^T b for a in pairs]` and, with `sums`, b's column sums (a bias gradient), in one
    pass over b's columns: under row blocks or units each block of columns on its own thread
    (`_threads.at_b_all`), on Numba's threads, where the loops ran, one call a product (see
    `_phase_threads`), or where their forms do not take them one hand-off to the pool for all
    (40-80 us on the benchmark machines). A bias's sum over (3200, 256) took 0.15 ms on one
    thread (round 19)."""
    dtype = np.result_type(*pairs, b)
    outs = [np.empty((a.shape[1], b.shape[1]), dtype=dtype) for a in pairs]
    column_sums = np.empty(b.shape[1], dtype=b.dtype) if sums else None
    _threads.at_b_all(list(zip(pairs, outs)), b, column_sums, _product_blocks(b.shape[1]),
                      native=True)
    return outs, column_sums


def _input_grad(tape: _Tape, flat: np.ndarray) -> np.ndarray | None:
    """dX = dZx U^T `(batch, timesteps, features)` in time order from `flat` (T*batch,
    G*units); None when the cache said no one needs it."""
    T, B, F = tape.T, tape.B, tape.F
    if not tape.need_dx:
        return None
    d_xt = tape.buffers.empty("d_xt", (T, B, F), flat.dtype)        # processing order
    _matmul(flat, tape.cell.kernel.T, d_xt.reshape(T * B, F))
    d_x = d_xt.transpose(1, 0, 2)
    if tape.order[0] != 0:                                          # go_backwards
        d_x = d_x[:, ::-1]
    return np.ascontiguousarray(d_x)                                # (batch, timesteps, features)


def _backward_simple(rnn: Any, tape: _Tape, d_out: np.ndarray, d_states: list, D: np.ndarray,
                     grads: Any) -> np.ndarray:
    T, B, U = tape.T, tape.B, tape.U
    cell = tape.cell
    W_T = np.ascontiguousarray(cell.recurrent_kernel.T)
    dH = d_states[0]
    dZ = tape.buffers.empty("dZ", (T, B, U), tape.dtype)
    rule = _Rule(rnn, tape, d_out)
    act = tape.act
    for k in range(T - 1, -1, -1):
        dh = rule.into(k, dH[k + 1])
        dz = dZ[k]
        np.multiply(dh, D[k], out=dz)                               # dz = dh act'(z)
        if act.per_step:                                            # (D is 1 there)
            act.vjp_step(tape.P[k], tape.A[k], dz, 1)
        np.matmul(dz, W_T, out=dH[k])                               # dh_{t-1} = dz W^T
        rule.carry(k, dH[k], dH[k + 1])
    return _grads(tape, dZ, grads)


def _grads(tape: _Tape, dZ: np.ndarray, grads: Any) -> np.ndarray:
    """SimpleRNN and LSTM: all weight gradients from dZ `(T, batch, G*units)`, X^T dZ, H^T dZ
    and dZ's column sums in one pass (`_at_b_sums`); returns dX."""
    T, B, U, F = tape.T, tape.B, tape.U, tape.F
    cell = tape.cell
    flat = dZ.reshape(T * B, -1)                                    # (T*batch, G*units)
    if tape.XH is not None:                             # [X | H | 1]^T dZ: one product
        (d_all,), _ = _at_b_sums([tape.XH[:T].reshape(T * B, tape.XH.shape[2])], flat, False)
        d_kernel, d_recurrent = d_all[:F], d_all[F:F + U]
        d_bias = d_all[F + U] if cell.bias is not None else None
    else:
        (d_kernel, d_recurrent), d_bias = _at_b_sums(
            [tape.X.reshape(T * B, F), tape.H[:-1].reshape(T * B, U)], flat,
            cell.bias is not None)
    grads.add(cell, "kernel", d_kernel)                             # (features, G*units)
    grads.add(cell, "recurrent_kernel", d_recurrent)                # (units, G*units)
    if d_bias is not None:
        grads.add(cell, "bias", d_bias)                             # (G*units,)
    return _input_grad(tape, flat)


def _backward_lstm(rnn: Any, tape: _Tape, d_out: np.ndarray, d_states: list, D: np.ndarray,
                   Dc: np.ndarray, grads: Any) -> np.ndarray:
    T, B, U = tape.T, tape.B, tape.U
    cell = tape.cell
    A, C, TC, inv, masked = tape.A, tape.C, tape.TC, tape.inv, tape.masked
    W_T = np.ascontiguousarray(cell.recurrent_kernel.T)
    dH, dC = d_states
    dZ = tape.buffers.empty("dZ", (T, B, 4 * U), tape.dtype)
    dc = np.empty((B, U), dtype=tape.dtype)
    rule = _Rule(rnn, tape, d_out)
    act, rec = tape.act, tape.rec
    for k in range(T - 1, -1, -1):
        dh = rule.into(k, dH[k + 1])
        a = A[k]
        i, f, g, o = a[:, :U], a[:, U:2 * U], a[:, 2 * U:3 * U], a[:, 3 * U:]
        np.multiply(dh, o, out=dc)                                  # dh o
        if act.per_step:
            dc[...] = activation_vjp(act.fn, C[k + 1], TC[k], dc)
        else:
            dc *= Dc[k]                                             # dh o act'(c)
        if masked[k]:
            np.add(dc, dC[k + 1], out=dc, where=tape.keep[k])      # + dc from step t+1 (valid)
        else:
            dc += dC[k + 1]
        dz = dZ[k]
        np.multiply(dc, g, out=dz[:, :U])                           # di
        np.multiply(dc, C[k], out=dz[:, U:2 * U])                   # df
        np.multiply(dc, i, out=dz[:, 2 * U:3 * U])                  # dg
        np.multiply(dh, TC[k], out=dz[:, 3 * U:])                   # do
        dz *= D[k]                                                  # through the gates
        if act.per_step:
            act.vjp_step(tape.P[k][:, 2 * U:3 * U], g, dz[:, 2 * U:3 * U], 1)
        if rec.per_step:
            for s in (slice(0, U), slice(U, 2 * U), slice(3 * U, 4 * U)):
                rec.vjp_step(tape.P[k][:, s], a[:, s], dz[:, s], 1)
        np.matmul(dz, W_T, out=dH[k])                               # dh_{t-1} = dz W^T
        np.multiply(dc, f, out=dC[k])                               # dc_{t-1} = dc f
        if masked[k]:
            np.copyto(dC[k], dC[k + 1], where=inv[k])
        rule.carry(k, dH[k], dH[k + 1])
    return _grads(tape, dZ, grads)


def _backward_gru(rnn: Any, tape: _Tape, d_out: np.ndarray, d_states: list, D: np.ndarray,
                  grads: Any) -> np.ndarray:
    T, B, U, dtype = tape.T, tape.B, tape.U, tape.dtype
    cell = tape.cell
    A, H, RH, P = tape.A, tape.H, tape.RH, tape.P
    W = cell.recurrent_kernel
    reset_after = cell.reset_after
    dH = d_states[0]
    dZx = tape.buffers.empty("dZx", (T, B, 3 * U), dtype)           # d (x_t U + b_in) blocks
    tmp = np.empty((B, U), dtype=dtype)
    if reset_after:
        W_T = np.ascontiguousarray(W.T)
        dZh = tape.buffers.empty("dZh", (T, B, 3 * U), dtype)       # d (h W + b_rec) blocks
    else:
        W_zr_T = np.ascontiguousarray(W[:, :2 * U].T)
        W_h_T = np.ascontiguousarray(W[:, 2 * U:].T)
        d_rh = np.empty((B, U), dtype=dtype)
    rule = _Rule(rnn, tape, d_out)
    act, rec = tape.act, tape.rec
    for k in range(T - 1, -1, -1):
        dh = rule.into(k, dH[k + 1])
        a, d, dz = A[k], D[k], dZx[k]
        z, r, hh = a[:, :U], a[:, U:2 * U], a[:, 2 * U:]
        np.subtract(H[k], hh, out=dz[:, :U])
        dz[:, :U] *= dh                                             # d_z = dh (h_{t-1} - hh)
        d_a = dz[:, 2 * U:]
        np.subtract(1, z, out=d_a)
        d_a *= dh                                                   # d_hh = dh (1 - z)
        d_a *= d[:, 2 * U:]                                         # d_a = d_hh act'(a)
        if act.per_step:                                            # (d is 1 there)
            act.vjp_step(P[k][:, 2 * U:], hh, d_a, 1)
        if reset_after:
            np.multiply(d_a, RH[k], out=dz[:, U:2 * U])             # d_r = d_a r_h
        else:
            np.matmul(d_a, W_h_T, out=d_rh)                         # d(r h) = d_a W_h^T
            np.multiply(d_rh, H[k], out=dz[:, U:2 * U])             # d_r = d(r h) h_{t-1}
        dz[:, :2 * U] *= d[:, :2 * U]                               # through sigma
        if rec.per_step:
            rec.vjp_step(P[k][:, :2 * U], a[:, :2 * U], dz[:, :2 * U], 2)
        if reset_after:
            dzh = dZh[k]
            np.copyto(dzh[:, :2 * U], dz[:, :2 * U])
            np.multiply(d_a, r, out=dzh[:, 2 * U:])                 # d r_h = d_a r
            np.matmul(dzh, W_T, out=dH[k])
        else:
            np.matmul(dz[:, :2 * U], W_zr_T, out=dH[k])
            np.multiply(d_rh, r, out=tmp)
            dH[k] += tmp                                            # + d(r h) r
        np.multiply(dh, z, out=tmp)
        dH[k] += tmp                                                # + dh z
        rule.carry(k, dH[k], dH[k + 1])
    return _grads_gru(tape, dZx, dZh if reset_after else None, grads)


def _grads_gru(tape: _Tape, dZx: np.ndarray, dZh: np.ndarray | None, grads: Any) -> np.ndarray:
    """GRU: all weight gradients from dZx (and dZh with reset_after); returns dX."""
    T, B, U = tape.T, tape.B, tape.U
    cell = tape.cell
    H, RH = tape.H, tape.RH
    reset_after = cell.reset_after
    flat_x = dZx.reshape(T * B, 3 * U)
    H_prev = H[:-1].reshape(T * B, U)
    has_bias = cell.bias is not None
    (d_kernel,), sum_x = _at_b_sums([tape.X.reshape(T * B, tape.F)], flat_x, has_bias)
    grads.add(cell, "kernel", d_kernel)                             # (features, 3*units)
    if reset_after:
        flat_h = dZh.reshape(T * B, 3 * U)
        (d_rec,), sum_h = _at_b_sums([H_prev], flat_h, has_bias)
        grads.add(cell, "recurrent_kernel", d_rec)                  # (units, 3*units)
        if has_bias:
            grads.add(cell, "bias", np.stack([sum_x, sum_h]))
    else:
        d_rec = np.empty((U, 3 * U), dtype=tape.dtype)
        d_rec[:, :2 * U] = _at_b(H_prev, flat_x[:, :2 * U])
        d_rec[:, 2 * U:] = _at_b(RH.reshape(T * B, U), flat_x[:, 2 * U:])
        grads.add(cell, "recurrent_kernel", d_rec)
        if has_bias:
            grads.add(cell, "bias", sum_x)                          # (3*units,)
    return _input_grad(tape, flat_x)


def _backward_compiled(rnn: Any, tape: _Tape, d_out: np.ndarray, d_states: list,
                       grads: Any) -> np.ndarray:
    """The per-step loop compiled (unrolled.kernels._numba_train), then the same whole-sequence
    weight-gradient products as the NumPy kernel."""
    nb, T, B, U, dtype = tape.compiled, tape.T, tape.B, tape.U, tape.dtype
    cell = tape.cell
    valid, use_mask = (tape.valid, True) if tape.valid is not None else (_NO_MASK, False)
    pass_total = not (rnn.zero_output_for_mask or rnn.unroll)
    unroll = rnn.unroll and not rnn.zero_output_for_mask
    rule = (valid, use_mask, pass_total, unroll)
    dH = d_states[0]
    W = cell.recurrent_kernel
    parts = _threads.blocks(B)                          # ROWS chosen: blocks of rows at once
    if tape.kind == "gru":
        dZx = tape.buffers.empty("dZx", (T, B, 3 * U), dtype)
        dZh = tape.buffers.empty("dZh", (T, B, 3 * U), dtype) if cell.reset_after else None
        _by_rows(nb.gru_backward, (tape.A, tape.H, tape.RH, W, d_out, dH, dZx,
                                   dZx if dZh is None else dZh, *rule, cell.reset_after,
                                   _own_product(W, parts, B)), B, parts)
        return _grads_gru(tape, dZx, dZh, grads)
    units = _threads.units() if parts == 1 and tape.kind == "lstm" else 1     # UNITS chosen
    own = units > 1 or _own_product(W, parts, B)
    W_T = W if own else np.ascontiguousarray(W.T)       # own: the loops pack W^T; BLAS: W^T
    dZ = tape.buffers.empty("dZ", (T, B, _GATES[type(cell)] * U), dtype)
    if tape.kind == "simple":
        _by_rows(nb.simple_backward, (tape.A, W, W_T, d_out, dH, dZ, *rule, own), B, parts)
    else:
        args = (tape.A, tape.C, tape.TC, W, W_T, d_out, dH, d_states[1], dZ, *rule, own)
        if units > 1:
            _threads.by_units(nb.lstm_backward, args, B, units)
        else:
            _by_rows(nb.lstm_backward, args, B, parts)
    return _grads(tape, dZ, grads)
