"""LSTMCell and LSTM: long short-term memory (Hochreiter and Schmidhuber, 1997), as Keras 3 computes it."""

from __future__ import annotations

from typing import Any

import numpy as np

from unrolled.layers._builtin import (
    BuiltinRNN, GatedCell, blocks_matmul, dropped, own_arguments,
)

__all__ = ["LSTMCell", "LSTM"]


class LSTMCell(GatedCell):
    """One step of a long short-term memory network.

    .. math::

        z   &= x_t U + h_{t-1} W + b = [z_i | z_f | z_c | z_o] \\\\
        i   &= \\sigma(z_i), \\quad f = \\sigma(z_f), \\quad o = \\sigma(z_o), \\quad
        g = \\mathrm{act}(z_c) \\\\
        c_t &= f \\odot c_{t-1} + i \\odot g \\\\
        h_t &= o \\odot \\mathrm{act}(c_t)

    where:
        x_t      (batch, features)     the input at step t
        h_{t-1}  (batch, units)        the previous output (the "hidden" state)
        c_{t-1}  (batch, units)        the previous carry (the "cell" state)
        U        (features, 4*units)   `kernel`, four blocks side by side: [i | f | c | o]
        W        (units, 4*units)      `recurrent_kernel`, the same four blocks
        b        (4*units,)            `bias`, the same four blocks
        z        (batch, 4*units)      the pre-activations of the four gates
        i, f, o  (batch, units)        input, forget and output gates
        g        (batch, units)        the candidate carry
        sigma                          `recurrent_activation`, sigmoid by default
        act                            `activation`, tanh by default; used twice (on z_c and c_t)

    Keras multiplies row vectors by weights on the right (`x_t U`); the textbook's column form uses
    the transposed blocks. PyTorch's `nn.LSTM` has the same gate order: `U = W_ih.T`,
    `W = W_hh.T`, `b = b_ih + b_hh`.

    Args:
        units: positive integer, the size of h, c and the output.
        activation: for the candidate and the output, default "tanh". None means linear.
        recurrent_activation: for the gates i, f, o, default "sigmoid".
        use_bias: whether to add `b`. Default True.
        kernel_initializer: for `U`; default "glorot_uniform" (fans of the whole (F, 4u) matrix).
        recurrent_initializer: for `W`; default "orthogonal" (its rows are orthonormal).
        bias_initializer: for `b`; default "zeros".
        unit_forget_bias: if True (default), `b` starts as
            `concat(bias_initializer(u), ones(u), bias_initializer(2u))`: a forget gate near 1.
        kernel_regularizer, recurrent_regularizer, bias_regularizer, kernel_constraint,
            recurrent_constraint, bias_constraint: accepted as in Keras; they act only in training.
        dropout: fraction of the inputs `x_t` to drop in training; default 0.
        recurrent_dropout: fraction of `h_{t-1}` to drop before `W` in training (c is never
            dropped); default 0. As in Keras it switches to one mask per gate.
        seed: seed for the dropout masks.
        name, dtype, trainable: as for every layer.

    Call arguments:
        inputs: `(batch, features)`, one timestep (also accepted as `sequence=`).
        states: `[h_{t-1}, c_{t-1}]`, two `(batch, units)` arrays in a list or tuple.
        training: apply dropout. Default False.

    Returns:
        `(h_t, [h_t, c_t])`.

    Example:
        >>> import numpy as np
        >>> from unrolled import layers
        >>> cell = layers.LSTMCell(4)
        >>> x_1 = np.ones((2, 3), dtype="float32")             # (batch, features)
        >>> h_1, (h, c) = cell(x_1, cell.get_initial_state(2))  # states [h_0, c_0] = zeros
        >>> h_1.shape, c.shape, cell.U.shape, cell.W.shape, cell.b.shape
        ((2, 4), (2, 4), (3, 16), (4, 16), (16,))
        >>> cell.b[4:8]                                         # the forget block starts at 1
        array([1., 1., 1., 1.], dtype=float32)
    """

    state_names = ["h", "c"]
    gate_names = ("i", "f", "c", "o")
    _blocks = 4

    def __init__(self, units: int, activation: Any = "tanh", recurrent_activation: Any = "sigmoid",
                 use_bias: bool = True, kernel_initializer: Any = "glorot_uniform",
                 recurrent_initializer: Any = "orthogonal", bias_initializer: Any = "zeros",
                 unit_forget_bias: bool = True, kernel_regularizer: Any = None,
                 recurrent_regularizer: Any = None, bias_regularizer: Any = None,
                 kernel_constraint: Any = None, recurrent_constraint: Any = None,
                 bias_constraint: Any = None, dropout: float = 0.0,
                 recurrent_dropout: float = 0.0, seed: int | None = None, **kwargs: Any):
        arguments = own_arguments(locals())
        unit_forget_bias = arguments.pop("unit_forget_bias")
        super().__init__(**arguments, **kwargs)
        self.unit_forget_bias = bool(unit_forget_bias)
        self.state_size = [self.units, self.units]

    def _bias_initializer(self) -> Any:
        if not self.unit_forget_bias:
            return self.bias_initializer
        units, init = self.units, self.bias_initializer

        def forget_ones(shape: tuple, dtype: Any = None) -> np.ndarray:
            # Keras calls the bias initializer twice, for the i block and for the c, o blocks; a
            # seeded initializer therefore starts both draws from the same seed.
            return np.concatenate([np.asarray(init((units,), dtype=dtype)),
                                   np.ones((units,), dtype=dtype),
                                   np.asarray(init((2 * units,), dtype=dtype))])

        return forget_ones

    def call(self, inputs: np.ndarray, states: Any, training: bool = False
             ) -> tuple[np.ndarray, list]:
        h_prev, c_prev = states[0], states[1]                               # (batch, units) each
        input_masks, state_masks = self._step_masks(inputs, h_prev, training)
        xU = blocks_matmul(dropped(inputs, input_masks, 4), self.kernel)   # (batch, 4*units)
        hW = blocks_matmul(dropped(h_prev, state_masks, 4), self.recurrent_kernel)
        z = xU + hW                                                         # (batch, 4*units)
        if self.bias is not None:
            z = z + self.bias
        z_i, z_f, z_c, z_o = np.split(z, 4, axis=-1)                        # (batch, units) each
        i = self.recurrent_activation(z_i)                                  # input gate
        f = self.recurrent_activation(z_f)                                  # forget gate
        g = self.activation(z_c)                                            # candidate
        c = f * c_prev + i * g                                              # new carry
        o = self.recurrent_activation(z_o)                                  # output gate
        h = o * self.activation(c)                                          # (batch, units)
        if self._recorder is not None:
            self._record(x_t=inputs, h_prev=h_prev, c_prev=c_prev, xU=xU, hW=hW, b=self.bias,
                         z=z, i=i, f=f, g=g, o=o, c=c, h=h)
        return h, [h, c]

    # ---------------------------------------------------------------- backward (training)

    def backward_step(self, cache: dict, d_output: np.ndarray, d_new_states: list,
                      grads: Any) -> tuple[np.ndarray, list]:
        """One LSTM step backwards. With dh reaching h_t and dc reaching c_t from step t+1::

            do   = dh * act(c)                         dc  += dh * o * act'(c)
            di   = dc * g      df = dc * c_{t-1}       dg   = dc * i
            dz   = [di * rec'(z_i), df * rec'(z_f), dg * act'(z_c), do * rec'(z_o)]  (batch, 4*units)
            dU  += x_t^T dz    dW += h_{t-1}^T dz      db  += sum over batch of dz
            dx_t = dz U^T      dh_{t-1} = dz W^T       dc_{t-1} = dc * f

        (with dropout, each gate block's input is multiplied by its mask, and so is its gradient).
        """
        from unrolled.layers._builtin import blocks_matmul_backward
        from unrolled.training.derivatives import activation_vjp as vjp

        i, f, g, o, c = cache["i"], cache["f"], cache["g"], cache["o"], cache["c"]
        z_i, z_f, z_c, z_o = np.split(cache["z"], 4, axis=-1)             # (batch, units) each
        dh = d_output + d_new_states[0]                                     # (batch, units)
        tanh_c = self.activation(c)
        do = dh * tanh_c
        dc = d_new_states[1] + vjp(self.activation, c, tanh_c, dh * o)      # (batch, units)
        dz = np.concatenate([
            vjp(self.recurrent_activation, z_i, i, dc * g),                 # input gate
            vjp(self.recurrent_activation, z_f, f, dc * cache["c_prev"]),   # forget gate
            vjp(self.activation, z_c, g, dc * i),                           # candidate
            vjp(self.recurrent_activation, z_o, o, do),                     # output gate
        ], axis=-1)                                                         # (batch, 4*units)
        if self.bias is not None:
            grads.add(self, "bias", dz.sum(axis=0))                         # (4*units,)
        d_kernel, dx = blocks_matmul_backward(cache["x_t"], cache["input_mask"], self.kernel, dz)
        d_rec, dh_prev = blocks_matmul_backward(cache["h_prev"], cache["state_mask"],
                                                self.recurrent_kernel, dz)
        grads.add(self, "kernel", d_kernel)                                 # (features, 4*units)
        grads.add(self, "recurrent_kernel", d_rec)                          # (units, 4*units)
        return dx, [dh_prev, dc * f]

    def get_config(self) -> dict:
        config = super().get_config()
        config["unit_forget_bias"] = self.unit_forget_bias
        return config


class LSTM(BuiltinRNN):
    """Long short-term memory layer: `LSTMCell` run over every timestep.

    For t = 1..T, starting from h_0 = c_0 = 0 (or `initial_state`)::

        z = x_t U + h_{t-1} W + b;   i, f, o = sigma(z_i), sigma(z_f), sigma(z_o);   g = act(z_c)
        c_t = f * c_{t-1} + i * g;   h_t = o * act(c_t)

    where:
        x        (batch, timesteps, features)   the input; x_t = x[:, t]
        U        (features, 4*units)             `kernel`, blocks [i | f | c | o]
        W        (units, 4*units)                `recurrent_kernel`
        b        (4*units,)                      `bias`
        h_t, c_t (batch, units)                  output and carry after step t

    Args:
        units, activation, recurrent_activation, use_bias, *_initializer, unit_forget_bias,
            *_regularizer, *_constraint, dropout, recurrent_dropout, seed: as for `LSTMCell`.
        activity_regularizer: accepted as in Keras; acts only in training.
        return_sequences, return_state, go_backwards, stateful, unroll: as for `RNN`.
        use_cudnn: "auto", True or False; accepted for Keras compatibility (there is no cuDNN
            here: the NumPy computation gives the numbers Keras's CPU path gives).
        name, dtype, trainable: as for every layer.

    Call arguments:
        sequences: `(batch, timesteps, features)`.
        initial_state: `[h_0, c_0]`, two `(batch, units)` arrays. Default zeros.
        mask: `(batch, timesteps)`, True where a step is real.
        training: apply dropout. Default False.

    Returns:
        `(batch, units)`, or `(batch, timesteps, units)` with `return_sequences`; with
        `return_state` the tuple `(output, h_T, c_T)`.

    Example:
        >>> import numpy as np
        >>> from unrolled import layers
        >>> x = np.ones((32, 10, 8), dtype="float32")      # (batch, timesteps, features)
        >>> lstm = layers.LSTM(4, return_sequences=True, return_state=True)
        >>> whole_sequence, h, c = lstm(x)
        >>> whole_sequence.shape, h.shape, c.shape         # (32, 10, units), (32, units) twice
        ((32, 10, 4), (32, 4), (32, 4))
        >>> [w.shape for w in lstm.get_weights()]           # U, W, b
        [(8, 16), (4, 16), (16,)]
    """

    _cell_class = LSTMCell
    _cell_args = (
        "units", "activation", "recurrent_activation", "use_bias", "kernel_initializer",
        "recurrent_initializer", "bias_initializer", "unit_forget_bias", "kernel_regularizer",
        "recurrent_regularizer", "bias_regularizer", "kernel_constraint", "recurrent_constraint",
        "bias_constraint", "dropout", "recurrent_dropout",
    )

    def __init__(self, units: int, activation: Any = "tanh", recurrent_activation: Any = "sigmoid",
                 use_bias: bool = True, kernel_initializer: Any = "glorot_uniform",
                 recurrent_initializer: Any = "orthogonal", bias_initializer: Any = "zeros",
                 unit_forget_bias: bool = True, kernel_regularizer: Any = None,
                 recurrent_regularizer: Any = None, bias_regularizer: Any = None,
                 activity_regularizer: Any = None, kernel_constraint: Any = None,
                 recurrent_constraint: Any = None, bias_constraint: Any = None,
                 dropout: float = 0.0, recurrent_dropout: float = 0.0, seed: int | None = None,
                 return_sequences: bool = False, return_state: bool = False,
                 go_backwards: bool = False, stateful: bool = False, unroll: bool = False,
                 use_cudnn: Any = "auto", **kwargs: Any):
        super().__init__(**own_arguments(locals()), **kwargs)
