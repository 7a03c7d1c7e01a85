"""SimpleRNNCell and SimpleRNN: the textbook recurrence h_t = act(x_t U + h_{t-1} W + b)."""

from __future__ import annotations

from typing import Any

import numpy as np

from unrolled.layers._builtin import BuiltinCell, BuiltinRNN, own_arguments

__all__ = ["SimpleRNNCell", "SimpleRNN"]


class SimpleRNNCell(BuiltinCell):
    """One step of a fully connected recurrent network.

    .. math:: h_t = \\mathrm{act}(x_t U + b + h_{t-1} W)

    where:
        x_t      (batch, features)   the input at step t
        h_{t-1}  (batch, units)      the previous state (also the previous output)
        U        (features, units)   `kernel`, the input weights
        W        (units, units)      `recurrent_kernel`, the state weights
        b        (units,)            `bias`
        act                          `activation`, tanh by default
        h_t      (batch, units)      the new state, which is also the output

    Keras multiplies row vectors by weights on the right (`x_t U`); the textbook's
    `h_t = act(W h_{t-1} + U x_t + b)` is the same equation with column vectors and transposed
    weights. The aliases `U`, `W` and `b` are the Keras-oriented arrays.

    Args:
        units: positive integer, the size of the state and of the output.
        activation: activation name or callable; default "tanh". None means linear.
        use_bias: whether to add `b`. Default True.
        kernel_initializer: for `U`; default "glorot_uniform".
        recurrent_initializer: for `W`; default "orthogonal".
        bias_initializer: for `b`; default "zeros".
        kernel_regularizer, recurrent_regularizer, bias_regularizer, kernel_constraint,
            recurrent_constraint, bias_constraint: accepted as in Keras; they act only in training.
        dropout: fraction of the inputs `x_t` to drop in training; default 0.
        recurrent_dropout: fraction of `h_{t-1}` to drop (before `W`) in training; default 0.
        seed: seed for the dropout masks.
        name, dtype, trainable: as for every layer.

    Call arguments:
        inputs: `(batch, features)`, one timestep (also accepted as `sequence=`).
        states: `h_{t-1}`, `(batch, units)`, bare or in a list/tuple of one.
        training: apply dropout. Default False.

    Returns:
        `(output, new_states)`: `output` is `h_t`, `(batch, units)`; `new_states` is `h_t` bare if
        `states` was bare, `[h_t]` if it was a list or tuple.

    Example:
        >>> import numpy as np
        >>> from unrolled import layers
        >>> cell = layers.SimpleRNNCell(4)
        >>> x_1 = np.ones((2, 3), dtype="float32")     # (batch, feature)
        >>> h_0 = (np.zeros((2, 4), dtype="float32"),)  # (batch, units), in a 1-tuple
        >>> output, states = cell(inputs=x_1, states=h_0)
        >>> output.shape, len(states), cell.U.shape, cell.W.shape, cell.b.shape
        ((2, 4), 1, (3, 4), (4, 4), (4,))
    """

    state_names = ["h"]

    def __init__(self, units: int, activation: Any = "tanh", use_bias: bool = True,
                 kernel_initializer: Any = "glorot_uniform",
                 recurrent_initializer: Any = "orthogonal", bias_initializer: Any = "zeros",
                 kernel_regularizer: Any = None, recurrent_regularizer: Any = None,
                 bias_regularizer: Any = None, kernel_constraint: Any = None,
                 recurrent_constraint: Any = None, bias_constraint: Any = None,
                 dropout: float = 0.0, recurrent_dropout: float = 0.0, seed: int | None = None,
                 **kwargs: Any):
        super().__init__(**own_arguments(locals()), **kwargs)

    def call(self, inputs: np.ndarray, states: Any, training: bool = False
             ) -> tuple[np.ndarray, Any]:
        h_prev = states[0] if isinstance(states, (list, tuple)) else states  # (batch, units)
        x = inputs                                                           # (batch, features)
        if training:
            input_mask = self.get_dropout_mask(x)
            state_mask = self.get_recurrent_dropout_mask(h_prev)
            if input_mask is not None:
                x = x * input_mask
            if state_mask is not None:
                h_prev = h_prev * state_mask
        xU = x @ self.kernel                                                 # x_t U  (batch, units)
        z = xU + self.bias if self.bias is not None else xU                  # + b
        hW = h_prev @ self.recurrent_kernel                                  # h_{t-1} W
        z = z + hW                                                           # pre-activation
        h = self.activation(z)                                               # (batch, units)
        if self._recorder is not None:
            self._record(x_t=x, h_prev=h_prev, xU=xU, hW=hW, b=self.bias, z=z, h=h)
        return h, ([h] if isinstance(states, (list, tuple)) else h)

    # ---------------------------------------------------------------- backward (training)

    def backward_step(self, cache: dict, d_output: np.ndarray, d_new_states: list,
                      grads: Any) -> tuple[np.ndarray, list]:
        """One step of backpropagation through time, the forward equation read backwards.

        With `dh` the gradient reaching h_t (from the output and from step t+1)::

            dz       = dh * act'(z)                 (batch, units)
            dU      += x_t^T dz                     (features, units)
            dW      += h_{t-1}^T dz                 (units, units)
            db      += sum over batch of dz         (units,)
            dx_t     = dz U^T  (* input dropout mask)        (batch, features)
            dh_{t-1} = dz W^T  (* recurrent dropout mask)    (batch, units)

        `cache` holds the values `call` recorded (x_t and h_prev after dropout, z, h) and the
        dropout masks it used. Returns `(dx_t, [dh_{t-1}])`, adding dU, dW, db to `grads`.
        """
        from unrolled.training.derivatives import activation_vjp

        dh = d_output + d_new_states[0]                                      # (batch, units)
        dz = activation_vjp(self.activation, cache["z"], cache["h"], dh)     # (batch, units)
        grads.add(self, "kernel", cache["x_t"].T @ dz)                       # (features, units)
        grads.add(self, "recurrent_kernel", cache["h_prev"].T @ dz)          # (units, units)
        if self.bias is not None:
            grads.add(self, "bias", dz.sum(axis=0))                          # (units,)
        dx = dz @ self.kernel.T                                              # (batch, features)
        dh_prev = dz @ self.recurrent_kernel.T                               # (batch, units)
        if cache["input_mask"] is not None:
            dx = dx * cache["input_mask"]
        if cache["state_mask"] is not None:
            dh_prev = dh_prev * cache["state_mask"]
        return dx, [dh_prev]


class SimpleRNN(BuiltinRNN):
    """A fully connected recurrent layer: `SimpleRNNCell` run over every timestep.

    .. math:: h_t = \\mathrm{act}(x_t U + b + h_{t-1} W), \\quad t = 1..T, \\quad h_0 = 0

    where:
        x        (batch, timesteps, features)   the input; x_t = x[:, t]
        U        (features, units)               `kernel`
        W        (units, units)                  `recurrent_kernel`
        b        (units,)                        `bias`
        h_t      (batch, units)                  the state after step t, also its output

    Args:
        units, activation, use_bias, *_initializer, *_regularizer, *_constraint, dropout,
            recurrent_dropout, seed: as for `SimpleRNNCell`.
        activity_regularizer: accepted as in Keras; acts only in training.
        return_sequences, return_state, go_backwards, stateful, unroll: as for `RNN`.
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
        >>> x = np.ones((32, 10, 8), dtype="float32")      # (batch, timestamp, feature)
        >>> rnn = layers.SimpleRNN(4, return_sequences=True, return_state=True)
        >>> whole_sequence, final_state = rnn(x)
        >>> whole_sequence.shape, final_state.shape         # (32, 10, units), (32, units)
        ((32, 10, 4), (32, 4))
        >>> [w.shape for w in rnn.get_weights()]             # U, W, b
        [(8, 4), (4, 4), (4,)]
    """

    _cell_class = SimpleRNNCell
    _cell_args = (
        "units", "activation", "use_bias", "kernel_initializer", "recurrent_initializer",
        "bias_initializer", "kernel_regularizer", "recurrent_regularizer", "bias_regularizer",
        "kernel_constraint", "recurrent_constraint", "bias_constraint", "dropout",
        "recurrent_dropout",
    )
    _seed_in_config = False

    def __init__(self, units: int, activation: Any = "tanh", use_bias: bool = True,
                 kernel_initializer: Any = "glorot_uniform",
                 recurrent_initializer: Any = "orthogonal", bias_initializer: Any = "zeros",
                 kernel_regularizer: Any = None, recurrent_regularizer: Any = None,
                 bias_regularizer: Any = None, activity_regularizer: Any = None,
                 kernel_constraint: Any = None, recurrent_constraint: Any = None,
                 bias_constraint: Any = None, dropout: float = 0.0,
                 recurrent_dropout: float = 0.0, return_sequences: bool = False,
                 return_state: bool = False, go_backwards: bool = False, stateful: bool = False,
                 unroll: bool = False, seed: int | None = None, **kwargs: Any):
        super().__init__(**own_arguments(locals()), **kwargs)
