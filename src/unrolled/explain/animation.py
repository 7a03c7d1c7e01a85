"""Animations built from a trace: every frame shows numbers the layer really computed.

- a bare cell's trace: the step computed for each sample of the batch in turn, the batch's
  output matrix filling in row by row (frames: one per sample, then the whole batch);
- a layer's trace (SimpleRNN, RNN around a stack): the unrolled diagram sweeping the timesteps,
  each box's output filled in as it is computed, and below it the current step's equation with
  its values for one sample (frames: the initial state, then one per drawn step).

`animate(trace)` returns an `Animation`: `save(path)` writes a GIF (Pillow), a notebook shows it.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np

__all__ = ["Animation", "animate"]

LABELS = {
    "SimpleRNNCell": {"x_t": "$x_t$", "h_prev": "$h_{t-1}$", "xU": "$x_t U$",
                      "hW": "$h_{t-1} W$", "b": "$b$", "z": "$z$", "h": "$h_t$"},
    "LSTMCell": {"x_t": "$x_t$", "h_prev": "$h_{t-1}$", "c_prev": "$c_{t-1}$",
                 "z": "$z$ (pre-act.)", "i": "$i$", "f": "$f$", "g": "$g$", "o": "$o$",
                 "c": "$c_t$", "h": "$h_t$"},
    "GRUCell": {"x_t": "$x_t$", "h_prev": "$h_{t-1}$", "z": "$z$ (update)", "r": "$r$ (reset)",
                "hh": "$\\tilde{h}$", "h": "$h_t$"},
}
# What the per-step panel shows, in order, as "a + b + c = z -> h" for the simple cell.
EQUATION = {"SimpleRNNCell": [("xU", ""), ("hW", "+"), ("b", "+"), ("z", "="), ("h", "→")],
            "LSTMCell": [("i", ""), ("f", ","), ("g", ","), ("o", ","), ("c", "→"), ("h", "→")],
            "GRUCell": [("z", ""), ("r", ","), ("hh", ","), ("h", "→")]}
MAX_VALUES = 6


class Animation:
    """Frames (Pillow images) and how long each shows.

    Attributes:
        frames: a list of `PIL.Image.Image`, all the same size.
        duration_ms: milliseconds per frame.
        captions: one line per frame saying what it shows.
    """

    def __init__(self, frames: list, duration_ms: int, captions: list[str]):
        self.frames = frames
        self.duration_ms = duration_ms
        self.captions = captions

    @property
    def n_frames(self) -> int:
        return len(self.frames)

    def gif(self) -> bytes:
        """The animation as GIF bytes, looping forever; the last frame stays twice as long."""
        buffer = io.BytesIO()
        palette = [f.convert("RGB").quantize(colors=128, dither=0) for f in self.frames]
        durations = [self.duration_ms] * (len(palette) - 1) + [self.duration_ms * 2]
        palette[0].save(buffer, format="GIF", save_all=True, append_images=palette[1:],
                        duration=durations, loop=0, disposal=1, optimize=False)
        return buffer.getvalue()

    def save(self, path: str) -> str:
        """Write the GIF to `path`; returns the path."""
        with open(path, "wb") as handle:
            handle.write(self.gif())
        return path

    def html(self) -> str:
        data = base64.b64encode(self.gif()).decode("ascii")
        return (f'<img class="unrolled-animation" alt="{self.captions[0] if self.captions else ""}"'
                f' src="data:image/gif;base64,{data}">')

    def _repr_html_(self) -> str:
        return self.html()

    def __repr__(self) -> str:
        size = self.frames[0].size if self.frames else (0, 0)
        return f"Animation({self.n_frames} frames, {size[0]}x{size[1]}, {self.duration_ms} ms each)"


# ---------------------------------------------------------------- drawing pieces


def _fig_to_image(fig: Any, dpi: int):
    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def _stack_images(images: list):
    from PIL import Image

    width = max(i.width for i in images)
    height = sum(i.height for i in images)
    out = Image.new("RGB", (width, height), "white")
    y = 0
    for image in images:
        out.paste(image, ((width - image.width) // 2, y))
        y += image.height
    return out


def _same_size(frames: list) -> list:
    from PIL import Image

    width = max(f.width for f in frames)
    height = max(f.height for f in frames)
    out = []
    for f in frames:
        if f.size == (width, height):
            out.append(f)
            continue
        canvas = Image.new("RGB", (width, height), "white")
        canvas.paste(f, (0, 0))
        out.append(canvas)
    return out


def _strip(ax: Any, x: float, y: float, values: Any, vmax: float, cell_w: float = 0.95,
           cell_h: float = 0.55, fontsize: float = 7.5, empty: bool = False) -> float:
    """A row of coloured cells holding numbers; returns the x after it."""
    from matplotlib import colormaps
    from matplotlib.patches import Rectangle

    cmap = colormaps["RdBu_r"]
    values = np.atleast_1d(np.asarray(values, dtype=float))
    shown = values[:MAX_VALUES]
    for j, v in enumerate(shown):
        face = "#f9fafb" if empty else cmap(0.5 + 0.5 * float(np.clip(v / vmax, -1, 1)))
        ax.add_patch(Rectangle((x + j * cell_w, y - cell_h / 2), cell_w, cell_h, facecolor=face,
                               edgecolor="#9ca3af", linewidth=0.6))
        if not empty:
            dark = abs(v / vmax) > 0.65
            ax.text(x + (j + 0.5) * cell_w, y, f"{v:.2f}", ha="center", va="center",
                    fontsize=fontsize, color="white" if dark else "#111827")
    end = x + len(shown) * cell_w
    if len(values) > MAX_VALUES:
        ax.text(end + 0.1, y, "…", va="center", fontsize=fontsize + 2)
        end += 0.45
    return end


def _vmax(*arrays: Any) -> float:
    peak = max((float(np.abs(a).max()) for a in arrays if a is not None and np.size(a)),
               default=1.0)
    return max(peak, 1e-6)


def _short(vector: Any) -> str:
    values = np.asarray(vector, dtype=float)
    text = " ".join(f"{v:.2f}" for v in values[:4])
    return "[" + text + (" …" if values.size > 4 else "") + "]"


# ---------------------------------------------------------------- a cell: one step, sample by sample


def _animate_cell(tr: Any, dpi: int, duration_ms: int) -> Animation:
    from matplotlib.figure import Figure

    step = tr.steps[0]
    B = tr.batch
    rows = []  # (cell index, name, label, array (batch, n) or (n,))
    for d, values in enumerate(step.cells):
        kind = type(tr.cells[d]).__name__
        labels = LABELS.get(kind, {})
        for name, array in values.items():
            label = labels.get(name, name)
            if tr.depth > 1:
                label = f"cell {d + 1}: {label}"
            rows.append((d, name, label, array))
    out = np.asarray(step.output)
    vmax = _vmax(*[r[3] for r in rows])
    frames, captions = [], []
    units = out.shape[-1]
    for n in range(B + 1):
        sample = min(n, B - 1)
        whole = n == B
        height = 1.4 + 0.75 * len(rows)
        width = 9.5 + 0.95 * min(units, MAX_VALUES) + 2.0
        fig = Figure(figsize=(width * 0.55, max(height, 2.2 + 0.6 * min(B, 8)) * 0.55))
        ax = fig.add_axes((0, 0, 1, 1))
        H = max(height, 2.2 + 0.6 * min(B, 8))
        ax.set_xlim(0, width)
        ax.set_ylim(0, H)
        ax.axis("off")
        name = type(tr.layer).__name__
        title = (f"{name}: one step for all {B} samples at once" if whole else
                 f"{name}: one step, sample {sample + 1} of {B}")
        ax.text(0.2, H - 0.45, title, fontsize=10, fontweight="bold")
        for r, (d, key, label, array) in enumerate(rows):
            y = H - 1.3 - 0.75 * r
            ax.text(0.2, y, label, va="center", fontsize=9)
            vector = array if array.ndim == 1 else array[sample]
            _strip(ax, 2.6, y, vector, vmax)
        # the batch's output filling in, row by row
        x0 = 9.5
        ax.text(x0, H - 0.95, f"$h_t$ for the batch {tuple(out.shape)}", fontsize=8.5)
        for b in range(min(B, 8)):
            y = H - 1.5 - 0.6 * b
            done = whole or b <= sample
            ax.text(x0 - 0.15, y, f"{b + 1}", ha="right", va="center", fontsize=7,
                    color="#c2410c" if (b == sample and not whole) else "#374151")
            _strip(ax, x0, y, out[b], vmax, cell_w=0.95, cell_h=0.5, fontsize=7, empty=not done)
        frames.append(_fig_to_image(fig, dpi))
        captions.append(title)
    return Animation(_same_size(frames), duration_ms, captions)


# ---------------------------------------------------------------- a layer: sweeping the timesteps


def state_h(tr: Any, states: Any, d: int) -> np.ndarray:
    """Cell `d`'s h in a step's states (after masking): `(batch, units)`."""
    state = states[d] if tr.depth > 1 else states[0]
    while isinstance(state, (list, tuple)):
        state = state[0]
    return np.asarray(state)


def _step_panel(tr: Any, k: int | None, sample: int, dpi: int, vmax: float):
    """The current step's equation filled in with this sample's numbers, one row per cell."""
    from matplotlib.figure import Figure

    depth = tr.depth
    needed = 0.0
    for d, cell in enumerate(tr.cells):
        values = tr.steps[0].cells[d]
        terms = EQUATION.get(type(cell).__name__) or [(n, "  ") for n in values]
        needed = max(needed, 2.0 + sum(0.8 * min(np.shape(values[n])[-1], MAX_VALUES) + 1.3
                                       for n, _ in terms if n in values))
    width, height = max(24.0, needed), 1.3 + 1.15 * depth
    fig = Figure(figsize=(width * 0.42, height * 0.42))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.axis("off")
    if k is None:
        ax.text(0.3, height - 0.55, f"sample {sample + 1}: before the first step the state is "
                f"the initial state (zeros unless initial_state is given)", fontsize=9)
        for d in range(depth):
            state = state_h(tr, tr.initial_states, d)
            y = height - 1.4 - 1.15 * d
            ax.text(0.3, y, f"cell {d + 1}: $h_0$" if depth > 1 else "$h_0$", va="center",
                    fontsize=9)
            _strip(ax, 3.0, y, np.asarray(state)[sample], vmax)
        return _fig_to_image(fig, dpi)
    step = tr.steps[k]
    masked = step.mask is not None and not bool(step.mask[sample])
    head = f"step {k + 1} (reads x[:, {step.t}]), sample {sample + 1}"
    if masked:
        head += ": MASKED, the state is carried over unchanged"
    ax.text(0.3, height - 0.55, head, fontsize=9, color="#b91c1c" if masked else "#111827")
    for d, values in enumerate(step.cells):
        y = height - 1.4 - 1.15 * d
        kind = type(tr.cells[d]).__name__
        labels = LABELS.get(kind, {})
        x = 0.3
        if depth > 1:
            ax.text(x, y, f"cell {d + 1}", va="center", fontsize=8.5, fontweight="bold")
            x += 1.6
        terms = EQUATION.get(kind) or [(n, "  ") for n in values if n not in ("x_t", "h_prev",
                                                                              "c_prev")]
        for name, op in terms:
            if name not in values:
                continue
            if op:
                ax.text(x + 0.1, y, op, va="center", fontsize=10)
                x += 0.55
            ax.text(x, y + 0.42, labels.get(name, name), fontsize=7.5, color="#374151")
            vector = values[name] if values[name].ndim == 1 else values[name][sample]
            x = _strip(ax, x, y, vector, vmax, cell_w=0.8, cell_h=0.5, fontsize=6.5) + 0.15
    return _fig_to_image(fig, dpi)


def _animate_layer(tr: Any, sample: int, max_steps: int, dpi: int, duration_ms: int) -> Animation:
    from unrolled.explain import diagrams

    n = len(tr.steps)
    cols = [k for k in diagrams.visible_steps(n, max_steps) if k is not None]
    vmax = _vmax(*[v for s in tr.steps for c in s.cells for v in c.values()],
                 *[s.output for s in tr.steps])
    frames, captions = [], []
    for frame_index, current in enumerate([None] + cols):
        values = {}
        done = cols if current is None else [k for k in cols if k <= current]
        if current is None:
            done = []
        for k in done:
            for d in range(tr.depth):
                values[(d, k)] = _short(state_h(tr, tr.steps[k].states, d)[sample])
        top = diagrams.unrolled(tr.layer, tr.x, max_steps=max_steps, current=current,
                                values=values)
        images = [_fig_to_image(top.figure, dpi), _step_panel(tr, current, sample, dpi, vmax)]
        frames.append(_stack_images(images))
        captions.append("initial state" if current is None else f"step {current + 1} of {n}")
    return Animation(_same_size(frames), duration_ms, captions)


def animate(tr: Any, *, sample: int = 0, max_steps: int = 6, dpi: int = 80,
            duration_ms: int = 900) -> Animation:
    """Animate a trace.

    Args:
        tr: a `Trace` (from `unrolled.trace`). A bare cell's trace animates one step sample by
            sample (batch + 1 frames); a layer's trace sweeps the timesteps (1 + the number of
            steps drawn: all of them up to `max_steps`, else the first and last few).
        sample: which sample's numbers the layer animation shows. Default 0.
        max_steps: the most timesteps drawn before the diagram collapses the middle.
        dpi: resolution of the frames (80 keeps the GIF small).
        duration_ms: how long each frame shows.

    Returns:
        An `Animation`.
    """
    from unrolled.explain._trace import Trace

    if not isinstance(tr, Trace):
        raise TypeError(f"animate: expected a Trace from unrolled.trace(layer, x), got "
                        f"{type(tr).__name__}. Make one first: animate(unrolled.trace(layer, x)).")
    if not 0 <= sample < tr.batch:
        raise ValueError(f"animate: `sample` must be in 0 .. {tr.batch - 1} (the batch has "
                         f"{tr.batch} samples), got {sample}.")
    if tr.is_cell:
        return _animate_cell(tr, dpi, duration_ms)
    return _animate_layer(tr, sample, max_steps, dpi, duration_ms)
