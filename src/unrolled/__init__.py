"""unrolled: Keras's recurrent layers in NumPy, with every number in view.

>>> import numpy as np
>>> from unrolled import layers
>>> rnn = layers.SimpleRNN(4)
>>> rnn(np.ones((2, 5, 3))).shape        # (batch, units)
(2, 4)
"""

from unrolled import activations, initializers, layers, utils
from unrolled import models
from unrolled.models import Input, Model, Sequential
from unrolled.saving import load_model

__version__ = "0.1.0"

__all__ = ["activations", "initializers", "layers", "models", "utils", "Input", "Model",
           "Sequential", "load_model", "__version__", "callbacks", "losses", "metrics", "optimizers",
           "regularizers", "gradients"]

_LAZY = {"callbacks", "losses", "metrics", "optimizers", "regularizers", "gradients"}


def __getattr__(name: str):
    # Training modules load on first use, keeping `import unrolled` fast.
    if name in _LAZY:
        import importlib

        if name == "gradients":
            from unrolled.training.gradients import gradients
            return gradients
        return importlib.import_module(f"unrolled.{name}")
    raise AttributeError(f"module 'unrolled' has no attribute {name!r}")
