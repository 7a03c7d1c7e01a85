"""The compiled loops behind unrolled.kernels._numba; importing this module imports Numba.

Each loop computes, per sample and per step, what the NumPy kernels compute, term by term in
the same order (`x_t U`, then `+ b`, then `+ h_{t-1} W`, then the activations). The products
are loops whose innermost index runs along a weight row, so they vectorize without reordering
a sum; the sums' order may differ from BLAS's, which moves float32 results by about 1e-7.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from unrolled.kernels._numba import LINEAR, RELU, SIGMOID, TANH  # noqa: F401

njit = numba.njit(cache=True, nogil=True)


@numba.njit(cache=True, inline="always")
def act(v, code):
    if code == TANH:
        return math.tanh(v)
    if code == SIGMOID:
        return 1 / (1 + math.exp(-v)) if v >= 0 else math.exp(v) / (1 + math.exp(v))
    if code == RELU:
        return v if v > 0 else v * 0
    return v


@njit
def project(z, xt, k, b, kernel, bias):
    # z = x_t U, then + b: the NumPy kernels' order
    F = xt.shape[2]
    z[:] = 0
    for f in range(F):
        xv = xt[k, b, f]
        for j in range(z.shape[0]):
            z[j] += xv * kernel[f, j]
    for j in range(z.shape[0]):
        z[j] += bias[j]


@njit
def add_product(z, r, h, b, W):
    # z += h_b W (r: scratch for h_b W), with W's rows streamed: the inner loop over j vectorizes
    r[:] = 0
    for i in range(W.shape[0]):
        hv = h[b, i]
        for j in range(W.shape[1]):
            r[j] += hv * W[i, j]
    for j in range(z.shape[0]):
        z[j] += r[j]


@njit
def simple_rnn(xt, kernel, recurrent, bias, h0, mask, use_mask, code, seq, need_seq):
    T, B = xt.shape[0], xt.shape[1]
    U = recurrent.shape[0]
    h = h0.copy()
    new = np.empty_like(h)
    z = np.empty(U, dtype=h.dtype)
    r = np.empty(U, dtype=h.dtype)
    for k in range(T):
        for b in range(B):
            project(z, xt, k, b, kernel, bias)
            add_product(z, r, h, b, recurrent)
            keep = not use_mask or mask[k, b]
            for j in range(U):
                new[b, j] = act(z[j], code) if keep else h[b, j]
        h, new = new, h
        if need_seq:
            seq[k] = h
    return h


@njit
def lstm(xt, kernel, recurrent, bias, h0, c0, mask, use_mask, code, gate_code, seq,
         need_seq):
    T, B = xt.shape[0], xt.shape[1]
    U = recurrent.shape[0]
    h, c = h0.copy(), c0.copy()
    h_new, c_new = np.empty_like(h), np.empty_like(c)
    z = np.empty(4 * U, dtype=h.dtype)
    r = np.empty(4 * U, dtype=h.dtype)
    for k in range(T):
        for b in range(B):
            project(z, xt, k, b, kernel, bias)
            add_product(z, r, h, b, recurrent)
            keep = not use_mask or mask[k, b]
            for j in range(U):
                if keep:
                    i = act(z[j], gate_code)
                    f = act(z[U + j], gate_code)
                    g = act(z[2 * U + j], code)
                    o = act(z[3 * U + j], gate_code)
                    cv = f * c[b, j] + i * g
                    c_new[b, j] = cv
                    h_new[b, j] = o * act(cv, code)
                else:
                    c_new[b, j] = c[b, j]
                    h_new[b, j] = h[b, j]
        h, h_new = h_new, h
        c, c_new = c_new, c
        if need_seq:
            seq[k] = h
    return h, c


@njit
def gru(xt, kernel, recurrent, b_in, b_rec, h0, mask, use_mask, reset_after, code,
        gate_code, seq, need_seq):
    T, B = xt.shape[0], xt.shape[1]
    U = recurrent.shape[0]
    h = h0.copy()
    new = np.empty_like(h)
    x = np.empty(3 * U, dtype=h.dtype)
    R = np.empty(3 * U, dtype=h.dtype)
    r = np.empty(3 * U, dtype=h.dtype)
    rh = np.empty((1, U), dtype=h.dtype)
    rhW = np.empty(U, dtype=h.dtype)
    W_zr = recurrent[:, :2 * U]
    W_h = recurrent[:, 2 * U:]
    for k in range(T):
        for b in range(B):
            project(x, xt, k, b, kernel, b_in)
            keep = not use_mask or mask[k, b]
            if reset_after:
                R[:] = 0
                add_product(R, r, h, b, recurrent)
                for j in range(3 * U):
                    R[j] += b_rec[j]
                for j in range(2 * U):
                    x[j] = act(x[j] + R[j], gate_code)          # z, r
                for j in range(U):
                    x[2 * U + j] = act(x[2 * U + j] + x[U + j] * R[2 * U + j], code)
            else:
                zr = x[:2 * U]
                add_product(zr, r[:2 * U], h, b, W_zr)
                for j in range(2 * U):
                    x[j] = act(x[j], gate_code)                 # z, r
                for j in range(U):
                    rh[0, j] = x[U + j] * h[b, j]
                rhW[:] = 0
                add_product(rhW, r[:U], rh, 0, W_h)
                for j in range(U):
                    x[2 * U + j] = act(x[2 * U + j] + rhW[j], code)
            for j in range(U):
                zv = x[j]
                new[b, j] = (zv * h[b, j] + (1 - zv) * x[2 * U + j]) if keep else h[b, j]
        h, new = new, h
        if need_seq:
            seq[k] = h
    return h


LOOPS = {"simple_rnn": simple_rnn, "lstm": lstm, "gru": gru}
