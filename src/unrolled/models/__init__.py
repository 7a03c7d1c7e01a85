"""Models: layers wired into a graph (`Model`) or stacked (`Sequential`).

`Input(shape)` starts a graph; calling layers on its tensor records the calls; `Model(inputs,
outputs)` runs them on arrays. Both model kinds share `predict`, `summary`, `layers`,
`get_layer`, `weights`, `get_weights`/`set_weights`, and `get_config`/`from_config` in the format
of a Keras 3 `.keras` file's config.json.
"""

from unrolled import _lazy

# Public names and their modules, imported on first use (PEP 562).
_NAMES = {
    "Input": "unrolled.layers.input_layer:Input",
    "InputLayer": "unrolled.layers.input_layer:InputLayer",
    "Model": "unrolled.models.model:Model",
    "SymbolicTensor": "unrolled.models.node:SymbolicTensor",
    "Sequential": "unrolled.models.sequential:Sequential",
}

__all__ = ["Input", "InputLayer", "Model", "Sequential", "SymbolicTensor"]

__getattr__, __dir__ = _lazy.attach(__name__, globals(), _NAMES, ("model", "node", "sequential"))
