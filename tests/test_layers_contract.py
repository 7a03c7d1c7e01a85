"""Shape and contract tests: weights, aliases, dtypes, dropout, config and display."""

import numpy as np
import pytest

import unrolled
from unrolled import layers


def test_build_is_lazy_and_explicit_build_works():
    layer = layers.SimpleRNN(4)
    assert not layer.built and layer.weights == []
    layer.build((None, 7, 3))
    assert layer.built
    assert [w.shape for w in layer.weights] == [(3, 4), (4, 4), (4,)]
    assert layer(np.ones((2, 7, 3))).shape == (2, 4)


def test_aliases_are_the_weights_not_copies():
    layer = layers.SimpleRNN(3)
    layer(np.ones((1, 2, 5)))
    cell = layer.cell
    assert layer.U is cell.kernel and layer.W is cell.recurrent_kernel and layer.b is cell.bias
    assert cell.U is cell.kernel
    layer.U[0, 0] = 42.0
    assert layer.get_weights()[0][0, 0] == 42.0
    assert "row vectors" in type(cell).U.__doc__ and "transpose" in type(cell).U.__doc__


def test_set_weights_writes_in_place_and_get_weights_copies():
    layer = layers.SimpleRNN(2)
    layer(np.ones((1, 2, 3)))
    kernel = layer.U
    new = [np.full(w.shape, k, dtype="float32") for k, w in enumerate(layer.weights, 1)]
    layer.set_weights(new)
    assert layer.U is kernel and (kernel == 1).all()
    copy = layer.get_weights()[0]
    copy[...] = 9
    assert (layer.U == 1).all()


def test_rebinding_a_weight_attribute_updates_the_weight():
    cell = layers.SimpleRNNCell(2)
    cell.build((None, 3))
    cell.kernel = np.ones((3, 2))
    assert (cell.get_weights()[0] == 1).all()
    with pytest.raises(ValueError, match=r"Cannot assign to weight .*kernel.*\(3, 2\).*\(2, 2\)"):
        cell.kernel = np.ones((2, 2))


def test_weight_handles():
    layer = layers.SimpleRNN(2, name="enc")
    layer(np.ones((1, 2, 3)))
    kernel = layer.weights[0]
    assert kernel.name == "kernel" and kernel.path == "enc/simple_rnn_cell/kernel"
    assert kernel.shape == (3, 2) and kernel.dtype == np.float32 and kernel.trainable
    kernel.assign(np.zeros((3, 2)))
    assert not layer.U.any()
    assert np.asarray(kernel) is layer.U
    assert "enc/simple_rnn_cell/kernel" in repr(kernel)
    assert layer.count_params() == 3 * 2 + 2 * 2 + 2
    assert len(layer.trainable_weights) == 3 and layer.non_trainable_weights == []


def test_trainable_false():
    layer = layers.SimpleRNN(2, trainable=False)
    layer(np.ones((1, 2, 3)))
    assert layer.trainable_weights == [] and len(layer.non_trainable_weights) == 3


def test_unique_names():
    a, b = layers.SimpleRNN(2), layers.SimpleRNN(2)
    assert a.name != b.name and a.name.startswith("simple_rnn") and b.name.startswith("simple_rnn")
    assert a.cell.name == "simple_rnn_cell"


def test_float64_when_asked():
    x = np.random.default_rng(0).normal(size=(2, 4, 3))
    layer32, layer64 = twins(x, 5, dtype="float64")
    out64 = layer64(x)
    assert out64.dtype == np.float64 and all(w.dtype == np.float64 for w in layer64.weights)
    out32 = layer32(x)
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, out64, atol=1e-6)


@pytest.mark.parametrize("data", [np.arange(24).reshape(2, 3, 4),
                                  np.ones((2, 3, 4), dtype=bool),
                                  [[[1, 2], [3, 4]]]])
def test_integer_boolean_and_list_input_cast_to_float(data):
    layer = layers.SimpleRNN(3)
    out = layer(data)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, layer(np.asarray(data, dtype="float32")), atol=0)


def test_outputs_are_numpy_and_return_state_is_a_tuple():
    result = layers.SimpleRNN(3, return_state=True)(np.ones((2, 4, 1)))
    assert isinstance(result, tuple) and len(result) == 2
    assert all(type(r) is np.ndarray for r in result)


def twins(x, units, **second_kwargs):
    """Two SimpleRNNs with the same weights, the second with extra options."""
    first = layers.SimpleRNN(units, return_sequences=True)
    second = layers.SimpleRNN(units, return_sequences=True, **second_kwargs)
    first(x)
    second(x)
    second.set_weights(first.get_weights())
    return first, second


def test_go_backwards_output_is_in_processing_order():
    x = np.random.default_rng(1).normal(size=(2, 5, 3))
    fwd, bwd = twins(x, 4, go_backwards=True)
    np.testing.assert_allclose(bwd(x), fwd(x[:, ::-1]), atol=1e-6)


def test_masked_steps_hold_the_state():
    x = np.random.default_rng(2).normal(size=(1, 4, 3))
    layer = layers.SimpleRNN(4, return_sequences=True, return_state=True)
    mask = np.array([[True, True, False, False]])
    seq, h = layer(x, mask=mask)
    short_seq, short_h = layer(x[:, :2])
    np.testing.assert_allclose(h, short_h, atol=1e-6)
    np.testing.assert_allclose(seq[:, 2], short_h, atol=1e-6)
    np.testing.assert_allclose(seq[:, 3], short_h, atol=1e-6)


def test_all_masked_sample_keeps_initial_state():
    h0 = np.full((2, 3), 0.5, dtype="float32")
    seq, h = layers.SimpleRNN(3, return_sequences=True, return_state=True)(
        np.ones((2, 3, 2)), mask=np.array([[0, 0, 0], [1, 1, 1]]), initial_state=h0)
    np.testing.assert_array_equal(h[0], h0[0])
    np.testing.assert_array_equal(seq[0], np.repeat(h0[:1], 3, axis=0))


def test_single_cell_list_works():
    """Keras breaks on RNN([cell]); unrolled treats it as a stack of one."""
    x = np.ones((2, 3, 4))
    out, state = layers.RNN([layers.SimpleRNNCell(3)], return_state=True)(x)
    assert out.shape == (2, 3) and isinstance(state, list) and state[0].shape == (2, 3)


def _identity_cell(units, **kwargs):
    cell = layers.SimpleRNNCell(units, activation=None, use_bias=False,
                                kernel_initializer="identity", recurrent_initializer="zeros",
                                **kwargs)
    return cell


def test_dropout_only_in_training_and_fixed_across_time():
    units = 64
    layer = layers.RNN(_identity_cell(units, dropout=0.5, seed=3), return_sequences=True)
    x = np.ones((3, 6, units), dtype="float32")
    np.testing.assert_array_equal(layer(x), x)           # inference: no dropout
    y = layer(x, training=True)                          # output_t = x_t * mask
    assert set(np.unique(y)) <= {0.0, 2.0}
    assert 0.25 < (y == 0).mean() < 0.75
    np.testing.assert_array_equal(y, np.repeat(y[:, :1], 6, axis=1))   # one mask for all t
    assert not np.array_equal(layer(x, training=True), y)              # a new mask per call


def test_recurrent_dropout_only_in_training_and_fixed_across_time():
    units = 64
    cell = layers.SimpleRNNCell(units, activation=None, use_bias=False,
                                kernel_initializer="zeros", recurrent_initializer="identity",
                                recurrent_dropout=0.5, seed=5)
    layer = layers.RNN(cell, return_sequences=True)
    x = np.zeros((2, 4, 3), dtype="float32")
    h0 = np.ones((2, units), dtype="float32")
    np.testing.assert_array_equal(layer(x, initial_state=h0), np.ones((2, 4, units)))
    y = layer(x, initial_state=h0, training=True)       # h_t = h_{t-1} * mask  -> mask ** t
    kept = y[:, 0] != 0
    for t in range(4):
        np.testing.assert_array_equal(y[:, t] != 0, kept)
        np.testing.assert_allclose(y[:, t][kept], 2.0 ** (t + 1))


def test_dropout_seeded_is_reproducible():
    x = np.ones((2, 3, 8), dtype="float32")
    a = layers.RNN(_identity_cell(8, dropout=0.3, seed=11))(x, training=True)
    b = layers.RNN(_identity_cell(8, dropout=0.3, seed=11))(x, training=True)
    np.testing.assert_array_equal(a, b)


def test_dropout_rate_one_zeroes_inputs_and_rates_are_clamped():
    cell = _identity_cell(4, dropout=3.0)
    assert cell.dropout == 1.0
    y = layers.RNN(cell)(np.ones((1, 2, 4)), training=True)
    assert not y.any()
    assert layers.SimpleRNN(2, recurrent_dropout=-1).cell.recurrent_dropout == 0.0


def test_cell_direct_call_with_training_uses_fresh_masks():
    cell = _identity_cell(32, dropout=0.5, seed=1)
    x = np.ones((1, 32), dtype="float32")
    h = [np.zeros((1, 32), dtype="float32")]
    a, _ = cell(x, h, training=True)
    b, _ = cell(x, h, training=True)
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(cell(x, h)[0], x)


def test_unroll_accepted_and_equal_without_mask():
    x = np.random.default_rng(3).normal(size=(2, 4, 3))
    a, b = twins(x, 3, unroll=True)
    np.testing.assert_array_equal(a(x), b(x))


def test_get_config_matches_keras_keys(keras):
    ours = layers.SimpleRNN(3, return_sequences=True).get_config()
    theirs = keras.layers.SimpleRNN(3, return_sequences=True).get_config()
    assert set(ours) == set(theirs)
    assert "cell" not in ours and "seed" not in ours
    for key in ("units", "activation", "use_bias", "return_sequences", "go_backwards", "stateful",
                "unroll", "dropout", "recurrent_dropout", "zero_output_for_mask"):
        assert ours[key] == theirs[key], key
    for key in ("kernel_initializer", "recurrent_initializer", "bias_initializer"):
        assert ours[key] == theirs[key], key
    cell_config = layers.SimpleRNNCell(3, seed=7).get_config()
    assert cell_config["seed"] == 7 and cell_config["units"] == 3


def test_repr_is_informative():
    cell = layers.SimpleRNNCell(4)
    assert repr(cell) == "SimpleRNNCell(units=4, activation=tanh, not built)"
    cell.build((None, 8))
    assert repr(cell) == ("SimpleRNNCell(units=4, activation=tanh, kernel (8, 4), "
                          "recurrent_kernel (4, 4), bias (4,))")
    layer = layers.SimpleRNN(2, return_sequences=True)
    layer(np.ones((1, 3, 5)))
    assert repr(layer) == ("SimpleRNN(units=2, activation=tanh, return_sequences=True, "
                           "kernel (5, 2), recurrent_kernel (2, 2), bias (2,))")
    assert repr(layers.RNN([layers.SimpleRNNCell(2), layers.SimpleRNNCell(3)], go_backwards=True)) \
        == ("RNN(StackedRNNCells([SimpleRNNCell(units=2, activation=tanh, not built), "
            "SimpleRNNCell(units=3, activation=tanh, not built)]), go_backwards=True)")


def test_layer_reads_cell_configuration():
    layer = layers.SimpleRNN(3, dropout=0.25)
    assert layer.units == 3 and layer.dropout == 0.25
    assert unrolled.activations.serialize(layer.activation) == "tanh"
    with pytest.raises(AttributeError):
        layer.no_such_thing


def test_public_surface():
    assert set(layers.__all__) >= {"SimpleRNNCell", "SimpleRNN", "StackedRNNCells", "RNN"}
    for name in unrolled.__all__:
        assert hasattr(unrolled, name)


def test_stateful_built_without_batch_size_takes_it_from_the_first_call():
    layer = layers.SimpleRNN(3, stateful=True)
    layer.build((None, 4, 2))
    first = layer(np.ones((5, 4, 2)))
    assert layer.states[0].shape == (5, 3)
    assert not np.allclose(layer(np.ones((5, 4, 2))), first)
    with pytest.raises(ValueError, match=r"batch of 5.*batch of 2"):
        layer(np.ones((2, 4, 2)))


def test_stateful_first_call_with_initial_state_fixes_the_batch():
    layer = layers.SimpleRNN(3, stateful=True)
    layer(np.ones((2, 4, 2)), initial_state=np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"batch of 2.*batch of 4"):
        layer(np.ones((4, 4, 2)))


def test_user_cell_feature_size_is_checked():
    class Cell(layers.Layer):
        state_size = 2

        def build(self, input_shape):
            self.kernel = self.add_weight(shape=(input_shape[-1], 2), name="kernel")

        def call(self, inputs, states):
            h = inputs @ self.kernel + states[0]
            return h, [h]

    rnn = layers.RNN(Cell())
    assert rnn(np.ones((1, 3, 4))).shape == (1, 2)
    with pytest.raises(ValueError, match=r"built for 4 input features, but `sequences` has 3"):
        rnn(np.ones((1, 3, 3)))


def test_config_round_trip_for_simple_rnn_and_cell():
    x = np.random.default_rng(4).normal(size=(2, 3, 4))
    layer = layers.SimpleRNN(3, activation="relu", go_backwards=True, return_sequences=True,
                             kernel_initializer=unrolled.initializers.GlorotUniform(seed=1),
                             recurrent_initializer=unrolled.initializers.Orthogonal(seed=2),
                             name="enc")
    clone = layers.SimpleRNN.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    np.testing.assert_array_equal(clone(x), layer(x))   # seeded initializers: same weights
    cell = layers.SimpleRNNCell(2, use_bias=False, seed=3)
    assert layers.SimpleRNNCell.from_config(cell.get_config()).get_config() == cell.get_config()
