"""The compiled loops behind unrolled.kernels._numba; importing this module imports Numba.

Each loop computes, per sample and per step, what the NumPy kernels compute, term by term in
the same order (`x_t U`, then `+ b`, then `+ h_{t-1} W`, then the activations). The products
are loops whose innermost index runs along a weight row, so they vectorize without reordering
a sum; the sums' order may differ from BLAS's, which moves float32 results by about 1e-7. In
float32 every loop's tanh and sigmoid are `tanh32_fast` and `sigmoid32_fast` (within 5 ulp of
NumPy's tanh, and 2e-7 of the sigmoid); in float64 they are libm's.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba.extending import overload

from unrolled.kernels import _atomics as atomics
from unrolled.kernels import _numba_panels as products
from unrolled.kernels import _threads
from unrolled.kernels._numba import LINEAR, RELU, SIGMOID, TANH  # noqa: F401
from unrolled.kernels._numba import GEMV_ROWS, ROWS_PRODUCT_BYTES, compile_products_first
from unrolled.kernels._numba_panels import (PACK_ROWS, ROWS, WIDTH, empty_panels, packed,
                                             packed_stack)
from unrolled.kernels._numpy_blas import dot
from unrolled.kernels._vector_width import prefer_512_bit_vectors

# error_model="numpy": a float division by zero gives inf or nan as in NumPy instead of a
# check and a raise, which would keep the loops from vectorizing.
njit = numba.njit(cache=True, nogil=True, error_model="numpy")
# The BLAS loops, and the activations as they run there, may also fuse a multiply and an add
# into one instruction (`contract`): one rounding instead of two, and the activations'
# polynomials take half the instructions (1.5x faster gate arithmetic, measured at LSTM
# (32, 64)). It changes results by at most a rounding against the NumPy kernels.
njit_fused = numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})


@numba.njit(cache=True, inline="always")
def act(v, code):
    if code == TANH:
        return tanh_of(v)
    if code == SIGMOID:
        return sigmoid_of(v)
    if code == RELU:
        return v if v > 0 else v * 0
    return v


# The small loops' tanh and sigmoid: in float32 the BLAS loops' `tanh32_fast` and
# `sigmoid32_fast` (below), in float64 libm's. At (4, 5, 1, 2) libm's float32 tanh took about
# 17 ns a number, 0.7 us of a 6.5 us SimpleRNN layer call (LSTM has five activations a unit);
# the rational tanh takes a few. Every float32 compiled loop then computes the same
# activations, within 5 ulp of NumPy's tanh (tests/test_compiled_activations.py).


@numba.njit(cache=True)
def _sigmoid(v):
    return 1 / (1 + math.exp(-v)) if v >= 0 else math.exp(v) / (1 + math.exp(v))


def tanh_of(v):
    return math.tanh(v)


def sigmoid_of(v):
    return _sigmoid(v)


@overload(tanh_of)
def _tanh_of(v):
    if v == numba.types.float32:
        return lambda v: tanh32_fast(v)
    return lambda v: math.tanh(v)


@overload(sigmoid_of)
def _sigmoid_of(v):
    if v == numba.types.float32:
        return lambda v: sigmoid32_fast(v)
    return lambda v: _sigmoid(v)


# The small loops run a step for all the batch's rows at once: each row's `x_t U`, `+ b` and
# `h W` (every number by the same operations in the same order as a row at a time), then each
# activation over all the rows' numbers of a gate, then the states in place. A row at a time,
# the activations of a row ran one short loop after another: at (4, 5, 1, 2) the LSTM loop
# took 4.2 us, 2.0 us so, with the same bits (round 20).


@njit
def project_rows(z, xt, k, kernel, bias):
    # z[b] = x_t U, then + b, for every row b: the NumPy kernels' order. Plain index loops, no
    # slices: a slice is an array object, and at the small shapes these loops serve its cost
    # shows.
    B, F, n = z.shape[0], xt.shape[2], z.shape[1]
    for b in range(B):
        for j in range(n):
            z[b, j] = 0
        for f in range(F):
            xv = xt[k, b, f]
            for j in range(n):
                z[b, j] += xv * kernel[f, j]
        for j in range(n):
            z[b, j] += bias[j]


@njit
def add_products(z, r, h, W, c0):
    # z[b] += h[b] W[:, c0:c0 + n] for every row b (r: scratch for the product), with W's
    # rows streamed: the inner loop over j vectorizes
    B, n = z.shape[0], z.shape[1]
    for b in range(B):
        for j in range(n):
            r[b, j] = 0
        for i in range(W.shape[0]):
            hv = h[b, i]
            for j in range(n):
                r[b, j] += hv * W[i, c0 + j]
        for j in range(n):
            z[b, j] += r[b, j]


@njit
def simple_rnn(xt, kernel, recurrent, bias, h0, mask, use_mask, code, seq, need_seq):
    T, B = xt.shape[0], xt.shape[1]
    U = recurrent.shape[0]
    h = h0.copy()
    z = np.empty((B, U), dtype=h.dtype)
    r = np.empty((B, U), dtype=h.dtype)
    for k in range(T):
        project_rows(z, xt, k, kernel, bias)
        add_products(z, r, h, recurrent, 0)
        for b in range(B):
            if not use_mask or mask[k, b]:
                for j in range(U):
                    h[b, j] = act(z[b, j], code)
        if need_seq:
            copy_rows(seq, k, h, 0)
    _final_into(seq, h, need_seq)


@njit
def _final_into(seq, h, need_seq):
    # The small loops return nothing (a returned array costs about 1.7 us to hand to Python, a
    # sixth of a call at (4, 5, 1, 2)): the final h is the output's last step, which holds it
    # already with need_seq and is the one-step buffer `seq` otherwise.
    if not need_seq:
        copy_rows(seq, 0, h, 0)


@njit
def copy_into(dst, src):
    # dst[:] = src, for 2-D arrays of one shape. A slice assignment compiles Numba's message for
    # mismatched shapes, string formatting that took 3.4 s of a first call's compile.
    for b in range(dst.shape[0]):
        for j in range(dst.shape[1]):
            dst[b, j] = src[b, j]


@njit
def add_rows(table, ids, rows):
    # table[ids[k]] += rows[k] for k = 0, 1, ...: np.add.at(table, ids, rows) in the same order,
    # so the same sums to the bit, without add.at's per-element dispatch (about 10 ns a number).
    # The ids are checked to lie in [0, len(table)) before this is called.
    for k in range(ids.shape[0]):
        row = table[ids[k]]
        for j in range(row.shape[0]):
            row[j] += rows[k, j]


@njit
def adam_update(w, g, m, v, c1, c2, alpha, eps):
    # Adam's update (unrolled.optimizers.Adam.update_step, without amsgrad) in one pass over
    # 1-D views, each number by the same operations in the same order as the NumPy version,
    # so the same bits: m += (g - m) c1; v += (g^2 - v) c2; w -= m alpha / (sqrt(v) + eps).
    for k in range(w.shape[0]):
        gk = g[k]
        mk = m[k] + (gk - m[k]) * c1
        vk = v[k] + (gk * gk - v[k]) * c2
        m[k] = mk
        v[k] = vk
        w[k] = w[k] - (mk * alpha) / (math.sqrt(vk) + eps)


@njit
def copy_rows(seq, k, h, b0):
    # seq[k, b0:b0+rows] = h, without the slice object
    for b in range(h.shape[0]):
        for j in range(h.shape[1]):
            seq[k, b0 + b, j] = h[b, j]


@njit
def lstm(xt, kernel, recurrent, bias, h0, c0, mask, use_mask, code, gate_code, seq,
         need_seq, c_final):
    T, B = xt.shape[0], xt.shape[1]
    U = recurrent.shape[0]
    h, c = h0.copy(), c0.copy()
    z = np.empty((B, 4 * U), dtype=h.dtype)
    r = np.empty((B, 4 * U), dtype=h.dtype)
    for k in range(T):
        project_rows(z, xt, k, kernel, bias)
        add_products(z, r, h, recurrent, 0)
        _lstm_rows(z, h, c, mask, use_mask, k, code, gate_code)
        if need_seq:
            copy_rows(seq, k, h, 0)
    _final_into(seq, h, need_seq)
    copy_into(c_final, c)


@njit
def _lstm_rows(z, h, c, mask, use_mask, k, code, gate_code):
    # The rows' new c and h, in place, from their pre-activations z = [i f g o]. The gates are
    # activated in place, one pass each over contiguous numbers: one loop over the units doing
    # all five activations took twice as long (LSTM (8, 100, 8, 32): 1.21 ms a call, 0.62 so).
    # Masked rows keep c and h.
    U = h.shape[1]
    for b in range(z.shape[0]):
        for j in range(2 * U):
            z[b, j] = act(z[b, j], gate_code)                       # i, f
        for j in range(2 * U, 3 * U):
            z[b, j] = act(z[b, j], code)                            # g
        for j in range(3 * U, 4 * U):
            z[b, j] = act(z[b, j], gate_code)                       # o
    for b in range(z.shape[0]):
        if use_mask and not mask[k, b]:
            continue
        for j in range(U):
            c[b, j] = z[b, U + j] * c[b, j] + z[b, j] * z[b, 2 * U + j]
        for j in range(U):
            h[b, j] = z[b, 3 * U + j] * act(c[b, j], code)


@njit
def gru(xt, kernel, recurrent, b_in, b_rec, h0, mask, use_mask, reset_after, code,
        gate_code, seq, need_seq):
    T, B = xt.shape[0], xt.shape[1]
    U = recurrent.shape[0]
    h = h0.copy()
    x = np.empty((B, 3 * U), dtype=h.dtype)     # x_t U + b_in, then the gates z, r, h~ in place
    R = np.empty((B, 3 * U), dtype=h.dtype)     # h W + b_rec (reset_after)
    r = np.empty((B, 3 * U), dtype=h.dtype)
    zr = np.empty((B, 2 * U), dtype=h.dtype)    # reset_after=False: x_zr + h W_zr
    rh = np.empty((B, U), dtype=h.dtype)        # r * h
    rhW = np.empty((B, U), dtype=h.dtype)       # (r * h) W_h
    for k in range(T):
        project_rows(x, xt, k, kernel, b_in)
        if reset_after:
            for b in range(B):
                for j in range(3 * U):
                    R[b, j] = 0
            add_products(R, r, h, recurrent, 0)
            for b in range(B):
                for j in range(3 * U):
                    R[b, j] += b_rec[j]
            for b in range(B):
                for j in range(2 * U):
                    x[b, j] = act(x[b, j] + R[b, j], gate_code)     # z, r
                for j in range(U):
                    x[b, 2 * U + j] = act(x[b, 2 * U + j] + x[b, U + j] * R[b, 2 * U + j],
                                          code)
        else:
            for b in range(B):
                for j in range(2 * U):
                    zr[b, j] = x[b, j]
            add_products(zr, r, h, recurrent, 0)
            for b in range(B):
                for j in range(2 * U):
                    x[b, j] = act(zr[b, j], gate_code)              # z, r
                for j in range(U):
                    rh[b, j] = x[b, U + j] * h[b, j]
                for j in range(U):
                    rhW[b, j] = 0
            add_products(rhW, r, rh, recurrent, 2 * U)
            for b in range(B):
                for j in range(U):
                    x[b, 2 * U + j] = act(x[b, 2 * U + j] + rhW[b, j], code)
        for b in range(B):
            if not use_mask or mask[k, b]:
                for j in range(U):
                    zv = x[b, j]
                    h[b, j] = zv * h[b, j] + (1 - zv) * x[b, 2 * U + j]
        if need_seq:
            copy_rows(seq, k, h, 0)
    _final_into(seq, h, need_seq)


LOOPS = {"simple_rnn": simple_rnn, "lstm": lstm, "gru": gru}


# ------------------------------------------------------------------------ BLAS loops, float32
#
# Above the small shapes the step product `h W` belongs to BLAS (`dot`, from _numpy_blas: NumPy's
# sgemm, or SciPy's through Numba's `np.dot`), and what the compiled loop adds is everything around
# it: the gate arithmetic in one pass over `(batch, gates*units)` instead of 8-12 NumPy calls, and
# activations that vectorize. NumPy's float32 tanh runs one number at a time on CPUs without AVX-512
# (about 7 ns each on the benchmark machine); `tanh32_fast` and `sigmoid32_fast` below are
# branch-free, so LLVM runs them 8 lanes wide: a rational function for tanh, with no exp, and the
# sigmoid from it. tanh32_fast is within 5 ulp of NumPy's tanh (3e-7 absolute;
# tests/test_compiled_activations.py); on 8 192 numbers it took 8.1-9.5 us against 21.2 us for a
# 2-ulp tanh by exp (AMD EPYC Zen 1). `sigmoid32_fast` is `(1 + tanh(x / 2)) / 2` by the same
# function: within 2e-7 of the exact sigmoid, absolute, so a gate below about 1e-5 keeps
# fewer correct digits (it is 0 below x = -18, where the sigmoid is under 2e-8); what a gate
# adds to a state is off by at most 2e-7 of the value it gates. Against a 2-ulp sigmoid by exp,
# on the 256-bit FMA units of Zen 3 inside the step arithmetic, an LSTM unit took 2.5-2.7 ns
# instead of 3.2, a GRU unit 1.7-1.8 instead of 2.4-2.5 (16 rows by 64 units, loops of 1 000
# steps). The training loops (_numba_train) use them too, so that the training forward's tape
# holds the gates the inference pass computes. Infinities give the limits; NaN stays NaN.

F32 = np.float32
_TANH_P = (F32(1.0), F32(0.13381394743919373), F32(0.003496025688946247),
           F32(2.0616251276805997e-05), F32(1.3364518380853951e-08))
_TANH_Q = (F32(1.0), F32(0.4671471118927002), F32(0.025878649204969406),
           F32(0.0003286349237896502), F32(7.780609507790359e-07))
# The same polynomials in w = x^2 for tanh(x / 2) = (x / 2) P(w / 4) / Q(w / 4): coefficient i
# over 4^i (and P's over 2 more). Powers of two scale a float exactly, so every sum of the
# sigmoid's Horner steps is the tanh's at x / 2 scaled by a power of two, and the sigmoid gives
# the same bits as `(1 + tanh32_fast(x / 2)) / 2` for every float32 x (all 2^32 checked, round
# 17), with one multiply fewer.
_SIGMOID_P = tuple(F32(float(c) / 4 ** i / 2) for i, c in enumerate(_TANH_P))
_SIGMOID_Q = tuple(F32(float(c) / 4 ** i) for i, c in enumerate(_TANH_Q))


@numba.njit(cache=True, inline="always")
def tanh32_fast(x):
    # x P(x^2) / Q(x^2), P and Q of degree 4, fitted to tanh on [0, 9] by weighted least squares
    # on the relative error; x^2 is clamped at 81, where tanh is 1 in float32, and the result at
    # +-1: past 9, x P(81) / Q(81) is over 1, so this is the fit at +-9 clamped, with one
    # comparison fewer than clamping x (the same bits). NaN stays NaN.
    z = min(x * x, F32(81))
    p = (((_TANH_P[4] * z + _TANH_P[3]) * z + _TANH_P[2]) * z + _TANH_P[1]) * z + _TANH_P[0]
    q = (((_TANH_Q[4] * z + _TANH_Q[3]) * z + _TANH_Q[2]) * z + _TANH_Q[1]) * z + _TANH_Q[0]
    return min(max(x * p / q, F32(-1)), F32(1))                     # the fit reaches 1 + 1 ulp


@numba.njit(cache=True, inline="always")
def sigmoid32_fast(x):
    # 1 / (1 + exp(-x)) = (1 + tanh(x / 2)) / 2, with tanh32_fast's fit at x / 2 written in x
    # (_SIGMOID_P, _SIGMOID_Q): the same bits, one multiply fewer. 0 and 1 at the ends, NaN
    # stays NaN.
    w = min(x * x, F32(324))
    p = (((_SIGMOID_P[4] * w + _SIGMOID_P[3]) * w + _SIGMOID_P[2]) * w + _SIGMOID_P[1]) * w \
        + _SIGMOID_P[0]
    q = (((_SIGMOID_Q[4] * w + _SIGMOID_Q[3]) * w + _SIGMOID_Q[2]) * w + _SIGMOID_Q[1]) * w \
        + _SIGMOID_Q[0]
    return F32(0.5) * min(max(x * p / q, F32(-1)), F32(1)) + F32(0.5)


@njit_fused
def tanh32_fast_array(a, out):
    for i in range(a.shape[0]):
        out[i] = tanh32_fast(a[i])


@njit_fused
def sigmoid32_fast_array(a, out):
    for i in range(a.shape[0]):
        out[i] = sigmoid32_fast(a[i])


# The step product. OpenBLAS packs both operands and runs kernels tuned for tall products; at
# the step shapes of most recurrent layers, `(batch, units) @ (units, gates*units)` with a batch
# of 8 to 64, that reaches 11-25 GFLOP/s of one core's ~38 on the benchmark machine (AMD EPYC
# Zen 1). While the recurrent kernel is at most `_numba.OWN_GEMM_BYTES` (`own`), the loops copy
# it into panels once per call and multiply by `_numba_panels.panel_product` (30-38 GFLOP/s on
# one thread at the benchmark grid's step shapes, benchmarks/products.py); the fused loops read
# small weights in place instead (`_numba_panels.columns_product` on the cell's `[W; U]`, see
# `_numba.stacked_weights`), with the same sums. Above that, a packed copy would break the
# forward pass's memory budget, and the products go to BLAS. Each of the panel product's sums
# runs over k in order, so results move by float32 rounding (about 1e-7 relative) against
# BLAS's.


@njit
def _packed_if(W, own):
    # W in panels for panel_product when `own`, else a placeholder (BLAS takes the products);
    # the training loops (_numba_train) pack their weights this way
    return packed(W) if own else np.empty((1, 1, WIDTH), dtype=np.float32)


@njit
def blas_product(h, W, out):
    # out = h W by BLAS: a row at a time (sgemv) for at most GEMV_ROWS rows (`_numba`), else
    # in one call
    if h.shape[0] <= GEMV_ROWS:
        for i in range(h.shape[0]):
            dot(h[i:i + 1], W, out[i:i + 1])
    else:
        dot(h, W, out)


def step_product(h, W, out, few):
    """out = h W for the forward BLAS loops: with `few` an array (`FEW_ROWS`, passed as the
    loops' `stacked`), 2 to GEMV_ROWS rows on weights of at most ROWS_PRODUCT_BYTES by
    `rows_product`, reading W where it is (`_numba`); else, and with `few` None, by BLAS."""


# The BLAS loops are compiled apart for calls whose steps may go to rows_product (a few rows:
# `few` an array) and for the others (None), so that a loop of the others never compiles
# rows_product (about 9 s on a new machine with AVX-512). With an empty cache, the first call
# of an LSTM (4, 1, 32, 512), whose loop calls it, took 13.9-19.9 s, against 3.8 in round 30,
# when every step went to BLAS; that of an LSTM (1, 1, 32, 1024) 4.3 s, against 4.0
# (benchmarks/first_call.py, RESULTS.md, round 31).
@overload(step_product)
def _step_product_overload(h, W, out, few):
    if isinstance(few, numba.types.Array):
        def product(h, W, out, few):
            M = h.shape[0]
            if 1 < M <= GEMV_ROWS and W.size * 4 <= ROWS_PRODUCT_BYTES:
                products.rows_product(h, W, out, 0, W.shape[1])
            else:
                blas_product(h, W, out)
        return product
    return lambda h, W, out, few: blas_product(h, W, out)


# what a BLAS loop's `stacked` is for a call whose steps may go to rows_product (see above)
FEW_ROWS = np.empty((0, 0), dtype=np.float32)


@njit
def _product(h, W, panels, out, own):
    # out = h W: by panel_product on W's panels when `own`, else by BLAS (the training loops,
    # and GRU's reset_before)
    if own:
        products.panel_product(h, panels, out)
    else:
        blas_product(h, W, out)


@njit
def _stage(stage, xt, start, stop, b0, b1):
    # the input rows b0..b1-1 of steps start..stop-1, time-major, into a contiguous
    # (steps*rows, F)
    B, F = b1 - b0, xt.shape[2]
    for s in range(stop - start):
        for b in range(B):
            for f in range(F):
                stage[s * B + b, f] = xt[start + s, b0 + b, f]


@njit
def _keep_rows(new, old, mask, k, b0):
    # masked samples keep their previous state (new, old: rows b0.. of the batch)
    for b in range(new.shape[0]):
        if not mask[k, b0 + b]:
            for j in range(new.shape[1]):
                new[b, j] = old[b, j]


@njit
def _load_hx(hx, h, xt, k, b0):
    # hx = [h | x_t's rows b0..]
    U = h.shape[1]
    for b in range(hx.shape[0]):
        for j in range(U):
            hx[b, j] = h[b, j]
        for f in range(xt.shape[2]):
            hx[b, U + f] = xt[k, b0 + b, f]


@njit
def _split_hx(hx, h, x):
    # h, x = hx's columns of h and of x_t, each C-contiguous
    U = h.shape[1]
    for b in range(hx.shape[0]):
        for j in range(U):
            h[b, j] = hx[b, j]
        for f in range(x.shape[1]):
            x[b, f] = hx[b, U + f]


@njit
def _load_x(xr, xt, k, b0):
    # xr = x_t's rows b0.., C-contiguous (xt is the input seen time-major, a strided view)
    for b in range(xr.shape[0]):
        for f in range(xt.shape[2]):
            xr[b, f] = xt[k, b0 + b, f]


@njit
def _h_rows(prev, r0, r1, hbuf, need_seq, k):
    # rows r0..r1-1 of h_{t-1} as the step's products read it: where it is (the output's
    # previous step, or the initial state), or, without need_seq, a copy in `hbuf`: there
    # h_{t-1} is the output's one step, which the step writes over as it goes
    if need_seq or k == 0:
        return prev[r0:r1]
    h = hbuf[:r1 - r0]
    copy_into(h, prev[r0:r1])
    return h


# The arithmetic of a step over its (rows, units) runs in functions of its own, below, with the
# arrays as arguments. It updates the state in place, once the step's products have read it,
# and leaves masked rows as they were: one array a state, where a second one to write into
# would be more of the forward pass's memory budget (one step's scratch). Written inside the
# loops, where the state arrays once traded places each step (`h, new = new, h`), the GRU's
# gate loop ran 4.4x slower on every fresh compile measured (100 steps of 16 rows by 64 units:
# 3.0 ms, against 0.69 ms for the same loop without the swap); in functions of their own the
# loops ran at full speed in every fresh compile. Each runs its sums in the loops' order:
# `x_t U`, `+ b`, `+ h W` (BLAS loops; `P` holds `x_t U` of a chunk of steps, this step's rows
# from `row0`), or `[h | x_t] [W; U]`, `+ b` (fused loops, and the BLAS loops given `[W; U]`).


@njit_fused
def _tanh_units_rows(P, row0, bias, hW, h, mask, use_mask, k, b0):
    prefer_512_bit_vectors()
    # h = tanh((x_t U + b) + h W) in place (hW holds the product), rows kept where masked
    for b in range(h.shape[0]):
        if use_mask and not mask[k, b0 + b]:
            continue
        for j in range(h.shape[1]):
            h[b, j] = tanh32_fast((P[row0 + b, j] + bias[j]) + hW[b, j])


@njit_fused
def _tanh_units_in_place(out, bias, hW):
    prefer_512_bit_vectors()
    # out = tanh((out + b) + h W), `out` holding x_t U (a row of the output). Apart from
    # _tanh_units_rows so that the loop reads and writes one array under one name, rather than
    # two arguments that overlap (`out` passed as both P and new).
    for b in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[b, j] = tanh32_fast((out[b, j] + bias[j]) + hW[b, j])


@njit_fused
def _tanh_in_place(out, bias, hx, mask, use_mask, k, b0):
    prefer_512_bit_vectors()
    # out = tanh(out + b), `out` holding `[h | x_t] [W; U]`; masked rows get h_{t-1} back
    # from hx (one array read and written under one name, as _tanh_units_in_place)
    n = _unsigned(out.shape[1])
    for b in range(out.shape[0]):
        if use_mask and not mask[k, b0 + b]:
            _keep_h(out, hx, b, _unsigned(0), n)
            continue
        for j in range(out.shape[1]):
            out[b, j] = tanh32_fast(out[b, j] + bias[j])


@njit_fused
def _lstm_units_rows(P, row0, bias, hW, c, h, mask, use_mask, k, b0):
    prefer_512_bit_vectors()
    # c, h in place from (x_t U + b) + h W (hW holds the product), rows kept where masked
    U = c.shape[1]
    for b in range(c.shape[0]):
        if use_mask and not mask[k, b0 + b]:
            continue
        row = row0 + b
        for j in range(U):                  # in two passes, as _lstm_block
            i = sigmoid32_fast((P[row, j] + bias[j]) + hW[b, j])
            f = sigmoid32_fast((P[row, U + j] + bias[U + j]) + hW[b, U + j])
            g = tanh32_fast((P[row, 2 * U + j] + bias[2 * U + j]) + hW[b, 2 * U + j])
            c[b, j] = f * c[b, j] + i * g
            h[b, j] = sigmoid32_fast((P[row, 3 * U + j] + bias[3 * U + j]) + hW[b, 3 * U + j])
        for j in range(U):
            h[b, j] = h[b, j] * tanh32_fast(c[b, j])


@njit_fused
def _gru_units_rows(P, row0, b_in, hW, b_rec, h, mask, use_mask, k, b0):
    prefer_512_bit_vectors()
    # reset_after, h in place, with hW = h [W_z | W_r | W_h] and P's rows x_t U; rows kept
    # where masked
    U = h.shape[1]
    for b in range(h.shape[0]):
        if use_mask and not mask[k, b0 + b]:
            continue
        row = row0 + b
        for j in range(U):
            z = sigmoid32_fast((P[row, j] + b_in[j]) + (hW[b, j] + b_rec[j]))
            r = sigmoid32_fast((P[row, U + j] + b_in[U + j]) + (hW[b, U + j] + b_rec[U + j]))
            hh = tanh32_fast((P[row, 2 * U + j] + b_in[2 * U + j])
                             + r * (hW[b, 2 * U + j] + b_rec[2 * U + j]))
            h[b, j] = z * h[b, j] + (F32(1) - z) * hh


@njit_fused
def _gru_gates_rows(P, row0, b_in, zr, h, rh):
    prefer_512_bit_vectors()
    # reset_after=False, first half: zr = sigmoid((x_t U_zr + b_zr) + h W_zr) in place, rh = r h
    U = h.shape[1]
    for b in range(h.shape[0]):
        row = row0 + b
        for j in range(2 * U):
            zr[b, j] = sigmoid32_fast((P[row, j] + b_in[j]) + zr[b, j])
        for j in range(U):
            rh[b, j] = zr[b, U + j] * h[b, j]


@njit_fused
def _gru_candidate_rows(P, row0, b_in, rhW, zr, h, mask, use_mask, k, b0):
    prefer_512_bit_vectors()
    # reset_after=False, second half, h in place: hh = tanh((x_t U_h + b_h) + (r h) W_h);
    # h = z h + (1 - z) hh; rows kept where masked
    U = h.shape[1]
    for b in range(h.shape[0]):
        if use_mask and not mask[k, b0 + b]:
            continue
        row = row0 + b
        for j in range(U):
            hh = tanh32_fast((P[row, 2 * U + j] + b_in[2 * U + j]) + rhW[b, j])
            z = zr[b, j]
            h[b, j] = z * h[b, j] + (F32(1) - z) * hh


# With weights that fit the caches (`own`), SimpleRNN and LSTM need no projection pass either:
# each step is one panel product of `[h_{t-1} | x_t]` against the stacked `[W; U]`, so
# `x_t U + h_{t-1} W` comes out of one product whose sums run over units + features (a small
# product of its own, `(rows, features) @ (features, gates*units)`, ran at 8 GFLOP/s in
# OpenBLAS: a third of an LSTM (32, 64) step).
#
# The fused loops keep h in the output: step k's h is written into its rows of `seq[k]` (of
# `seq[0]`, a one-step buffer, without need_seq), and `hx` holds the copy of h_{t-1} that the
# step's products and gate arithmetic read; masked rows copy it back. So a step holds `hx` and
# pre-activations, no state array of h: at (128, 200, 64, 256) the forward pass's memory
# budget allows one step's scratch, and the packed weights take most of it.
# They also run a step by FUSED_ROWS rows at a time (rows never meet), so that `hx` and the
# pre-activations hold that many rows whatever the batch: whole row blocks of the product, at
# least 16 rows (20 in blocks of 5; 16 in AVX-512's blocks of 8). 32 rows with AVX-512 ran at
# the same speed and took (128, 200, 64, 256)'s forward pass 25-45 KB over its memory budget
# (RESULTS.md, round 19). LSTM and GRU with large weights run more rows a step without `hx`
# (SPLIT_ROWS, below).
FUSED_ROWS = ROWS * -(-16 // ROWS)


@numba.njit(cache=True, inline="always")
def _unsigned(i):
    # an index as uint64: NumPy's negative-index check is skipped for unsigned indexes. Only
    # uint64 with uint64 in the arithmetic: Numba makes uint64 with int64 a float64.
    return np.uint64(i)


@numba.njit(cache=True, inline="always")
def _keep_h(out, hx, b, v0, n):
    # a masked row keeps h_{t-1}: units v0..v0+n-1 of row b from hx (uint64 v0 and n)
    for j in range(n):
        out[b, v0 + j] = hx[b, v0 + j]


@njit
def _state_rows(seq, h0, need_seq, k, b0, b1):
    # this block's rows of h_{k-1}: the initial state at k = 0, else the output's last step
    if k == 0:
        return h0[b0:b1]
    return seq[k - 1 if need_seq else 0, b0:b1]


@njit_fused
def _tanh_rows(out, bias, hx, mask, use_mask, k, b0):
    prefer_512_bit_vectors()
    # out = tanh(out + b) in place, out holding [h | x_t] [W; U]; masked rows get h_{t-1} back
    for b in range(out.shape[0]):
        if use_mask and not mask[k, b0 + b]:
            _keep_h(out, hx, b, _unsigned(0), _unsigned(out.shape[1]))
            continue
        ob = out[b]
        for j in range(ob.shape[0]):
            ob[j] = tanh32_fast(ob[j] + bias[j])


@njit_fused
def simple_rnn_fused(xt, recurrent, bias, h0, mask, use_mask, seq, need_seq, WK, stacked, b0,
                     b1):
    """SimpleRNN with tanh, one panel product a step: `h = tanh([h | x_t] [W; U] + b)`, `WK`
    holding `[W; U]` in panels, or `stacked` being `[W; U]` itself, read in place
    (`_numba.stacked_weights`), the other None (see FUSED_LOOPS); the product goes straight
    into the output rows."""
    T, F = xt.shape[0], xt.shape[2]
    B, U = b1 - b0, recurrent.shape[0]
    hx = np.empty((min(B, FUSED_ROWS), U + F), dtype=np.float32)
    if stacked is not None:
        bases = np.arange(0, U, WIDTH)                              # every column, in place
    for k in range(T):
        prev, step = _state_rows(seq, h0, need_seq, k, b0, b1), seq[k if need_seq else 0, b0:b1]
        for r0 in range(0, B, FUSED_ROWS):
            r1 = min(r0 + FUSED_ROWS, B)
            hxr, out = hx[:r1 - r0], step[r0:r1]
            _load_hx(hxr, prev[r0:r1], xt, k, b0 + r0)
            if stacked is not None:
                products.columns_product(hxr, stacked, bases, out)  # x_t U + h_{t-1} W
            if WK is not None:
                products.panel_product(hxr, WK, out)
            _tanh_rows(out, bias, hxr, mask, use_mask, k, b0 + r0)


# LSTM's and GRU's fused loops multiply by blocks of `GATE_UNITS` units: the weights are packed
# with the columns of each block's gates side by side (`gate_panels`), so one panel product
# gives a block's pre-activations, `(rows, gates * units of the block)`, and its gate
# arithmetic follows at once. A step holds pre-activations for one block of units and
# FUSED_ROWS rows, not for all `gates * units` of every row (at LSTM (128, 200, 64, 256), 20 KB
# instead of 256 KB a thread). Blocks of 32 units, twice the products a step and each half as
# wide, took 6-8% longer there (RESULTS.md round 13). Each sum still runs over k in order, so
# the numbers are those of one whole product.
GATE_UNITS = 64

# Where the weights are large, a step's products run in two parts and on more rows at once
# (`splits`): `h_{t-1} W` with h read where it is, then `+ x_t U` summed onto it
# (`panel_product_acc`; the same sums in the same order, so the same bits). Only x_t's rows are
# copied, not `[h | x_t]`, and that leaves the memory budget room for SPLIT_ROWS rows a step in
# blocks of SPLIT_UNITS units, so that each step reads the packed weights once a block of rows
# instead of once every 16 rows. With the weights over SPLIT_BYTES this paid: interleaved in
# separate processes (`benchmarks/ab.py`, 9 rounds), LSTM (128, 200, 64, 256) 0.85 of the time and
# GRU 0.87-0.90, the same bits; the two threads' blocks, which read the one packed copy, gained
# most (72 against 59 ms a call, one thread's 64 rows 58 against 51). Below it, two products cost
# more than the copy: at (32, 100, 16, 64) SimpleRNN took 1.20 of the time so, LSTM 1.05-1.11; and
# so they did with few rows a block, where the weights are read as often either way: LSTM
# (16, 100, 64, 256), 8 rows a block, 1.14. With 32 rows a block (64, 100, 64, 256): LSTM 0.94, GRU
# 0.96 (RESULTS.md, round 22). The kernel packs the weights apart only where the loop is to split
# (SPLIT_MIN_ROWS rows in its smallest block), and the loop reads that off them.
SPLIT_ROWS = 64
SPLIT_UNITS = 32
SPLIT_BYTES = 1 << 19
SPLIT_MIN_ROWS = 32


def splits(units, features, gates, rows):
    """Whether a fused loop with these weights (`[W; U]`, (units + features, gates * units)
    float32) and at least `rows` rows in each block runs its step products in two parts (see
    SPLIT_BYTES). The packed weights say which to the loop (`_split_panels`)."""
    return rows >= SPLIT_MIN_ROWS and (units + features) * gates * units * 4 > SPLIT_BYTES


@njit
def _split_panels(panels, units):
    # whether `panels` (from lstm_panels or gru_panels) hold W and U apart, for a split step:
    # the first holds W's rows alone then, `[W; U]`'s otherwise
    if panels is None:
        return False
    return panels[0].shape[1] == units


@njit
def gate_blocks(units, gu):
    return (units + gu - 1) // gu


@njit
def gate_panels(top, bottom, first, gates, units, gu):
    """Gates first..first+gates-1 (`units` columns each) of `[top; bottom]` in panels, block by
    block of `gu` units (GATE_UNITS or SPLIT_UNITS): block q's columns are those gates' columns
    of its units, side by side, `gates * n` columns in `ceil(gates * n / WIDTH)` panels (n
    units in the block), starting at panel `q * gates * gu / WIDTH`. `bottom` may have no
    rows."""
    panels = gate_panels_empty(top.shape[0] + bottom.shape[0], gates, units, gu)
    fill_gate_panels(panels, top, bottom, first, gates, units, gu, 0, gate_blocks(units, gu))
    return panels


@njit
def gate_panel_count(gates, units, gu):
    """(how many panels `gate_panels` makes, whether its last panel has columns no block
    writes, which must then be zeros)."""
    per = gates * gu // WIDTH
    blocks = gate_blocks(units, gu)
    last = units - (blocks - 1) * gu
    return (blocks - 1) * per + (gates * last + WIDTH - 1) // WIDTH, (gates * last) % WIDTH != 0


@njit
def gate_panels_empty(K, gates, units, gu):
    """The array `gate_panels` fills (K rows of weights), zeros where no block writes."""
    count, partial = gate_panel_count(gates, units, gu)
    panels = empty_panels(count, K)
    # Every position is written but the last panel's tail when the last block's columns do not
    # fill it; only then is the array zeroed first.
    if partial:
        panels[:] = 0
    return panels


@njit
def fill_gate_panels(panels, top, bottom, first, gates, units, gu, q0, q1):
    """Blocks q0..q1-1 of `gate_panels(top, bottom, first, gates, units, gu)` into `panels`
    (from `gate_panels_empty`): the units forms have each block packed by the part that runs
    its first job."""
    K1, K = top.shape[0], top.shape[0] + bottom.shape[0]
    per = gates * gu // WIDTH
    # Whole panels (a block of n units, n a multiple of WIDTH; g * n is then one too): rows of
    # WIDTH contiguous numbers, copied as such, PACK_ROWS rows of the weights at a time into
    # every panel (see _numba_panels.PACK_ROWS). An LSTM(256)'s (288, 1024) weights took 0.43 ms
    # a number at a time, with a division and a branch each, and take 0.14 so.
    for r0 in range(0, K, PACK_ROWS):
        r1 = min(r0 + PACK_ROWS, K)
        for q in range(q0, q1):
            u0 = q * gu
            n = min(gu, units - u0)
            if n % WIDTH:
                continue
            for g in range(gates):
                col0 = (first + g) * units + u0
                p0 = q * per + g * n // WIDTH
                for p in range(n // WIDTH):
                    c0 = col0 + p * WIDTH
                    for k in range(r0, min(r1, K1)):
                        for c in range(WIDTH):
                            panels[p0 + p, k, c] = top[k, c0 + c]
                    for k in range(max(r0, K1), r1):
                        for c in range(WIDTH):
                            panels[p0 + p, k, c] = bottom[k - K1, c0 + c]
    for q in range(q0, q1):
        u0 = q * gu
        n = min(gu, units - u0)
        if n % WIDTH == 0:
            continue
        for g in range(gates):
            col0 = (first + g) * units + u0
            for k in range(K):
                for jj in range(n):
                    pos = g * n + jj
                    v = top[k, col0 + jj] if k < K1 else bottom[k - K1, col0 + jj]
                    panels[q * per + pos // WIDTH, k, pos % WIDTH] = v


@njit
def _block_panels(panels, gates, q, n, gu):
    # block q's panels of a gate_panels array (n units in the block, blocks of gu), or their
    # first columns in a _gate_columns array
    per = gates * gu // WIDTH
    return panels[q * per:q * per + (gates * n + WIDTH - 1) // WIDTH]


def _add_product(a, panels, gates, q, n, gu, out):
    """`out += a @ W` for block q of the split step's second weights (`gate_panels` of U's
    rows, a 3-D array: `panel_product_acc`); nothing for the placeholder of a step that does
    not split (`_whole()`, 2-D)."""


# The packed weights of a step that splits hold U's panels apart, in their second slot; those of
# one that does not, a 2-D placeholder there (`_whole()`; `lstm_panels`, `gru_panels`), so
# that Numba compiles the loops for each kind apart, and a loop for steps that do not split
# calls no `panel_product_acc`: a new machine then compiles that product (some 15 s) only for
# a call whose steps split (RESULTS.md, round 25).
@overload(_add_product)
def _add_product_overload(a, panels, gates, q, n, gu, out):
    if isinstance(panels, numba.types.Array) and panels.ndim == 3:
        def add(a, panels, gates, q, n, gu, out):
            products.panel_product_acc(a, _block_panels(panels, gates, q, n, gu), out)
        return add
    return lambda a, panels, gates, q, n, gu, out: None


@njit
def _gate_columns(units, first, gates):
    # where each panel of gate_panels(top, bottom, first, gates, units, GATE_UNITS) starts in
    # `[top; bottom]`'s columns, when every block's units fill whole panels (units % WIDTH == 0)
    starts = np.empty(gates * units // WIDTH, dtype=np.int64)
    per = gates * GATE_UNITS // WIDTH
    for q in range(gate_blocks(units, GATE_UNITS)):
        u0 = q * GATE_UNITS
        n = min(GATE_UNITS, units - u0)
        for g in range(gates):
            for i in range(n // WIDTH):
                starts[q * per + g * (n // WIDTH) + i] = (first + g) * units + u0 + WIDTH * i
    return starts


@njit
def _turn(qq, blocks, sweep):
    # the qq-th block of units that sweep number `sweep` over a step's blocks takes: forwards
    # and backwards on alternate sweeps, so that each starts on the weights the one before read
    # last, while the core's L2 may still hold them (see HELP_SPINS); the same blocks, so the
    # same numbers
    return qq if sweep % 2 == 0 else blocks - 1 - qq


@njit
def _block_out(z, rows, width):
    # the first rows * width numbers of the flat buffer z as a C-contiguous (rows, width)
    return z[:rows * width].reshape((rows, width))


@njit_fused
def _lstm_block(z, bias, c, hx, out, u0, mask, use_mask, k, b0):
    prefer_512_bit_vectors()
    # units u0..u0+n-1 of a step: c in place and h into `out`, from the block's pre-activations
    # z + b (z's columns [i | f | c | o] of the block, n each); masked rows keep c and get
    # h_{t-1} back from hx. The unit indexes are unsigned (`_unsigned`), so every access
    # skips NumPy's negative-index check: indexed by a signed `u0 + j`, which LLVM cannot prove
    # non-negative, the loop ran one number at a time (6x slower); by slices of each row from
    # 0, it vectorized but the slices cost 8-10% of the gate arithmetic. A row goes in two
    # passes, c and the output gate, then h = o tanh(c): one unit's whole chain, two
    # activations deep, kept too few units in flight; in two passes the block took 0.91 of the
    # time (16 rows by 64 units, round 17), with the same numbers as one pass.
    n, U, v0 = _unsigned(z.shape[1] // 4), _unsigned(c.shape[1]), _unsigned(u0)
    n2, U2 = n + n, U + U
    n3, U3 = n2 + n, U2 + U
    for b in range(c.shape[0]):
        if use_mask and not mask[k, b0 + b]:
            _keep_h(out, hx, b, v0, n)
            continue
        for j in range(n):
            u = v0 + j
            i = sigmoid32_fast(z[b, j] + bias[u])
            f = sigmoid32_fast(z[b, n + j] + bias[U + u])
            g = tanh32_fast(z[b, n2 + j] + bias[U2 + u])
            c[b, u] = f * c[b, u] + i * g
            out[b, u] = sigmoid32_fast(z[b, n3 + j] + bias[U3 + u])
        for j in range(n):
            u = v0 + j
            out[b, u] = out[b, u] * tanh32_fast(c[b, u])


@njit_fused
def lstm_fused(xt, recurrent, bias, h0, mask, use_mask, seq, need_seq, panels, stacked, c, b0,
               b1):
    """LSTM with tanh and sigmoid, by blocks of units: per step and block `[h | x_t] [W; U]`
    for the block's four gates [i|f|c|o], in one panel product, or in two (`h W`, then `+ x_t
    U`) where the weights `splits`. `panels` holds `[W; U]` by `gate_panels` (`lstm_panels`:
    W's and U's apart where it splits), or `stacked` is `[W; U]` itself, read in place
    (`_numba.stacked_weights`) at the same columns, the other None (see FUSED_LOOPS); `c`
    (this block's rows of the final c) is the cell state, updated in place."""
    T, F = xt.shape[0], xt.shape[2]
    B, U = b1 - b0, recurrent.shape[0]
    split = _split_panels(panels, U)
    rows, gu = (SPLIT_ROWS, SPLIT_UNITS) if split else (FUSED_ROWS, GATE_UNITS)
    if stacked is not None:
        cols = _gate_columns(U, 0, 4)
    R = min(B, rows)
    hx = np.empty((0 if split else R, U + F), dtype=np.float32)
    xbuf = np.empty((R if split else 0, F), dtype=np.float32)
    hbuf = np.empty((R if split and not need_seq else 0, U), dtype=np.float32)
    z = np.empty(R * 4 * min(U, gu), dtype=np.float32)
    for k in range(T):
        prev, step = _state_rows(seq, h0, need_seq, k, b0, b1), seq[k if need_seq else 0, b0:b1]
        for r0 in range(0, B, rows):
            r1 = min(r0 + rows, B)
            m = r1 - r0
            out, cr, xr = step[r0:r1], c[r0:r1], xbuf[:m]
            if split:                   # h_{t-1} as it is, x_t's rows copied
                hr = _h_rows(prev, r0, r1, hbuf, need_seq, k)
                _load_x(xr, xt, k, b0 + r0)
            else:                       # [h_{t-1} | x_t]; its first U columns are h_{t-1}
                hr = hx[:m]
                _load_hx(hr, prev[r0:r1], xt, k, b0 + r0)
            blocks = gate_blocks(U, gu)
            for qq in range(blocks):
                q = _turn(qq, blocks, k * -(-B // rows) + r0 // rows)
                n = min(gu, U - q * gu)
                zq = _block_out(z, m, 4 * n)
                if stacked is not None:
                    products.columns_product(hr, stacked, _block_panels(cols, 4, q, n, gu), zq)
                if panels is not None:
                    products.panel_product(hr, _block_panels(panels[0], 4, q, n, gu), zq)
                    if split:
                        _add_product(xr, panels[1], 4, q, n, gu, zq)
                _lstm_block(zq, bias, cr, hr, out, q * gu, mask, use_mask, k, b0 + r0)


# Every BLAS loop runs rows b0..b1-1 of the batch (batch rows never meet in a recurrent layer),
# so blocks of rows can run on separate threads (unrolled.kernels._threads.by_rows) writing
# disjoint rows of `seq` and of the final states it is given (`h_out`, and LSTM's `c_out`),
# which the loops update in place as their state. `own` (GRU with reset_before only): the panel
# product for the step products (see above), else BLAS; with `own`, SimpleRNN, LSTM and GRU
# with reset_after run their fused loops instead (FUSED_LOOPS, below). `stacked` is for those;
# here it is None, or FEW_ROWS for a call whose steps may go to rows_product (`step_product`).


@njit_fused
def simple_rnn_blas(xt, kernel, recurrent, bias, h0, mask, use_mask, seq, need_seq, chunk, own,
                    panels, stacked, h_out, b0, b1):
    """SimpleRNN with tanh: per step `h = tanh(x_t U + b + h W)`, or `tanh([h | x_t] [W; U] +
    b)` where `kernel` is the cell's `[W; U]` (as lstm_blas).

    With `need_seq`, the projection `x_t U` goes straight into the output rows, and each step
    turns its rows into `h_t` in place: no buffer for it. A chunk of steps for the whole
    batch, or one step for a block of rows (a step's rows of a block are contiguous in the
    output; a chunk's are not).
    """
    T, F = xt.shape[0], xt.shape[2]
    B = b1 - b0
    U = recurrent.shape[0]
    h = h_out[b0:b1]                    # the state; with `direct`, the output's last rows
    copy_into(h, h0[b0:b1])
    if kernel.shape[0] == U + F:        # `[W; U]`: one product a step, as lstm_blas
        hx = np.empty((B, U + F), dtype=np.float32)
        prev = h
        for k in range(T):
            _load_hx(hx, prev, xt, k, b0)
            # the product goes where h_t goes (the output's rows, or the state, h_{t-1} being
            # in hx): no buffer for it, whose 1 MB took the largest point over its memory
            # budget (RESULTS.md, round 32)
            out = seq[k][b0:b1] if need_seq else h
            step_product(hx, kernel, out, stacked)                  # (rows, units)
            _tanh_in_place(out, bias, hx, mask, use_mask, k, b0)
            prev = out
        if need_seq:
            copy_into(h, prev)
        return
    whole = B == xt.shape[1]
    chunk = min(chunk, T) if whole or not need_seq else 1
    direct = need_seq
    stage = np.zeros((chunk * B, F), dtype=np.float32)              # rows past T stay 0
    P = np.empty((1 if direct else chunk * B, U), dtype=np.float32)  # x U of a chunk
    hW = np.empty((B, U), dtype=np.float32)
    prev = h
    for start in range(0, T, chunk):
        stop = min(start + chunk, T)
        m = stop - start
        _stage(stage, xt, start, stop, b0, b1)
        if direct and whole:
            dot(stage[:m * B], kernel, seq[start:stop].reshape(m * B, U))
        elif direct:
            dot(stage, kernel, seq[start][b0:b1])                   # one step, these rows
        else:
            dot(stage, kernel, P)                                   # rows past stop: unused
        for s in range(m):
            k = start + s
            step_product(prev, recurrent, hW, stacked)              # h_{t-1} W  (rows, units)
            if direct:
                out = seq[k][b0:b1]                                 # x_t U, becoming h_t
                _tanh_units_in_place(out, bias, hW)
                if use_mask:
                    _keep_rows(out, prev, mask, k, b0)
                prev = out
            else:
                _tanh_units_rows(P, s * B, bias, hW, h, mask, use_mask, k, b0)
                if need_seq:
                    copy_rows(seq, k, h, b0)
    if direct:
        copy_into(h, prev)


@njit_fused
def lstm_blas(xt, kernel, recurrent, bias, h0, c0, mask, use_mask, seq, need_seq, chunk, own,
              panels, stacked, h_out, c_out, b0, b1):
    """LSTM with tanh and sigmoid; gates [i|f|c|o] as Keras orders them.

    `kernel` is U, `(features, 4 * units)`, or the cell's `[W; U]`, `(units + features, 4 *
    units)` (`_numba.adjacent_weights`): then each step is one product `[h | x_t] [W; U]`,
    `+ b`, as the fused loops sum it, with no projection ahead of the steps."""
    T, F = xt.shape[0], xt.shape[2]
    B = b1 - b0
    U = recurrent.shape[0]
    h, c = h_out[b0:b1], c_out[b0:b1]   # the states, updated in place after each product
    copy_into(h, h0[b0:b1])
    copy_into(c, c0[b0:b1])
    if kernel.shape[0] == U + F:
        hx = np.empty((B, U + F), dtype=np.float32)
        z = np.empty((B, 4 * U), dtype=np.float32)
        for k in range(T):
            _load_hx(hx, h, xt, k, b0)
            step_product(hx, kernel, z, stacked)                    # (rows, 4*units)
            _lstm_block(z, bias, c, hx, h, 0, mask, use_mask, k, b0)
            if need_seq:
                copy_rows(seq, k, h, b0)
        return
    chunk = max(1, min(chunk, T))       # no projection of steps past the last
    stage = np.zeros((chunk * B, F), dtype=np.float32)              # rows past T stay 0
    P = np.empty((chunk * B, 4 * U), dtype=np.float32)
    hW = np.empty((B, 4 * U), dtype=np.float32)
    for start in range(0, T, chunk):
        stop = min(start + chunk, T)
        _stage(stage, xt, start, stop, b0, b1)
        dot(stage, kernel, P)
        for s in range(stop - start):
            k = start + s
            step_product(h, recurrent, hW, stacked)                 # (rows, 4*units)
            _lstm_units_rows(P, s * B, bias, hW, c, h, mask, use_mask, k, b0)
            if need_seq:
                copy_rows(seq, k, h, b0)


@njit_fused
def _gru_block(zr, hW, xU, b_zr, b_in, b_rec, hx, out, u0, mask, use_mask, k, b0):
    prefer_512_bit_vectors()
    # units u0..u0+n-1 of a reset_after step into `out`: z, r from zr + b (zr's columns [z | r]
    # of the block, n each), hh = tanh(x_t U_h + b_in_h + r (h W_h + b_rec_h)),
    # h = z h_{t-1} + (1 - z) hh, h_{t-1} read from hx; masked rows get h_{t-1} back. Unsigned
    # unit indexes, as _lstm_block. In two passes, as _lstm_block: z into `out` and the
    # candidate's input into `hW`, then hh and h (0.89 of one pass's time, 16 rows by 64
    # units, round 17; the same numbers).
    n, U, v0 = _unsigned(hW.shape[1]), _unsigned(out.shape[1]), _unsigned(u0)
    U2 = U + U
    for b in range(out.shape[0]):
        if use_mask and not mask[k, b0 + b]:
            _keep_h(out, hx, b, v0, n)
            continue
        for j in range(n):
            u = v0 + j
            r = sigmoid32_fast(zr[b, n + j] + b_zr[U + u])
            hW[b, j] = (xU[b, j] + b_in[U2 + u]) + r * (hW[b, j] + b_rec[U2 + u])
            out[b, u] = sigmoid32_fast(zr[b, j] + b_zr[u])
        for j in range(n):
            u = v0 + j
            z = out[b, u]
            out[b, u] = z * hx[b, u] + (F32(1) - z) * tanh32_fast(hW[b, j])


@njit_fused
def gru_fused(xt, recurrent, b_in, b_rec, h0, mask, use_mask, seq, need_seq, panels, stacked,
              b0, b1):
    """GRU with reset_after, no projection pass, by blocks of units: per step and block
    `[h | x_t] [W_zr; U_zr]` for the gates z and r in one panel product (in two, `h W_zr` then
    `+ x_t U_zr`, where the weights `splits`), and `h W_h`, `x_t U_h` apart (the candidate
    needs them apart: `hh = tanh(x_t U_h + b_in_h + r (h W_h + b_rec_h))`). `panels`: those
    weights by `gate_panels` (`gru_panels`); or `stacked`, `[W; U]` itself, read in place
    (`_numba.stacked_weights`) at the same columns; the other None (see FUSED_LOOPS)."""
    T, F = xt.shape[0], xt.shape[2]
    B, U = b1 - b0, recurrent.shape[0]
    split = _split_panels(panels, U)
    rows, gu = (SPLIT_ROWS, SPLIT_UNITS) if split else (FUSED_ROWS, GATE_UNITS)
    if stacked is not None:
        cols_zr, cols_h = _gate_columns(U, 0, 2), _gate_columns(U, 2, 1)
        W_part, U_part = stacked[:U], stacked[U:]
    b_zr = b_in[:2 * U] + b_rec[:2 * U]
    R, width = min(B, rows), min(U, gu)
    hx = np.empty((0 if split else R, U + F), dtype=np.float32)
    # without the split: h and x_t again, each C-contiguous, for h W_h and x_t U_h (on hx's
    # columns, a strided operand, each product would be compiled once more: 13 s on a fresh
    # machine); with it: x_t's rows, and h_{t-1}'s where it must be copied (`_h_rows`)
    h_x = np.empty(R * (F if split else U + F), dtype=np.float32)
    hbuf = np.empty((R if split and not need_seq else 0, U), dtype=np.float32)
    z = np.empty(R * 4 * width, dtype=np.float32)       # one block's zr, h W_h and x_t U_h
    for k in range(T):
        prev, step = _state_rows(seq, h0, need_seq, k, b0, b1), seq[k if need_seq else 0, b0:b1]
        for r0 in range(0, B, rows):
            r1 = min(r0 + rows, B)
            m = r1 - r0
            out = step[r0:r1]
            if split:
                hxr = hr = _h_rows(prev, r0, r1, hbuf, need_seq, k)
                xr = _block_out(h_x, m, F)
                _load_x(xr, xt, k, b0 + r0)
            else:
                hxr = hx[:m]
                _load_hx(hxr, prev[r0:r1], xt, k, b0 + r0)
                hr, xr = _block_out(h_x, m, U), _block_out(h_x[m * U:], m, F)
                _split_hx(hxr, hr, xr)
            blocks = gate_blocks(U, gu)
            for qq in range(blocks):
                q = _turn(qq, blocks, k * -(-B // rows) + r0 // rows)
                n = min(gu, U - q * gu)
                zr = _block_out(z, m, 2 * n)
                hW = _block_out(z[2 * R * width:], m, n)
                xU = _block_out(z[3 * R * width:], m, n)
                if stacked is not None:
                    at_zr = _block_panels(cols_zr, 2, q, n, gu)
                    at_h = _block_panels(cols_h, 1, q, n, gu)
                    products.columns_product(hxr, stacked, at_zr, zr)
                    products.columns_product(hr, W_part, at_h, hW)
                    products.columns_product(xr, U_part, at_h, xU)
                if panels is not None:
                    products.panel_product(hxr, _block_panels(panels[0], 2, q, n, gu), zr)
                    if split:
                        _add_product(xr, panels[1], 2, q, n, gu, zr)
                    products.panel_product(hr, _block_panels(panels[2], 1, q, n, gu), hW)
                    products.panel_product(xr, _block_panels(panels[3], 1, q, n, gu), xU)
                _gru_block(zr, hW, xU, b_zr, b_in, b_rec, hxr, out, q * gu, mask, use_mask, k,
                           b0 + r0)


@njit_fused
def gru_blas(xt, kernel, recurrent, b_in, b_rec, h0, mask, use_mask, reset_after, seq,
             need_seq, chunk, own, panels, stacked, h_out, b0, b1):
    """GRU with tanh and sigmoid; gates [z|r|h] as Keras orders them, either reset rule (with
    `own`, reset_before only: reset_after's is gru_own)."""
    T, F = xt.shape[0], xt.shape[2]
    B = b1 - b0
    U = recurrent.shape[0]
    chunk = max(1, min(chunk, T))       # no projection of steps past the last
    stage = np.zeros((chunk * B, F), dtype=np.float32)              # rows past T stay 0
    P = np.empty((chunk * B, 3 * U), dtype=np.float32)
    h = h_out[b0:b1]                    # the state, updated in place after the products
    copy_into(h, h0[b0:b1])
    if reset_after:                                                 # BLAS's products
        hW = np.empty((B, 3 * U), dtype=np.float32)
        W_zr = W_h = recurrent[:1]                                  # unused
        W_zrp = W_hp = np.empty((1, 1, WIDTH), dtype=np.float32)    # unused
        zr = rh = rhW = np.empty((1, 1), dtype=np.float32)
    else:
        hW = np.empty((1, 1), dtype=np.float32)                     # unused
        W_zr = np.ascontiguousarray(recurrent[:, :2 * U])
        W_h = np.ascontiguousarray(recurrent[:, 2 * U:])
        W_zrp, W_hp = panels[0], panels[1]                          # used when `own`
        zr = np.empty((B, 2 * U), dtype=np.float32)                 # h W_zr, then z and r
        rh = np.empty((B, U), dtype=np.float32)                     # r * h
        rhW = np.empty((B, U), dtype=np.float32)                    # (r * h) W_h
    for start in range(0, T, chunk):
        stop = min(start + chunk, T)
        _stage(stage, xt, start, stop, b0, b1)
        dot(stage, kernel, P)
        for s in range(stop - start):
            k = start + s
            if reset_after:
                step_product(h, recurrent, hW, stacked)             # (rows, 3*units)
                _gru_units_rows(P, s * B, b_in, hW, b_rec, h, mask, use_mask, k, b0)
            else:
                _product(h, W_zr, W_zrp, zr, own)                   # (rows, 2*units)
                _gru_gates_rows(P, s * B, b_in, zr, h, rh)
                _product(rh, W_h, W_hp, rhW, own)                   # (r * h) W_h
                _gru_candidate_rows(P, s * B, b_in, rhW, zr, h, mask, use_mask, k, b0)
            if need_seq:
                copy_rows(seq, k, h, b0)


BLAS_LOOPS = {"simple_rnn": simple_rnn_blas, "lstm": lstm_blas, "gru": gru_blas}


# The fused loops behind the BLAS loops' arguments, for weights that fit the caches (`own`):
# `panels` is what PANELS packed, or None where `stacked`, the cell's `[W; U]`, is read in
# place (then `stacked` is not None). Numba compiles a loop once for each of the two, dropping
# the `is None` branches it can decide from the argument's type, so each compiles only the one
# product it calls (a fresh compile of one takes 3-10 s). `h_out` is `seq[-1]`, written as the
# output.


@njit_fused
def simple_rnn_own(xt, kernel, recurrent, bias, h0, mask, use_mask, seq, need_seq, chunk, own,
                   panels, stacked, h_out, b0, b1):
    if panels is not None:              # (left to a units form that did not run: packed here)
        WK = panels[0] if panels[0].shape[0] else packed_stack(recurrent, kernel)
        simple_rnn_fused(xt, recurrent, bias, h0, mask, use_mask, seq, need_seq, WK, None, b0,
                         b1)
    if stacked is not None:
        simple_rnn_fused(xt, recurrent, bias, h0, mask, use_mask, seq, need_seq, None, stacked,
                         b0, b1)


@njit_fused
def lstm_own(xt, kernel, recurrent, bias, h0, c0, mask, use_mask, seq, need_seq, chunk, own,
             panels, stacked, h_out, c_out, b0, b1):
    c = c_out[b0:b1]
    copy_into(c, c0[b0:b1])
    if panels is not None:
        if panels[0].shape[0] == 0:     # left to a units form that did not run: packed here
            U = recurrent.shape[0]
            panels = (gate_panels(recurrent, kernel, 0, 4, U, GATE_UNITS), panels[1], panels[2],
                      panels[3])
        lstm_fused(xt, recurrent, bias, h0, mask, use_mask, seq, need_seq, panels, None, c,
                   b0, b1)
    if stacked is not None:
        lstm_fused(xt, recurrent, bias, h0, mask, use_mask, seq, need_seq, None, stacked, c,
                   b0, b1)


@njit_fused
def gru_own(xt, kernel, recurrent, b_in, b_rec, h0, mask, use_mask, reset_after, seq, need_seq,
            chunk, own, panels, stacked, h_out, b0, b1):
    # reset_after only
    if panels is not None and panels[0].shape[0] == 0:  # left to a units form that did not run
        whole = _gru_whole(kernel, recurrent)
        panels = (whole[0], panels[1], whole[2], whole[3])      # (the type of `panels`)
    gru_fused(xt, recurrent, b_in, b_rec, h0, mask, use_mask, seq, need_seq, panels, stacked,
              b0, b1)


FUSED_LOOPS = {"simple_rnn": simple_rnn_own, "lstm": lstm_own, "gru": gru_own}


# The weights in panels, packed once per call by the kernel (unrolled.kernels._numba._bind) and
# read by every block of rows (packed inside the loops, two blocks held two copies, each as
# large as the weights). Each takes the loop's weights and flags and returns four panel arrays
# (placeholders where the loop needs fewer).


@njit
def no_panels():
    none = np.empty((1, 1, WIDTH), dtype=np.float32)
    return none, none, none, none


@njit
def stacked_panels(kernel, recurrent, bias, rows):
    # SimpleRNN: `[W; U]` for the fused loop
    none = np.empty((1, 1, WIDTH), dtype=np.float32)
    return packed_stack(recurrent, kernel), none, none, none


@njit
def unpacked_lstm(kernel, recurrent, bias, rows):
    # LSTM in units: `[W; U]` left to the parts, which pack each block at its first job
    # (`_gates_part`); a first array of no panels says so. The types of `_lstm_whole`'s.
    none = np.empty((1, 1, WIDTH), dtype=np.float32)
    return _no_panels(kernel, recurrent), _whole(), none, none


@njit
def unpacked_stack(kernel, recurrent, bias, rows):
    # SimpleRNN in units, as unpacked_lstm; the types of `stacked_panels`'
    none = np.empty((1, 1, WIDTH), dtype=np.float32)
    return _no_panels(kernel, recurrent), none, none, none


@njit
def unpacked_gru(kernel, recurrent, b_in, b_rec, reset_after, rows):
    # GRU (reset_after) in units, as unpacked_lstm; the types of `_gru_whole`'s
    U = recurrent.shape[0]
    return (_no_panels(kernel, recurrent), _whole(),
            np.empty((0, U, WIDTH), dtype=np.float32),
            np.empty((0, kernel.shape[0], WIDTH), dtype=np.float32))


@njit
def _no_panels(kernel, recurrent):
    return np.empty((0, recurrent.shape[0] + kernel.shape[0], WIDTH), dtype=np.float32)


@njit
def _whole():
    # the second slot of a step that does not split (see _add_product)
    return np.empty((1, 1), dtype=np.float32)


@njit
def _lstm_split(kernel, recurrent):
    U = recurrent.shape[0]
    none = np.empty((1, 1, WIDTH), dtype=np.float32)
    none_below = np.empty((0, 4 * U), dtype=np.float32)
    return (gate_panels(recurrent, none_below, 0, 4, U, SPLIT_UNITS),
            gate_panels(kernel, none_below, 0, 4, U, SPLIT_UNITS), none, none)


@njit
def _lstm_whole(kernel, recurrent):
    U = recurrent.shape[0]
    none = np.empty((1, 1, WIDTH), dtype=np.float32)
    return gate_panels(recurrent, kernel, 0, 4, U, GATE_UNITS), _whole(), none, none


def lstm_panels(kernel, recurrent, bias, rows):
    """`[W; U]` by blocks of units, for lstm_fused; W's and U's apart where the loop is to split
    (blocks of at least `rows` rows), after `panel_product_acc` is looked up (compiled, or
    loaded from Numba's cache) for the loop that then adds it."""
    if splits(recurrent.shape[0], kernel.shape[0], 4, rows):
        compile_products_first(("panel_product_acc",))
        return _lstm_split(kernel, recurrent)
    return _lstm_whole(kernel, recurrent)


@njit
def _gru_split(kernel, recurrent):
    # gru_fused: W_zr, U_zr, W_h, U_h
    U = recurrent.shape[0]
    none_below = np.empty((0, 3 * U), dtype=np.float32)
    return (gate_panels(recurrent, none_below, 0, 2, U, SPLIT_UNITS),
            gate_panels(kernel, none_below, 0, 2, U, SPLIT_UNITS),
            gate_panels(recurrent, none_below, 2, 1, U, SPLIT_UNITS),
            gate_panels(kernel, none_below, 2, 1, U, SPLIT_UNITS))


@njit
def _gru_whole(kernel, recurrent):
    # gru_fused: [W_zr; U_zr], -, W_h, U_h
    U = recurrent.shape[0]
    none_below = np.empty((0, 3 * U), dtype=np.float32)
    return (gate_panels(recurrent, kernel, 0, 2, U, GATE_UNITS), _whole(),
            gate_panels(recurrent, none_below, 2, 1, U, GATE_UNITS),
            gate_panels(kernel, none_below, 2, 1, U, GATE_UNITS))


@njit
def _gru_reset_before(recurrent):
    # gru_blas's own products
    U = recurrent.shape[0]
    none = np.empty((1, 1, WIDTH), dtype=np.float32)
    return (packed(np.ascontiguousarray(recurrent[:, :2 * U])),
            packed(np.ascontiguousarray(recurrent[:, 2 * U:])), none, none)


def gru_panels(kernel, recurrent, b_in, b_rec, reset_after, rows):
    """The weights in panels for gru_fused (reset_after; split as lstm_panels) or gru_blas."""
    if not reset_after:
        return _gru_reset_before(recurrent)
    if splits(recurrent.shape[0], kernel.shape[0], 3, rows):
        compile_products_first(("panel_product_acc",))
        return _gru_split(kernel, recurrent)
    return _gru_whole(kernel, recurrent)


PANELS = {"simple_rnn": stacked_panels, "lstm": lstm_panels, "gru": gru_panels}
# the weights left to the units forms' parts to pack (`_gates_part`, `_gru_part`)
UNPACKED = {"simple_rnn": unpacked_stack, "lstm": unpacked_lstm, "gru": unpacked_gru}


# Each loop that runs in blocks of rows has a parallel form: one call that runs every block at
# once on Numba's threads (`prange`), `loop(*args, bounds[i], bounds[i + 1])` for each block i.
# unrolled.kernels._threads.by_rows calls it in place of a hand-off to its pool of Python
# threads where Numba's threading layer allows (see there): LSTM (32, 100, 16, 64) took 0.64
# ms a call so, against 0.72-0.78 through the pool, with the same numbers (RESULTS.md, round
# 21). Written out one per loop, each naming its loop: a parallel function that takes the loop
# as an argument is compiled again in every process (Numba cannot cache it). The tuple of
# panel arrays among the arguments (or None) is taken apart before the `prange` (`_split`) and
# put together in it (`_join`): Numba passes what a `prange` body reads to its threads one
# value at a time, and takes no tuple of arrays as one.


def _split(panels):
    """The panel arrays of `panels`, four, or four Nones where `panels` is None."""


@overload(_split)
def _split_overload(panels):
    if isinstance(panels, numba.types.NoneType):
        return lambda panels: (None, None, None, None)
    return lambda panels: (panels[0], panels[1], panels[2], panels[3])


def _join(p0, p1, p2, p3):
    """`(p0, p1, p2, p3)` again, or None where `_split` gave Nones."""


@overload(_join)
def _join_overload(p0, p1, p2, p3):
    if isinstance(p0, numba.types.NoneType):
        return lambda p0, p1, p2, p3: None
    return lambda p0, p1, p2, p3: (p0, p1, p2, p3)


njit_blocks = numba.njit(cache=True, nogil=True, parallel=True)


@njit_blocks
def simple_rnn_blas_blocks(args, bounds):
    head, (p0, p1, p2, p3), tail = args[:-3], _split(args[-3]), args[-2:]
    for i in numba.prange(bounds.shape[0] - 1):
        simple_rnn_blas(*head, _join(p0, p1, p2, p3), *tail, bounds[i], bounds[i + 1])


@njit_blocks
def lstm_blas_blocks(args, bounds):
    head, (p0, p1, p2, p3), tail = args[:-4], _split(args[-4]), args[-3:]
    for i in numba.prange(bounds.shape[0] - 1):
        lstm_blas(*head, _join(p0, p1, p2, p3), *tail, bounds[i], bounds[i + 1])


@njit_blocks
def gru_blas_blocks(args, bounds):
    head, (p0, p1, p2, p3), tail = args[:-3], _split(args[-3]), args[-2:]
    for i in numba.prange(bounds.shape[0] - 1):
        gru_blas(*head, _join(p0, p1, p2, p3), *tail, bounds[i], bounds[i + 1])


@njit_blocks
def simple_rnn_own_blocks(args, bounds):
    head, (p0, p1, p2, p3), tail = args[:-3], _split(args[-3]), args[-2:]
    for i in numba.prange(bounds.shape[0] - 1):
        simple_rnn_own(*head, _join(p0, p1, p2, p3), *tail, bounds[i], bounds[i + 1])


@njit_blocks
def lstm_own_blocks(args, bounds):
    head, (p0, p1, p2, p3), tail = args[:-4], _split(args[-4]), args[-3:]
    for i in numba.prange(bounds.shape[0] - 1):
        lstm_own(*head, _join(p0, p1, p2, p3), *tail, bounds[i], bounds[i + 1])


@njit_blocks
def gru_own_blocks(args, bounds):
    head, (p0, p1, p2, p3), tail = args[:-3], _split(args[-3]), args[-2:]
    for i in numba.prange(bounds.shape[0] - 1):
        gru_own(*head, _join(p0, p1, p2, p3), *tail, bounds[i], bounds[i + 1])


# The fused loops have a second parallel form, for small batches (one sample, a few, up to
# _threads.UNIT_ROWS_MAX rows): each step's blocks of units (its jobs, one a block of units for
# every row: a part reads its share of the weights once a step) are shared between as many
# parts as `bounds` has intervals (`_threads.by_units`), which run on Numba's threads for the
# whole call and meet at the end of every step (the next needs all of h). With one row, each
# step's product reads all of the packed weights for 2 multiply-adds a number, so a step is
# bound by how fast one core reads them: two cores read them twice as fast. Each job is
# computed by lstm_fused's and gru_fused's functions, whichever thread runs it, and a row's sums
# do not depend on the rows beside it, so the numbers are the same to the bit as one thread's
# (SimpleRNN's product by blocks of columns gives each column the sum simple_rnn_fused's whole
# product gives it).
#
# The parts meet through counters in an int64 array (`_atomics`), not a `prange` a step, which
# cost 1.5-3.5 us a step (RESULTS.md, round 25); two threads meet through a counter in 0.08 us.
# A part first claims its own share of a step's jobs (each job's slot holds the last step it
# was claimed for: a claim swaps k - 1 for k), counts each job done, and then waits for the
# step's count, taking any job still unclaimed if another part has not started yet or after
# HELP_SPINS spins: so no part ever waits on one that is not running (a threading layer that
# runs the parts one after the other, a thread the system has put aside), and a part that
# starts late finds its jobs done. A part copies `[h_{t-1} | x_t]` once a step, after its first
# claim of the step: a claim of step k succeeds only while step k is unfinished, so
# h_{t-1} is complete and is not yet overwritten (without the whole sequence h takes turns in
# two rows of a buffer, `_unit_steps`).
# A part runs its own jobs forwards on even steps and backwards on odd ones: the weights it read
# last are the first it reads again, while its core's L2 may still hold them. Where a part's
# share is more than its L2 (2 MiB here), that took LSTM (1, 100, 32, 512), 2.2 MB a part, to
# 0.84 of the time, (4, 100, 32, 640) 0.88, GRU (4, 100, 32, 640) 0.92 (RESULTS.md, round 26).
HELP_SPINS = 1000
# A part that has waited YIELD_SPINS spins for a job another part holds gives up its CPU at each
# spin after (`sched_yield`): where the process has more threads ready than CPUs, the part it
# waits for may be waiting for this very CPU. A step of the shapes measured takes 1-400 us;
# this many spins of `pause` are about 0.4-1.4 ms.
YIELD_SPINS = 10 * HELP_SPINS


@njit
def _unit_steps(seq, h0, hbuf, need_seq, k, T):
    # h_{k-1} and where h_k goes, for the units forms. Without the whole sequence the loops
    # keep h in the output's one step; here a part reads all of h_{k-1} while another writes
    # its units of h_k, so h takes turns in two rows of `hbuf` instead, and the last step goes
    # to the output
    prev = h0 if k == 0 else seq[k - 1] if need_seq else hbuf[(k - 1) % 2]
    return prev, seq[k] if need_seq else seq[0] if k == T - 1 else hbuf[k % 2]


@njit
def _job_counters(jobs):
    # a slot a job (the last step it was claimed for, -1 before the first), then the count of
    # jobs done and of parts started, each on a cache line of its own
    flags = np.full((jobs + 2) * atomics.LINE, -1, dtype=np.int64)
    flags[jobs * atomics.LINE] = 0
    flags[(jobs + 1) * atomics.LINE] = 0
    return flags


@njit
def _next_job(flags, jobs, parts, i, tried, k):
    # (the next job of step k that part i runs, or -1 once the step is done; how many of its
    # own jobs it has tried): its own first, forwards and backwards on alternate steps (see
    # above), then, while it waits for the step's count, any job unclaimed (see above)
    lo, hi = jobs * i // parts, jobs * (i + 1) // parts
    while tried < hi - lo:
        job = lo + _turn(tried, hi - lo, k)
        tried += 1
        if atomics.compare_swap(flags, job * atomics.LINE, k - 1, k):
            return job, tried
    spins = 0
    while atomics.load(flags, jobs * atomics.LINE) < (k + 1) * jobs:
        if spins >= HELP_SPINS or atomics.load(flags, (jobs + 1) * atomics.LINE) < parts:
            for q in range(jobs):
                at = q * atomics.LINE
                if atomics.load(flags, at) == k - 1 and atomics.compare_swap(flags, at, k - 1, k):
                    return q, tried
        spins += 1
        if spins < YIELD_SPINS:
            atomics.pause()
        else:
            atomics.yield_cpu()
    return -1, tried


@njit_fused
def _tanh_block(z, bias, hx, out, u0, mask, use_mask, k, b0):
    prefer_512_bit_vectors()
    # units u0..u0+n-1 of a SimpleRNN step into `out`: tanh(z + b), z holding the block's
    # columns of `[h | x_t] [W; U]`; masked rows get h_{t-1} back from hx (as _tanh_rows)
    n, v0 = _unsigned(z.shape[1]), _unsigned(u0)
    for b in range(z.shape[0]):
        if use_mask and not mask[k, b0 + b]:
            _keep_h(out, hx, b, v0, n)
            continue
        for j in range(n):
            out[b, v0 + j] = tanh32_fast(z[b, j] + bias[v0 + j])


@njit
def _part_buffers(parts, B, U, F, need_seq, width):
    # what the units forms' parts work in: each part's `[h_{t-1} | x_t]` and pre-activations
    # (`width` of them a unit of a block; from one copy of `[h | x_t]` for all, the other core
    # read all of it from this one's cache at every step: LSTM (8, 200, 64, 256) took 24.6-25.1
    # us a step so, 20.6-21.3 with a copy each; RESULTS.md, round 25), h's two rows for a call
    # without the whole sequence (`_unit_steps`), and the jobs' counters
    hx = np.empty((parts, B, U + F), dtype=np.float32)
    z = np.empty((parts, B * width * min(U, GATE_UNITS)), dtype=np.float32)
    hbuf = np.empty((0 if need_seq else 2, B, U), dtype=np.float32)
    return hx, z, hbuf, _job_counters(gate_blocks(U, GATE_UNITS))


@njit_blocks
def simple_rnn_own_units(args, bounds):
    # simple_rnn_fused's columns by blocks of units, in parts, as lstm_own_units
    (xt, kernel, recurrent, bias, h0, mask, use_mask, seq, need_seq, chunk, own, panels,
     stacked, h_out) = args
    B, F, U = xt.shape[1], xt.shape[2], recurrent.shape[0]
    if stacked is not None:
        simple_rnn_own(*args, 0, B)     # the form is for `[W; U]` packed only
        return
    WK, pack = _panels_or_empty(panels[0], recurrent, kernel, 1)
    parts = bounds.shape[0] - 1
    hx, z, hbuf, flags = _part_buffers(parts, B, U, F, need_seq, 1)
    no_c = np.empty((B, 0), dtype=np.float32)
    for i in numba.prange(parts):
        _gates_part(i, parts, 1, xt, h0, mask, use_mask, seq, need_seq, hbuf, no_c, WK, bias,
                    hx[i], z[i], flags, recurrent, kernel, pack)


@njit
def _panels_or_empty(W, recurrent, kernel, gates):
    # (W, False) where the weights came packed; else (an array for `[W; U]` by gate blocks
    # that the parts fill, True) (`UNPACKED`)
    if W.shape[0] > 0:
        return W, False
    U = recurrent.shape[0]
    return gate_panels_empty(U + kernel.shape[0], gates, U, GATE_UNITS), True


@njit_fused
def _gates_part(i, parts, gates, xt, h0, mask, use_mask, seq, need_seq, hbuf, c, W, bias, hx, z,
                flags, recurrent, kernel, pack):
    # part i of lstm_own_units (4 gates) and simple_rnn_own_units (1, and no c): the fused
    # loops' blocks, one job at a time. One function for both: the same argument types, so one
    # compile serves both forms. `pack`: W is empty, and each block's `[W; U]` is packed into
    # it by the part that runs the block's job of step 0, so the parts pack at once (an
    # LSTM(1024)'s (1056, 4096) took 4.4 ms on one thread, of a one-sample call of 17 over 100
    # steps; RESULTS.md, round 29).
    T, B, U = xt.shape[0], xt.shape[1], seq.shape[2]
    jobs = gate_blocks(U, GATE_UNITS)
    atomics.add(flags, (jobs + 1) * atomics.LINE, 1)
    for k in range(T):
        prev, step = _unit_steps(seq, h0, hbuf, need_seq, k, T)
        loaded, tried = False, 0
        while True:
            q, tried = _next_job(flags, jobs, parts, i, tried, k)
            if q < 0:
                break
            if not loaded:
                _load_hx(hx, prev, xt, k, 0)
                loaded = True
            if pack and k == 0:
                fill_gate_panels(W, recurrent, kernel, 0, gates, U, GATE_UNITS, q, q + 1)
            n = min(GATE_UNITS, U - q * GATE_UNITS)
            zq = _block_out(z, B, gates * n)
            products.panel_product(hx, _block_panels(W, gates, q, n, GATE_UNITS), zq)
            if gates == 4:
                _lstm_block(zq, bias, c, hx, step, q * GATE_UNITS, mask, use_mask, k, 0)
            else:
                _tanh_block(zq, bias, hx, step, q * GATE_UNITS, mask, use_mask, k, 0)
            atomics.add(flags, jobs * atomics.LINE, 1)


@njit_blocks
def lstm_own_units(args, bounds):
    (xt, kernel, recurrent, bias, h0, c0, mask, use_mask, seq, need_seq, chunk, own, panels,
     stacked, h_out, c) = args
    B, F, U = xt.shape[1], xt.shape[2], recurrent.shape[0]
    if stacked is not None or _split_panels(panels, U):
        lstm_own(*args, 0, B)           # the form is for `[W; U]` packed whole only
        return
    copy_into(c, c0)
    W, pack = _panels_or_empty(panels[0], recurrent, kernel, 4)
    parts = bounds.shape[0] - 1
    hx, z, hbuf, flags = _part_buffers(parts, B, U, F, need_seq, 4)
    for i in numba.prange(parts):
        _gates_part(i, parts, 4, xt, h0, mask, use_mask, seq, need_seq, hbuf, c, W, bias,
                    hx[i], z[i], flags, recurrent, kernel, pack)


@njit_fused
def _gru_part(i, parts, xt, h0, mask, use_mask, seq, need_seq, hbuf, W_zr, W_h, U_h, b_zr,
              b_in, b_rec, hx, h_x, z, flags, kernel, recurrent, pack):
    # part i of gru_own_units: gru_fused's blocks, one job at a time, as _gates_part (`pack`:
    # a block's three panel arrays packed by the part that runs its job of step 0)
    T, B, F, U = xt.shape[0], xt.shape[1], xt.shape[2], seq.shape[2]
    jobs = gate_blocks(U, GATE_UNITS)
    size = B * min(U, GATE_UNITS)
    hr, xr = _block_out(h_x, B, U), _block_out(h_x[B * U:], B, F)
    atomics.add(flags, (jobs + 1) * atomics.LINE, 1)
    for k in range(T):
        prev, step = _unit_steps(seq, h0, hbuf, need_seq, k, T)
        loaded, tried = False, 0
        while True:
            q, tried = _next_job(flags, jobs, parts, i, tried, k)
            if q < 0:
                break
            if not loaded:
                _load_hx(hx, prev, xt, k, 0)
                _split_hx(hx, hr, xr)
                loaded = True
            if pack and k == 0:
                fill_gate_panels(W_zr, recurrent, kernel, 0, 2, U, GATE_UNITS, q, q + 1)
                fill_gate_panels(W_h, recurrent, recurrent[:0], 2, 1, U, GATE_UNITS, q, q + 1)
                fill_gate_panels(U_h, kernel, kernel[:0], 2, 1, U, GATE_UNITS, q, q + 1)
            n = min(GATE_UNITS, U - q * GATE_UNITS)
            zr = _block_out(z, B, 2 * n)
            hW = _block_out(z[2 * size:], B, n)
            xU = _block_out(z[3 * size:], B, n)
            products.panel_product(hx, _block_panels(W_zr, 2, q, n, GATE_UNITS), zr)
            products.panel_product(hr, _block_panels(W_h, 1, q, n, GATE_UNITS), hW)
            products.panel_product(xr, _block_panels(U_h, 1, q, n, GATE_UNITS), xU)
            _gru_block(zr, hW, xU, b_zr, b_in, b_rec, hx, step, q * GATE_UNITS, mask,
                       use_mask, k, 0)
            atomics.add(flags, jobs * atomics.LINE, 1)


@njit_blocks
def gru_own_units(args, bounds):
    # gru_fused's blocks of units in parts, as lstm_own_units
    (xt, kernel, recurrent, b_in, b_rec, h0, mask, use_mask, reset_after, seq, need_seq, chunk,
     own, panels, stacked, h_out) = args
    B, F, U = xt.shape[1], xt.shape[2], recurrent.shape[0]
    if stacked is not None or _split_panels(panels, U):
        gru_own(*args, 0, B)            # the form is for W_zr and U_zr packed together only
        return
    W_zr, W_h, U_h = panels[0], panels[2], panels[3]
    pack = W_zr.shape[0] == 0           # left to the parts (`unpacked_gru`)
    if pack:
        W_zr = gate_panels_empty(U + F, 2, U, GATE_UNITS)
        W_h, U_h = gate_panels_empty(U, 1, U, GATE_UNITS), gate_panels_empty(F, 1, U, GATE_UNITS)
    b_zr = b_in[:2 * U] + b_rec[:2 * U]
    parts = bounds.shape[0] - 1
    hx, z, hbuf, flags = _part_buffers(parts, B, U, F, need_seq, 4)   # z: zr, h W_h, x_t U_h
    h_x = np.empty((parts, B * (U + F)), dtype=np.float32)
    for i in numba.prange(parts):
        _gru_part(i, parts, xt, h0, mask, use_mask, seq, need_seq, hbuf, W_zr, W_h, U_h, b_zr,
                  b_in, b_rec, hx[i], h_x[i], z[i], flags, kernel, recurrent, pack)


@njit_blocks
def thread_ids(ids):
    # each of Numba's threads writes its kernel id (`_threads._run_native` places them): a
    # `prange` of one slot a thread, as many slots as threads
    for i in numba.prange(ids.shape[0]):
        ids[i] = atomics.thread_id()


_threads.native_ids(thread_ids)
_threads.native_units(simple_rnn_own, simple_rnn_own_units)
_threads.native_units(lstm_own, lstm_own_units)
_threads.native_units(gru_own, gru_own_units)

for _loop, _parallel in ((simple_rnn_blas, simple_rnn_blas_blocks),
                         (lstm_blas, lstm_blas_blocks), (gru_blas, gru_blas_blocks),
                         (simple_rnn_own, simple_rnn_own_blocks), (lstm_own, lstm_own_blocks),
                         (gru_own, gru_own_blocks)):
    _threads.native_blocks(_loop, _parallel)
