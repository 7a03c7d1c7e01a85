"""Compiled (Numba) loops for the training kernel (unrolled.kernels.train): forward with tape, BPTT.

Float32 and the default activations only (tanh; sigmoid for the gates). Each step's `h_{t-1} W` in
the forward and `dZ_t W^T` in the backward is the panel product (`_numba_panels`, on W or W^T copied
into panels once per call and row block) while the weights fit the caches or the rows run in blocks
(`own`, see train._own_product), else BLAS (`_numpy_blas.dot`: NumPy's sgemm where NumPy brings its
own OpenBLAS, else Numba's `np.dot`, SciPy's). What these loops replace is everything between two
products: the NumPy kernel spends 8-15 full passes over `(batch, gates*units)` arrays per step
(adding the recurrent term, the activations one gate block at a time, the state update, the gate
derivatives, the mask rules), plus whole-sequence passes for the activation derivatives. Here each
step is a pass or two over its rows, with the forward loops' activations (`tanh32_fast`,
`sigmoid32_fast`; vectorized, within 3e-7 of tanh and the sigmoid), and the derivatives `1 - y^2`,
`y (1 - y)` are taken from the stored gates inside the backward's pass.

The loops write the tape the NumPy kernel writes (P, A, H, C, TC, RH; see train.py), so its
backward, `cache["steps"]` and `cache["step_grads"]` read them alike, except that the SimpleRNN
and LSTM loops keep X and H in one array, `XH[k] = [x_k | h_k | 1]` (the 1 where there is a
bias), of which train.py's X and H are views. The whole-sequence weight-gradient products stay
in train.py, which runs them here (`at_b_blocks`, `matmul_blocks`) under units. Row-vector
math in processing order k = 0..T-1;
`valid` is `(T, batch)` (True: the sample's step is real), read only when `use_mask`.

An LSTM's loops have a second form each for a batch of a few rows (`lstm_forward_units`,
`lstm_backward_units`, at the end): each step's blocks of units shared between Numba's threads,
which meet at every step, as the inference loops' units forms; the same numbers to the bit.

Imported only by `train.py` when `unrolled.kernels._numba.available()`; `import unrolled` never
imports Numba.

A step's arithmetic runs in functions of their own over 2-D `(rows, units)` arrays, compiled
with fused multiply-adds (`njit_fused`), as the inference loops' (`_numba_loops`); each is
checked to vectorize (tests/test_compiled_activations.py). Written as per-row passes over
1-D views with the 2-ulp activations, the LSTM forward's arithmetic ran at about 10 ns a unit;
so, about 6 (Zen 3).
"""

from __future__ import annotations

import numba
import numpy as np

from unrolled.kernels import _atomics as atomics
from unrolled.kernels import _numba_panels as products
from unrolled.kernels import _threads
from unrolled.kernels._numba_loops import (GATE_UNITS, _block_out, _block_panels, _job_counters,
                                           _next_job, _packed_if, _product, fill_gate_panels,
                                           gate_blocks, gate_panels_empty, njit_blocks,
                                           njit_fused, sigmoid32_fast, tanh32_fast)
from unrolled.kernels._numpy_blas import gemm, gemm_fits


@numba.njit(cache=True, nogil=True)
def _transposed(W, needed):
    # W.T, contiguous, where BLAS takes the backward's products; else a placeholder
    return np.ascontiguousarray(W.T) if needed else np.empty((1, 1), dtype=np.float32)

# error_model="numpy": a division by zero gives inf/nan as NumPy does, instead of a check that
# keeps LLVM from vectorizing the loops.
njit = numba.njit(cache=True, nogil=True, error_model="numpy")

F32 = np.float32
ONE = F32(1)


# ------------------------------------------------------------------ forward
#
# Each step: one product for the block's rows, then the step's arithmetic in functions of their
# own over `(rows, units)` (as the inference loops, _numba_loops), compiled with fused
# multiply-adds and the forward loops' activations, `tanh32_fast` and `sigmoid32_fast` (within
# 3e-7 and 2e-7 of tanh and the sigmoid, absolute). SimpleRNN and LSTM: the product is
# `z = XH[k] [U; W; b]`, input, recurrent term and bias at once, straight into `P`; the next
# state goes into `XH[k + 1]`'s state columns. Against the input projected for all steps first
# and `(x_t U + b) + h W` a step, LSTM (32, 100, 16, 64) training took 0.88 of the time (the
# projection, with 16 features, ran at 41 GFLOP/s on one thread; round 20). GRU: `P` holds
# `x_t U` on entry and the bias is added here, `(x_t U + b) + h W`, the NumPy kernel's order:
# its reset gate applies to the recurrent term alone. LSTM (32 rows, 100 steps, 16 features,
# 64 units, one thread, Zen 3): the loop took 3.4-4.7 ms as per-row passes with the 2-ulp
# activations, 2.5-3.2 ms so (of which 1.25 ms are the products); one loop a unit writing all
# five tape arrays took 1.1x as long as the two functions below.


@njit
def _keep(new, old, valid, k, b0, b1, j0):
    # masked samples keep their previous state (columns j0..: a state in XH's rows follows
    # their input)
    for b in range(b0, b1):
        if not valid[k, b]:
            n, o = new[b], old[b]
            for j in range(j0, n.shape[0]):
                n[j] = o[j]


@numba.njit(cache=True, inline="always")
def _pre_activation(P, row, col0, bias, R, r, width):
    # P[row, col0:col0 + width] = (x_t U + b) + R[r, :width], the NumPy kernel's order (R: the
    # step's product, h W or its part); inlined, so it compiles with the caller's flags
    for j in range(width):
        P[row, col0 + j] = (P[row, col0 + j] + bias[col0 + j]) + R[r, j]


@njit_fused
def _simple_units(P, A, XH, F, b0, b1):
    # A = tanh(z), into XH's state columns too; rows b0..b1-1
    for b in range(b0, b1):
        for j in range(A.shape[1]):
            A[b, j] = tanh32_fast(P[b, j])
        for j in range(A.shape[1]):
            XH[b, F + j] = A[b, j]


@njit
def simple_forward(P, A, XH, UW, F, valid, use_mask, own, b0, b1):
    """XH[k] = [x_k | h_k | 1] (the 1 with a bias); per step z = XH[k] [U; W; b] into P,
    h = tanh(z) into XH[k + 1]'s state columns."""
    T = P.shape[0]
    UWp = _packed_if(UW, own)
    for k in range(T):
        _product(XH[k, b0:b1], UW, UWp, P[k, b0:b1], own)           # z  (batch, units)
        _simple_units(P[k], A[k], XH[k + 1], F, b0, b1)
        if use_mask:
            _keep(XH[k + 1], XH[k], valid, k, b0, b1, F)


@njit_fused
def _lstm_gates(P, A, b0, b1):
    # A = [sigmoid(z_i) | sigmoid(z_f) | tanh(z_g) | sigmoid(z_o)], rows b0..b1-1
    U = A.shape[1] // 4
    for b in range(b0, b1):
        for j in range(2 * U):
            A[b, j] = sigmoid32_fast(P[b, j])
        for j in range(2 * U, 3 * U):
            A[b, j] = tanh32_fast(P[b, j])
        for j in range(3 * U, 4 * U):
            A[b, j] = sigmoid32_fast(P[b, j])


@njit_fused
def _lstm_state(A, c_prev, c, tc, XH, F, b0, b1):
    # c_t = f c_{t-1} + i g, tc = tanh(c_t), h_t = o tc (into XH's state columns)
    U = c.shape[1]
    for b in range(b0, b1):
        for j in range(U):
            cv = A[b, U + j] * c_prev[b, j] + A[b, j] * A[b, 2 * U + j]
            c[b, j] = cv
            t = tanh32_fast(cv)
            tc[b, j] = t
            XH[b, F + j] = A[b, 3 * U + j] * t


@njit
def lstm_forward(P, A, XH, C, TC, UW, F, valid, use_mask, own, b0, b1):
    """Gates [i|f|g|o]; c_t = f c_{t-1} + i g, h_t = o tanh(c_t). XH[k] = [x_k | h_k | 1]: each
    step's one product is z = XH[k] [U; W; b]."""
    T = P.shape[0]
    UWp = _packed_if(UW, own)
    for k in range(T):
        _product(XH[k, b0:b1], UW, UWp, P[k, b0:b1], own)           # z  (batch, 4*units)
        _lstm_gates(P[k], A[k], b0, b1)
        _lstm_state(A[k], C[k], C[k + 1], TC[k], XH[k + 1], F, b0, b1)
        if use_mask:
            _keep(XH[k + 1], XH[k], valid, k, b0, b1, F)
            _keep(C[k + 1], C[k], valid, k, b0, b1, 0)


@njit_fused
def _gru_gates(P, bias, R, A, b0):
    # [z|r]: (x_t U + b) + R into P (R: h W_zr, or h W + b_rec), then the sigmoid into A
    U = A.shape[1] // 3
    for r in range(R.shape[0]):
        row = b0 + r
        _pre_activation(P, row, 0, bias, R, r, 2 * U)
        for j in range(2 * U):
            A[row, j] = sigmoid32_fast(P[row, j])


@njit_fused
def _gru_reset_after(P, bias, R, b_rec, A, RH, b0):
    # R += b_rec; the gates; RH = r_h = h W_h + b_rec_h; candidate input (x_t U_h + b_h) + r r_h
    U = A.shape[1] // 3
    for r in range(R.shape[0]):
        for j in range(3 * U):
            R[r, j] += b_rec[j]
    _gru_gates(P, bias, R, A, b0)
    for r in range(R.shape[0]):
        row = b0 + r
        for j in range(U):
            RH[row, j] = R[r, 2 * U + j]
        for j in range(U):
            P[row, 2 * U + j] = (P[row, 2 * U + j] + bias[2 * U + j]) + A[row, U + j] * RH[row, j]


@njit_fused
def _gru_reset_before(A, H, RH, b0, b1):
    # RH = r h_{t-1}
    U = RH.shape[1]
    for b in range(b0, b1):
        for j in range(U):
            RH[b, j] = A[b, U + j] * H[b, j]


@njit_fused
def _gru_candidate_input(P, bias, rhW, b0):
    # candidate input (x_t U_h + b_h) + (r h) W_h
    U = rhW.shape[1]
    for r in range(rhW.shape[0]):
        _pre_activation(P, b0 + r, 2 * U, bias, rhW, r, U)


@njit_fused
def _gru_update(P, A, h_prev, h, b0, b1):
    # hh = tanh(candidate input), h_t = z h_{t-1} + (1 - z) hh
    U = h.shape[1]
    for b in range(b0, b1):
        for j in range(U):
            hh = tanh32_fast(P[b, 2 * U + j])
            A[b, 2 * U + j] = hh
            z = A[b, j]
            h[b, j] = z * h_prev[b, j] + (ONE - z) * hh


@njit
def gru_forward(P, A, H, RH, W, bias, b_rec, valid, use_mask, reset_after, own, b0, b1):
    """Gates [z|r|hh]; h_t = z h_{t-1} + (1 - z) hh. P holds x_t U on entry, `bias` is b_in.

    reset_after: hh = tanh(P_h + r (h W_h + b_rec_h)), RH = h W_h + b_rec_h;
    else:        hh = tanh(P_h + (r h) W_h),          RH = r h."""
    T, G = P.shape[0], P.shape[2]
    U = G // 3
    B = b1 - b0
    if reset_after:
        R = np.empty((B, G), dtype=np.float32)                      # h W (+ b_rec)
        W_zr = W_h = W[:1]                                          # unused
        rhW = np.empty((1, 1), dtype=np.float32)
        Wp = _packed_if(W, own)
        W_zrp = W_hp = Wp
    else:
        R = np.empty((B, 2 * U), dtype=np.float32)                  # h W_zr
        W_zr = np.ascontiguousarray(W[:, :2 * U])
        W_h = np.ascontiguousarray(W[:, 2 * U:])
        rhW = np.empty((B, U), dtype=np.float32)                    # (r h) W_h
        Wp = W_zrp = _packed_if(W_zr, own)
        W_hp = _packed_if(W_h, own)
    for k in range(T):
        if reset_after:
            _product(H[k, b0:b1], W, Wp, R, own)
            _gru_reset_after(P[k], bias, R, b_rec, A[k], RH[k], b0)
        else:
            _product(H[k, b0:b1], W_zr, W_zrp, R, own)
            _gru_gates(P[k], bias, R, A[k], b0)
            _gru_reset_before(A[k], H[k], RH[k], b0, b1)
            _product(RH[k, b0:b1], W_h, W_hp, rhW, own)
            _gru_candidate_input(P[k], bias, rhW, b0)
        _gru_update(P[k], A[k], H[k], H[k + 1], b0, b1)
        if use_mask:
            _keep(H[k + 1], H[k], valid, k, b0, b1, 0)


# ------------------------------------------------------------------ backward
#
# The masked-step rule of RNN._backward (train._Rule): step k's cell sees
# dh = dH[k+1] + d_out[k] on real samples and 0 on masked ones; a masked sample passes
# dH[k] = dH[k+1] + d_out[k] (pass_total) or dH[k+1] to step k-1, and with `unroll` (outputs
# repeat the previous step's) adds d_out[k] to d_out[k-1]. As in the forward, each step's
# arithmetic runs in functions of their own over `(rows, units)`, with fused multiply-adds.

@njit
def _carry(dH, d_out, valid, k, pass_total, unroll, b0, b1):
    _carry_units(dH, d_out, valid, k, pass_total, unroll, b0, b1, 0, dH.shape[2])


@njit
def _carry_units(dH, d_out, valid, k, pass_total, unroll, b0, b1, u0, n):
    # _carry for rows b0..b1-1 and units u0..u0+n-1 (all of them, or a units form's job)
    for b in range(b0, b1):
        if not valid[k, b]:
            new, prev, out = dH[k, b], dH[k + 1, b], d_out[k, b]
            if pass_total:
                for u in range(u0, u0 + n):
                    new[u] = prev[u] + out[u]
            else:
                for u in range(u0, u0 + n):
                    new[u] = prev[u]
            if unroll and k > 0:
                before = d_out[k - 1, b]
                for u in range(u0, u0 + n):
                    before[u] += out[u]


@njit_fused
def _simple_grads(A, dh_next, d_out, dZ, real, b0, b1):
    # dz = dh tanh'(z), dh = dH[k+1] + d_out[k] (0 on masked rows)
    for b in range(b0, b1):
        on = real[b]
        for j in range(dZ.shape[1]):
            dh = (dh_next[b, j] + d_out[b, j]) if on else F32(0)
            dZ[b, j] = dh * (ONE - A[b, j] * A[b, j])


@njit
def _real(valid, use_mask, k, b0, b1, out):
    # out[b] = whether step k of sample b is real (rows b0..b1-1)
    for b in range(b0, b1):
        out[b] = not use_mask or valid[k, b]


@njit
def simple_backward(A, W, W_T, d_out, dH, dZ, valid, use_mask, pass_total, unroll, own, b0,
                    b1):
    """W_T: W's transpose, contiguous, for BLAS (unused with `own`: W^T is packed here)."""
    T = A.shape[0]
    real = np.empty(b1, dtype=np.bool_)
    W_Tp = _packed_if(W.T, own)
    for k in range(T - 1, -1, -1):
        _real(valid, use_mask, k, b0, b1, real)
        _simple_grads(A[k], dH[k + 1], d_out[k], dZ[k], real, b0, b1)
        _product(dZ[k, b0:b1], W_T, W_Tp, dH[k, b0:b1], own)        # dh_{t-1} = dz W^T
        if use_mask:
            _carry(dH, d_out, valid, k, pass_total, unroll, b0, b1)


@njit_fused
def _lstm_grads(A, c_prev, tc, dh_next, d_out, dc_next, dZ, dc_prev, real, b0, b1):
    # dc = dh o tanh'(c) + dc_{t+1}; dz = [dc g i' | dc c_{t-1} f' | dc i g' | dh tc o'];
    # dc_{t-1} = dc f. Masked rows: dz = 0, the cell state's gradient passes unchanged.
    U = tc.shape[1]
    for b in range(b0, b1):
        if not real[b]:
            for j in range(4 * U):
                dZ[b, j] = 0
            for j in range(U):
                dc_prev[b, j] = dc_next[b, j]
            continue
        for j in range(U):
            dh = dh_next[b, j] + d_out[b, j]
            i, f, g, o = A[b, j], A[b, U + j], A[b, 2 * U + j], A[b, 3 * U + j]
            t = tc[b, j]
            dc = dh * o * (ONE - t * t) + dc_next[b, j]
            dZ[b, j] = dc * g * ((ONE - i) * i)                     # di
            dZ[b, U + j] = dc * c_prev[b, j] * ((ONE - f) * f)      # df
            dZ[b, 2 * U + j] = dc * i * (ONE - g * g)               # dg
            dZ[b, 3 * U + j] = dh * t * ((ONE - o) * o)             # do
            dc_prev[b, j] = dc * f                                  # dc_{t-1} = dc f


@njit
def lstm_backward(A, C, TC, W, W_T, d_out, dH, dC, dZ, valid, use_mask, pass_total, unroll,
                  own, b0, b1):
    """W_T as in simple_backward."""
    T = A.shape[0]
    real = np.empty(b1, dtype=np.bool_)
    W_Tp = _packed_if(W.T, own)
    for k in range(T - 1, -1, -1):
        _real(valid, use_mask, k, b0, b1, real)
        _lstm_grads(A[k], C[k], TC[k], dH[k + 1], d_out[k], dC[k + 1], dZ[k], dC[k], real, b0,
                    b1)
        _product(dZ[k, b0:b1], W_T, W_Tp, dH[k, b0:b1], own)        # dh_{t-1} = dz W^T
        if use_mask:
            _carry(dH, d_out, valid, k, pass_total, unroll, b0, b1)


@njit_fused
def _gru_grads(A, h_prev, dh_next, d_out, dZx, dhz, real, b0, b1):
    # d_z = dh (h_{t-1} - hh) z', d_a = dh (1 - z) tanh'(a) into dZx; dhz = dh z (rows from 0)
    U = h_prev.shape[1]
    for b in range(b0, b1):
        on = real[b]
        r = b - b0
        for j in range(U):
            dh = (dh_next[b, j] + d_out[b, j]) if on else F32(0)
            z, hh = A[b, j], A[b, 2 * U + j]
            dZx[b, j] = dh * (h_prev[b, j] - hh) * ((ONE - z) * z)             # d_z
            dZx[b, 2 * U + j] = dh * (ONE - z) * (ONE - hh * hh)               # d_a
            dhz[r, j] = dh * z


@njit_fused
def _gru_grads_after(A, RH, dZx, dZh, b0, b1):
    # d_r = d_a r_h r'; dZh = [d_z | d_r | d_a r] (d r_h = d_a r)
    U = RH.shape[1]
    for b in range(b0, b1):
        for j in range(U):
            r = A[b, U + j]
            dZx[b, U + j] = dZx[b, 2 * U + j] * RH[b, j] * ((ONE - r) * r)
        for j in range(2 * U):
            dZh[b, j] = dZx[b, j]
        for j in range(U):
            dZh[b, 2 * U + j] = dZx[b, 2 * U + j] * A[b, U + j]


@njit_fused
def _gru_split_before(dZx, zr, da, b0):
    # d_z into zr's first half, d_a into da (rows from 0), for the two products
    U = da.shape[1]
    for r in range(da.shape[0]):
        for j in range(U):
            zr[r, j] = dZx[b0 + r, j]
        for j in range(U):
            da[r, j] = dZx[b0 + r, 2 * U + j]


@njit_fused
def _gru_reset_grad_before(A, h_prev, d_rh, dZx, zr, b0):
    # d_r = d(r h) h_{t-1} r', into dZx and zr's second half
    U = h_prev.shape[1]
    for r_ in range(d_rh.shape[0]):
        b = b0 + r_
        for j in range(U):
            r = A[b, U + j]
            dZx[b, U + j] = d_rh[r_, j] * h_prev[b, j] * ((ONE - r) * r)
        for j in range(U):
            zr[r_, U + j] = dZx[b, U + j]


@njit_fused
def _gru_add_before(A, d_rh, dH, b0):
    # dh_{t-1} += d(r h) r
    U = d_rh.shape[1]
    for r_ in range(d_rh.shape[0]):
        b = b0 + r_
        for j in range(U):
            dH[b, j] += d_rh[r_, j] * A[b, U + j]


@njit_fused
def _add_rows(dH, dhz, b0):
    # dh_{t-1} += dh z
    for r in range(dhz.shape[0]):
        for j in range(dhz.shape[1]):
            dH[b0 + r, j] += dhz[r, j]


@njit
def gru_backward(A, H, RH, W, d_out, dH, dZx, dZh, valid, use_mask, pass_total, unroll,
                 reset_after, own, b0, b1):
    """dZx: gradients of the input-side pre-activations [z|r|a] (x_t U + b_in);
    dZh (reset_after): of h W + b_rec, whose candidate block is d_a r."""
    T, G = A.shape[0], A.shape[2]
    U = G // 3
    B = b1 - b0
    real = np.empty(b1, dtype=np.bool_)
    dhz = np.empty((B, U), dtype=np.float32)                        # dh z (rows from b0)
    if reset_after:
        W_T = _transposed(W, not own)                               # for BLAS
        W_Tp = W_zr_Tp = W_h_Tp = _packed_if(W.T, own)
        W_zr_T = W_h_T = W[:1]                                      # unused
        zr = np.empty((1, 1), dtype=np.float32)
        da = np.empty((1, 1), dtype=np.float32)
        d_rh = np.empty((1, 1), dtype=np.float32)
    else:
        W_T = W[:1]                                                 # unused
        W_zr, W_h = np.ascontiguousarray(W[:, :2 * U]), np.ascontiguousarray(W[:, 2 * U:])
        W_zr_T, W_h_T = _transposed(W_zr, not own), _transposed(W_h, not own)   # for BLAS
        W_zr_Tp, W_h_Tp = _packed_if(W_zr.T, own), _packed_if(W_h.T, own)
        W_Tp = W_zr_Tp
        zr = np.empty((B, 2 * U), dtype=np.float32)                 # dz of z and r
        da = np.empty((B, U), dtype=np.float32)                     # d_a
        d_rh = np.empty((B, U), dtype=np.float32)                   # d (r h) = d_a W_h^T
    for k in range(T - 1, -1, -1):
        _real(valid, use_mask, k, b0, b1, real)
        _gru_grads(A[k], H[k], dH[k + 1], d_out[k], dZx[k], dhz, real, b0, b1)
        if reset_after:
            _gru_grads_after(A[k], RH[k], dZx[k], dZh[k], b0, b1)
            _product(dZh[k, b0:b1], W_T, W_Tp, dH[k, b0:b1], own)
        else:
            _gru_split_before(dZx[k], zr, da, b0)
            _product(da, W_h_T, W_h_Tp, d_rh, own)                  # d (r h) = d_a W_h^T
            _gru_reset_grad_before(A[k], H[k], d_rh, dZx[k], zr, b0)
            _product(zr, W_zr_T, W_zr_Tp, dH[k, b0:b1], own)
            _gru_add_before(A[k], d_rh, dH[k], b0)
        _add_rows(dH[k], dhz, b0)                                   # + dh z
        if use_mask:
            _carry(dH, d_out, valid, k, pass_total, unroll, b0, b1)


# ------------------------------------------------------------------ LSTM by units
#
# A batch of a few rows reads all of the weights at every step, forwards (`[x | h | 1] [U; W;
# b]`) and backwards (`dZ W^T`), for a few multiply-adds a number: a step is bound by how fast
# the weights are read, and two cores read them twice as fast. So, as the inference loops'
# units forms (`_numba_loops.lstm_own_units`), each step's blocks of GATE_UNITS units are
# shared between parts on Numba's threads, which stay in the loop for the whole call and meet
# at the end of every step through the same counters (`_next_job`). A job computes its units
# for every row, with the products and arithmetic the one-thread loops above use (the same
# panel product, each sum over k in order; the same expressions), so the tape and the
# gradients are the same to the bit.
#
# Forward, step k, job q: `[x_k | h_k | 1]` times block q of `[U; W; b]` packed by gate blocks
# (`gate_panels`: the block's four gates side by side), then the tape's P, A, C, TC and h_{k+1}
# for those units. Backward, round r (step k = T - 1 - r), job q: first `dH[k + 1]`'s units of
# block q, `dZ[k + 1] W^T` by W^T's panels of those units (and the mask's carry for them), then
# step k's gate gradients for the same units, which read just those columns of `dH[k + 1]`;
# one meeting a round, T + 1 rounds (the last finishes `dH[0]`).


@njit_fused
def _lstm_tape_block(z, P, A, c_prev, c, tc, XH_prev, XH, F, u0, valid, use_mask, k):
    # units u0..u0+n-1 of step k for every row, from their pre-activations z (bias included;
    # columns [i | f | g | o], n each): P, A, c, tanh(c), h into XH's state columns; masked
    # rows keep their state (as _keep). Two passes a row, the gates into A and then the state
    # from A, as _lstm_gates and _lstm_state: so the multiply-adds fuse as there, and the
    # numbers are theirs to the bit (from the gates held in registers, `f c + i g` fused
    # the other way round at some units). Each pass a loop of its own over 1-D views, which
    # LLVM vectorizes: as one loop a row over all four gates, the block took 2.7 times as long
    # (RESULTS.md, round 29).
    n, U = z.shape[1] // 4, c.shape[1]
    e = u0 + n
    for b in range(z.shape[0]):
        zb, pb, ab = z[b], P[b], A[b]
        _gate_copy(zb[:n], pb[u0:e], ab[u0:e], False)
        _gate_copy(zb[n:2 * n], pb[U + u0:U + e], ab[U + u0:U + e], False)
        _gate_copy(zb[2 * n:3 * n], pb[2 * U + u0:2 * U + e], ab[2 * U + u0:2 * U + e], True)
        _gate_copy(zb[3 * n:], pb[3 * U + u0:3 * U + e], ab[3 * U + u0:3 * U + e], False)
        _state_units(ab[u0:e], ab[U + u0:U + e], ab[2 * U + u0:2 * U + e],
                     ab[3 * U + u0:3 * U + e], c_prev[b, u0:e], c[b, u0:e], tc[b, u0:e],
                     XH[b, F + u0:F + e])
        if use_mask and not valid[k, b]:
            XH[b, F + u0:F + e] = XH_prev[b, F + u0:F + e]
            c[b, u0:e] = c_prev[b, u0:e]


@njit_fused
def _gate_copy(z, p, a, tanh):
    # p = z, a = tanh(z) or sigmoid(z): one gate's block of units of one row
    if tanh:
        for j in range(z.shape[0]):
            v = z[j]
            p[j] = v
            a[j] = tanh32_fast(v)
    else:
        for j in range(z.shape[0]):
            v = z[j]
            p[j] = v
            a[j] = sigmoid32_fast(v)


@njit_fused
def _state_units(i, f, g, o, c_prev, c, tc, h):
    # c = f c_prev + i g, tc = tanh(c), h = o tc: a block of units of one row (as _lstm_state)
    for j in range(c.shape[0]):
        cv = f[j] * c_prev[j] + i[j] * g[j]
        c[j] = cv
        t = tanh32_fast(cv)
        tc[j] = t
        h[j] = o[j] * t


@njit_fused
def _lstm_forward_part(i, parts, P, A, XH, C, TC, UW, W, F, valid, use_mask, z, flags):
    # part i of lstm_forward_units: step k's jobs, one block of units for every row; a block's
    # weights are packed by the part that runs its job of step 0, so the parts pack them at
    # once (an LSTM(512)'s `[U; W; b]`, (545, 2048), took 0.7-1.1 ms to pack on one thread)
    T, B, U = P.shape[0], P.shape[1], C.shape[2]
    jobs = gate_blocks(U, GATE_UNITS)
    atomics.add(flags, (jobs + 1) * atomics.LINE, 1)
    for k in range(T):
        tried = 0
        while True:
            q, tried = _next_job(flags, jobs, parts, i, tried, k)
            if q < 0:
                break
            if k == 0:
                fill_gate_panels(W, UW, UW[:0], 0, 4, U, GATE_UNITS, q, q + 1)
            n = min(GATE_UNITS, U - q * GATE_UNITS)
            zq = _block_out(z, B, 4 * n)
            products.panel_product(XH[k], _block_panels(W, 4, q, n, GATE_UNITS), zq)
            _lstm_tape_block(zq, P[k], A[k], C[k], C[k + 1], TC[k], XH[k], XH[k + 1], F,
                             q * GATE_UNITS, valid, use_mask, k)
            atomics.add(flags, jobs * atomics.LINE, 1)


@njit_blocks
def lstm_forward_units(args, bounds):
    """lstm_forward over every row, each step's units in `len(bounds) - 1` parts at once
    (`_threads.by_units`); `[U; W; b]` packed here by gate blocks, whatever `own` says."""
    P, A, XH, C, TC, UW, F, valid, use_mask, own = args
    B, G = P.shape[1], P.shape[2]
    U = G // 4
    W = gate_panels_empty(UW.shape[0], 4, U, GATE_UNITS)          # packed by the parts
    parts = bounds.shape[0] - 1
    z = np.empty((parts, B * 4 * min(U, GATE_UNITS)), dtype=np.float32)
    flags = _job_counters(gate_blocks(U, GATE_UNITS))
    for i in numba.prange(parts):
        _lstm_forward_part(i, parts, P, A, XH, C, TC, UW, W, F, valid, use_mask, z[i], flags)


@njit_fused
def _lstm_grads_block(A, c_prev, tc, dh_next, d_out, dc_next, dZ, dc_prev, u0, n, valid,
                      use_mask, k):
    # _lstm_grads for units u0..u0+n-1 of every row, a row's units in one loop over 1-D views
    # (as one loop over 2-D indexes, 1.5 times as long; RESULTS.md, round 29). One function
    # for both backward loops ran the one-thread backward 1.05-1.15x slower (round 28), so the
    # one-thread loop keeps its own.
    U, e = tc.shape[1], u0 + n
    for b in range(tc.shape[0]):
        if use_mask and not valid[k, b]:
            for g in range(4):
                dZ[b, g * U + u0:g * U + e] = 0
            dc_prev[b, u0:e] = dc_next[b, u0:e]
            continue
        a, z = A[b], dZ[b]
        _grads_units(a[u0:e], a[U + u0:U + e], a[2 * U + u0:2 * U + e],
                     a[3 * U + u0:3 * U + e], tc[b, u0:e], dh_next[b, u0:e], d_out[b, u0:e],
                     dc_next[b, u0:e], c_prev[b, u0:e], z[u0:e], z[U + u0:U + e],
                     z[2 * U + u0:2 * U + e], z[3 * U + u0:3 * U + e], dc_prev[b, u0:e])


@njit_fused
def _grads_units(i_, f_, g_, o_, tc, dh_next, d_out, dc_next, c_prev, di, df, dg, do, dc_prev):
    # a block of units of one row of _lstm_grads, the same arithmetic
    for j in range(tc.shape[0]):
        dh = dh_next[j] + d_out[j]
        i, f, g, o = i_[j], f_[j], g_[j], o_[j]
        t = tc[j]
        dc = dh * o * (ONE - t * t) + dc_next[j]
        di[j] = dc * g * ((ONE - i) * i)
        df[j] = dc * c_prev[j] * ((ONE - f) * f)
        dg[j] = dc * i * (ONE - g * g)
        do[j] = dh * t * ((ONE - o) * o)
        dc_prev[j] = dc * f


@njit
def _into_columns(dst, src, u0):
    # dst[:, u0:u0 + n] = src (n columns)
    for b in range(src.shape[0]):
        for j in range(src.shape[1]):
            dst[b, u0 + j] = src[b, j]


@njit_fused
def _lstm_backward_part(i, parts, A, C, TC, W, WT, d_out, dH, dC, dZ, valid, use_mask,
                        pass_total, unroll, out, flags):
    # part i of lstm_backward_units: round r finishes step k + 1's dH and starts step k's dZ;
    # a block's panels of W^T are packed by the part that runs its job of round 0, which has
    # no product (as the forward's)
    T, B, U = A.shape[0], A.shape[1], TC.shape[2]
    jobs = gate_blocks(U, GATE_UNITS)
    per = GATE_UNITS // products.WIDTH
    atomics.add(flags, (jobs + 1) * atomics.LINE, 1)
    for r in range(T + 1):
        k = T - 1 - r
        tried = 0
        while True:
            q, tried = _next_job(flags, jobs, parts, i, tried, r)
            if q < 0:
                break
            u0 = q * GATE_UNITS
            n = min(GATE_UNITS, U - u0)
            if r == 0:
                products.pack(WT[q * per:q * per + products.panel_count(n)],
                              W[u0:u0 + n].T, 0)
            if k + 1 < T:                                   # dh_k = dz_{k+1} W^T, its units
                o = _block_out(out, B, n)
                products.panel_product(dZ[k + 1], WT[q * per:q * per + products.panel_count(n)],
                                       o)
                _into_columns(dH[k + 1], o, u0)
                if use_mask:
                    _carry_units(dH, d_out, valid, k + 1, pass_total, unroll, 0, B, u0, n)
            if k >= 0:
                _lstm_grads_block(A[k], C[k], TC[k], dH[k + 1], d_out[k], dC[k + 1], dZ[k],
                                  dC[k], u0, n, valid, use_mask, k)
            atomics.add(flags, jobs * atomics.LINE, 1)


@njit_blocks
def lstm_backward_units(args, bounds):
    """lstm_backward over every row, each round's units in `len(bounds) - 1` parts at once;
    W^T packed here, whatever `own` says."""
    (A, C, TC, W, W_T, d_out, dH, dC, dZ, valid, use_mask, pass_total, unroll, own) = args
    B, U = A.shape[1], W.shape[0]
    WT = products.empty_panels(products.panel_count(U), W.shape[1])     # packed by the parts
    parts = bounds.shape[0] - 1
    out = np.empty((parts, B * min(U, GATE_UNITS)), dtype=np.float32)
    flags = _job_counters(gate_blocks(U, GATE_UNITS))
    for i in numba.prange(parts):
        _lstm_backward_part(i, parts, A, C, TC, W, WT, d_out, dH, dC, dZ, valid, use_mask,
                            pass_total, unroll, out[i], flags)


_threads.native_units(lstm_forward, lstm_forward_units)
_threads.native_units(lstm_backward, lstm_backward_units)


# ------------------------------------------------------------------ blocks on Numba's threads
#
# Blocks of rows (`_threads.ROWS`) and units (`UNITS`) run on Numba's threads, and so do the
# whole-sequence products after the loops (train.py's `_at_b_sums` and `_matmul`, by
# `_threads.native_products`): a part of the product's columns or rows on each thread, by
# NumPy's sgemm on one thread (`_numpy_blas.gemm`, the call NumPy's matmul makes, so the same
# bits as the pool's blocks). Numba's threads wait for the next call by spinning, for the
# library's default 5 ms where another library started GNU OpenMP (torch does), on the CPU
# where the pool's thread would run the next block; so nothing of a training step goes to the
# pool while they may be spinning.


@njit_blocks
def simple_forward_blocks(args, bounds):
    """simple_forward's blocks of rows `bounds[i]:bounds[i + 1]` at once (`_threads.by_rows`)."""
    for i in numba.prange(bounds.shape[0] - 1):
        simple_forward(*args, bounds[i], bounds[i + 1])


@njit_blocks
def lstm_forward_blocks(args, bounds):
    """lstm_forward's blocks of rows at once."""
    for i in numba.prange(bounds.shape[0] - 1):
        lstm_forward(*args, bounds[i], bounds[i + 1])


@njit_blocks
def gru_forward_blocks(args, bounds):
    """gru_forward's blocks of rows at once."""
    for i in numba.prange(bounds.shape[0] - 1):
        gru_forward(*args, bounds[i], bounds[i + 1])


@njit_blocks
def simple_backward_blocks(args, bounds):
    """simple_backward's blocks of rows at once."""
    for i in numba.prange(bounds.shape[0] - 1):
        simple_backward(*args, bounds[i], bounds[i + 1])


@njit_blocks
def lstm_backward_blocks(args, bounds):
    """lstm_backward's blocks of rows at once."""
    for i in numba.prange(bounds.shape[0] - 1):
        lstm_backward(*args, bounds[i], bounds[i + 1])


@njit_blocks
def gru_backward_blocks(args, bounds):
    """gru_backward's blocks of rows at once."""
    for i in numba.prange(bounds.shape[0] - 1):
        gru_backward(*args, bounds[i], bounds[i + 1])


@njit_blocks
def at_b_blocks(args, bounds):
    """`out[:, c0:c1] = a^T b[:, c0:c1]` for each block of columns `bounds[i]:bounds[i + 1]`
    at once; args `(a, b, out)`."""
    a, b, out = args
    for i in numba.prange(bounds.shape[0] - 1):
        c0, c1 = bounds[i], bounds[i + 1]
        gemm(a.T, b[:, c0:c1], out[:, c0:c1])


@njit_blocks
def matmul_blocks(args, bounds):
    """`out[r0:r1] = a[r0:r1] b` for each block of rows `bounds[i]:bounds[i + 1]` at once;
    args `(a, b, out)`."""
    a, b, out = args
    for i in numba.prange(bounds.shape[0] - 1):
        r0, r1 = bounds[i], bounds[i + 1]
        gemm(a[r0:r1], b, out[r0:r1])


@njit_blocks
def column_sums_blocks(args, bounds):
    """`sums[c0:c1] = b[:, c0:c1]` summed down each column, row after row as NumPy's
    `b.sum(axis=0)` adds them, for each block of columns at once; args `(b, sums)`."""
    b, sums = args
    for i in numba.prange(bounds.shape[0] - 1):
        c0, c1 = bounds[i], bounds[i + 1]
        out = sums[c0:c1]
        if b.shape[0] == 0:
            out[:] = 0
            continue
        out[:] = b[0, c0:c1]                    # as NumPy starts: a column of -0.0 sums to -0.0
        for r in range(1, b.shape[0]):
            out += b[r, c0:c1]


_threads.native_products(at_b_blocks, matmul_blocks, column_sums_blocks, gemm_fits)
for _loop, _parallel in ((simple_forward, simple_forward_blocks),
                         (lstm_forward, lstm_forward_blocks), (gru_forward, gru_forward_blocks),
                         (simple_backward, simple_backward_blocks),
                         (lstm_backward, lstm_backward_blocks),
                         (gru_backward, gru_backward_blocks)):
    _threads.native_blocks(_loop, _parallel)
