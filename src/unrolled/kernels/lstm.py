"""LSTMCell over a whole sequence, the four gates fused (Keras's order i, f, c, o)."""

from __future__ import annotations

import numpy as np

from unrolled import activations
from unrolled.kernels import _outputs
from unrolled.kernels._activations import elementwise, in_place
from unrolled.kernels._plan import Steps, projections

__all__ = ["lstm"]


def lstm(cell, xt: np.ndarray, states: list, steps: Steps, need_seq: bool
         ) -> tuple[np.ndarray | None, list]:
    """Run `cell` (an LSTMCell) over the time-major input `xt`.

    Per step, with `G = x_t U + b + h_{t-1} W`, `(batch, 4*units)`, split into [i|f|c|o]::

        i, f, o = sigma(G_i), sigma(G_f), sigma(G_o)      g = act(G_c)
        c_t = f * c_{t-1} + i * g                          h_t = o * act(c_t)

    Args and returns as `simple_rnn`, with `states = [h_0, c_0]` and final `[h_T, c_T]`.
    """
    T, B = xt.shape[:2]
    U = cell.units
    dtype = xt.dtype
    recurrent = cell.recurrent_kernel
    act, gate = in_place(cell.activation), in_place(cell.recurrent_activation)
    tanh_out = cell.activation is activations.tanh
    joint = elementwise(cell.recurrent_activation)  # i and f in one call
    inv, masked = steps.inv, steps.masked
    h, c = states[0], states[1]                                     # (batch, units) each
    hW = np.empty((B, 4 * U), dtype=dtype)                          # h_{t-1} W
    c_bufs = (np.empty((B, U), dtype=dtype), np.empty((B, U), dtype=dtype))
    seq = _outputs.empty((T, B, U), dtype) if need_seq else None
    h_bufs = None if need_seq else (np.empty((B, U), dtype=dtype), np.empty((B, U), dtype=dtype))
    with np.errstate(over="ignore"):
        for start, stop, P in projections(xt, cell.kernel, cell.bias):
            for k in range(start, stop):
                G = P[k - start]                                    # x_t U + b  (batch, 4*units)
                np.matmul(h, recurrent, out=hW)
                G += hW                                             # + h_{t-1} W
                i, f, g, o = G[:, :U], G[:, U:2 * U], G[:, 2 * U:3 * U], G[:, 3 * U:]
                if joint:
                    gate(G[:, :2 * U])                              # i, f
                else:
                    gate(i)
                    gate(f)
                act(g)                                              # g
                gate(o)                                             # o
                c_new = c_bufs[k & 1]
                np.multiply(f, c, out=c_new)                        # f * c_{t-1}
                i *= g                                              # i * g
                c_new += i                                          # c_t
                h_new = seq[k] if h_bufs is None else h_bufs[k & 1]
                if tanh_out:
                    np.tanh(c_new, out=h_new)
                else:
                    np.copyto(h_new, c_new)
                    act(h_new)
                h_new *= o                                          # h_t = o * act(c_t)
                if masked is not None and masked[k]:
                    np.copyto(c_new, c, where=inv[k])               # masked: keep the states
                    np.copyto(h_new, h, where=inv[k])
                h, c = h_new, c_new
    return seq, [h, c]
