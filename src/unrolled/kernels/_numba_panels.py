"""The step product `h W` by packed panels: the compiled loops' matrix product; and the same
product reading W where it is (`columns_product`, at the end), or, for a few rows of h, down W's
rows (`rows_product`, below).

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

`panel_product_acc` is the same product added onto `out`'s numbers (`out += a @ W`), each
sum starting from out's number. The two packed products have blocks of their own, each size a
compiled function that compiles with the product calling it, so that a loop that never adds
compiles one set: with every block in one function and a flag for the sums' start, Numba's SSA
pass (which visits every statement once for each name assigned more than once) was a third of
the compile, and the flag doubled the statements. On a new machine `panel_product` compiled in
14.8 s where that one function took 24-29, and a training step's first call took 21 s against
32-37 (benchmarks/RESULTS.md, round 24). `columns_product` keeps its blocks in one function:
as functions of their own its last rows ran at 0.6-0.8 of the speed.

LLVM turns the named sums into vector registers with its SLP vectorizer, which Numba leaves off
by default (it miscompiled some code, numba/numba#8852). It is switched on while the products
compile, below, and back off: each product is compiled for one signature when first looked up
(`__getattr__`), or loaded from Numba's cache, so no other code is compiled with it (the
blocks, compiled only from a product's compile, compile with it).
tests/test_compiled_activations.py checks the product against a float64 product at every
remainder of rows and columns, and that it is vectorized.

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

**CPUs with AVX-512** (32 vector registers of 512 bits) run a second generated source,
`_panel_source_wide.py`: panels of 32 columns (two 512-bit vectors), 8 rows a block, and each
product asks LLVM for 512-bit vectors (`_vector_width.prefer_512_bit_vectors`; LLVM otherwise
builds 256-bit vectors for most of these CPUs). Per k a block loads two vectors of W and
broadcasts 8 numbers of `a` into 16 fused multiply-adds, whose sums take 16 registers. On an
Intel Xeon with AVX-512 (round 19's benchmark machine), one thread, best of 7 interleaved
samples at the grid's step shapes from (16, 80) @ (80, 256) to (64, 320) @ (320, 1024):
16-column panels, 5 rows, 256-bit vectors (the other source) 93-128 GFLOP/s; the same in
512-bit vectors 101-134; 16 columns and 10 rows 123-185 (12 rows: no faster, 18 s to compile);
32 columns and 8 rows 185-212, 6 rows 163-192; OpenBLAS 104-166. At (128, 1024) @ (1024, 4096)
the 32-column product ran at 152 against OpenBLAS's 166. Rows left after the whole blocks go
in blocks of 4 and 2 rows and a lone row: with blocks of every size up to 7 each product took
13 s to compile, 9-10 s so (the 256-bit ones 3-4 s). The sums and their order are the same
in both sources, so both give the same bits.

**`rows_product`**, for the BLAS loops' steps of 2 to `_numba.GEMV_ROWS` rows (a call of too few
steps to pay for packing), reads W where it is and in order, 4 rows of W at a time over all the
columns: each chunk of WIDTH columns' sums of a block of h's rows (4, 2, then 1) come from
`out`, take those 4 rows' multiply-adds in order and go back, so each sum runs over k in order
from zero, with panel_product's bits. BLAS's sgemv reads all of W for each row of h, and its
sgemm packs all of W at every call; this reads W once a block of 4 rows, a stream of whole rows
the prefetchers follow (columns_product, reading down columns, ran at a third of its speed for
4 rows). On the 2-vCPU AMD EPYC of round 31, one thread: (4, 544) @ (544, 2048) 0.115 ms
against 0.175 for four sgemv on two threads, (4, 288) @ (288, 1024) 0.027 against 0.058
(benchmarks/RESULTS.md, round 31).
"""

from __future__ import annotations

import contextlib

import numba
import numpy as np
from numba.core import config
from numba.core.compiler_lock import global_compiler_lock

from unrolled._memory import ALIGN
from unrolled.kernels import _panel_source, _vector_width

# The products' source for this CPU: 16-column panels and 5 rows a block in 256-bit vectors,
# or, with AVX-512, 32-column panels and 8 rows in 512-bit vectors (see above). Both sum each
# number in the same order.
WIDE = _vector_width.available()


def source_module(wide: bool = WIDE):
    """The generated module holding the products' Python source: 256-bit or 512-bit."""
    if wide:
        from unrolled.kernels import _panel_source_wide

        return _panel_source_wide
    return _panel_source


_source = source_module()
ROWS, WIDTH = _source.ROWS, _source.WIDTH

njit = numba.njit(cache=True, nogil=True, error_model="numpy")


@contextlib.contextmanager
def _slp_vectorizer():
    # Numba reads the setting whenever it builds an optimization pipeline; setting it in its
    # config module is the supported way besides the environment variable. Numba's compiler
    # lock is held throughout, so that no other thread's compile sees the setting (a product
    # looked up from Python, not from a compiling loop, may compile while another thread is
    # compiling).
    with global_compiler_lock:
        old = config.SLP_VECTORIZE
        config.SLP_VECTORIZE = 1
        try:
            yield
        finally:
            config.SLP_VECTORIZE = old


# Each product is compiled for `a` and `out` C-contiguous only: for `a` of any layout it ran
# 1-6% slower at the grid's step shapes (one thread), and for an `out` of any layout the blocks
# of 1 and 3 rows ran 7-9x slower (a (1, 256) @ (256, 256) step took 33 us instead of 4.7).
#
# Each is compiled (or loaded from Numba's cache) the first time it is looked up, by
# `__getattr__` below: a compiled loop that calls it looks it up when it is itself compiled,
# not when it is loaded from the cache (`_numba.compile_products_first` looks a loop's product
# up before the loop compiles: compiled in the middle of the loop's compile it took twice as
# long). A fresh compile takes 14-17 s on the AVX-512 machine, so the small-shape loops, which
# call none, and each cell's loops compile only what they call: on a machine with an empty
# cache, an LSTM layer's first call took 50 s when both were compiled on import for two layouts
# of `a` (RESULTS.md, round 15).
_SIGNATURES = {
    # `panel_product(a, panels, out)`: `out = a @ W`. `panel_product_acc`: `out += a @ W`, each
    # sum starting from out's number, so that a product in two parts over k (`h W`, then
    # `+ x U`) has the bits of one (unrolled.kernels._numba_loops.SPLIT_BYTES); only the loops
    # that split call it, so only they compile it.
    "panel_product": numba.void(numba.float32[:, ::1], numba.float32[:, :, ::1],
                                numba.float32[:, ::1]),
    "panel_product_acc": numba.void(numba.float32[:, ::1], numba.float32[:, :, ::1],
                                    numba.float32[:, ::1]),
    # `columns_product(a, W, bases, out)`: the same blocks and sums as panel_product, each
    # panel read from 16 columns of W where they are (from `bases[p]`), so a cell's `[W; U]`
    # needs no copy (unrolled.kernels._numba.stacked_weights). With a row of W in a few cache
    # lines it runs as fast as the packed product; a row of a page or more puts each k on a
    # new page, where the prefetchers stop (0.55 of it at (20, 320) @ (320, 1024)). Its column
    # offsets are masked non-negative: signed offsets read from an array kept NumPy's
    # wraparound check on every load, and the loads did not vectorize (25-28 against 70-86
    # GFLOP/s). `W` C-contiguous, `bases` int64.
    "columns_product": numba.void(numba.float32[:, ::1], numba.float32[:, ::1],
                                  numba.int64[::1], numba.float32[:, ::1]),
    # `rows_product(a, W, out, c0, c1)`: `out[:, c0:c1] = a @ W[:, c0:c1]` for a few rows, W
    # read where it is, down its rows (see below). All three C-contiguous.
    "rows_product": numba.void(numba.float32[:, ::1], numba.float32[:, ::1],
                               numba.float32[:, ::1], numba.int64, numba.int64),
}


def compiled(name: str, cache: bool = True, wide: bool = WIDE):
    """The product `name` (a key of `_SIGNATURES`) compiled for its signature, or loaded from
    Numba's cache, with SLP on; from the 512-bit source if `wide`."""
    source = getattr(source_module(wide), name)
    with _slp_vectorizer():
        return numba.njit([_SIGNATURES[name]], cache=cache, nogil=True, error_model="numpy",
                          fastmath={"contract"})(source)


def __getattr__(name: str):
    # the products, compiled at their first look-up (see above) and kept as module globals
    if name in _SIGNATURES:
        product = globals()[name] = compiled(name)
        return product
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@njit
def panel_count(n):
    return (n + WIDTH - 1) // WIDTH


# The packers copy PACK_ROWS rows of the weights at a time into every panel: those rows are one
# contiguous stretch of memory, read from the cache while their panels are written. Panel by
# panel down all the rows, each panel's WIDTH numbers a row came from a row of their own, as
# many rows as the weights have; past the L2's size that read went at memory's latency: an
# LSTM(1024)'s (1056, 4096) weights took 7.8-9.1 ms to pack into a new array so, and take
# 4.4-5.6 ms now (3.7 against 2.9 where the allocator hands back memory already touched), of
# a one-sample call of 35-38 ms over 100 steps (RESULTS.md, round 26).
PACK_ROWS = 16


@njit
def pack(panels, W, k0):
    """`panels[p, k0 + k, c] = W[k, width p + c]`, zero past W's last column; `width` is
    `panels.shape[2]` (WIDTH, or the other source's, in tests). A `W` of contiguous columns
    (a transpose, the backward's `W^T`) is read along them (`_pack_columns`)."""
    K, N = W.shape
    width = panels.shape[2]
    if K > 1 and N > 1 and W.strides[0] == 4 and W.strides[1] != 4:
        _pack_columns(panels, W.T, k0)
        return
    full = N // width
    for r0 in range(0, K, PACK_ROWS):       # a few rows at a time, all their panels (below)
        for p in range(full):
            for k in range(r0, min(r0 + PACK_ROWS, K)):
                for c in range(width):
                    panels[p, k0 + k, c] = W[k, width * p + c]
    if full < panels.shape[0]:
        for k in range(K):
            for c in range(width):
                j = width * full + c
                panels[full, k0 + k, c] = W[k, j] if j < N else 0


# A transposed W's panels are read along W's own rows, `COLUMN_GROUP` rows at a time for
# `COLUMN_TILE` numbers each, written into the panel's rows a tile at a time: `pack` read
# down the columns (a panel row's WIDTH numbers from WIDTH rows of W, 8 or 16 KiB apart, all
# in one set of the L1 cache), and an LSTM(512)'s W^T, (2048, 512), took 2.3-3.5 ms to pack so,
# against 0.5-0.6 so; an LSTM(1024)'s 9-15 against 5-6 (RESULTS.md, round 29).
COLUMN_GROUP = 4
COLUMN_TILE = 64


@njit
def _pack_columns(panels, V, k0):
    # panels[p, k0 + k, c] = V[width p + c, k]: the panels of V^T, zero past V's last row
    N, K = V.shape
    width = _uint(panels.shape[2])
    flat = panels.reshape(-1)
    full, kk = _uint(N) // width, _uint(K)
    start, stride = _uint(k0) * width, _uint(panels.shape[1]) * width
    for p in range(full):
        base = p * stride + start
        for c0 in range(_uint(0), width, _uint(COLUMN_GROUP)):
            for k1 in range(_uint(0), kk, _uint(COLUMN_TILE)):
                k2 = min(k1 + _uint(COLUMN_TILE), kk)
                for c in range(c0, c0 + _uint(COLUMN_GROUP)):
                    row = V[width * p + c]
                    o = base + c
                    for k in range(k1, k2):
                        flat[o + k * width] = row[k]
    if full < _uint(panels.shape[0]):
        for k in range(K):
            for c in range(panels.shape[2]):
                j = panels.shape[2] * full + c
                panels[full, k0 + k, c] = V[j, k] if j < N else 0


@numba.njit(inline="always")
def _uint(i):
    # an index as uint64 (no negative-index check)
    return np.uint64(i)


# Panels start on a 64-byte boundary, a cache line: with AVX-512 each load of a panel's row is
# a 64-byte vector, and one that straddles two lines costs two. Numba's `np.empty` aligns to 32
# bytes, so half its arrays straddled. On the Intel Xeon of round 19, one thread, 64-byte
# aligned panels against panels at 16, 32 or 48 bytes past a line: 100 products
# (16, 80) @ (80, 256) 0.367 ms against 0.407-0.412, 10 of (64, 320) @ (320, 1024) 2.37 against
# 2.60 (RESULTS.md, round 22). The same for the cell's `[W; U]` that columns_product reads in
# place (unrolled._memory.aligned_empty, whose ALIGN this is).


@njit
def empty_panels(count, K):
    """An uninitialized (count, K, WIDTH) float32 array whose first number is on an ALIGN-byte
    boundary (so is every panel's, and every row's: WIDTH numbers are a multiple of ALIGN
    bytes); a view of a slightly larger array."""
    n = count * K * WIDTH
    spare = ALIGN // 4
    buf = np.empty(n + spare, dtype=np.float32)
    skip = ((ALIGN - (buf.ctypes.data & (ALIGN - 1))) & (ALIGN - 1)) >> 2
    return buf[skip:skip + n].reshape((count, K, WIDTH))


@njit
def packed(W):
    """All of W (K, N) in panels: (ceil(N / WIDTH), K, WIDTH)."""
    panels = empty_panels(panel_count(W.shape[1]), W.shape[0])
    pack(panels, W, 0)
    return panels


@njit
def packed_stack(W, U):
    """`[W; U]` (W's rows, then U's) in panels, for `[h | x] [W; U]` in one product."""
    panels = empty_panels(panel_count(W.shape[1]), W.shape[0] + U.shape[0])
    pack(panels, W, 0)
    pack(panels, U, W.shape[0])
    return panels
