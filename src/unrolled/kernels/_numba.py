"""Compiled whole-sequence loops (Numba), when Numba is installed (`pip install unrolled[numba]`).

Two families, both proven equal to the reference loop by tests/test_kernels.py:

- **Small-shape loops** (`_numba_loops.LOOPS`). At small shapes a NumPy kernel's time is
  Python's: every step is 3 (SimpleRNN) to 12 (GRU) NumPy calls of about a microsecond each,
  whatever their size. These loops run the whole sequence, projection included, as plain loops
  in one compiled call, computing what the NumPy kernels compute in the same order per number
  (projection `x U`, then `+ b`, then `+ h W`); in float32 tanh and sigmoid are the BLAS
  loops' `tanh32_fast` and `sigmoid32_fast` (below), in float64 libm's. Used when one step's
  `h W` is at most `WORK_MAX[gates]` multiply-adds and the activations are tanh, sigmoid, relu
  or linear, unless a BLAS loop applies and the call has more than `BLAS_MIN[gates]`
  multiply-adds. A plain call of one such layer (no mask, no initial state) goes from the
  layer's kept plan straight to the loop (`plain` in `_bind`).
- **BLAS loops** (`_numba_loops.BLAS_LOOPS`), for float32 and the default activations (tanh,
  and sigmoid for the gates), above those sizes. While the recurrent kernel is at most
  `OWN_GEMM_BYTES` (or the batch has at most `OWN_GEMM_ROWS` rows, for all but the largest
  weights), `h W` is the loops' own panel product (`_numba_panels`, faster than
  OpenBLAS; in 512-bit vectors on CPUs with AVX-512), on the weights packed once a call or,
  where that is as fast, read in place from the cell's `[W; U]` (`stacked_weights`), and the
  fused loops fold the input projection into it (`[h | x_t] [W; U]`). A batch of more rows
  on larger weights that returns the whole sequence may pack them into the output's last
  steps, which hold nothing yet, and run the steps before those on them in a units form, the
  rest in the BLAS loop (`TAIL_SHARE`; no copy of the weights over the memory budget);
  above, and in a call of too few steps to pay for packing the weights (`pack_pays`), `h W` and
  the chunked input projection go to BLAS (`_numpy_blas.dot`: NumPy's own sgemm, or its sgemv
  for one row, where NumPy brings an OpenBLAS, else Numba's `np.dot`, which calls SciPy's),
  but for 2 to GEMV_ROWS rows, whose `h W` is `_numba_panels.rows_product`, W read in place
  and once for all the rows, on weights of at most ROWS_PRODUCT_BYTES. Over GEMV_ROWS rows,
  LSTM's and SimpleRNN's BLAS loops have no projection where the cell's `[W; U]` lies in one
  piece (`adjacent_weights`): each step is one sgemm `[h | x_t] [W; U]`.
  Everything between two products (adding the projection and bias, the activations, the gate
  arithmetic, the state update and the mask) is one compiled pass per step (in 512-bit vectors
  on CPUs with AVX-512, `_vector_width`), with activations that vectorize (`tanh32_fast`, a
  rational function within 5 ulp of NumPy's tanh, and `sigmoid32_fast` from it, within 2e-7 of
  the sigmoid). The NumPy kernel needs 3-12 full passes and NumPy's float32 tanh, which runs one
  number at a time on CPUs without AVX-512. Blocks of batch rows can run at once on threads
  (`_threads.ROWS`), and a batch of under 128 rows can split each step's blocks of units between
  threads instead (`_threads.UNITS`: the fused loops on packed weights).

Everything else (float64 above the small shapes, other activations, Numba or SciPy missing)
runs the NumPy kernels.

Costs, paid once per process: importing Numba (0.5-2 s) on the first call that could use it, and
loading each compiled loop from Numba's cache (`cache=True`: compiled once per machine and
dtype, stored next to this file or in Numba's user cache directory). The very first time, a
loop compiles with everything it calls, so each loop calls only what its shape runs: the step
products (`_numba_panels`, 3-7 s each to compile, 8-10 s in 512-bit vectors) are compiled at
their first look-up, which `_bind` makes before the loop that calls them compiles
(`compile_products_first`); a fused loop is compiled apart for packed weights and for weights
read in place, each calling one product; and the fused loops are loops of their own
(`_numba_loops.FUSED_LOOPS`), not a branch of the BLAS loops, which call BLAS. On the Zen 3
benchmark machine, with an empty cache, the first call of a layer at (32, 100, 16, 64) took
9-12 s (13-21 s with round 15's code, 43-53 s when every product was compiled on import), a
layer at (4, 5, 1, 2) 3-5 s, and a first training step at (32, 100, 16, 64) 13-18 s (21-30 s
with round 15's code) (`benchmarks/first_call.py`, benchmarks/RESULTS.md rounds 15 and 16).
On round 19's machine, with AVX-512, whose product takes 8-10 s to compile (3-4 s for the
256-bit one): 10.6-12.6 s at (32, 100, 16, 64), 1.5-2.3 s at (4, 5, 1, 2) (1.7-2.4 s with
round 20's small loops), 13.4 s for the first training step.
`import unrolled` never imports Numba. `UNROLLED_NUMBA=0` (read at the first call)
turns the compiled loops off; so does setting `unrolled.kernels._numba.enabled = False`.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from unrolled import _env, activations
from unrolled.kernels import _outputs, _threads
from unrolled.kernels._plan import CHUNK_BYTES, CHUNK_STEPS

__all__ = ["available", "loop_for", "WORK_MAX", "BLAS_MIN"]

# The largest step product `(batch, units) @ (units, gates*units)`, in multiply-adds, run
# compiled, by number of gates. Measured interleaved (benchmarks/RESULTS.md), compiled vs NumPy
# kernel: SimpleRNN 1.9x faster at (4, 2), 1.6x at (8, 8), 0.75x at (16, 16); LSTM and GRU
# 5.8-6x at (4, 2), 2.1-2.7x at (16, 16), 0.85-1.0x at (32, 32). A SimpleRNN step is only 3
# NumPy calls, a gated step 10-12, so the compiled loop pays longer for gated cells.
WORK_MAX = {1: 1 << 11, 3: 1 << 16, 4: 1 << 16}

# Where a BLAS loop applies (float32, the default activations) it takes over from the small-shape
# loop above this many multiply-adds in the whole call, `batch * timesteps * (features + units)
# * gates * units`. A BLAS loop costs about 5-10 us more per call (the thread choice, packing the
# weights) and less per step: its products and activations run over whole (rows, units) blocks,
# where the small loop goes one sample and one number at a time (with the same float32
# activations since round 11). Measured interleaved, the two compiled loops side by side
# (`python benchmarks/loops.py`, benchmarks/RESULTS.md round 11).
BLAS_MIN = {1: 14000, 3: 40000, 4: 8000}

# The BLAS loops multiply `h W` with their own panel product (see _numba_panels) while the
# recurrent kernel is at most this many bytes, and call BLAS above. The panel product measured
# 30-38 GFLOP/s on one thread against OpenBLAS's 11-35 at step shapes up to (128, 1024) @
# (1024, 4096). It needs the weights copied into panels, once per call (they change in place
# when trained); above 2 MiB that copy would be a visible part of a call's memory (the forward
# pass's budget is input + output + weights + one step's scratch), and packing one panel per
# step instead cost more than the product gained.
OWN_GEMM_BYTES = 2 << 20
# A batch of at most this many rows keeps the loops' own product above OWN_GEMM_BYTES too, up to
# OWN_SMALL_BATCH_BYTES of recurrent kernel. A step of a few rows is a few multiply-adds for
# each number of the weights, and BLAS packs them all again at every step: on the 2-vCPU
# benchmark machine LSTM (4, 100, 32, 512) took 24 ms a call so, and 10.3-10.8 on the weights
# packed once (with the steps' units on both cores, `_threads.UNITS`); GRU (4, 100, 32, 512)
# 23 against 5.1-5.7, LSTM (12, 100, 64, 1024) 162 against 68, SimpleRNN (4, 100, 32, 1024)
# 25.6 against 22.4 (RESULTS.md, round 25). Past 16 rows the same held (RESULTS.md, round 27;
# layer calls in one process, alternated, the weights packed once against BLAS): LSTM
# (16, 100, 32, 512) 0.44 of the time, GRU 0.35; (24, 100, 32, 512) 0.60 and 0.50;
# (16, 100, 64, 1024) 0.53 and 0.44; (64, 100, 64, 1024) 0.72 and 0.69; (128, 100, 64, 1024)
# 0.78-0.81 and 0.79, (128, 100, 64, 512) 0.83 and 0.80; but at 160 rows 0.89 and 0.83, and
# LSTM at 192 and 256 rows 0.89-0.91, where BLAS's packing is shared by that many rows. The
# packed copy is as large as the weights, for the call: more than a step's scratch (the forward
# pass's memory budget is input + output + weights + one step's scratch), which past 128 rows
# is not worth a tenth of the time. So 256 rows, the benchmark's largest point, keep BLAS and
# their budget.
OWN_GEMM_ROWS = 128
OWN_SMALL_BATCH_BYTES = 64 << 20
# Such a batch has room for the packed copy all the same in a call that returns the whole
# sequence: the output's last steps, which nothing writes before the loop gets there. The kernel
# packs the weights into them (`_tail_panels`), runs a units form on them (each step's blocks of
# units shared between the cores, each reading its share of the weights once a step for all the
# rows) up to the first step they take, and the BLAS loop for the steps after. At
# (256, 100, 256, 1024) LSTM's own steps took 0.91 of the BLAS loop's, and the call 0.92 of its
# time (the last 21 steps hold the weights; RESULTS.md, round 33). Only where the weights leave
# at least TAIL_SHARE of the steps to the units form; under the thread choice's other settings
# the kernel runs the BLAS loop as before (in blocks of rows under UNITS without the whole
# sequence), and the choice's timings decide. The two settings' numbers are not the same bits:
# the units form's product sums in another order than BLAS's (LSTM (256, 100, 256, 1024) with
# weights of 0.02 standard deviation: both within 3e-7 of the NumPy kernel at every step).
TAIL_SHARE = 0.5
# Packing costs a pass over the weights, and a copy as large, once a call: a call of too few
# steps does not pack them, and its products go to BLAS instead (`pack_pays`). A step product
# of at most GEMV_ROWS rows goes to BLAS a row at a time, each row BLAS's sgemv
# (`_numba_loops.blas_product`, `_numpy_blas.dot`; from 2 rows, on weights of at most
# ROWS_PRODUCT_BYTES, rows_product instead, below): a pass over W a row, where sgemm would pack
# all of W at every call for those few rows. (r, 1056) @ (1056, 4096) on the 2-vCPU AMD EPYC,
# sgemm against r calls of sgemv: 2 rows 1.15 ms against 0.31, 4 rows 1.17 against 0.64, 6 rows
# 1.47 against 0.95, 8 rows 1.24 against 1.22 (RESULTS.md, round 30). So packing pays from
# PACK_STEPS_ONE_ROW steps for one row (PACK_STEPS_ONE_ROW_LARGE above OWN_GEMM_BYTES of
# recurrent kernel), fewer the more rows read each pass (`steps * rows ** 1.5` at least that),
# and from PACK_STEPS steps above GEMV_ROWS rows. Layer calls on 32 features, packed against
# BLAS's products (alternated in one process, or the benchmark where said): one row,
# LSTM(1024) 1 step 2.64 ms against 0.26, 10 steps 3.51 against 1.89, 100 steps 15.2 against
# 20.7 (the benchmark: even at about 27 steps), GRU(1024) 10.7 against 13.2 at 100 steps (even
# at about 50); LSTM(256) 1 step 0.31 of the time, 8 steps 0.49, 16 steps 1.04. LSTM(1024) at
# 2 rows 8 steps 0.86, 16 steps 1.17; 4 rows 4 steps 0.92, 8 steps 1.51; 6 rows 2 steps 1.00, 4
# steps 1.28; GRU(1024) 0.97, 1.62 and 1.06 there; LSTM(512) and GRU(512) at 2 rows 16 steps
# 0.76-0.96, 4 rows 8 steps 1.03-1.19, 6 rows 8 steps 1.12-1.37.
GEMV_ROWS = 6
# From this many rows, LSTM's and SimpleRNN's BLAS loops take a step as one product over the
# cell's `[W; U]` (`_bind`, `adjacent_weights`)
ADJACENT_ROWS_MIN = GEMV_ROWS + 1
# From 2 to GEMV_ROWS rows, on a recurrent kernel of at most ROWS_PRODUCT_BYTES, the forward
# loops' step product is `_numba_panels.rows_product` instead: it reads W where it is, down its
# rows, a few rows of W at a time for all of h's rows, so W is read once a step, not once a row
# of h. On one thread against sgemv a row at a time on two (the 2-vCPU AMD EPYC, round 31):
# (4, 544) @ (544, 2048) 0.115 ms against 0.175, (6, 544) 0.19 against 0.27, (4, 288) @
# (288, 1024) 0.027 against 0.058; but on an LSTM(1024)'s (1056, 4096), where two cores' sgemv
# read W faster on a quiet host, 0.39 against 0.28 (2 rows), 0.59 against 0.61 (4) and 1.03
# against 0.89 (6).
ROWS_PRODUCT_BYTES = 8 << 20
# rows_product costs no copy and reads W once a step for all the rows, so packing pays later
# there, from PACK_STEPS_FEW_ROWS of `steps * rows ** 1.5`: 23 steps for 2 rows, 8 for 4, 5 for
# 6. Layer calls on 32 features, not packed against packed (alternated in one process, round
# 31): LSTM(256) 2 rows 16 steps 1.03, 4 rows 8 steps 0.96, 6 rows 4 steps 0.83 and 8 steps
# 1.27; LSTM(512) 2 rows 16 and 32 steps 0.97 and 1.00, 4 rows 8 steps 0.90, 6 rows 4 and 8
# steps 0.73 and 1.09; GRU(384) 4 rows 4 and 8 steps 0.50 and 0.70, 6 rows 8 steps 1.01.
PACK_STEPS_FEW_ROWS = 64
PACK_STEPS_ONE_ROW = 16
PACK_STEPS_ONE_ROW_LARGE = 32
PACK_STEPS = 4

# The cells keep the recurrent kernel and the kernel as views of one array `[W; U]`
# (unrolled.layers._builtin), and the fused loops read it there, with
# `_numba_panels.columns_product`, instead of packing a copy, where that is as fast: `[W; U]`
# of at most IN_PLACE_BYTES with rows of at most IN_PLACE_ROW bytes, and blocks of whole
# panels (units a multiple of the panels' width, `_numba_panels.WIDTH`). The product alone,
# one thread, against the packed one: the same at (20, 80) @ (80, 64) and (80, 192), 0.84-0.99
# at (80, 256), 0.55 at (320, 1024), where each row of W is a page of its own. Whole layers
# at (32, 100, 16, 64), in place against packed, interleaved: SimpleRNN 0.98-1.03, GRU
# 0.96-1.20 (median of six runs 1.01), LSTM 0.97-1.02 (benchmarks/RESULTS.md, round 14). The
# copy was most of a step's scratch there: 83% of the forward pass's allowance for it.
IN_PLACE_BYTES = 1 << 18
IN_PLACE_ROW = 1024

LINEAR, TANH, SIGMOID, RELU = 0, 1, 2, 3
_CODES = {activations.linear: LINEAR, activations.tanh: TANH, activations.sigmoid: SIGMOID,
          activations.relu: RELU}

_loops: dict[str, Callable] | None = None
_loops_blas: dict[str, Callable] | None = None
_failed = False
# Read once, at the first call that could use a compiled loop; tests and the benchmark flip it.
enabled: bool | None = None
_NO_MASK = np.ones((1, 1), dtype=np.bool_)
_classes: tuple = ()


_BLAS_CODES = {1: [TANH], 3: [TANH, SIGMOID], 4: [TANH, SIGMOID]}
_blas: bool | None = None


def _blas_available() -> bool:
    """Whether Numba's `np.dot` can reach BLAS: it uses SciPy's (`pip install unrolled[numba]`)."""
    global _blas
    if _blas is None:
        try:
            import scipy.linalg.cython_blas  # noqa: F401
        except ImportError:
            _blas = False
        else:
            _blas = True
            # A BLAS library loaded after the thread limiter took stock must be limited too.
            _threads.forget_controllers()
    return _blas


def available() -> bool:
    """Whether compiled loops may run: Numba importable and not turned off by UNROLLED_NUMBA=0."""
    global enabled
    if enabled is None:
        enabled = _env.flag("UNROLLED_NUMBA")
    return enabled and not _failed and _compiled() is not None


def _compiled() -> dict[str, Callable] | None:
    global _loops, _loops_blas, _failed
    if _loops is None and not _failed:
        try:
            from unrolled.kernels import _numba_loops
        except ImportError:
            _failed = True
        else:
            _loops, _loops_blas = _numba_loops.LOOPS, _numba_loops.BLAS_LOOPS
    return _loops


# The fewest numbers `add_rows` and `adam_update` run compiled: below it Numba's import on a
# first call (0.5-2 s) is not worth the time saved (add.at takes about 10 ns a number; 0.7 ms
# here). unrolled.optimizers restates it (`_LARGE`) to skip importing this module for small
# weights.
COMPILED_PASS_MIN = 1 << 16


def add_rows(table: np.ndarray, ids: np.ndarray, rows: np.ndarray) -> None:
    """`table[ids[k]] += rows[k]` for every k in order: `np.add.at(table, ids, rows)`, to the bit.

    table (n, width), ids (k,) integers in [0, n) (the caller checks), rows (k, width) of the
    table's dtype. Compiled when Numba runs and `rows` has at least COMPILED_PASS_MIN numbers: an
    Embedding(20000, 64) gradient over 12 800 ids took 8.8 ms by add.at, a seventh of a
    training step of the model around it (benchmarks/models.py, `sentiment`).
    """
    if (rows.size >= COMPILED_PASS_MIN and rows.dtype == table.dtype and table.flags.c_contiguous
            and available()):
        from unrolled.kernels import _numba_loops

        _numba_loops.add_rows(table, ids, np.ascontiguousarray(rows))
        return
    np.add.at(table, ids, rows)


def adam_update(w: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray, c1: Any, c2: Any,
                alpha: Any, eps: Any) -> bool:
    """Adam's update of one weight in one compiled pass, when Numba runs and the weight has at
    least COMPILED_PASS_MIN numbers, all four arrays C-contiguous of one float dtype; returns
    whether it ran (else the caller runs NumPy's passes). The same bits as NumPy's version,
    which makes about eleven passes over the weight, most of them allocating: an
    Embedding(20000, 64) table's update took 3.9-4.0 ms so, 0.76-0.90 in one pass."""
    if (w.size < COMPILED_PASS_MIN or not all(a.dtype == w.dtype and a.flags.c_contiguous
                                         and a.shape == w.shape for a in (g, m, v))
            or not w.flags.c_contiguous or not available()):
        return False
    from unrolled.kernels import _numba_loops

    t = w.dtype.type
    _numba_loops.adam_update(w.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1),
                             t(c1), t(c2), t(alpha), t(eps))
    return True


def loop_for(cell: Any, batch: int, steps: int) -> Callable | None:
    """The compiled kernel for `cell` over `steps` timesteps of `batch` samples, or None (the
    NumPy kernel runs)."""
    global _classes
    if not _classes:
        from unrolled.layers.gru import GRUCell
        from unrolled.layers.lstm import LSTMCell

        _classes = (LSTMCell, GRUCell)
    LSTMCell, GRUCell = _classes
    kind, gates = "simple_rnn", 1
    codes = [_CODES.get(cell.activation)]
    if type(cell) is LSTMCell or type(cell) is GRUCell:
        kind, gates = ("lstm", 4) if type(cell) is LSTMCell else ("gru", 3)
        codes.append(_CODES.get(cell.recurrent_activation))
    if None in codes:
        return None
    units, features = cell.units, cell.kernel.shape[0]
    small = batch * units * gates * units <= WORK_MAX[gates]
    # A BLAS loop: float32 and the default activations only, above BLAS_MIN.
    blas = (batch * steps * (features + units) * gates * units > BLAS_MIN[gates]
            and cell.kernel.dtype == np.float32 and codes == _BLAS_CODES[gates]
            and all(w.value.flags.c_contiguous for w in cell._weights))
    if not (blas or small) or not available():
        return None
    if blas and not _blas_available():
        if not small:
            return None
        blas = False
    return _bind(cell, kind, gates, blas, batch, steps)


def rows_product_takes(batch: int, size: int) -> bool:
    """Whether the BLAS loops' step products of `batch` rows on a recurrent kernel of `size`
    bytes are `rows_product`'s (2 to GEMV_ROWS rows, at most ROWS_PRODUCT_BYTES)."""
    return 1 < batch <= GEMV_ROWS and size <= ROWS_PRODUCT_BYTES


def pack_pays(batch: int, steps: int, size: int) -> bool:
    """Whether a call of `batch` rows and `steps` steps on a recurrent kernel of `size` bytes
    packs its weights for the loops' own product (where the size rules above say so), rather
    than leave the products to BLAS (to `rows_product` for a few rows)."""
    if batch > GEMV_ROWS:
        return steps >= PACK_STEPS
    if rows_product_takes(batch, size):
        least = PACK_STEPS_FEW_ROWS
    else:
        least = PACK_STEPS_ONE_ROW_LARGE if size > OWN_GEMM_BYTES else PACK_STEPS_ONE_ROW
    return steps * batch ** 1.5 >= least


# `_bind` fetches a cell's weights, biases and activation codes once and returns the kernel
# `(cell, xt, states, steps, need_seq) -> (seq, final)`. The weights are the cell's own arrays
# (written in place by set_weights and training, never replaced), so a bound kernel kept in a
# plan (unrolled.kernels.Plan) sees every update; a change of configuration drops the plan.


def _buffers(xt: np.ndarray, steps: Any, need_seq: bool, units: int):
    valid = steps.valid
    mask = _NO_MASK if valid is None else np.ascontiguousarray(valid)
    seq = _outputs.empty((xt.shape[0] if need_seq else 1, xt.shape[1], units), xt.dtype)
    return mask, valid is not None, seq


def _zeros_if_none(bias: Any, width: int, dtype: np.dtype) -> np.ndarray:
    return np.zeros(width, dtype=dtype) if bias is None else bias


def _gru_weights(cell: Any) -> tuple:
    """kernel, recurrent kernel, input bias, recurrent bias (zeros where there is none)."""
    U, bias, dtype = cell.units, cell.bias, cell.kernel.dtype
    if cell.reset_after:
        b_in = _zeros_if_none(None if bias is None else bias[0], 3 * U, dtype)
        b_rec = _zeros_if_none(None if bias is None else bias[1], 3 * U, dtype)
    else:
        b_in, b_rec = _zeros_if_none(bias, 3 * U, dtype), np.zeros(3 * U, dtype=dtype)
    return cell.kernel, cell.recurrent_kernel, b_in, b_rec


def adjacent_weights(cell: Any) -> np.ndarray | None:
    """`[W; U]`, `(units + features, gates * units)`, as a view of the cell's weights where they
    lie that way, float32 and C-contiguous, else None: the recurrent kernel and the kernel
    still views of one array, recurrent rows first, the kernel's right after (they are, from
    build, as long as nothing replaces them). That array is a view of a larger one, to start on
    a cache line (unrolled._memory.aligned_empty), so `[W; U]` is made again here over the same
    memory."""
    W, U = cell.recurrent_kernel, cell.kernel
    base = W.base
    if (not isinstance(base, np.ndarray) or not base.flags.c_contiguous or U.base is not base
            or W.dtype != np.float32 or U.dtype != np.float32
            or not (W.flags.c_contiguous and U.flags.c_contiguous)
            or W.ndim != 2 or U.ndim != 2 or U.shape[1] != W.shape[1]
            or U.ctypes.data != W.ctypes.data + W.nbytes):
        return None
    return np.ndarray((W.shape[0] + U.shape[0], W.shape[1]), dtype=np.float32, buffer=base,
                      offset=W.ctypes.data - base.ctypes.data)


def stacked_weights(cell: Any) -> np.ndarray | None:
    """`adjacent_weights(cell)` where the cell's fused loop reads its weights where they are
    (see IN_PLACE_BYTES), else None."""
    from unrolled.kernels._numba_panels import WIDTH  # loaded with the loops that call this

    W, U = cell.recurrent_kernel, cell.kernel
    if (not (W.flags.writeable and U.flags.writeable)
            or W.ndim != 2 or W.shape[0] % WIDTH or W.nbytes + U.nbytes > IN_PLACE_BYTES
            or W.shape[1] * W.itemsize > IN_PLACE_ROW):
        return None
    return adjacent_weights(cell)


def _tail_layout(kind: str) -> list[tuple[int, int, str]]:
    """The units forms' panel arrays of a cell's weights (`_numba_loops.UNPACKED`'s, filled):
    (gates, first gate, rows: "WU" for `[W; U]`, "W", "U") each, by blocks of GATE_UNITS."""
    if kind == "gru":       # [W_zr; U_zr], W_h, U_h (`_numba_loops._gru_whole`)
        return [(2, 0, "WU"), (1, 2, "W"), (1, 2, "U")]
    return [(4 if kind == "lstm" else 1, 0, "WU")]


def tail_start(kind: str, units: int, features: int, batch: int, steps: int) -> int:
    """The first of the output's steps that `_tail_panels` takes for a call of `batch` rows and
    `steps` steps, or 0 where the weights would leave fewer than TAIL_SHARE of the steps before
    them."""
    first = steps - tail_steps(kind, units, features, batch)
    return first if first > 0 and first >= TAIL_SHARE * steps else 0


def tail_steps(kind: str, units: int, features: int, batch: int) -> int:
    """How many of the output's last steps `_tail_panels` takes for the packed weights of a call
    of `batch` rows (each array starting on an ALIGN-byte boundary)."""
    from unrolled._memory import ALIGN
    from unrolled.kernels._numba_loops import GATE_UNITS, gate_panel_count
    from unrolled.kernels._numba_panels import WIDTH

    rows = {"WU": units + features, "W": units, "U": features}
    size = 0
    for gates, _first, which in _tail_layout(kind):
        count, _partial = gate_panel_count(gates, units, GATE_UNITS)
        size += count * rows[which] * WIDTH * 4 + ALIGN
    return -(-size // (batch * units * 4))


def _tail_panels(kind: str, seq: np.ndarray, first_step: int, kernel: np.ndarray,
                 recurrent: np.ndarray) -> tuple:
    """The cell's weights packed for its units form (`_numba_loops.UNPACKED`'s four arrays,
    filled) in `seq`'s steps from `first_step` on, which the loop has not written yet."""
    from unrolled._memory import ALIGN
    from unrolled.kernels import _numba_loops
    from unrolled.kernels._numba_panels import WIDTH

    U, gu = recurrent.shape[0], _numba_loops.GATE_UNITS
    flat = seq.reshape(-1)
    at = first_step * seq.shape[1] * seq.shape[2]
    none_below = np.empty((0, recurrent.shape[1]), dtype=np.float32)
    sources = {"WU": (recurrent, kernel), "W": (recurrent, none_below),
               "U": (kernel, none_below)}
    arrays = []
    for gates, first, which in _tail_layout(kind):
        top, bottom = sources[which]
        count, partial = _numba_loops.gate_panel_count(gates, U, gu)
        at += (-(seq.ctypes.data + at * 4) % ALIGN) // 4
        n = count * (top.shape[0] + bottom.shape[0]) * WIDTH
        panels = flat[at:at + n].reshape(count, -1, WIDTH)
        at += n
        if partial:
            panels[:] = 0
        _numba_loops.fill_gate_panels(panels, top, bottom, first, gates, U, gu, 0,
                                      _numba_loops.gate_blocks(U, gu))
        arrays.append(panels)
    none = np.empty((1, 1, WIDTH), dtype=np.float32)
    if kind == "gru":
        return arrays[0], _numba_loops._whole(), arrays[1], arrays[2]
    return arrays[0], (_numba_loops._whole() if kind == "lstm" else none), none, none


def _chunk(cell: Any, batch: int, gates: int, features: int) -> int:
    """Steps per projection chunk: one step, or as many as fit in CHUNK_BYTES (see _plan).

    The same size when the projection goes into the output rows: a larger chunk would be a
    larger product, and above 262144 multiply-adds OpenBLAS splits it over its threads, which
    at features=16 was 2-10x slower than one thread on the shared benchmark machine.
    """
    return max(CHUNK_STEPS, CHUNK_BYTES // max(batch * max(gates * cell.units, features) * 4, 1))


def _products_called(kind: str, fused: bool, stacked: Any) -> tuple[str, ...]:
    """The step products (`_numba_panels`) the BLAS loop or fused loop of `kind` calls."""
    if fused:
        if stacked is not None:
            return ("columns_product",)
        # LSTM's and GRU's loops add `x_t U` onto `h W` (`panel_product_acc`) where they split
        # the step's product: looked up with the weights that split (`_numba_loops.lstm_panels`)
        return ("panel_product",)
    # a BLAS loop's step product for a few rows, where `stacked` says so
    # (`_numba_loops.step_product`), and gru_blas's reset_before branch
    few = ("rows_product",) if stacked is not None else ()
    return ("panel_product", *few) if kind == "gru" else few


def compile_products_first(names: tuple[str, ...]) -> None:
    """Look up these step products before a loop that calls them is compiled: each is compiled
    on its own (or loaded from Numba's cache, a few milliseconds). A product compiled in the
    middle of a loop's compile, where the loop first names it, took twice as long: 12.6 s
    against 5.8 for `columns_product` (Numba's overload resolution does more work there), and
    an LSTM (32, 100, 16, 64)'s first call 17.9 s against 11.8 (RESULTS.md, round 16)."""
    if names:
        from unrolled.kernels import _numba_panels

        for name in names:
            getattr(_numba_panels, name)


def _bind(cell: Any, kind: str, gates: int, blas: bool, batch: int, steps: int) -> Callable:
    """The kernel for `cell` on its compiled loop. Every loop takes `(xt, weights..., states...,
    mask, masked, [reset_after], [activation codes: small loops], seq, need_seq, [chunk, own,
    panels, final states..., b0, b1: BLAS loops])`. BLAS loops write rows b0..b1-1 of the final
    states (batch, units) they are given and return nothing; small loops write the final h
    into `seq`'s last step and LSTM's c into a last argument."""
    loop, U = (_loops_blas if blas else _loops)[kind], cell.units
    if kind == "gru":
        weights, flags = _gru_weights(cell), (cell.reset_after,)
    else:
        weights = (cell.kernel, cell.recurrent_kernel,
                   _zeros_if_none(cell.bias, gates * U, cell.kernel.dtype))
        flags = ()
    codes = () if blas else (_CODES[cell.activation],) + (
        (_CODES[cell.recurrent_activation],) if gates > 1 else ())

    if not blas:
        carries_c = kind == "lstm"
        after = (*flags, *codes)

        def kernel(_cell, xt, states, steps, need_seq):
            # The final h is the last row of `seq` (see _numba_loops._final_into); LSTM's c is
            # written into an array of its own.
            mask, masked, seq = _buffers(xt, steps, need_seq, U)
            c = (np.empty((xt.shape[1], U), dtype=xt.dtype),) if carries_c else ()
            loop(xt, *weights, *states, mask, masked, *after, seq, need_seq, *c)
            return (seq if need_seq else None), [seq[-1], *c]

        def plain(rnn, x, states):
            # The layer's whole return value for a plain call (no mask, one cell): what
            # `Plan.call` makes of `kernel`'s, with nothing in between. At (4, 5, 1, 2) the
            # loop's call takes 1.4-2.2 us, and each Python step here about 0.1-0.3 us: built
            # by a helper shared with `Plan.call` (a call and a list more), a layer call took
            # 4-7% longer (interleaved, all three cells), so the few lines stay in both.
            xt = x.transpose(1, 0, 2)                               # (timesteps, batch, features)
            if rnn.go_backwards:
                xt = xt[::-1]
            need_seq = rnn.return_sequences
            seq = np.empty((x.shape[1] if need_seq else 1, x.shape[0], U), dtype=x.dtype)
            if carries_c:
                c = np.empty((x.shape[0], U), dtype=x.dtype)
                loop(xt, *weights, *states, _NO_MASK, False, *after, seq, need_seq, c)
            else:
                loop(xt, *weights, *states, _NO_MASK, False, *after, seq, need_seq)
            output = seq.transpose(1, 0, 2) if need_seq else seq[0]  # (batch, [timesteps,] units)
            if not rnn.return_state:
                return output
            h = seq[-1].copy() if need_seq else output  # not a view that keeps `seq` alive
            return (output, h, c) if carries_c else (output, h)

        kernel.plain = plain  # the plan's short route (unrolled.kernels.Plan.call)
    else:
        size = cell.recurrent_kernel.nbytes
        own = size <= OWN_GEMM_BYTES or (batch <= OWN_GEMM_ROWS and size <= OWN_SMALL_BATCH_BYTES)
        fused = own and (kind != "gru" or cell.reset_after)
        stacked = stacked_weights(cell) if fused else None
        if own and stacked is None and not pack_pays(batch, steps, size):
            own = fused = False             # too few steps to pay for the packing
        from unrolled.kernels import _numba_loops  # loaded already: _compiled() found the loops

        # 2 to GEMV_ROWS rows on BLAS's side: each step's `h W` is rows_product's, on this
        # thread, and the BLAS loop is the one compiled to call it (`stacked` FEW_ROWS, see
        # `_numba_loops.step_product`); GRU's reset_before products are BLAS's a row each
        few = (not fused and rows_product_takes(batch, size)
               and (kind != "gru" or cell.reset_after))
        if few:
            stacked = _numba_loops.FEW_ROWS
        # Over GEMV_ROWS rows, LSTM's and SimpleRNN's BLAS loops multiply `[h | x_t]` by the
        # cell's `[W; U]` where the two lie that way: one sgemm a step, no projection ahead of
        # it (`_numba_loops.lstm_blas`; (256, 100, 256, 1024): LSTM 0.96 of the time, SimpleRNN
        # 0.98). A generator's one-step calls of 1 to 6 rows keep x_t U and h W apart: merged,
        # rows_product took 0.98-1.07 of the time, and one row's sgemv moved by up to 2x with
        # the thread choice (RESULTS.md, round 32).
        adjacent = (adjacent_weights(cell) if kind in ("lstm", "simple_rnn") and not fused
                    and batch >= ADJACENT_ROWS_MIN else None)
        cell_weights = weights
        if adjacent is not None:
            weights = (adjacent, *weights[1:])
        # Over OWN_GEMM_ROWS rows, the weights packed into the output's last steps for a units
        # form up to there (see TAIL_SHARE), where they leave enough steps before them: for the
        # plan's shape here, and again for each call's (a padded batch's spans of steps run
        # fewer steps and rows, `_dispatch._by_spans`)
        tail = (not own and batch > OWN_GEMM_ROWS and size <= OWN_SMALL_BATCH_BYTES
                and (kind != "gru" or cell.reset_after)
                and tail_start(kind, U, cell.kernel.shape[0], batch, steps) > 0)

        own_loop = _numba_loops.FUSED_LOOPS[kind]
        if fused:                           # the loops' *_fused, with the BLAS loops' arguments
            loop = own_loop
        pack = _numba_loops.PANELS[kind]
        packs = own and stacked is None     # else BLAS's products, or `stacked` read in place
        # the BLAS loops' placeholder for panels, never read: made once (a compiled call of
        # 2-3 us, a fifth of a one-step call of SimpleRNN(256))
        no_panels = None if own else _numba_loops.no_panels()
        compile_products_first(_products_called(kind, fused, stacked))

        def kernel(_cell, xt, states, steps, need_seq):
            mask, masked, seq = _buffers(xt, steps, need_seq, U)
            if fused:   # the step products read h_{t-1} where it is: C-contiguous rows
                states = [np.ascontiguousarray(s) for s in states]
            B = xt.shape[1]
            blocks = _threads.blocks(B)
            parts = _threads.units() if (by_units or tail) and blocks == 1 else 1
            if tail and parts > 1:
                T0 = tail_start(kind, U, xt.shape[2], B, xt.shape[0]) if need_seq else 0
                if T0:
                    return _tail_call(xt, states, mask, masked, seq, B, parts, T0)
                # no room for the weights: the BLAS loop in blocks of rows
                blocks, parts = min(parts, B), 1
            chunk = _chunk(cell, -(-B // blocks), gates, xt.shape[2])
            # the weights in panels for the loops' own product: once a call, shared by the
            # blocks (`B // blocks` rows in the smallest); in units left to the parts, each
            # packing a block at its first job (whole: their jobs never split a step's
            # product; `UNPACKED`); None for a fused loop that reads `stacked`
            if packs and parts > 1:
                panels = _numba_loops.UNPACKED[kind](*weights, *flags, 0)
            else:
                panels = (pack(*weights, *flags, B // blocks) if packs
                          else None if fused else no_panels)
            # the final states, each block writing its rows; the fused loops keep h in `seq`,
            # so theirs is the output's last step
            final = [seq[-1] if fused and i == 0 else np.empty((B, U), dtype=xt.dtype)
                     for i in range(len(states))]
            args = (xt, *weights, *states, mask, masked, *flags, seq, need_seq, chunk, own,
                    panels, stacked, *final)
            if parts > 1:
                _threads.by_units(loop, args, B, parts)
            else:
                _threads.by_rows(loop, args, B, blocks, blas=not fused)
            return (seq if need_seq else None), final

        def _tail_call(xt, states, mask, masked, seq, B, parts, T0):
            # steps 0..T0-1 on the weights packed into steps T0..: the units form; then the
            # BLAS loop from h_{T0-1} (the output's step T0 - 1) and c, in blocks of rows
            states = [np.ascontiguousarray(s) for s in states]
            panels = _tail_panels(kind, seq, T0, cell.kernel, cell.recurrent_kernel)
            c = [np.empty((B, U), dtype=xt.dtype) for _ in states[1:]]     # LSTM's, in place
            head = (mask[:T0] if masked else mask), (mask[T0:] if masked else mask)
            # (the units forms keep h in `seq` and never write the final h they are given: h's
            # array is made after them, when their buffers are gone, for the memory budget)
            _threads.by_units(own_loop, (xt[:T0], *cell_weights, *states, head[0], masked,
                                         *flags, seq[:T0], True, 1, True, panels, None,
                                         seq[T0 - 1], *c), B, parts)
            final = [np.empty((B, U), dtype=xt.dtype), *c]
            states = [seq[T0 - 1], *c]
            blocks = min(parts, B)
            _threads.by_rows(loop, (xt[T0:], *weights, *states, head[1], masked, *flags,
                                    seq[T0:], True, _chunk(cell, -(-B // blocks), gates,
                                                           xt.shape[2]), False, no_panels, None,
                                    *final), B, blocks)
            return seq, final

        kernel.rows = True  # runs blocks of rows at once when the thread choice says so
        # or each step's units in parts at once: the fused loops on packed weights
        # (`_numba_loops.lstm_own_units`, ...); `units`: their blocks of units a step (0: no
        # such form). From 2 * ROW_BLOCK_MIN rows, where blocks of rows are offered, only for
        # weights over OWN_GEMM_BYTES: blocks of rows then each read them all from memory, a
        # part its share; smaller weights stay in each core's L2 (units forced at
        # (128, 200, 64, 256): LSTM the same time, SimpleRNN 1.12; RESULTS.md, round 27).
        by_units = packs and fused and (batch < 2 * _threads.ROW_BLOCK_MIN
                                        or size > OWN_GEMM_BYTES)
        # (and the kernels with a tail, at any batch: `_tail_call`)
        kernel.units = -(-U // _numba_loops.GATE_UNITS) if by_units or tail else 0
        kernel.units_any_batch = tail           # UNITS offered past UNIT_ROWS_MAX rows
        kernel.blas = not fused  # the fused loops' products are their own: BLAS is never called
        # whether a step's `h W` goes to BLAS, whose thread count the plan may then choose
        # (`Plan.work`): not that of 2 to GEMV_ROWS rows, `rows_product`'s on one thread (with
        # a choice between one BLAS thread and all, limiting and timing, a one-step call of a
        # GRU(256) on 2 rows took 36 us, 26 without; RESULTS.md, round 31)
        kernel.blas_steps = not few
    kernel.__qualname__ = f"{kind}{'_blas' if blas else ''}"
    return kernel
