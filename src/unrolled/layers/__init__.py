"""Keras's recurrent layers in NumPy.

`SimpleRNNCell` computes one timestep, `RNN` runs any cell over time, `SimpleRNN` is the two
together, and `StackedRNNCells` chains cells into one. `Layer` and `RNNCell` are the base classes
for writing your own.
"""

from unrolled.layers.base import Layer, Weight
from unrolled.layers.cell import RNNCell
from unrolled.layers.core import Dense, Dropout, Embedding, Masking
from unrolled.layers.gru import GRU, GRUCell
from unrolled.layers.input_layer import Input, InputLayer
from unrolled.layers.lstm import LSTM, LSTMCell
from unrolled.layers.rnn import RNN
from unrolled.layers.simple_rnn import SimpleRNN, SimpleRNNCell
from unrolled.layers.serialization import deserialize, serialize
from unrolled.layers.stacked import StackedRNNCells
from unrolled.layers.wrappers import Bidirectional, TimeDistributed

__all__ = ["Layer", "Weight", "RNNCell", "RNN", "SimpleRNN", "SimpleRNNCell", "StackedRNNCells",
           "LSTM", "LSTMCell", "GRU", "GRUCell",
           "Dense", "Embedding", "Masking", "Dropout", "TimeDistributed", "Bidirectional",
           "Input", "InputLayer", "serialize", "deserialize"]
