"""model.summary(): the layer table Keras prints, in plain text."""

from __future__ import annotations

import math
import textwrap
from typing import Any, Callable

from unrolled.models.node import inbound_nodes

__all__ = ["print_summary", "layer_rows"]


def _shape_text(shape: tuple) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def _output_shape(layer: Any, nodes: list) -> str:
    """The output shape(s) of the layer's last call, written as Keras writes them."""
    if not nodes:
        return "?"
    outputs = nodes[-1].outputs
    if len(outputs) == 1:
        return _shape_text(outputs[0].shape)
    return "[" + ", ".join(_shape_text(t.shape) for t in outputs) + "]"


def _memory(weights: list) -> str:
    size = float(sum(w.value.size * w.value.dtype.itemsize for w in weights))
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size / 1024 < 1:
            return f"{size:.2f} {unit}"
        size /= 1024
    return f"{size:.2f} PB"


def _is_chain(model: Any) -> bool:
    """Keras drops the 'Connected to' column when each depth holds one single-input call."""
    network = model._network
    if network is None or type(model).__name__ == "Sequential":
        return True
    seen = []
    for nodes in network.nodes_by_depth.values():
        if len(nodes) > 1 or (len(nodes) == 1 and len(nodes[0].input_tensors) > 1):
            return False
        seen += nodes
    ids = {id(n) for n in seen}
    for layer in model.layers:
        if sum(1 for n in inbound_nodes(layer) if id(n) in ids) > 1:
            return False
    return True


def layer_rows(model: Any) -> tuple[list[str], list[list[str]]]:
    """The table's header and one row per layer: name (type), output shape, params[, inputs]."""
    chain = _is_chain(model)
    header = ["Layer (type)", "Output Shape", "Param #"] + ([] if chain else ["Connected to"])
    network = model._network
    own = network.nodes if network is not None else set()
    rows = []
    for layer in model.layers:
        nodes = [n for n in inbound_nodes(layer) if not own or id(n) in own]
        params = f"{layer.count_params():,}" if layer.built else "0 (unbuilt)"
        row = [f"{layer.name} ({type(layer).__name__})", _output_shape(layer, nodes), params]
        if not chain:
            links = [f"{t._keras_history.layer.name}[{t._keras_history.node_index}]"
                     f"[{t._keras_history.tensor_index}]"
                     for n in nodes for t in n.input_tensors]
            row.append(", ".join(links) or "-")
        rows.append(row)
    return header, rows


def print_summary(model: Any, line_length: int | None = None, positions: Any = None,
                  print_fn: Callable[..., Any] | None = None) -> None:
    print_fn = print_fn or print
    header, rows = layer_rows(model)
    chain = len(header) == 3
    line_length = line_length or (88 if chain else 108)
    positions = positions or ([0.45, 0.80, 1.0] if chain else [0.3, 0.56, 0.74, 1.0])
    if positions[-1] <= 1:
        positions = [int(line_length * p) for p in positions]
    widths = [b - a for a, b in zip([0] + list(positions[:-1]), positions)]
    right = {2}

    def line(cells: list[str]) -> list[str]:
        wrapped = [textwrap.wrap(c, max(w - 3, 4)) or [""] for c, w in zip(cells, widths)]
        height = max(len(w) for w in wrapped)
        out = []
        for k in range(height):
            parts = []
            for col, (cell, width) in enumerate(zip(wrapped, widths)):
                text = cell[k] if k < len(cell) else ""
                parts.append(text.rjust(width - 3) if col in right else text.ljust(width - 3))
            out.append("| " + " | ".join(parts) + " |")
        return out

    rule = "+" + "+".join("-" * (w - 1) for w in widths) + "+"
    print_fn(f'Model: "{model.name}"')
    print_fn(rule.replace("-", "="))
    for text in line(header):
        print_fn(text)
    print_fn(rule.replace("-", "="))
    for row in rows:
        for text in line(row):
            print_fn(text)
        print_fn(rule)
    trainable = model.trainable_weights
    non_trainable = model.non_trainable_weights
    total = trainable + non_trainable
    count = lambda ws: int(sum(math.prod(w.shape) for w in ws))  # noqa: E731
    print_fn(f" Total params: {count(total):,} ({_memory(total)})")
    print_fn(f" Trainable params: {count(trainable):,} ({_memory(trainable)})")
    print_fn(f" Non-trainable params: {count(non_trainable):,} ({_memory(non_trainable)})")
