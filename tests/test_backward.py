"""Backpropagation through time, checked two ways: against JAX differentiating real Keras
(`stateless_call` under `jax.grad`, same weights, same dropout masks) and against central finite
differences in float64.

Each check uses a random cotangent on every output (`L = sum(d_out * out)`), so every path of the
backward pass is exercised: return_sequences, return_state, go_backwards, masks, initial states,
stacks, unroll, zero_output_for_mask, dropout and recurrent dropout.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from conftest import assert_close
from test_parity_keras import make_mask
from unrolled import layers
from unrolled.training import Grads, gradients


def _flat(tree):
    if isinstance(tree, (list, tuple)):
        return [leaf for item in tree for leaf in _flat(item)]
    return [tree]


def _unflat(leaves, like):
    leaves = list(leaves)

    def take(node):
        if isinstance(node, (list, tuple)):
            return [take(n) for n in node]
        return leaves.pop(0)
    return take(like)


def _cotangents(result, rng):
    return _unflat([rng.normal(size=np.shape(r)).astype(r.dtype) for r in _flat(result)], result)


def ours_grads(layer, x, d_result, **kwargs):
    result, cache = layer.forward_train(x, training=kwargs.pop("training", False), **kwargs)
    grads = Grads()
    d_x = layer.backward(cache, tuple(d_result) if isinstance(result, tuple) else d_result, grads)
    return result, d_x, grads.for_weights(layer.trainable_weights), cache["d_initial_state"]


def keras_grads(klayer, x, d_result, h0=None, masks=None, **kwargs):
    """dL/d(weights, x, h0) for L = sum(d_result * klayer(x)), by JAX through Keras."""
    import jax
    import jax.numpy as jnp

    tv = [v.value for v in klayer.trainable_variables]
    ntv = [v.value for v in klayer.non_trainable_variables]

    def f(tv, x, h0):
        if masks is not None:
            for cell, (m_in, m_rec) in masks.items():
                cell._dropout_mask, cell._recurrent_dropout_mask = m_in, m_rec
        kw = dict(kwargs)
        if h0 is not None:
            kw["initial_state"] = h0
        out, _ = klayer.stateless_call(tv, ntv, x, **kw)
        return sum(jnp.sum(o * d) for o, d in zip(_flat(out), _flat(d_result)))

    return jax.grad(f, argnums=(0, 1, 2))(tv, jnp.asarray(x), h0)


def check_against_keras(ours, theirs, x, rng, h0=None, mask=None, training=False, masks=None):
    kwargs = {} if mask is None else {"mask": mask}
    ours(x, **kwargs)
    theirs(x, **kwargs)
    theirs.set_weights(ours.get_weights())
    if masks:
        for (our_cell, their_cell), pair in masks.items():
            our_cell._dropout_mask, our_cell._recurrent_dropout_mask = pair
        their_masks = {their_cell: pair for (_, their_cell), pair in masks.items()}
    else:
        their_masks = None
    result = ours.forward_train(x, initial_state=h0, training=training, **kwargs)[0]
    if masks:  # forward_train cleared them; hand the same masks to the backward run
        for (our_cell, _), pair in masks.items():
            our_cell._dropout_mask, our_cell._recurrent_dropout_mask = pair
    d_result = _cotangents(result, rng)
    _, d_x, d_w, d_h0 = ours_grads(ours, x, d_result, initial_state=h0, training=training,
                                   **kwargs)
    k_w, k_x, k_h0 = keras_grads(theirs, x, d_result, h0=h0, masks=their_masks,
                                 training=training, **kwargs)
    assert_close(d_x, np.asarray(k_x), what="dL/dx")
    assert len(d_w) == len(k_w)
    for w, a, b in zip(ours.trainable_weights, d_w, k_w):
        assert_close(a, np.asarray(b), what=f"dL/d{w.path}")
    if h0 is not None:
        for a, b in zip(_flat(d_h0), _flat(k_h0)):
            assert_close(a, np.asarray(b), what="dL/dh0")


@pytest.mark.parametrize("return_sequences,go_backwards", list(itertools.product([False, True],
                                                                                repeat=2)))
@pytest.mark.parametrize("mask_kind", [None, "post", "random"])
@pytest.mark.parametrize("with_h0", [False, True])
def test_simple_rnn_matches_jax(keras, rng, return_sequences, go_backwards, mask_kind, with_h0):
    batch, timesteps, features, units = 3, 5, 4, 6
    flags = dict(return_sequences=return_sequences, go_backwards=go_backwards,
                 return_state=with_h0)
    x = rng.normal(size=(batch, timesteps, features)).astype("float32")
    h0 = [rng.normal(size=(batch, units)).astype("float32")] if with_h0 else None
    check_against_keras(layers.SimpleRNN(units, **flags), keras.layers.SimpleRNN(units, **flags),
                        x, rng, h0=h0, mask=make_mask(rng, mask_kind, batch, timesteps))


@pytest.mark.parametrize("activation,use_bias", [("relu", True), ("sigmoid", False),
                                                 (None, True), ("softsign", True)])
def test_simple_rnn_activations_match_jax(keras, rng, activation, use_bias):
    flags = dict(activation=activation, use_bias=use_bias, return_sequences=True)
    x = rng.normal(size=(2, 4, 3)).astype("float32")
    check_against_keras(layers.SimpleRNN(5, **flags), keras.layers.SimpleRNN(5, **flags), x, rng)


@pytest.mark.parametrize("go_backwards", [False, True])
def test_dropout_with_the_same_masks_matches_jax(keras, rng, go_backwards):
    batch, timesteps, features, units = 3, 5, 4, 6
    flags = dict(dropout=0.4, recurrent_dropout=0.25, return_sequences=True,
                 go_backwards=go_backwards)
    ours, theirs = layers.SimpleRNN(units, **flags), keras.layers.SimpleRNN(units, **flags)
    x = rng.normal(size=(batch, timesteps, features)).astype("float32")
    ours(x)
    theirs(x)
    pair = ((rng.random((batch, features)) > 0.4).astype("float32") / 0.6,
            (rng.random((batch, units)) > 0.25).astype("float32") / 0.75)
    check_against_keras(ours, theirs, x, rng, training=True,
                        masks={(ours.cell, theirs.cell): pair})


@pytest.mark.parametrize("mask_kind", [None, "post", "random"])
@pytest.mark.parametrize("go_backwards,return_sequences", [(False, True), (True, False)])
def test_stacked_cells_match_jax(keras, rng, mask_kind, go_backwards, return_sequences):
    batch, timesteps, features = 3, 4, 3
    flags = dict(go_backwards=go_backwards, return_sequences=return_sequences, return_state=True)
    ours = layers.RNN([layers.SimpleRNNCell(5), layers.SimpleRNNCell(4, activation="relu")],
                      **flags)
    theirs = keras.layers.RNN([keras.layers.SimpleRNNCell(5),
                               keras.layers.SimpleRNNCell(4, activation="relu")], **flags)
    x = rng.normal(size=(batch, timesteps, features)).astype("float32")
    h0 = [[rng.normal(size=(batch, 5)).astype("float32")],
          [rng.normal(size=(batch, 4)).astype("float32")]]
    check_against_keras(ours, theirs, x, rng, h0=h0,
                        mask=make_mask(rng, mask_kind, batch, timesteps))


@pytest.mark.parametrize("unroll,zero_output_for_mask", [(True, False), (False, True)])
def test_unroll_and_zero_output_for_mask_match_jax(keras, rng, unroll, zero_output_for_mask):
    batch, timesteps = 3, 5
    flags = dict(unroll=unroll, zero_output_for_mask=zero_output_for_mask, return_sequences=True)
    ours = layers.RNN(layers.SimpleRNNCell(4), **flags)
    theirs = keras.layers.RNN(keras.layers.SimpleRNNCell(4), **flags)
    x = rng.normal(size=(batch, timesteps, 3)).astype("float32")
    check_against_keras(ours, theirs, x, rng, mask=make_mask(rng, "random", batch, timesteps))


# ------------------------------------------------------------------ finite differences (float64)

def numeric_check(layer, x, rng, h0=None, mask=None, training=False, n_checks=6, set_masks=None):
    """Compare a few random entries of every gradient with central differences."""
    kwargs = {"initial_state": h0} if h0 is not None else {}
    if mask is not None:
        kwargs["mask"] = mask

    def run():
        if set_masks:
            set_masks()
        return layer.forward_train(x, training=training, **kwargs)[0]

    result = run()
    d_result = _cotangents(result, rng)

    def loss():
        return sum(float(np.sum(r * d)) for r, d in zip(_flat(run()), _flat(d_result)))

    if set_masks:
        set_masks()
    _, d_x, d_w, d_h0 = ours_grads(layer, x, d_result, training=training, **kwargs)
    targets = [(w.value, g, w.path) for w, g in zip(layer.trainable_weights, d_w)]
    targets.append((x, d_x, "x"))
    if h0 is not None:
        targets += [(a, g, "h0") for a, g in zip(_flat(h0), _flat(d_h0))]
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


@pytest.mark.parametrize("mask_kind", [None, "pre", "random"])
@pytest.mark.parametrize("go_backwards", [False, True])
def test_simple_rnn_finite_differences(rng, mask_kind, go_backwards):
    layer = layers.SimpleRNN(5, return_sequences=True, return_state=True,
                             go_backwards=go_backwards, dtype="float64")
    x = rng.normal(size=(3, 6, 4))
    h0 = [rng.normal(size=(3, 5))]
    numeric_check(layer, x, rng, h0=h0, mask=make_mask(rng, mask_kind, 3, 6))


@pytest.mark.parametrize("unroll,zero_output_for_mask", [(True, True), (True, False)])
def test_unroll_masks_finite_differences(rng, unroll, zero_output_for_mask):
    """unroll=True with zero_output_for_mask is where unrolled follows TensorFlow, not JAX
    (see test_parity_keras), so its gradient is checked numerically."""
    layer = layers.SimpleRNN(4, unroll=unroll, zero_output_for_mask=zero_output_for_mask,
                             return_sequences=True, dtype="float64")
    numeric_check(layer, rng.normal(size=(3, 5, 2)), rng, mask=make_mask(rng, "random", 3, 5))


def test_stack_with_dropout_finite_differences(rng):
    cells = [layers.SimpleRNNCell(4, dropout=0.3, recurrent_dropout=0.2, dtype="float64"),
             layers.SimpleRNNCell(3, recurrent_dropout=0.5, dtype="float64")]
    layer = layers.RNN(cells, return_sequences=True, dtype="float64")
    x = rng.normal(size=(2, 5, 3))
    layer(x)
    masks = [(cells[0]._draw_mask(x[:, 0], 0.3), cells[0]._draw_mask(np.zeros((2, 4)), 0.2)),
             (None, cells[1]._draw_mask(np.zeros((2, 3)), 0.5))]

    def set_masks():
        for cell, (m_in, m_rec) in zip(cells, masks):
            cell._dropout_mask, cell._recurrent_dropout_mask = m_in, m_rec

    numeric_check(layer, x, rng, training=True, set_masks=set_masks)


def test_stateful_layer_carries_states_and_backprops(rng):
    layer = layers.SimpleRNN(3, stateful=True, dtype="float64")
    x = rng.normal(size=(2, 4, 2))
    first, _ = layer.forward_train(x)
    assert not np.allclose(layer.states[0], 0)
    carried = [s.copy() for s in layer.states]

    def restore():  # every run starts from the same carried state
        layer.states = [s.copy() for s in carried]

    numeric_check(layer, x, rng, set_masks=restore)
    assert not np.allclose(layer.states[0], carried[0]), "a run must carry its final state on"
    layer.reset_states()
    assert np.allclose(layer.states[0], 0)


def test_forward_train_equals_call(rng):
    layer = layers.SimpleRNN(4, return_sequences=True, return_state=True, go_backwards=True)
    x = rng.normal(size=(2, 5, 3)).astype("float32")
    mask = make_mask(rng, "random", 2, 5)
    # A call may run a compiled loop (Numba installed), whose sums run in another order than
    # BLAS's: equal to float32 rounding, not bit for bit.
    for a, b in zip(_flat(layer(x, mask=mask)), _flat(layer.forward_train(x, mask=mask)[0])):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


class Minimal(layers.Layer):
    """A user cell written the Keras way, without a backward pass."""

    state_size = 2

    def build(self, input_shape):
        self.kernel = self.add_weight((input_shape[-1], 2), name="kernel")
        super().build(input_shape)

    def call(self, inputs, states):
        h = np.tanh(inputs @ self.kernel + states[0])
        return h, [h]


class MinimalWithBackward(Minimal):
    def call(self, inputs, states):
        h = np.tanh(inputs @ self.kernel + states[0])
        if getattr(self, "_recorder", None) is not None:
            self._recorder.record(self, {"h": h})
        return h, [h]

    def backward_step(self, cache, d_output, d_new_states, grads):
        dz = (d_output + d_new_states[0]) * (1 - cache["h"] ** 2)
        grads.add(self, "kernel", cache["inputs"].T @ dz)
        return dz @ self.kernel.T, [dz]


def test_user_cell_without_backward_says_what_to_add(rng):
    layer = layers.RNN(Minimal())
    with pytest.raises(NotImplementedError, match="def backward_step"):
        gradients(layer, rng.normal(size=(2, 3, 4)), np.zeros((2, 2)))


def test_user_cell_with_backward_trains(rng):
    layer = layers.RNN(MinimalWithBackward(dtype="float64"), return_sequences=True,
                       dtype="float64")
    numeric_check(layer, rng.normal(size=(2, 4, 3)), rng, h0=[rng.normal(size=(2, 2))])


def test_gradient_report_hidden_states(rng):
    layer = layers.SimpleRNN(4, return_sequences=True, go_backwards=True, dtype="float64")
    x = rng.normal(size=(2, 5, 3))
    y = rng.normal(size=(2, 5, 4))
    report = gradients(layer, x, y, "mse")
    assert report.hidden[layer.name].shape == (2, 5, 4)
    assert report.hidden_norms().shape == (5,)
    # dL/dh at the step processed first (t = T-1 with go_backwards) equals the gradient on h_0's
    # successor: check one entry against finite differences of the output state at that step.
    _, cache = layer.forward_train(x)
    h_first = cache["steps"][0]["cell"]["h"]
    assert h_first.shape == (2, 4)
    d_h0 = report.initial_state[layer.name][0]
    W = layer.cell.recurrent_kernel
    z = cache["steps"][0]["cell"]["z"]
    expected = (report.hidden[layer.name][:, 4] * (1 - np.tanh(z) ** 2)) @ W.T
    np.testing.assert_allclose(d_h0, expected, rtol=1e-10)


# ------------------------------------------------------------------ LSTM and GRU

GATED = [("LSTM", {}), ("LSTM", {"activation": "relu", "recurrent_activation": "hard_sigmoid",
                                 "unit_forget_bias": False, "bias_initializer": "random_normal"}),
         ("LSTM", {"use_bias": False}),
         ("GRU", {}), ("GRU", {"reset_after": False, "bias_initializer": "random_normal"}),
         ("GRU", {"activation": "relu", "use_bias": False})]


@pytest.mark.parametrize("name,config", GATED, ids=[f"{n}{sorted(c)}" for n, c in GATED])
@pytest.mark.parametrize("mask_kind,go_backwards", [(None, False), ("random", True)])
def test_gated_layers_match_jax(keras, rng, name, config, mask_kind, go_backwards):
    batch, timesteps, features, units = 3, 4, 3, 5
    flags = dict(config, return_sequences=True, return_state=True, go_backwards=go_backwards)
    x = rng.normal(size=(batch, timesteps, features)).astype("float32")
    n_states = 2 if name == "LSTM" else 1
    h0 = [rng.normal(size=(batch, units)).astype("float32") for _ in range(n_states)]
    ours = getattr(layers, name)(units, **flags)
    ours(x)
    if "bias_initializer" in config:  # make the bias matter
        ours.cell.bias[...] = rng.normal(size=ours.cell.bias.shape)
    check_against_keras(ours, getattr(keras.layers, name)(units, **flags), x, rng, h0=h0,
                        mask=make_mask(rng, mask_kind, batch, timesteps))


@pytest.mark.parametrize("name,config", [("LSTM", {}), ("GRU", {}),
                                         ("GRU", {"reset_after": False})])
@pytest.mark.parametrize("recurrent_dropout", [0.0, 0.3])
def test_gated_dropout_matches_jax(keras, rng, name, config, recurrent_dropout):
    """implementation 2 (one shared input mask) without recurrent dropout, implementation 1
    (a mask per gate) with it."""
    batch, timesteps, features, units = 3, 4, 3, 4
    flags = dict(config, dropout=0.4, recurrent_dropout=recurrent_dropout, return_sequences=True)
    ours, theirs = getattr(layers, name)(units, **flags), getattr(keras.layers, name)(units, **flags)
    x = rng.normal(size=(batch, timesteps, features)).astype("float32")
    ours(x)
    theirs(x)
    gates = 4 if name == "LSTM" else 3

    def draw(shape, rate):
        return (rng.random(shape) > rate).astype("float32") / (1 - rate)

    if recurrent_dropout:
        pair = ([draw((batch, features), 0.4) for _ in range(gates)],
                [draw((batch, units), recurrent_dropout) for _ in range(gates)])
    else:
        pair = (draw((batch, features), 0.4), None)
    check_against_keras(ours, theirs, x, rng, training=True,
                        masks={(ours.cell, theirs.cell): pair})


@pytest.mark.parametrize("name,config", [("LSTM", {}), ("GRU", {}),
                                         ("GRU", {"reset_after": False})])
def test_gated_finite_differences(rng, name, config):
    layer = getattr(layers, name)(3, return_sequences=True, return_state=True, dtype="float64",
                                  **config)
    x = rng.normal(size=(2, 4, 3))
    layer(x)
    layer.cell.bias[...] = rng.normal(size=layer.cell.bias.shape)
    n_states = 2 if name == "LSTM" else 1
    numeric_check(layer, x, rng, h0=[rng.normal(size=(2, 3)) for _ in range(n_states)],
                  mask=make_mask(rng, "random", 2, 4))


# ------------------------------------------------------------------ core layers and wrappers

def test_dense_and_embedding_match_jax(keras, rng):
    import jax

    dense = layers.Dense(3, activation="tanh")
    kdense = keras.layers.Dense(3, activation="tanh")
    x = rng.normal(size=(2, 4, 5)).astype("float32")
    dense(x)
    kdense(x)
    kdense.set_weights(dense.get_weights())
    y, cache = dense.forward_train(x)
    d = rng.normal(size=y.shape).astype("float32")
    grads = Grads()
    d_x = dense.backward(cache, d, grads)
    k_w, k_x = jax.grad(lambda w, x: (kdense.stateless_call(w, [], x)[0] * d).sum(),
                        argnums=(0, 1))([v.value for v in kdense.trainable_variables], x)
    assert_close(d_x, np.asarray(k_x), what="Dense dL/dx")
    for a, b in zip(grads.for_weights(dense.trainable_weights), k_w):
        assert_close(a, np.asarray(b), what="Dense dL/dw")

    ids = rng.integers(0, 7, size=(3, 5))
    ours, theirs, _, returned = _embedding_gradients(keras, rng, 7, 3, ids)
    assert returned is None
    assert_close(ours, theirs, what="Embedding dL/dembeddings")


def _embedding_gradients(keras, rng, vocab: int, dim: int, ids: np.ndarray) -> tuple:
    """Embedding(vocab, dim)'s table gradient for a random output gradient `d`, and JAX's for
    Keras's layer with the same weights: `(ours, theirs, d, what backward returned)`."""
    import jax

    emb, kemb = layers.Embedding(vocab, dim), keras.layers.Embedding(vocab, dim)
    emb(ids)
    kemb(ids)
    kemb.set_weights(emb.get_weights())
    y, cache = emb.forward_train(ids)
    d = rng.normal(size=y.shape).astype("float32")
    grads = Grads()
    returned = emb.backward(cache, d, grads)
    theirs = jax.grad(lambda w: (kemb.stateless_call(w, [], ids)[0] * d).sum())(
        [v.value for v in kemb.trainable_variables])[0]
    return grads.for_weights(emb.trainable_weights)[0], np.asarray(theirs), d, returned


def test_a_large_embedding_gradient_is_add_at_to_the_bit_and_matches_jax(keras, rng,
                                                                         monkeypatch):
    """From COMPILED_PASS_MIN numbers on, Embedding's backward adds the rows by a compiled loop:
    np.add.at's sums to the bit (each id repeats about a hundred times, so the order of each
    row's sum shows), and JAX's gradient within float32 roundings."""
    from unrolled.kernels import _numba, _numba_loops

    compiled, calls = _numba_loops.add_rows, []
    monkeypatch.setattr(_numba_loops, "add_rows",
                        lambda *args: (calls.append(args[1].size), compiled(*args)))
    vocab, dim = 50, 16
    ids = rng.integers(0, vocab, size=(64, 80)).astype("int32")
    assert ids.size * dim >= _numba.COMPILED_PASS_MIN
    ours, theirs, d, _ = _embedding_gradients(keras, rng, vocab, dim, ids)
    assert calls == [ids.size]                                   # the compiled loop ran
    expected = np.zeros((vocab, dim), dtype="float32")
    np.add.at(expected, ids.reshape(-1), d.reshape(-1, dim))
    np.testing.assert_array_equal(ours, expected)
    assert_close(ours, theirs, what="Embedding dL/dembeddings")


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave", None])
@pytest.mark.parametrize("return_sequences", [False, True])
def test_bidirectional_matches_jax(keras, rng, merge_mode, return_sequences):
    flags = dict(merge_mode=merge_mode)
    ours = layers.Bidirectional(layers.LSTM(3, return_sequences=return_sequences), **flags)
    theirs = keras.layers.Bidirectional(keras.layers.LSTM(3, return_sequences=return_sequences),
                                        **flags)
    x = rng.normal(size=(2, 4, 3)).astype("float32")
    check_against_keras(ours, theirs, x, rng, mask=make_mask(rng, "post", 2, 4))


def test_bidirectional_states_and_time_distributed_finite_differences(rng):
    bi = layers.Bidirectional(layers.GRU(3, return_sequences=True, return_state=True,
                                         dtype="float64"), dtype="float64")
    x = rng.normal(size=(2, 4, 2))
    bi(x)
    numeric_check(bi, x, rng, h0=[rng.normal(size=(2, 3)), rng.normal(size=(2, 3))])
    td = layers.TimeDistributed(layers.Dense(2, activation="sigmoid", dtype="float64"),
                                dtype="float64")
    td(x)
    y, cache = td.forward_train(x)
    d = rng.normal(size=y.shape)
    grads = Grads()
    d_x = td.backward(cache, d, grads)
    eps = 1e-6
    for _ in range(4):
        i = tuple(rng.integers(0, s) for s in x.shape)
        up, down = x.copy(), x.copy()
        up[i] += eps
        down[i] -= eps
        numeric = ((td(up) - td(down)) * d).sum() / (2 * eps)
        assert abs(d_x[i] - numeric) < 1e-6 + 1e-5 * abs(numeric)


def test_gradient_report_for_a_model(rng):
    from unrolled import Sequential, losses

    model = Sequential([layers.LSTM(3, return_sequences=True, dtype="float64"),
                        layers.SimpleRNN(2, dtype="float64"), layers.Dense(1, dtype="float64")])
    x = rng.normal(size=(3, 5, 2))
    y = rng.normal(size=(3, 1))
    report = gradients(model, x, y, "mse")
    assert set(report.hidden) == {model.layers[0].name, model.layers[1].name}
    assert report.hidden[model.layers[0].name].shape == (3, 5, 3)
    mse = losses.MeanSquaredError()
    for weight in model.trainable_weights:
        grad = report.weights[weight.path]
        i = tuple(rng.integers(0, s) for s in weight.shape)
        old = weight.value[i]
        weight.value[i] = old + 1e-6
        up = mse(y, model(x))
        weight.value[i] = old - 1e-6
        down = mse(y, model(x))
        weight.value[i] = old
        numeric = (up - down) / 2e-6
        assert abs(grad[i] - numeric) < 1e-6 + 1e-5 * abs(numeric), weight.path
