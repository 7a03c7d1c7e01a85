"""Compiled (Numba) loops for the training kernel (unrolled.kernels.train): forward with tape, BPTT.

Float32 and the default activations only (tanh; sigmoid for the gates). Each step's `h_{t-1} W`
in the forward and `dZ_t W^T` in the backward is the panel product (`_numba_panels`, on W or
W^T copied into panels once per call and row block) while the weights fit the caches or the
rows run in blocks (`own`, see train._own_product), else BLAS (`np.dot` here calls SciPy's
sgemm). What these loops replace is everything between two products: the NumPy kernel spends
8-15 full passes over `(batch, gates*units)` arrays per step (adding the recurrent term, the
activations one gate block at a time, the state update, the gate derivatives, the mask
rules), plus whole-sequence passes for the activation derivatives. Here
each step is one pass, with `tanh32`/`sigmoid32` (within 2 ulp of NumPy's, and vectorized), and
the derivatives `1 - y^2`, `y (1 - y)` are taken from the stored gates inside that pass.

The loops write exactly the tape the NumPy kernel writes (P, A, H, C, TC, RH; see train.py), so
its backward, `cache["steps"]` and `cache["step_grads"]` read them alike; the whole-sequence
weight-gradient products stay in train.py. Row-vector math in processing order k = 0..T-1;
`valid` is `(T, batch)` (True: the sample's step is real), read only when `use_mask`.

Imported only by `train.py` when `unrolled.kernels._numba.available()`; `import unrolled` never
imports Numba.

Each inner loop reads a few arrays and writes one (rows taken as 1-D views): Numba cannot tell
LLVM that two array arguments never overlap, so a loop writing several arrays needs a runtime
overlap check per pair and LLVM gives up vectorizing past a handful (the LSTM forward as one
loop per row ran at 72 ns per unit, split like this at 18 ns).
"""

from __future__ import annotations

import numba
import numpy as np

from unrolled.kernels._numba_loops import _packed_if, _product, sigmoid32, tanh32


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

@njit
def _keep(new, old, valid, k, b0, b1):
    # masked samples keep their previous state
    for b in range(b0, b1):
        if not valid[k, b]:
            n, o = new[b], old[b]
            for j in range(n.shape[0]):
                n[j] = o[j]


@njit
def simple_forward(P, A, H, W, valid, use_mask, own, b0, b1):
    """P holds x_t U + b on entry; per step z = P[k] + h W (kept in P), h = tanh(z)."""
    T, U = P.shape[0], P.shape[2]
    hW = np.empty((b1 - b0, U), dtype=np.float32)
    Wp = _packed_if(W, own)
    for k in range(T):
        _product(H[k, b0:b1], W, Wp, hW, own)                       # h_{t-1} W  (batch, units)
        for b in range(b0, b1):
            p, hw, a, h = P[k, b], hW[b - b0], A[k, b], H[k + 1, b]
            for j in range(U):
                p[j] += hw[j]                                       # z
            for j in range(U):
                a[j] = tanh32(p[j])
            for j in range(U):
                h[j] = a[j]
        if use_mask:
            _keep(H[k + 1], H[k], valid, k, b0, b1)


@njit
def lstm_forward(P, A, H, C, TC, W, valid, use_mask, own, b0, b1):
    """Gates [i|f|g|o]; c_t = f c_{t-1} + i g, h_t = o tanh(c_t)."""
    T, G = P.shape[0], P.shape[2]
    U = G // 4
    hW = np.empty((b1 - b0, G), dtype=np.float32)
    Wp = _packed_if(W, own)
    for k in range(T):
        _product(H[k, b0:b1], W, Wp, hW, own)                       # (batch, 4*units)
        for b in range(b0, b1):
            p, hw, a = P[k, b], hW[b - b0], A[k, b]
            for j in range(G):
                p[j] += hw[j]                                       # z
            for j in range(2 * U):
                a[j] = sigmoid32(p[j])                              # i, f
            for j in range(2 * U, 3 * U):
                a[j] = tanh32(p[j])                                 # g
            for j in range(3 * U, G):
                a[j] = sigmoid32(p[j])                              # o
            c, c_prev = C[k + 1, b], C[k, b]
            for j in range(U):
                c[j] = a[U + j] * c_prev[j] + a[j] * a[2 * U + j]   # f c_{t-1} + i g
            tc = TC[k, b]
            for j in range(U):
                tc[j] = tanh32(c[j])
            h = H[k + 1, b]
            for j in range(U):
                h[j] = a[3 * U + j] * tc[j]                         # o tanh(c_t)
        if use_mask:
            _keep(H[k + 1], H[k], valid, k, b0, b1)
            _keep(C[k + 1], C[k], valid, k, b0, b1)


@njit
def _gru_candidate(P, A, H, k, b, U):
    # hh = tanh(a) from the finished candidate input in P, then h_t = z h_{t-1} + (1 - z) hh
    p, a, h, h_prev = P[k, b], A[k, b], H[k + 1, b], H[k, b]
    for j in range(2 * U, 3 * U):
        a[j] = tanh32(p[j])
    for j in range(U):
        z = a[j]
        h[j] = z * h_prev[j] + (ONE - z) * a[2 * U + j]


@njit
def gru_forward(P, A, H, RH, W, b_rec, valid, use_mask, reset_after, own, b0, b1):
    """Gates [z|r|hh]; h_t = z h_{t-1} + (1 - z) hh. P holds x_t U + b_in on entry.

    reset_after: hh = tanh(P_h + r (h W_h + b_rec_h)), RH = h W_h + b_rec_h;
    else:        hh = tanh(P_h + (r h) W_h),          RH = r h."""
    T, G = P.shape[0], P.shape[2]
    U = G // 3
    B = b1 - b0
    if reset_after:
        R = np.empty((B, G), dtype=np.float32)                      # h W + b_rec
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
            for b in range(b0, b1):
                p, a, r_, rh = P[k, b], A[k, b], R[b - b0], RH[k, b]
                for j in range(G):
                    r_[j] += b_rec[j]
                for j in range(2 * U):
                    p[j] += r_[j]
                for j in range(2 * U):
                    a[j] = sigmoid32(p[j])                          # z, r
                for j in range(U):
                    rh[j] = r_[2 * U + j]                           # r_h
                for j in range(U):
                    p[2 * U + j] += a[U + j] * rh[j]                # + r r_h
                _gru_candidate(P, A, H, k, b, U)
        else:
            _product(H[k, b0:b1], W_zr, W_zrp, R, own)
            for b in range(b0, b1):
                p, a, r_, rh, h_prev = P[k, b], A[k, b], R[b - b0], RH[k, b], H[k, b]
                for j in range(2 * U):
                    p[j] += r_[j]
                for j in range(2 * U):
                    a[j] = sigmoid32(p[j])                          # z, r
                for j in range(U):
                    rh[j] = a[U + j] * h_prev[j]                    # r h_{t-1}
            _product(RH[k, b0:b1], W_h, W_hp, rhW, own)
            for b in range(b0, b1):
                p, rw = P[k, b], rhW[b - b0]
                for j in range(U):
                    p[2 * U + j] += rw[j]                           # + (r h) W_h
                _gru_candidate(P, A, H, k, b, U)
        if use_mask:
            _keep(H[k + 1], H[k], valid, k, b0, b1)


# ------------------------------------------------------------------ backward
#
# The masked-step rule of RNN._backward (train._Rule): step k's cell sees
# dh = dH[k+1] + d_out[k] on real samples and 0 on masked ones; a masked sample passes
# dH[k] = dH[k+1] + d_out[k] (pass_total) or dH[k+1] to step k-1, and with `unroll` (outputs
# repeat the previous step's) adds d_out[k] to d_out[k-1].

@njit
def _dh(dH, d_out, dh, k, b, real):
    g, o = dH[k + 1, b], d_out[k, b]
    if real:
        for j in range(dh.shape[0]):
            dh[j] = g[j] + o[j]
    else:
        for j in range(dh.shape[0]):
            dh[j] = 0


@njit
def _carry(dH, d_out, valid, k, pass_total, unroll, b0, b1):
    U = dH.shape[2]
    for b in range(b0, b1):
        if not valid[k, b]:
            new, prev, out = dH[k, b], dH[k + 1, b], d_out[k, b]
            if pass_total:
                for j in range(U):
                    new[j] = prev[j] + out[j]
            else:
                for j in range(U):
                    new[j] = prev[j]
            if unroll and k > 0:
                before = d_out[k - 1, b]
                for j in range(U):
                    before[j] += out[j]


@njit
def simple_backward(A, W, W_T, d_out, dH, dZ, valid, use_mask, pass_total, unroll, own, b0,
                    b1):
    """W_T: W's transpose, contiguous, for BLAS (unused with `own`: W^T is packed here)."""
    T, U = A.shape[0], A.shape[2]
    dh = np.empty(U, dtype=np.float32)
    W_Tp = _packed_if(W.T, own)
    for k in range(T - 1, -1, -1):
        for b in range(b0, b1):
            _dh(dH, d_out, dh, k, b, not use_mask or valid[k, b])
            a, dz = A[k, b], dZ[k, b]
            for j in range(U):
                dz[j] = dh[j] * (ONE - a[j] * a[j])                 # dz = dh tanh'(z)
        _product(dZ[k, b0:b1], W_T, W_Tp, dH[k, b0:b1], own)        # dh_{t-1} = dz W^T
        if use_mask:
            _carry(dH, d_out, valid, k, pass_total, unroll, b0, b1)


@njit
def lstm_backward(A, C, TC, W, W_T, d_out, dH, dC, dZ, valid, use_mask, pass_total, unroll,
                  own, b0, b1):
    """W_T as in simple_backward."""
    T, G = A.shape[0], A.shape[2]
    U = G // 4
    W_Tp = _packed_if(W.T, own)
    dh = np.empty(U, dtype=np.float32)
    dc = np.empty(U, dtype=np.float32)
    for k in range(T - 1, -1, -1):
        for b in range(b0, b1):
            a, dz, dc_prev, dc_next = A[k, b], dZ[k, b], dC[k, b], dC[k + 1, b]
            if use_mask and not valid[k, b]:
                for j in range(G):
                    dz[j] = 0
                for j in range(U):
                    dc_prev[j] = dc_next[j]
                continue
            _dh(dH, d_out, dh, k, b, True)
            tc, c_prev = TC[k, b], C[k, b]
            for j in range(U):
                dc[j] = dh[j] * a[3 * U + j] * (ONE - tc[j] * tc[j]) + dc_next[j]
            for j in range(U):
                i = a[j]
                dz[j] = dc[j] * a[2 * U + j] * ((ONE - i) * i)      # di
            for j in range(U):
                f = a[U + j]
                dz[U + j] = dc[j] * c_prev[j] * ((ONE - f) * f)     # df
            for j in range(U):
                g = a[2 * U + j]
                dz[2 * U + j] = dc[j] * a[j] * (ONE - g * g)        # dg
            for j in range(U):
                o = a[3 * U + j]
                dz[3 * U + j] = dh[j] * tc[j] * ((ONE - o) * o)     # do
            for j in range(U):
                dc_prev[j] = dc[j] * a[U + j]                       # dc_{t-1} = dc f
        _product(dZ[k, b0:b1], W_T, W_Tp, dH[k, b0:b1], own)        # dh_{t-1} = dz W^T
        if use_mask:
            _carry(dH, d_out, valid, k, pass_total, unroll, b0, b1)


@njit
def gru_backward(A, H, RH, W, d_out, dH, dZx, dZh, valid, use_mask, pass_total, unroll,
                 reset_after, own, b0, b1):
    """dZx: gradients of the input-side pre-activations [z|r|a] (x_t U + b_in);
    dZh (reset_after): of h W + b_rec, whose candidate block is d_a r."""
    T, G = A.shape[0], A.shape[2]
    U = G // 3
    B = b1 - b0
    dh = np.empty(U, dtype=np.float32)
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
        for b in range(b0, b1):
            _dh(dH, d_out, dh, k, b, not use_mask or valid[k, b])
            a, dzx, h_prev, d_hz = A[k, b], dZx[k, b], H[k, b], dhz[b - b0]
            for j in range(U):
                z = a[j]
                dzx[j] = dh[j] * (h_prev[j] - a[2 * U + j]) * ((ONE - z) * z)   # d_z
            for j in range(U):
                hh = a[2 * U + j]
                dzx[2 * U + j] = dh[j] * (ONE - a[j]) * (ONE - hh * hh)         # d_a
            for j in range(U):
                d_hz[j] = dh[j] * a[j]                              # dh z
            if reset_after:
                rh, dzh = RH[k, b], dZh[k, b]
                for j in range(U):
                    r = a[U + j]
                    dzx[U + j] = dzx[2 * U + j] * rh[j] * ((ONE - r) * r)       # d_r
                for j in range(2 * U):
                    dzh[j] = dzx[j]
                for j in range(U):
                    dzh[2 * U + j] = dzx[2 * U + j] * a[U + j]      # d r_h = d_a r
            else:
                zr_b, da_b = zr[b - b0], da[b - b0]
                for j in range(U):
                    zr_b[j] = dzx[j]
                for j in range(U):
                    da_b[j] = dzx[2 * U + j]
        if reset_after:
            _product(dZh[k, b0:b1], W_T, W_Tp, dH[k, b0:b1], own)
        else:
            _product(da, W_h_T, W_h_Tp, d_rh, own)                  # d (r h) = d_a W_h^T
            for b in range(b0, b1):
                a, dzx, h_prev, drh = A[k, b], dZx[k, b], H[k, b], d_rh[b - b0]
                for j in range(U):
                    r = a[U + j]
                    dzx[U + j] = drh[j] * h_prev[j] * ((ONE - r) * r)           # d_r
                zr_b = zr[b - b0]
                for j in range(U):
                    zr_b[U + j] = dzx[U + j]
            _product(zr, W_zr_T, W_zr_Tp, dH[k, b0:b1], own)
            for b in range(b0, b1):
                a, drh, dhk = A[k, b], d_rh[b - b0], dH[k, b]
                for j in range(U):
                    dhk[j] += drh[j] * a[U + j]                     # + d(r h) r
        for b in range(b0, b1):
            dhk, d_hz = dH[k, b], dhz[b - b0]
            for j in range(U):
                dhk[j] += d_hz[j]                                   # + dh z
        if use_mask:
            _carry(dH, d_out, valid, k, pass_total, unroll, b0, b1)
