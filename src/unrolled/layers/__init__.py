"""Keras's recurrent layers in NumPy.

`SimpleRNNCell`, `LSTMCell` and `GRUCell` compute one timestep, `RNN` runs any cell over time,
`SimpleRNN`, `LSTM` and `GRU` are a cell and `RNN` together, and `StackedRNNCells` chains cells
into one. `Layer` and `RNNCell` are the base classes
for writing your own.
"""

from unrolled import _lazy

# Each public name and the module defining it; a module is imported when one of its names is
# first used (PEP 562), so `import unrolled` does not pay for layers it never touches.
_NAMES = {
    "Layer": "unrolled.layers.base:Layer",
    "Weight": "unrolled.layers.base:Weight",
    "RNNCell": "unrolled.layers.cell:RNNCell",
    "Dense": "unrolled.layers.core:Dense",
    "Dropout": "unrolled.layers.core:Dropout",
    "Embedding": "unrolled.layers.core:Embedding",
    "Masking": "unrolled.layers.core:Masking",
    "GRU": "unrolled.layers.gru:GRU",
    "GRUCell": "unrolled.layers.gru:GRUCell",
    "Input": "unrolled.layers.input_layer:Input",
    "InputLayer": "unrolled.layers.input_layer:InputLayer",
    "LSTM": "unrolled.layers.lstm:LSTM",
    "LSTMCell": "unrolled.layers.lstm:LSTMCell",
    "RNN": "unrolled.layers.rnn:RNN",
    "SimpleRNN": "unrolled.layers.simple_rnn:SimpleRNN",
    "SimpleRNNCell": "unrolled.layers.simple_rnn:SimpleRNNCell",
    "deserialize": "unrolled.layers.serialization:deserialize",
    "serialize": "unrolled.layers.serialization:serialize",
    "StackedRNNCells": "unrolled.layers.stacked:StackedRNNCells",
    "Bidirectional": "unrolled.layers.wrappers:Bidirectional",
    "TimeDistributed": "unrolled.layers.wrappers:TimeDistributed",
}
_SUBMODULES = ("_builtin", "_serialization", "base", "cell", "core", "gru", "input_layer", "lstm",
               "rnn", "serialization", "simple_rnn", "stacked", "wrappers")

__all__ = ["Layer", "Weight", "RNNCell", "RNN", "SimpleRNN", "SimpleRNNCell", "StackedRNNCells",
           "LSTM", "LSTMCell", "GRU", "GRUCell",
           "Dense", "Embedding", "Masking", "Dropout", "TimeDistributed", "Bidirectional",
           "Input", "InputLayer", "serialize", "deserialize"]

__getattr__, __dir__ = _lazy.attach(__name__, globals(), _NAMES, _SUBMODULES)
