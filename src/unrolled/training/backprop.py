"""Backpropagation plumbing shared by every layer: the gradient store and the step recorder.

Each layer's backward pass lives next to its forward pass (`SimpleRNNCell.backward_step` beside
`SimpleRNNCell.call`, `RNN.backward` beside the time loop). This module holds what they share:

- `Grads`, a dictionary from each `Weight` to the gradient accumulated for it;
- `StepCapture`, a recorder that keeps the intermediate values a cell reports through
  `RNNCell._record` during one step, so the backward step reuses exactly what the forward
  computed;
- `forward_step` / `backward_step`, which run one training step of any cell, and say clearly
  what a user-written cell lacks when it cannot be trained.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from unrolled.layers.base import Layer, Weight

__all__ = ["Grads", "StepCapture", "forward_step", "backward_step", "zeros_like_tree",
           "add_trees"]


class Grads(dict):
    """`{Weight: gradient}`, summed over timesteps and over every place a weight is used."""

    def add(self, layer: Layer, name: str, value: np.ndarray) -> None:
        """Add `value` to the gradient of `layer`'s weight called `name` (e.g. "kernel")."""
        for weight in layer._weights:
            if weight.name == name:
                break
        else:  # pragma: no cover - a programming error in a backward method
            raise KeyError(f"{layer.name} has no weight {name!r}")
        if weight in self:
            self[weight] = self[weight] + value
        else:
            self[weight] = np.array(value, dtype=weight.dtype)

    def for_weights(self, weights: list[Weight]) -> list[np.ndarray]:
        """Gradients in the order of `weights` (zeros for a weight the loss does not reach)."""
        return [self[w] if w in self else np.zeros_like(w.value) for w in weights]


class StepCapture:
    """A recorder for one cell step: `cell._record(x_t=..., z=..., h=...)` lands in `values`."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def record(self, cell: Any, values: dict) -> None:
        self.values.update(values)


def zeros_like_tree(tree: Any) -> Any:
    if isinstance(tree, (list, tuple)):
        return [zeros_like_tree(t) for t in tree]
    return np.zeros_like(tree)


def add_trees(a: Any, b: Any) -> Any:
    if isinstance(a, (list, tuple)):
        return [add_trees(x, y) for x, y in zip(a, b)]
    return a + b


def forward_step(cell: Any, inputs: np.ndarray, states: list, training: bool
                 ) -> tuple[np.ndarray, list, dict]:
    """One training step of any cell: `(output, new_states, cache)`.

    A cell that defines `forward_step` itself (a stack) is asked directly. Otherwise `call` runs
    with a `StepCapture` attached, and the cache holds what it recorded plus the step's inputs,
    states, outputs and the dropout masks in use.
    """
    own = getattr(cell, "forward_step", None)
    if own is not None:
        return own(inputs, states, training)
    from unrolled.layers.cell import takes_training

    capture = StepCapture()
    step = cell.call if isinstance(cell, Layer) else (cell if callable(cell) else cell.call)
    kwargs = {"training": training} if takes_training(step) else {}
    previous = getattr(cell, "_recorder", None)
    cell._recorder = capture
    try:
        output, new_states = step(inputs, states, **kwargs)
    finally:
        cell._recorder = previous
    bare = not isinstance(new_states, (list, tuple))
    new_states = [new_states] if bare else list(new_states)
    cache = dict(capture.values)
    cache.update(inputs=inputs, states=states, output=output, new_states=new_states,
                 input_mask=getattr(cell, "_dropout_mask", None) if training else None,
                 state_mask=getattr(cell, "_recurrent_dropout_mask", None) if training else None)
    return output, new_states, cache


def backward_step(cell: Any, cache: dict, d_output: np.ndarray, d_new_states: list,
                  grads: Grads) -> tuple[np.ndarray, list]:
    """`(d_inputs, d_states)` for one step of any cell, adding weight gradients to `grads`."""
    own = getattr(cell, "backward_step", None)
    if own is None:
        raise NotImplementedError(
            f"{type(cell).__name__} cannot be trained: it has no backward_step. Add a method\n"
            f"    def backward_step(self, cache, d_output, d_new_states, grads):\n"
            f"        # cache: what call() passed to self._record(...), plus 'inputs', 'states',\n"
            f"        #        'output', 'new_states', 'input_mask', 'state_mask'\n"
            f"        # grads.add(self, 'kernel', dL/dkernel) for each weight\n"
            f"        return d_inputs, d_states   # d_states: one array per state, as a list\n"
            f"(see SimpleRNNCell.backward_step for a worked example)."
        )
    return own(cache, d_output, d_new_states, grads)
