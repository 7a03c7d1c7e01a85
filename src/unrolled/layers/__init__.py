"""Keras's recurrent layers in NumPy.

`SimpleRNNCell`, `LSTMCell` and `GRUCell` compute one timestep, `RNN` runs any cell over time,
`SimpleRNN`, `LSTM` and `GRU` are a cell and `RNN` together, and `StackedRNNCells` chains cells
into one. `Layer` and `RNNCell` are the base classes
for writing your own.
"""

from unrolled.layers.base import Layer, Weight
from unrolled.layers.cell import RNNCell
from unrolled.layers.gru import GRU, GRUCell
from unrolled.layers.lstm import LSTM, LSTMCell
from unrolled.layers.rnn import RNN
from unrolled.layers.simple_rnn import SimpleRNN, SimpleRNNCell
from unrolled.layers.stacked import StackedRNNCells

__all__ = ["Layer", "Weight", "RNNCell", "RNN", "SimpleRNN", "SimpleRNNCell", "StackedRNNCells",
           "LSTM", "LSTMCell", "GRU", "GRUCell"]
