"""Write the tf.keras 2.x fixture files in tests/data/tf2/ (run by hand, needs TensorFlow).

The test suite has no TensorFlow, so these files are generated once and committed. To remake them,
in a throwaway environment outside the repository:

    python3.11 -m venv /tmp/tfvenv && /tmp/tfvenv/bin/pip install "tensorflow-cpu==2.15.*"
    /tmp/tfvenv/bin/python tests/data/make_tf2_files.py

For each model NAME it writes:
    NAME.h5          model.save(..., save_format="h5"): legacy HDF5 with model_config
    NAME.keras       model.save(...keras): tf.keras 2.15's zip format
    NAME.weights.h5  model.save_weights(NAME.weights.h5): tf.keras 2.15's new weights layout
    NAME_weights.h5  model.save_weights(NAME_weights.h5): legacy weights-only HDF5
    NAME.npz         inputs x0, x1, ... and the predictions y0, y1, ... tf.keras computed
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import tensorflow as tf

keras = tf.keras
L = keras.layers
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tf2")


def seq_lstm():
    return keras.Sequential([L.Input((5, 3)), L.LSTM(4), L.Dense(2)])


def gru_reset_after():
    return keras.Sequential([L.Input((5, 3)), L.GRU(4, reset_after=True, return_sequences=True),
                             L.GRU(3, reset_after=False)])


def bidirectional_td():
    return keras.Sequential([
        L.Input((6, 3)),
        L.Masking(0.0),
        L.Bidirectional(L.LSTM(4, return_sequences=True)),
        L.TimeDistributed(L.Dense(2, activation="tanh")),
    ])


def embedding_mask():
    return keras.Sequential([L.Input((7,), dtype="int32"), L.Embedding(10, 3, mask_zero=True),
                             L.GRU(4), L.Dense(1, activation="sigmoid")])


def simple_rnn():
    return keras.Sequential([L.Input((5, 2)), L.SimpleRNN(3, return_sequences=True),
                             L.SimpleRNN(2, activation="relu")])


def stacked_cells():
    return keras.Sequential([L.Input((4, 3)), L.RNN([L.SimpleRNNCell(3), L.LSTMCell(2)])])


def hard_sigmoid_lstm():
    # Keras 2's hard_sigmoid is 0.2x + 0.5 (Keras 3 changed it to x/6 + 1/2).
    return keras.Sequential([L.Input((5, 3)),
                             L.LSTM(4, recurrent_activation="hard_sigmoid"),
                             L.Dense(2)])


def encoder_decoder():
    enc_in = keras.Input((6, 3), name="encoder_inputs")
    _, h, c = L.LSTM(5, return_state=True, name="encoder")(enc_in)
    dec_in = keras.Input((4, 2), name="decoder_inputs")
    dec = L.LSTM(5, return_sequences=True, name="decoder")(dec_in, initial_state=[h, c])
    out = L.Dense(3, activation="softmax", name="head")(dec)
    return keras.Model([enc_in, dec_in], out)


MODELS = [seq_lstm, gru_reset_after, bidirectional_td, embedding_mask, simple_rnn,
          stacked_cells, hard_sigmoid_lstm, encoder_decoder]


def inputs_for(model, rng):
    xs = []
    for spec in model.inputs:
        shape = (3,) + tuple(spec.shape[1:])
        if spec.dtype.is_integer:
            x = rng.integers(1, 10, size=shape).astype("int32")
            x[0, -3:] = 0  # trailing padding, masked by mask_zero
            x[1, :2] = 0   # leading padding
        else:
            x = rng.normal(size=shape).astype("float32")
            x[0, -2:] = 0.0  # timesteps a Masking layer hides
        xs.append(x)
    return xs


def main() -> int:
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(1234)
    for i, make in enumerate(MODELS):
        keras.utils.set_random_seed(100 + i)
        model = make()
        # Make biases non-zero so a bias read in the wrong place shows.
        model.set_weights([w + rng.normal(scale=0.1, size=w.shape).astype(w.dtype)
                           for w in model.get_weights()])
        name = make.__name__
        xs = inputs_for(model, rng)
        ys = model.predict(xs if len(xs) > 1 else xs[0], verbose=0)
        ys = ys if isinstance(ys, list) else [ys]
        model.save(os.path.join(OUT, f"{name}.h5"), save_format="h5")
        model.save(os.path.join(OUT, f"{name}.keras"))
        model.save_weights(os.path.join(OUT, f"{name}.weights.h5"))
        model.save_weights(os.path.join(OUT, f"{name}_weights.h5"), save_format="h5")
        arrays = {f"x{k}": x for k, x in enumerate(xs)}
        arrays.update({f"y{k}": y for k, y in enumerate(ys)})
        np.savez(os.path.join(OUT, f"{name}.npz"), **arrays)
        print(name, [x.shape for x in xs], [y.shape for y in ys])
    with open(os.path.join(OUT, "VERSIONS.json"), "w") as f:
        json.dump({"tensorflow": tf.__version__, "python": sys.version.split()[0],
                   "numpy": np.__version__}, f, indent=1)
        f.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
