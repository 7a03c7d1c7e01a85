"""Models and wrappers: `explain` and `trace` on a Sequential or functional Model, a Bidirectional
or a TimeDistributed.

`trace_model` runs the object once, as usual, with a recorder on every recurrent layer inside it
(also those inside Bidirectional and TimeDistributed) and an observer on the model's graph, so each
recurrent layer is traced on the very input, mask and initial states the model handed it. Every
layer's output and output mask is kept too. Nothing is recomputed: the traces hold copies of the
arrays the layers produced.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["ModelTrace", "ModelExplanation", "BidirectionalExplanation", "trace_model",
           "explain_model", "explain_bidirectional", "recurrent_parts", "is_container"]


# ---------------------------------------------------------------- finding the recurrent layers


def _children(layer: Any) -> list:
    from unrolled.layers.wrappers import Bidirectional, TimeDistributed

    if isinstance(layer, Bidirectional):
        return [layer.forward_layer, layer.backward_layer]
    if isinstance(layer, TimeDistributed):
        return [layer.layer]
    if hasattr(layer, "_network") or hasattr(layer, "layers"):
        return list(getattr(layer, "layers", []) or [])
    return []


def recurrent_parts(obj: Any) -> list:
    """Every `RNN` inside `obj` (itself if it is one), in layer order; wrappers are opened."""
    from unrolled.layers.rnn import RNN

    if isinstance(obj, RNN):
        return [obj]
    found: list = []
    for child in _children(obj):
        for rnn in recurrent_parts(child):
            if not any(rnn is f for f in found):
                found.append(rnn)
    return found


def is_container(obj: Any) -> bool:
    """A model or wrapper that `trace_model` / `explain_model` handle."""
    from unrolled.layers.wrappers import Bidirectional, TimeDistributed
    from unrolled.models.model import Model

    return isinstance(obj, (Model, Bidirectional, TimeDistributed))


def _graphs(obj: Any) -> list:
    """The graphs a model runs (its own and those of models nested in it)."""
    found = []
    network = getattr(obj, "_network", None)
    if network is not None:
        found.append(network)
    for layer in getattr(obj, "layers", []) or []:
        if hasattr(layer, "_network"):
            found += _graphs(layer)
    return found


# ---------------------------------------------------------------- the trace


class ModelTrace:
    """What a model (or a wrapper) computed on one input: every layer's output, and a full `Trace`
    of every recurrent layer inside it, on the input, mask and states the model gave that layer.

    Made by `unrolled.trace(model, x)`.

    Attributes:
        obj: the traced model or wrapper.
        x: the input as given.
        result: exactly what the call returned.
        traces: `{name: Trace}` in the order the recurrent layers ran. A Bidirectional's directions
            appear as `forward_<name>` and `backward_<name>` (their layers' names); a layer called
            again (shared, or inside TimeDistributed) adds `<name>#1`, `<name>#2`, ...
        outputs: `{layer name: what that layer returned}` for every layer the model's graph called.
        masks: `{layer name: the mask that travels on with its output}` (None where there is none).
        inputs: `{layer name: the first argument it received}`.
        input_masks: `{layer name: the mask it was called with}` (None where there was none).
    """

    def __init__(self, obj: Any, x: Any, result: Any, traces: dict, outputs: dict, masks: dict,
                 inputs: dict, input_masks: dict):
        self.obj, self.x, self.result = obj, x, result
        self.traces, self.outputs, self.masks = traces, outputs, masks
        self.inputs, self.input_masks = inputs, input_masks

    @property
    def names(self) -> list[str]:
        """The recurrent layers' trace names, in the order they ran."""
        return list(self.traces)

    def __getitem__(self, name: str) -> Any:
        if name in self.traces:
            return self.traces[name]
        raise KeyError(f"ModelTrace: no recurrent layer traced as {name!r}; the traces are "
                       f"{self.names}. Every layer's output is in .outputs[name].")

    def __iter__(self):
        return iter(self.traces.values())

    def __len__(self) -> int:
        return len(self.traces)

    def __repr__(self) -> str:
        return (f"ModelTrace({type(self.obj).__name__} '{self.obj.name}', "
                f"{len(self.outputs)} layer calls, recurrent: {', '.join(self.names)})")

    def __str__(self) -> str:
        lines = [repr(self), ""]
        for name, value in self.outputs.items():
            shapes = [tuple(np.shape(v)) for v in _flat(value)]
            mask = self.masks.get(name)
            masked = ""
            if mask is not None and np.ndim(mask) == 2:
                masked = f"  mask: {int(np.sum(~np.asarray(mask, bool)))} masked steps"
            traced = [n for n, tr in self.traces.items() if _owner(self.obj, tr.layer) is not None
                      and _owner(self.obj, tr.layer).name == name]
            lines.append(f"  {name:<24} -> {', '.join(str(s) for s in shapes)}{masked}"
                         + (f"   traced: {', '.join(traced)}" if traced else ""))
        for name, tr in self.traces.items():
            lines += ["", f"[{name}]", str(tr)]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        from unrolled.explain.page import model_page_html

        return model_page_html(self, inline=True)

    def save_html(self, path: str) -> str:
        """Write one page holding every recurrent layer's page, chosen with a layer menu."""
        from unrolled.explain.page import model_page_html

        with open(path, "w", encoding="utf-8") as handle:
            handle.write(model_page_html(self))
        return path


def _flat(value: Any) -> list:
    if isinstance(value, (list, tuple)):
        return [v for item in value for v in _flat(item)]
    return [] if value is None else [value]


def _owner(obj: Any, rnn: Any) -> Any:
    """The layer of `obj`'s own list that holds `rnn` (itself, or the wrapper around it)."""
    for layer in getattr(obj, "layers", []) or []:
        if layer is rnn or any(r is rnn for r in recurrent_parts(layer)):
            return layer
    return None


def _copy(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return type(value)(_copy(v) for v in value) if isinstance(value, tuple) else \
            [_copy(v) for v in value]
    return None if value is None else np.array(value, copy=True)


def trace_model(obj: Any, x: Any, mask: Any = None, *, training: bool = False,
                initial_state: Any = None) -> ModelTrace:
    """Run `obj` (a Model, Sequential, Bidirectional or TimeDistributed) once, recording.

    See `unrolled.trace`. The recorders and the graph observer are removed again, even on error.
    """
    from unrolled.explain._trace import Trace, _copy_tree, _Recorder, leaf_cells
    from unrolled.models.model import Model

    owner = f"trace({type(obj).__name__} '{obj.name}')"
    rnns = recurrent_parts(obj)
    traces: dict[str, Any] = {}
    outputs: dict[str, Any] = {}
    masks: dict[str, Any] = {}
    inputs: dict[str, Any] = {}
    input_masks: dict[str, Any] = {}

    def unique(name: str, table: dict) -> str:
        if name not in table:
            return name
        n = 1
        while f"{name}#{n}" in table:
            n += 1
        return f"{name}#{n}"

    undo: list = []

    def intercept(rnn: Any) -> None:
        cells = leaf_cells(rnn.cell)
        recorder = _Recorder(cells)
        original = rnn._reference_loop

        def loop(x_in: np.ndarray, states: list, mask_in: Any, training_in: bool):
            recorder.steps, recorder.current = [], None
            initial = _copy_tree(states)
            last, seq, final = original(x_in, states, mask_in, training_in)
            output = seq if rnn.return_sequences else last
            result = (output, *final) if rnn.return_state else output
            mask_copy = None if mask_in is None else np.array(mask_in, dtype=bool)
            traces[unique(rnn.name, traces)] = Trace(
                rnn, cells, np.array(x_in, copy=True), mask_copy, initial, recorder.steps,
                result, is_cell=False, initial_state_arg=_copy_tree(initial), mask_arg=mask_copy)
            return last, seq, final

        for target in [rnn] + [c for c in cells if hasattr(c, "_record")]:
            undo.append((target, "_recorder", target.__dict__.get("_recorder", _MISSING)))
            target._recorder = recorder
        undo.append((rnn, "_reference_loop", _MISSING))
        rnn._reference_loop = loop

    def observe(node: Any, args: tuple, kwargs: dict, out: Any, out_masks: Any) -> None:
        name = unique(node.layer.name, outputs)
        outputs[name] = _copy(out)
        masks[name] = _copy(out_masks)
        inputs[name] = _copy(args[0]) if args else None
        input_masks[name] = _copy(kwargs.get("mask"))

    if isinstance(obj, Model) and getattr(obj, "_network", None) is None \
            and hasattr(obj, "_ensure_built"):
        obj._ensure_built(x)
    graphs = _graphs(obj)
    try:
        for rnn in rnns:
            intercept(rnn)
        for graph in graphs:
            undo.append((graph, "observer", _MISSING))
            graph.observer = observe
        if isinstance(obj, Model):
            if initial_state is not None:
                raise ValueError(f"{owner}: `initial_state` applies to a recurrent layer or "
                                 f"wrapper; a model takes its states from its inputs.")
            result = obj(x, training=training, mask=mask)
        else:
            kwargs = {"mask": mask, "training": training}
            if initial_state is not None:
                kwargs["initial_state"] = initial_state
            result = obj(x, **kwargs)
            outputs[obj.name] = _copy(result)
            masks[obj.name] = _copy(obj.compute_mask(x, mask))
            inputs[obj.name] = _copy(x)
            input_masks[obj.name] = _copy(mask)
    finally:
        for target, attr, previous in reversed(undo):
            if previous is _MISSING:
                target.__dict__.pop(attr, None)
            else:
                setattr(target, attr, previous)
    return ModelTrace(obj, x, result, traces, outputs, masks, inputs, input_masks)


_MISSING = object()


# ---------------------------------------------------------------- explaining


def _act(fn: Any) -> str:
    from unrolled.explain._text import _activation_name

    return _activation_name(fn)


def _zeros(shape: Any) -> Any:
    """A no-memory array of `shape` (only its shape is read), or None when a size is unknown."""
    if shape is None or any(s is None for s in shape):
        return None
    return np.broadcast_to(np.zeros((), dtype="float32"), tuple(int(s) for s in shape))


class BidirectionalExplanation:
    """`explain(Bidirectional(...))`: both directions' explanations, the merge and the returns.

    Attributes: title, forward and backward (`Explanation`s), merge_mode, merge (the merge as a
    formula), returns (`(name, shape, what)`), param_count (equals `count_params()`).
    """

    def __init__(self, layer: Any, x: Any = None):
        from unrolled.explain._text import explain

        self.layer = layer
        self.title = (f"Bidirectional '{layer.name}' around {type(layer.forward_layer).__name__}, "
                      f"merge_mode={layer.merge_mode!r}")
        self.forward = explain(layer.forward_layer, x)
        self.backward = explain(layer.backward_layer, x)
        self.merge_mode = layer.merge_mode
        fwd_units = self.forward.sizes["units"]
        bwd_units = self.backward.sizes["units"]
        size = self.forward.sizes
        batch, steps = size["batch"], size["timesteps"]
        seq = layer.return_sequences
        merged_units = {"concat": (fwd_units + bwd_units) if isinstance(fwd_units, int)
                        and isinstance(bwd_units, int) else f"{fwd_units}+{bwd_units}"}.get(
            layer.merge_mode, fwd_units)
        self.merge = {
            "concat": "y = [y_fwd | y_bwd]   (concatenated on the last axis)",
            "sum": "y = y_fwd + y_bwd", "ave": "y = (y_fwd + y_bwd) / 2",
            "mul": "y = y_fwd * y_bwd",
            None: "y = (y_fwd, y_bwd)   (no merge: both returned)"}[layer.merge_mode]
        what_bwd = ("backward_layer's outputs flipped back into time order, so y_bwd[:, t] has "
                    "read x[:, t:] (steps t .. T-1)" if seq else
                    "backward_layer's last output: it has read the whole sequence from the end to "
                    "x[:, 0]")
        self.directions = [
            ("forward", layer.forward_layer.name, "reads x[:, 0], x[:, 1], ... x[:, T-1]"),
            ("backward", layer.backward_layer.name, "reads x[:, T-1], ... x[:, 0] "
             "(go_backwards=True); " + what_bwd)]
        out_shape = (batch, steps, merged_units) if seq else (batch, merged_units)
        self.returns: list = []
        if layer.merge_mode is None:
            self.returns += [("y_fwd", (batch, steps, fwd_units) if seq else (batch, fwd_units),
                              "the forward output"),
                             ("y_bwd", (batch, steps, bwd_units) if seq else (batch, bwd_units),
                              "the backward output, in time order")]
        else:
            self.returns.append(("output", out_shape, self.merge))
        if layer.return_state:
            for direction, e in (("forward", self.forward), ("backward", self.backward)):
                for name, shape, _ in e.returns[1:]:
                    self.returns.append((f"{direction}_{name}", shape,
                                         f"the {direction} layer's {name}"))

    @property
    def param_count(self) -> Any:
        a, b = self.forward.param_count, self.backward.param_count
        return None if a is None or b is None else a + b

    def summary_lines(self) -> list[str]:
        out = []
        for direction, name, reads in self.directions:
            e = self.forward if direction == "forward" else self.backward
            out.append(f"{direction} '{name}': {reads}")
            out += [f"    {line}" for c in e.cells for line in c.keras]
        out.append(f"merge ({self.merge_mode}): {self.merge}")
        return out

    def __str__(self) -> str:
        from unrolled.explain._text import _shape_text

        out = [self.title, "=" * len(self.title), ""]
        out += self.summary_lines()
        out += ["", "The call returns:"]
        out += [f"    {n:<22} {_shape_text(s):<16} {w}" for n, s, w in self.returns]
        out += ["", f"Parameters: forward {self.forward.param_total_text} + backward "
                    f"{self.backward.param_total_text} = {self.param_count}", ""]
        for e in (self.forward, self.backward):
            out += ["-" * 60, str(e), ""]
        return "\n".join(out)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        import html

        return ("<div><pre style='white-space:pre-wrap'>" + html.escape(str(self)) + "</pre>"
                "</div>")


def explain_bidirectional(layer: Any, x: Any = None) -> BidirectionalExplanation:
    return BidirectionalExplanation(layer, x)


def _layer_summary(layer: Any, x: Any) -> tuple[list[str], Any]:
    """One layer's equation lines and its detailed explanation (recurrent layers) or None."""
    from unrolled.explain._text import explain
    from unrolled.layers import core
    from unrolled.layers.rnn import RNN
    from unrolled.layers.wrappers import Bidirectional, TimeDistributed

    if isinstance(layer, RNN):
        e = explain(layer, x)
        lines = [line for c in e.cells for line in c.keras]
        lines.append("returns " + ", ".join(f"{n} {s}" for n, s, _ in e.returns))
        return lines, e
    if isinstance(layer, Bidirectional):
        e = BidirectionalExplanation(layer, x)
        return e.summary_lines(), e
    if isinstance(layer, TimeDistributed):
        inner_x = None if x is None else _zeros((x.shape[0],) + tuple(x.shape[2:]))
        inner, detail = _layer_summary(layer.layer, inner_x)
        return ([f"y[:, t] = {type(layer.layer).__name__} '{layer.layer.name}'(x[:, t]) "
                 f"for every t, the same weights each step"] + [f"    {l}" for l in inner],
                detail)
    if isinstance(layer, core.Dense):
        b = " + b" if layer.use_bias else ""
        kernel = getattr(layer, "kernel", None)
        n_in = kernel.shape[0] if kernel is not None else x.shape[-1] if x is not None else "in"
        return [f"y = {_act(layer.activation)}(x W{b})   W = kernel ({n_in}, {layer.units}), "
                f"on the last axis"], None
    if isinstance(layer, core.Embedding):
        lines = [f"y = E[ids]   E = embeddings ({layer.input_dim}, {layer.output_dim}): one row "
                 f"per id"]
        if layer.mask_zero:
            lines.append("mask = (ids != 0): id 0 is padding, its steps are skipped downstream")
        return lines, None
    if isinstance(layer, core.Masking):
        return [f"mask = any(x != {layer.mask_value}, axis=-1);  y = x * mask   (steps whose "
                f"features all equal {layer.mask_value} are skipped downstream)"], None
    if isinstance(layer, core.Dropout):
        return [f"y = x at inference; in training each entry is zeroed with probability "
                f"{layer.rate} and the rest scaled by 1/(1 - {layer.rate})"], None
    if type(layer).__name__ == "InputLayer":
        return ["the model's input"], None
    if hasattr(layer, "layers"):
        return [f"a nested model of {len(layer.layers)} layers"], None
    return [f"{type(layer).__name__}.call(x)"], None


def _symbolic(shape: Any) -> str:
    parts = []
    for axis, size in enumerate(shape):
        if size is None:
            size = "batch" if axis == 0 else "timesteps" if axis == 1 else "?"
        parts.append(str(size))
    return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"


class ModelExplanation:
    """`explain(model)`: one row per layer (its equation, input and output shapes in your sizes,
    its parameters), the detailed explanation of every recurrent layer, and the totals.

    Attributes:
        title: what was explained.
        rows: `(name, kind, lines, in_shape, out_shape, params)` per layer call, in graph order.
        details: `{layer name: Explanation or BidirectionalExplanation}` for the recurrent layers.
        param_count: the sum of the rows' parameters, equal to `model.count_params()`.
    """

    def __init__(self, title: str, rows: list, details: dict, sizes_from: str):
        self.title, self.rows, self.details, self.sizes_from = title, rows, details, sizes_from

    @property
    def param_count(self) -> int:
        return int(sum(row[5] for row in self.rows))

    def __getitem__(self, name: str) -> Any:
        return self.details[name]

    def __str__(self) -> str:
        out = [self.title, "=" * len(self.title), f"(shapes from {self.sizes_from})", ""]
        for name, kind, lines, in_shape, out_shape, params in self.rows:
            out.append(f"{name} ({kind})   {in_shape} -> {out_shape}   params {params:,}")
            out += [f"    {line}" for line in lines]
            out.append("")
        out.append(f"Total parameters: {self.param_count:,}")
        for name, e in self.details.items():
            out += ["", "-" * 72, str(e)]
        return "\n".join(out)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        import html

        from unrolled.explain._text import math_html

        e = html.escape
        head = "".join(f"<th style='text-align:left;padding:2px 10px;border-bottom:1px solid #999'>"
                       f"{h}</th>" for h in ("layer", "computes", "in", "out", "params"))
        body = "".join(
            f"<tr><td style='padding:2px 10px'><b>{e(name)}</b><br><i>{e(kind)}</i></td>"
            f"<td style='padding:2px 10px'>{'<br>'.join(math_html(l) for l in lines)}</td>"
            f"<td style='padding:2px 10px'><code>{e(i)}</code></td>"
            f"<td style='padding:2px 10px'><code>{e(o)}</code></td>"
            f"<td style='padding:2px 10px;text-align:right'>{p:,}</td></tr>"
            for name, kind, lines, i, o, p in self.rows)
        return (f"<div style='font-family:sans-serif'><h3>{e(self.title)}</h3>"
                f"<table style='border-collapse:collapse'><tr>{head}</tr>{body}</table>"
                f"<p>Total parameters: <b>{self.param_count:,}</b></p>"
                + "".join(f"<details><summary>{e(n)}</summary>{d._repr_html_()}</details>"
                          for n, d in self.details.items()) + "</div>")


def explain_model(obj: Any, x: Any = None) -> Any:
    """Explain a model (or a wrapper): see `unrolled.explain`."""
    from unrolled.layers.wrappers import Bidirectional, TimeDistributed
    from unrolled.models.model import Model

    if isinstance(obj, Bidirectional):
        return BidirectionalExplanation(obj, x)
    if isinstance(obj, TimeDistributed):
        shape = np.shape(x) if x is not None else obj._build_shape
        lines, detail = _layer_summary(obj, _zeros(shape) if shape is not None else None)
        title = f"TimeDistributed '{obj.name}'"
        return ModelExplanation(title, [(obj.name, "TimeDistributed", lines, _symbolic(shape)
                                         if shape else "?", _symbolic(
                                             obj.compute_output_shape(shape)) if shape else "?",
                                         obj.count_params())],
                                {obj.name: detail} if detail is not None else {},
                                "x" if x is not None else "the build shape")
    if not isinstance(obj, Model):  # pragma: no cover - dispatch guards this
        raise TypeError(f"explain_model: expected a model or wrapper, got {type(obj).__name__}.")
    if getattr(obj, "_network", None) is None:
        if x is None:
            raise ValueError(
                f"explain: {type(obj).__name__} '{obj.name}' is not built, so its sizes are "
                f"unknown; pass an input x (explain(model, x)) or start it with an Input.")
        obj._ensure_built(x)
    graph = obj._network
    from unrolled.models.node import flatten_shapes, map_structure

    x_list = None
    if x is not None:
        x_list = [x] if len(graph.inputs) == 1 else list(x)
    shapes: dict[int, tuple] = {}
    for k, tensor in enumerate(graph.inputs):
        shapes[id(tensor)] = (tuple(np.shape(x_list[k])) if x_list is not None
                              else tuple(tensor.shape))
    rows, details = [], {}
    seen: dict[str, int] = {}
    for depth in sorted(graph.nodes_by_depth, reverse=True):
        for node in graph.nodes_by_depth[depth]:
            layer = node.layer
            if node.is_input:
                continue
            first = map_structure(lambda t: shapes[id(t)], node.first_arg)
            try:
                out = layer.compute_output_shape(first)
            except Exception:  # fall back to the recorded symbolic shapes
                out = [tuple(t.shape) for t in node.outputs]
            flat_out = flatten_shapes(out)
            for tensor, shape in zip(node.outputs, flat_out):
                shapes[id(tensor)] = tuple(shape)
            first_shape = first if isinstance(first, tuple) else flatten_shapes(first)[0]
            params = layer.count_params() if seen.get(layer.name) is None else 0
            seen[layer.name] = seen.get(layer.name, 0) + 1
            lines, detail = _layer_summary(layer, _zeros(first_shape))
            if detail is not None and layer.name not in details:
                details[layer.name] = detail
            out_text = ", ".join(_symbolic(s) for s in flat_out)
            rows.append((layer.name, type(layer).__name__, lines, _symbolic(first_shape),
                         out_text, int(params)))
    title = f"{type(obj).__name__} '{obj.name}': {len(rows)} layers"
    return ModelExplanation(title, rows, details,
                            "x" if x is not None else "the model's declared input shape")
