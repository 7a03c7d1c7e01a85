"""The notebook "Understanding Recurrent Neural Networks in TensorFlow", run on unrolled.

The notebook's code with `tf.keras.layers` replaced by `unrolled.layers` and `tf.constant` by
`np.asarray`. `walkthrough` takes the layers namespace as an argument, so the test-suite runs the
very same steps on real Keras (with the same weights) and compares every number printed.

    python examples/notebook_walkthrough.py
"""

from __future__ import annotations

import numpy as np


def walkthrough(L, weights=None, call_cell=None, echo=print):
    """Run the notebook's steps with the layers namespace `L` (unrolled.layers or keras.layers).

    `weights` optionally maps each step's name to the arrays to load after building, so another
    library can be given the same weights; `call_cell(cell, x, h)` calls a cell (default: the
    notebook's keyword form). Returns every printed quantity as NumPy arrays, plus the weights.
    """
    weights = weights or {}
    call_cell = call_cell or (lambda cell, x, h: cell(inputs=x, states=h))
    batch, timestamp, feature, units = 3, 4, 2, 5
    X = np.asarray(np.random.default_rng(2024).normal(size=(batch, timestamp, feature)),
                   dtype="float32")
    out = {}

    # --- SimpleRNNCell: one step, (output, new_states) = cell(x_t, states)
    simple_rnn_cell = L.SimpleRNNCell(units)
    X_1 = X[:, 0, :]
    h_0 = (np.zeros((batch, units), dtype="float32"),)
    call_cell(simple_rnn_cell, X_1, h_0)                       # builds the weights
    if "cell" in weights:
        simple_rnn_cell.set_weights(weights["cell"])
    output, new_states = call_cell(simple_rnn_cell, X_1, h_0)
    U, W, b = simple_rnn_cell.get_weights()
    echo(f"U {U.shape}  W {W.shape}  b {b.shape}")             # (feature, units) (units, units) (units,)
    h_1 = np.tanh(X_1 @ U + h_0[0] @ W + b)
    echo("cell output:\n", np.asarray(output))
    echo("by hand, max |diff|:", np.abs(h_1 - np.asarray(output)).max())
    out.update(cell_output=np.asarray(output), cell_state=np.asarray(new_states[0]),
               cell_by_hand=h_1)

    # --- SimpleRNN: the cell over all timesteps
    simple_rnn = L.SimpleRNN(units, return_sequences=True, return_state=True)
    simple_rnn(X)
    if "simple_rnn" in weights:
        simple_rnn.set_weights(weights["simple_rnn"])
    whole_sequence_output, final_state = simple_rnn(X)
    U, W, b = simple_rnn.get_weights()
    h_t = np.zeros((batch, units), dtype="float32")
    by_hand = []
    for t in range(timestamp):
        h_t = np.tanh(X[:, t, :] @ U + h_t @ W + b)
        by_hand.append(h_t)
    by_hand = np.stack(by_hand, axis=1)
    echo("SimpleRNN whole sequence", np.asarray(whole_sequence_output).shape)
    echo("by hand, max |diff|:", np.abs(by_hand - np.asarray(whole_sequence_output)).max())
    out.update(rnn_sequence=np.asarray(whole_sequence_output), rnn_state=np.asarray(final_state),
               rnn_by_hand=by_hand)

    # --- StackedRNNCells: cells feeding each other, one state per cell
    stacked = L.StackedRNNCells([L.SimpleRNNCell(units), L.SimpleRNNCell(units + 1)])
    stacked_rnn = L.RNN(stacked, return_sequences=True, return_state=True)
    stacked_rnn(X)
    if "stacked" in weights:
        stacked_rnn.set_weights(weights["stacked"])
    seq, state_1, state_2 = stacked_rnn(X)
    echo("stacked: sequence", np.asarray(seq).shape, "states",
         np.asarray(state_1[0]).shape, np.asarray(state_2[0]).shape)
    out.update(stacked_sequence=np.asarray(seq), stacked_state_1=np.asarray(state_1[0]),
               stacked_state_2=np.asarray(state_2[0]))

    # --- RNN: the generic wrapper around a cell
    rnn = L.RNN(L.SimpleRNNCell(units), return_sequences=False)
    rnn(X)
    if "rnn" in weights:
        rnn.set_weights(weights["rnn"])
    out["generic_rnn"] = np.asarray(rnn(X))

    out["weights"] = {
        "cell": simple_rnn_cell.get_weights(), "simple_rnn": simple_rnn.get_weights(),
        "stacked": stacked_rnn.get_weights(), "rnn": rnn.get_weights(),
    }
    return out


if __name__ == "__main__":
    from unrolled import layers

    walkthrough(layers)
