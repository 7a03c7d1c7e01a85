"""Dense, Embedding, Masking and Dropout against real Keras 3 (JAX): same weights, same numbers,
same shapes, masks and configs; and the errors a person gets for bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from conftest import assert_close
from unrolled import layers


def keras_config(config):
    """A config with every DTypePolicy dict written as its dtype name, as unrolled writes it."""
    if isinstance(config, dict):
        if config.get("class_name") in ("DTypePolicy", "FloatDTypePolicy"):
            return config["config"]["name"]
        return {k: keras_config(v) for k, v in config.items()}
    if isinstance(config, (list, tuple)):
        return type(config)(keras_config(v) for v in config)
    return config


def assert_same_config(ours, theirs):
    ours_cfg, theirs_cfg = keras_config(ours.get_config()), keras_config(theirs.get_config())
    assert sorted(ours_cfg) == sorted(theirs_cfg), (
        f"keys differ: only ours {set(ours_cfg) - set(theirs_cfg)}, "
        f"only Keras {set(theirs_cfg) - set(ours_cfg)}")
    for key in theirs_cfg:
        assert ours_cfg[key] == theirs_cfg[key], f"{key}: {ours_cfg[key]!r} != {theirs_cfg[key]!r}"


def twins(ours, theirs, x):
    """Build both on `x` and give Keras unrolled's weights."""
    ours(x)
    theirs(x)
    theirs.set_weights(ours.get_weights())


# ---------------------------------------------------------------------------------------- Dense


@pytest.mark.parametrize("shape", [(5, 3), (4, 6, 3), (2, 3, 4, 5)])
@pytest.mark.parametrize("activation", [None, "relu", "tanh", "softmax"])
@pytest.mark.parametrize("use_bias", [True, False])
def test_dense_parity(keras, rng, shape, activation, use_bias):
    units = int(rng.integers(2, 7))
    ours = layers.Dense(units, activation=activation, use_bias=use_bias,
                        bias_initializer="random_normal")
    theirs = keras.layers.Dense(units, activation=activation, use_bias=use_bias)
    x = rng.normal(size=shape).astype("float32")
    twins(ours, theirs, x)
    assert [w.name for w in ours.weights] == (["kernel", "bias"] if use_bias else ["kernel"])
    assert_close(ours(x), np.asarray(theirs(x)))
    for batch in (None, shape[0]):
        assert ours.compute_output_shape((batch, *shape[1:])) == \
            theirs.compute_output_shape((batch, *shape[1:]))


@pytest.mark.parametrize("activation", [None, "softmax"])
def test_dense_over_a_time_major_view_matches_keras(keras, rng, activation):
    """A recurrent layer's `return_sequences` output is a (batch, timesteps, features) view of
    a time-major array; Dense multiplies it where it lies. The numbers are Keras's, and
    training through it gives the gradients a contiguous copy gives."""
    from unrolled.training import Grads

    ours = layers.Dense(5, activation=activation, bias_initializer="random_normal")
    theirs = keras.layers.Dense(5, activation=activation)
    time_major = rng.normal(size=(7, 4, 3)).astype("float32")          # (timesteps, batch, f)
    x = time_major.transpose(1, 0, 2)                                   # (batch, timesteps, f)
    assert not x.flags.c_contiguous
    twins(ours, theirs, np.ascontiguousarray(x))
    assert_close(ours(x), np.asarray(theirs(np.ascontiguousarray(x))))
    d = rng.normal(size=(4, 7, 5)).astype("float32")
    results = []
    for given in (x, np.ascontiguousarray(x)):
        y, cache = ours.forward_train(given)
        grads = Grads()
        d_x = ours.backward(cache, d, grads)
        results.append([y, d_x, *grads.for_weights(ours.trainable_weights)])
    for a, b in zip(*results):
        assert_close(a, b, atol=1e-6, rtol=1e-6)


def test_dense_passes_mask_through(keras, rng):
    x = rng.normal(size=(2, 4, 3)).astype("float32")
    mask = rng.random((2, 4)) < 0.5
    ours, theirs = layers.Dense(2), keras.layers.Dense(2)
    twins(ours, theirs, x)
    np.testing.assert_array_equal(ours.compute_mask(x, mask), np.asarray(theirs.compute_mask(x, mask)))
    assert ours.compute_mask(x, None) is None


def test_dense_config_matches_keras(keras):
    ours = layers.Dense(3, activation="relu", use_bias=False, name="d")
    theirs = keras.layers.Dense(3, activation="relu", use_bias=False, name="d")
    assert_same_config(ours, theirs)
    rebuilt = layers.Dense.from_config(ours.get_config())
    assert rebuilt.get_config() == ours.get_config()
    # Keras reads unrolled's config back into the same layer.
    assert_same_config(ours, keras.layers.Dense.from_config(ours.get_config()))
    with_reg = layers.Dense(3, activity_regularizer="l2", name="d")
    assert with_reg.get_config()["activity_regularizer"] == "l2"


def test_dense_errors():
    dense = layers.Dense(2, name="d")
    dense(np.ones((4, 3)))
    with pytest.raises(ValueError, match=r"built for 3 input features, but `inputs` has 5"):
        dense(np.ones((4, 5)))
    with pytest.raises(ValueError, match=r"at least 2 axes .*\(x\[None\]\)"):
        layers.Dense(2)(np.ones(3))
    with pytest.raises(ValueError, match=r"`lora_rank=4` asks for LoRA adapters"):
        layers.Dense(2, lora_rank=4)
    with pytest.raises(ValueError, match=r"`quantization_config=.*quantized weights"):
        layers.Dense(2, quantization_config={"mode": "int8"})
    with pytest.raises(ValueError, match=r"`units` must be a positive integer"):
        layers.Dense(0)
    with pytest.raises(TypeError, match=r"`inputs` must hold numbers"):
        layers.Dense(2)(np.array([["a", "b"]]))


# ------------------------------------------------------------------------------------ Embedding


@pytest.mark.parametrize("shape", [(4,), (3, 6), (2, 3, 4)])
@pytest.mark.parametrize("mask_zero", [False, True])
def test_embedding_parity(keras, rng, shape, mask_zero):
    input_dim, output_dim = int(rng.integers(2, 12)), int(rng.integers(1, 6))
    ours = layers.Embedding(input_dim, output_dim, mask_zero=mask_zero)
    theirs = keras.layers.Embedding(input_dim, output_dim, mask_zero=mask_zero)
    ids = rng.integers(0, input_dim, size=shape)
    twins(ours, theirs, ids)
    assert_close(ours(ids), np.asarray(theirs(ids)))
    ours_mask, theirs_mask = ours.compute_mask(ids), theirs.compute_mask(ids)
    if mask_zero:
        np.testing.assert_array_equal(ours_mask, np.asarray(theirs_mask))
    else:
        assert ours_mask is None and theirs_mask is None
    assert ours.supports_masking == theirs.supports_masking
    assert ours.compute_output_shape((None, *shape[1:])) == \
        theirs.compute_output_shape((None, *shape[1:]))
    # Whole-number floats and other integer widths are ids too.
    assert_close(ours(ids.astype("float32")), np.asarray(theirs(ids)))
    assert_close(ours(ids.astype("uint8")), np.asarray(theirs(ids)))


def test_embedding_initializer_and_config(keras):
    ours = layers.Embedding(7, 4, mask_zero=True, name="e")
    theirs = keras.layers.Embedding(7, 4, mask_zero=True, name="e")
    assert_same_config(ours, theirs)
    assert_same_config(ours, keras.layers.Embedding.from_config(ours.get_config()))
    ours(np.array([[1]]))
    table = ours.embeddings
    assert table.shape == (7, 4) and np.abs(table).max() <= 0.05  # "uniform": U(-0.05, 0.05)
    rebuilt = layers.Embedding.from_config(ours.get_config())
    assert rebuilt.get_config() == ours.get_config()


def test_embedding_weights_argument_and_input_length():
    table = np.arange(12, dtype="float32").reshape(4, 3)
    emb = layers.Embedding(4, 3, weights=[table])
    np.testing.assert_array_equal(emb(np.array([[3, 0]])), table[[[3, 0]]])
    with pytest.warns(UserWarning, match="input_length.*deprecated"):
        emb = layers.Embedding(4, 3, input_length=10)
    assert "input_length" not in emb.get_config()


def test_embedding_errors():
    emb = layers.Embedding(5, 2, name="e")
    with pytest.raises(ValueError, match=r"id 5 at inputs\[0, 1\] is out of range.*\[0, 4\]"):
        emb(np.array([[1, 5, 2]]))
    with pytest.raises(ValueError, match=r"id -1 at inputs\[1\] is out of range"):
        emb(np.array([0, -1]))
    with pytest.raises(TypeError, match=r"not whole numbers \(inputs\[0, 1\] = .*1\.5"):
        emb(np.array([[1.0, 1.5]]))
    with pytest.raises(TypeError, match=r"must be integer ids, got an array of dtype <U"):
        emb(np.array(["cat"]))
    with pytest.raises(ValueError, match="LoRA"):
        layers.Embedding(5, 2, lora_rank=2)
    with pytest.raises(ValueError, match="`output_dim` must be a positive integer"):
        layers.Embedding(5, 0)


@pytest.mark.parametrize("padding", ["post", "pre"])
def test_embedding_mask_flows_into_rnn_like_keras(keras, rng, padding):
    """Embedding(mask_zero) -> SimpleRNN: Keras propagates the mask implicitly in a model; in
    unrolled it travels explicitly, emb.compute_mask -> rnn(mask=)."""
    batch, timesteps, vocab, dim, units = 4, 6, 9, 3, 5
    ids = rng.integers(1, vocab, size=(batch, timesteps))
    lengths = np.array([timesteps, 1, 3, 0])
    for b, n in enumerate(lengths):
        if padding == "post":
            ids[b, n:] = 0
        else:
            ids[b, :timesteps - n] = 0
    emb = layers.Embedding(vocab, dim, mask_zero=True)
    rnn = layers.SimpleRNN(units, return_sequences=True, bias_initializer="random_normal")
    mask = emb.compute_mask(ids)
    ours = rnn(emb(ids), mask=mask)

    model = keras.Sequential([keras.Input(shape=(timesteps,), dtype="int32"),
                              keras.layers.Embedding(vocab, dim, mask_zero=True),
                              keras.layers.SimpleRNN(units, return_sequences=True)])
    model.layers[0].set_weights(emb.get_weights())
    model.layers[1].set_weights(rnn.get_weights())
    assert_close(ours, np.asarray(model(ids)), what="embedding -> rnn")
    np.testing.assert_array_equal(rnn.compute_mask(None, mask), mask)


@pytest.mark.parametrize("padding", ["post", "pre"])
@pytest.mark.parametrize("kind", ["LSTM", "GRU", "SimpleRNN"])
def test_a_padded_batch_in_spans_matches_keras(keras, rng, monkeypatch, padding, kind):
    """A padded batch runs in spans of its valid rows (unrolled.kernels._runs, forced here at
    a small shape) through a model as Keras builds it: Embedding(mask_zero) ->
    Bidirectional(return_sequences) -> Bidirectional -> Dense. Keras's outputs."""
    from unrolled import Input, Sequential
    from unrolled.kernels import _dispatch, _runs

    monkeypatch.setattr(_runs, "RATE", 1.0)
    monkeypatch.setattr(_runs, "SPAN_SECONDS", 0.0)
    runs, real = [], _dispatch._by_spans
    monkeypatch.setattr(_dispatch, "_by_spans", lambda *args: (runs.append(1), real(*args))[1])
    batch, timesteps, vocab = 9, 12, 30
    ids = rng.integers(1, vocab, size=(batch, timesteps))
    lengths = np.array([12, 0, 1, 5, 7, 12, 3, 9, 2])
    for b, n in enumerate(lengths):
        if padding == "post":
            ids[b, n:] = 0
        else:
            ids[b, :timesteps - n] = 0

    def build(L, make_input):
        return [make_input(shape=(timesteps,), dtype="int32"),
                L.Embedding(vocab, 4, mask_zero=True),
                L.Bidirectional(getattr(L, kind)(6, return_sequences=True)),
                L.Bidirectional(getattr(L, kind)(5)), L.Dense(2)]

    ours = Sequential(build(layers, Input))
    theirs = keras.Sequential(build(keras.layers, keras.Input))
    theirs.set_weights(ours.get_weights())
    assert_close(ours.predict(ids), np.asarray(theirs(ids)), what=f"{kind} {padding}-padded")
    assert len(runs) == 4                           # both directions of both layers in spans


# -------------------------------------------------------------------------------------- Masking


@pytest.mark.parametrize("mask_value", [0.0, -1.0, 0.1])
def test_masking_parity_and_into_rnn(keras, rng, mask_value):
    batch, timesteps, features, units = 4, 5, 3, 4
    x = rng.normal(size=(batch, timesteps, features)).astype("float32")
    x[1, 3:] = mask_value
    x[2, :2] = mask_value
    x[3, 1, 0] = mask_value  # one feature at the mask value: the step stays real
    ours, theirs = layers.Masking(mask_value), keras.layers.Masking(mask_value)
    assert_close(ours(x), np.asarray(theirs(x)))
    expected_mask = np.asarray(theirs.compute_mask(x))
    np.testing.assert_array_equal(ours.compute_mask(x), expected_mask)
    assert not expected_mask[1, 3:].any() and not expected_mask[2, :2].any()
    assert ours.compute_output_shape((None, timesteps, features)) == \
        theirs.compute_output_shape((None, timesteps, features))

    rnn = layers.SimpleRNN(units, bias_initializer="random_normal")
    out = rnn(ours(x), mask=ours.compute_mask(x))
    model = keras.Sequential([keras.Input(shape=(timesteps, features)),
                              keras.layers.Masking(mask_value), keras.layers.SimpleRNN(units)])
    model.layers[1].set_weights(rnn.get_weights())
    assert_close(out, np.asarray(model(x)), what="masking -> rnn")


def test_masking_config_and_errors(keras):
    assert_same_config(layers.Masking(0.5, name="m"), keras.layers.Masking(0.5, name="m"))
    with pytest.raises(TypeError, match="`mask_value` must be a number"):
        layers.Masking("pad")


# -------------------------------------------------------------------------------------- Dropout


def test_dropout_inference_is_identity(keras, rng):
    x = rng.normal(size=(3, 4, 5)).astype("float32")
    ours, theirs = layers.Dropout(0.5), keras.layers.Dropout(0.5)
    np.testing.assert_array_equal(ours(x), x)
    np.testing.assert_array_equal(ours(x, training=False), np.asarray(theirs(x, training=False)))
    assert ours.compute_output_shape((None, 4, 5)) == theirs.compute_output_shape((None, 4, 5))
    mask = rng.random((3, 4)) < 0.5
    np.testing.assert_array_equal(ours.compute_mask(x, mask), np.asarray(theirs.compute_mask(x, mask)))


@pytest.mark.parametrize("rate", [0.2, 0.5, 0.8])
def test_dropout_training_statistics_match_keras(keras, rate):
    x = np.full((200, 500), 3.0, dtype="float32")
    ours = layers.Dropout(rate, seed=1)(x, training=True)
    theirs = np.asarray(keras.layers.Dropout(rate, seed=1)(x, training=True))
    for y in (ours, theirs):
        kept = y != 0
        # 100 000 Bernoulli draws: the kept fraction is within 5 standard deviations of 1 - rate.
        assert abs(kept.mean() - (1 - rate)) < 5 * np.sqrt(rate * (1 - rate) / x.size)
        np.testing.assert_allclose(y[kept], 3.0 / (1 - rate), rtol=1e-6)
    assert ours.dtype == np.float32


def test_dropout_noise_shape_rate_edges_and_seed():
    x = np.ones((4, 6, 3), dtype="float32")
    y = layers.Dropout(0.5, noise_shape=(None, 1, 3), seed=3)(x, training=True)
    assert (y == y[:, :1]).all(), "noise_shape (batch, 1, features): same mask at every step"
    np.testing.assert_array_equal(layers.Dropout(1.0)(x, training=True), 0)
    np.testing.assert_array_equal(layers.Dropout(0.0)(x, training=True), x)
    a = layers.Dropout(0.5, seed=7)(x, training=True)
    b = layers.Dropout(0.5, seed=7)(x, training=True)
    np.testing.assert_array_equal(a, b)
    drop = layers.Dropout(0.5, seed=7)
    assert not np.array_equal(drop(x, training=True), drop(x, training=True)), "fresh mask per call"


def test_dropout_config_and_errors(keras):
    ours = layers.Dropout(0.25, noise_shape=(None, 1, 4), seed=2, name="dr")
    theirs = keras.layers.Dropout(0.25, noise_shape=(None, 1, 4), seed=2, name="dr")
    assert_same_config(ours, theirs)
    assert layers.Dropout.from_config(ours.get_config()).get_config() == ours.get_config()
    with pytest.raises(ValueError, match=r"`rate` must be a number between 0 and 1.*1\.5"):
        layers.Dropout(1.5)
    with pytest.raises(ValueError, match=r"noise_shape\[1\] = 0"):
        layers.Dropout(0.5, noise_shape=(None, 0))
    with pytest.raises(ValueError, match="does not broadcast"):
        layers.Dropout(0.5, noise_shape=(None, 2, 3))(np.ones((4, 6, 3)), training=True)
    with pytest.raises(ValueError, match="has 2 entries but the input has 3 axes"):
        layers.Dropout(0.5, noise_shape=(None, 3))(np.ones((4, 6, 3)), training=True)


def test_reprs():
    dense = layers.Dense(2, activation="relu")
    dense(np.ones((1, 3)))
    assert repr(dense) == "Dense(units=2, activation=relu, kernel (3, 2), bias (2,))"
    assert repr(layers.Embedding(5, 2, mask_zero=True)) == \
        "Embedding(input_dim=5, output_dim=2, mask_zero=True, not built)"
    assert repr(layers.Masking(-1.0)) == "Masking(mask_value=-1.0)"
    assert repr(layers.Dropout(0.5)) == "Dropout(rate=0.5)"


def test_config_round_trip_is_silent():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for layer in (layers.Dense(2), layers.Embedding(3, 2), layers.Masking(), layers.Dropout(0.1)):
            type(layer).from_config(layer.get_config())


class _Limit:
    """A stand-in for the one-BLAS-thread limit: counts how often and how deep it is held."""
    depth = entered = 0

    def __enter__(self):
        type(self).depth += 1
        type(self).entered += 1

    def __exit__(self, *exc):
        type(self).depth -= 1


def test_dense_products_keep_off_blas_threads_while_row_blocks_run(monkeypatch, rng):
    """While a recurrent layer has run in blocks of rows within the last `BLOCKS_RECENT`
    seconds, a Dense layer's large products (forward, weight gradient, input gradient) run in
    blocks on the pool's threads, each under a one-BLAS-thread limit, and its mid-size ones
    under that limit on the calling thread: OpenBLAS's own threads would spin for about 0.1 s
    afterwards on the CPUs the blocks need. Otherwise NumPy runs them as it would. The
    numbers are the plain products' either way."""
    import math
    import time

    from unrolled.kernels import _threads
    from unrolled.training import Grads

    monkeypatch.setattr(_threads, "_one_thread", _Limit)
    monkeypatch.setattr(_threads, "blas_controllers", lambda: ["stand-in"])
    monkeypatch.setattr(_threads, "cores", lambda: 2)
    monkeypatch.setattr(_threads, "MODE", "auto")
    calls = []                               # (product, blocks, limits held inside it)
    for name in ("_matmul_rows", "_at_b_columns"):
        real = getattr(_threads, name)

        def counted(*args, _real=real, _name=name):
            calls.append((_name, args[-1] - args[-2], _Limit.depth))
            return _real(*args)

        monkeypatch.setattr(_threads, name, counted)

    def run(layer, x):
        y, cache = layer.forward_train(x)
        grads = Grads()
        d_x = layer.backward(cache, np.ones_like(y), grads)
        return [y, d_x, *grads.for_weights(layer.trainable_weights)]

    large = layers.Dense(64)                             # (2048, 40) @ (40, 64): 5.2M
    x = rng.normal(size=(32, 64, 40)).astype("float32")
    assert 32 * 64 * 40 * 64 >= _threads.PRODUCT_WORK_MIN
    mid = layers.Dense(300)                              # (32, 40) @ (40, 300): 0.38M
    x_mid = rng.normal(size=(32, 40)).astype("float32")
    assert _threads.STEP_WORK_MIN < 32 * 40 * 300 < _threads.PRODUCT_WORK_MIN

    monkeypatch.setattr(_threads, "_blocks_ran", -math.inf)        # no blocks lately
    alone = run(large, x) + run(mid, x_mid)
    assert _Limit.entered == 0               # whole, on this thread, BLAS as it is
    assert calls == [("_at_b_columns", 64, 0), ("_at_b_columns", 300, 0)]
    calls.clear()

    monkeypatch.setattr(_threads, "_blocks_ran", time.monotonic())  # blocks just ran
    beside = run(large, x)
    assert [name for name, _, _ in calls] == (["_matmul_rows"] * 2 + ["_at_b_columns"] * 2
                                              + ["_matmul_rows"] * 2)
    assert all(depth >= 1 for _, _, depth in calls)
    assert sorted(size for _, size, _ in calls) == [32, 32] + [1024] * 4   # halves
    calls.clear()
    entered = _Limit.entered
    beside += run(mid, x_mid)
    assert _Limit.entered == entered + 3     # three products whole, each on one BLAS thread
    assert calls == [("_at_b_columns", 300, 1)]
    assert _Limit.depth == 0
    for a, b in zip(alone, beside):          # sums in another order: float32 roundings
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * np.abs(b).max())
    W, b = large.get_weights()
    np.testing.assert_allclose(beside[0], x @ W + b, rtol=1e-5, atol=1e-5)
