"""See a recurrent layer work: its equation, a trace of every value, diagrams, animations, a page.

`explain(layer, x)` maps the textbook equation onto the object (symbols, shapes, API names,
parameter count, what the call returns). `trace(layer, x)` runs the layer with a recorder attached
and keeps every intermediate value. `diagrams`, `animation` and `page` draw from the object and
from a trace; they need matplotlib and Pillow, imported only when used.
"""

from unrolled.explain._text import Explanation, explain
from unrolled.explain._trace import Step, Trace, trace

__all__ = ["explain", "trace", "gradient_flow", "Explanation", "Trace", "Step", "GradientFlow"]


def __getattr__(name: str):
    # gradient_flow draws (it is a Diagram): loaded on first use, keeping `import unrolled` fast.
    if name in ("gradient_flow", "GradientFlow"):
        from unrolled.explain import gradients

        return getattr(gradients, name)
    raise AttributeError(f"module 'unrolled.explain' has no attribute {name!r}")
