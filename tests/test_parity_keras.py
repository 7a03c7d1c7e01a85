"""Randomized parity with real Keras 3 (JAX backend): same arguments, same weights, same numbers.

Every test builds the Keras layer and the unrolled layer alike, copies unrolled's weights into
Keras, calls both on the same input, and requires agreement to 1e-5 (float32).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from conftest import assert_close
from unrolled import layers

MASK_KINDS = [None, "post", "pre", "random"]


def random_sizes(rng, max_batch=5, max_time=7, max_features=6, max_units=8):
    return (int(rng.integers(1, max_batch + 1)), int(rng.integers(1, max_time + 1)),
            int(rng.integers(1, max_features + 1)), int(rng.integers(1, max_units + 1)))


def make_mask(rng, kind, batch, timesteps):
    """Padding masks as data pipelines make them: trailing, leading, or arbitrary holes."""
    if kind is None:
        return None
    lengths = rng.integers(0, timesteps + 1, size=batch)
    lengths[0] = timesteps  # at least one full-length sample
    steps = np.arange(timesteps)[None, :]
    if kind == "post":
        return steps < lengths[:, None]
    if kind == "pre":
        return steps >= (timesteps - lengths)[:, None]
    return rng.random((batch, timesteps)) < 0.6


def as_tuple(result):
    return result if isinstance(result, (list, tuple)) else (result,)


def compare(ours, theirs, what="output"):
    ours, theirs = as_tuple(ours), as_tuple(theirs)
    assert len(ours) == len(theirs), f"{what}: {len(ours)} results vs Keras's {len(theirs)}"
    for k, (a, b) in enumerate(zip(ours, theirs)):
        if isinstance(b, (list, tuple)):
            assert isinstance(a, list), f"{what}[{k}]: Keras returns a nested list here"
            compare(a, b, f"{what}[{k}]")
        else:
            assert isinstance(a, np.ndarray), f"{what}[{k}]: expected a NumPy array, got {type(a)}"
            assert_close(a, np.asarray(b), what=f"{what}[{k}]")


def sync(ours, theirs, x, **call_kwargs):
    """Build both layers on `x` and give Keras unrolled's weights."""
    ours(x, **call_kwargs)
    theirs(x, **call_kwargs)
    theirs.set_weights(ours.get_weights())


@pytest.mark.parametrize("return_sequences,return_state,go_backwards",
                         list(itertools.product([False, True], repeat=3)))
@pytest.mark.parametrize("mask_kind", MASK_KINDS)
@pytest.mark.parametrize("with_h0", [False, True])
def test_simple_rnn(keras, rng, return_sequences, return_state, go_backwards, mask_kind, with_h0):
    batch, timesteps, features, units = random_sizes(rng)
    flags = dict(return_sequences=return_sequences, return_state=return_state,
                 go_backwards=go_backwards)
    ours = layers.SimpleRNN(units, bias_initializer="random_normal", **flags)
    theirs = keras.layers.SimpleRNN(units, **flags)
    x = rng.normal(size=(batch, timesteps, features)).astype("float32")
    sync(ours, theirs, x)
    kwargs = {}
    mask = make_mask(rng, mask_kind, batch, timesteps)
    if mask is not None:
        kwargs["mask"] = mask
    if with_h0:
        kwargs["initial_state"] = rng.normal(size=(batch, units)).astype("float32")
    compare(ours(x, **kwargs), theirs(x, **kwargs))


@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid", None, "hard_sigmoid", "elu",
                                        "softsign", "swish", "gelu"])
@pytest.mark.parametrize("use_bias", [True, False])
def test_simple_rnn_activations_and_bias(keras, rng, activation, use_bias):
    batch, timesteps, features, units = random_sizes(rng)
    ours = layers.SimpleRNN(units, activation=activation, use_bias=use_bias,
                            bias_initializer="random_normal", return_sequences=True)
    theirs = keras.layers.SimpleRNN(units, activation=activation, use_bias=use_bias,
                                    return_sequences=True)
    x = rng.normal(size=(batch, timesteps, features)).astype("float32")
    sync(ours, theirs, x)
    assert len(ours.get_weights()) == (3 if use_bias else 2)
    compare(ours(x), theirs(x))


@pytest.mark.parametrize("mask_kind", MASK_KINDS)
@pytest.mark.parametrize("zero_output_for_mask", [False, True])
@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("go_backwards", [False, True])
def test_rnn_wrapper_zero_output_for_mask(keras, rng, mask_kind, zero_output_for_mask,
                                          return_sequences, go_backwards):
    batch, timesteps, features, units = random_sizes(rng)
    flags = dict(return_sequences=return_sequences, go_backwards=go_backwards,
                 zero_output_for_mask=zero_output_for_mask, return_state=True)
    ours = layers.RNN(layers.SimpleRNNCell(units, bias_initializer="random_normal"), **flags)
    theirs = keras.layers.RNN(keras.layers.SimpleRNNCell(units), **flags)
    x = rng.normal(size=(batch, timesteps, features)).astype("float32")
    sync(ours, theirs, x)
    mask = make_mask(rng, mask_kind, batch, timesteps)
    h0 = rng.normal(size=(batch, units)).astype("float32")
    compare(ours(x, mask=mask, initial_state=[h0]), theirs(x, mask=mask, initial_state=[h0]))


@pytest.mark.parametrize("mask_kind", MASK_KINDS)
@pytest.mark.parametrize("return_sequences", [False, True])
def test_unroll_matches_keras(keras, rng, mask_kind, return_sequences):
    batch, timesteps, features, units = random_sizes(rng)
    flags = dict(return_sequences=return_sequences, unroll=True, return_state=True)
    ours = layers.SimpleRNN(units, bias_initializer="random_normal", **flags)
    theirs = keras.layers.SimpleRNN(units, **flags)
    x = rng.normal(size=(batch, timesteps, features)).astype("float32")
    sync(ours, theirs, x)
    mask = make_mask(rng, mask_kind, batch, timesteps)
    h0 = rng.normal(size=(batch, units)).astype("float32")
    compare(ours(x, mask=mask, initial_state=h0), theirs(x, mask=mask, initial_state=h0))


def test_unroll_honours_zero_output_for_mask(keras, rng):
    """Keras on JAX/NumPy ignores zero_output_for_mask when unrolled; TensorFlow and unrolled
    honour it: masked steps are zeros, the rest equal Keras's."""
    batch, timesteps, features, units = 4, 6, 3, 5
    x = rng.normal(size=(batch, timesteps, features)).astype("float32")
    mask = make_mask(rng, "random", batch, timesteps)
    ours = layers.SimpleRNN(units, unroll=True, zero_output_for_mask=True, return_sequences=True)
    theirs = keras.layers.SimpleRNN(units, unroll=True, return_sequences=True)
    sync(ours, theirs, x)
    expected = np.where(mask[..., None], np.asarray(theirs(x, mask=mask)), 0.0)
    assert_close(ours(x, mask=mask), expected)


def _stack(module, widths, **cell_kwargs):
    return [module.SimpleRNNCell(w, **cell_kwargs) for w in widths]


@pytest.mark.parametrize("mask_kind", MASK_KINDS)
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("state_form", ["default", "nested"])
def test_stacked_cells_in_rnn(keras, rng, mask_kind, go_backwards, return_sequences, state_form):
    batch, timesteps, features, _ = random_sizes(rng)
    widths = [int(w) for w in rng.integers(1, 7, size=3)]
    flags = dict(return_sequences=return_sequences, return_state=True, go_backwards=go_backwards)
    ours = layers.RNN(_stack(layers, widths, bias_initializer="random_normal"), **flags)
    theirs = keras.layers.RNN(_stack(keras.layers, widths), **flags)
    x = rng.normal(size=(batch, timesteps, features)).astype("float32")
    sync(ours, theirs, x)
    kwargs = {"mask": make_mask(rng, mask_kind, batch, timesteps)}
    if state_form == "nested":
        kwargs["initial_state"] = [[rng.normal(size=(batch, w)).astype("float32")]
                                   for w in widths]
    result = ours(x, **kwargs)
    assert len(result) == 1 + len(widths)
    compare(result, theirs(x, **kwargs))


def test_stacked_bare_states_per_cell(keras, rng):
    """A bare array per cell is accepted, and each cell's new state comes back bare."""
    widths = [3, 5]
    x = rng.normal(size=(2, 4, 3)).astype("float32")
    ours = layers.RNN(_stack(layers, widths), return_state=True)
    theirs = keras.layers.RNN(_stack(keras.layers, widths), return_state=True)
    sync(ours, theirs, x)
    h0 = [rng.normal(size=(2, w)).astype("float32") for w in widths]
    out, s1, s2 = ours(x, initial_state=h0)
    assert isinstance(s1, np.ndarray) and s1.shape == (2, 3)
    compare((out, s1, s2), theirs(x, initial_state=h0))


def test_stacked_cells_single_step(keras, rng):
    widths = [4, 2, 6]
    ours = layers.StackedRNNCells(_stack(layers, widths, bias_initializer="random_normal"))
    theirs = keras.layers.StackedRNNCells(_stack(keras.layers, widths))
    x_t = rng.normal(size=(3, 5)).astype("float32")
    states = [[rng.normal(size=(3, w)).astype("float32")] for w in widths]
    ours(x_t, states)
    theirs.build((3, 5))
    theirs.set_weights(ours.get_weights())
    out, new = ours(x_t, states)
    k_out, k_new = theirs(x_t, states)
    compare((out,), (k_out,))
    compare(new, k_new, "new_states")
    assert [len(s) for s in new] == [1, 1, 1]
    assert ours.state_size == theirs.state_size == widths


@pytest.mark.parametrize("states_form", ["bare", "tuple", "list"])
def test_cell_step(keras, rng, states_form):
    batch, _, features, units = random_sizes(rng)
    ours = layers.SimpleRNNCell(units, bias_initializer="random_normal")
    theirs = keras.layers.SimpleRNNCell(units)
    x_t = rng.normal(size=(batch, features)).astype("float32")
    h = rng.normal(size=(batch, units)).astype("float32")
    states = {"bare": h, "tuple": (h,), "list": [h]}[states_form]
    ours(x_t, states)
    theirs(x_t, states)
    theirs.set_weights(ours.get_weights())
    out, new = ours(x_t, states)
    k_out, k_new = theirs(x_t, states)
    assert_close(out, np.asarray(k_out))
    if states_form == "bare":
        assert isinstance(new, np.ndarray)
        assert_close(new, np.asarray(k_new), what="new_states")
    else:
        assert isinstance(new, list) and len(new) == 1
        assert_close(new[0], np.asarray(k_new[0]), what="new_states")


class _Minimal:
    """The custom cell of Keras's RNN docs, written once per library: h = x K + h R, two states."""

    @staticmethod
    def make(base, units):
        class TwoStateCell(base):
            def __init__(self, units, **kwargs):
                super().__init__(**kwargs)
                self.units = units
                self.state_size = [units, units]
                self.output_size = units

            def build(self, input_shape):
                self.kernel = self.add_weight(shape=(input_shape[-1], self.units),
                                              initializer="uniform", name="kernel")
                self.recurrent_kernel = self.add_weight(shape=(self.units, self.units),
                                                        initializer="uniform",
                                                        name="recurrent_kernel")

            def call(self, inputs, states):
                h, acc = states
                out = inputs @ self.kernel + h @ self.recurrent_kernel
                return out, [out, acc + out]

        return TwoStateCell(units)


@pytest.mark.parametrize("mask_kind", MASK_KINDS)
@pytest.mark.parametrize("go_backwards", [False, True])
def test_user_cell_in_rnn_and_stack(keras, rng, mask_kind, go_backwards):
    batch, timesteps, features, units = random_sizes(rng)
    flags = dict(return_sequences=True, return_state=True, go_backwards=go_backwards)
    ours = layers.RNN([_Minimal.make(layers.Layer, units), layers.SimpleRNNCell(units + 1)],
                      **flags)
    theirs = keras.layers.RNN([_Minimal.make(keras.layers.Layer, units),
                               keras.layers.SimpleRNNCell(units + 1)], **flags)
    x = rng.normal(size=(batch, timesteps, features)).astype("float32")
    sync(ours, theirs, x)
    mask = make_mask(rng, mask_kind, batch, timesteps)
    compare(ours(x, mask=mask), theirs(x, mask=mask))

    single = layers.RNN(_Minimal.make(layers.Layer, units), return_state=True)
    k_single = keras.layers.RNN(_Minimal.make(keras.layers.Layer, units), return_state=True)
    sync(single, k_single, x)
    compare(single(x, mask=mask), k_single(x, mask=mask))


def test_stateful_matches_keras(keras, rng):
    batch, timesteps, features, units = 3, 4, 2, 5
    ours = layers.SimpleRNN(units, stateful=True, return_sequences=True)
    theirs = keras.layers.SimpleRNN(units, stateful=True, return_sequences=True)
    xs = [rng.normal(size=(batch, timesteps, features)).astype("float32") for _ in range(3)]
    sync(ours, theirs, xs[0])
    ours.reset_state()
    theirs.reset_state()
    for k, x in enumerate(xs):
        compare(ours(x), theirs(x), f"call {k}")
    ours.reset_states()
    theirs.reset_states()
    compare(ours(xs[0]), theirs(xs[0]), "after reset")
    h0 = rng.normal(size=(batch, units)).astype("float32")
    compare(ours(xs[1], initial_state=h0), theirs(xs[1], initial_state=h0), "explicit h0")
    compare(ours(xs[2]), theirs(xs[2]), "continues from the explicit call")


def test_stateful_stacked_rnn(keras, rng):
    """Keras crashes in reset_state() of a stateful stacked RNN; unrolled carries and resets."""
    widths = [3, 4]
    x1, x2 = (rng.normal(size=(2, 3, 2)).astype("float32") for _ in range(2))
    ours = layers.RNN(_stack(layers, widths), stateful=True)
    theirs = keras.layers.RNN(_stack(keras.layers, widths), stateful=True)
    sync(ours, theirs, x1)
    fresh = keras.layers.RNN(_stack(keras.layers, widths))
    fresh(x1)
    fresh.set_weights(ours.get_weights())
    ours.reset_state()
    h_first = ours(x1)
    compare(h_first, fresh(x1), "first call")
    carried = [[np.asarray(s) for s in cell] for cell in ours.states]
    compare(ours(x2), fresh(x2, initial_state=carried), "second call starts from carried states")
    ours.reset_state()
    assert all(not s.any() for cell in ours.states for s in cell)
    compare(ours(x1), h_first, "after reset")


def test_weights_order_names_and_shapes(keras, rng):
    x = rng.normal(size=(2, 3, 5)).astype("float32")
    ours = layers.SimpleRNN(4)
    theirs = keras.layers.SimpleRNN(4)
    sync(ours, theirs, x)
    assert [w.name for w in ours.weights] == [w.name for w in theirs.weights]
    assert [w.shape for w in ours.weights] == [tuple(w.shape) for w in theirs.weights]
    assert [w.path.split("/", 1)[1] for w in ours.weights] == [
        w.path.split("/", 1)[1] for w in theirs.weights]
    stack = layers.RNN(_stack(layers, [3, 2]))
    k_stack = keras.layers.RNN(_stack(keras.layers, [3, 2]))
    sync(stack, k_stack, x)
    assert [w.shape for w in stack.weights] == [tuple(w.shape) for w in k_stack.weights]


def test_dropout_inactive_in_inference(keras, rng):
    batch, timesteps, features, units = random_sizes(rng)
    ours = layers.SimpleRNN(units, dropout=0.5, recurrent_dropout=0.3, return_sequences=True)
    theirs = keras.layers.SimpleRNN(units, dropout=0.5, recurrent_dropout=0.3,
                                    return_sequences=True)
    x = rng.normal(size=(batch, timesteps, features)).astype("float32")
    sync(ours, theirs, x)
    compare(ours(x), theirs(x))
    compare(ours(x, training=False), theirs(x, training=False))


@pytest.mark.parametrize("go_backwards", [False, True])
def test_dropout_in_training_with_the_same_masks(keras, rng, go_backwards):
    """RNG streams cannot match, so both libraries are handed the same masks (each caches the
    masks it is given for the call); the training-mode math must then agree exactly."""
    batch, timesteps, features, units = 3, 5, 4, 6
    flags = dict(dropout=0.4, recurrent_dropout=0.25, return_sequences=True,
                 go_backwards=go_backwards)
    ours = layers.SimpleRNN(units, **flags)
    theirs = keras.layers.SimpleRNN(units, **flags)
    x = rng.normal(size=(batch, timesteps, features)).astype("float32")
    sync(ours, theirs, x)
    input_mask = (rng.random((batch, features)) > 0.4).astype("float32") / 0.6
    state_mask = (rng.random((batch, units)) > 0.25).astype("float32") / 0.75
    for cell in (ours.cell, theirs.cell):
        cell._dropout_mask = input_mask
        cell._recurrent_dropout_mask = state_mask
    result = ours(x, training=True)
    compare(result, theirs(x, training=True))
    assert not np.allclose(result, ours(x)), "the masks must have changed the output"


@pytest.mark.parametrize("return_sequences,return_state", list(itertools.product([False, True],
                                                                                 repeat=2)))
@pytest.mark.parametrize("stacked", [False, True])
def test_output_shape_and_mask_propagation(keras, return_sequences, return_state, stacked):
    flags = dict(return_sequences=return_sequences, return_state=return_state)

    def make(module):
        if stacked:
            return module.RNN([module.SimpleRNNCell(3), module.SimpleRNNCell(5)], **flags)
        return module.SimpleRNN(4, **flags)

    ours, theirs = make(layers), make(keras.layers)
    shape = (2, 6, 3)
    theirs.build(shape)
    ours.build(shape)

    def normalise(value):
        if isinstance(value, (list, tuple)) and value and not isinstance(value[0], int):
            return [normalise(v) for v in value]
        return tuple(value)

    assert normalise(ours.compute_output_shape(shape)) == normalise(
        theirs.compute_output_shape(shape))
    mask = np.ones((2, 6), dtype=bool)
    ours_mask, theirs_mask = ours.compute_mask(None, mask), theirs.compute_mask(None, mask)
    if isinstance(theirs_mask, list):
        assert [m is None for m in ours_mask] == [m is None for m in theirs_mask]
    else:
        assert (ours_mask is None) == (theirs_mask is None)
