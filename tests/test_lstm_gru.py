"""LSTMCell, LSTM, GRUCell and GRU against real Keras 3 (JAX backend): parity, errors, contract.

Every parity test gives Keras unrolled's weights (random, biases included) and requires agreement
to 1e-5 in float32. Cost matters here: Keras's JAX loop (`lax.scan`) compiles on every call, so
each scan call is made to count (one call with return_sequences and return_state gives the
reference for all four output forms), sizes repeat so JAX's caches hit, the Keras twins start
from zeros initializers (their weights are overwritten anyway), and tests that are not about
masks run both libraries with `unroll=True`, which computes the same numbers without a mask.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import assert_close
from test_parity_keras import MASK_KINDS, compare, make_mask
from unrolled import activations, initializers, layers

B, T, F, U = 3, 5, 4, 5
KINDS = [("LSTM", {}), ("GRU", {}), ("GRU", {"reset_after": False})]
KIND_IDS = ["lstm", "gru", "gru_reset_before"]
CHEAP = dict(kernel_initializer="zeros", recurrent_initializer="zeros")


def twins(keras, name, units=U, *, x, ours_kwargs=None, **kwargs):
    """The unrolled layer (random weights, random biases) and its Keras twin, sharing weights."""
    ours = getattr(layers, name)(units, bias_initializer="random_normal",
                                 **{**kwargs, **(ours_kwargs or {})})
    theirs = getattr(keras.layers, name)(units, **CHEAP, **kwargs)
    ours.build(x.shape)
    theirs.build(x.shape)
    theirs.set_weights(ours.get_weights())
    return ours, theirs


def data(rng, *shape):
    return rng.normal(size=shape).astype("float32")


def initial_state(rng, name, batch=B, units=U):
    return [data(rng, batch, units) for _ in range(2 if name == "LSTM" else 1)]


# ---- the layer: every output form, masks, go_backwards, initial states --------------------------

FLAG_CASES = [(kind, mask_kind, go_backwards)
              for kind in range(len(KINDS)) for mask_kind in MASK_KINDS
              for go_backwards in (False, True)]


@pytest.mark.parametrize("kind,mask_kind,go_backwards", FLAG_CASES,
                         ids=[f"{KIND_IDS[k]}-{m}-{'back' if g else 'fwd'}"
                              for k, m, g in FLAG_CASES])
def test_layer_parity(keras, rng, kind, mask_kind, go_backwards):
    name, kwargs = KINDS[kind]
    x = data(rng, B, T, F)
    mask = make_mask(rng, mask_kind, B, T)
    with_h0 = bool(rng.integers(2)) or mask_kind in ("pre", "random")
    state = initial_state(rng, name) if with_h0 else None
    _, theirs = twins(keras, name, x=x, return_sequences=True, return_state=True,
                      go_backwards=go_backwards, **kwargs)
    reference = [np.asarray(r) for r in theirs(x, mask=mask, initial_state=state)]
    sequence, final = reference[0], reference[1:]
    assert len(final) == (2 if name == "LSTM" else 1)
    for return_sequences, return_state in itertools.product([False, True], repeat=2):
        ours = getattr(layers, name)(U, return_sequences=return_sequences,
                                     return_state=return_state, go_backwards=go_backwards,
                                     **kwargs)
        ours.build(x.shape)
        ours.set_weights(theirs.get_weights())
        # Keras's last output is the last entry of its output sequence, masked steps included.
        expected = sequence if return_sequences else sequence[:, -1]
        if return_state:
            expected = (expected, *final)
        compare(ours(x, mask=mask, initial_state=state), expected,
                f"return_sequences={return_sequences}, return_state={return_state}")


@pytest.mark.parametrize("kind", range(len(KINDS)), ids=KIND_IDS)
def test_last_output_only(keras, rng, kind):
    """The plain form (neither return_sequences nor return_state), straight from Keras."""
    name, kwargs = KINDS[kind]
    x = data(rng, B, T, F)
    ours, theirs = twins(keras, name, x=x, **kwargs)
    mask = make_mask(rng, "post", B, T)
    compare(ours(x, mask=mask), theirs(x, mask=mask))


VARIANTS = [
    dict(activation="relu", recurrent_activation="hard_sigmoid"),
    dict(activation=None, recurrent_activation="tanh", use_bias=False),
    dict(activation="softsign", recurrent_activation="sigmoid", use_bias=True),
]


@pytest.mark.parametrize("variant", VARIANTS, ids=["relu-hard_sigmoid", "linear-nobias", "softsign"])
@pytest.mark.parametrize("kind", range(len(KINDS)), ids=KIND_IDS)
def test_activations_and_bias(keras, rng, kind, variant):
    name, kwargs = KINDS[kind]
    x = data(rng, B, T, F)
    ours, theirs = twins(keras, name, x=x, return_sequences=True, return_state=True, unroll=True,
                         **kwargs, **variant)
    assert len(ours.get_weights()) == (3 if variant.get("use_bias", True) else 2)
    compare(ours(x), theirs(x))


def test_lstm_without_unit_forget_bias(keras, rng):
    x = data(rng, B, T, F)
    ours, theirs = twins(keras, "LSTM", x=x, unit_forget_bias=False, unroll=True,
                         return_sequences=True)
    fresh = layers.LSTM(U, unit_forget_bias=False)
    fresh.build(x.shape)
    assert not fresh.b.any(), "without unit_forget_bias the zeros initializer gives zeros"
    compare(ours(x), theirs(x))


@pytest.mark.parametrize("kind", range(len(KINDS)), ids=KIND_IDS)
def test_stateful_over_calls(keras, rng, kind):
    name, kwargs = KINDS[kind]
    xs = [data(rng, B, T, F) for _ in range(3)]
    ours, theirs = twins(keras, name, x=xs[0], stateful=True, return_sequences=True, unroll=True,
                         **kwargs)
    for k, x in enumerate(xs[:2]):
        compare(ours(x), theirs(x), f"call {k}")
    assert len(ours.states) == (2 if name == "LSTM" else 1)
    ours.reset_state()
    theirs.reset_state()
    compare(ours(xs[2]), theirs(xs[2]), "after reset_state")


@pytest.mark.parametrize("mask_kind", ["pre", "random"])
@pytest.mark.parametrize("kind", range(len(KINDS)), ids=KIND_IDS)
def test_unroll_with_masks(keras, rng, kind, mask_kind):
    name, kwargs = KINDS[kind]
    x = data(rng, B, T, F)
    ours, theirs = twins(keras, name, x=x, unroll=True, return_sequences=True,
                         return_state=True, **kwargs)
    mask = make_mask(rng, mask_kind, B, T)
    state = initial_state(rng, name)
    compare(ours(x, mask=mask, initial_state=state), theirs(x, mask=mask, initial_state=state))


# ---- cells: direct calls, inside RNN, in stacks ----------------------------------------------


CELL_CASES = [(cell, kwargs, form)
              for cell, kwargs in [("LSTMCell", {}), ("GRUCell", {}),
                                   ("GRUCell", {"reset_after": False})]
              for form in ["list", "tuple", "bare"]
              if not (cell == "LSTMCell" and form == "bare")]  # two states: see the error tests


@pytest.mark.parametrize("cell_name,kwargs,states_form", CELL_CASES)
def test_cell_step(keras, rng, cell_name, kwargs, states_form):
    ours = getattr(layers, cell_name)(U, bias_initializer="random_normal", **kwargs)
    theirs = getattr(keras.layers, cell_name)(U, **CHEAP, **kwargs)
    ours.build((B, F))
    theirs.build((B, F))
    theirs.set_weights(ours.get_weights())
    x_t = data(rng, B, F)
    arrays = [data(rng, B, U) for _ in range(2 if cell_name == "LSTMCell" else 1)]
    states = {"list": arrays, "tuple": tuple(arrays), "bare": arrays[0]}[states_form]
    out, new = ours(x_t, states)
    k_out, k_new = theirs(x_t, states)
    assert_close(out, np.asarray(k_out))
    if states_form == "bare":
        assert isinstance(new, np.ndarray)
        assert_close(new, np.asarray(k_new), what="new_states")
    else:
        assert isinstance(new, list) and len(new) == len(arrays)
        compare(new, [np.asarray(s) for s in k_new], "new_states")


@pytest.mark.parametrize("go_backwards", [False, True])
def test_cells_in_rnn(keras, rng, go_backwards):
    x = data(rng, B, T, F)
    mask = make_mask(rng, "random", B, T)
    for cell_name in ("LSTMCell", "GRUCell"):
        flags = dict(return_sequences=True, return_state=True, go_backwards=go_backwards)
        ours = layers.RNN(getattr(layers, cell_name)(U, bias_initializer="random_normal"),
                          **flags)
        theirs = keras.layers.RNN(getattr(keras.layers, cell_name)(U, **CHEAP), **flags)
        ours.build(x.shape)
        theirs.build(x.shape)
        theirs.set_weights(ours.get_weights())
        compare(ours(x, mask=mask), theirs(x, mask=mask), cell_name)


def _mixed_stack(module, bias=False):
    extra = {"bias_initializer": "random_normal"} if bias else CHEAP
    return [module.SimpleRNNCell(3, **extra), module.LSTMCell(4, **extra),
            module.GRUCell(2, **extra), module.GRUCell(3, reset_after=False, **extra)]


@pytest.mark.parametrize("mask_kind,go_backwards,with_state",
                         [("post", False, True), ("random", True, False)])
def test_mixed_stack_in_rnn(keras, rng, mask_kind, go_backwards, with_state):
    x = data(rng, B, T, F)
    flags = dict(return_sequences=True, return_state=True, go_backwards=go_backwards)
    ours = layers.RNN(_mixed_stack(layers, bias=True), **flags)
    theirs = keras.layers.RNN(_mixed_stack(keras.layers), **flags)
    ours.build(x.shape)
    theirs.build(x.shape)
    theirs.set_weights(ours.get_weights())
    mask = make_mask(rng, mask_kind, B, T)
    state = ([[data(rng, B, 3)], [data(rng, B, 4), data(rng, B, 4)], [data(rng, B, 2)],
              [data(rng, B, 3)]] if with_state else None)
    result = ours(x, mask=mask, initial_state=state)
    assert [len(s) for s in result[1:]] == [1, 2, 1, 1]
    compare(result, theirs(x, mask=mask, initial_state=state))


def test_mixed_stack_single_step(keras, rng):
    ours = layers.StackedRNNCells(_mixed_stack(layers, bias=True))
    theirs = keras.layers.StackedRNNCells(_mixed_stack(keras.layers))
    x_t = data(rng, B, F)
    ours.build((B, F))
    theirs.build((B, F))
    theirs.set_weights(ours.get_weights())
    assert ours.state_size == theirs.state_size == [3, [4, 4], 2, 3]
    states = ours.get_initial_state(B)
    states[1] = [data(rng, B, 4), data(rng, B, 4)]
    out, new = ours(x_t, states)
    k_out, k_new = theirs(x_t, states)
    assert_close(out, np.asarray(k_out))
    compare(new, [[np.asarray(s) for s in cell] for cell in k_new], "new_states")
    assert layers.RNN(ours).describe_states(2) == (
        "[[h (2, 3)], [h (2, 4), c (2, 4)], [h (2, 2)], [h (2, 3)]]")


# ---- weights: order, names, paths, initial values --------------------------------------------


def test_weights_order_names_and_paths(keras):
    x = np.zeros((B, T, F), dtype="float32")
    cases = [(layers.LSTM(U), keras.layers.LSTM(U, **CHEAP)),
             (layers.GRU(U), keras.layers.GRU(U, **CHEAP)),
             (layers.GRU(U, reset_after=False), keras.layers.GRU(U, reset_after=False, **CHEAP)),
             (layers.LSTM(U, use_bias=False), keras.layers.LSTM(U, use_bias=False, **CHEAP)),
             (layers.RNN(layers.LSTMCell(U)), keras.layers.RNN(keras.layers.LSTMCell(U, **CHEAP))),
             (layers.RNN(_mixed_stack(layers)), keras.layers.RNN(_mixed_stack(keras.layers)))]
    for ours, theirs in cases:
        ours.build(x.shape)
        theirs.build(x.shape)
        assert [w.name for w in ours.weights] == [w.name for w in theirs.weights]
        assert [w.shape for w in ours.weights] == [tuple(w.shape) for w in theirs.weights]
        if not isinstance(ours.cell, layers.StackedRNNCells):
            # Keras numbers its auto-named layers per session; compare below the layer's name.
            assert [w.path.split("/", 1)[1] for w in ours.weights] == [
                w.path.split("/", 1)[1] for w in theirs.weights]
    lstm = layers.LSTM(U, name="enc")
    lstm.build(x.shape)
    assert [w.path for w in lstm.weights] == [
        "enc/lstm_cell/kernel", "enc/lstm_cell/recurrent_kernel", "enc/lstm_cell/bias"]


@pytest.mark.parametrize("kind", range(len(KINDS)), ids=KIND_IDS)
def test_default_initial_weights(keras, kind):
    """Keras's defaults: fused fans, orthonormal rows, and the deterministic bias."""
    name, kwargs = KINDS[kind]
    ours = getattr(layers, name)(U, **kwargs)
    theirs = getattr(keras.layers, name)(U, **CHEAP, **kwargs)  # only its bias is compared
    ours.build((B, T, F))
    theirs.build((B, T, F))
    blocks = 4 if name == "LSTM" else 3
    kernel, recurrent, bias = ours.get_weights()
    limit = np.sqrt(6.0 / (F + blocks * U))  # glorot_uniform on the whole (F, k*U) kernel
    assert np.abs(kernel).max() <= limit and np.abs(kernel).max() > 0.5 * limit
    np.testing.assert_allclose(recurrent @ recurrent.T, np.eye(U), atol=1e-5)
    np.testing.assert_array_equal(bias, np.asarray(theirs.get_weights()[2]))
    if name == "LSTM":
        np.testing.assert_array_equal(bias, np.r_[np.zeros(U), np.ones(U), np.zeros(2 * U)])


KERAS_NUMPY_SCRIPT = r"""
import json, sys
import numpy as np
import keras
assert keras.backend.backend() == "numpy", keras.backend.backend()
arrays = {}
for key, name, kwargs, shape in json.loads(sys.argv[1]):
    kwargs = {k: (getattr(keras.initializers, v[0])(**v[1]) if isinstance(v, list) else v)
              for k, v in kwargs.items()}
    layer = getattr(keras.layers, name)(5, **kwargs)
    layer.build(tuple(shape))
    for n, w in enumerate(layer.get_weights()):
        arrays[f"{key}-{n}"] = np.asarray(w)
np.savez(sys.argv[2], **arrays)
"""

SEEDED = [
    ("lstm", "LSTM", {"kernel_initializer": ["GlorotUniform", {"seed": 1}],
                      "recurrent_initializer": ["Orthogonal", {"seed": 2}],
                      "bias_initializer": ["RandomNormal", {"seed": 3}]}),
    ("lstm-nofb", "LSTM", {"kernel_initializer": ["HeNormal", {"seed": 4}],
                           "recurrent_initializer": ["Orthogonal", {"seed": 5}],
                           "bias_initializer": ["RandomUniform", {"seed": 6}],
                           "unit_forget_bias": False}),
    ("gru", "GRU", {"kernel_initializer": ["GlorotUniform", {"seed": 7}],
                    "recurrent_initializer": ["Orthogonal", {"seed": 8}],
                    "bias_initializer": ["RandomNormal", {"seed": 9}]}),
    ("gru-before", "GRU", {"kernel_initializer": ["GlorotNormal", {"seed": 10}],
                           "recurrent_initializer": ["Orthogonal", {"seed": 11}],
                           "bias_initializer": ["RandomNormal", {"seed": 12}],
                           "reset_after": False}),
]


def test_seeded_initial_weights_bit_identical_to_keras_numpy_backend(tmp_path):
    """With int-seeded initializers the weights are Keras's, bit for bit (its NumPy backend draws
    with NumPy). This covers the forget-gate bias: Keras calls a seeded bias initializer twice
    (for the i block and for the c, o blocks), so both draws start from the same seed."""
    requests = [(key, name, kwargs, (B, T, F)) for key, name, kwargs in SEEDED]
    path = tmp_path / "weights.npz"
    result = subprocess.run(
        [sys.executable, "-c", KERAS_NUMPY_SCRIPT, json.dumps(requests), str(path)],
        env={**os.environ, "KERAS_BACKEND": "numpy"}, capture_output=True, text=True,
        timeout=600)
    if result.returncode != 0:
        pytest.fail(f"Keras on its NumPy backend failed to run:\n{result.stderr[-3000:]}",
                    pytrace=False)
    expected = np.load(path)
    for key, name, kwargs in SEEDED:
        kwargs = {k: (getattr(initializers, v[0])(**v[1]) if isinstance(v, list) else v)
                  for k, v in kwargs.items()}
        ours = getattr(layers, name)(5, **kwargs)
        ours.build((B, T, F))
        for n, w in enumerate(ours.get_weights()):
            np.testing.assert_array_equal(w, expected[f"{key}-{n}"], err_msg=f"{key} weight {n}")
    bias = expected["lstm-2"]
    np.testing.assert_array_equal(bias[5:10], np.ones(5))
    np.testing.assert_array_equal(bias[10:15], bias[:5])  # the same seed drawn twice


# ---- dropout: training-mode math with identical masks ----------------------------------------


def _masks(rng, rate, shape, count):
    def one():
        return (rng.random(shape) >= rate).astype("float32") / np.float32(1 - rate)
    return one() if count is None else [one() for _ in range(count)]


@pytest.mark.parametrize("recurrent_dropout", [0.0, 0.3], ids=["implementation2", "implementation1"])
@pytest.mark.parametrize("kind", range(len(KINDS)), ids=KIND_IDS)
def test_dropout_in_training_with_the_same_masks(keras, rng, kind, recurrent_dropout):
    """RNG streams cannot match, so both libraries get the same masks. Without recurrent dropout
    one input mask serves every gate; with it Keras switches to implementation 1, one mask per
    gate for the input and for h."""
    name, kwargs = KINDS[kind]
    x = data(rng, B, T, F)
    ours, theirs = twins(keras, name, x=x, dropout=0.4, recurrent_dropout=recurrent_dropout,
                         return_sequences=True, unroll=True, **kwargs)
    count = (4 if name == "LSTM" else 3) if recurrent_dropout else None
    assert ours.implementation == theirs.cell.implementation == (1 if count else 2)
    input_masks = _masks(rng, 0.4, (B, F), count)
    state_masks = _masks(rng, 0.3, (B, U), count) if recurrent_dropout else None
    for cell in (ours.cell, theirs.cell):
        cell._dropout_mask = input_masks
        cell._recurrent_dropout_mask = state_masks
    result = ours(x, training=True)
    compare(result, theirs(x, training=True))
    assert not np.allclose(result, ours(x)), "the masks must have changed the output"
    compare(ours(x), theirs(x), "inference ignores dropout")


def test_fresh_dropout_masks_per_gate_and_per_call():
    cell = layers.LSTMCell(U, dropout=0.5, recurrent_dropout=0.5, seed=1)
    x_t, states = np.ones((B, F), "float32"), cell.get_initial_state(B)
    assert cell.implementation == 1 and cell.dropout_mask_count == 4
    masks = cell.get_dropout_mask(x_t)
    assert len(masks) == 4 and all(m.shape == (B, F) for m in masks)
    assert not all(np.array_equal(masks[0], m) for m in masks[1:])
    assert set(np.unique(np.concatenate(masks))) <= {0.0, 2.0}
    cell.reset_dropout_mask()
    one = cell(x_t, states, training=True)[0]
    assert not np.allclose(one, cell(x_t, states, training=True)[0])
    np.testing.assert_array_equal(cell(x_t, states)[0], cell(x_t, states)[0])
    assert layers.GRUCell(U, dropout=0.5).dropout_mask_count is None  # implementation 2


@pytest.mark.parametrize("name", ["LSTM", "GRU"])
def test_dropout_rate_one_does_nothing_in_lstm_and_gru(keras, rng, name):
    """Keras's LSTM and GRU apply dropout only for 0 < rate < 1 (SimpleRNN zeros at 1.0)."""
    x = data(rng, B, T, F)
    ours, theirs = twins(keras, name, x=x, dropout=1.0, recurrent_dropout=1.0, unroll=True)
    np.testing.assert_array_equal(ours(x, training=True), ours(x))
    compare(ours(x, training=True), theirs(x, training=True))


# ---- configuration --------------------------------------------------------------------------

CONFIG_CASES = [
    ("LSTM", {}),
    ("LSTM", dict(activation="relu", recurrent_activation="hard_sigmoid", use_bias=False,
                  unit_forget_bias=False, dropout=0.25, recurrent_dropout=0.5, seed=3,
                  return_sequences=True, go_backwards=True, stateful=True, unroll=True,
                  name="enc")),
    ("GRU", {}),
    ("GRU", dict(reset_after=False, activation=None, dropout=2.0, return_state=True, seed=0,
                 kernel_initializer="he_normal", bias_initializer="ones")),
    ("LSTMCell", dict(recurrent_initializer="glorot_normal", dropout=0.1)),
    ("GRUCell", dict(reset_after=False, recurrent_activation="softsign", seed=11)),
]


def _normalise(config):
    """Keras writes dtype as a DTypePolicy dict; unrolled writes its name."""
    config = dict(config)
    dtype = config.get("dtype")
    if isinstance(dtype, dict):
        config["dtype"] = dtype["config"]["name"]
    return config


@pytest.mark.parametrize("name,kwargs", CONFIG_CASES)
def test_get_config_equals_keras(keras, name, kwargs):
    kwargs = dict(kwargs)
    layer_name = kwargs.pop("name", None) or name.lower()
    ours = getattr(layers, name)(4, name=layer_name, **kwargs)
    theirs = getattr(keras.layers, name)(4, name=layer_name, **kwargs)
    ours_config, theirs_config = ours.get_config(), _normalise(theirs.get_config())
    assert set(ours_config) == set(theirs_config)
    for key in theirs_config:
        assert ours_config[key] == theirs_config[key], key


@pytest.mark.parametrize("name,kwargs", CONFIG_CASES)
def test_from_config_round_trip(keras, name, kwargs):
    seeded = dict(kwargs, kernel_initializer=initializers.GlorotUniform(seed=1),
                  recurrent_initializer=initializers.Orthogonal(seed=2))
    ours = getattr(layers, name)(3, **seeded)
    clone = type(ours).from_config(ours.get_config())
    assert clone.get_config() == ours.get_config()
    shape = (2, 4, 3) if not name.endswith("Cell") else (2, 3)
    ours.build(shape)
    clone.build(shape)
    for a, b in zip(ours.get_weights(), clone.get_weights()):
        np.testing.assert_array_equal(a, b)
    # A config written by Keras builds the same layer here.
    plain = getattr(layers, name)(3, **kwargs)
    from_keras = type(ours).from_config(getattr(keras.layers, name)(3, **kwargs).get_config())
    assert from_keras.get_config() == {**plain.get_config(), "name": from_keras.name}


# ---- errors ---------------------------------------------------------------------------------


def test_lstm_initial_state_needs_h_and_c():
    layer = layers.LSTM(U)
    with pytest.raises(ValueError, match=r"`initial_state` has 1 entries, expected 2\. "
                                         r"Expected \[h \(3, 5\), c \(3, 5\)\]"):
        layer(np.ones((B, T, F)), initial_state=[np.zeros((B, U))])
    with pytest.raises(ValueError, match=r"must be a list of 2 arrays"):
        layers.LSTMCell(U)(np.ones((B, F)), np.zeros((B, U)))
    with pytest.raises(ValueError, match=r"entry 1 has shape \(3, 4\), expected \(3, 5\)"):
        layer(np.ones((B, T, F)), initial_state=[np.zeros((B, U)), np.zeros((B, 4))])


def test_gru_set_weights_with_the_other_bias_layout():
    after, before = layers.GRU(U), layers.GRU(U, reset_after=False)
    after.build((B, T, F))
    before.build((B, T, F))
    with pytest.raises(ValueError, match=r"'gru.*/gru_cell/bias' has shape \(2, 15\), but the "
                                         r"array given for it has shape \(15,\)"):
        after.set_weights(before.get_weights())


@pytest.mark.parametrize("cls", [layers.LSTM, layers.LSTMCell, layers.GRU, layers.GRUCell])
def test_argument_errors(cls):
    with pytest.raises(ValueError, match=rf"^{cls.__name__}: `units` must be a positive integer"):
        cls(0)
    with pytest.raises(ValueError, match=r'recurrent_activation.*Did you mean "sigmoid"'):
        cls(2, recurrent_activation="sigmoidd")
    with pytest.raises(ValueError, match=r"`implementation` must be 1 or 2, got 3"):
        cls(2, implementation=3)
    with pytest.raises(TypeError, match=r"unexpected keyword.*'reset_afterr'"):
        cls(2, reset_afterr=True)


def test_use_cudnn_is_checked():
    assert layers.LSTM(2, use_cudnn=False).use_cudnn is False
    with pytest.raises(ValueError, match=r"`use_cudnn` must be 'auto', True or False, got 'yes'"):
        layers.GRU(2, use_cudnn="yes")


# ---- contract: shapes, aliases, repr, trace hook ----------------------------------------------


def test_state_sizes_and_initial_states():
    lstm, gru = layers.LSTMCell(U), layers.GRUCell(U)
    assert lstm.state_size == [U, U] and lstm.output_size == U
    assert gru.state_size == U and gru.output_size == U
    assert [s.shape for s in lstm.get_initial_state(B)] == [(B, U), (B, U)]
    assert [s.shape for s in gru.get_initial_state(B)] == [(B, U)]
    assert layers.LSTM(U).describe_states(B) == "[h (3, 5), c (3, 5)]"
    assert layers.GRU(U).describe_states() == "h (batch, 5)"
    out, h, c = layers.LSTM(U, return_state=True)(np.ones((B, T, F)))
    assert out.shape == h.shape == c.shape == (B, U) and np.array_equal(out, h)


def test_aliases_layer_forwarding_and_repr():
    layer = layers.GRU(U, reset_after=False, recurrent_dropout=0.1, return_sequences=True)
    with pytest.raises(AttributeError, match=r"has no weights yet"):
        layer.U
    layer(np.ones((1, 2, F)))
    assert layer.U is layer.cell.kernel and layer.W is layer.cell.recurrent_kernel
    assert layer.b.shape == (3 * U,)
    assert (layer.units, layer.reset_after, layer.implementation) == (U, False, 1)
    assert activations.serialize(layer.recurrent_activation) == "sigmoid"
    with pytest.raises(AttributeError):
        layer.U = np.zeros((F, 3 * U))
    assert repr(layer) == (
        "GRU(units=5, activation=tanh, recurrent_activation=sigmoid, recurrent_dropout=0.1, "
        "reset_after=False, return_sequences=True, kernel (4, 15), recurrent_kernel (5, 15), "
        "bias (15,))")
    assert repr(layers.LSTMCell(2)) == (
        "LSTMCell(units=2, activation=tanh, recurrent_activation=sigmoid, not built)")
    assert layers.LSTM(2).unit_forget_bias is True
    assert layers.LSTMCell.gate_names == ("i", "f", "c", "o")
    assert layers.GRUCell.gate_names == ("z", "r", "h")


def test_float64():
    layer = layers.LSTM(U, dtype="float64", return_state=True)
    out, h, c = layer(np.ones((B, T, F)))
    assert out.dtype == c.dtype == np.float64 and layer.cell.kernel.dtype == np.float64


class _Recorder:
    def __init__(self):
        self.steps = []

    def record(self, cell, values):
        self.steps.append(values)


@pytest.mark.parametrize("name", ["LSTMCell", "GRUCell"])
def test_trace_hook_records_the_named_values(rng, name):
    cell = getattr(layers, name)(U, bias_initializer="random_normal")
    states = [data(rng, B, U) for _ in range(len(cell.get_initial_state(1)))]
    x_t = data(rng, B, F)
    plain_out, plain_states = cell(x_t, states)
    cell._recorder = recorder = _Recorder()
    out, new = cell(x_t, states)
    cell._recorder = None
    np.testing.assert_array_equal(out, plain_out)
    (values,) = recorder.steps
    np.testing.assert_array_equal(values["h"], out)
    np.testing.assert_array_equal(values["x_t"], x_t)
    np.testing.assert_array_equal(values["h_prev"], states[0])
    sigmoid = cell.recurrent_activation
    if name == "LSTMCell":
        assert {"x_t", "h_prev", "c_prev", "z", "i", "f", "g", "o", "c", "h"} <= set(values)
        assert values["z"].shape == (B, 4 * U)
        z_i, z_f, z_c, z_o = np.split(values["z"], 4, axis=1)
        assert_close(values["f"], sigmoid(z_f))
        assert_close(values["c"], values["f"] * states[1] + values["i"] * np.tanh(z_c))
        np.testing.assert_array_equal(values["c"], new[1])
    else:
        assert {"x_t", "h_prev", "z", "r", "hh", "h"} <= set(values)
        assert_close(values["h"], values["z"] * states[0] + (1 - values["z"]) * values["hh"])
