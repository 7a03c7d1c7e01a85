"""Keras's own golden values for SimpleRNN: constant weights on np.arange input.

The expected numbers are the ones Keras's test-suite asserts for the same layers; they pin the
math without any oracle at run time.
"""

import numpy as np
import pytest

from unrolled import initializers, layers

CONST = dict(
    kernel_initializer=initializers.Constant(0.01),
    recurrent_initializer=initializers.Constant(0.02),
    bias_initializer=initializers.Constant(0.03),
)
SEQ_234 = np.arange(24).reshape((2, 3, 4)).astype("float32")
SEQ_243 = np.arange(24).reshape((2, 4, 3)).astype("float32")
MASK = np.array([[True, True, False, True], [True, False, False, True]])


def rows(*values, width=4):
    return np.array([[v] * width for v in values], dtype="float32")


@pytest.mark.parametrize("unroll", [False, True])
def test_forward(unroll):
    out = layers.SimpleRNN(4, unroll=unroll, **CONST)(SEQ_234)
    np.testing.assert_allclose(out, rows(0.405432, 0.73605347), atol=1e-6)


@pytest.mark.parametrize("unroll", [False, True])
def test_go_backwards(unroll):
    out = layers.SimpleRNN(4, go_backwards=True, unroll=unroll, **CONST)(SEQ_234)
    np.testing.assert_allclose(out, rows(0.11144729, 0.5528889), atol=1e-6)


def test_stateful_carries_and_resets():
    layer = layers.SimpleRNN(4, stateful=True, **CONST)
    first = layer(SEQ_234)
    second = layer(SEQ_234)
    np.testing.assert_allclose(first, rows(0.405432, 0.73605347), atol=1e-6)
    np.testing.assert_allclose(second, rows(0.40559256, 0.7361247), atol=1e-6)
    layer.reset_state()
    np.testing.assert_allclose(layer(SEQ_234), first, atol=1e-6)
    np.testing.assert_allclose(layer(SEQ_234), second, atol=1e-6)


def test_initial_state():
    h0 = np.arange(8).reshape((2, 4)).astype("float32")
    out = layers.SimpleRNN(4, **CONST)(SEQ_243, initial_state=h0)
    np.testing.assert_allclose(out, rows(0.33621645, 0.6262637), atol=1e-6)
    out = layers.SimpleRNN(4, go_backwards=True, **CONST)(SEQ_243, initial_state=h0)
    np.testing.assert_allclose(out, rows(0.07344437, 0.43043602), atol=1e-6)


def test_mask_unrolled():
    out = layers.SimpleRNN(4, unroll=True, **CONST)(SEQ_243, mask=MASK)
    np.testing.assert_allclose(out, rows(0.32951632, 0.61799484), atol=1e-6)


def test_mask_sequences_hold_previous_output():
    out = layers.SimpleRNN(2, return_sequences=True, **CONST)(SEQ_243, mask=MASK)
    np.testing.assert_allclose(
        out[0], rows(0.0599281, 0.15122814, 0.15122814, 0.32394567, width=2), atol=1e-6)
    np.testing.assert_allclose(
        out[1], rows(0.3969304, 0.3969304, 0.3969304, 0.608085, width=2), atol=1e-6)


def test_mask_zero_output():
    out = layers.SimpleRNN(2, return_sequences=True, zero_output_for_mask=True, **CONST)(
        SEQ_243, mask=MASK)
    np.testing.assert_allclose(out[0], rows(0.0599281, 0.15122814, 0.0, 0.32394567, width=2),
                               atol=1e-6)
    np.testing.assert_allclose(out[1], rows(0.3969304, 0.0, 0.0, 0.608085, width=2), atol=1e-6)


def test_mask_go_backwards():
    out = layers.SimpleRNN(4, go_backwards=True, **CONST)(SEQ_243, mask=MASK)
    np.testing.assert_allclose(out, rows(0.07376196, 0.43645123), atol=1e-6)
