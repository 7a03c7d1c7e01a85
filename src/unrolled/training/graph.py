"""Forward and backward through a model's layer graph.

`graph_forward` replays the graph exactly as `Graph.run` does (same masks, same order) but calls
each layer's `forward_train`, keeping its cache; `graph_backward` walks the calls in reverse,
handing each layer the gradient of its outputs and routing the gradients of its inputs (the
sequence and, for recurrent layers, any initial states) back to the tensors they came from.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from unrolled.models.node import flatten, map_structure
from unrolled.training.backprop import Grads

__all__ = ["graph_forward", "graph_backward"]


def _forward_layer(layer: Any, args: tuple, kwargs: dict) -> tuple[Any, dict]:
    forward = getattr(layer, "forward_train", None)
    if forward is None or not hasattr(layer, "backward"):
        raise NotImplementedError(
            f"Layer '{layer.name}' ({type(layer).__name__}) cannot be trained yet: it has no "
            f"forward_train/backward pair. Built-in recurrent layers, Dense, Embedding, Masking, "
            f"Dropout, TimeDistributed and Bidirectional have one; a custom layer needs "
            f"forward_train(inputs, training=True) -> (outputs, cache) and "
            f"backward(cache, d_outputs, grads) -> d_inputs."
        )
    return forward(*args, **kwargs)


def graph_forward(graph: Any, values: list, training: bool = True, masks: list | None = None
                  ) -> tuple[list, list]:
    """`(flat outputs, tape, output masks)`; the tape lists `(node, cache, outputs)` in
    execution order, and an output's mask is what Keras attaches to it (None when unmasked)."""
    computed = {id(t): v for t, v in zip(graph.inputs, values)}
    mask_of: dict[int, Any] = {}
    if masks is not None:
        for tensor, mask in zip(graph.inputs, masks):
            if mask is not None:
                mask_of[id(tensor)] = mask
    tape = []
    for depth in sorted(graph.nodes_by_depth, reverse=True):
        for node in graph.nodes_by_depth[depth]:
            if node.is_input:
                continue
            args, kwargs = node.fill_in(computed)
            if node.accepts_training:
                kwargs["training"] = training
            first_masks = map_structure(lambda t: mask_of.get(id(t)), node.first_arg)
            if node.auto_mask and any(m is not None for m in flatten(first_masks)):
                kwargs["mask"] = first_masks
            outputs, cache = _forward_layer(node.layer, args, kwargs)
            tape.append((node, cache, outputs))
            for tensor, value in zip(node.outputs, flatten(outputs)):
                computed[id(tensor)] = value
            previous = kwargs.get("mask")
            if previous is None:
                previous = first_masks
            first_value = map_structure(lambda t: computed[id(t)], node.first_arg)
            out_masks = node.layer.compute_mask(first_value, previous)
            if out_masks is None:
                continue
            for tensor, mask in zip(node.outputs, flatten(out_masks)):
                if mask is not None:
                    mask_of[id(tensor)] = mask
    outputs = [computed[id(t)] for t in graph.outputs]
    output_masks = [mask_of.get(id(t)) for t in graph.outputs]
    return outputs, tape, output_masks


def graph_backward(graph: Any, tape: list, d_outputs: list, grads: Grads,
                   input_grads: bool = True) -> list:
    """Gradients for the graph's inputs (None where an input takes none, such as token ids).

    `input_grads=False` (a training step, which only needs the weights' gradients): a layer
    whose inputs are all graph inputs finds `cache["input_grad"] = False` and may skip dL/dx."""
    d_of: dict[int, Any] = {}
    graph_inputs = {id(t) for t in graph.inputs}

    def add(tensor: Any, d: Any) -> None:
        if d is None:
            return
        key = id(tensor)
        d_of[key] = d if key not in d_of else d_of[key] + d

    for tensor, d in zip(graph.outputs, d_outputs):
        add(tensor, d)
    for node, cache, outputs in reversed(tape):
        flat_d = [d_of.get(id(t)) for t in node.outputs]
        if all(d is None for d in flat_d):
            continue
        flat_out = flatten(outputs)
        flat_d = [np.zeros_like(o) if d is None else d for d, o in zip(flat_d, flat_out)]
        if isinstance(outputs, tuple):
            d_result = _pack(outputs, flat_d)
        else:
            d_result = flat_d[0]
        if not input_grads and all(id(t) in graph_inputs for t in flatten(node.first_arg)):
            cache["input_grad"] = False
        d_first = node.layer.backward(cache, d_result, grads)
        first = node.first_arg
        if isinstance(first, (list, tuple)):
            for tensor, d in zip(first, d_first or [None] * len(first)):
                add(tensor, d)
        else:
            add(first, d_first)
        initial = node.kwargs.get("initial_state")
        if initial is not None and "d_initial_state" in cache:
            for tensor, d in zip(flatten(initial), flatten(cache["d_initial_state"])):
                if hasattr(tensor, "_keras_history"):
                    add(tensor, d)
    return [d_of.get(id(t)) for t in graph.inputs]


def _pack(structure: Any, flat: list) -> Any:
    flat = list(flat)

    def take(node: Any) -> Any:
        if isinstance(node, (list, tuple)):
            return type(node)(take(n) for n in node) if isinstance(node, tuple) else [
                take(n) for n in node]
        return flat.pop(0)
    return take(structure)
