"""`unrolled.gradients`: every gradient of one backward pass, for looking at, not just for training.

Returns the loss, dL/dw for every weight, dL/dx for the input, and for each recurrent layer
dL/dh_t for every timestep t, so the size of the gradient can be followed back through time
(the vanishing / exploding gradient problem, seen on real numbers).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from unrolled.training.backprop import Grads

__all__ = ["gradients", "GradientReport"]


@dataclass
class GradientReport:
    """The result of `gradients(...)`.

    Attributes:
        loss: the loss value (None when `d_output` was given instead of a loss).
        weights: `{weight path: dL/dw}`, e.g. `{"simple_rnn/simple_rnn_cell/kernel": (3, 4)}`.
        inputs: dL/dx, shaped like the input.
        hidden: `{layer name: dL/dh_t}`, `(batch, timesteps, units)` in time order (input step
            t, whatever the processing direction): the gradient reaching each step's output
            state h_t, from the loss at that step and from every later step.
        initial_state: `{layer name: dL/dh_0}`, nested as the layer's states.
        grads: the raw `{Weight: gradient}` store.
    """

    loss: Any
    weights: dict
    inputs: np.ndarray
    hidden: dict = field(default_factory=dict)
    initial_state: dict = field(default_factory=dict)
    grads: Grads | None = None

    def hidden_norms(self, layer: str | None = None) -> np.ndarray:
        """`||dL/dh_t||` per timestep (averaged over the batch): the gradient's size back in time."""
        name = layer or next(iter(self.hidden))
        return np.linalg.norm(self.hidden[name], axis=-1).mean(axis=0)       # (timesteps,)


def _hidden_from_steps(layer: Any, cache: dict) -> np.ndarray:
    timesteps = cache["x_shape"][1]
    stacked = cache["stacked"]
    first = None
    out = None
    for step in cache["step_grads"]:
        states = step["states"]
        h = states[-1] if stacked else states[0]
        if isinstance(h, (list, tuple)):
            h = h[0]
        total = step["output"] + h                                           # (batch, units)
        if out is None:
            first = total
            out = np.zeros((total.shape[0], timesteps) + total.shape[1:], dtype=total.dtype)
        out[:, step["t"]] = total
    del first
    return out


def gradients(model_or_layer: Any, x: Any, y: Any = None, loss: Any = "mse", *,
              d_output: Any = None, sample_weight: Any = None, training: bool = False,
              **call_kwargs: Any) -> GradientReport:
    """All gradients of `loss(y, model(x))` (or of `sum(d_output * model(x))`).

    Args:
        model_or_layer: a recurrent layer (SimpleRNN, RNN(...), LSTM, ...) or a model with a
            `backward` method.
        x: the input, `(batch, timesteps, features)`.
        y: the targets; with `loss` (a name such as "mse" or a Loss).
        d_output: instead of `y` and `loss`, the gradient arriving at the output.
        sample_weight: optional per-sample weights for the loss.
        training: run in training mode (dropout on). Default False.
        **call_kwargs: passed to the forward call (`initial_state=`, `mask=`).

    Example:
        >>> import numpy as np
        >>> from unrolled import layers, gradients
        >>> rnn = layers.SimpleRNN(4, return_sequences=True)
        >>> x = np.random.default_rng(0).normal(size=(2, 6, 3)).astype("float32")
        >>> report = gradients(rnn, x, np.zeros((2, 6, 4)), "mse")
        >>> sorted(k.split("/")[-1] for k in report.weights)
        ['bias', 'kernel', 'recurrent_kernel']
        >>> report.hidden[rnn.name].shape, report.hidden_norms().shape   # (batch, timesteps, units)
        ((2, 6, 4), (6,))
    """
    target = model_or_layer
    if not hasattr(target, "forward_train") or not hasattr(target, "backward"):
        raise TypeError(
            f"gradients: {type(target).__name__} cannot be differentiated here; it needs "
            f"forward_train and backward methods (recurrent layers and models have them)."
        )
    result, cache = target.forward_train(x, training=training, **call_kwargs)
    output = result[0] if isinstance(result, tuple) else result
    value = None
    if d_output is None:
        if y is None:
            raise ValueError("gradients: give the targets `y` (with `loss`), or `d_output`, the "
                             "gradient arriving at the output.")
        from unrolled import losses as losses_module

        value, d_output = losses_module.get(loss).value_and_grad(y, output, sample_weight)
    d_output = np.asarray(d_output, dtype=output.dtype)
    if d_output.shape != output.shape:
        raise ValueError(f"gradients: `d_output` has shape {d_output.shape}, the output has "
                         f"{output.shape}.")
    grads = Grads()
    d_result = (d_output,) + (None,) * (len(result) - 1) if isinstance(result, tuple) else d_output
    d_x = target.backward(cache, d_result, grads)
    hidden, initial = {}, {}
    for layer, layer_cache in _recurrent_caches(target, cache):
        if "step_grads" in layer_cache:
            hidden[layer.name] = _hidden_from_steps(layer, layer_cache)
            initial[layer.name] = layer_cache["d_initial_state"]
    weights = {w.path: grads[w] for w in getattr(target, "weights", []) if w in grads}
    return GradientReport(loss=value, weights=weights, inputs=d_x, hidden=hidden,
                          initial_state=initial, grads=grads)


def _recurrent_caches(target: Any, cache: dict):
    """(layer, cache) for the target and any layers a model cached."""
    if "steps" in cache:
        yield target, cache
    for layer, layer_cache in cache.get("layers", ()):
        if isinstance(layer_cache, dict):
            yield from _recurrent_caches(layer, layer_cache)
