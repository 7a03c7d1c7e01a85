"""The step product `h W` by packed panels: the compiled loops' matrix product; and the same
product reading W where it is (`columns_product`, at the end).

`W (K, N)` is copied into panels of `WIDTH` columns, `panels[p, k, c] = W[k, WIDTH p + c]`
(zeros past the last column), so that one panel is a contiguous (K, WIDTH) block. The product
(`panel_product`, whose body tools/generate_panel_product.py writes into `_panel_source.py`)
runs each panel against blocks of `ROWS` rows of `h`, keeping the ROWS x WIDTH sums in vector
registers for the whole loop over k: per k, `ROWS` broadcasts and WIDTH/8 vector loads feed
ROWS*WIDTH/8 fused multiply-adds. The last M % ROWS rows go in one block of as many rows (two
rows in one block took 7.2 us at (2, 110) @ (110, 400), one row at a time 11.5 us), and a lone
last row (a batch of one) runs against three panels at once, for as many independent sums
(3.6 us at (1, 110) @ (110, 400), against 6.3 one panel at a time). Each sum runs over k in
order, as a plain dot product would, so a row's result does not depend on the block it was in.

LLVM turns the named sums into vector registers with its SLP vectorizer, which Numba leaves off
by default (it miscompiled some code, numba/numba#8852). It is switched on while this one
function compiles, below, and back off: the function is compiled for its two signatures (`a`
C-contiguous or of any layout, `out` C-contiguous) when this module is imported, or loaded from
Numba's cache, so no other code is compiled with it. tests/test_compiled_activations.py checks
the product against a float64 product at every remainder of rows and columns, and that it is
vectorized.

Measured on the benchmark machine (AMD EPYC Zen 1, one thread; `python
benchmarks/products.py`, figures in benchmarks/RESULTS.md): 30-38 GFLOP/s at the step shapes
of the benchmark grid, from (16, 80) @ (80, 64) to (128, 1024) @ (1024, 4096); OpenBLAS on one
thread does 11-35 there, and the dot-product kernel this replaced (blocks of 4 rows by 2
columns, vectorized along k) did 20-35.

`ROWS` is 5: ten sums of 8 lanes, where 4 rows gave eight. On the Zen 3 benchmark machine (two
FMA pipes of 4 cycles' latency a core), on one thread, medians of 11 interleaved samples, 5 rows
ran from 2% slower to 17% faster than 4 at the step shapes of the grid and the largest point:
(64, 320) @ (320, 1024) 92.6 against 83.8 GFLOP/s, (64, 80) @ (80, 256) 91.4 against 89.2,
(16, 80) @ (80, 256) 79.0 against 77.3, (12, 80) @ (80, 256) 73.3 against 74.9,
(128, 1024) @ (1024, 4096) 85.9 against 80.3 (OpenBLAS: 72.9). 6 rows (twelve sums) ran 2-29%
slower than 4, probably because twelve sums, two panel vectors and a broadcast need more than
the 16 vector registers.
"""

from __future__ import annotations

import contextlib

import numba
import numpy as np
from numba.core import config

from unrolled.kernels import _panel_source

ROWS, WIDTH = _panel_source.ROWS, _panel_source.WIDTH

njit = numba.njit(cache=True, nogil=True, error_model="numpy")


@contextlib.contextmanager
def _slp_vectorizer():
    # Numba reads the setting whenever it builds an optimization pipeline; setting it in its
    # config module is the supported way besides the environment variable.
    old = config.SLP_VECTORIZE
    config.SLP_VECTORIZE = 1
    try:
        yield
    finally:
        config.SLP_VECTORIZE = old


# `a` C-contiguous or of any layout (columns of a larger array, as gru_fused passes); `out`
# C-contiguous. Compiled for an `out` of any layout, the blocks of 1 and 3 rows ran 7-9x slower
# than for a C `out` (a (1, 256) @ (256, 256) step took 33 us instead of 4.7).
_SIGNATURES = [numba.void(numba.float32[:, ::1], numba.float32[:, :, ::1], numba.float32[:, ::1]),
               numba.void(numba.float32[:, :], numba.float32[:, :, ::1], numba.float32[:, ::1])]


def _compiled(cache: bool = True):
    """`panel_product` compiled for `_SIGNATURES` (or loaded from Numba's cache) with SLP on."""
    with _slp_vectorizer():
        return numba.njit(_SIGNATURES, cache=cache, nogil=True, error_model="numpy",
                          fastmath={"contract"})(_panel_source.panel_product)


panel_product = _compiled()

# `columns_product(a, W, bases, out)`: the same blocks and sums as panel_product, each panel
# read from 16 columns of W where they are (from `bases[p]`), so a cell's `[W; U]` needs no
# copy (unrolled.kernels._numba.stacked_weights). With a row of W in a few cache lines it runs
# as fast as the packed product; a row of a page or more puts each k on a new page, where the
# prefetchers stop (0.55 of it at (20, 320) @ (320, 1024)). Its column offsets are masked
# non-negative: signed offsets read from an array kept NumPy's wraparound check on every load,
# and the loads did not vectorize (25-28 against 70-86 GFLOP/s). Signatures: `a` as for
# panel_product, `W` C-contiguous, `bases` int64.
_COLUMN_SIGNATURES = [numba.void(a, numba.float32[:, ::1], numba.int64[::1],
                                 numba.float32[:, ::1])
                      for a in (numba.float32[:, ::1], numba.float32[:, :])]


def _compiled_columns(cache: bool = True):
    """`columns_product` compiled for `_COLUMN_SIGNATURES` (or loaded from the cache), SLP on."""
    with _slp_vectorizer():
        return numba.njit(_COLUMN_SIGNATURES, cache=cache, nogil=True, error_model="numpy",
                          fastmath={"contract"})(_panel_source.columns_product)


columns_product = _compiled_columns()


@njit
def panel_count(n):
    return (n + WIDTH - 1) // WIDTH


@njit
def pack(panels, W, k0):
    """`panels[p, k0 + k, c] = W[k, WIDTH p + c]`, zero past W's last column."""
    K, N = W.shape
    full = N // WIDTH
    for p in range(full):
        for k in range(K):
            for c in range(WIDTH):
                panels[p, k0 + k, c] = W[k, WIDTH * p + c]
    if full < panels.shape[0]:
        for k in range(K):
            for c in range(WIDTH):
                j = WIDTH * full + c
                panels[full, k0 + k, c] = W[k, j] if j < N else 0


@njit
def packed(W):
    """All of W (K, N) in panels: (ceil(N / WIDTH), K, WIDTH)."""
    panels = np.empty((panel_count(W.shape[1]), W.shape[0], WIDTH), dtype=np.float32)
    pack(panels, W, 0)
    return panels


@njit
def packed_stack(W, U):
    """`[W; U]` (W's rows, then U's) in panels, for `[h | x] [W; U]` in one product."""
    panels = np.empty((panel_count(W.shape[1]), W.shape[0] + U.shape[0], WIDTH),
                      dtype=np.float32)
    pack(panels, W, 0)
    pack(panels, U, W.shape[0])
    return panels
