"""Training: backpropagation through time, gradients for inspection, and compile/fit.

The backward equations of each layer sit next to its forward equations (in `unrolled.layers`);
this package holds the shared plumbing (`backprop`), activation derivatives, `gradients`, and the
`Trainer` mixin that gives models `compile`, `fit`, `evaluate` and `train_on_batch`.
"""

from unrolled.training.backprop import Grads
from unrolled.training.gradients import GradientReport, gradients

__all__ = ["Grads", "GradientReport", "gradients"]
