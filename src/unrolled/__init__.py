"""unrolled: Keras's recurrent layers in NumPy, with every number in view.

>>> import numpy as np
>>> from unrolled import layers
>>> rnn = layers.SimpleRNN(4)
>>> rnn(np.ones((2, 5, 3))).shape        # (batch, units)
(2, 4)
"""

from unrolled import _lazy

__version__ = "0.1.0"

__all__ = ["activations", "callbacks", "initializers", "layers", "losses", "metrics", "models",
           "optimizers", "regularizers", "utils", "Input", "Model", "Sequential", "explain",
           "gradients", "load_model", "trace", "__version__"]

# Everything loads on first use (PEP 562), keeping `import unrolled` fast: `unrolled.layers.LSTM`
# imports the LSTM module and what it needs, `unrolled.load_model` the saving code, and so on.
_NAMES = {
    "activations": "unrolled.activations",
    "callbacks": "unrolled.callbacks",
    "initializers": "unrolled.initializers",
    "layers": "unrolled.layers",
    "losses": "unrolled.losses",
    "metrics": "unrolled.metrics",
    "models": "unrolled.models",
    "optimizers": "unrolled.optimizers",
    "regularizers": "unrolled.regularizers",
    "utils": "unrolled.utils",
    "Input": "unrolled.layers.input_layer:Input",
    "Model": "unrolled.models.model:Model",
    "Sequential": "unrolled.models.sequential:Sequential",
    "explain": "unrolled.explain._text:explain",
    "trace": "unrolled.explain._trace:trace",
    "gradients": "unrolled.training.gradients:gradients",
    "load_model": "unrolled.saving._api:load_model",
}

# `unrolled.explain` is the function, not the package of the same name. The package (whose
# `__init__` imports nothing heavy) is imported now, so that importing one of its submodules
# later (`import unrolled.explain.diagrams`) cannot rebind `unrolled.explain` to the package;
# its name is then removed so that `__getattr__` hands out the function.
from unrolled import explain as _explain_package  # noqa: E402

del explain, _explain_package  # noqa: F821

__getattr__, __dir__ = _lazy.attach(__name__, globals(), _NAMES,
                                    ("_checks", "_random", "saving", "training"))
