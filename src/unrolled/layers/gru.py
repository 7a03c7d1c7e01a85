"""GRUCell and GRU: the gated recurrent unit (Cho et al., 2014), as Keras 3 computes it."""

from __future__ import annotations

from typing import Any

import numpy as np

from unrolled.layers._builtin import (
    BuiltinRNN, GatedCell, blocks_matmul, dropped, own_arguments,
)

__all__ = ["GRUCell", "GRU"]


class GRUCell(GatedCell):
    """One step of a gated recurrent unit.

    With `reset_after=True` (the default, cuDNN's form; `b` holds an input row and a recurrent row):

    .. math::

        [x_z | x_r | x_h] &= x_t U + b_{in}, \\quad [r_z | r_r | r_h] = h_{t-1} W + b_{rec} \\\\
        z &= \\sigma(x_z + r_z), \\quad r = \\sigma(x_r + r_r) \\\\
        \\tilde h &= \\mathrm{act}(x_h + r \\odot r_h) \\\\
        h_t &= z \\odot h_{t-1} + (1 - z) \\odot \\tilde h

    With `reset_after=False` (the original form; `b` is an input bias only), the reset gate acts
    before the recurrent product: `h~ = act(x_h + (r * h_{t-1}) W_h)`.

    where:
        x_t      (batch, features)      the input at step t
        h_{t-1}  (batch, units)         the previous state (also the previous output)
        U        (features, 3*units)    `kernel`, three blocks side by side: [z | r | h]
        W        (units, 3*units)       `recurrent_kernel`, the same three blocks
        b        (2, 3*units)           `bias` with reset_after: rows b_in, b_rec;
                 (3*units,)             without: b_in only
        z, r     (batch, units)         update and reset gates
        h~       (batch, units)         the candidate state
        sigma                           `recurrent_activation`, sigmoid by default
        act                             `activation`, tanh by default

    Note that `z` keeps the *old* state: `h_t = z h_{t-1} + (1 - z) h~` (PyTorch's convention too;
    PyTorch orders its blocks r, z, n).

    Args:
        units: positive integer, the size of the state and of the output.
        activation: for the candidate, default "tanh". None means linear.
        recurrent_activation: for the gates z and r, default "sigmoid".
        use_bias, kernel_initializer, recurrent_initializer, bias_initializer, *_regularizer,
            *_constraint, dropout, recurrent_dropout, seed: as for `LSTMCell`.
        reset_after: apply the reset gate after the recurrent product (default True) or before.
        name, dtype, trainable: as for every layer.

    Call arguments:
        inputs: `(batch, features)`, one timestep (also accepted as `sequence=`).
        states: `h_{t-1}`, `(batch, units)`, bare or in a list/tuple of one.
        training: apply dropout. Default False.

    Returns:
        `(h_t, new_states)`: `new_states` is `h_t` bare if `states` was bare, else `[h_t]`.

    Example:
        >>> import numpy as np
        >>> from unrolled import layers
        >>> cell = layers.GRUCell(4)
        >>> x_1 = np.ones((2, 3), dtype="float32")       # (batch, features)
        >>> h_1, states = cell(x_1, [np.zeros((2, 4), dtype="float32")])
        >>> h_1.shape, len(states), cell.U.shape, cell.W.shape, cell.b.shape
        ((2, 4), 1, (3, 12), (4, 12), (2, 12))
    """

    state_names = ["h"]
    gate_names = ("z", "r", "h")
    _blocks = 3

    def __init__(self, units: int, activation: Any = "tanh", recurrent_activation: Any = "sigmoid",
                 use_bias: bool = True, kernel_initializer: Any = "glorot_uniform",
                 recurrent_initializer: Any = "orthogonal", bias_initializer: Any = "zeros",
                 kernel_regularizer: Any = None, recurrent_regularizer: Any = None,
                 bias_regularizer: Any = None, kernel_constraint: Any = None,
                 recurrent_constraint: Any = None, bias_constraint: Any = None,
                 dropout: float = 0.0, recurrent_dropout: float = 0.0, reset_after: bool = True,
                 seed: int | None = None, **kwargs: Any):
        arguments = own_arguments(locals())
        reset_after = arguments.pop("reset_after")
        super().__init__(**arguments, **kwargs)
        self.reset_after = bool(reset_after)

    def _bias_shape(self) -> tuple:
        width = 3 * self.units
        return (2, width) if self.reset_after else (width,)

    def call(self, inputs: np.ndarray, states: Any, training: bool = False
             ) -> tuple[np.ndarray, Any]:
        nested = isinstance(states, (list, tuple))
        h_prev = states[0] if nested else states                            # (batch, units)
        u = self.units
        input_masks, state_masks = self._step_masks(inputs, h_prev, training)
        b_in, b_rec = (None, None) if self.bias is None else (
            (self.bias[0], self.bias[1]) if self.reset_after else (self.bias, None))
        xU = blocks_matmul(dropped(inputs, input_masks, 3), self.kernel)   # (batch, 3*units)
        if b_in is not None:
            xU = xU + b_in
        x_z, x_r, x_h = np.split(xU, 3, axis=-1)                            # (batch, units) each
        h_z, h_r, h_h = dropped(h_prev, state_masks, 3)
        W = self.recurrent_kernel
        if self.reset_after:
            hW = blocks_matmul([h_z, h_r, h_h], W)                          # (batch, 3*units)
            if b_rec is not None:
                hW = hW + b_rec
            r_z, r_r, r_h = np.split(hW, 3, axis=-1)
            z = self.recurrent_activation(x_z + r_z)                        # update gate
            r = self.recurrent_activation(x_r + r_r)                        # reset gate
            hh = self.activation(x_h + r * r_h)                             # candidate
        else:
            r_zr = blocks_matmul([h_z, h_r], W[:, :2 * u])                  # (batch, 2*units)
            z = self.recurrent_activation(x_z + r_zr[:, :u])                # update gate
            r = self.recurrent_activation(x_r + r_zr[:, u:])                # reset gate
            hh = self.activation(x_h + (r * h_h) @ W[:, 2 * u:])            # candidate
        h = z * h_prev + (1 - z) * hh                                       # (batch, units)
        if self._recorder is not None:
            self._record(x_t=inputs, h_prev=h_prev, xU=xU, z=z, r=r, hh=hh, h=h)
        return h, ([h] if nested else h)

    # ---------------------------------------------------------------- backward (training)

    def backward_step(self, cache: dict, d_output: np.ndarray, d_new_states: list,
                      grads: Any) -> tuple[np.ndarray, list]:
        """One GRU step backwards. With dh reaching h_t = z h_{t-1} + (1 - z) hh::

            dz = dh * (h_{t-1} - hh)     dhh = dh * (1 - z)     dh_{t-1} = dh * z + ...
            da = dhh * act'(a)           a = x_h + r * r_h  (reset_after)
                                         a = x_h + (r * h_{t-1}) W_h  (reset_before)
            dr = da * r_h  (or  (da W_h^T) * h_{t-1})
            then through the gates' pre-activations to U, W, b, x_t and h_{t-1}.

        The candidate's pre-activation is recomputed here from the recorded values (one matmul),
        since the forward records the gates but not `r_h`.
        """
        from unrolled.layers._builtin import block_mask, blocks_matmul_backward, dropped
        from unrolled.training.derivatives import activation_vjp as vjp

        u = self.units
        h_prev, xU, z, r, hh = (cache["h_prev"], cache["xU"], cache["z"], cache["r"],
                                cache["hh"])
        in_masks, st_masks = cache["input_mask"], cache["state_mask"]
        x_z, x_r, x_h = np.split(xU, 3, axis=-1)                            # (batch, units) each
        h_z, h_r, h_h = dropped(h_prev, st_masks, 3)
        W = self.recurrent_kernel
        dh = d_output + (d_new_states[0] if d_new_states else 0)           # (batch, units)
        d_z = dh * (h_prev - hh)
        d_hh = dh * (1 - z)
        dh_prev = dh * z                                                    # (batch, units)
        if self.reset_after:
            hW = blocks_matmul([h_z, h_r, h_h], W)                          # (batch, 3*units)
            if self.bias is not None:
                hW = hW + self.bias[1]
            r_h = hW[:, 2 * u:]
            d_a = vjp(self.activation, x_h + r * r_h, hh, d_hh)             # (batch, units)
            d_r = d_a * r_h
            d_rz = vjp(self.recurrent_activation, x_z + hW[:, :u], z, d_z)
            d_rr = vjp(self.recurrent_activation, x_r + hW[:, u:2 * u], r, d_r)
            d_xU = np.concatenate([d_rz, d_rr, d_a], axis=-1)               # (batch, 3*units)
            d_hW = np.concatenate([d_rz, d_rr, d_a * r], axis=-1)           # (batch, 3*units)
            d_rec, dh_w = blocks_matmul_backward(h_prev, st_masks, W, d_hW)
            if self.bias is not None:
                grads.add(self, "bias", np.stack([d_xU.sum(axis=0), d_hW.sum(axis=0)]))
        else:
            W_zr, W_h = W[:, :2 * u], W[:, 2 * u:]
            r_zr = blocks_matmul([h_z, h_r], W_zr)                          # (batch, 2*units)
            rh = r * h_h                                                    # (batch, units)
            d_a = vjp(self.activation, x_h + rh @ W_h, hh, d_hh)
            d_rh = d_a @ W_h.T
            d_rz = vjp(self.recurrent_activation, x_z + r_zr[:, :u], z, d_z)
            d_rr = vjp(self.recurrent_activation, x_r + r_zr[:, u:], r, d_rh * h_h)
            d_xU = np.concatenate([d_rz, d_rr, d_a], axis=-1)               # (batch, 3*units)
            zr_masks = None if st_masks is None else (
                [block_mask(st_masks, 0), block_mask(st_masks, 1)]
                if isinstance(st_masks, (list, tuple)) else st_masks)
            d_w_zr, dh_w = blocks_matmul_backward(h_prev, zr_masks, W_zr,
                                                  np.concatenate([d_rz, d_rr], axis=-1))
            m_h = block_mask(st_masks, 2)
            dh_w = dh_w + (d_rh * r if m_h is None else d_rh * r * m_h)
            d_rec = np.concatenate([d_w_zr, rh.T @ d_a], axis=1)            # (units, 3*units)
            if self.bias is not None:
                grads.add(self, "bias", d_xU.sum(axis=0))                   # (3*units,)
        d_kernel, dx = blocks_matmul_backward(cache["x_t"], in_masks, self.kernel, d_xU)
        grads.add(self, "kernel", d_kernel)                                 # (features, 3*units)
        grads.add(self, "recurrent_kernel", d_rec)                          # (units, 3*units)
        return dx, [dh_prev + dh_w]

    def get_config(self) -> dict:
        config = super().get_config()
        config["reset_after"] = self.reset_after
        return config

    def _repr_fields(self) -> list[str]:
        fields = super()._repr_fields()
        if not self.reset_after:
            fields.append("reset_after=False")
        return fields


class GRU(BuiltinRNN):
    """Gated recurrent unit layer: `GRUCell` run over every timestep.

    For t = 1..T, starting from h_0 = 0 (or `initial_state`), with reset_after=True::

        [x_z|x_r|x_h] = x_t U + b[0];   [r_z|r_r|r_h] = h_{t-1} W + b[1]
        z = sigma(x_z + r_z);   r = sigma(x_r + r_r);   h~ = act(x_h + r * r_h)
        h_t = z * h_{t-1} + (1 - z) * h~

    where:
        x        (batch, timesteps, features)   the input; x_t = x[:, t]
        U        (features, 3*units)             `kernel`, blocks [z | r | h]
        W        (units, 3*units)                `recurrent_kernel`
        b        (2, 3*units)                    `bias` (input row, recurrent row); (3*units,)
                                                 with reset_after=False
        h_t      (batch, units)                  the state after step t, also its output

    Args:
        units, activation, recurrent_activation, use_bias, *_initializer, *_regularizer,
            *_constraint, dropout, recurrent_dropout, reset_after, seed: as for `GRUCell`.
        activity_regularizer: accepted as in Keras; acts only in training.
        return_sequences, return_state, go_backwards, stateful, unroll: as for `RNN`.
        use_cudnn: "auto", True or False; accepted for Keras compatibility (there is no cuDNN
            here).
        name, dtype, trainable: as for every layer.

    Call arguments:
        sequences: `(batch, timesteps, features)`.
        initial_state: `h_0`, `(batch, units)`, bare or in a list. Default zeros.
        mask: `(batch, timesteps)`, True where a step is real.
        training: apply dropout. Default False.

    Returns:
        `(batch, units)`, or `(batch, timesteps, units)` with `return_sequences`; with
        `return_state` the tuple `(output, h_T)`.

    Example:
        >>> import numpy as np
        >>> from unrolled import layers
        >>> x = np.ones((32, 10, 8), dtype="float32")      # (batch, timesteps, features)
        >>> gru = layers.GRU(4, return_sequences=True, return_state=True)
        >>> whole_sequence, final_state = gru(x)
        >>> whole_sequence.shape, final_state.shape         # (32, 10, units), (32, units)
        ((32, 10, 4), (32, 4))
        >>> [w.shape for w in gru.get_weights()]            # U, W, b (input row, recurrent row)
        [(8, 12), (4, 12), (2, 12)]
    """

    _cell_class = GRUCell
    _cell_args = (
        "units", "activation", "recurrent_activation", "use_bias", "kernel_initializer",
        "recurrent_initializer", "bias_initializer", "kernel_regularizer",
        "recurrent_regularizer", "bias_regularizer", "kernel_constraint", "recurrent_constraint",
        "bias_constraint", "dropout", "recurrent_dropout", "reset_after",
    )

    def __init__(self, units: int, activation: Any = "tanh", recurrent_activation: Any = "sigmoid",
                 use_bias: bool = True, kernel_initializer: Any = "glorot_uniform",
                 recurrent_initializer: Any = "orthogonal", bias_initializer: Any = "zeros",
                 kernel_regularizer: Any = None, recurrent_regularizer: Any = None,
                 bias_regularizer: Any = None, activity_regularizer: Any = None,
                 kernel_constraint: Any = None, recurrent_constraint: Any = None,
                 bias_constraint: Any = None, dropout: float = 0.0,
                 recurrent_dropout: float = 0.0, seed: int | None = None,
                 return_sequences: bool = False, return_state: bool = False,
                 go_backwards: bool = False, stateful: bool = False, unroll: bool = False,
                 reset_after: bool = True, use_cudnn: Any = "auto", **kwargs: Any):
        super().__init__(**own_arguments(locals()), **kwargs)
