"""Models against real Keras 3: the same architecture in both, the same weights, the same numbers.

Each test builds a model in unrolled and its twin in Keras (or rebuilds one from the other's
config), copies the weights across with set_weights (which also proves both list them in the same
order and shapes), and compares predict outputs to 1e-5.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from conftest import assert_close
import unrolled
from unrolled import Input, Model, Sequential, layers


def as_list(result):
    return list(result) if isinstance(result, (list, tuple)) else [result]


def compare_outputs(ours, theirs, what="predict"):
    ours, theirs = as_list(ours), as_list(theirs)
    assert len(ours) == len(theirs), f"{what}: {len(ours)} outputs vs Keras's {len(theirs)}"
    for k, (a, b) in enumerate(zip(ours, theirs)):
        assert_close(a, np.asarray(b), what=f"{what}[{k}]")


def copy_weights(ours, theirs):
    """Keras gets unrolled's weights; shapes and order must agree for this to pass."""
    assert [tuple(w.shape) for w in ours.get_weights()] == [
        tuple(w.shape) for w in theirs.get_weights()], "weight order/shapes differ from Keras"
    theirs.set_weights(ours.get_weights())


def keras_summary(model):
    """Keras's summary table as rows of cells (wrapped cells joined), plus the totals lines."""
    import os

    lines = []
    width = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "250"  # rich wraps the table at the console width otherwise
    try:
        model.summary(print_fn=lambda line, *a, **k: lines.extend(line.splitlines()),
                      line_length=200)
    finally:
        if width is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = width
    rows, current, totals = [], None, []
    for line in lines:
        if line.startswith("│"):
            cells = [c.strip() for c in line.strip("│").split("│")]
            if current is None:
                current = cells
            else:
                current = [f"{a} {b}".strip() for a, b in zip(current, cells)]
        elif line.startswith(("├", "└", "┡")) and current is not None:
            rows.append(current)
            current = None
        elif "params:" in line:
            totals.append(line.strip())
    return rows[1:] if rows and rows[0][0] == "Layer (type)" else rows, totals


def our_summary(model):
    from unrolled.models.summary import layer_rows

    lines = []
    model.summary(print_fn=lines.append)
    totals = [line.strip() for line in lines if "params:" in line]
    return layer_rows(model)[1], totals


def check_summary(ours, theirs):
    our_rows, our_totals = our_summary(ours)
    their_rows, their_totals = keras_summary(theirs)
    # Default names count up per process in both libraries, so they differ within a full test
    # run; the layer types, shapes, counts and links (between named layers) must not.
    strip = lambda rows: [[row[0].split(" ")[-1]] + row[1:] for row in rows]  # noqa: E731
    assert strip(our_rows) == strip(their_rows)
    assert our_totals == their_totals


# ------------------------------------------------------------------ building and predicting

def test_sequential_simple_rnn_stack_matches_keras(keras, rng):
    # Named layers: default names grow with the session, and a long one wraps in Keras's table.
    ours = Sequential([Input(shape=(None, 3)), layers.SimpleRNN(5, return_sequences=True, name="a"),
                       layers.SimpleRNN(4, return_sequences=True, name="b"),
                       layers.SimpleRNN(2, name="c")])
    theirs = keras.Sequential([keras.Input(shape=(None, 3)),
                               keras.layers.SimpleRNN(5, return_sequences=True, name="a"),
                               keras.layers.SimpleRNN(4, return_sequences=True, name="b"),
                               keras.layers.SimpleRNN(2, name="c")])
    copy_weights(ours, theirs)
    x = rng.normal(size=(11, 6, 3)).astype("float32")
    compare_outputs(ours.predict(x, batch_size=4), theirs.predict(x, batch_size=4, verbose=0))
    compare_outputs(ours(x), theirs(x), "call")
    assert len(ours.layers) == len(theirs.layers) == 3  # the InputLayer is not listed
    assert ours.output_shape == tuple(theirs.output_shape)
    check_summary(ours, theirs)


def test_predict_on_batch_matches_keras(keras, rng):
    """`predict_on_batch`: the whole batch in one step, as Keras's; one output or several."""
    ours = Sequential([Input(shape=(None, 3)), layers.LSTM(5, return_sequences=True, name="a"),
                       layers.Dense(2, name="d")])
    theirs = keras.Sequential([keras.Input(shape=(None, 3)),
                               keras.layers.LSTM(5, return_sequences=True, name="a"),
                               keras.layers.Dense(2, name="d")])
    copy_weights(ours, theirs)
    x = rng.normal(size=(40, 6, 3)).astype("float32")         # more than predict's 32 a step
    got = ours.predict_on_batch(x)
    assert isinstance(got, np.ndarray) and got.shape == (40, 6, 2)
    compare_outputs(got, theirs.predict_on_batch(x), "predict_on_batch")
    compare_outputs(got, ours.predict(x))
    two_ours, two_theirs = _two_in_two_out(unrolled, layers), _two_in_two_out(keras, keras.layers)
    copy_weights(two_ours, two_theirs)
    xa = rng.normal(size=(7, 5, 3)).astype("float32")
    xb = rng.normal(size=(7, 4, 3)).astype("float32")
    got = two_ours.predict_on_batch([xa, xb])
    assert isinstance(got, list) and len(got) == 2
    compare_outputs(got, two_theirs.predict_on_batch([xa, xb]), "predict_on_batch")
    with pytest.raises(ValueError, match="different numbers of samples"):
        two_ours.predict_on_batch([xa, xb[:5]])


def test_sequential_builds_lazily_on_first_call(keras, rng):
    ours = Sequential([layers.SimpleRNN(4, return_sequences=True)])
    ours.add(layers.SimpleRNN(3))
    assert not ours.built and ours.count_params() == 0
    x = rng.normal(size=(5, 7, 2)).astype("float32")
    y = ours.predict(x)
    assert y.shape == (5, 3) and ours.built
    theirs = keras.Sequential([keras.layers.SimpleRNN(4, return_sequences=True),
                               keras.layers.SimpleRNN(3)])
    theirs.build((None, 7, 2))
    copy_weights(ours, theirs)
    compare_outputs(y, theirs.predict(x, verbose=0))
    popped = ours.pop()
    assert popped.units == 3 and len(ours.layers) == 1
    assert ours.predict(x).shape == (5, 7, 4)


def _two_in_two_out(lib, layers_mod):
    a = lib.Input(shape=(None, 3), name="left")
    b = lib.Input(shape=(None, 3), name="right")
    shared = layers_mod.SimpleRNN(4, return_sequences=True, name="shared")
    left = layers_mod.SimpleRNN(2, name="left_head")(shared(a))
    right_seq = shared(b)
    right = layers_mod.Dense(3, name="dense_head")(layers_mod.SimpleRNN(5, name="right_rnn")(right_seq))
    return lib.Model([a, b], [left, right], name="two_by_two")


def test_functional_two_inputs_two_outputs_shared_layer(keras, rng):
    ours = _two_in_two_out(unrolled, layers)
    theirs = _two_in_two_out(keras, keras.layers)
    assert [l.name for l in ours.layers] == [l.name for l in theirs.layers]
    copy_weights(ours, theirs)
    xa = rng.normal(size=(7, 5, 3)).astype("float32")
    xb = rng.normal(size=(7, 4, 3)).astype("float32")
    compare_outputs(ours.predict([xa, xb], batch_size=3),
                    theirs.predict([xa, xb], batch_size=3, verbose=0))
    compare_outputs(ours.predict({"left": xa, "right": xb}), theirs.predict([xa, xb], verbose=0))
    check_summary(ours, theirs)
    assert ours.count_params() == theirs.count_params()


def _encoder_decoder(lib, layers_mod, rnn="SimpleRNN"):
    enc_in = lib.Input(shape=(None, 3), name="enc_in")
    dec_in = lib.Input(shape=(None, 2), name="dec_in")
    make = getattr(layers_mod, rnn)
    _, *states = make(6, return_state=True, name="encoder")(enc_in)
    seq = make(6, return_sequences=True, name="decoder")(dec_in, initial_state=states)
    out = layers_mod.TimeDistributed(layers_mod.Dense(4), name="proj")(seq)
    return lib.Model([enc_in, dec_in], out, name="seq2seq")


@pytest.mark.parametrize("rnn", ["SimpleRNN"] + (["LSTM"] if hasattr(layers, "LSTM") else []))
def test_encoder_decoder_states_into_initial_state(keras, rng, rnn):
    ours = _encoder_decoder(unrolled, layers, rnn)
    theirs = _encoder_decoder(keras, keras.layers, rnn)
    copy_weights(ours, theirs)
    xe = rng.normal(size=(4, 5, 3)).astype("float32")
    xd = rng.normal(size=(4, 3, 2)).astype("float32")
    compare_outputs(ours.predict([xe, xd]), theirs.predict([xe, xd], verbose=0))
    check_summary(ours, theirs)


def test_stacked_cells_return_state_nested(keras, rng):
    def build(lib, L):
        x = lib.Input(shape=(None, 3))
        out, s1, s2 = L.RNN([L.SimpleRNNCell(4), L.SimpleRNNCell(2)], return_state=True)(x)
        return lib.Model(x, [out, s1, s2])

    ours, theirs = build(unrolled, layers), build(keras, keras.layers)
    copy_weights(ours, theirs)
    x = rng.normal(size=(3, 4, 3)).astype("float32")
    compare_outputs(ours.predict(x), theirs.predict(x, verbose=0))


def _masked(lib, L, with_state):
    ids = lib.Input(shape=(None,), dtype="int32", name="ids")
    emb = L.Embedding(12, 3, mask_zero=True, name="emb")(ids)
    seq = L.SimpleRNN(4, return_sequences=True, name="r1")(emb)
    outs = [L.SimpleRNN(2, name="r2")(seq)]
    inputs = [ids]
    if with_state:
        # Keras passes the automatic mask only to calls with one tensor argument: with
        # initial_state given, this layer runs unmasked; unrolled does the same.
        h0 = lib.Input(shape=(5,), name="h0")
        inputs.append(h0)
        outs.append(L.SimpleRNN(5, return_sequences=True, name="r3")(emb, initial_state=[h0]))
    return lib.Model(inputs, outs)


@pytest.mark.parametrize("with_state", [False, True])
def test_embedding_mask_flows_like_keras(keras, rng, with_state):
    ours, theirs = _masked(unrolled, layers, with_state), _masked(keras, keras.layers, with_state)
    copy_weights(ours, theirs)
    ids = rng.integers(1, 12, size=(6, 7))
    ids[1, 4:] = 0
    ids[2, :2] = 0
    ids[3, 3] = 0
    inputs = [ids] + ([rng.normal(size=(6, 5)).astype("float32")] if with_state else [])
    compare_outputs(ours.predict(inputs), theirs.predict(inputs, verbose=0))


def test_sequential_passes_masks_between_layers(keras, rng):
    ours = Sequential([Input(shape=(None, 2)), layers.Masking(0.0),
                       layers.SimpleRNN(3, return_sequences=True), layers.SimpleRNN(2)])
    theirs = keras.Sequential([keras.Input(shape=(None, 2)), keras.layers.Masking(0.0),
                               keras.layers.SimpleRNN(3, return_sequences=True),
                               keras.layers.SimpleRNN(2)])
    copy_weights(ours, theirs)
    x = rng.normal(size=(4, 6, 2)).astype("float32")
    x[0, 3:] = 0
    x[2, :2] = 0
    compare_outputs(ours.predict(x), theirs.predict(x, verbose=0))


def test_stateful_model_carries_and_resets_states(rng):
    x = rng.normal(size=(2, 3, 2)).astype("float32")
    inp = Input(batch_shape=(2, None, 2))
    model = Model(inp, layers.SimpleRNN(3, stateful=True)(inp))
    first, second = model.predict(x), model.predict(x)
    assert not np.allclose(first, second)
    model.reset_states()
    np.testing.assert_allclose(model.predict(x), first, atol=1e-6)


def test_weights_get_layer_and_compute_output_shape():
    model = _two_in_two_out(unrolled, layers)
    assert model.get_layer("shared") is model.get_layer(index=2)
    assert len(model.weights) == len(model.get_weights()) == 11
    assert model.compute_output_shape([(None, 5, 3), (None, 4, 3)]) == [(None, 2), (None, 3)]
    model.set_weights([w * 0 for w in model.get_weights()])
    assert all(not w.any() for w in model.get_weights())


# ------------------------------------------------------------------ configs

def _roundtrip_inputs(rng, model):
    return [rng.normal(size=(3, 5) + tuple(t.shape[2:])).astype("float32")
            if t.dtype.startswith("float") else rng.integers(0, 10, size=(3, 5))
            for t in model.inputs]


@pytest.mark.parametrize("kind", ["sequential", "two_by_two", "seq2seq", "masked"])
def test_keras_config_rebuilds_in_unrolled(keras, rng, kind):
    builders = {
        "sequential": lambda lib, L: lib.Sequential([lib.Input(shape=(None, 3)),
                                                     L.SimpleRNN(4, return_sequences=True),
                                                     L.SimpleRNN(2)]),
        "two_by_two": _two_in_two_out,
        "seq2seq": _encoder_decoder,
        "masked": lambda lib, L: _masked(lib, L, True),
    }
    theirs = builders[kind](keras, keras.layers)
    config = json.loads(json.dumps(keras.saving.serialize_keras_object(theirs)))
    ours = layers.deserialize(config)
    assert type(ours).__name__ == ("Sequential" if kind == "sequential" else "Model")
    assert [l.name for l in ours.layers] == [l.name for l in theirs.layers]
    ours.set_weights(theirs.get_weights())
    inputs = _roundtrip_inputs(rng, ours)
    inputs = inputs[0] if len(inputs) == 1 else inputs
    compare_outputs(ours.predict(inputs), theirs.predict(inputs, verbose=0))


@pytest.mark.parametrize("kind", ["sequential", "two_by_two", "seq2seq", "masked"])
def test_unrolled_config_rebuilds_in_keras(keras, rng, kind):
    builders = {
        "sequential": lambda: Sequential([Input(shape=(None, 3)), layers.Masking(),
                                          layers.SimpleRNN(4, return_sequences=True),
                                          layers.SimpleRNN(2)]),
        "two_by_two": lambda: _two_in_two_out(unrolled, layers),
        "seq2seq": lambda: _encoder_decoder(unrolled, layers),
        "masked": lambda: _masked(unrolled, layers, True),
    }
    ours = builders[kind]()
    config = json.loads(json.dumps(layers.serialize(ours)))
    theirs = keras.saving.deserialize_keras_object(copy.deepcopy(config))  # Keras pops keys
    assert [l.name for l in ours.layers] == [l.name for l in theirs.layers]
    theirs.set_weights(ours.get_weights())
    inputs = _roundtrip_inputs(rng, ours)
    inputs = inputs[0] if len(inputs) == 1 else inputs
    compare_outputs(ours.predict(inputs), theirs.predict(inputs, verbose=0))
    again = layers.deserialize(config)
    again.set_weights(ours.get_weights())
    compare_outputs(again.predict(inputs), ours.predict(inputs), "unrolled round trip")


def test_config_matches_keras_structure(keras):
    """The config unrolled writes has Keras's keys, node records and endpoints."""
    ours = _encoder_decoder(unrolled, layers).get_config()
    theirs = json.loads(json.dumps(
        keras.saving.serialize_keras_object(_encoder_decoder(keras, keras.layers))["config"]))
    assert set(ours) == set(theirs)
    assert ours["input_layers"] == theirs["input_layers"]
    assert ours["output_layers"] == theirs["output_layers"]
    for a, b in zip(ours["layers"], theirs["layers"]):
        assert set(a) == set(b)
        assert a["name"] == b["name"] and a["class_name"] == b["class_name"]
        for node_a, node_b in zip(a["inbound_nodes"], b["inbound_nodes"]):
            assert node_a["args"] == node_b["args"]
            assert node_a["kwargs"].get("initial_state") == node_b["kwargs"].get("initial_state")


# ------------------------------------------------------------------ errors

def test_disconnected_output_is_refused():
    a, b = Input(shape=(None, 3), name="a_in"), Input(shape=(None, 3), name="b_in")
    out = layers.SimpleRNN(2)(b)
    with pytest.raises(ValueError, match="disconnected.*b_in"):
        Model(a, out)


def test_get_layer_unknown_name_suggests():
    model = _two_in_two_out(unrolled, layers)
    with pytest.raises(ValueError, match='No layer named .shard.*Did you mean "shared"'):
        model.get_layer("shard")
    with pytest.raises(ValueError, match="out of range"):
        model.get_layer(index=40)


def test_predict_wrong_input_count_and_shape():
    model = _two_in_two_out(unrolled, layers)
    x = np.zeros((2, 4, 3), dtype="float32")
    with pytest.raises(ValueError, match="has 2 inputs.*got one ndarray"):
        model.predict(x)
    with pytest.raises(ValueError, match="input 'right' expects shape \\(None, None, 3\\)"):
        model.predict([x, np.zeros((2, 4, 5))])


def test_deserialize_refuses_unknown_and_lambda_classes():
    with pytest.raises(ValueError, match="'mystery'.*'Conv1D'.*Supported: .*SimpleRNN"):
        layers.deserialize({"class_name": "Conv1D", "config": {"name": "mystery"}})
    with pytest.raises(ValueError, match="Lambda.*Python code"):
        layers.deserialize({"module": "keras.layers", "class_name": "Lambda",
                            "config": {"name": "fn", "function": {"class_name": "__lambda__"}}})


def test_symbolic_tensors_refuse_arithmetic():
    x = Input(shape=(None, 3))
    with pytest.raises(TypeError, match="symbolic"):
        x + 1
    with pytest.raises(TypeError, match="symbolic"):
        np.asarray(x)


def _zoo(lib, L):
    """Every supported layer kind in one Sequential, as in the spec's .keras example."""
    return lib.Sequential([
        lib.Input(shape=(None,), dtype="int32"),
        L.Embedding(10, 3, mask_zero=True),
        L.Bidirectional(L.LSTM(4, return_sequences=True)),
        L.TimeDistributed(L.Dense(5)),
        L.GRU(3, return_sequences=True),
        L.RNN([L.SimpleRNNCell(2), L.LSTMCell(3)], return_sequences=True),
        L.Dropout(0.5),
        L.Dense(2, name="out_dense"),
    ], name="zoo")


def test_layer_zoo_configs_both_ways(keras, rng):
    ids = rng.integers(0, 10, size=(5, 6))
    ids[1, 3:] = 0
    theirs = _zoo(keras, keras.layers)
    ours = layers.deserialize(json.loads(json.dumps(keras.saving.serialize_keras_object(theirs))))
    ours.set_weights(theirs.get_weights())
    compare_outputs(ours.predict(ids), theirs.predict(ids, verbose=0), "Keras config")
    check_summary(ours, theirs)

    mine = _zoo(unrolled, layers)
    config = json.loads(json.dumps(layers.serialize(mine)))
    rebuilt = keras.saving.deserialize_keras_object(config)
    rebuilt.set_weights(mine.get_weights())
    compare_outputs(mine.predict(ids), rebuilt.predict(ids, verbose=0), "unrolled config")
