"""TimeDistributed and Bidirectional against real Keras 3 (JAX): same weights, same numbers, same
weight order and paths, shapes, masks and configs; and the errors for bad arguments."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from conftest import assert_close
from test_core_layers import assert_same_config, keras_config
from test_parity_keras import compare, make_mask
from unrolled import layers


def sync(ours, theirs, x):
    """Build both for `x` and give Keras unrolled's weights (Keras is built, not called: each
    eager Keras recurrent call compiles a loop, the slow part of these tests)."""
    ours(x)
    theirs.build(np.shape(x))
    theirs.set_weights(ours.get_weights())


# ------------------------------------------------------------------------------ TimeDistributed


@pytest.mark.parametrize("shape", [(3, 5, 4), (2, 3, 4, 5)])
def test_time_distributed_dense_parity(keras, rng, shape):
    ours = layers.TimeDistributed(layers.Dense(3, activation="tanh",
                                               bias_initializer="random_normal", name="dense"))
    theirs = keras.layers.TimeDistributed(keras.layers.Dense(3, activation="tanh", name="dense"))
    x = rng.normal(size=shape).astype("float32")
    sync(ours, theirs, x)
    y = ours(x)
    assert_close(y, np.asarray(theirs(x)))
    # Folding time into the batch gives the numbers of the per-step loop.
    per_step = np.stack([ours.layer(x[:, t]) for t in range(shape[1])], axis=1)
    np.testing.assert_allclose(y, per_step, rtol=1e-6, atol=1e-7)
    assert [w.path for w in ours.weights] == [f"{ours.name}/dense/kernel", f"{ours.name}/dense/bias"]
    assert [w.path.split("/", 1)[1] for w in ours.weights] == \
        [w.path.split("/", 1)[1] for w in theirs.weights]
    for batch in (None, shape[0]):
        assert ours.compute_output_shape((batch, *shape[1:])) == \
            theirs.compute_output_shape((batch, *shape[1:]))


def test_time_distributed_mask_and_embedding(keras, rng):
    x = rng.normal(size=(3, 4, 2)).astype("float32")
    mask = rng.random((3, 4)) < 0.5
    ours, theirs = layers.TimeDistributed(layers.Dense(2)), keras.layers.TimeDistributed(
        keras.layers.Dense(2))
    sync(ours, theirs, x)
    np.testing.assert_array_equal(ours.compute_mask(x, mask), np.asarray(theirs.compute_mask(x, mask)))
    assert_close(ours(x, mask=mask), np.asarray(theirs(x, mask=mask)))
    ids = rng.integers(0, 6, size=(2, 3, 4))
    ours, theirs = (layers.TimeDistributed(layers.Embedding(6, 2)),
                    keras.layers.TimeDistributed(keras.layers.Embedding(6, 2)))
    sync(ours, theirs, ids)
    assert_close(ours(ids), np.asarray(theirs(ids)))


def test_time_distributed_rnn_gets_per_step_mask(keras, rng):
    """An inner layer that takes a mask gets mask[:, t] at step t (here a SimpleRNN over a 4-D
    input: a sequence of sequences)."""
    x = rng.normal(size=(3, 2, 5, 2)).astype("float32")
    mask = rng.random((3, 2, 5)) < 0.7
    ours = layers.TimeDistributed(layers.SimpleRNN(3, bias_initializer="random_normal"))
    theirs = keras.layers.TimeDistributed(keras.layers.SimpleRNN(3))
    sync(ours, theirs, x)
    assert_close(ours(x, mask=mask), np.asarray(theirs(x, mask=mask)))
    unmasked = np.stack([ours.layer(x[:, t]) for t in range(2)], axis=1)
    assert_close(ours(x), unmasked)
    assert not np.allclose(ours(x, mask=mask), unmasked), "the mask must change something"
    assert ours.compute_output_shape((None, 2, 5, 2)) == theirs.compute_output_shape((None, 2, 5, 2))


def test_time_distributed_config(keras):
    ours = layers.TimeDistributed(layers.Dense(3, name="d"), name="td")
    theirs = keras.layers.TimeDistributed(keras.layers.Dense(3, name="d"), name="td")
    assert_same_config(ours, theirs)
    rebuilt = layers.TimeDistributed.from_config(ours.get_config())
    assert rebuilt.get_config() == ours.get_config()
    assert_same_config(ours, keras.layers.TimeDistributed.from_config(ours.get_config()))


def test_time_distributed_errors():
    with pytest.raises(TypeError, match=r"`layer` must be an unrolled layer instance"):
        layers.TimeDistributed("dense")
    td = layers.TimeDistributed(layers.Dense(2), name="td")
    with pytest.raises(ValueError, match=r"at least 3-D, got \(4, 3\).*call Dense directly"):
        td(np.ones((4, 3)))
    rnn = layers.TimeDistributed(layers.SimpleRNN(2))
    with pytest.raises(ValueError, match=r"`mask` must start with the input's \(batch, timesteps\)"):
        rnn(np.ones((2, 3, 4, 1)), mask=np.ones((2, 4, 4), bool))
    states = layers.TimeDistributed(layers.SimpleRNN(2, return_state=True))
    with pytest.raises(TypeError, match="must return one array per step"):
        states(np.ones((2, 3, 4, 1)))


# -------------------------------------------------------------------------------- Bidirectional

MERGE_MODES = ["concat", "sum", "ave", "mul", None]
# (mask kind, whether to pass initial states): each Keras call covers one pair.
CALLS = [(None, False), ("post", True), ("pre", False), ("random", True)]


def call_kwargs(rng, mask_kind, with_h0, batch, timesteps, state_shapes):
    kwargs = {}
    mask = make_mask(rng, mask_kind, batch, timesteps)
    if mask is not None:
        kwargs["mask"] = mask
    if with_h0:
        kwargs["initial_state"] = [rng.normal(size=s).astype("float32") for s in state_shapes]
    return kwargs


@pytest.mark.parametrize("merge_mode", MERGE_MODES)
@pytest.mark.parametrize("return_sequences,return_state",
                         list(itertools.product([False, True], repeat=2)))
def test_bidirectional_simple_rnn_parity(keras, rng, merge_mode, return_sequences, return_state):
    # Two of the four call kinds per test; across the merge modes every (return_sequences,
    # return_state) pair meets all four.
    k = MERGE_MODES.index(merge_mode)
    calls = [CALLS[k % 4], CALLS[(k + 2) % 4]]
    batch, timesteps, features, units = 4, 5, 3, int(rng.integers(2, 6))
    flags = dict(return_sequences=return_sequences, return_state=return_state)
    ours = layers.Bidirectional(layers.SimpleRNN(units, bias_initializer="random_normal", **flags),
                                merge_mode=merge_mode)
    theirs = keras.layers.Bidirectional(keras.layers.SimpleRNN(units, **flags),
                                        merge_mode=merge_mode)
    x = rng.normal(size=(batch, timesteps, features)).astype("float32")
    sync(ours, theirs, x)
    for mask_kind, with_h0 in calls:
        kwargs = call_kwargs(rng, mask_kind, with_h0, batch, timesteps, [(batch, units)] * 2)
        compare(ours(x, **kwargs), theirs(x, **kwargs), f"mask={mask_kind} h0={with_h0}")
    for shape in [(None, timesteps, features), (batch, None, features)]:
        assert ours.compute_output_shape(shape) == theirs.compute_output_shape(shape)


@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("stacked", [False, True])
def test_bidirectional_generic_rnn_parity(keras, rng, return_sequences, stacked):
    batch, timesteps, features = 3, 6, 2

    def make(lib):
        cells = [lib.SimpleRNNCell(4), lib.SimpleRNNCell(3)] if stacked else lib.SimpleRNNCell(4)
        return lib.Bidirectional(lib.RNN(cells, return_sequences=return_sequences,
                                         return_state=True))

    ours, theirs = make(layers), make(keras.layers)
    x = rng.normal(size=(batch, timesteps, features)).astype("float32")
    sync(ours, theirs, x)
    mask = make_mask(rng, "post", batch, timesteps)
    compare(ours(x, mask=mask), theirs(x, mask=mask))


@pytest.mark.parametrize("backward_units", [3, 5])
def test_bidirectional_given_backward_layer(keras, rng, backward_units):
    batch, timesteps, features = 3, 4, 2

    def make(lib):
        return lib.Bidirectional(
            lib.SimpleRNN(3, return_sequences=True, activation="relu", name="fw"),
            backward_layer=lib.SimpleRNN(backward_units, return_sequences=True, go_backwards=True,
                                         name="bw"))

    ours, theirs = make(layers), make(keras.layers)
    assert ours.backward_layer.name == "bw" and ours.forward_layer.name == "forward_fw"
    assert ours.backward_layer.zero_output_for_mask, "forced to return_sequences"
    x = rng.normal(size=(batch, timesteps, features)).astype("float32")
    sync(ours, theirs, x)
    mask = make_mask(rng, "random", batch, timesteps)
    compare(ours(x, mask=mask), theirs(x, mask=mask))
    assert ours.compute_output_shape((None, timesteps, features)) == \
        (None, timesteps, 3 + backward_units)


def test_bidirectional_weights_order_and_paths(keras, rng):
    ours = layers.Bidirectional(layers.SimpleRNN(3, name="rnn"), name="bi")
    theirs = keras.layers.Bidirectional(keras.layers.SimpleRNN(3, name="rnn"), name="bi")
    x = rng.normal(size=(2, 4, 5)).astype("float32")
    sync(ours, theirs, x)
    assert [w.path for w in ours.weights] == [w.path for w in theirs.weights] == [
        f"bi/{d}_rnn/simple_rnn_cell/{n}" for d in ("forward", "backward")
        for n in ("kernel", "recurrent_kernel", "bias")]
    assert [w.shape for w in ours.weights] == [tuple(w.shape) for w in theirs.weights]


def test_bidirectional_uses_a_fresh_copy_of_layer(rng):
    inner = layers.SimpleRNN(3, name="r")
    inner(np.ones((1, 2, 4), "float32"))
    bi = layers.Bidirectional(inner)
    bi(np.ones((1, 2, 4), "float32"))
    assert not any(np.shares_memory(w.value, v.value) for w in bi.weights for v in inner.weights)
    assert not inner.go_backwards and bi.backward_layer.go_backwards
    with pytest.warns(UserWarning, match="`weights` argument is ignored"):
        layers.Bidirectional(layers.SimpleRNN(2), weights=[np.ones((1, 2))])


@pytest.mark.parametrize("merge_mode", ["concat", None])
@pytest.mark.parametrize("return_sequences,return_state",
                         list(itertools.product([False, True], repeat=2)))
def test_bidirectional_compute_mask(keras, rng, merge_mode, return_sequences, return_state):
    flags = dict(return_sequences=return_sequences, return_state=return_state)
    ours = layers.Bidirectional(layers.SimpleRNN(2, **flags), merge_mode=merge_mode)
    theirs = keras.layers.Bidirectional(keras.layers.SimpleRNN(2, **flags), merge_mode=merge_mode)
    x = rng.normal(size=(2, 3, 4)).astype("float32")
    sync(ours, theirs, x)
    mask = rng.random((2, 3)) < 0.5
    got, want = ours.compute_mask(x, mask), theirs.compute_mask(x, mask)
    n_outputs = len(ours(x)) if isinstance(ours(x), tuple) else 1
    if return_state:
        # Keras returns only the output masks here; they go to the first outputs, the states get
        # none. unrolled lists one mask per output.
        want = (want,) if not isinstance(want, tuple) else want
        want = (*want, *([None] * (n_outputs - len(want))))
    flat_got = got if isinstance(got, tuple) else (got,)
    flat_want = want if isinstance(want, tuple) else (want,)
    assert len(flat_got) == len(flat_want) == n_outputs
    for a, b in zip(flat_got, flat_want):
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_array_equal(a, np.asarray(b))
    nested = ours.compute_mask(x, [mask, None])  # a nested mask: the sequence's comes first
    assert repr(nested) == repr(got)


def test_bidirectional_config_matches_keras(keras):
    def make(lib, **kwargs):
        return lib.Bidirectional(lib.SimpleRNN(3, return_sequences=True, name="rnn"),
                                 merge_mode="ave", name="bi", **kwargs)

    ours, theirs = make(layers), make(keras.layers)
    assert_same_config(ours, theirs)
    config = ours.get_config()
    assert config["layer"]["config"]["name"] == "forward_rnn"
    assert config["layer"]["config"]["zero_output_for_mask"] is True
    assert config["backward_layer"]["config"]["go_backwards"] is True
    rebuilt = layers.Bidirectional.from_config(config)
    assert rebuilt.get_config() == config
    assert rebuilt.forward_layer.name == "forward_rnn"
    assert rebuilt.backward_layer.name == "backward_rnn"
    assert_same_config(ours, keras.layers.Bidirectional.from_config(config))
    # Keras's config, written by Keras, builds the same layer here.
    from_keras = layers.Bidirectional.from_config(keras_config(theirs.get_config()))
    assert from_keras.get_config() == config
    # A generic RNN over a stack of cells goes through the nested cell configs.
    stack = layers.Bidirectional(layers.RNN([layers.SimpleRNNCell(2), layers.SimpleRNNCell(3)]))
    again = layers.Bidirectional.from_config(stack.get_config())
    assert again.get_config() == stack.get_config()
    keras_stack = keras.layers.Bidirectional(keras.layers.RNN(
        [keras.layers.SimpleRNNCell(2), keras.layers.SimpleRNNCell(3)]))
    assert sorted(keras_config(keras_stack.get_config())["layer"]["config"]["cell"]) == \
        sorted(stack.get_config()["layer"]["config"]["cell"])


def test_bidirectional_embedding_mask_flow_like_keras(keras, rng):
    batch, timesteps, vocab = 4, 6, 8
    ids = rng.integers(1, vocab, size=(batch, timesteps))
    ids[1, 4:] = 0
    ids[2, 1:] = 0
    ids[3, :3] = 0
    emb = layers.Embedding(vocab, 3, mask_zero=True)
    bi = layers.Bidirectional(layers.SimpleRNN(4, return_sequences=True,
                                               bias_initializer="random_normal"))
    dense = layers.TimeDistributed(layers.Dense(2))
    mask = emb.compute_mask(ids)
    h = bi(emb(ids), mask=mask)
    out = dense(h, mask=bi.compute_mask(None, mask))
    np.testing.assert_array_equal(dense.compute_mask(h, bi.compute_mask(None, mask)), mask)

    model = keras.Sequential([
        keras.Input(shape=(timesteps,), dtype="int32"),
        keras.layers.Embedding(vocab, 3, mask_zero=True),
        keras.layers.Bidirectional(keras.layers.SimpleRNN(4, return_sequences=True)),
        keras.layers.TimeDistributed(keras.layers.Dense(2))])
    for theirs, mine in zip(model.layers, (emb, bi, dense)):
        theirs.set_weights(mine.get_weights())
    assert_close(out, np.asarray(model(ids)), what="embedding -> bidirectional -> dense")


def test_bidirectional_stateful(keras, rng):
    batch, timesteps, features = 2, 3, 2
    ours = layers.Bidirectional(layers.SimpleRNN(3, stateful=True, bias_initializer="ones"))
    theirs = keras.layers.Bidirectional(keras.layers.SimpleRNN(3, stateful=True))
    x1, x2 = (rng.normal(size=(batch, timesteps, features)).astype("float32") for _ in range(2))
    ours(x1)
    theirs.build((batch, timesteps, features))
    theirs.set_weights(ours.get_weights())
    ours.reset_state()
    compare(ours(x1), theirs(x1))
    compare(ours(x2), theirs(x2), "second call continues from the carried states")
    assert len(ours.states) == 2
    ours.reset_state()
    theirs.reset_state()
    compare(ours(x2), theirs(x2), "after reset_state")


def test_bidirectional_training_flag_reaches_both_layers(rng):
    x = rng.normal(size=(2, 4, 3)).astype("float32")
    bi = layers.Bidirectional(layers.SimpleRNN(3, dropout=0.5, seed=1), merge_mode=None)
    plain = layers.Bidirectional(layers.SimpleRNN(3))
    bi(x)
    plain(x)
    plain.set_weights(bi.get_weights())
    compare(list(bi(x, training=False)), list(np.split(plain(x), 2, axis=-1)))
    dropped = bi(x, training=True)
    assert not np.allclose(dropped[0], bi(x)[0]) and not np.allclose(dropped[1], bi(x)[1])


def test_bidirectional_errors():
    with pytest.raises(ValueError, match=r"unknown merge_mode 'concatenate'\. Did you mean \"concat\""):
        layers.Bidirectional(layers.SimpleRNN(2), merge_mode="concatenate")
    with pytest.raises(ValueError, match=r"unknown merge_mode 'avg'.*\"ave\""):
        layers.Bidirectional(layers.SimpleRNN(2), merge_mode="avg")
    with pytest.raises(ValueError, match=r"opposite directions, but both have go_backwards=False"):
        layers.Bidirectional(layers.SimpleRNN(2), backward_layer=layers.SimpleRNN(2))
    with pytest.raises(ValueError, match=r"agree on `return_sequences`.*return_sequences=True "
                                         r"for `layer` and return_sequences=False"):
        layers.Bidirectional(layers.SimpleRNN(2, return_sequences=True),
                             backward_layer=layers.SimpleRNN(2, go_backwards=True))
    with pytest.raises(ValueError, match=r"agree on `return_state`"):
        layers.Bidirectional(layers.SimpleRNN(2),
                             backward_layer=layers.SimpleRNN(2, go_backwards=True,
                                                             return_state=True))
    with pytest.raises(ValueError, match=r"agree on `stateful`"):
        layers.Bidirectional(layers.SimpleRNN(2, stateful=True),
                             backward_layer=layers.SimpleRNN(2, go_backwards=True))
    with pytest.raises(TypeError, match=r"must be a recurrent layer .* got Dense"):
        layers.Bidirectional(layers.Dense(2))
    with pytest.raises(TypeError, match=r"`backward_layer` must be an unrolled layer instance"):
        layers.Bidirectional(layers.SimpleRNN(2), backward_layer="rnn")
    bi = layers.Bidirectional(layers.SimpleRNN(2), name="bi")
    with pytest.raises(ValueError, match=r"forward layer's 1 state\(s\) and then the backward "
                                         r"layer's 1, 2 in all .*got 3"):
        bi(np.ones((1, 3, 2)), initial_state=[np.zeros((1, 2))] * 3)
    with pytest.raises(ValueError, match=r"3-D; got 2-D"):
        bi(np.ones((3, 2)))
    with pytest.raises(AttributeError, match="not stateful"):
        bi.reset_state()
    sum_mismatch = layers.Bidirectional(
        layers.SimpleRNN(2), merge_mode="sum",
        backward_layer=layers.SimpleRNN(3, go_backwards=True))
    with pytest.raises(ValueError, match=r"merge_mode='sum' needs both directions to have the same"):
        sum_mismatch(np.ones((1, 3, 2)))


# LSTM (two states, h and c) and GRU inside Bidirectional: (layer, kwargs, merge_mode,
# return_sequences, mask kind, initial states).
GATED_CASES = [
    ("LSTM", {}, "concat", True, "post", True),
    ("LSTM", {"unit_forget_bias": False}, None, False, "random", False),
    ("GRU", {}, "sum", True, "pre", True),
    ("GRU", {"reset_after": False}, "mul", False, None, False),
]


@pytest.mark.parametrize("name,kwargs,merge_mode,return_sequences,mask_kind,with_h0", GATED_CASES)
def test_bidirectional_lstm_gru_parity(keras, rng, name, kwargs, merge_mode, return_sequences,
                                       mask_kind, with_h0):
    batch, timesteps, features, units = 3, 5, 2, 4
    flags = dict(return_sequences=return_sequences, return_state=True, **kwargs)
    ours = layers.Bidirectional(getattr(layers, name)(units, bias_initializer="random_normal",
                                                      name="r", **flags),
                                merge_mode=merge_mode, name="bi")
    theirs = keras.layers.Bidirectional(
        getattr(keras.layers, name)(units, bias_initializer="random_normal", name="r", **flags),
        merge_mode=merge_mode, name="bi")
    x = rng.normal(size=(batch, timesteps, features)).astype("float32")
    sync(ours, theirs, x)
    assert [w.path for w in ours.weights] == [w.path for w in theirs.weights]
    n_states = 2 if name == "LSTM" else 1
    call = call_kwargs(rng, mask_kind, with_h0, batch, timesteps, [(batch, units)] * 2 * n_states)
    result = ours(x, **call)
    # (merged, fh, [fc,] bh, [bc]) or (y, y_rev, states...) with merge_mode None.
    assert len(result) == (2 if merge_mode is None else 1) + 2 * n_states
    compare(result, theirs(x, **call))
    assert ours.compute_output_shape((None, timesteps, features)) == \
        theirs.compute_output_shape((None, timesteps, features))
    rebuilt = layers.Bidirectional.from_config(ours.get_config())
    rebuilt(x)
    assert rebuilt.get_config() == ours.get_config()
    assert_same_config(ours, theirs)


@pytest.mark.parametrize("stacked", [False, True])
def test_generic_rnn_nested_cell_config_matches_keras(keras, stacked):
    """The nested `cell` dict (module, class_name, config, registered_name, build_config) that
    Bidirectional copies a generic RNN through is Keras's, built or not, and rebuilds the RNN."""
    def make(lib):
        # Named stack: auto-names count per session, differently in each library.
        cells = (lib.StackedRNNCells([lib.SimpleRNNCell(3, name="a"),
                                      lib.SimpleRNNCell(2, name="b")], name="s") if stacked
                 else lib.SimpleRNNCell(3, name="a"))
        return lib.RNN(cells, name="r")

    ours, theirs = make(layers), make(keras.layers)
    assert ours.get_config() == keras_config(theirs.get_config())
    x = np.ones((2, 3, 4), "float32")
    ours(x)
    theirs.build(x.shape)
    assert ours.get_config() == keras_config(theirs.get_config())
    rebuilt = layers.RNN.from_config(ours.get_config())
    assert rebuilt.cell.built and rebuilt.get_config() == ours.get_config()
    assert [w.shape for w in rebuilt.weights] == [w.shape for w in ours.weights]
