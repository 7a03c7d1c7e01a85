"""Keras files in and out: files written by real Keras load into unrolled with the same
predictions, files unrolled writes load into real Keras with the same predictions, and the
committed tf.keras 2.15 files (tests/data/tf2, made by tests/data/make_tf2_files.py) load too.

Every file a test uses is generated in the test by Keras (or unrolled) under tmp_path, except the
tf.keras 2.x fixtures: there is no TensorFlow in the test environment.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

import unrolled
from unrolled import activations, layers
from unrolled.saving import ModelFileError, _config, _weights, load_weights, save_model
from tests.conftest import assert_close

TF2 = Path(__file__).parent / "data" / "tf2"
TF2_MODELS = ["seq_lstm", "gru_reset_after", "bidirectional_td", "embedding_mask", "simple_rnn",
              "stacked_cells", "hard_sigmoid_lstm", "encoder_decoder"]


# ---- models built with real Keras ---------------------------------------------------------------


def _everything(K):
    L = K.layers
    return K.Sequential([
        K.Input((6, 3)),
        L.Masking(0.0),
        L.Bidirectional(L.LSTM(4, return_sequences=True)),
        L.TimeDistributed(L.Dense(3, activation="tanh")),
        L.GRU(3, return_sequences=True),
        L.RNN([L.SimpleRNNCell(2), L.LSTMCell(3)], return_sequences=True),
        L.Dropout(0.3),
        L.SimpleRNN(4, activation="relu"),
        L.Dense(2, name="out_dense"),
        L.Dense(1),
    ])


def _embedding(K):
    L = K.layers
    return K.Sequential([K.Input((7,), dtype="int32"), L.Embedding(12, 4, mask_zero=True),
                         L.LSTM(5, return_sequences=True), L.GRU(3, reset_after=False),
                         L.Dense(2, activation="softmax")])


def _no_bias_and_options(K):
    L = K.layers
    return K.Sequential([
        K.Input((5, 2)),
        L.LSTM(3, use_bias=False, return_sequences=True, go_backwards=True),
        L.GRU(3, use_bias=False, return_sequences=True),
        L.Bidirectional(L.GRU(2, return_sequences=True), merge_mode="sum"),
        L.Bidirectional(L.SimpleRNN(2), merge_mode="mul"),
        L.Dense(1, use_bias=False),
    ])


def _many_dense(K):
    # Twelve layers of one class: groups dense, dense_1, ... dense_11 must sort by number.
    L = K.layers
    return K.Sequential([K.Input((4, 3)), L.SimpleRNN(3, return_sequences=True)]
                        + [L.Dense(3, activation="tanh") for _ in range(11)] + [L.Dense(1)])


def _encoder_decoder(K):
    L = K.layers
    enc_in = K.Input((6, 3), name="enc_in")
    _, h, c = L.LSTM(5, return_state=True, name="encoder")(enc_in)
    dec_in = K.Input((4, 2), name="dec_in")
    seq = L.LSTM(5, return_sequences=True, name="decoder")(dec_in, initial_state=[h, c])
    out = L.TimeDistributed(L.Dense(3, activation="softmax"), name="head")(seq)
    return K.Model([enc_in, dec_in], out)


def _functional_bidirectional(K):
    L = K.layers
    inp = K.Input((5, 3))
    x = L.Masking()(inp)
    x = L.Bidirectional(L.LSTM(3, return_sequences=True))(x)
    x = L.RNN([L.SimpleRNNCell(2), L.LSTMCell(3)])(x)
    return K.Model(inp, L.Dense(2)(x))


def _nested(K):
    L = K.layers
    inner = K.Sequential([K.Input((5, 3)), L.LSTM(4, return_sequences=True), L.GRU(3)])
    return K.Sequential([K.Input((5, 3)), inner, L.Dense(2)])


BUILDERS = {f.__name__[1:]: f for f in (_everything, _embedding, _no_bias_and_options,
                                         _many_dense, _encoder_decoder,
                                         _functional_bidirectional, _nested)}


def _inputs(model, rng, batch=4):
    xs = []
    for spec in model.inputs:
        shape = (batch,) + tuple(spec.shape[1:])
        if "int" in str(spec.dtype):
            x = rng.integers(1, 12, size=shape).astype("int32")
            x[0, -3:] = 0  # trailing padding
            x[1, :2] = 0   # leading padding
        else:
            x = rng.normal(size=shape).astype("float32")
            x[0, -2:] = 0.0  # steps Masking hides
        xs.append(x)
    return xs


def _randomize(model, rng):
    """Random weights everywhere, so a bias or kernel read into the wrong slot shows."""
    model.set_weights([rng.normal(scale=0.5, size=w.shape).astype("float32")
                       for w in model.get_weights()])


def _predict(model, xs):
    return np.asarray(model.predict(xs if len(xs) > 1 else xs[0], verbose=0))


@pytest.fixture
def keras_model(keras, rng, request):
    model = BUILDERS[request.param](keras)
    _randomize(model, rng)
    return model


# ---- Keras -> unrolled --------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
@pytest.mark.parametrize("keras_model", sorted(BUILDERS), indirect=True)
def test_keras_files_load_with_the_same_predictions(keras_model, suffix, tmp_path, rng):
    path = tmp_path / f"model{suffix}"
    keras_model.save(path)
    ours = unrolled.load_model(path)
    xs = _inputs(keras_model, rng)
    assert_close(_predict(ours, xs), _predict(keras_model, xs), what=f"{path.name} predictions")
    assert [w.shape for w in ours.weights] == [tuple(w.shape) for w in keras_model.weights]


@pytest.mark.parametrize("keras_model", ["everything", "encoder_decoder"], indirect=True)
def test_keras_weights_h5_loads_into_an_unrolled_model(keras_model, tmp_path, rng):
    keras_model.save(tmp_path / "m.keras")
    keras_model.save_weights(tmp_path / "m.weights.h5")
    ours = unrolled.load_model(tmp_path / "m.keras")
    for weight in ours.weights:
        weight.assign(np.zeros(weight.shape))
    ours.load_weights(tmp_path / "m.weights.h5")
    xs = _inputs(keras_model, rng)
    assert_close(_predict(ours, xs), _predict(keras_model, xs), what="after load_weights")


def test_keras_h5_weights_only_is_read_through_load_weights(keras, tmp_path, rng):
    model = _everything(keras)
    _randomize(model, rng)
    model.save(tmp_path / "m.keras")
    model.save(tmp_path / "m.h5")  # legacy full file: load_weights reads its model_weights
    ours = unrolled.load_model(tmp_path / "m.keras")
    for weight in ours.weights:
        weight.assign(np.zeros(weight.shape))
    ours.load_weights(tmp_path / "m.h5")
    xs = _inputs(model, rng)
    assert_close(_predict(ours, xs), _predict(model, xs), what="load_weights from .h5")


# ---- unrolled -> Keras --------------------------------------------------------------------------


@pytest.mark.parametrize("keras_model", sorted(BUILDERS), indirect=True)
def test_unrolled_keras_files_load_in_keras(keras, keras_model, tmp_path, rng):
    keras_model.save(tmp_path / "from_keras.keras")
    ours = unrolled.load_model(tmp_path / "from_keras.keras")
    # New weights, so Keras can only get them from the file unrolled writes.
    for weight in ours.weights:
        weight.assign(rng.normal(scale=0.5, size=weight.shape))
    ours.save(tmp_path / "from_unrolled.keras")
    theirs = keras.saving.load_model(tmp_path / "from_unrolled.keras")
    xs = _inputs(keras_model, rng)
    assert_close(_predict(theirs, xs), _predict(ours, xs), what="Keras on unrolled's .keras")

    ours.save_weights(tmp_path / "w.weights.h5")
    keras_model.load_weights(tmp_path / "w.weights.h5")
    assert_close(_predict(keras_model, xs), _predict(ours, xs),
                 what="Keras load_weights on unrolled's .weights.h5")


def test_a_model_built_in_unrolled_saves_for_keras(keras, tmp_path, rng):
    model = unrolled.Sequential([
        unrolled.Input((5, 3)),
        layers.Bidirectional(layers.GRU(4, return_sequences=True)),
        layers.LSTM(3, return_sequences=True),
        layers.TimeDistributed(layers.Dense(2)),
        layers.RNN([layers.SimpleRNNCell(3), layers.GRUCell(2)]),
        layers.Dense(1),
    ])
    for weight in model.weights:
        weight.assign(rng.normal(scale=0.5, size=weight.shape))
    model.save(tmp_path / "native.keras")
    theirs = keras.saving.load_model(tmp_path / "native.keras")
    x = rng.normal(size=(3, 5, 3)).astype("float32")
    assert_close(theirs.predict(x, verbose=0), model.predict(x), what="Keras on a native model")
    again = unrolled.load_model(tmp_path / "native.keras")
    assert_close(again.predict(x), model.predict(x), what="unrolled round trip")


@pytest.mark.parametrize("keras_model", ["everything", "encoder_decoder", "nested"],
                         indirect=True)
def test_written_weight_tree_matches_keras_exactly(keras_model, tmp_path):
    """Same groups, same datasets, same shapes, same `name` attributes as Keras writes."""
    keras_model.save_weights(tmp_path / "keras.weights.h5")
    keras_model.save(tmp_path / "m.keras")
    unrolled.load_model(tmp_path / "m.keras").save_weights(tmp_path / "ours.weights.h5")

    def tree(path):
        items = {}
        with h5py.File(path, "r") as f:
            f.visititems(lambda name, obj: items.__setitem__(
                name, (getattr(obj, "shape", None), obj.attrs.get("name"))))
        return items

    assert tree(tmp_path / "ours.weights.h5") == tree(tmp_path / "keras.weights.h5")


# ---- tf.keras 2.15 files (committed fixtures) ---------------------------------------------------


def _fixture(name):
    data = np.load(TF2 / f"{name}.npz")
    xs = [data[k] for k in sorted(data) if k.startswith("x")]
    return xs, data["y0"]


@pytest.mark.parametrize("suffix", [".h5", ".keras"])
@pytest.mark.parametrize("name", TF2_MODELS)
def test_tf_keras_2_files_load_with_their_predictions(name, suffix):
    xs, expected = _fixture(name)
    model = unrolled.load_model(TF2 / f"{name}{suffix}")
    assert_close(model.predict(xs if len(xs) > 1 else xs[0]), expected,
                 what=f"tf.keras 2.15 {name}{suffix}")


@pytest.mark.parametrize("weights", ["{}.weights.h5", "{}_weights.h5"])
@pytest.mark.parametrize("name", TF2_MODELS)
def test_tf_keras_2_weight_files_load(name, weights):
    xs, expected = _fixture(name)
    model = unrolled.load_model(TF2 / f"{name}.h5")
    for weight in model.weights:
        weight.assign(np.zeros(weight.shape))
    model.load_weights(TF2 / weights.format(name))
    assert_close(model.predict(xs if len(xs) > 1 else xs[0]), expected,
                 what=f"tf.keras 2.15 {weights.format(name)}")


def test_keras_2_hard_sigmoid_keeps_its_meaning():
    xs, expected = _fixture("hard_sigmoid_lstm")
    model = unrolled.load_model(TF2 / "hard_sigmoid_lstm.h5")
    lstm = model.layers[0]
    assert lstm.cell.recurrent_activation is activations.hard_sigmoid_keras2
    # With Keras 3's hard_sigmoid the same weights give other numbers: the mapping matters.
    lstm.cell.recurrent_activation = activations.hard_sigmoid
    assert np.abs(model.predict(xs[0]) - expected).max() > 1e-3


def test_keras_3_hard_sigmoid_stays_keras_3(keras, tmp_path, rng):
    L = keras.layers
    model = keras.Sequential([keras.Input((5, 3)), L.GRU(3, recurrent_activation="hard_sigmoid")])
    _randomize(model, rng)
    model.save(tmp_path / "m.h5")
    ours = unrolled.load_model(tmp_path / "m.h5")
    assert ours.layers[0].cell.recurrent_activation is activations.hard_sigmoid
    x = rng.normal(size=(2, 5, 3)).astype("float32")
    assert_close(ours.predict(x), model.predict(x, verbose=0))


def test_tf_keras_2_files_fail_in_keras_3_but_load_here(keras):
    """Why this matters: Keras 3 itself refuses these files (time_major, Keras 2 nodes)."""
    with pytest.raises(Exception):
        keras.saving.load_model(TF2 / "seq_lstm.h5", compile=False)
    assert unrolled.load_model(TF2 / "seq_lstm.h5").layers[0].units == 4


# ---- legacy config normalization ----------------------------------------------------------------


def test_keras_2_functional_nodes_become_keras_3_nodes():
    config = {"class_name": "Functional", "config": {"name": "m", "layers": [
        {"class_name": "InputLayer", "name": "a",
         "config": {"batch_input_shape": [None, 4, 2], "name": "a"}, "inbound_nodes": []},
        {"class_name": "LSTM", "name": "dec",
         "config": {"name": "dec", "units": 3, "time_major": False, "implementation": 2,
                    "recurrent_activation": "hard_sigmoid"},
         "inbound_nodes": [[["a", 0, 0, {}], ["enc", 0, 1, {}], ["enc", 0, 2, {}]]]},
        {"class_name": "Concatenate", "name": "cat", "config": {"name": "cat"},
         "inbound_nodes": [[["a", 0, 0, {}], ["dec", 0, 0, {}]]]},
    ], "input_layers": [["a", 0, 0]], "output_layers": [["cat", 0, 0]]}}
    out = _config.normalize_legacy(config, "2.15.0", "test")
    inp, dec, cat = out["config"]["layers"]
    assert inp["config"]["batch_shape"] == [None, 4, 2] and "batch_input_shape" not in inp["config"]
    assert "time_major" not in dec["config"] and "implementation" not in dec["config"]
    assert dec["config"]["recurrent_activation"] == "hard_sigmoid_keras2"
    node = dec["inbound_nodes"][0]
    assert node["args"][0]["config"]["keras_history"] == ["a", 0, 0]
    assert [t["config"]["keras_history"] for t in node["kwargs"]["initial_state"]] == [
        ["enc", 0, 1], ["enc", 0, 2]]
    assert [t["config"]["keras_history"] for t in cat["inbound_nodes"][0]["args"][0]] == [
        ["a", 0, 0], ["dec", 0, 0]]
    assert config["config"]["layers"][1]["config"]["time_major"] is False  # input not mutated
    # The same config from Keras 3 keeps hard_sigmoid as Keras 3 means it.
    out3 = _config.normalize_legacy(config, "3.15.1", "test")
    assert out3["config"]["layers"][1]["config"]["recurrent_activation"] == "hard_sigmoid"


def test_keras_2_sequential_input_shape_on_first_layer_becomes_an_input_layer():
    config = {"class_name": "Sequential", "config": {"name": "s", "layers": [
        {"class_name": "SimpleRNN", "config": {"name": "r", "units": 2,
                                              "batch_input_shape": [None, 5, 3]}}]}}
    layers_ = _config.normalize_legacy(config, "2.4.0", "test")["config"]["layers"]
    assert layers_[0]["class_name"] == "InputLayer"
    assert layers_[0]["config"]["batch_shape"] == [None, 5, 3]
    assert "batch_input_shape" not in layers_[1]["config"]


def test_numbered_vars_sort_numerically(tmp_path):
    with h5py.File(tmp_path / "v.h5", "w") as f:
        group = f.create_group("vars")
        for i in (10, 2, 0, 11, 1):
            group.create_dataset(str(i), data=np.zeros(1))
        from unrolled.saving import _h5
        assert _h5.numbered_keys(group, "test") == ["0", "1", "2", "10", "11"]


# ---- failures leave nothing behind --------------------------------------------------------------


def _small_model():
    model = unrolled.Sequential([unrolled.Input((5, 3)), layers.LSTM(4), layers.Dense(2)])
    for weight in model.weights:
        weight.assign(np.full(weight.shape, 0.25))
    return model


def test_a_failed_save_leaves_no_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    model = _small_model()
    model.save(tmp_path / "m.keras")
    before = (tmp_path / "m.keras").read_bytes()

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(_weights, "write_keras3", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        model.save(tmp_path / "m.keras")
    with pytest.raises(RuntimeError, match="disk full"):
        model.save(tmp_path / "new.keras")
    with pytest.raises(RuntimeError, match="disk full"):
        model.save_weights(tmp_path / "new.weights.h5")
    assert sorted(os.listdir(tmp_path)) == ["m.keras"]
    assert (tmp_path / "m.keras").read_bytes() == before


def test_a_failed_load_weights_changes_nothing(tmp_path):
    source = _small_model()
    source.layers[-1].kernel[...] = 7.0
    source.save_weights(tmp_path / "w.weights.h5")
    # Same first layer, different Dense: the first layer's arrays fit, the last one does not.
    target = unrolled.Sequential([unrolled.Input((5, 3)), layers.LSTM(4), layers.Dense(3)])
    before = [w.numpy() for w in target.weights]
    with pytest.raises(ModelFileError, match=r"shape \(4, 3\).*declares \(4, 2\)"):
        target.load_weights(tmp_path / "w.weights.h5")
    for old, weight in zip(before, target.weights):
        np.testing.assert_array_equal(weight.value, old)


def test_save_rejects_other_suffixes_without_writing(tmp_path):
    model = _small_model()
    with pytest.raises(ValueError, match=r"must end in '\.keras'"):
        model.save(tmp_path / "m.h5")
    with pytest.raises(ValueError, match=r"must end in '\.weights\.h5'"):
        model.save_weights(tmp_path / "m.h5")
    assert os.listdir(tmp_path) == []


def test_saved_archive_has_keras_members(tmp_path):
    _small_model().save(tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as zf:
        assert zf.namelist() == ["metadata.json", "config.json", "model.weights.h5"]
        config = json.loads(zf.read("config.json"))
        assert json.loads(zf.read("metadata.json"))["keras_version"].startswith("3.")
    assert config["class_name"] == "Sequential"
    assert [entry["class_name"] for entry in config["config"]["layers"]] == [
        "InputLayer", "LSTM", "Dense"]


def test_load_model_module_level_function_matches_method(tmp_path):
    model = _small_model()
    save_model(model, tmp_path / "m.keras")
    other = _small_model()
    for weight in other.weights:
        weight.assign(np.zeros(weight.shape))
    load_weights(other, tmp_path / "m.keras")
    x = np.ones((2, 5, 3), dtype="float32")
    assert_close(other.predict(x), model.predict(x))


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_stateful_model_states_are_not_in_the_file(keras, tmp_path, rng, suffix):
    L = keras.layers
    model = keras.Sequential([keras.Input(batch_shape=(2, 5, 3)),
                              L.GRU(3, stateful=True, return_sequences=True),
                              L.LSTM(2, stateful=True)])
    _randomize(model, rng)
    model.save(tmp_path / f"m{suffix}")
    ours = unrolled.load_model(tmp_path / f"m{suffix}")
    assert ours.layers[0].stateful and ours.layers[1].stateful
    x1, x2 = rng.normal(size=(2, 2, 5, 3)).astype("float32")
    # Two calls in a row: the second starts from the first one's final states in both. (Keras's
    # own predict() on JAX does not carry the states from one predict() to the next; calling
    # the model does.)
    for x in (x1, x2):
        assert_close(ours.predict(x), np.asarray(model(x)), what="stateful predictions")
    ours.save_weights(tmp_path / "s.weights.h5")
    with h5py.File(tmp_path / "s.weights.h5", "r") as f:
        assert len(f["layers/gru/cell/vars"]) == 3 and len(f["layers/gru/vars"]) == 0
