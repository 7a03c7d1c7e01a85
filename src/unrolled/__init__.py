"""unrolled: Keras's recurrent layers in NumPy, with every number in view.

>>> import numpy as np
>>> from unrolled import layers
>>> rnn = layers.SimpleRNN(4)
>>> rnn(np.ones((2, 5, 3))).shape        # (batch, units)
(2, 4)
"""

from unrolled import activations, initializers, layers, utils
from unrolled import models
from unrolled.explain import explain, trace
from unrolled.models import Input, Model, Sequential
from unrolled.saving import load_model

__version__ = "0.1.0"

__all__ = ["activations", "initializers", "layers", "models", "utils", "Input", "Model",
           "Sequential", "explain", "load_model", "trace", "__version__"]
