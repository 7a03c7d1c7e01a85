"""Training trajectories against real Keras: same initial weights, same optimizer, same batches
(no shuffling), so the loss history and the final weights must agree."""

from __future__ import annotations

import io

import numpy as np
import pytest

from conftest import assert_close
from unrolled import callbacks, layers, optimizers, regularizers
from unrolled.models import Input, Model, Sequential


def _twin(keras, build, x_shape):
    ours = build(layers, Sequential)
    theirs = build(keras.layers, keras.Sequential)
    ours.build((None,) + x_shape)
    theirs.build((None,) + x_shape)
    theirs.set_weights(ours.get_weights())
    return ours, theirs


def _run(keras, build, x, y, optimizer, loss, *, epochs=3, batch_size=None, metrics=None,
         sample_weight=None, tol=1e-4):
    ours, theirs = _twin(keras, build, x.shape[1:])
    name, config = optimizer
    ours.compile(getattr(optimizers, name)(**config), loss, metrics=metrics)
    theirs.compile(getattr(keras.optimizers, name)(**config), loss, metrics=metrics)
    kw = dict(epochs=epochs, batch_size=batch_size or len(x), shuffle=False, verbose=0,
              sample_weight=sample_weight)
    h_ours = ours.fit(x, y, **kw).history
    h_theirs = theirs.fit(x, y, **kw).history
    assert set(h_ours) == set(h_theirs), (sorted(h_ours), sorted(h_theirs))
    for key in h_theirs:
        assert_close(np.array(h_ours[key]), np.array(h_theirs[key]), atol=tol, rtol=tol,
                     what=f"history[{key!r}]")
    for k, (a, b) in enumerate(zip(ours.get_weights(), theirs.get_weights())):
        assert_close(a, b, atol=tol, rtol=tol, what=f"weight {k} after training")
    return ours


def _rnn_regressor(L, S):
    return S([L.SimpleRNN(5, return_sequences=True), L.LSTM(4), L.Dense(2)])


OPTIMIZERS = [("SGD", {"learning_rate": 0.1, "momentum": 0.9, "nesterov": True}),
              ("Adam", {"learning_rate": 0.01}), ("AdamW", {"learning_rate": 0.01}),
              ("RMSprop", {"learning_rate": 0.01, "momentum": 0.5}),
              ("Adagrad", {"learning_rate": 0.1}),
              ("Adam", {"learning_rate": 0.01, "global_clipnorm": 0.1})]


@pytest.mark.parametrize("optimizer", OPTIMIZERS, ids=[f"{n}{sorted(c)}" for n, c in OPTIMIZERS])
def test_regression_trajectory_matches_keras(keras, rng, optimizer):
    x = rng.normal(size=(8, 5, 3)).astype("float32")
    y = rng.normal(size=(8, 2)).astype("float32")
    _run(keras, _rnn_regressor, x, y, optimizer, "mse", metrics=["mae"], batch_size=3)


@pytest.mark.parametrize("loss,head", [("huber", "linear"), ("mae", "linear"),
                                       ("binary_crossentropy", "sigmoid")])
def test_losses_in_training_match_keras(keras, rng, loss, head):
    x = rng.normal(size=(6, 4, 2)).astype("float32")
    y = (rng.random((6, 1)) > 0.5).astype("float32")

    def build(L, S):
        return S([L.GRU(4), L.Dense(1, activation=head)])

    metrics = ["accuracy"] if head == "sigmoid" else None
    _run(keras, build, x, y, ("Adam", {"learning_rate": 0.02}), loss, metrics=metrics)


def test_sequence_classifier_with_embedding_matches_keras(keras, rng):
    x = rng.integers(1, 10, size=(6, 5))
    x[:2, 3:] = 0  # padding, masked
    y = rng.integers(0, 3, size=(6,))

    def build(L, S):
        return S([L.Embedding(10, 4, mask_zero=True), L.LSTM(5), L.Dropout(0.0),
                  L.Dense(3, activation="softmax")])

    _run(keras, build, x, y, ("RMSprop", {"learning_rate": 0.01}),
         "sparse_categorical_crossentropy", metrics=["accuracy"], epochs=4)


def test_regularizers_and_sample_weight_match_keras(keras, rng):
    x = rng.normal(size=(6, 4, 2)).astype("float32")
    y = rng.normal(size=(6, 3)).astype("float32")
    sw = rng.uniform(0.5, 2, size=6).astype("float32")

    def build(L, S):
        R = keras.regularizers if L is keras.layers else regularizers
        return S([L.SimpleRNN(4, kernel_regularizer=R.L2(0.01),
                              recurrent_regularizer=R.L1(0.001)),
                  L.Dense(3, bias_regularizer=R.L1L2(0.01, 0.02))])

    _run(keras, build, x, y, ("SGD", {"learning_rate": 0.05}), "mse", sample_weight=sw)


def test_functional_model_trains(rng):
    inp = Input(shape=(5, 3))
    seq = layers.SimpleRNN(4, return_sequences=True)(inp)
    out = layers.Dense(1)(layers.GRU(3)(seq))
    model = Model(inp, out)
    model.compile(optimizers.Adam(0.02), "mse")
    x = rng.normal(size=(32, 5, 3)).astype("float32")
    y = x.mean(axis=(1, 2))[:, None]
    first = model.evaluate(x, y, verbose=0)
    model.fit(x, y, epochs=20, batch_size=8, verbose=0)
    assert model.evaluate(x, y, verbose=0) < 0.5 * first


def test_train_on_batch_and_evaluate_return_forms(rng):
    model = Sequential([layers.SimpleRNN(3), layers.Dense(1)])
    model.compile("sgd", "mse", metrics=["mae"])
    x = rng.normal(size=(4, 3, 2)).astype("float32")
    y = rng.normal(size=(4, 1)).astype("float32")
    loss, mae = model.train_on_batch(x, y)
    assert np.isfinite(loss) and np.isfinite(mae)
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    assert set(logs) == {"loss", "mae"}


def test_fit_errors(rng):
    model = Sequential([layers.SimpleRNN(3), layers.Dense(1)])
    x = rng.normal(size=(4, 3, 2)).astype("float32")
    with pytest.raises(RuntimeError, match="compile"):
        model.fit(x, np.zeros((4, 1)))
    model.compile("adam", "mse")
    with pytest.raises(ValueError, match="samples"):
        model.fit(x, np.zeros((5, 1)), verbose=0)


def test_callbacks_early_stopping_scheduler_checkpoint(rng, tmp_path):
    model = Sequential([layers.SimpleRNN(3), layers.Dense(1)])
    model.compile(optimizers.SGD(0.0), "mse")  # no learning: val_loss never improves
    x = rng.normal(size=(10, 3, 2)).astype("float32")
    y = rng.normal(size=(10, 1)).astype("float32")
    rates = []
    sched = callbacks.LearningRateScheduler(lambda epoch, lr: 0.0 * epoch)
    spy = callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: rates.append(logs["learning_rate"]))
    stop = callbacks.EarlyStopping(monitor="val_loss", patience=2)
    ckpt = callbacks.ModelCheckpoint(str(tmp_path / "best.weights.h5"), save_best_only=True,
                                     save_weights_only=True)
    history = model.fit(x, y, epochs=10, validation_split=0.2, verbose=0,
                        callbacks=[sched, stop, ckpt, spy])
    assert len(history.history["loss"]) == 3, "stops after `patience` epochs without progress"
    assert rates == [0.0, 0.0, 0.0]
    assert (tmp_path / "best.weights.h5").exists()


def test_stateful_training_with_resets(rng):
    model = Sequential([Input(batch_shape=(2, 4, 1)), layers.SimpleRNN(3, stateful=True),
                        layers.Dense(1)])
    model.compile("adam", "mse")
    x = rng.normal(size=(4, 4, 1)).astype("float32")
    y = rng.normal(size=(4, 1)).astype("float32")
    resets = []
    reset = callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: (model.reset_states(), resets.append(epoch)))
    model.fit(x, y, batch_size=2, epochs=3, shuffle=False, verbose=0, callbacks=[reset])
    assert resets == [0, 1, 2]
    assert not np.allclose(model.layers[0].states[0], 0), "states carried between batches"


def test_progress_output_log_and_terminal(rng, capsys):
    model = Sequential([layers.SimpleRNN(2), layers.Dense(1)])
    model.compile("adam", "mse", metrics=["mae"])
    x = rng.normal(size=(8, 3, 2)).astype("float32")
    y = rng.normal(size=(8, 1)).astype("float32")
    model.fit(x, y, epochs=2, batch_size=4, verbose=1)
    out = capsys.readouterr().out
    assert "\r" not in out, "not a terminal: one plain line per epoch"
    assert out.count("\n") == 2 and "Epoch 2/2" in out and "mae:" in out

    class Tty(io.StringIO):
        def isatty(self):
            return True

    stream = Tty()
    bar = callbacks.ProgbarLogger(1, stream=stream)
    bar.set_params({"epochs": 1, "steps": 2})
    bar.on_epoch_begin(0)
    bar.on_train_batch_end(0, {"loss": 1.0})
    bar.on_train_batch_end(1, {"loss": 0.5})
    bar.on_epoch_end(0, {"loss": 0.5})
    text = stream.getvalue()
    assert text.startswith("Epoch 1/1\n") and text.count("\r") == 3 and "2/2" in text


def test_masked_sequence_loss_matches_keras(keras, rng):
    """Padded steps (Embedding mask_zero) are left out of the loss, as Keras does for a masked
    output. Keras's compiled metrics (on JAX) count them in fit but not in evaluate; so do
    ours."""
    x = rng.integers(1, 8, size=(6, 5))
    x[:3, 3:] = 0
    y = rng.integers(0, 4, size=(6, 5))

    def build(L, S):
        return S([L.Embedding(8, 3, mask_zero=True), L.GRU(4, return_sequences=True),
                  L.Dense(4)])

    loss = "sparse_categorical_crossentropy"
    ours, theirs = _twin(keras, build, x.shape[1:])
    from unrolled import losses
    ours.compile(optimizers.Adam(0.02), losses.SparseCategoricalCrossentropy(from_logits=True),
                 metrics=["accuracy"])
    theirs.compile(keras.optimizers.Adam(0.02),
                   keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                   metrics=["accuracy"])
    kw = dict(epochs=3, batch_size=6, shuffle=False, verbose=0)
    h_ours, h_theirs = ours.fit(x, y, **kw).history, theirs.fit(x, y, **kw).history
    for key in h_theirs:
        assert_close(np.array(h_ours[key]), np.array(h_theirs[key]), atol=1e-4, rtol=1e-4,
                     what=f"history[{key!r}] ({loss})")
    for a, b in zip(ours.get_weights(), theirs.get_weights()):
        assert_close(a, b, atol=1e-4, rtol=1e-4, what="weights")
    assert_close(ours.evaluate(x, y, verbose=0), np.array(theirs.evaluate(x, y, verbose=0)),
                 atol=1e-4, rtol=1e-4, what="evaluate")
