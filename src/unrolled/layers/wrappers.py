"""Wrappers: TimeDistributed (one layer applied at every timestep) and Bidirectional (a recurrent
layer run forwards and backwards, outputs merged), exact to Keras 3."""

from __future__ import annotations

import copy
import inspect
import warnings
from typing import Any

import numpy as np

from unrolled import _checks
from unrolled.layers._serialization import deserialize_layer, serialize_layer
from unrolled.layers.base import Layer
from unrolled.layers.rnn import first_mask, the_sequence

__all__ = ["TimeDistributed", "Bidirectional"]

MERGE_MODES = ("concat", "sum", "ave", "mul", None)


def _accepts(layer: Layer, argument: str) -> bool:
    """Whether calling `layer` takes `argument` by name (as Keras's `_call_has_<arg>_arg`)."""
    fn = layer.call if type(layer).__call__ is Layer.__call__ else layer.__call__
    try:
        return argument in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _require_layer(layer: Any, owner: str, argument: str, example: str) -> None:
    if not isinstance(layer, Layer):
        raise TypeError(
            f"{owner}: `{argument}` must be an unrolled layer instance, for example {example}; "
            f"got {layer!r} ({type(layer).__name__})."
        )


class TimeDistributed(Layer):
    """Apply one layer to every timestep: `y[:, t] = layer(x[:, t])`, with shared weights.

    where:
        x        (batch, timesteps, ...)         the input, 3-D or more
        layer    built for (batch, ...)          the inner layer; its weights are the only ones
        y        (batch, timesteps, ...out)      the inner layer's output at each step, stacked

    The inner layer is called once per timestep (with `mask[:, t]` when it takes a mask). A
    pointwise layer (Dense, Embedding, Masking) is instead called once on the input with time
    folded into the batch axis, which computes the same numbers without the Python loop.
    The input mask passes through unchanged.

    Args:
        layer: the layer to apply, e.g. `Dense(8)`.
        name, dtype, trainable: as for every layer.

    Call arguments:
        inputs: `(batch, timesteps, ...)`.
        training: passed on to the inner layer when it takes it.
        mask: `(batch, timesteps, ...)` booleans; `mask[:, t]` goes to an inner layer that takes
            a mask.

    Example:
        >>> import numpy as np
        >>> from unrolled import layers
        >>> td = layers.TimeDistributed(layers.Dense(2, name="dense"), name="td")
        >>> td(np.ones((4, 5, 3))).shape             # (batch, timesteps, units)
        (4, 5, 2)
        >>> [w.path for w in td.weights]
        ['td/dense/kernel', 'td/dense/bias']
    """

    supports_masking = True

    def __init__(self, layer: Layer, **kwargs: Any):
        _require_layer(layer, "TimeDistributed", "layer", "TimeDistributed(Dense(8))")
        if kwargs.get("dtype") is None:
            kwargs["dtype"] = layer.dtype
        super().__init__(**kwargs)
        self.layer = layer
        self._adopt(layer)

    def _sublayers(self) -> list[Layer]:
        return [self.layer]

    def _child_shape(self, input_shape: Any) -> tuple:
        shape = tuple(input_shape) if hasattr(input_shape, "__len__") else ()
        if len(shape) < 3:
            raise ValueError(
                f"TimeDistributed '{self.name}' expects input of shape (batch, timesteps, ...), "
                f"at least 3-D, got {input_shape!r}. The layer is applied to every timestep; for "
                f"2-D input (batch, features) call {type(self.layer).__name__} directly."
            )
        return (shape[0], *shape[2:])

    def build(self, input_shape: Any) -> None:
        child = self._child_shape(input_shape)
        if not self.layer.built:
            self.layer.build(child)
            self.layer.built = True
            if self.layer._build_shape is None:
                self.layer._build_shape = child
        super().build(input_shape)

    def __call__(self, inputs: Any, training: Any = None, mask: Any = None) -> np.ndarray:
        x = np.asarray(inputs)
        self._child_shape(x.shape)
        self._maybe_build(x.shape)
        return self.call(x, training=training, mask=mask)

    def _check_mask(self, mask: Any, shape: tuple) -> np.ndarray:
        owner = f"TimeDistributed '{self.name}'"
        array = np.asarray(mask)
        if array.dtype.kind not in "biuf":
            raise TypeError(f"{owner}: `mask` must hold booleans (or 0/1), got dtype {array.dtype}.")
        if array.ndim < 2 or array.shape[:2] != shape[:2]:
            raise ValueError(
                f"{owner}: `mask` must start with the input's (batch, timesteps) = "
                f"{_checks.shape_str(shape[:2])}, got shape {_checks.shape_str(array.shape)}."
            )
        return array.astype(bool)

    def call(self, inputs: np.ndarray, training: Any = None, mask: Any = None) -> np.ndarray:
        batch, timesteps = inputs.shape[:2]
        mask = first_mask(mask)
        kwargs = {}
        if training is not None and _accepts(self.layer, "training"):
            kwargs["training"] = training
        takes_mask = mask is not None and _accepts(self.layer, "mask")
        if takes_mask:
            mask = self._check_mask(mask, inputs.shape)
        if getattr(self.layer, "_pointwise", False) and not takes_mask:
            merged = inputs.reshape((batch * timesteps,) + inputs.shape[2:])  # (batch*time, ...)
            y = self.layer(merged, **kwargs)
            return y.reshape((batch, timesteps) + y.shape[1:])               # (batch, time, ...)
        outputs = []
        for t in range(timesteps):
            if takes_mask:
                kwargs["mask"] = mask[:, t]
            y = self.layer(inputs[:, t], **kwargs)                          # (batch, ...)
            if not isinstance(y, np.ndarray):
                raise TypeError(
                    f"TimeDistributed '{self.name}': the inner layer must return one array per "
                    f"step, got {type(y).__name__}. Layers with several outputs (e.g. an RNN with "
                    f"return_state=True) cannot be time-distributed."
                )
            outputs.append(y)
        return np.stack(outputs, axis=1)                                    # (batch, time, ...)

    # ---------------------------------------------------------------- backward (training)

    def forward_train(self, inputs: Any, training: Any = True, mask: Any = None
                      ) -> tuple[np.ndarray, dict]:
        """The call for training: the inner layer's `forward_train` on every step (or once on
        the merged (batch*time, ...) array for a point-wise layer such as Dense)."""
        x = np.asarray(inputs)
        self._child_shape(x.shape)
        self._maybe_build(x.shape)
        if not hasattr(self.layer, "forward_train"):
            raise NotImplementedError(f"TimeDistributed '{self.name}': the inner layer "
                                      f"{type(self.layer).__name__} has no forward_train/backward.")
        batch, timesteps = x.shape[:2]
        mask = first_mask(mask)
        kwargs = {"training": training} if _accepts(self.layer, "training") else {}
        takes_mask = mask is not None and _accepts(self.layer, "mask")
        if takes_mask:
            mask = self._check_mask(mask, x.shape)
        if getattr(self.layer, "_pointwise", False) and not takes_mask:
            merged = x.reshape((batch * timesteps,) + x.shape[2:])          # (batch*time, ...)
            y, inner = self.layer.forward_train(merged, **kwargs)
            return y.reshape((batch, timesteps) + y.shape[1:]), {"merged": inner, "shape": x.shape}
        outputs, caches = [], []
        for t in range(timesteps):
            if takes_mask:
                kwargs["mask"] = mask[:, t]
            y, inner = self.layer.forward_train(x[:, t], **kwargs)          # (batch, ...)
            outputs.append(y)
            caches.append(inner)
        return np.stack(outputs, axis=1), {"steps": caches, "shape": x.shape}

    def backward(self, cache: dict, d_y: np.ndarray, grads: Any) -> np.ndarray | None:
        """The same layer applied at every step: its weight gradients sum over the steps."""
        batch, timesteps = cache["shape"][:2]
        if "merged" in cache:
            flat = d_y.reshape((batch * timesteps,) + d_y.shape[2:])
            d_x = self.layer.backward(cache["merged"], flat, grads)
            return None if d_x is None else d_x.reshape(cache["shape"])
        d_steps = [self.layer.backward(c, d_y[:, t], grads) for t, c in enumerate(cache["steps"])]
        return None if d_steps[0] is None else np.stack(d_steps, axis=1)

    def compute_output_shape(self, input_shape: Any) -> tuple:
        child = self._child_shape(input_shape)
        out = self.layer.compute_output_shape(child)
        return (out[0], tuple(input_shape)[1], *out[1:])

    def get_config(self) -> dict:
        config = super().get_config()
        config["layer"] = serialize_layer(self.layer)
        return config

    @classmethod
    def from_config(cls, config: dict) -> "TimeDistributed":
        config = dict(config)
        layer = deserialize_layer(config.pop("layer"), "layer")
        return cls(layer, **config)

    def __repr__(self) -> str:
        return f"TimeDistributed({self.layer!r})"


def _removeprefix(name: str, prefix: str) -> str:
    return name[len(prefix):] if name.startswith(prefix) else name


_RNN_ATTRS = ("go_backwards", "return_sequences", "return_state", "stateful")


class Bidirectional(Layer):
    """Run a recurrent layer over the sequence forwards and backwards, and merge the two.

    .. math:: y = \\mathrm{merge}(\\overrightarrow{y}, \\overleftarrow{y})

    where:
        x                 (batch, timesteps, features)   the input
        y_fwd             (batch, [timesteps,] u)        `forward_layer(x)`
        y_bwd             (batch, [timesteps,] u)        `backward_layer(x)` (go_backwards=True),
                                                         flipped back into time order when it
                                                         returns sequences
        merge                                            concat `[y_fwd | y_bwd]` (2u), sum, ave,
                                                         mul, or None: the pair `(y_fwd, y_bwd)`

    As in Keras, the forward layer is a *new* layer made from `layer`'s config, named
    `forward_<name>`: the instance passed in is not used and its weights are not copied. The
    backward layer is the same config with `go_backwards=True` named `backward_<name>`, unless
    `backward_layer` is given. In both, masked steps of returned sequences output zeros
    (`zero_output_for_mask` is set to `return_sequences`). Without `return_sequences` the
    backward output is its last one, i.e. after it has read step 0.

    Args:
        layer: a recurrent layer (SimpleRNN, LSTM, GRU, RNN) whose config is copied.
        merge_mode: "concat" (default), "sum", "ave", "mul" or None.
        weights: accepted as in Keras 3.15.1, which ignores it (a warning says so); use
            set_weights() after building.
        backward_layer: optional recurrent layer for the backward direction. It must have the
            opposite `go_backwards` and the same `stateful`, `return_sequences` and
            `return_state` as `layer`.
        name, dtype, trainable: as for every layer.

    Call arguments:
        sequences: `(batch, timesteps, features)`.
        initial_state: the forward layer's states followed by the backward layer's, e.g.
            `[fh, fc, bh, bc]` for LSTM.
        mask: `(batch, timesteps)` booleans, True where a step is real.
        training: passed on to both layers.

    Returns:
        The merged output; with `return_state` the tuple `(merged, *forward_states,
        *backward_states)`, or `(y_fwd, y_bwd, *forward_states, *backward_states)` when
        merge_mode is None.

    Example:
        >>> import numpy as np
        >>> from unrolled import layers
        >>> bi = layers.Bidirectional(layers.SimpleRNN(4, return_sequences=True, name="rnn"))
        >>> bi(np.ones((2, 5, 3))).shape                # (batch, timesteps, 2 * units)
        (2, 5, 8)
        >>> bi.forward_layer.name, bi.backward_layer.name
        ('forward_rnn', 'backward_rnn')
    """

    supports_masking = True

    def __init__(self, layer: Layer, merge_mode: str | None = "concat", weights: Any = None,
                 backward_layer: Layer | None = None, **kwargs: Any):
        owner = "Bidirectional"
        example = "Bidirectional(SimpleRNN(8))"
        _require_layer(layer, owner, "layer", example)
        for attr in _RNN_ATTRS:
            if not hasattr(layer, attr):
                raise TypeError(
                    f"{owner}: `layer` must be a recurrent layer (SimpleRNN, LSTM, GRU or RNN), "
                    f"got {type(layer).__name__}, which has no `{attr}`."
                )
        if backward_layer is not None:
            _require_layer(backward_layer, owner, "backward_layer",
                           "SimpleRNN(8, go_backwards=True)")
        if merge_mode not in MERGE_MODES:
            options = [m for m in MERGE_MODES if m is not None]
            hint = _checks.closest(merge_mode, options) if isinstance(merge_mode, str) else ""
            raise ValueError(
                f"{owner}: unknown merge_mode {merge_mode!r}.{hint} Expected one of \"concat\", "
                f"\"sum\", \"ave\", \"mul\" or None (return both directions)."
            )
        if kwargs.get("dtype") is None:
            kwargs["dtype"] = layer.dtype
        super().__init__(**kwargs)

        config = layer.get_config()
        config["name"] = "forward_" + _removeprefix(layer.name, "forward_")
        self.forward_layer = type(layer).from_config(config)
        if backward_layer is None:
            config = layer.get_config()
            config["go_backwards"] = True
            config["name"] = "backward_" + _removeprefix(layer.name, "backward_")
            backward_layer = type(layer).from_config(config)
        else:
            for attr in _RNN_ATTRS:
                if not hasattr(backward_layer, attr):
                    raise TypeError(
                        f"{owner}: `backward_layer` must be a recurrent layer, got "
                        f"{type(backward_layer).__name__}, which has no `{attr}`."
                    )
        self.backward_layer = backward_layer
        self._verify_directions()
        for sub in (self.forward_layer, self.backward_layer):
            if hasattr(sub, "zero_output_for_mask"):
                sub.zero_output_for_mask = sub.return_sequences
            self._adopt(sub)

        self.merge_mode = merge_mode
        self.initial_weights = weights
        if weights:
            warnings.warn(
                "Bidirectional: the `weights` argument is ignored, as in Keras 3. Build the layer "
                "(call it once) and use set_weights(weights) instead.", UserWarning, stacklevel=2)
        self.stateful = layer.stateful
        self.return_sequences = layer.return_sequences
        self.return_state = layer.return_state

    def _verify_directions(self) -> None:
        fwd, bwd = self.forward_layer, self.backward_layer
        if fwd.go_backwards == bwd.go_backwards:
            raise ValueError(
                f"Bidirectional: the forward and backward layers must read the sequence in "
                f"opposite directions, but both have go_backwards={fwd.go_backwards}. Create the "
                f"backward layer with go_backwards={not fwd.go_backwards}."
            )
        for attr in ("stateful", "return_sequences", "return_state"):
            f_value, b_value = getattr(fwd, attr), getattr(bwd, attr)
            if f_value != b_value:
                raise ValueError(
                    f"Bidirectional: the forward and backward layers must agree on `{attr}`, got "
                    f"{attr}={f_value} for `layer` and {attr}={b_value} for `backward_layer`. "
                    f"Create the backward layer with {attr}={f_value}."
                )

    def _sublayers(self) -> list[Layer]:
        return [self.forward_layer, self.backward_layer]

    # ---------------------------------------------------------------- states

    @property
    def states(self) -> tuple | None:
        """A stateful layer's carried states: forward's, then backward's (None before a call)."""
        fwd, bwd = getattr(self.forward_layer, "states", None), getattr(self.backward_layer,
                                                                        "states", None)
        if fwd and bwd:
            return tuple(list(fwd) + list(bwd))
        return None

    def reset_state(self) -> None:
        """Zero both directions' carried states (a stateful layer only, as in Keras)."""
        if not self.stateful:
            raise AttributeError(
                f"Bidirectional '{self.name}' is not stateful, so it carries no states to reset. "
                f"Create the wrapped layer with stateful=True to carry states across calls."
            )
        self.forward_layer.reset_state()
        self.backward_layer.reset_state()

    def reset_states(self) -> None:
        """Alias of `reset_state`, Keras 2's name."""
        self.reset_state()

    # ---------------------------------------------------------------- calling

    def build(self, sequences_shape: Any, initial_state_shape: Any = None) -> None:
        for sub in (self.forward_layer, self.backward_layer):
            if not sub.built:
                sub._maybe_build(tuple(sequences_shape))
        super().build(sequences_shape)

    def _split_states(self, initial_state: Any) -> tuple[Any, Any]:
        if initial_state is None:
            return None, None
        states = (list(initial_state) if isinstance(initial_state, (list, tuple))
                  else [initial_state])
        n_fwd = len(self.forward_layer.state_size)
        n_bwd = len(self.backward_layer.state_size)
        if len(states) != n_fwd + n_bwd:
            raise ValueError(
                f"Bidirectional '{self.name}': `initial_state` must list the forward layer's "
                f"{n_fwd} state(s) and then the backward layer's {n_bwd}, {n_fwd + n_bwd} in all "
                f"(for LSTM: [fh, fc, bh, bc]); got {len(states)}."
            )
        return states[:n_fwd], states[n_fwd:]

    def __call__(self, sequences: Any = None, initial_state: Any = None, mask: Any = None,
                 training: bool = False, *, inputs: Any = None) -> Any:
        owner = f"Bidirectional '{self.name}'"
        x = the_sequence(sequences, inputs, owner)
        x = _checks.as_float_array(x, "sequences", owner, np.dtype(self.dtype))
        if x.ndim != 3:
            raise ValueError(
                f"{owner} expects input of shape (batch, timesteps, features), 3-D; got "
                f"{x.ndim}-D input of shape {_checks.shape_str(x.shape)}."
            )
        self._maybe_build(x.shape)
        return self.call(x, initial_state=initial_state, mask=mask, training=training)

    def call(self, sequences: np.ndarray, initial_state: Any = None, mask: Any = None,
             training: bool = False) -> Any:
        fwd_state, bwd_state = self._split_states(initial_state)
        y = self.forward_layer(sequences, initial_state=fwd_state, mask=mask, training=training)
        y_rev = self.backward_layer(sequences, initial_state=bwd_state, mask=mask,
                                    training=training)
        states: tuple = ()
        if self.return_state:
            states = tuple(y[1:]) + tuple(y_rev[1:])
            y, y_rev = y[0], y_rev[0]
        if self.return_sequences:
            y_rev = y_rev[:, ::-1]                                 # back into time order
        output = self._merge(y, y_rev)
        if self.return_state:
            return (*output, *states) if self.merge_mode is None else (output, *states)
        return output

    # ---------------------------------------------------------------- backward (training)

    def forward_train(self, sequences: Any, initial_state: Any = None, mask: Any = None,
                      training: bool = True) -> tuple[Any, dict]:
        """The call for training: both directions' `forward_train`, merged as `call` merges."""
        x = _checks.as_float_array(sequences, "sequences", f"Bidirectional '{self.name}'",
                                   np.dtype(self.dtype))
        self._maybe_build(x.shape)
        fwd_state, bwd_state = self._split_states(initial_state)
        y, fwd_cache = self.forward_layer.forward_train(x, initial_state=fwd_state, mask=mask,
                                                        training=training)
        y_rev, bwd_cache = self.backward_layer.forward_train(x, initial_state=bwd_state,
                                                             mask=mask, training=training)
        states: tuple = ()
        if self.return_state:
            states = tuple(y[1:]) + tuple(y_rev[1:])
            y, y_rev = y[0], y_rev[0]
        if self.return_sequences:
            y_rev = y_rev[:, ::-1]                                 # back into time order
        output = self._merge(y, y_rev)
        cache = {"fwd": fwd_cache, "bwd": bwd_cache, "y": y, "y_rev": y_rev,
                 "n_fwd": len(self.forward_layer.state_size)}
        if self.return_state:
            result = (*output, *states) if self.merge_mode is None else (output, *states)
        else:
            result = output
        return result, cache

    def backward(self, cache: dict, d_result: Any, grads: Any) -> np.ndarray:
        """Split the merged gradient between the directions (concat: by columns; sum: to both;
        ave: half to each; mul: times the other direction), flip the backward direction's
        sequence gradient into its processing order, and add both input gradients."""
        y, y_rev = cache["y"], cache["y_rev"]
        d_states: list = []
        if self.merge_mode is None:
            d_y, d_rev = d_result[0], d_result[1]
            d_states = list(d_result[2:]) if self.return_state else []
        else:
            d_out = d_result[0] if self.return_state else d_result
            d_states = list(d_result[1:]) if self.return_state else []
            if self.merge_mode == "concat":
                d_y, d_rev = d_out[..., :y.shape[-1]], d_out[..., y.shape[-1]:]
            elif self.merge_mode == "sum":
                d_y, d_rev = d_out, d_out
            elif self.merge_mode == "ave":
                d_y = d_rev = d_out / d_out.dtype.type(2)
            else:  # mul
                d_y, d_rev = d_out * y_rev, d_out * y
        if self.return_sequences:
            d_rev = d_rev[:, ::-1]                                 # processing order again
        n_fwd = cache["n_fwd"]
        parts = []
        for layer, d_main, d_st, sub in ((self.forward_layer, d_y, d_states[:n_fwd], cache["fwd"]),
                                         (self.backward_layer, d_rev, d_states[n_fwd:],
                                          cache["bwd"])):
            d_sub = (d_main, *d_st) if self.return_state else d_main
            parts.append(layer.backward(sub, d_sub, grads))
        cache["d_initial_state"] = (list(cache["fwd"]["d_initial_state"])
                                    + list(cache["bwd"]["d_initial_state"]))
        return parts[0] + parts[1]

    def _merge(self, y: np.ndarray, y_rev: np.ndarray) -> Any:
        mode = self.merge_mode
        if mode == "concat":
            return np.concatenate([y, y_rev], axis=-1)             # (..., u_fwd + u_bwd)
        if mode is None:
            return (y, np.ascontiguousarray(y_rev))
        if y.shape != y_rev.shape:
            raise ValueError(
                f"Bidirectional '{self.name}': merge_mode={mode!r} needs both directions to have "
                f"the same output shape, got {_checks.shape_str(y.shape)} forward and "
                f"{_checks.shape_str(y_rev.shape)} backward. Give both layers the same units, "
                f"or use merge_mode='concat'."
            )
        if mode == "sum":
            return y + y_rev
        if mode == "ave":
            return (y + y_rev) / y.dtype.type(2)
        return y * y_rev

    # ---------------------------------------------------------------- shapes and masks

    def compute_output_shape(self, sequences_shape: Any, initial_state_shape: Any = None) -> Any:
        """The shape(s) a call returns, as Keras reports them."""
        fwd = self.forward_layer.compute_output_shape(tuple(sequences_shape))
        bwd = self.backward_layer.compute_output_shape(tuple(sequences_shape))
        fwd_states: tuple = ()
        bwd_states: tuple = ()
        if self.return_state:
            fwd, fwd_states = fwd[0], tuple(fwd[1:])
            bwd, bwd_states = bwd[0], tuple(bwd[1:])
        if self.merge_mode == "concat":
            last = None if fwd[-1] is None or bwd[-1] is None else fwd[-1] + bwd[-1]
            outputs: tuple = ((*fwd[:-1], last),)
        elif self.merge_mode is None:
            outputs = (tuple(fwd), tuple(bwd))
        else:
            outputs = (tuple(fwd),)
        if self.return_state:
            return (*outputs, *fwd_states, *bwd_states)
        return outputs[0] if len(outputs) == 1 else outputs

    def compute_mask(self, inputs: Any, mask: Any = None) -> Any:
        """The input mask if return_sequences (twice with merge_mode None), else None; None for
        every returned state.

        Keras's own compute_mask returns only the output masks when `return_state` is set (and
        fails for a stateful layer); the masks it then attaches are these.
        """
        mask = first_mask(mask)
        out = mask if self.return_sequences else None
        outputs = (out, out) if self.merge_mode is None else (out,)
        if self.return_state:
            n_states = len(self.forward_layer.state_size) + len(self.backward_layer.state_size)
            return (*outputs, *([None] * n_states))
        return outputs if self.merge_mode is None else out

    # ---------------------------------------------------------------- config and display

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(merge_mode=self.merge_mode, layer=serialize_layer(self.forward_layer),
                      backward_layer=serialize_layer(self.backward_layer))
        return config

    @classmethod
    def from_config(cls, config: dict) -> "Bidirectional":
        config = copy.deepcopy(config)
        layer = deserialize_layer(config.pop("layer"), "layer")
        backward = config.pop("backward_layer", None)
        if backward is not None:
            backward = deserialize_layer(backward, "backward_layer")
        return cls(layer, backward_layer=backward, **config)

    def __repr__(self) -> str:
        return (f"Bidirectional(forward={self.forward_layer!r}, "
                f"backward={self.backward_layer!r}, merge_mode={self.merge_mode!r})")
