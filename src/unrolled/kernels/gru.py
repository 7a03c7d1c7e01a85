"""GRUCell over a whole sequence, gates fused (Keras's order z, r, h), both reset_after forms."""

from __future__ import annotations

import numpy as np

from unrolled.kernels import _outputs
from unrolled.kernels._activations import elementwise, in_place
from unrolled.kernels._plan import Steps, projections

__all__ = ["gru"]


def gru(cell, xt: np.ndarray, states: list, steps: Steps, need_seq: bool
        ) -> tuple[np.ndarray | None, list]:
    """Run `cell` (a GRUCell) over the time-major input `xt`.

    Per step, with `X = x_t U + b_in` `(batch, 3*units)` split into [z|r|h]::

        reset_after=True  (b_rec is the bias's second row; R = h_{t-1} W + b_rec):
            z = sigma(X_z + R_z)   r = sigma(X_r + R_r)   hh = act(X_h + r * R_h)
        reset_after=False:
            z = sigma(X_z + h_{t-1} W_z)   r = sigma(X_r + h_{t-1} W_r)
            hh = act(X_h + (r * h_{t-1}) W_h)
        h_t = z * h_{t-1} + (1 - z) * hh

    Args and returns as `simple_rnn` (`states = [h_0]`).
    """
    T, B = xt.shape[:2]
    U = cell.units
    dtype = xt.dtype
    W = cell.recurrent_kernel
    act, gate = in_place(cell.activation), in_place(cell.recurrent_activation)
    if not elementwise(cell.recurrent_activation):  # z and r one at a time
        one_gate = gate

        def gate(zr: np.ndarray) -> None:
            one_gate(zr[:, :U])
            one_gate(zr[:, U:])
    inv, masked = steps.inv, steps.masked
    bias = cell.bias
    reset_after = cell.reset_after
    b_in, b_rec = (None, None) if bias is None else (
        (bias[0], bias[1]) if reset_after else (bias, None))
    h = states[0]                                                   # (batch, units)
    if reset_after:
        R = np.empty((B, 3 * U), dtype=dtype)                       # h_{t-1} W + b_rec
    else:
        W_zr, W_h = W[:, :2 * U], W[:, 2 * U:]
        R = np.empty((B, 2 * U), dtype=dtype)                       # h_{t-1} W_zr
        rh = np.empty((B, U), dtype=dtype)                          # r * h_{t-1}
        rhW = np.empty((B, U), dtype=dtype)                         # (r * h_{t-1}) W_h
    seq = _outputs.empty((T, B, U), dtype) if need_seq else None
    h_bufs = None if need_seq else (np.empty((B, U), dtype=dtype), np.empty((B, U), dtype=dtype))
    with np.errstate(over="ignore"):
        for start, stop, P in projections(xt, cell.kernel, b_in):
            for k in range(start, stop):
                X = P[k - start]                                    # x_t U + b_in  (batch, 3*units)
                zr, x_h = X[:, :2 * U], X[:, 2 * U:]
                if reset_after:
                    np.matmul(h, W, out=R)
                    if b_rec is not None:
                        R += b_rec
                    zr += R[:, :2 * U]
                    gate(zr)                                        # z, r
                    r_h = R[:, 2 * U:]
                    r_h *= zr[:, U:]                                # r * R_h
                    x_h += r_h
                else:
                    np.matmul(h, W_zr, out=R)
                    zr += R
                    gate(zr)                                        # z, r
                    np.multiply(zr[:, U:], h, out=rh)               # r * h_{t-1}
                    np.matmul(rh, W_h, out=rhW)
                    x_h += rhW
                act(x_h)                                            # hh
                z = zr[:, :U]
                h_new = seq[k] if h_bufs is None else h_bufs[k & 1]
                np.multiply(z, h, out=h_new)                        # z * h_{t-1}
                np.subtract(1, z, out=z)                            # 1 - z
                z *= x_h                                            # (1 - z) * hh
                h_new += z                                          # h_t
                if masked is not None and masked[k]:
                    np.copyto(h_new, h, where=inv[k])               # masked: keep h_{t-1}
                h = h_new
    return seq, [h]
