"""Models: layers wired into a graph (`Model`) or stacked (`Sequential`).

`Input(shape)` starts a graph; calling layers on its tensor records the calls; `Model(inputs,
outputs)` runs them on arrays. Both model kinds share `predict`, `summary`, `layers`,
`get_layer`, `weights`, `get_weights`/`set_weights`, and `get_config`/`from_config` in the format
of a Keras 3 `.keras` file's config.json.
"""

from unrolled.layers.input_layer import Input, InputLayer
from unrolled.models.model import Model
from unrolled.models.node import SymbolicTensor
from unrolled.models.sequential import Sequential

__all__ = ["Input", "InputLayer", "Model", "Sequential", "SymbolicTensor"]
