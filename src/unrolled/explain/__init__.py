"""See a recurrent layer work: its equation, a trace of every value, diagrams, animations, a page.

`explain(layer, x)` maps the textbook equation onto the object (symbols, shapes, API names,
parameter count, what the call returns). `trace(layer, x)` runs the layer with a recorder attached
and keeps every intermediate value. `diagrams`, `animation` and `page` draw from the object and
from a trace; they need matplotlib and Pillow, imported only when used.
"""

from unrolled import _lazy

__all__ = ["explain", "trace", "gradient_flow", "Explanation", "Trace", "Step", "GradientFlow"]

# Public names and their modules, imported on first use (PEP 562). gradient_flow draws (it is a
# Diagram); none of this is needed by `import unrolled`.
_NAMES = {
    "explain": "unrolled.explain._text:explain",
    "Explanation": "unrolled.explain._text:Explanation",
    "trace": "unrolled.explain._trace:trace",
    "Trace": "unrolled.explain._trace:Trace",
    "Step": "unrolled.explain._trace:Step",
    "gradient_flow": "unrolled.explain.gradients:gradient_flow",
    "GradientFlow": "unrolled.explain.gradients:GradientFlow",
}

__getattr__, __dir__ = _lazy.attach(__name__, globals(), _NAMES, ("_text", "_trace"))
