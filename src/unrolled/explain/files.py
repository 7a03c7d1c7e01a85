"""Write everything explain/ can show about a layer or model into a folder (the CLI's `explain`)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

__all__ = ["recurrent_layers", "sample_input", "explain_to_dir"]


def recurrent_layers(obj: Any) -> list:
    """The recurrent layers of `obj` in order: itself if it is one, else those of a model."""
    from unrolled.layers.rnn import RNN

    if isinstance(obj, RNN):
        return [obj]
    found = []
    for layer in getattr(obj, "layers", []) or []:
        found += recurrent_layers(layer)
    return found


def sample_input(obj: Any, batch: int = 2, timesteps: int = 5, seed: int = 0) -> np.ndarray:
    """A small random input for `obj`, shaped from what it was built for (or `timesteps`)."""
    shape = None
    for candidate in [obj] + recurrent_layers(obj):
        shape = getattr(candidate, "_build_shape", None) or getattr(candidate, "input_shape", None)
        if shape is not None:
            break
    if shape is None or shape[-1] is None:
        raise ValueError(
            f"explain: cannot tell the input size of {type(obj).__name__} (it is not built); give "
            f"an input array (--input X.npy, shape (batch, timesteps, features)).")
    steps = shape[1] if len(shape) == 3 and shape[1] is not None else timesteps
    rng = np.random.default_rng(seed)
    return rng.normal(size=(batch, steps, int(shape[-1]))).astype("float32")


def _layer_files(layer: Any, x: np.ndarray, out_dir: str, prefix: str, written: list) -> None:
    from unrolled.explain import _text, animation, diagrams
    from unrolled.explain._trace import trace

    def path(name: str) -> str:
        return os.path.join(out_dir, prefix + name)

    with open(path("explain.txt"), "w", encoding="utf-8") as handle:
        handle.write(str(_text.explain(layer, x)) + "\n")
    written.append(path("explain.txt"))
    written += diagrams.rolled(layer, x).save(path("rolled"))
    written += diagrams.unrolled(layer, x).save(path("unrolled"))
    written += diagrams.cell_inside(layer, x).save(path("cell_inside"))
    tr = trace(layer, x)
    first = tr.cells[0]
    if hasattr(first, "get_initial_state"):
        cell_trace = trace(first, x[:, 0])
        written.append(animation.animate(cell_trace).save(path("cell.gif")))
    written.append(animation.animate(tr).save(path("sequence.gif")))
    written.append(tr.save_html(path("index.html")))


def explain_to_dir(obj: Any, x: Any = None, out_dir: str = "unrolled-explain",
                   echo: Any = print) -> list[str]:
    """Explain `obj` (a recurrent layer, or a model holding some) on `x` and write the files.

    For each recurrent layer: `explain.txt`, `rolled`, `unrolled` and `cell_inside` (.svg and
    .png), `cell.gif` (its first cell's step, sample by sample), `sequence.gif` and `index.html`
    (the interactive page). In a model, each layer's files are prefixed with its position and
    name, and each layer sees the input the layers before it produced.

    Returns:
        The paths written.
    """
    from unrolled.explain import _text

    layers_found = recurrent_layers(obj)
    if not layers_found:
        raise ValueError(f"explain: {type(obj).__name__} holds no recurrent layer to explain.")
    x = sample_input(obj) if x is None else np.asarray(x, dtype="float32")
    os.makedirs(out_dir, exist_ok=True)
    written: list[str] = []
    if obj is layers_found[0]:
        echo(str(_text.explain(obj, x)))
        _layer_files(obj, x, out_dir, "", written)
        return written
    h = x
    for i, layer in enumerate(getattr(obj, "layers", [])):
        if layer in layers_found:
            echo(str(_text.explain(layer, h)))
            _layer_files(layer, h, out_dir, f"{i}_{layer.name}_", written)
        try:
            h = layer(h)
        except Exception as error:  # a layer that needs what a plain call cannot give
            echo(f"(stopped after layer {i} '{layer.name}': {error})")
            break
        if isinstance(h, tuple):
            h = h[0]
        if np.ndim(h) != 3:
            break
    return written
