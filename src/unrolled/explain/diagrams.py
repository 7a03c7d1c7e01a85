"""Diagrams drawn from the live object with matplotlib: rolled, unrolled over time, stacked, inside.

Each function returns a `Diagram`, which a notebook shows as SVG and which `save(stem)` writes as
`stem.svg` and `stem.png`. The shapes on the edges are the layer's own (from `x`, or the build
shape, else symbols); the boxes carry stable SVG ids (`cell-{depth}-{k}`, `ellipsis`,
`out-{k}`, `state-final-{depth}`, ...) so pages and tests can find them.
"""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np

__all__ = ["Diagram", "rolled", "unrolled", "cell_inside", "bidirectional", "visible_steps"]

CELL_FACE, CELL_EDGE = "#dbeafe", "#1e3a8a"
RETURNED, NOT_RETURNED, STATE = "#15803d", "#6b7280", "#1e3a8a"
INPUT = "#7c2d12"
FONT = 9


class Diagram:
    """A matplotlib figure with the ways to show and save it.

    Attributes:
        figure: the `matplotlib.figure.Figure`.
        ids: the SVG ids of the main elements, e.g. the cell boxes `cell-0-0`, `cell-0-1`, ...
    """

    def __init__(self, figure: Any, ids: dict[str, list[str]]):
        self.figure = figure
        self.ids = ids

    def svg(self) -> str:
        """The figure as SVG text (text kept as text, stable ids)."""
        import matplotlib

        buffer = io.StringIO()
        with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "unrolled"}):
            self.figure.savefig(buffer, format="svg", metadata={"Date": None})
        return buffer.getvalue()

    def png(self, dpi: int = 110) -> bytes:
        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png", dpi=dpi)
        return buffer.getvalue()

    def save(self, stem: str) -> list[str]:
        """Write `stem.svg` and `stem.png`; returns both paths."""
        folder = os.path.dirname(stem)
        if folder:
            os.makedirs(folder, exist_ok=True)
        paths = [stem + ".svg", stem + ".png"]
        with open(paths[0], "w", encoding="utf-8") as handle:
            handle.write(self.svg())
        with open(paths[1], "wb") as handle:
            handle.write(self.png())
        return paths

    def _repr_svg_(self) -> str:
        return self.svg()

    def __repr__(self) -> str:
        w, h = self.figure.get_size_inches()
        return f"Diagram({w:.1f}x{h:.1f} in, {sum(len(v) for v in self.ids.values())} elements)"


# ---------------------------------------------------------------- reading the object


def _shape(*dims: Any) -> str:
    return "(" + ", ".join(str(d) for d in dims) + ("," if len(dims) == 1 else "") + ")"


def describe(layer: Any, x: Any = None) -> dict:
    """What the drawings need to know about `layer`: cells, sizes, options."""
    from unrolled.explain._trace import leaf_cells
    from unrolled.layers.rnn import RNN

    is_layer = isinstance(layer, RNN)
    cell = layer.cell if is_layer else layer
    shape = tuple(np.shape(x)) if x is not None else getattr(layer, "_build_shape", None)
    batch = timesteps = features = None
    if shape is not None:
        if is_layer and len(shape) == 3:
            batch, timesteps, features = shape
        elif not is_layer and len(shape) == 2:
            batch, features = shape
    leaves = leaf_cells(cell)
    units = []
    for leaf in leaves:
        u = getattr(leaf, "units", None)
        if u is None:
            size = leaf.state_size
            u = size if isinstance(size, (int, np.integer)) else size[0]
        units.append(int(u))
    states = []
    for leaf in leaves:
        size = leaf.state_size
        n = 1 if isinstance(size, (int, np.integer)) else len(size)
        states.append(n)
    return {
        "is_layer": is_layer, "cells": leaves, "kinds": [type(c).__name__ for c in leaves],
        "batch": batch if batch is not None else "batch",
        "timesteps": timesteps, "features": features if features is not None else "features",
        "units": units, "n_states": states,
        "return_sequences": bool(getattr(layer, "return_sequences", False)),
        "return_state": bool(getattr(layer, "return_state", False)),
        "go_backwards": bool(getattr(layer, "go_backwards", False)),
        "name": f"{type(layer).__name__} '{getattr(layer, 'name', '')}'",
    }


def visible_steps(timesteps: int | None, max_steps: int = 6) -> list[int | None]:
    """The processing indices drawn as columns; None marks the collapsed middle (an ellipsis).

    >>> visible_steps(4), visible_steps(20)
    ([0, 1, 2, 3], [0, 1, 2, None, 18, 19])
    """
    if timesteps is None:
        return [0, 1, None, -1]
    if timesteps <= max_steps:
        return list(range(timesteps))
    head = (max_steps - 1) // 2 + (max_steps - 1) % 2
    tail = max_steps - 1 - head
    return list(range(head)) + [None] + list(range(timesteps - tail, timesteps))


# ---------------------------------------------------------------- drawing helpers


def _canvas(width: float, height: float, scale: float = 0.62):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * scale, height * scale))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_aspect("equal")
    ax.axis("off")
    return fig, ax


def _box(ax: Any, cx: float, cy: float, w: float, h: float, text: str, gid: str,
         face: str = CELL_FACE, edge: str = CELL_EDGE, size: float = FONT, weight: str = "bold"):
    from matplotlib.patches import FancyBboxPatch

    patch = FancyBboxPatch((cx - w / 2, cy - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.12",
                           facecolor=face, edgecolor=edge, linewidth=1.4, zorder=2)
    patch.set_gid(gid)
    ax.add_patch(patch)
    if text:
        ax.text(cx, cy, text, ha="center", va="center", fontsize=size, fontweight=weight,
                zorder=3, color="#111827")
    return patch


def _arrow(ax: Any, start: tuple, end: tuple, gid: str, color: str = STATE, width: float = 1.3,
           style: str = "-|>", connection: str = "arc3", dashed: bool = False):
    from matplotlib.patches import FancyArrowPatch

    arrow = FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=11, color=color,
                            linewidth=width, connectionstyle=connection, zorder=1,
                            shrinkA=0, shrinkB=0, linestyle="--" if dashed else "-")
    arrow.set_gid(gid)
    ax.add_patch(arrow)
    return arrow


def _path(ax: Any, points: list, gid: str, color: str = STATE, width: float = 1.3):
    """A polyline through `points` with an arrowhead on its last segment."""
    from matplotlib.lines import Line2D

    xs, ys = zip(*points[:-1])
    line = Line2D(xs, ys, color=color, linewidth=width, zorder=1, solid_joinstyle="miter")
    line.set_gid(gid + "-line")
    ax.add_line(line)
    return _arrow(ax, points[-2], points[-1], gid, color=color, width=width)


def _label(ax: Any, x: float, y: float, text: str, color: str = "#111827", size: float = FONT - 1,
           ha: str = "center", va: str = "center", style: str = "normal", bg: bool = True):
    kwargs = {}
    if bg:
        kwargs["bbox"] = dict(boxstyle="round,pad=0.15", facecolor="white", edgecolor="none",
                              alpha=0.9)
    ax.text(x, y, text, ha=ha, va=va, fontsize=size, color=color, zorder=4, fontstyle=style,
            **kwargs)


def _cell_text(info: dict, d: int) -> str:
    kind = info["kinds"][d].replace("Cell", "")
    return f"{kind}\n{info['units'][d]} units"


def _sub(name: str, index: Any) -> str:
    return f"${name}_{{{index}}}$"


# ---------------------------------------------------------------- rolled


def rolled(layer: Any, x: Any = None) -> Diagram:
    """The layer as a loop: each cell feeds its state back to itself at the next step.

    Args:
        layer: an RNN layer or a cell.
        x: optional input; its shape labels the edges.
    """
    info = describe(layer, x)
    depth = len(info["cells"])
    B, F = info["batch"], info["features"]
    width, height = 9.0, 1.9 + 1.9 * depth
    fig, ax = _canvas(width, height)
    ids: dict[str, list[str]] = {"cells": [], "loops": []}
    cx, bw, bh = 3.6, 2.2, 1.0
    y0 = 1.25
    _arrow(ax, (cx, 0.15), (cx, y0 - bh / 2), "input", color=INPUT)
    _label(ax, cx + 0.15, 0.45, f"$x_t$ {_shape(B, F)}", color=INPUT, ha="left")
    for d in range(depth):
        cy = y0 + 1.9 * d
        k = str(d + 1) if depth > 1 else ""
        gid = f"cell-{d}"
        _box(ax, cx, cy, bw, bh, _cell_text(info, d), gid)
        ids["cells"].append(gid)
        # The loop: out of the right side, round, and back in.
        _arrow(ax, (cx + bw / 2, cy + 0.3), (cx + bw / 2, cy - 0.3), f"loop-{d}",
               connection="arc3,rad=-1.7", width=1.6)
        ids["loops"].append(f"loop-{d}")
        u = info["units"][d]
        state = "$h" + (f"^{{{k}}}" if k else "") + "_{t-1}$"
        _label(ax, cx + bw / 2 + 1.15, cy, f"{state} {_shape(B, u)}", ha="left", color=STATE)
        top = cy + bh / 2
        nxt = cy + 1.9 - bh / 2 if d < depth - 1 else top + 0.75
        _arrow(ax, (cx, top), (cx, nxt), f"out-{d}",
               color=STATE if d < depth - 1 else RETURNED)
        out = "$h" + (f"^{{{k}}}" if k else "") + "_t$"
        _label(ax, cx + 0.15, (top + nxt) / 2, f"{out} {_shape(B, u)}", ha="left",
               color=STATE if d < depth - 1 else RETURNED)
    T = info["timesteps"]
    steps = f"T = {T}" if T else "T steps"
    note = (f"the loop runs for t = 1 .. T, {steps}; the state goes round to the next step"
            if info["is_layer"] else "one step: h_{t-1} in, h_t out")
    _label(ax, 0.2, height - 0.35, info["name"], ha="left", size=FONT + 1, bg=False)
    _label(ax, 0.2, height - 0.8, note, ha="left", size=FONT - 1, bg=False, color="#374151")
    return Diagram(fig, ids)


# ---------------------------------------------------------------- unrolled


def unrolled(layer: Any, x: Any = None, *, max_steps: int = 6, current: int | None = None,
             values: Any = None) -> Diagram:
    """The layer unrolled over its timesteps: one box per cell and step, shapes on the edges.

    A stack is drawn as a depth × time grid with one state per cell. Long sequences are collapsed
    with an ellipsis (the first and last steps are kept). What the call returns is drawn in green
    (every output with return_sequences, else the last; the final states with return_state);
    what it does not return is grey.

    Args:
        layer: an RNN layer (or a cell, drawn as one step).
        x: optional input; its shape gives the timesteps and the labels.
        max_steps: the most columns drawn before collapsing.
        current: a processing index to highlight (used by the animations).
        values: optional `{(depth, k): short text}` written under the boxes (animations); an
            empty dict keeps the room for them.

    Returns:
        A `Diagram` whose ids include `cells` (`cell-{depth}-{k}`), `ellipsis`, `outputs`
        (`out-{k}`) and `final_states`.
    """
    info = describe(layer, x)
    depth = len(info["cells"])
    T = info["timesteps"] if info["is_layer"] else 1
    cols = visible_steps(T, max_steps)
    B, F = info["batch"], info["features"]
    spaced = values is not None
    # with values under the boxes, rows sit further apart so a value never meets the label of
    # the state going up to the next cell
    col_w, row_h = 2.6, 2.0 + (0.6 if spaced else 0)
    left = 1.9
    width = left + col_w * len(cols) + 1.9
    height = 2.4 + row_h * depth + (0.5 if spaced else 0)
    fig, ax = _canvas(width, height)
    ids: dict[str, list[str]] = {"cells": [], "ellipsis": [], "outputs": [], "final_states": [],
                                 "inputs": []}
    bw, bh = 1.5, 0.9
    base = 1.35 + (0.5 if spaced else 0)
    xs = [left + col_w * (i + 0.5) for i in range(len(cols))]

    def step_name(k: int | None) -> Any:
        if k is None:
            return None
        if T is None:
            return "T" if k == -1 else str(k + 1)
        return k

    def time_index(k: int) -> Any:  # 1-based, as in h_1 .. h_T with h_0 the initial state
        if T is None:
            return "T" if k == -1 else k + 1
        return T - k if info["go_backwards"] else k + 1

    def step_index(k: int) -> Any:
        return "T" if k == -1 else k + 1

    seq_returned = info["return_sequences"]
    last_col = len(cols) - 1
    for i, (cx, k) in enumerate(zip(xs, cols)):
        if k is None:
            for d in range(depth):
                _label(ax, cx, base + row_h * d, "· · ·", size=FONT + 6, bg=False)
            ax.text(cx, 0.3, f"{T - sum(c is not None for c in cols)} steps" if T else "",
                    ha="center", fontsize=FONT - 1, color="#374151")
            ids["ellipsis"].append("ellipsis")
            from matplotlib.patches import Rectangle

            hidden = Rectangle((cx - bw / 2, base - bh / 2), bw, row_h * (depth - 1) + bh,
                               facecolor="none", edgecolor="none")
            hidden.set_gid("ellipsis")
            ax.add_patch(hidden)
            continue
        t = time_index(k)
        for d in range(depth):
            cy = base + row_h * d
            gid = f"cell-{d}-{k if k >= 0 else 'T'}"
            face = "#fed7aa" if current == k else CELL_FACE
            _box(ax, cx, cy, bw, bh, _cell_text(info, d), gid, face=face, size=FONT - 1)
            ids["cells"].append(gid)
            if values and (d, k) in values:
                _label(ax, cx, cy - bh / 2 - 0.3, values[(d, k)], size=FONT - 2, color="#111827")
            if d < depth - 1:
                _arrow(ax, (cx, cy + bh / 2), (cx, cy + row_h - bh / 2), f"up-{d}-{k}")
                if i == 0:
                    _label(ax, cx + 0.1, cy + row_h / 2,
                           f"$h^{{{d + 1}}}_{{{step_index(k)}}}$ {_shape(B, info['units'][d])}",
                           ha="left",
                           size=FONT - 2)
        # input from below
        in_y = base - bh / 2  # through the value written under the box (it has a white ground)
        _arrow(ax, (cx, 0.55), (cx, in_y), f"in-{k}", color=INPUT)
        ids["inputs"].append(f"in-{k}")
        lab = f"$x_{{{t}}}$" + (f" {_shape(B, F)}" if i == 0 else "")
        _label(ax, cx, 0.3, lab, color=INPUT, size=FONT - 1)
        # output on top
        top = base + row_h * (depth - 1) + bh / 2
        returned = seq_returned or i == last_col
        color = RETURNED if returned else NOT_RETURNED
        gid = f"out-{k}"
        _arrow(ax, (cx, top), (cx, top + 0.6), gid, color=color, dashed=not returned)
        ids["outputs"].append(gid)
        sup = f"^{{{depth}}}" if depth > 1 else ""
        lab = f"$h{sup}_{{{step_index(k)}}}$" + (f" {_shape(B, info['units'][-1])}" if i == 0
                                                  else "")
        _label(ax, cx, top + 0.85, lab, color=color, size=FONT - 1)

    # state arrows between columns, one per cell
    for d in range(depth):
        cy = base + row_h * d
        u = info["units"][d]
        sup = f"^{{{d + 1}}}" if depth > 1 else ""
        n_states = info["n_states"][d]
        state_word = f"h{sup}" if n_states == 1 else f"(h{sup}, c{sup})"
        for i in range(len(cols) - 1):
            a, b = xs[i] + bw / 2, xs[i + 1] - bw / 2
            if cols[i] is None:
                a = xs[i] + 0.55
            if cols[i + 1] is None:
                b = xs[i + 1] - 0.55
            _arrow(ax, (a, cy), (b, cy), f"state-{d}-{i}")
            if i == 0 and cols[1] is not None:
                _label(ax, (a + b) / 2, cy + 0.22, f"${state_word}$", size=FONT - 2)
        # initial state in
        _arrow(ax, (xs[0] - bw / 2 - 1.05, cy), (xs[0] - bw / 2, cy), f"state-initial-{d}",
               dashed=True)
        _label(ax, xs[0] - bw / 2 - 1.15, cy + 0.3, f"${state_word}_0$", size=FONT - 2, ha="left",
               bg=False)
        _label(ax, xs[0] - bw / 2 - 1.15, cy - 0.3, _shape(B, u), size=FONT - 2, ha="left",
               bg=False)
        # final state out
        color = RETURNED if info["return_state"] else NOT_RETURNED
        gid = f"state-final-{d}"
        _arrow(ax, (xs[-1] + bw / 2, cy), (xs[-1] + bw / 2 + 0.9, cy), gid, color=color,
               dashed=not info["return_state"])
        ids["final_states"].append(gid)
        last = "T" if T is None else T
        _label(ax, xs[-1] + bw / 2 + 0.1, cy + 0.38, f"${state_word}_{{{last}}}$", size=FONT - 2,
               ha="left", color=color, bg=False)

    title = info["name"]
    flags = [f for f in ("return_sequences", "return_state", "go_backwards") if info[f]]
    title += f"   T = {T}" if T else ""
    _label(ax, 0.15, height - 0.3, title, ha="left", size=FONT, bg=False)
    legend = "green: returned by the call" + ("   (" + ", ".join(flags) + ")" if flags else "")
    _label(ax, 0.15, height - 0.7, legend, ha="left", size=FONT - 2, bg=False, color=RETURNED)
    return Diagram(fig, ids)


# ---------------------------------------------------------------- inside a cell


def cell_inside(cell: Any, x: Any = None) -> Diagram:
    """What one SimpleRNNCell computes in a step, one operation per box, shapes on every edge.

    Args:
        cell: a `SimpleRNNCell`, or a layer/stack (its first cell of that kind is drawn).
        x: optional `(batch, features)` step input (or the layer's input) for the sizes.
    """
    from unrolled.layers.rnn import RNN

    target = cell.cell if isinstance(cell, RNN) else cell
    info = describe(cell, x)
    from unrolled.explain._trace import leaf_cells

    leaf = leaf_cells(target)[0]
    kind = type(leaf).__name__
    B, F, u = info["batch"], info["features"], info["units"][0]
    if kind == "LSTMCell":
        return _inside_gated(leaf, B, F, u, ["i", "f", "c", "o"])
    if kind == "GRUCell":
        return _inside_gated(leaf, B, F, u, ["z", "r", "h"])
    from unrolled.explain._text import _activation_name

    act = _activation_name(getattr(leaf, "activation", None))
    width, height = 12.0, 6.6
    fig, ax = _canvas(width, height)
    ids: dict[str, list[str]] = {"ops": []}

    def op(cx: float, cy: float, text: str, gid: str, w: float = 1.5) -> None:
        _box(ax, cx, cy, w, 0.8, text, gid, size=FONT + 1)
        ids["ops"].append(gid)

    op(3.2, 2.2, "× U", "op-xU")
    op(3.2, 4.6, "× W", "op-hW")
    op(6.2, 3.4, "+", "op-add", w=0.9)
    op(8.6, 3.4, act, "op-act")
    _box(ax, 6.2, 1.2, 1.4, 0.6, f"b {_shape(u)}", "in-b", face="#f3f4f6", size=FONT)
    # edges with shapes
    _arrow(ax, (0.6, 2.2), (2.45, 2.2), "e-x", color=INPUT)
    _label(ax, 1.5, 2.55, f"$x_t$ {_shape(B, F)}", color=INPUT)
    _arrow(ax, (0.6, 4.6), (2.45, 4.6), "e-h", color=STATE)
    _label(ax, 1.5, 4.95, f"$h_{{t-1}}$ {_shape(B, u)}", color=STATE)
    _arrow(ax, (3.95, 2.2), (5.75, 3.2), "e-xU")
    _label(ax, 4.75, 2.2, f"$x_t U$ {_shape(B, u)}", size=FONT - 1, ha="left")
    _arrow(ax, (3.95, 4.6), (5.75, 3.6), "e-hW")
    _label(ax, 4.75, 4.6, f"$h_{{t-1}} W$ {_shape(B, u)}", size=FONT - 1, ha="left")
    _arrow(ax, (6.2, 1.5), (6.2, 3.0), "e-b")
    _arrow(ax, (6.65, 3.4), (7.85, 3.4), "e-z")
    _label(ax, 7.25, 3.8, f"z {_shape(B, u)}", size=FONT - 1)
    _arrow(ax, (9.35, 3.4), (11.0, 3.4), "e-out", color=RETURNED)
    _label(ax, 10.2, 3.8, f"$h_t$ {_shape(B, u)}", color=RETURNED)
    _label(ax, 10.2, 2.9, "output, and the\nstate for step t+1", size=FONT - 2, bg=False,
           color="#374151")
    U_shape = _shape(F, u)
    _label(ax, 3.2, 1.5, f"U = kernel {U_shape}", size=FONT - 2, bg=False)
    _label(ax, 3.2, 5.3, f"W = recurrent_kernel {_shape(u, u)}", size=FONT - 2, bg=False)
    _label(ax, 0.2, height - 0.35, f"Inside {kind} '{getattr(leaf, 'name', '')}': one step",
           ha="left", size=FONT + 1, bg=False)
    _label(ax, 0.2, height - 0.8, f"$h_t = \\mathrm{{{act}}}(x_t U + h_{{t-1}} W + b)$", ha="left",
           size=FONT, bg=False)
    return Diagram(fig, ids)


def _inside_gated(leaf: Any, B: Any, F: Any, u: int, blocks: list[str]) -> Diagram:
    """LSTM / GRU: the fused matmuls, the column blocks of the pre-activation, each gate."""
    kind = type(leaf).__name__
    n = len(blocks)
    width, height = 16.5, 6.6
    fig, ax = _canvas(width, height)
    ids: dict[str, list[str]] = {"ops": [], "gates": []}
    _box(ax, 2.6, 2.0, 1.6, 0.8, "× U", "op-xU", size=FONT + 1)
    _box(ax, 2.6, 4.4, 1.6, 0.8, "× W", "op-hW", size=FONT + 1)
    ids["ops"] += ["op-xU", "op-hW"]
    _arrow(ax, (0.4, 2.0), (1.8, 2.0), "e-x", color=INPUT)
    _label(ax, 1.0, 2.4, f"$x_t$ {_shape(B, F)}", color=INPUT, size=FONT - 1)
    _arrow(ax, (0.4, 4.4), (1.8, 4.4), "e-h", color=STATE)
    _label(ax, 1.0, 4.8, f"$h_{{t-1}}$ {_shape(B, u)}", color=STATE, size=FONT - 1)
    _label(ax, 2.6, 1.3, f"U {_shape(F, n * u)}", size=FONT - 2, bg=False)
    _label(ax, 2.6, 5.1, f"W {_shape(u, n * u)}", size=FONT - 2, bg=False)
    # the fused pre-activation split into column blocks
    x0, bw = 4.6, 1.05
    for g, name in enumerate(blocks):
        cx = x0 + bw * (g + 0.5)
        _box(ax, cx, 3.2, bw - 0.08, 0.9, name, f"block-{name}", face="#e0e7ff", size=FONT + 1)
        ids["gates"].append(f"block-{name}")
        _label(ax, cx, 2.5, f"[{g * u}:{(g + 1) * u}]", size=FONT - 3, bg=False)
    _arrow(ax, (3.4, 2.0), (x0, 3.0), "e-xU")
    _arrow(ax, (3.4, 4.4), (x0, 3.4), "e-hW")
    if kind == "LSTMCell":
        _label(ax, x0 + n * bw / 2, 4.0, f"z = $x_t U + h_{{t-1}} W + b$  {_shape(B, n * u)}",
               size=FONT - 1, bg=False)
        lines = ["$i, f, o = \\sigma(z_i), \\sigma(z_f), \\sigma(z_o)$",
                 "$g = \\tanh(z_c)$", "$c_t = f \\odot c_{t-1} + i \\odot g$",
                 "$h_t = o \\odot \\tanh(c_t)$"]
        outs = [("$h_t$", 4.2, "e-out-h"), ("$c_t$", 2.2, "e-out-c")]
    else:
        _label(ax, x0 + n * bw / 2, 4.0, f"$x_t U$ and $h_{{t-1}} W$ (+ b), each {_shape(B, n * u)}",
               size=FONT - 1, bg=False)
        reset_after = bool(getattr(leaf, "reset_after", True))
        lines = ["$z, r = \\sigma(\\cdot_z), \\sigma(\\cdot_r)$",
                 ("$\\tilde{h} = \\tanh(x_h + r \\odot (h_{t-1} W)_h)$" if reset_after
                  else "$\\tilde{h} = \\tanh(x_h + (r \\odot h_{t-1}) W_h)$"),
                 "$h_t = z \\odot h_{t-1} + (1 - z) \\odot \\tilde{h}$"]
        outs = [("$h_t$", 3.2, "e-out-h")]
    box_x, box_w = x0 + n * bw + 0.9, 5.3
    _arrow(ax, (x0 + n * bw, 3.2), (box_x, 3.2), "e-blocks")
    _box(ax, box_x + box_w / 2, 3.2, box_w, 3.0, "", "op-gates", face="#f8fafc")
    ids["ops"].append("op-gates")
    for j, line in enumerate(lines):
        _label(ax, box_x + 0.25, 4.25 - 0.7 * j, line, ha="left", size=FONT, bg=False)
    if kind == "LSTMCell":
        _arrow(ax, (box_x + 1.2, 0.6), (box_x + 1.2, 1.7), "e-c-prev", color=STATE)
        _label(ax, box_x + 1.4, 0.8, f"$c_{{t-1}}$ {_shape(B, u)}", color=STATE, ha="left",
               size=FONT - 1)
    for name, y, gid in outs:
        _arrow(ax, (box_x + box_w, y), (width - 0.3, y), gid, color=RETURNED)
        _label(ax, width - 1.0, y + 0.35, f"{name} {_shape(B, u)}", color=RETURNED,
               size=FONT - 1)
    _label(ax, 0.2, height - 0.35, f"Inside {kind} '{getattr(leaf, 'name', '')}': one step",
           ha="left", size=FONT + 1, bg=False)
    _label(ax, 0.2, height - 0.8, "one fused matmul per input; gates are column blocks "
           f"[{' | '.join(blocks)}]", ha="left", size=FONT - 1, bg=False)
    return Diagram(fig, ids)


# ---------------------------------------------------------------- Bidirectional


def bidirectional(layer: Any, x: Any = None, *, max_steps: int = 6) -> Diagram:
    """A Bidirectional layer unrolled: the forward row reads x_1 .. x_T left to right, the
    backward row reads x_T .. x_1 right to left, and each column's two outputs are merged.

    Columns are in time order for both rows. Without return_sequences only one merge is drawn:
    the forward row's last output (after x_T) with the backward row's last (after x_1).

    Args:
        layer: a `Bidirectional`.
        x: optional `(batch, timesteps, features)` input for the sizes.

    Returns:
        A `Diagram` with ids `forward` (`fwd-{t}`), `backward` (`bwd-{t}`), `merges`
        (`merge-{t}` or `merge`), `forward_states` and `backward_states` (the arrows between
        columns, `fstate-{i}` pointing right and `bstate-{i}` pointing left).
    """
    fwd = describe(layer.forward_layer, x)
    bwd = describe(layer.backward_layer, x)
    T = fwd["timesteps"]
    cols = visible_steps(T, max_steps)
    B, F = fwd["batch"], fwd["features"]
    uf, ub = fwd["units"][-1], bwd["units"][-1]
    mode = layer.merge_mode
    merged_units = uf + ub if mode == "concat" else uf
    seq = bool(layer.return_sequences)
    col_w, left = 2.7, 2.6
    width = left + col_w * len(cols) + 1.6
    y_in, y_f, y_b = 0.35, 1.75, 3.65
    y_m = 5.35
    height = y_m + (2.3 if seq else 2.6)
    fig, ax = _canvas(width, height)
    ids: dict[str, list[str]] = {"forward": [], "backward": [], "merges": [],
                                 "forward_states": [], "backward_states": []}
    bw, bh = 1.45, 0.85
    xs = [left + col_w * (i + 0.5) for i in range(len(cols))]
    fcolor, bcolor = "#1e3a8a", "#9a3412"
    bface = "#ffedd5"

    def t_label(t: int) -> Any:
        if T is None:
            return "T" if t == -1 else t + 1
        return t + 1

    for i, (cx, t) in enumerate(zip(xs, cols)):
        if t is None:
            for y in (y_f, y_b):
                _label(ax, cx, y, "· · ·", size=FONT + 6, bg=False)
            if T:
                ax.text(cx, y_in, f"{T - sum(c is not None for c in cols)} steps",
                        ha="center", va="center", fontsize=FONT - 1, color="#374151")
            continue
        _box(ax, cx, y_f, bw, bh, _cell_text(fwd, 0), f"fwd-{t}", size=FONT - 1)
        _box(ax, cx, y_b, bw, bh, _cell_text(bwd, 0), f"bwd-{t}", face=bface, edge=bcolor,
             size=FONT - 1)
        ids["forward"].append(f"fwd-{t}")
        ids["backward"].append(f"bwd-{t}")
        # x_t feeds both rows: straight up into the forward box, and round its left side
        # (across the forward row's state arrow) up into the backward box.
        _label(ax, cx, y_in, f"$x_{{{t_label(t)}}}$" + (f" {_shape(B, F)}" if i == 0 else ""),
               color=INPUT, size=FONT - 1)
        _arrow(ax, (cx, y_in + 0.22), (cx, y_f - bh / 2), f"in-{t}", color=INPUT)
        gap_l = cx - bw / 2 - 0.3
        _path(ax, [(cx - 0.3, y_in + 0.22), (cx - 0.3, y_f - bh / 2 - 0.25),
                   (gap_l, y_f - bh / 2 - 0.25), (gap_l, y_b - bh / 2 - 0.3),
                   (cx - 0.3, y_b - bh / 2 - 0.3), (cx - 0.3, y_b - bh / 2)], f"in-b-{t}",
              color=INPUT, width=1.0)
        if seq:
            gid = f"merge-{t}"
            _box(ax, cx, y_m, bw - 0.2, 0.6, mode or "pair", gid, face="#dcfce7",
                 edge=RETURNED, size=FONT - 1, weight="normal")
            ids["merges"].append(gid)
            _arrow(ax, (cx - 0.25, y_b + bh / 2), (cx - 0.25, y_m - 0.3), f"bout-{t}",
                   color=bcolor)
            # right of the box; the last column's goes wider, round the backward row's h_0
            gap_r = cx + bw / 2 + (1.0 if i == len(cols) - 1 else 0.3)
            _path(ax, [(cx + 0.3, y_f + bh / 2), (cx + 0.3, y_f + bh / 2 + 0.3),
                       (gap_r, y_f + bh / 2 + 0.3), (gap_r, y_m), (cx + (bw - 0.2) / 2, y_m)],
                  f"fout-{t}", color=fcolor)
            _arrow(ax, (cx, y_m + 0.3), (cx, y_m + 0.85), f"out-{t}", color=RETURNED)
            _label(ax, cx, y_m + 1.1, f"$y_{{{t_label(t)}}}$"
                   + (f" {_shape(B, merged_units)}" if i == 0 else ""), color=RETURNED,
                   size=FONT - 1)
    # state arrows: forward to the right, backward to the left
    for i in range(len(cols) - 1):
        a, b = xs[i] + bw / 2, xs[i + 1] - bw / 2
        if cols[i] is None:
            a = xs[i] + 0.55
        if cols[i + 1] is None:
            b = xs[i + 1] - 0.55
        _arrow(ax, (a, y_f), (b, y_f), f"fstate-{i}", color=fcolor)
        _arrow(ax, (b, y_b), (a, y_b), f"bstate-{i}", color=bcolor)
        ids["forward_states"].append(f"fstate-{i}")
        ids["backward_states"].append(f"bstate-{i}")
    # where each row starts and ends
    x0, x1 = xs[0] - bw / 2, xs[-1] + bw / 2
    _arrow(ax, (x0 - 0.8, y_f), (x0, y_f), "fstate-initial", color=fcolor, dashed=True)
    _arrow(ax, (x1 + 0.8, y_b), (x1, y_b), "bstate-initial", color=bcolor, dashed=True)
    _label(ax, x1 + 0.1, y_b + 0.35, "$h_0$", size=FONT - 2, ha="left", bg=False, color=bcolor)
    _label(ax, x0 - 0.75, y_f + 0.35, "$h_0$", size=FONT - 2, ha="left", bg=False, color=fcolor)
    _label(ax, 0.15, y_f - 0.55, f"forward →\n'{layer.forward_layer.name}'", ha="left",
           size=FONT - 1, bg=False, color=fcolor)
    _label(ax, 0.15, y_b - 0.55, f"← backward\n'{layer.backward_layer.name}'", ha="left",
           size=FONT - 1, bg=False, color=bcolor)
    if not seq:
        # one merge: the forward row's output after x_T and the backward row's after x_1
        mx = (xs[0] + xs[-1]) / 2
        _box(ax, mx, y_m + 0.2, 1.6, 0.6, mode or "pair", "merge", face="#dcfce7", edge=RETURNED,
             size=FONT - 1, weight="normal")
        ids["merges"].append("merge")
        _path(ax, [(xs[0], y_b + bh / 2), (xs[0], y_m + 0.2), (mx - 0.8, y_m + 0.2)], "bout",
              color=bcolor)
        gap_r = x1 + 1.0
        _path(ax, [(xs[-1] + 0.3, y_f + bh / 2), (xs[-1] + 0.3, y_f + bh / 2 + 0.3),
                   (gap_r, y_f + bh / 2 + 0.3), (gap_r, y_m + 0.2), (mx + 0.8, y_m + 0.2)],
              "fout", color=fcolor)
        _arrow(ax, (mx, y_m + 0.5), (mx, y_m + 1.05), "out", color=RETURNED)
        _label(ax, mx + 0.15, y_m + 1.3, f"y {_shape(B, merged_units)}", color=RETURNED,
               size=FONT - 1)
        _label(ax, mx, y_m - 0.45, f"forward's h after x_T, backward's h after x_1",
               size=FONT - 2, bg=False, color="#374151")
    merge_text = {"concat": f"concat: y = [forward | backward], {uf} + {ub} = {merged_units} "
                            f"features", "sum": "sum: y = forward + backward",
                  "ave": "ave: y = (forward + backward) / 2", "mul": "mul: y = forward * backward",
                  None: "merge_mode=None: both returned, (forward, backward)"}[mode]
    title = f"Bidirectional '{layer.name}'" + (f"   T = {T}" if T else "")
    _label(ax, 0.15, height - 0.3, title, ha="left", size=FONT, bg=False)
    _label(ax, 0.15, height - 0.7, merge_text, ha="left", size=FONT - 2, bg=False,
           color=RETURNED)
    return Diagram(fig, ids)
