"""Compiled (Numba) loops for the training kernel (unrolled.kernels.train): forward with tape, BPTT.

Float32 and the default activations only (tanh; sigmoid for the gates). Every matrix product
stays in BLAS (`np.dot` here calls SciPy's sgemm): each step's `h_{t-1} W` in the forward and
`dZ_t W^T` in the backward. What these loops replace is everything between two products: the
NumPy kernel spends 8-15 full passes over `(batch, gates*units)` arrays per step (adding the
recurrent term, the activations one gate block at a time, the state update, the gate
derivatives, the mask rules), plus whole-sequence passes for the activation derivatives. Here
each step is one pass, with `tanh32`/`sigmoid32` (within 2 ulp of NumPy's, and vectorized), and
the derivatives `1 - y^2`, `y (1 - y)` are taken from the stored gates inside that pass.

The loops write exactly the tape the NumPy kernel writes (P, A, H, C, TC, RH; see train.py), so
its backward, `cache["steps"]` and `cache["step_grads"]` read them alike; the whole-sequence
weight-gradient products stay in train.py. Row-vector math in processing order k = 0..T-1;
`valid` is `(T, batch)` (True: the sample's step is real), read only when `use_mask`.

Imported only by `train.py` when `unrolled.kernels._numba.available()`; `import unrolled` never
imports Numba.
"""

from __future__ import annotations

import numba
import numpy as np

from unrolled.kernels._numba_loops import sigmoid32, tanh32

# error_model="numpy": a division by zero gives inf/nan as NumPy does, instead of a check that
# keeps LLVM from vectorizing the loops.
njit = numba.njit(cache=True, nogil=True, error_model="numpy")

F32 = np.float32
ONE = F32(1)


# ------------------------------------------------------------------ forward

@njit
def simple_forward(P, A, H, W, valid, use_mask):
    """P holds x_t U + b on entry; per step z = P[k] + h W (kept in P), h = tanh(z)."""
    T, B, U = P.shape
    hW = np.empty((B, U), dtype=np.float32)
    for k in range(T):
        np.dot(H[k], W, hW)                                         # h_{t-1} W  (batch, units)
        for b in range(B):
            for j in range(U):
                z = P[k, b, j] + hW[b, j]
                P[k, b, j] = z
                a = tanh32(z)
                A[k, b, j] = a
                H[k + 1, b, j] = a
            if use_mask and not valid[k, b]:
                for j in range(U):
                    H[k + 1, b, j] = H[k, b, j]


@njit
def lstm_forward(P, A, H, C, TC, W, valid, use_mask):
    """Gates [i|f|g|o]; c_t = f c_{t-1} + i g, h_t = o tanh(c_t)."""
    T, B, G = P.shape
    U = G // 4
    hW = np.empty((B, G), dtype=np.float32)
    for k in range(T):
        np.dot(H[k], W, hW)                                         # (batch, 4*units)
        for b in range(B):
            for j in range(G):
                P[k, b, j] += hW[b, j]
            for j in range(U):
                i = sigmoid32(P[k, b, j])
                f = sigmoid32(P[k, b, U + j])
                g = tanh32(P[k, b, 2 * U + j])
                o = sigmoid32(P[k, b, 3 * U + j])
                A[k, b, j] = i
                A[k, b, U + j] = f
                A[k, b, 2 * U + j] = g
                A[k, b, 3 * U + j] = o
                c = f * C[k, b, j] + i * g
                C[k + 1, b, j] = c
                tc = tanh32(c)
                TC[k, b, j] = tc
                H[k + 1, b, j] = o * tc
            if use_mask and not valid[k, b]:
                for j in range(U):
                    H[k + 1, b, j] = H[k, b, j]
                    C[k + 1, b, j] = C[k, b, j]


@njit
def gru_forward(P, A, H, RH, W, b_rec, valid, use_mask, reset_after):
    """Gates [z|r|hh]; h_t = z h_{t-1} + (1 - z) hh. P holds x_t U + b_in on entry.

    reset_after: hh = tanh(P_h + r (h W_h + b_rec_h)), RH = h W_h + b_rec_h;
    else:        hh = tanh(P_h + (r h) W_h),          RH = r h."""
    T, B, G = P.shape
    U = G // 3
    if reset_after:
        R = np.empty((B, G), dtype=np.float32)                      # h W + b_rec
        W_zr = W[:1]                                                # unused
        W_h = W[:1]
        rhW = np.empty((1, 1), dtype=np.float32)
    else:
        R = np.empty((B, 2 * U), dtype=np.float32)                  # h W_zr
        W_zr = np.ascontiguousarray(W[:, :2 * U])
        W_h = np.ascontiguousarray(W[:, 2 * U:])
        rhW = np.empty((B, U), dtype=np.float32)                    # (r h) W_h
    for k in range(T):
        if reset_after:
            np.dot(H[k], W, R)
            for b in range(B):
                for j in range(G):
                    R[b, j] += b_rec[j]
                for j in range(2 * U):
                    p = P[k, b, j] + R[b, j]
                    P[k, b, j] = p
                    A[k, b, j] = sigmoid32(p)
                for j in range(U):
                    rh = R[b, 2 * U + j]
                    RH[k, b, j] = rh
                    p = P[k, b, 2 * U + j] + A[k, b, U + j] * rh
                    P[k, b, 2 * U + j] = p
                    hh = tanh32(p)
                    A[k, b, 2 * U + j] = hh
                    z = A[k, b, j]
                    H[k + 1, b, j] = z * H[k, b, j] + (ONE - z) * hh
        else:
            np.dot(H[k], W_zr, R)
            for b in range(B):
                for j in range(2 * U):
                    p = P[k, b, j] + R[b, j]
                    P[k, b, j] = p
                    A[k, b, j] = sigmoid32(p)
                for j in range(U):
                    RH[k, b, j] = A[k, b, U + j] * H[k, b, j]
            np.dot(RH[k], W_h, rhW)
            for b in range(B):
                for j in range(U):
                    p = P[k, b, 2 * U + j] + rhW[b, j]
                    P[k, b, 2 * U + j] = p
                    hh = tanh32(p)
                    A[k, b, 2 * U + j] = hh
                    z = A[k, b, j]
                    H[k + 1, b, j] = z * H[k, b, j] + (ONE - z) * hh
        if use_mask:
            for b in range(B):
                if not valid[k, b]:
                    for j in range(U):
                        H[k + 1, b, j] = H[k, b, j]


# ------------------------------------------------------------------ backward
#
# The masked-step rule of RNN._backward (train._Rule): step k's cell sees
# dh = dH[k+1] + d_out[k] on real samples and 0 on masked ones; a masked sample passes
# dH[k] = dH[k+1] + d_out[k] (pass_total) or dH[k+1] to step k-1, and with `unroll` (outputs
# repeat the previous step's) adds d_out[k] to d_out[k-1].

@njit
def _dh(dH, d_out, dh, k, b, U, real):
    for j in range(U):
        dh[j] = (dH[k + 1, b, j] + d_out[k, b, j]) if real else F32(0)


@njit
def _carry(dH, d_out, valid, k, pass_total, unroll):
    B, U = dH.shape[1], dH.shape[2]
    for b in range(B):
        if not valid[k, b]:
            for j in range(U):
                dH[k, b, j] = (dH[k + 1, b, j] + d_out[k, b, j]) if pass_total else dH[k + 1, b, j]
            if unroll and k > 0:
                for j in range(U):
                    d_out[k - 1, b, j] += d_out[k, b, j]


@njit
def simple_backward(A, W_T, d_out, dH, dZ, valid, use_mask, pass_total, unroll):
    T, B, U = A.shape
    dh = np.empty(U, dtype=np.float32)
    for k in range(T - 1, -1, -1):
        for b in range(B):
            _dh(dH, d_out, dh, k, b, U, not use_mask or valid[k, b])
            for j in range(U):
                a = A[k, b, j]
                dZ[k, b, j] = dh[j] * (ONE - a * a)                 # dz = dh tanh'(z)
        np.dot(dZ[k], W_T, dH[k])                                   # dh_{t-1} = dz W^T
        if use_mask:
            _carry(dH, d_out, valid, k, pass_total, unroll)


@njit
def lstm_backward(A, C, TC, W_T, d_out, dH, dC, dZ, valid, use_mask, pass_total, unroll):
    T, B, G = A.shape
    U = G // 4
    dh = np.empty(U, dtype=np.float32)
    for k in range(T - 1, -1, -1):
        for b in range(B):
            real = not use_mask or valid[k, b]
            _dh(dH, d_out, dh, k, b, U, real)
            if real:
                for j in range(U):
                    i = A[k, b, j]
                    f = A[k, b, U + j]
                    g = A[k, b, 2 * U + j]
                    o = A[k, b, 3 * U + j]
                    tc = TC[k, b, j]
                    d = dh[j]
                    dc = d * o * (ONE - tc * tc) + dC[k + 1, b, j]
                    dZ[k, b, j] = dc * g * ((ONE - i) * i)          # di
                    dZ[k, b, U + j] = dc * C[k, b, j] * ((ONE - f) * f)   # df
                    dZ[k, b, 2 * U + j] = dc * i * (ONE - g * g)    # dg
                    dZ[k, b, 3 * U + j] = d * tc * ((ONE - o) * o)  # do
                    dC[k, b, j] = dc * f                            # dc_{t-1}
            else:
                for j in range(G):
                    dZ[k, b, j] = 0
                for j in range(U):
                    dC[k, b, j] = dC[k + 1, b, j]
        np.dot(dZ[k], W_T, dH[k])                                   # dh_{t-1} = dz W^T
        if use_mask:
            _carry(dH, d_out, valid, k, pass_total, unroll)


@njit
def gru_backward(A, H, RH, W, d_out, dH, dZx, dZh, valid, use_mask, pass_total, unroll,
                 reset_after):
    """dZx: gradients of the input-side pre-activations [z|r|a] (x_t U + b_in);
    dZh (reset_after): of h W + b_rec, whose candidate block is d_a r."""
    T, B, G = A.shape
    U = G // 3
    dh = np.empty(U, dtype=np.float32)
    dhz = np.empty((B, U), dtype=np.float32)                        # dh z
    if reset_after:
        W_T = np.ascontiguousarray(W.T)
        W_zr_T = W_T[:1]                                            # unused
        W_h_T = W_T[:1]
        zr = np.empty((1, 1), dtype=np.float32)
        da = np.empty((1, 1), dtype=np.float32)
        d_rh = np.empty((1, 1), dtype=np.float32)
    else:
        W_T = W[:1]                                                 # unused
        W_zr_T = np.ascontiguousarray(W[:, :2 * U].T)
        W_h_T = np.ascontiguousarray(W[:, 2 * U:].T)
        zr = np.empty((B, 2 * U), dtype=np.float32)                 # dz of z and r
        da = np.empty((B, U), dtype=np.float32)                     # d_a
        d_rh = np.empty((B, U), dtype=np.float32)                   # d (r h) = d_a W_h^T
    for k in range(T - 1, -1, -1):
        for b in range(B):
            _dh(dH, d_out, dh, k, b, U, not use_mask or valid[k, b])
            for j in range(U):
                z = A[k, b, j]
                hh = A[k, b, 2 * U + j]
                d = dh[j]
                dz = d * (H[k, b, j] - hh) * ((ONE - z) * z)
                d_a = d * (ONE - z) * (ONE - hh * hh)
                dZx[k, b, j] = dz
                dZx[k, b, 2 * U + j] = d_a
                dhz[b, j] = d * z
                if reset_after:
                    r = A[k, b, U + j]
                    dr = d_a * RH[k, b, j] * ((ONE - r) * r)
                    dZx[k, b, U + j] = dr
                    dZh[k, b, j] = dz
                    dZh[k, b, U + j] = dr
                    dZh[k, b, 2 * U + j] = d_a * r
                else:
                    zr[b, j] = dz
                    da[b, j] = d_a
        if reset_after:
            np.dot(dZh[k], W_T, dH[k])
        else:
            np.dot(da, W_h_T, d_rh)
            for b in range(B):
                for j in range(U):
                    r = A[k, b, U + j]
                    dr = d_rh[b, j] * H[k, b, j] * ((ONE - r) * r)
                    dZx[k, b, U + j] = dr
                    zr[b, U + j] = dr
            np.dot(zr, W_zr_T, dH[k])
            for b in range(B):
                for j in range(U):
                    dH[k, b, j] += d_rh[b, j] * A[k, b, U + j]      # + d(r h) r
        for b in range(B):
            for j in range(U):
                dH[k, b, j] += dhz[b, j]                            # + dh z
        if use_mask:
            _carry(dH, d_out, valid, k, pass_total, unroll)
