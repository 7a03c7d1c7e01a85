"""Every user error gets a message that names the argument, what was expected, what came, and a fix.

No bare IndexError or NumPy broadcasting error may reach the user.
"""

import numpy as np
import pytest

from unrolled import layers

X = np.ones((2, 3, 4), dtype="float32")


@pytest.mark.parametrize("units", [0, -3])
@pytest.mark.parametrize("cls", [layers.SimpleRNNCell, layers.SimpleRNN])
def test_units_not_positive(cls, units):
    with pytest.raises(ValueError, match=rf"^{cls.__name__}: `units` must be a positive integer, got -?\d"):
        cls(units)


@pytest.mark.parametrize("units", [2.5, "4", None, True])
def test_units_not_integer(units):
    with pytest.raises(TypeError, match=r"`units` must be a positive integer.*units=4"):
        layers.SimpleRNN(units)


def test_integral_float_units_accepted():
    assert layers.SimpleRNN(4.0).cell.units == 4


def test_unknown_activation_suggests_closest():
    with pytest.raises(ValueError, match=r'tanhh.*Did you mean "tanh"'):
        layers.SimpleRNN(3, activation="tanhh")


def test_unknown_initializer_suggests_closest():
    with pytest.raises(ValueError, match=r'glorot_unifrom.*`kernel_initializer`.*Did you mean "glorot_uniform"'):
        layers.SimpleRNN(3, kernel_initializer="glorot_unifrom")


def test_unknown_keyword():
    with pytest.raises(TypeError, match=r"unexpected keyword.*'retrun_sequences'.*return_sequences"):
        layers.SimpleRNN(3, retrun_sequences=True)


def test_time_major_rejected_with_reason():
    with pytest.raises(TypeError, match=r"time_major.*batch-major"):
        layers.SimpleRNN(3, time_major=False)


@pytest.mark.parametrize("shape,hint", [
    ((2, 4), "return_sequences=True"),
    ((4,), "reshape"),
    ((2, 3, 4, 5), "Merge the extra axes"),
])
def test_input_not_3d(shape, hint):
    with pytest.raises(ValueError, match=r"expects input of shape \(batch, timesteps, features\)"
                                         rf".*{len(shape)}-D.*(?i:{hint})"):
        layers.SimpleRNN(3)(np.ones(shape))


def test_stacked_layers_without_return_sequences():
    first = layers.SimpleRNN(5)
    second = layers.SimpleRNN(3)
    with pytest.raises(ValueError, match=r"got 2-D input of shape \(2, 5\).*return_sequences=True"):
        second(first(X))


def test_feature_size_changes():
    layer = layers.SimpleRNN(3)
    layer(X)
    with pytest.raises(ValueError, match=r"built for 4 input features, but `sequences` has 6"):
        layer(np.ones((2, 3, 6)))


def test_feature_size_changes_for_cell():
    cell = layers.SimpleRNNCell(3)
    cell(np.ones((2, 4)), [np.zeros((2, 3))])
    with pytest.raises(ValueError, match=r"built for 4 input features, but `inputs` has 5"):
        cell(np.ones((2, 5)), [np.zeros((2, 3))])


def test_zero_timesteps():
    with pytest.raises(ValueError, match=r"0 timesteps.*at least one step"):
        layers.SimpleRNN(3)(np.ones((2, 0, 4)))


@pytest.mark.parametrize("bad", [np.array([["a", "b"]]), [[["x"]]], {"a": 1}, np.array([object()])])
def test_non_numeric_input(bad):
    with pytest.raises(TypeError, match=r"`sequences` must hold numbers|must be a numeric array"):
        layers.SimpleRNN(3)(bad)


def test_ragged_input():
    with pytest.raises(TypeError, match=r"`sequences` must be a numeric array.*equal length"):
        layers.SimpleRNN(3)([[[1.0, 2.0]], [[1.0]]])


def test_missing_input():
    with pytest.raises(TypeError, match=r"missing the input sequence"):
        layers.SimpleRNN(3)()


def test_initial_state_wrong_shape():
    with pytest.raises(ValueError, match=r"`initial_state` has shape \(2, 4\), expected \(2, 3\)"):
        layers.SimpleRNN(3)(X, initial_state=np.zeros((2, 4)))


def test_initial_state_wrong_count():
    with pytest.raises(ValueError, match=r"`initial_state` has 2 entries, expected 1"):
        layers.SimpleRNN(3)(X, initial_state=[np.zeros((2, 3)), np.zeros((2, 3))])


def test_stacked_initial_state_flat_list():
    rnn = layers.RNN([layers.SimpleRNNCell(3), layers.SimpleRNNCell(5), layers.SimpleRNNCell(2)])
    flat = [np.zeros((2, 3)), np.zeros((2, 5))]
    with pytest.raises(ValueError, match=r"2 entries but the stack has 3 cells.*"
                                         r"Expected \[\[h \(2, 3\)\], \[h \(2, 5\)\], \[h \(2, 2\)\]\]"):
        rnn(X, initial_state=flat)


def test_stacked_initial_state_not_a_list():
    rnn = layers.RNN([layers.SimpleRNNCell(3), layers.SimpleRNNCell(5)])
    with pytest.raises(ValueError, match=r"one entry per cell.*an array of shape \(2, 3\)"):
        rnn(X, initial_state=np.zeros((2, 3)))


def test_cell_states_wrong_shape():
    cell = layers.SimpleRNNCell(3)
    with pytest.raises(ValueError, match=r"`states` has shape \(2, 7\), expected \(2, 3\)"):
        cell(np.ones((2, 4)), np.zeros((2, 7)))


def test_cell_missing_states():
    with pytest.raises(TypeError, match=r"missing `states`.*get_initial_state\(2\)"):
        layers.SimpleRNNCell(3)(np.ones((2, 4)))


def test_cell_given_a_sequence():
    with pytest.raises(ValueError, match=r"one timestep.*2-D.*\(2, 3, 4\).*RNN\(SimpleRNNCell"):
        layers.SimpleRNNCell(3)(X, [np.zeros((2, 3))])


def test_cell_input_twice():
    with pytest.raises(TypeError, match=r"as `inputs` or as `sequence`, not both"):
        layers.SimpleRNNCell(3)(inputs=np.ones((2, 4)), sequence=np.ones((2, 4)),
                                states=[np.zeros((2, 3))])


@pytest.mark.parametrize("mask,match", [
    (np.ones((2, 4), bool), r"`mask` must have shape \(batch, timesteps\) = \(2, 3\).*\(2, 4\)"),
    (np.ones((2, 3, 1), bool), r"`mask` must have shape .*\(2, 3, 1\)"),
    (np.array([["a"] * 3] * 2), r"`mask` must hold booleans"),
])
def test_mask_wrong(mask, match):
    with pytest.raises((ValueError, TypeError), match=match):
        layers.SimpleRNN(3)(X, mask=mask)


def test_set_weights_wrong_count():
    layer = layers.SimpleRNN(3)
    layer(X)
    with pytest.raises(ValueError, match=r"expected 3 arrays \(kernel \(4, 3\), recurrent_kernel "
                                         r"\(3, 3\), bias \(3,\)\), got 2"):
        layer.set_weights(layer.get_weights()[:2])


def test_set_weights_wrong_shape_names_the_weight():
    layer = layers.SimpleRNN(3)
    layer(X)
    weights = layer.get_weights()
    weights[1] = np.zeros((4, 3))
    with pytest.raises(ValueError, match=r"weight '.*simple_rnn_cell/recurrent_kernel' has shape "
                                         r"\(3, 3\), but the array given for it has shape \(4, 3\)"):
        layer.set_weights(weights)
    np.testing.assert_array_equal(layer.get_weights()[0], weights[0])  # nothing half-written


def test_set_weights_before_build():
    with pytest.raises(ValueError, match=r"before the layer has weights.*build\(input_shape\)"):
        layers.SimpleRNN(3).set_weights([])


def test_aliases_before_build_and_read_only():
    layer = layers.SimpleRNN(3)
    with pytest.raises(AttributeError, match=r"no weights yet.*`U`"):
        layer.U
    layer(X)
    with pytest.raises(AttributeError, match=r"`W` is a read-only alias of `recurrent_kernel`"):
        layer.W = np.zeros((3, 3))


def test_stateful_batch_change():
    layer = layers.SimpleRNN(3, stateful=True)
    layer(X)
    with pytest.raises(ValueError, match=r"stateful.*batch of 2.*batch of 5"):
        layer(np.ones((5, 3, 4)))


def test_rnn_needs_a_cell():
    with pytest.raises(TypeError, match=r"`cell` must be a recurrent cell.*got object without `call`"):
        layers.RNN(object())
    with pytest.raises(TypeError, match=r"must be a cell \(one timestep\).*Call it directly instead of wrapping"):
        layers.RNN(layers.SimpleRNN(3))


def test_stack_needs_cells():
    with pytest.raises(ValueError, match=r"`cells` is empty"):
        layers.StackedRNNCells([])
    with pytest.raises(TypeError, match=r"cells\[1\].*has no `call`"):
        layers.StackedRNNCells([layers.SimpleRNNCell(2), 3])


def test_dtype_must_be_float():
    with pytest.raises(ValueError, match=r"`dtype` must be a floating-point type.*'int32'"):
        layers.SimpleRNN(3, dtype="int32")


def test_dropout_not_a_number():
    with pytest.raises(TypeError, match=r"`dropout` must be a number between 0 and 1"):
        layers.SimpleRNN(3, dropout="half")
