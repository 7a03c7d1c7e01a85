"""SimpleRNNCell over a whole sequence: h_t = act(x_t U + b + h_{t-1} W), x U + b hoisted."""

from __future__ import annotations

import numpy as np

from unrolled.kernels import _outputs
from unrolled.kernels._activations import in_place
from unrolled.kernels._plan import Steps, projections

__all__ = ["simple_rnn"]


def simple_rnn(cell, xt: np.ndarray, states: list, steps: Steps, need_seq: bool
               ) -> tuple[np.ndarray | None, list]:
    """Run `cell` (a SimpleRNNCell) over the time-major input `xt`.

    Args:
        cell: the built SimpleRNNCell.
        xt: `(timesteps, batch, features)`, already in processing order (a view; reversed for
            go_backwards).
        states: `[h_0]`, `(batch, units)`; read, never written.
        steps: the mask in processing order (see `Steps`).
        need_seq: whether to return every step's h.

    Returns:
        `(seq, [h_T])`: `seq` is `(timesteps, batch, units)` with the carried h of every step
        (None unless `need_seq`); `h_T` the final state.
    """
    T, B = xt.shape[:2]
    U = cell.units
    recurrent = cell.recurrent_kernel
    act = in_place(cell.activation)
    h = states[0]                                                   # (batch, units)
    tmp = np.empty((B, U), dtype=xt.dtype)                          # h_{t-1} W
    inv, masked = steps.inv, steps.masked
    # With need_seq the projection x U + b is written straight into the output buffer and each
    # step overwrites its slot with h_t: no memory beyond the output itself.
    seq = _outputs.empty((T, B, U), xt.dtype) if need_seq else None
    for start, stop, P in projections(xt, cell.kernel, cell.bias, into=seq):
        for k in range(start, stop):
            z = P[k - start]                                        # x_t U + b  (batch, units)
            np.matmul(h, recurrent, out=tmp)                        # h_{t-1} W
            z += tmp                                                # pre-activation
            act(z)                                                  # h_t
            if masked is not None and masked[k]:
                np.copyto(z, h, where=inv[k])                       # masked: keep h_{t-1}
            h = z
        if seq is None and stop < T:
            h = h.copy()  # the next chunk's projection overwrites the buffer h lives in
    return seq, [h]
