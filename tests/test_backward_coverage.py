"""The cells of issue 4's gradient table that test_backward.py left to one method only.

Every layer and option of the list (masks, go_backwards, stacked cells, Bidirectional,
TimeDistributed, Dense, Embedding, Masking, Dropout, dropout and recurrent dropout in training
mode, initial states, stateful layers, whole models) is checked both ways: against JAX
differentiating real Keras (same weights, same dropout masks) and against central finite
differences in float64. Shapes repeat across tests so JAX compiles few programs.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import assert_close
from test_backward import _cotangents, _flat, check_against_keras, numeric_check
from test_parity_keras import make_mask
from unrolled import gradients, layers, losses
from unrolled.models import Input, Model, Sequential
from unrolled.training import Grads

B, T, F = 3, 4, 3


def _draw(rng, shape, rate):
    return (rng.random(shape) > rate).astype("float32") / np.float32(1 - rate)


def _cell_masks(rng, cell, features, rate_in, rate_rec):
    """Dropout masks as Keras's cell uses them: one per gate (implementation 1, when the cell
    has recurrent dropout and several gates), else one shared mask."""
    gates = {"LSTMCell": 4, "GRUCell": 3}.get(type(cell).__name__, 1)
    split = gates > 1 and rate_rec > 0

    def masks(shape, rate):
        if rate == 0:
            return None
        return [_draw(rng, shape, rate) for _ in range(gates)] if split else _draw(rng, shape,
                                                                                      rate)
    return masks((B, features), rate_in), masks((B, cell.units), rate_rec)


# ------------------------------------------------------------------ LSTM / GRU: states and masks

@pytest.mark.parametrize("name", ["LSTM", "GRU"])
@pytest.mark.parametrize("mask_kind,go_backwards,return_sequences",
                         [("post", True, True), ("pre", False, False), ("random", True, False),
                          (None, True, True)])
def test_gated_initial_states_masks_go_backwards_match_jax(keras, rng, name, mask_kind,
                                                           go_backwards, return_sequences):
    """dL/dh0 (and dL/dc0) with every mask kind in both directions."""
    units = 4
    flags = dict(return_sequences=return_sequences, return_state=True, go_backwards=go_backwards)
    x = rng.normal(size=(B, T, F)).astype("float32")
    h0 = [rng.normal(size=(B, units)).astype("float32") for _ in range(2 if name == "LSTM" else 1)]
    check_against_keras(getattr(layers, name)(units, **flags),
                        getattr(keras.layers, name)(units, **flags), x, rng, h0=h0,
                        mask=make_mask(rng, mask_kind, B, T))


@pytest.mark.parametrize("name", ["LSTM", "GRU"])
def test_gated_dropout_with_masks_and_go_backwards_match_jax(keras, rng, name):
    """Recurrent dropout in training mode, with the same masks injected into both, on a padded,
    reversed sequence with initial states."""
    units = 4
    flags = dict(dropout=0.3, recurrent_dropout=0.4, return_sequences=True, return_state=True,
                 go_backwards=True)
    ours, theirs = getattr(layers, name)(units, **flags), getattr(keras.layers, name)(units, **flags)
    x = rng.normal(size=(B, T, F)).astype("float32")
    ours(x)
    h0 = [rng.normal(size=(B, units)).astype("float32") for _ in range(2 if name == "LSTM" else 1)]
    check_against_keras(ours, theirs, x, rng, h0=h0, training=True,
                        mask=make_mask(rng, "random", B, T),
                        masks={(ours.cell, theirs.cell): _cell_masks(rng, ours.cell, F, 0.3, 0.4)})


# ------------------------------------------------------------------ stacked mixed cells

def _mixed(module, dropout=0.0, recurrent_dropout=0.0):
    kw = dict(dropout=dropout, recurrent_dropout=recurrent_dropout)
    return [module.SimpleRNNCell(3, **kw), module.LSTMCell(4, **kw),
            module.GRUCell(2, reset_after=False, **kw), module.GRUCell(3, **kw)]


@pytest.mark.parametrize("mask_kind,go_backwards,return_sequences",
                         [("post", False, True), ("random", True, False)])
def test_mixed_stack_with_states_matches_jax(keras, rng, mask_kind, go_backwards,
                                             return_sequences):
    flags = dict(return_sequences=return_sequences, return_state=True, go_backwards=go_backwards)
    ours, theirs = layers.RNN(_mixed(layers), **flags), keras.layers.RNN(_mixed(keras.layers),
                                                                          **flags)
    x = rng.normal(size=(B, T, F)).astype("float32")
    ours(x)
    for cell in ours.cell.cells:  # a non-zero bias, so its gradient path matters
        cell.bias[...] = rng.normal(size=cell.bias.shape)

    def s(n):
        return rng.normal(size=(B, n)).astype("float32")

    h0 = [[s(3)], [s(4), s(4)], [s(2)], [s(3)]]
    check_against_keras(ours, theirs, x, rng, h0=h0, mask=make_mask(rng, mask_kind, B, T))


def test_mixed_stack_dropout_in_training_matches_jax(keras, rng):
    flags = dict(return_sequences=True, go_backwards=True)
    ours = layers.RNN(_mixed(layers, 0.25, 0.35), **flags)
    theirs = keras.layers.RNN(_mixed(keras.layers, 0.25, 0.35), **flags)
    x = rng.normal(size=(B, T, F)).astype("float32")
    ours(x)
    theirs(x)
    masks, features = {}, F
    for ours_cell, their_cell in zip(ours.cell.cells, theirs.cell.cells):
        masks[(ours_cell, their_cell)] = _cell_masks(rng, ours_cell, features, 0.25, 0.35)
        features = ours_cell.units
    check_against_keras(ours, theirs, x, rng, training=True, masks=masks,
                        mask=make_mask(rng, "post", B, T))


def test_mixed_stack_dropout_finite_differences(rng):
    cells = [layers.SimpleRNNCell(3, dropout=0.3, dtype="float64"),
             layers.LSTMCell(2, recurrent_dropout=0.4, dtype="float64"),
             layers.GRUCell(2, dropout=0.2, recurrent_dropout=0.3, dtype="float64")]
    layer = layers.RNN(cells, return_sequences=True, return_state=True, go_backwards=True,
                       dtype="float64")
    x = rng.normal(size=(B, T, F))
    layer(x)
    masks, features = [], F
    for cell, (r_in, r_rec) in zip(cells, [(0.3, 0.0), (0.0, 0.4), (0.2, 0.3)]):
        m_in, m_rec = _cell_masks(rng, cell, features, r_in, r_rec)
        cast = (lambda m: None if m is None else
                [a.astype("float64") for a in m] if isinstance(m, list) else m.astype("float64"))
        masks.append((cast(m_in), cast(m_rec)))
        features = cell.units

    def set_masks():
        for cell, (m_in, m_rec) in zip(cells, masks):
            cell._dropout_mask, cell._recurrent_dropout_mask = m_in, m_rec

    h0 = [[rng.normal(size=(B, 3))], [rng.normal(size=(B, 2)), rng.normal(size=(B, 2))],
          [rng.normal(size=(B, 2))]]
    numeric_check(layer, x, rng, h0=h0, training=True, set_masks=set_masks,
                  mask=make_mask(rng, "random", B, T))


# ------------------------------------------------------------------ Bidirectional

@pytest.mark.parametrize("name,merge_mode", [("LSTM", "concat"), ("GRU", None),
                                             ("SimpleRNN", "mul")])
def test_bidirectional_masks_and_initial_states_match_jax(keras, rng, name, merge_mode):
    flags = dict(return_sequences=True, return_state=True)
    ours = layers.Bidirectional(getattr(layers, name)(3, **flags), merge_mode=merge_mode)
    theirs = keras.layers.Bidirectional(getattr(keras.layers, name)(3, **flags),
                                        merge_mode=merge_mode)
    x = rng.normal(size=(B, T, F)).astype("float32")
    n = 2 if name == "LSTM" else 1
    h0 = [rng.normal(size=(B, 3)).astype("float32") for _ in range(2 * n)]
    check_against_keras(ours, theirs, x, rng, h0=h0, mask=make_mask(rng, "random", B, T))


def test_bidirectional_dropout_in_training_matches_jax(keras, rng):
    flags = dict(dropout=0.3, recurrent_dropout=0.2, return_sequences=True)
    ours = layers.Bidirectional(layers.GRU(3, **flags))
    theirs = keras.layers.Bidirectional(keras.layers.GRU(3, **flags))
    x = rng.normal(size=(B, T, F)).astype("float32")
    ours(x)
    theirs(x)
    masks = {(ours.forward_layer.cell, theirs.forward_layer.cell):
             _cell_masks(rng, ours.forward_layer.cell, F, 0.3, 0.2),
             (ours.backward_layer.cell, theirs.backward_layer.cell):
             _cell_masks(rng, ours.backward_layer.cell, F, 0.3, 0.2)}
    check_against_keras(ours, theirs, x, rng, training=True, masks=masks,
                        mask=make_mask(rng, "post", B, T))


def test_bidirectional_masks_finite_differences(rng):
    bi = layers.Bidirectional(layers.LSTM(2, return_sequences=True, return_state=True,
                                          dtype="float64"), merge_mode="ave", dtype="float64")
    x = rng.normal(size=(B, T, F))
    bi(x)
    numeric_check(bi, x, rng, h0=[rng.normal(size=(B, 2)) for _ in range(4)],
                  mask=make_mask(rng, "random", B, T))


# ------------------------------------------------------------------ TimeDistributed

def _point_grads(layer, x, d, **kwargs):
    y, cache = layer.forward_train(x, **kwargs)
    grads = Grads()
    d_x = layer.backward(cache, d, grads)
    return y, d_x, grads.for_weights(layer.trainable_weights)


def _keras_point_grads(klayer, x, d, **kwargs):
    import jax

    def f(tv, x):
        ntv = [v.value for v in klayer.non_trainable_variables]
        return (klayer.stateless_call(tv, ntv, x, **kwargs)[0] * d).sum()

    return jax.grad(f, argnums=(0, 1))([v.value for v in klayer.trainable_variables], x)


@pytest.mark.parametrize("inner", ["Dense", "LSTM"])
def test_time_distributed_matches_jax(keras, rng, inner):
    """Point-wise (Dense, merged over batch*time) and per-step (an LSTM over a 4-D input)."""
    if inner == "Dense":
        x = rng.normal(size=(B, T, F)).astype("float32")
        ours = layers.TimeDistributed(layers.Dense(2, activation="tanh"))
        theirs = keras.layers.TimeDistributed(keras.layers.Dense(2, activation="tanh"))
    else:
        x = rng.normal(size=(B, T, 2, F)).astype("float32")
        ours = layers.TimeDistributed(layers.LSTM(2))
        theirs = keras.layers.TimeDistributed(keras.layers.LSTM(2))
    ours(x)
    theirs(x)
    theirs.set_weights(ours.get_weights())
    y = ours(x)
    d = rng.normal(size=y.shape).astype("float32")
    _, d_x, d_w = _point_grads(ours, x, d, training=False)
    k_w, k_x = _keras_point_grads(theirs, x, d)
    assert_close(d_x, np.asarray(k_x), what="TimeDistributed dL/dx")
    assert len(d_w) == len(k_w)
    for w, a, b in zip(ours.trainable_weights, d_w, k_w):
        assert_close(a, np.asarray(b), what=f"TimeDistributed dL/d{w.path}")


def test_time_distributed_rnn_finite_differences(rng):
    td = layers.TimeDistributed(layers.GRU(2, dtype="float64"), dtype="float64")
    x = rng.normal(size=(2, 3, 2, 2))
    td(x)
    _point_fd(td, x, rng)


def _point_fd(layer, x, rng, n_checks=5, **kwargs):
    """Central differences for a layer without states: weights and (float) inputs."""
    y = layer(x, **kwargs)
    d = rng.normal(size=y.shape)
    _, d_x, d_w = _point_grads(layer, x, d, **kwargs)

    def loss():
        return float((layer(x, **kwargs) * d).sum())

    targets = [(w.value, g, w.path) for w, g in zip(layer.trainable_weights, d_w)]
    if d_x is not None:
        targets.append((x, d_x, "x"))
    eps = 1e-6
    for array, grad, what in targets:
        for _ in range(n_checks):
            i = tuple(rng.integers(0, s) for s in array.shape)
            old = array[i]
            array[i] = old + eps
            up = loss()
            array[i] = old - eps
            down = loss()
            array[i] = old
            numeric = (up - down) / (2 * eps)
            assert abs(grad[i] - numeric) <= 1e-6 + 1e-5 * abs(numeric), (
                f"d/d{what}{list(i)}: backward {grad[i]:.8g}, finite differences {numeric:.8g}")


# ------------------------------------------------------------------ Dense, Embedding, Masking, Dropout

def test_dense_and_embedding_finite_differences(rng):
    dense = layers.Dense(3, activation="sigmoid", dtype="float64")
    x = rng.normal(size=(2, 4, 5))
    dense(x)
    _point_fd(dense, x, rng)
    emb = layers.Embedding(6, 3, dtype="float64")
    ids = np.array([[1, 2, 2, 5], [0, 1, 5, 5]])  # repeated ids: their gradients add up
    emb(ids)
    _point_fd(emb, ids, rng)


def test_masking_matches_jax_and_finite_differences(keras, rng):
    x = rng.normal(size=(B, T, F)).astype("float32")
    x[0, 1] = 0.0
    x[2, 3] = 0.0
    ours, theirs = layers.Masking(0.0), keras.layers.Masking(0.0)
    y = ours(x)
    d = rng.normal(size=y.shape).astype("float32")
    _, d_x, _ = _point_grads(ours, x, d)
    _, k_x = _keras_point_grads(theirs, x, d)
    assert_close(d_x, np.asarray(k_x), what="Masking dL/dx")
    assert np.all(d_x[0, 1] == 0) and np.all(d_x[1] == d[1])
    _point_fd(layers.Masking(0.0, dtype="float64"), x.astype("float64"), rng)


def test_dropout_layer_matches_jax_with_the_same_mask(keras, rng):
    """Keras draws its own mask; read it off Keras's output and make ours draw the same one."""
    import jax.numpy as jnp

    rate = 0.4
    x = rng.uniform(0.5, 1.5, size=(B, T, F)).astype("float32")  # no zeros: keep = (y != 0)
    theirs = keras.layers.Dropout(rate, seed=3)
    ntv = [v.value for v in theirs.non_trainable_variables]
    k_y = np.asarray(theirs.stateless_call([], ntv, x, training=True)[0])
    keep = k_y != 0
    assert 0 < keep.mean() < 1

    class Fixed:
        def random(self, shape):
            return np.where(keep, 0.0, 1.0)

    ours = layers.Dropout(rate)
    ours._rng = Fixed()
    y, cache = ours.forward_train(x, training=True)
    assert_close(y, k_y, what="Dropout output")
    d = rng.normal(size=y.shape).astype("float32")
    d_x = ours.backward(cache, d, Grads())
    import jax

    k_x = jax.grad(lambda x: (theirs.stateless_call([], ntv, x, training=True)[0] * d).sum())(
        jnp.asarray(x))
    assert_close(d_x, np.asarray(k_x), what="Dropout dL/dx")
    ours64 = layers.Dropout(rate, dtype="float64")
    ours64._rng = Fixed()
    y, cache = ours64.forward_train(x.astype("float64"), training=True)
    d = rng.normal(size=y.shape)
    d_x = ours64.backward(cache, d, Grads())
    eps, i = 1e-6, (0, 0, 0)
    for i in [tuple(rng.integers(0, s) for s in x.shape) for _ in range(5)]:
        up, down = x.astype("float64"), x.astype("float64")
        up[i] += eps
        down[i] -= eps
        numeric = ((ours64.forward_train(up, training=True)[0]
                    - ours64.forward_train(down, training=True)[0]) * d).sum() / (2 * eps)
        assert abs(d_x[i] - numeric) < 1e-6 + 1e-5 * abs(numeric)


# ------------------------------------------------------------------ stateful layers

@pytest.mark.parametrize("name", ["SimpleRNN", "LSTM", "GRU"])
def test_stateful_second_call_matches_jax(keras, rng, name):
    """On the second call the carried states are Keras non-trainable variables: constants to
    jax.grad. Ours treats them the same way (their gradient is not applied to anything)."""
    import jax

    flags = dict(stateful=True, return_sequences=True)
    ours, theirs = getattr(layers, name)(4, **flags), getattr(keras.layers, name)(4, **flags)
    x1, x2 = (rng.normal(size=(B, T, F)).astype("float32") for _ in range(2))
    ours.build(x1.shape)
    theirs.build(x1.shape)
    theirs.set_weights(ours.get_weights())
    ours(x1)
    theirs(x1)
    for a, b in zip(_flat(ours.states), [v.value for v in theirs.states]):
        assert_close(a, np.asarray(b), what="carried state after the first call")
    carried = [np.array(s) for s in _flat(ours.states)]
    y, cache = ours.forward_train(x2, training=False)
    d = _cotangents(y, rng)
    grads = Grads()
    d_x = ours.backward(cache, d, grads)
    tv = [v.value for v in theirs.trainable_variables]
    ntv = [v.value for v in theirs.non_trainable_variables]
    k_w, k_x = jax.grad(lambda tv, x: (theirs.stateless_call(tv, ntv, x)[0] * d).sum(),
                        argnums=(0, 1))(tv, x2)
    assert_close(d_x, np.asarray(k_x), what="stateful dL/dx")
    for w, a, b in zip(ours.trainable_weights, grads.for_weights(ours.trainable_weights), k_w):
        assert_close(a, np.asarray(b), what=f"stateful dL/d{w.path}")
    assert not np.allclose(_flat(ours.states)[0], carried[0]), "the run carries its state on"


@pytest.mark.parametrize("name", ["LSTM", "GRU"])
def test_stateful_gated_finite_differences(rng, name):
    layer = getattr(layers, name)(3, stateful=True, return_sequences=True, dtype="float64")
    x = rng.normal(size=(2, 4, 2))
    layer.forward_train(x)
    carried = [np.array(s) for s in layer.states]

    def restore():
        layer.states = [s.copy() for s in carried]

    numeric_check(layer, x, rng, set_masks=restore)


# ------------------------------------------------------------------ whole models

def _model_grads_against_keras(keras, ours, theirs, x, y, loss_name, k_loss, mask_check=None):
    import jax

    x_shape = x.shape
    ours.build((None,) + x_shape[1:]) if isinstance(ours, Sequential) else None
    theirs.set_weights(ours.get_weights())
    report = gradients(ours, x, y, loss_name)
    ours_w = report.grads.for_weights(ours.trainable_weights)
    tv = [v.value for v in theirs.trainable_variables]
    ntv = [v.value for v in theirs.non_trainable_variables]

    def f(tv):
        pred, _ = theirs.stateless_call(tv, ntv, x, training=False)
        return k_loss(y, pred)

    k_value, k_w = jax.value_and_grad(f)(tv)
    assert_close(report.loss, np.asarray(k_value), what="loss")
    assert len(ours_w) == len(k_w)
    for w, a, b in zip(ours.trainable_weights, ours_w, k_w):
        assert_close(a, np.asarray(b), what=f"dL/d{w.path}")
    return report


def test_sequential_model_weight_gradients_match_jax(keras, rng):
    def build(L, S):
        return S([L.Masking(0.0), L.LSTM(4, return_sequences=True),
                  L.GRU(3, go_backwards=True), L.Dense(2)])

    x = rng.normal(size=(B, T, F)).astype("float32")
    x[1, 2:] = 0.0  # padded steps, masked all the way through
    y = rng.normal(size=(B, 2)).astype("float32")
    ours, theirs = build(layers, Sequential), build(keras.layers, keras.Sequential)
    theirs.build((None, T, F))
    report = _model_grads_against_keras(keras, ours, theirs, x, y, "mse",
                                        keras.losses.MeanSquaredError())
    assert set(report.hidden) == {ours.layers[1].name, ours.layers[2].name}


def test_functional_model_weight_gradients_match_jax(keras, rng):
    """Embedding with a mask, a Bidirectional LSTM, a TimeDistributed Dense, and a SimpleRNN
    started from the GRU's final state (so the loss reaches the GRU only through that initial
    state), softmax cross-entropy."""
    def build(L, inp_fn, model_fn):
        ids = inp_fn(shape=(T,), dtype="int32")
        e = L.Embedding(7, 3, mask_zero=True)(ids)
        seq = L.Bidirectional(L.LSTM(2, return_sequences=True))(e)
        seq = L.TimeDistributed(L.Dense(3, activation="tanh"))(seq)
        _, h = L.GRU(3, return_state=True)(seq)
        last = L.SimpleRNN(3, go_backwards=True)(seq, initial_state=[h])
        return model_fn(ids, L.Dense(4, activation="softmax")(last))

    ours = build(layers, Input, Model)
    theirs = build(keras.layers, keras.Input, keras.Model)
    ids = rng.integers(1, 7, size=(B, T))
    ids[0, 2:] = 0
    y = np.eye(4, dtype="float32")[rng.integers(0, 4, size=B)]
    _model_grads_against_keras(keras, ours, theirs, ids, y, "categorical_crossentropy",
                               keras.losses.CategoricalCrossentropy())


def test_sequential_model_finite_differences(rng):
    model = Sequential([layers.Masking(0.0, dtype="float64"),
                        layers.Bidirectional(layers.GRU(2, return_sequences=True,
                                                        dtype="float64"), dtype="float64"),
                        layers.TimeDistributed(layers.Dense(2, dtype="float64"),
                                               dtype="float64"),
                        layers.LSTM(2, dtype="float64"),
                        layers.Dense(2, activation="softmax", dtype="float64")])
    x = rng.normal(size=(B, T, F))
    x[2, :2] = 0.0
    y = np.eye(2)[rng.integers(0, 2, size=B)]
    report = gradients(model, x, y, "categorical_crossentropy")
    cce = losses.CategoricalCrossentropy()
    for weight in model.trainable_weights:
        grad = report.weights[weight.path]
        for _ in range(2):
            i = tuple(rng.integers(0, s) for s in weight.shape)
            old = weight.value[i]
            weight.value[i] = old + 1e-6
            up = cce(y, model(x))
            weight.value[i] = old - 1e-6
            down = cce(y, model(x))
            weight.value[i] = old
            numeric = (up - down) / 2e-6
            assert abs(grad[i] - numeric) < 1e-6 + 1e-5 * abs(numeric), weight.path
