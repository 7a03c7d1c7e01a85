"""`explain`: a layer's equation, symbols, shapes, API names and parameter count, from the object.

Everything is read off the live layer (its cells, their weights and options, the shape it was built
for or the input given); nothing is computed here but shapes and counts.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

__all__ = ["explain", "Explanation", "Symbol", "CellExplanation"]

GATES = {
    # class name: (block names in column order, what each is, its activation attribute)
    "LSTMCell": (["i", "f", "c", "o"], ["input gate", "forget gate", "candidate cell (g)",
                                        "output gate"],
                 ["recurrent_activation", "recurrent_activation", "activation",
                  "recurrent_activation"]),
    "GRUCell": (["z", "r", "h"], ["update gate", "reset gate", "candidate state (hh)"],
                ["recurrent_activation", "recurrent_activation", "activation"]),
}


class Symbol:
    """One symbol of the equation: its name, shape in the user's sizes, and where it lives."""

    def __init__(self, name: str, shape: tuple, meaning: str, api: str = "", torch: str = ""):
        self.name, self.shape, self.meaning, self.api, self.torch = name, shape, meaning, api, torch

    def __repr__(self) -> str:
        return f"Symbol({self.name!r}, {self.shape}, {self.meaning!r})"


class CellExplanation:
    """What one cell computes (one entry per cell of a stack).

    Attributes: index, kind, units, textbook and keras (equation lines), symbols, params
    (`(name, count)`), gates (`(name, meaning, columns, activation)` for LSTM/GRU), torch_notes.
    """

    def __init__(self, index: int, kind: str, units: Any, textbook: list[str], keras: list[str],
                 symbols: list[Symbol], params: list[tuple[str, Any]],
                 gates: list[tuple[str, str, str, str]] | None = None,
                 torch_notes: list[str] | None = None):
        self.index, self.kind, self.units = index, kind, units
        self.textbook, self.keras, self.symbols, self.params = textbook, keras, symbols, params
        self.gates = gates or []
        self.torch_notes = torch_notes or []

    @property
    def param_count(self) -> Any:
        counts = [c for _, c in self.params]
        return sum(counts) if all(isinstance(c, (int, np.integer)) for c in counts) else None


def _shape_text(shape: Any) -> str:
    if isinstance(shape, list):
        return "[" + ", ".join(_shape_text(s) for s in shape) + "]"
    parts = [str(s) for s in shape]
    return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"


def _activation_name(fn: Any) -> str:
    if fn is None:
        return "linear"
    try:
        from unrolled import activations

        return str(activations.serialize(fn))
    except Exception:  # a user's callable
        return getattr(fn, "__name__", type(fn).__name__)


def _mul(a: Any, b: Any) -> Any:
    if isinstance(a, (int, np.integer)) and isinstance(b, (int, np.integer)):
        return int(a) * int(b)
    return f"{a}·{b}"


class Explanation:
    """The result of `unrolled.explain`: `str()` is plain text, `_repr_html_()` is HTML.

    Attributes:
        title: what was explained.
        sizes: {"batch", "timesteps", "features"} -> an int, or the symbolic name when unknown.
        sizes_from: "x", "the build shape" or "nothing (symbolic)".
        cells: one `CellExplanation` per computing cell, in depth order.
        symbols: every symbol of every cell plus the sequence-level ones.
        param_count: the number of parameters (an int once the shapes are known), equal to
            `layer.count_params()` for a built layer.
        returns: `(name, shape, what)` for each thing the call returns, under the layer's options.
        state_structure: how the states nest, e.g. "[[h1 (2, 4)], [h2 (2, 3)]]".
        notes: the options in force and what they change.
    """

    def __init__(self, title: str, sizes: dict, sizes_from: str, cells: list[CellExplanation],
                 sequence_symbols: list[Symbol], returns: list[tuple[str, tuple, str]],
                 state_structure: str, notes: list[str], is_layer: bool):
        self.title = title
        self.sizes = sizes
        self.sizes_from = sizes_from
        self.cells = cells
        self.sequence_symbols = sequence_symbols
        self.returns = returns
        self.state_structure = state_structure
        self.notes = notes
        self.is_layer = is_layer

    @property
    def symbols(self) -> list[Symbol]:
        return list(self.sequence_symbols) + [s for c in self.cells for s in c.symbols]

    def symbol(self, name: str) -> Symbol:
        """The symbol called `name` (e.g. "U", "W2", "h_t")."""
        for s in self.symbols:
            if s.name == name:
                return s
        raise KeyError(f"Explanation.symbol: no symbol {name!r}; there are "
                       f"{[s.name for s in self.symbols]}.")

    @property
    def param_count(self) -> Any:
        counts = [c.param_count for c in self.cells]
        return sum(counts) if all(c is not None for c in counts) else None

    @property
    def param_total_text(self) -> str:
        """The total as text: '39', or '3·features + 24' before the feature size is known."""
        counts = [c for cell in self.cells for _, c in cell.params]
        known = sum(int(c) for c in counts if isinstance(c, (int, np.integer)))
        symbolic = [str(c) for c in counts if not isinstance(c, (int, np.integer))]
        return " + ".join(symbolic + ([str(known)] if known or not symbolic else []))

    # ---------------------------------------------------------------- text

    def __str__(self) -> str:
        out: list[str] = [self.title, "=" * len(self.title), ""]
        size_line = ", ".join(f"{k}={v}" for k, v in self.sizes.items())
        out.append(f"Sizes: {size_line}   (from {self.sizes_from})")
        out.append("")
        for cell in self.cells:
            if len(self.cells) > 1:
                out.append(f"Cell {cell.index + 1} of {len(self.cells)}: {cell.kind}, "
                           f"units={cell.units}")
            out.append("  textbook (column vectors):")
            out += [f"      {line}" for line in cell.textbook]
            out.append("  unrolled and Keras (row vectors, weights on the right):")
            out += [f"      {line}" for line in cell.keras]
            if cell.gates:
                out.append("  gates: column blocks of the fused kernel, recurrent_kernel and bias:")
                for name, meaning, cols, act in cell.gates:
                    out.append(f"      {name:<3} {meaning:<22} columns {cols:<12} {act}")
            out.append("")
        rows = [("symbol", "shape", "meaning", "unrolled / Keras", "PyTorch")]
        rows += [(s.name, _shape_text(s.shape), s.meaning, s.api, s.torch) for s in self.symbols]
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        for n, row in enumerate(rows):
            out.append("  " + "  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
            if n == 0:
                out.append("  " + "  ".join("-" * w for w in widths))
        out.append("")
        for cell in self.cells:
            for note in cell.torch_notes:
                out.append(f"  PyTorch: {note}")
        out.append("")
        parts = [f"{name} {count}" for c in self.cells for name, count in c.params]
        out.append(f"Parameters: {' + '.join(parts)} = {self.param_total_text}")
        out.append("")
        out.append("States: " + self.state_structure)
        out.append("The call returns:")
        for name, shape, what in self.returns:
            out.append(f"    {name:<14} {_shape_text(shape):<16} {what}")
        if self.notes:
            out.append("")
            out += [f"  * {note}" for note in self.notes]
        return "\n".join(out)

    def __repr__(self) -> str:
        return str(self)

    # ---------------------------------------------------------------- HTML

    def _repr_html_(self) -> str:
        import html

        e = html.escape
        parts = ['<div class="unrolled-explain" style="font-family:sans-serif;line-height:1.4">',
                 f"<h3 style='margin:4px 0'>{e(self.title)}</h3>",
                 "<p>Sizes: " + ", ".join(f"<b>{e(k)}</b> = {e(str(v))}"
                                          for k, v in self.sizes.items())
                 + f" <i>(from {e(self.sizes_from)})</i></p>"]
        for cell in self.cells:
            if len(self.cells) > 1:
                parts.append(f"<h4 style='margin:6px 0'>Cell {cell.index + 1}: {e(cell.kind)}, "
                             f"units = {e(str(cell.units))}</h4>")
            parts.append("<table style='border-collapse:collapse'><tr><td style='padding:2px 12px"
                         " 2px 0;color:#666'>textbook</td><td>"
                         + "<br>".join(math_html(l) for l in cell.textbook) + "</td></tr>"
                         "<tr><td style='padding:2px 12px 2px 0;color:#666'>unrolled / Keras</td>"
                         "<td>" + "<br>".join(math_html(l) for l in cell.keras) + "</td></tr>"
                         "</table>")
            if cell.gates:
                parts.append("<p>Gates (column blocks of kernel, recurrent_kernel, bias): "
                             + "; ".join(f"<b>{e(n)}</b> {e(m)} = columns {e(c)} ({e(a)})"
                                         for n, m, c, a in cell.gates) + "</p>")
        head = "".join(f"<th style='text-align:left;padding:2px 10px;border-bottom:1px solid #999'>"
                       f"{h}</th>" for h in ("symbol", "shape", "meaning", "unrolled / Keras",
                                             "PyTorch"))
        body = "".join(
            "<tr>" + "".join(f"<td style='padding:2px 10px'>{v}</td>" for v in (
                math_html(s.name), f"<code>{e(_shape_text(s.shape))}</code>", e(s.meaning),
                f"<code>{e(s.api)}</code>" if s.api else "",
                f"<code>{e(s.torch)}</code>" if s.torch else "")) + "</tr>"
            for s in self.symbols)
        parts.append(f"<table style='border-collapse:collapse;margin:8px 0'><tr>{head}</tr>"
                     f"{body}</table>")
        notes = [n for c in self.cells for n in c.torch_notes]
        if notes:
            parts.append("<p>PyTorch: " + " ".join(e(n) for n in notes) + "</p>")
        plist = " + ".join(f"{e(name)} {e(str(count))}" for c in self.cells
                           for name, count in c.params)
        parts.append(f"<p>Parameters: {plist} = <b>{e(self.param_total_text)}</b></p>")
        parts.append(f"<p>States: <code>{e(self.state_structure)}</code></p>")
        parts.append("<p>The call returns:</p><ul>" + "".join(
            f"<li><code>{e(n)}</code> <code>{e(_shape_text(s))}</code>: {e(w)}</li>"
            for n, s, w in self.returns) + "</ul>")
        if self.notes:
            parts.append("<ul>" + "".join(f"<li>{e(n)}</li>" for n in self.notes) + "</ul>")
        parts.append("</div>")
        return "".join(parts)


_SUB = re.compile(r"([A-Za-z][0-9]*)_\{([^}]*)\}|([A-Za-z][0-9]*)_([A-Za-z0-9-]+)")


def math_html(text: str) -> str:
    """'h_{t-1} W' -> 'h<sub>t-1</sub> W' in italic serif, for the HTML views."""
    import html
    def sub(match: re.Match) -> str:
        base = match.group(1) or match.group(3)
        low = match.group(2) if match.group(1) else match.group(4)
        return f"{base}<sub>{html.escape(low)}</sub>"

    escaped = html.escape(text)
    return (f"<span style='font-family:Georgia,serif;font-style:italic'>"
            f"{_SUB.sub(sub, escaped)}</span>")


# ---------------------------------------------------------------- one cell


def _weight_shape(cell: Any, attr: str, fallback: tuple) -> tuple:
    value = getattr(cell, attr, None) if getattr(cell, "built", False) else None
    return tuple(value.shape) if value is not None else fallback


def describe_cell(cell: Any, index: int, depth: int, features: Any, batch: Any) -> CellExplanation:
    """The equations, symbols and parameters of one cell reading `features` numbers per step."""
    kind = type(cell).__name__
    k = str(index + 1) if depth > 1 else ""
    units = getattr(cell, "units", None)
    if units is None:
        size = getattr(cell, "state_size", "units")
        units = size if isinstance(size, (int, np.integer)) else size[0]
    if getattr(cell, "built", False) and getattr(cell, "kernel", None) is not None:
        features = cell.kernel.shape[0]
    x_name = "x_t" if index == 0 else f"h{index}_t"
    x_meaning = "input at step t" if index == 0 else f"cell {index}'s new state, this cell's input"
    h = f"h{k}"
    if kind in GATES:
        return _describe_gated(cell, kind, index, k, units, features, batch, x_name, x_meaning)
    if not _is_simple(cell):
        return _describe_generic(cell, kind, index, k, units, features, batch, x_name, x_meaning)

    act = _activation_name(getattr(cell, "activation", None))
    use_bias = getattr(cell, "bias", None) is not None or (
        not getattr(cell, "built", False) and getattr(cell, "use_bias", True))
    U, W, b = f"U{k}", f"W{k}", f"b{k}"
    plus_b = f" + {b}" if use_bias else ""
    textbook = [f"{h}_t = {act}({W} {h}_{{t-1}} + {U} {x_name}{plus_b})"]
    keras = [f"{h}_t = {act}({x_name} {U} + {h}_{{t-1}} {W}{plus_b})"]
    u_shape = _weight_shape(cell, "kernel", (features, units))
    w_shape = _weight_shape(cell, "recurrent_kernel", (units, units))
    l = f"_l{index}"
    symbols = [Symbol(x_name, (batch, features), x_meaning, "x[:, t, :]")] if index == 0 else []
    symbols += [
        Symbol(f"{h}_{{t-1}}", (batch, units), "previous state (zeros at the start)",
               "initial_state" if depth == 1 else f"initial_state[{index}]"),
        Symbol(U, u_shape, "input weights (features -> units)", _api(cell, "kernel", U, depth),
               f"weight_ih{l} = {U}.T  {_shape_text(u_shape[::-1])}"),
        Symbol(W, w_shape, "state weights (units -> units)",
               _api(cell, "recurrent_kernel", W, depth),
               f"weight_hh{l} = {W}.T  {_shape_text(w_shape[::-1])}"),
    ]
    params = [(U, _mul(*u_shape)), (W, _mul(*w_shape))]
    if use_bias:
        symbols.append(Symbol(b, (units,), "bias", _api(cell, "bias", b, depth),
                              f"bias_ih{l} + bias_hh{l} = {b}"))
        params.append((b, units))
    symbols.append(Symbol(f"{h}_t", (batch, units), "new state, also the cell's output"))
    notes = [f"nn.RNN(nonlinearity='{act}') computes the same with weight_ih{l} = {U}.T, "
             f"weight_hh{l} = {W}.T, and {b} split between bias_ih{l} and bias_hh{l} (only "
             f"their sum matters: put {b} in one, zeros in the other)."] if act in ("tanh", "relu") \
        else [f"nn.RNN supports only tanh and relu; this cell uses {act}."]
    return CellExplanation(index, kind, units, textbook, keras, symbols, params, [], notes)


def _is_simple(cell: Any) -> bool:
    from unrolled.layers.simple_rnn import SimpleRNNCell

    return isinstance(cell, SimpleRNNCell)


def _api(cell: Any, attr: str, alias: str, depth: int) -> str:
    name = getattr(cell, "name", "")
    alias_note = f" (alias .{alias.rstrip('0123456789')})" if depth == 1 else ""
    return f"{attr}{alias_note}" + (f" of '{name}'" if depth > 1 and name else "")


def _describe_gated(cell: Any, kind: str, index: int, k: str, units: Any, features: Any,
                    batch: Any, x_name: str, x_meaning: str) -> CellExplanation:
    blocks, meanings, acts = GATES[kind]
    n = len(blocks)
    h, c = f"h{k}", f"c{k}"
    U, W, b = f"U{k}", f"W{k}", f"b{k}"
    act_names = [_activation_name(getattr(cell, a, None)) for a in acts]
    u_shape = _weight_shape(cell, "kernel", (features, _mul(n, units)))
    w_shape = _weight_shape(cell, "recurrent_kernel", (units, _mul(n, units)))
    use_bias = getattr(cell, "bias", None) is not None or (
        not getattr(cell, "built", False) and getattr(cell, "use_bias", True))
    reset_after = bool(getattr(cell, "reset_after", False))
    b_shape = _weight_shape(cell, "bias", ((2, _mul(n, units)) if kind == "GRUCell" and reset_after
                                           else (_mul(n, units),)))
    gates = []
    for g, (name, meaning, act) in enumerate(zip(blocks, meanings, act_names)):
        if isinstance(units, (int, np.integer)):
            cols = f"[{g * units}:{(g + 1) * units}]"
        else:
            cols = f"[{g}u:{g + 1}u]"
        gates.append((name, meaning, cols, act))
    l = f"_l{index}"
    sig, tanh = act_names[0], act_names[-1] if kind == "GRUCell" else act_names[2]
    if kind == "LSTMCell":
        out_act = _activation_name(getattr(cell, "activation", None))
        textbook = [f"i = {sig}(W_i {h}_{{t-1}} + U_i {x_name} + b_i),  f, o likewise",
                    f"g = {tanh}(W_c {h}_{{t-1}} + U_c {x_name} + b_c)",
                    f"{c}_t = f * {c}_{{t-1}} + i * g",
                    f"{h}_t = o * {out_act}({c}_t)"]
        keras = [f"z = {x_name} {U} + {h}_{{t-1}} {W} + {b}        (batch, 4·units), "
                 f"columns [i | f | c | o]",
                 f"i, f, o = {sig}(z_i), {sig}(z_f), {sig}(z_o);   g = {tanh}(z_c)",
                 f"{c}_t = f * {c}_{{t-1}} + i * g;   {h}_t = o * {out_act}({c}_t)"]
        states = [Symbol(f"{h}_{{t-1}}", (batch, units), "previous hidden state"),
                  Symbol(f"{c}_{{t-1}}", (batch, units), "previous cell state")]
        new = [Symbol(f"{h}_t", (batch, units), "new hidden state, the output"),
               Symbol(f"{c}_t", (batch, units), "new cell state")]
        torch_note = (f"nn.LSTM uses the same gate order (i, f, g, o): weight_ih{l} = {U}.T, "
                      f"weight_hh{l} = {W}.T, {b} split between bias_ih{l} and bias_hh{l}.")
    else:
        textbook = [f"z = {sig}(W_z {h}_{{t-1}} + U_z {x_name} + b_z),  r likewise",
                    (f"hh = {tanh}(U_h {x_name} + r * (W_h {h}_{{t-1}} + b_h'))" if reset_after
                     else f"hh = {tanh}(W_h (r * {h}_{{t-1}}) + U_h {x_name} + b_h)"),
                    f"{h}_t = z * {h}_{{t-1}} + (1 - z) * hh"]
        keras = [f"x_z, x_r, x_h = split({x_name} {U} + {b}[0]), columns [z | r | h]"
                 if reset_after else f"x_z, x_r, x_h = split({x_name} {U} + {b})",
                 f"z = {sig}(x_z + ({h}_{{t-1}} {W} + {b}[1])_z),  r likewise" if reset_after
                 else f"z = {sig}(x_z + {h}_{{t-1}} {W}_z),  r likewise",
                 f"hh = {tanh}(x_h + r * ({h}_{{t-1}} {W} + {b}[1])_h)" if reset_after
                 else f"hh = {tanh}(x_h + (r * {h}_{{t-1}}) {W}_h)",
                 f"{h}_t = z * {h}_{{t-1}} + (1 - z) * hh"]
        states = [Symbol(f"{h}_{{t-1}}", (batch, units), "previous state")]
        new = [Symbol(f"{h}_t", (batch, units), "new state, the output")]
        torch_note = (f"nn.GRU orders the blocks r, z, n (Keras: z, r, h): weight_ih{l} = "
                      f"{U}[:, r|z|h].T, weight_hh{l} = {W}[:, r|z|h].T"
                      + (f", bias_ih{l} = {b}[0] and bias_hh{l} = {b}[1] reordered likewise"
                         if reset_after else
                         "; PyTorch only has the reset_after=True form (this cell is not)") + ".")
    symbols = [Symbol(x_name, (batch, features), x_meaning, "x[:, t, :]")] if index == 0 else []
    symbols += states
    symbols += [Symbol(U, u_shape, f"input weights, {n} column blocks",
                       _api(cell, "kernel", U, 1 if not k else 2),
                       f"weight_ih{l}  {_shape_text(u_shape[::-1])}"),
                Symbol(W, w_shape, f"state weights, {n} column blocks",
                       _api(cell, "recurrent_kernel", W, 1 if not k else 2),
                       f"weight_hh{l}  {_shape_text(w_shape[::-1])}")]
    params = [(U, _mul(*u_shape)), (W, _mul(*w_shape))]
    if use_bias:
        symbols.append(Symbol(b, b_shape, "bias" + (" (row 0 input, row 1 recurrent)"
                                                    if len(b_shape) == 2 else ""),
                              _api(cell, "bias", b, 1 if not k else 2),
                              f"bias_ih{l}, bias_hh{l}"))
        params.append((b, _mul(*b_shape) if len(b_shape) == 2 else b_shape[0]))
    symbols += new
    return CellExplanation(index, kind, units, textbook, keras, symbols, params, gates,
                           [torch_note])


def _describe_generic(cell: Any, kind: str, index: int, k: str, units: Any, features: Any,
                      batch: Any, x_name: str, x_meaning: str) -> CellExplanation:
    symbols = [Symbol(x_name, (batch, features), x_meaning, "x[:, t, :]")] if index == 0 else []
    params = []
    for weight in getattr(cell, "weights", []) or []:
        symbols.append(Symbol(f"{weight.name}{k}", tuple(weight.shape), "weight", weight.name))
        params.append((weight.name, int(np.prod(weight.shape))))
    symbols.append(Symbol(f"out{k}_t", (batch, units), "the cell's output"))
    line = f"out{k}_t, states{k}_t = {kind}.call({x_name}, states{k}_{{t-1}})"
    return CellExplanation(index, kind, units, [line], [line], symbols, params)


# ---------------------------------------------------------------- the whole object


def _state_structure(cell: Any, batch: Any, depth_names: bool) -> str:
    from unrolled.explain._trace import leaf_cells

    leaves = leaf_cells(cell)
    parts = []
    for i, leaf in enumerate(leaves):
        k = str(i + 1) if depth_names else ""
        names = getattr(leaf, "state_names", None)
        sizes = leaf.state_size
        sizes = [sizes] if isinstance(sizes, (int, np.integer)) else list(sizes)
        names = names or (["h", "c"][:len(sizes)] if len(sizes) <= 2 else
                          [f"s{j}" for j in range(len(sizes))])
        parts.append("[" + ", ".join(f"{n}{k} {_shape_text((batch, s))}"
                                     for n, s in zip(names, sizes)) + "]")
    return "[" + ", ".join(parts) + "]" if depth_names else parts[0]


def _leaf_state_names(leaf: Any, k: str) -> list[tuple[str, Any]]:
    sizes = leaf.state_size
    sizes = [sizes] if isinstance(sizes, (int, np.integer)) else list(sizes)
    names = getattr(leaf, "state_names", None) or ["h", "c", "s2", "s3"][:len(sizes)]
    return [(f"{n}{k}", s) for n, s in zip(names, sizes)]


def explain(layer: Any, x: Any = None) -> Explanation:
    """Explain a recurrent layer or cell: its equation in the notebook's notation, every symbol
    with its shape in your sizes, where each lives in the API (Keras and PyTorch names), the
    parameter count, and what the call returns under the layer's options.

    Args:
        layer: an `RNN` (`SimpleRNN`, `RNN(cell)`, `RNN([cells])`, ...) or a cell
            (`SimpleRNNCell`, `StackedRNNCells`, ...). A model (`Sequential`, `Model`) gives a
            `ModelExplanation` (each layer's equation, shapes in your sizes, parameters, and
            every recurrent layer in full); a `Bidirectional` gives both directions and the merge.
        x: optional input, `(batch, timesteps, features)` for a layer or `(batch, features)` for a
            cell; its shape gives the sizes. Without it the build shape is used, else symbols.

    Returns:
        An `Explanation`: print it for plain text; a notebook shows it as HTML.

    Example:
        >>> import numpy as np
        >>> import unrolled
        >>> rnn = unrolled.layers.SimpleRNN(4, return_sequences=True)
        >>> e = unrolled.explain(rnn, np.zeros((2, 5, 3)))
        >>> e.symbol("U").shape, e.symbol("W").shape, e.param_count    # U (features, units)
        ((3, 4), (4, 4), 32)
        >>> e.returns[0][:2]                                            # (batch, timesteps, units)
        ('output', (2, 5, 4))
    """
    from unrolled.explain._trace import leaf_cells
    from unrolled.layers.rnn import RNN
    from unrolled.layers.stacked import StackedRNNCells

    from unrolled.explain._models import explain_model, is_container

    if is_container(layer):
        return explain_model(layer, x)
    is_layer = isinstance(layer, RNN)
    if not is_layer and not (hasattr(layer, "call") and hasattr(layer, "state_size")):
        raise TypeError(
            f"explain: `layer` must be a recurrent layer (SimpleRNN, RNN, ...), a cell "
            f"(SimpleRNNCell, StackedRNNCells, ...), a model (Sequential, Model) or a wrapper "
            f"(Bidirectional, TimeDistributed), got {type(layer).__name__}.")
    cell = layer.cell if is_layer else layer
    shape = None
    sizes_from = "no input and no build shape: symbolic"
    if x is not None:
        shape = tuple(np.shape(x))
        want = 3 if is_layer else 2
        if len(shape) != want:
            raise ValueError(
                f"explain: `x` must be {'(batch, timesteps, features)' if is_layer else '(batch, features)'}"
                f" for {type(layer).__name__}, got shape {_shape_text(shape)}.")
        sizes_from = "x"
    elif getattr(layer, "_build_shape", None) is not None:
        shape = tuple(layer._build_shape)
        sizes_from = "the build shape"
    names = ["batch", "timesteps", "features"] if is_layer else ["batch", "features"]
    sizes = {}
    for i, name in enumerate(names):
        value = shape[i] if shape is not None and i < len(shape) else None
        sizes[name] = int(value) if value is not None else name
    batch, features = sizes["batch"], sizes["features"]
    timesteps = sizes.get("timesteps")

    leaves = leaf_cells(cell)
    depth = len(leaves)
    explained = []
    in_features = features
    for i, leaf in enumerate(leaves):
        ce = describe_cell(leaf, i, depth, in_features, batch)
        explained.append(ce)
        in_features = ce.units
    last_units = explained[-1].units
    sizes["units"] = last_units if depth == 1 else [c.units for c in explained]

    stacked = isinstance(cell, StackedRNNCells)
    seq_symbols: list[Symbol] = []
    notes: list[str] = []
    returns: list[tuple[str, tuple, str]] = []
    structure = _state_structure(cell, batch, stacked)
    kind = type(layer).__name__
    title = f"{kind} '{getattr(layer, 'name', '')}'"
    if is_layer:
        title += f" around {type(cell).__name__}" if kind == "RNN" else ""
        seq_symbols.append(Symbol("x", (batch, timesteps, features),
                                  "input sequence (batch, timesteps, features)", "layer(x)",
                                  "input with batch_first=True"))
        seq = (batch, timesteps, last_units)
        if layer.return_sequences:
            returns.append(("output", seq, "every step's output h_t, in processing order"
                            + (" (reversed time: go_backwards)" if layer.go_backwards else "")))
        else:
            returns.append(("output", (batch, last_units), "the last step's output h_T"))
        if layer.return_state and stacked:
            first = 0
            for i, child in enumerate(cell.cells):  # one entry per cell of the (outer) stack
                inner = leaf_cells(child)
                entries = [e for j, leaf in enumerate(inner)
                           for e in _leaf_state_names(leaf, str(first + j + 1))]
                first += len(inner)
                returns.append((f"state_{i + 1}", [(batch, s) for _, s in entries],
                                f"cell {i + 1}'s final states as a list "
                                f"[{', '.join(n + '_T' for n, _ in entries)}]"))
        elif layer.return_state:
            for n, s in _leaf_state_names(leaves[0], ""):
                returns.append((f"final_{n}", (batch, s), f"the final state {n}_T"))
        label = ("outputs" if layer.return_sequences else "output")
        call = (f"{label}" + (", " + ", ".join(r[0] for r in returns[1:]) if layer.return_state
                              else "") + " = layer(x)")
        notes.append(f"Returned as: {call}  (return_sequences={layer.return_sequences}, "
                     f"return_state={layer.return_state}).")
        if layer.go_backwards:
            notes.append("go_backwards=True: steps run from t = T-1 down to 0, and the returned "
                         "sequence stays in that processing order.")
        if layer.stateful:
            notes.append("stateful=True: the final states of one call are the initial states of "
                         "the next (reset_state() zeroes them).")
        notes.append("A mask (batch, timesteps) skips steps per sample: the state is carried "
                     "over and the output repeats the previous one.")
    else:
        returns.append(("output", (batch, last_units), "h_t, the new state (also the output)"))
        if stacked:
            shapes = [[(batch, s) for _, s in _leaf_state_names(leaf, "")] for leaf in leaves]
            returns.append(("new_states", shapes, "one entry per cell: " + structure))
        else:
            entries = _leaf_state_names(leaves[0], "")
            returns.append(("new_states", [(batch, s) for _, s in entries],
                            "[" + ", ".join(n + "_t" for n, _ in entries)
                            + "], nested as the states given (bare in, bare out)"))
    notes.append("Orientation: unrolled and Keras keep one example per row and multiply x_t U; "
                 "the textbook's U x_t uses column vectors, so its matrices are the transposes.")
    return Explanation(title, sizes, sizes_from, explained, seq_symbols, returns, structure, notes,
                       is_layer)


# ---------------------------------------------------------------- a trace as text


def _fmt(array: Any) -> str:
    return np.array2string(np.asarray(array), precision=4, suppress_small=True, floatmode="fixed",
                           separator=", ", max_line_width=100)


def trace_text(tr: Any) -> str:
    """Every recorded value of a trace, step by step and cell by cell."""
    lines = [repr(tr)]
    for step in tr.steps:
        head = f"step k={step.k} (t={step.t})"
        if step.mask is not None:
            head += f"  mask={step.mask.astype(int).tolist()}"
        lines.append(head)
        for i, values in enumerate(step.cells):
            label = f"  cell {i + 1} " if tr.depth > 1 else "  "
            for name, value in values.items():
                prefix = f"{label}{name:<7} = "
                lines.append(prefix + _fmt(value).replace("\n", "\n" + " " * len(prefix)))
        prefix = f"  {'output':<7} = "
        lines.append(prefix + _fmt(step.output).replace("\n", "\n" + " " * len(prefix)))
    return "\n".join(lines)
