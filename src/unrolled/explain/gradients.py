"""Gradient flow: how big the gradient reaching each hidden state is, going back in time.

`gradient_flow(model, x, y, "mse")` runs one backward pass (`unrolled.gradients`) and draws
`||dL/dh_t||` against the timestep t for every recurrent layer, on a log scale. In a plain
SimpleRNN the curve falls steeply towards t = 1 (the vanishing gradient: the early steps hardly
learn); an LSTM's cell state keeps it much flatter. The numbers are the real backward pass's,
not a re-derivation. matplotlib is imported only when a figure is drawn.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from unrolled.explain.diagrams import Diagram

__all__ = ["gradient_flow", "GradientFlow"]

_COLORS = ["#1e3a8a", "#b45309", "#15803d", "#7c3aed", "#be123c", "#0e7490"]


class GradientFlow(Diagram):
    """The gradient-flow figure, with the numbers it plots.

    Attributes:
        figure: the `matplotlib.figure.Figure`.
        ids: `{"lines": ["flow-<layer name>", ...]}`, the SVG ids of the plotted lines.
        norms: `{layer name: (timesteps,) array}`, `||dL/dh_t||` averaged over the batch, in
            input order (t = 1 first).
        report: the `GradientReport` the figure was drawn from (a list when several were given).
    """

    def __init__(self, figure: Any, ids: dict, norms: dict, report: Any):
        super().__init__(figure, ids)
        self.norms = norms
        self.report = report

    def ratio(self, layer: str | None = None) -> float:
        """`||dL/dh_1|| / ||dL/dh_T||`: below 1 the gradient shrinks going back in time."""
        values = self.norms[layer or next(iter(self.norms))]
        return float(values[0] / values[-1])


def gradient_flow(report_or_model: Any, x: Any = None, y: Any = None, loss: Any = "mse", *,
                  layers: list[str] | None = None, title: str | None = None,
                  **gradient_kwargs: Any) -> GradientFlow:
    """Draw `||dL/dh_t||` against t for each recurrent layer (log scale).

    Args:
        report_or_model: a `GradientReport` from `unrolled.gradients(...)` (or a list of them,
            drawn on one axis to compare models), or a model or recurrent layer, in which case
            `x`, `y` and `loss` are required and the report is computed here.
        x: the input, `(batch, timesteps, features)`.
        y: the targets.
        loss: a loss name or `Loss`. Default "mse".
        layers: names of the recurrent layers to draw. Default: every one the report has.
        title: the figure's title. Default "Gradient flow back through time".
        **gradient_kwargs: passed to `unrolled.gradients` (`mask=`, `initial_state=`, ...).

    Returns:
        A `GradientFlow` (a `Diagram`: `.svg()`, `.png()`, `.save(stem)`), with `.norms`, one
        `(timesteps,)` array per layer, and `.ratio(layer)`.

    Example:
        >>> import numpy as np
        >>> from unrolled import layers
        >>> from unrolled.explain import gradient_flow
        >>> rnn = layers.SimpleRNN(4)
        >>> x = np.random.default_rng(0).normal(size=(2, 6, 3)).astype("float32")
        >>> flow = gradient_flow(rnn, x, np.ones((2, 4)), "mse")
        >>> flow.norms[rnn.name].shape        # one norm per timestep
        (6,)
    """
    if isinstance(report_or_model, (list, tuple)):
        reports = [_report(r, x, y, loss, gradient_kwargs) for r in report_or_model]
    else:
        reports = [_report(report_or_model, x, y, loss, gradient_kwargs)]
    hidden = {name: h for r in reports for name, h in r.hidden.items()}
    if sum(len(r.hidden) for r in reports) != len(hidden):
        raise ValueError("gradient_flow: two reports have a recurrent layer of the same name; "
                         "name the layers apart (e.g. layers.LSTM(8, name='lstm_a')).")
    names = list(hidden) if layers is None else list(layers)
    missing = [n for n in names if n not in hidden]
    if missing or not names:
        raise ValueError(
            f"gradient_flow: `layers` {missing or names} name no recurrent layer the gradients "
            f"reached; the report has {sorted(hidden) or 'none'}. Pass a model with a "
            f"recurrent layer (SimpleRNN, LSTM, GRU, RNN), or leave `layers` out."
        )
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.2, 4.2))
    ax = fig.add_axes((0.11, 0.13, 0.86, 0.70))
    norms, ids = {}, []
    layer_objects = _layers_by_name(report_or_model)  # to mark go_backwards layers
    longest = 1
    for k, name in enumerate(names):
        values = np.linalg.norm(hidden[name], axis=-1).mean(axis=0)         # (timesteps,)
        norms[name] = values
        steps = np.arange(1, len(values) + 1)
        longest = max(longest, len(values))
        shown = np.where(values > 0, values, np.nan)  # a log axis has no place for 0
        label = rf"{name}:  $\|\partial L/\partial h_1\| \,/\, \|\partial L/\partial h_T\|$ = {_ratio_text(values)}"
        if getattr(layer_objects.get(name), "go_backwards", False):
            label += " (go_backwards: runs T→1)"
        (line,) = ax.plot(steps, shown, marker="o", markersize=3.5 if len(steps) <= 30 else 2.2,
                          linewidth=1.6,
                          color=_COLORS[k % len(_COLORS)], label=label)
        line.set_gid(f"flow-{name}")
        ids.append(f"flow-{name}")
    ax.set_yscale("log")
    ax.set_xlabel("timestep t  (1 = first input step, T = last)")
    ax.set_ylabel(r"$\|\partial L/\partial h_t\|$  (mean over the batch)")
    ax.set_xlim(0.5, longest + 0.5)
    if longest <= 12:
        ax.set_xticks(range(1, longest + 1))
    ax.grid(True, which="major", color="#e5e7eb", linewidth=0.8)
    ax.grid(True, which="minor", axis="y", color="#f3f4f6", linewidth=0.5)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.legend(loc="best", fontsize=8, frameon=False)
    loss_text = (f"loss {reports[0].loss:.4g}, "
                 if len(reports) == 1 and reports[0].loss is not None else "")
    title = title or "Gradient flow back through time"
    fig.text(0.11, 0.955, title, fontsize=11 if len(title) <= 60 else 9.5, fontweight="bold",
             va="top")
    fig.text(0.11, 0.895, f"{loss_text}backpropagation runs from t = T back to t = 1: a curve "
             f"falling towards t = 1 is a vanishing gradient", fontsize=8, color="#4b5563",
             va="top")
    report = reports[0] if len(reports) == 1 else reports
    return GradientFlow(fig, {"lines": ids}, norms, report)


def _report(target: Any, x: Any, y: Any, loss: Any, kwargs: dict) -> Any:
    from unrolled.training.gradients import GradientReport, gradients

    if isinstance(target, GradientReport):
        if x is not None or y is not None or kwargs:
            raise ValueError("gradient_flow: a GradientReport already holds its gradients; "
                             "pass `x`, `y` and options only with a model or layer.")
        return target
    if x is None or y is None:
        raise ValueError(
            f"gradient_flow: with a {type(target).__name__}, give the input `x` and the targets "
            f"`y` (and `loss`), e.g. gradient_flow(model, x, y, 'mse'); or pass the report of "
            f"unrolled.gradients(...)."
        )
    return gradients(target, x, y, loss, **kwargs)


def _layers_by_name(target: Any) -> dict:
    found = {}
    for layer in [target] + list(getattr(target, "layers", []) or []):
        for inner in (layer, getattr(layer, "forward_layer", None),
                      getattr(layer, "backward_layer", None)):
            if getattr(inner, "name", None) is not None:
                found[inner.name] = inner
    return found


def _ratio_text(values: np.ndarray) -> str:
    if values[-1] == 0:
        return r"n/a ($\partial L/\partial h_T$ = 0)"
    return f"{values[0] / values[-1]:.2g}"
