"""The notebook's code runs on unrolled and prints the numbers Keras prints for the same weights."""

import importlib.util
import pathlib

import numpy as np

from conftest import assert_close

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_walkthrough():
    spec = importlib.util.spec_from_file_location(
        "notebook_walkthrough", ROOT / "examples" / "notebook_walkthrough.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.walkthrough


def test_notebook_on_unrolled_matches_keras(keras):
    walkthrough = load_walkthrough()
    from unrolled import layers

    ours = walkthrough(layers, echo=lambda *a: None)
    # Keras 3 rejects the notebook's keyword call (it renamed `inputs` to `sequence`).
    theirs = walkthrough(keras.layers, weights=ours["weights"], echo=lambda *a: None,
                         call_cell=lambda cell, x, h: cell(x, h))
    for key, value in ours.items():
        if key != "weights":
            assert_close(value, theirs[key], what=key)
    assert_close(ours["cell_output"], ours["cell_by_hand"], what="cell equations by hand")
    assert_close(ours["rnn_sequence"], ours["rnn_by_hand"], what="SimpleRNN equations by hand")
    assert ours["weights"]["cell"][0].shape == (2, 5)      # U (feature, units)


def test_keras3_rejects_the_notebook_call_that_unrolled_accepts(keras):
    from unrolled import layers

    x = np.ones((2, 3), dtype="float32")
    h = (np.zeros((2, 4), dtype="float32"),)
    out, states = layers.SimpleRNNCell(4)(inputs=x, states=h)
    assert out.shape == (2, 4) and isinstance(states, list)
    try:
        keras.layers.SimpleRNNCell(4)(inputs=x, states=h)
    except TypeError as error:
        assert "sequence" in str(error)
    else:  # pragma: no cover - documents Keras's behaviour; update the README if it changes
        raise AssertionError("Keras now accepts inputs=; the README's note needs updating")
    out2, _ = layers.SimpleRNNCell(4)(sequence=x, states=h)
    assert out2.shape == (2, 4)
