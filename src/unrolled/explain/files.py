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
    """A small random input for `obj`, shaped from what it was built for (or `timesteps`).

    A model that takes integer ids (it starts with an Embedding) gets ids in 1 .. input_dim - 1;
    if that Embedding has mask_zero, the first sample's last two steps are padding (0), so the
    mask shows in the traces.
    """
    rng = np.random.default_rng(seed)
    inputs = None
    try:
        inputs = list(obj.inputs) if getattr(obj, "_network", None) is not None else None
    except (AttributeError, ValueError):
        inputs = None
    if inputs:
        tensor = inputs[0]
        shape = tuple(tensor.shape)
        steps = shape[1] if len(shape) > 1 and shape[1] is not None else timesteps
        if not str(tensor.dtype).startswith("float"):
            from unrolled.layers.core import Embedding

            embedding = next((l for l in _walk(obj) if isinstance(l, Embedding)), None)
            high = embedding.input_dim if embedding is not None else 2
            ids = rng.integers(1, max(high, 2), size=(batch, steps))
            if embedding is not None and embedding.mask_zero and steps > 2:
                ids[0, -2:] = 0
            return ids.astype(tensor.dtype)
        if len(shape) == 3 and shape[-1] is not None:
            return rng.normal(size=(batch, steps, int(shape[-1]))).astype("float32")
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
    return rng.normal(size=(batch, steps, int(shape[-1]))).astype("float32")


def _walk(obj: Any) -> list:
    found = []
    for layer in getattr(obj, "layers", []) or []:
        found.append(layer)
        found += _walk(layer)
    return found


def _layer_files(tr: Any, out_dir: str, prefix: str, written: list) -> None:
    """The files of one traced recurrent layer: its input, mask and states as the model gave them."""
    from unrolled.explain import _text, animation, diagrams
    from unrolled.explain._trace import trace

    layer, x = tr.layer, tr.x

    def path(name: str) -> str:
        return os.path.join(out_dir, prefix + name)

    with open(path("explain.txt"), "w", encoding="utf-8") as handle:
        handle.write(str(_text.explain(layer, x)) + "\n")
    written.append(path("explain.txt"))
    written += diagrams.rolled(layer, x).save(path("rolled"))
    written += diagrams.unrolled(layer, x).save(path("unrolled"))
    written += diagrams.cell_inside(layer, x).save(path("cell_inside"))
    first = tr.cells[0]
    if hasattr(first, "get_initial_state"):
        # the first step the layer took, from the states it started with (one cell: its own)
        start = tr.initial_states if len(tr.cells) == 1 else None
        cell_trace = trace(first, x[:, tr.steps[0].t], initial_state=start)
        written.append(animation.animate(cell_trace).save(path("cell.gif")))
    written.append(animation.animate(tr).save(path("sequence.gif")))
    written.append(tr.save_html(path("index.html")))


def explain_to_dir(obj: Any, x: Any = None, out_dir: str = "unrolled-explain",
                   echo: Any = print) -> list[str]:
    """Explain `obj` (a recurrent layer, or a model or wrapper holding some) on `x`; write files.

    For each recurrent layer: `explain.txt`, `rolled`, `unrolled` and `cell_inside` (.svg and
    .png), `cell.gif` (its first cell's first step, sample by sample), `sequence.gif` and
    `index.html` (the interactive page). For a model or wrapper, the model runs once on `x` and
    each recurrent layer (a Bidirectional's two directions separately) is traced on the input,
    mask and states the model really gave it; its files are prefixed `<n>_<name>_`. The model's
    own `model.txt` (every layer, shapes, parameters), `index.html` (all the layers' pages behind
    a layer menu) and, per Bidirectional, `<name>_bidirectional` (.svg, .png) are written too.

    Returns:
        The paths written.
    """
    from unrolled.explain import _text
    from unrolled.explain._models import is_container, recurrent_parts, trace_model
    from unrolled.explain._trace import trace
    from unrolled.layers.wrappers import Bidirectional

    layers_found = recurrent_parts(obj)
    if not layers_found:
        raise ValueError(f"explain: {type(obj).__name__} holds no recurrent layer to explain.")
    if x is None:
        x = sample_input(obj)
    elif not is_container(obj) or np.asarray(x).dtype.kind == "f":
        x = np.asarray(x, dtype="float32")
    os.makedirs(out_dir, exist_ok=True)
    written: list[str] = []
    if not is_container(obj):
        echo(str(_text.explain(obj, x)))
        _layer_files(trace(obj, x), out_dir, "", written)
        return written
    mt = trace_model(obj, x)
    explanation = _text.explain(obj, x)
    echo(str(explanation))
    model_txt = os.path.join(out_dir, "model.txt")
    with open(model_txt, "w", encoding="utf-8") as handle:
        handle.write(str(explanation) + "\n")
    written.append(model_txt)
    for n, (name, tr) in enumerate(mt.traces.items()):
        _layer_files(tr, out_dir, f"{n}_{_safe(name)}_", written)
    wrappers = [obj] if isinstance(obj, Bidirectional) else [
        layer for layer in _all_layers(obj) if isinstance(layer, Bidirectional)]
    from unrolled.explain import diagrams

    for bi in wrappers:
        fwd = mt.traces.get(bi.forward_layer.name)
        bi_x = fwd.x if fwd is not None else None
        written += diagrams.bidirectional(bi, bi_x).save(
            os.path.join(out_dir, f"{_safe(bi.name)}_bidirectional"))
    written.append(mt.save_html(os.path.join(out_dir, "index.html")))
    return written


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _all_layers(obj: Any) -> list:
    from unrolled.explain._models import _children

    found = []
    for child in _children(obj):
        found.append(child)
        found += _all_layers(child)
    return found
