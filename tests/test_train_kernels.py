"""The whole-sequence training kernel (unrolled.kernels.train) against the per-step reference.

For every built-in cell and a grid of options, the same layer is trained one step both ways
(`train.ENABLED` off forces `RNN._forward_train` / `RNN._backward`): the forward result, dL/dx,
every weight gradient, `d_initial_state` and `step_grads` must agree to 1e-6 (float32) or
1e-12 (float64). The reference itself is checked against JAX and finite differences in
tests/test_backward*.py. Then: the cases the kernel does not cover take the reference path.

Every test runs four times (the `train_path` fixture): on the NumPy kernel, with the compiled
per-step loops (unrolled.kernels._numba_train) turned on, which serve float32 layers with the
default activations (tanh; sigmoid gates; everything else runs the NumPy kernel) and multiply
by their own panel product; with those loops run in blocks of batch rows on threads
("compiled_rows": 3 blocks of 4 rows, panel products whatever the weights' size); and with
BLAS's products, as for weights over `_numba.OWN_GEMM_BYTES` on one thread ("compiled_blas").
"""

from __future__ import annotations

import numpy as np
import pytest

from unrolled import activations, layers
from unrolled.kernels import _numba, _threads, train
from unrolled.training import Grads, gradients

B, T, F, U = 4, 6, 3, 5
PATH = {"name": None}
_REAL_PARTS = _threads.parts


@pytest.fixture(autouse=True, params=["numpy", "compiled", "compiled_rows", "compiled_blas"])
def train_path(request, monkeypatch):
    compiled = request.param.startswith("compiled")
    if compiled:
        pytest.importorskip("numba", reason="the compiled loops are an optional extra")
        pytest.importorskip("scipy", reason="the compiled loops call SciPy's BLAS")
    monkeypatch.setattr(_numba, "enabled", compiled)
    if request.param == "compiled_blas":
        monkeypatch.setattr(_numba, "OWN_GEMM_BYTES", -1)
        monkeypatch.setattr(_numba, "OWN_SMALL_BATCH_BYTES", -1)
    if request.param == "compiled_rows":
        # blocks of rows in both phases, as when the thread choice picked ROWS; they take the
        # panel products even for weights over OWN_GEMM_BYTES
        monkeypatch.setattr(_numba, "OWN_GEMM_BYTES", -1)
        monkeypatch.setattr(_numba, "OWN_SMALL_BATCH_BYTES", -1)
        monkeypatch.setattr(_threads, "parts", lambda: 3)
    PATH["name"] = request.param
    yield request.param
    PATH["name"] = None


def _expect_compiled(layer) -> bool:
    """Whether the training kernel should run its compiled loops for this layer."""
    cell = layer.cell
    return (PATH["name"].startswith("compiled") and layer.dtype == "float32"
            and cell.activation is activations.tanh
            and getattr(cell, "recurrent_activation", activations.sigmoid) is activations.sigmoid)

CELLS = {
    "simple": lambda **kw: layers.SimpleRNN(U, **kw),
    "lstm": lambda **kw: layers.LSTM(U, **kw),
    "gru": lambda **kw: layers.GRU(U, **kw),
    "gru_before": lambda **kw: layers.GRU(U, reset_after=False, **kw),
}

OPTIONS = {
    "plain": {},
    "sequences": {"return_sequences": True},
    "backwards": {"go_backwards": True, "return_sequences": True},
    "backwards_last": {"go_backwards": True},
    "mask": {"return_sequences": True, "mask": True},
    "mask_last": {"mask": True},
    "mask_zero_output": {"return_sequences": True, "mask": True, "zero_output_for_mask": True},
    "mask_zero_output_last": {"mask": True, "zero_output_for_mask": True},
    "mask_unroll": {"return_sequences": True, "mask": True, "unroll": True},
    "mask_unroll_backwards": {"return_sequences": True, "mask": True, "unroll": True,
                              "go_backwards": True},
    "mask_backwards_state": {"mask": True, "go_backwards": True, "return_state": True},
    "state": {"return_state": True, "return_sequences": True},
    "initial_state": {"initial_state": True, "return_state": True},
    "no_bias": {"use_bias": False, "return_sequences": True, "mask": True},
    "unroll_nomask": {"unroll": True, "return_sequences": True},
}

ACTIVATIONS = [
    {"activation": "relu"},
    {"activation": "selu"},
    {"activation": "linear"},
    {"activation": "softsign"},
    {"activation": "softmax"},
]
GATED_ACTIVATIONS = [
    {"recurrent_activation": "hard_sigmoid"},
    {"recurrent_activation": "softmax", "activation": "elu"},
    {"recurrent_activation": "tanh", "activation": "sigmoid"},
]


def _flat(tree):
    if isinstance(tree, (list, tuple)):
        return [leaf for item in tree for leaf in _flat(item)]
    return [tree]


def _mask(rng):
    """Some of everything: a full row, a fully masked row, pre-padding, a fully masked step."""
    mask = rng.random((B, T)) > 0.3
    mask[0] = True
    mask[1] = False
    mask[2, :3] = False
    mask[2, 3:] = True
    mask[:, 2] = False
    return mask


def _randomize(layer, rng, scale=0.6):
    layer.set_weights([rng.normal(size=w.shape) * scale for w in layer.get_weights()])


def _one_step(layer, x, d_seed, use_kernel, monkeypatch, **call):
    """forward_train + backward with a cotangent on every output; everything to compare."""
    monkeypatch.setattr(train, "ENABLED", use_kernel)
    result, cache = layer.forward_train(x, **call)
    assert ("train_tape" in cache) == use_kernel
    if use_kernel:
        tape = cache["train_tape"]
        assert (tape.compiled is not None) == _expect_compiled(layer)
        if tape.compiled is not None:
            assert tape.parts == (3 if PATH["name"] == "compiled_rows" else 1)
    drng = np.random.default_rng(d_seed)
    flat = _flat(result)
    d_flat = [drng.normal(size=r.shape).astype(r.dtype) for r in flat]
    d_result = tuple(d_flat) if isinstance(result, tuple) else d_flat[0]
    grads = Grads()
    d_x = layer.backward(cache, d_result, grads)
    step_grads = [(s["t"], s["output"], _flat(s["states"])) for s in cache["step_grads"]]
    return {"result": flat, "d_x": [d_x], "grads": grads.for_weights(layer.trainable_weights),
            "d_initial_state": _flat(cache["d_initial_state"]),
            "step_outputs": [s[1] for s in step_grads],
            "step_states": [leaf for s in step_grads for leaf in s[2]],
            "step_t": [s[0] for s in step_grads]}


def _compare(kernel, reference, tol):
    assert kernel["step_t"] == reference["step_t"]
    for key in ("result", "d_x", "grads", "d_initial_state", "step_outputs", "step_states"):
        a, b = kernel[key], reference[key]
        assert len(a) == len(b), key
        for i, (p, q) in enumerate(zip(a, b)):
            assert p.shape == q.shape, (key, i, p.shape, q.shape)
            assert p.dtype == q.dtype, (key, i, p.dtype, q.dtype)
            np.testing.assert_allclose(p, q, rtol=tol, atol=tol, err_msg=f"{key}[{i}]")


def _check(make, options, rng, monkeypatch, dtype="float32"):
    options = dict(options)
    use_mask = options.pop("mask", False)
    use_h0 = options.pop("initial_state", False)
    layer = make(dtype=dtype, **options)
    x = rng.normal(size=(B, T, F)).astype(dtype)
    layer(x)
    _randomize(layer, rng)
    call = {"training": True}
    if use_mask:
        call["mask"] = _mask(rng)
    if use_h0:
        n = len(layer.state_size)
        call["initial_state"] = [rng.normal(size=(B, U)).astype(dtype) for _ in range(n)]
    seed = int(rng.integers(1 << 30))
    kernel = _one_step(layer, x, seed, True, monkeypatch, **call)
    reference = _one_step(layer, x, seed, False, monkeypatch, **call)
    # The compiled loops' tanh/sigmoid differ from NumPy's by up to 3e-7, which BPTT carries
    # through a few steps: 1e-5 there (float32 only; float64 never runs compiled).
    if dtype == "float32":
        tol = 1e-5 if _expect_compiled(layer) else 1e-6
    else:
        tol = 1e-12
    _compare(kernel, reference, tol)


@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("cell", list(CELLS))
def test_kernel_equals_reference(cell, option, rng, monkeypatch):
    _check(CELLS[cell], OPTIONS[option], rng, monkeypatch)


@pytest.mark.parametrize("option", ["plain", "mask", "mask_unroll_backwards", "initial_state",
                                    "mask_zero_output", "no_bias"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_kernel_equals_reference_float64(cell, option, rng, monkeypatch):
    _check(CELLS[cell], OPTIONS[option], rng, monkeypatch, dtype="float64")


@pytest.mark.parametrize("acts", ACTIVATIONS, ids=lambda a: "-".join(a.values()))
@pytest.mark.parametrize("cell", ["simple", "lstm", "gru", "gru_before"])
def test_activations(cell, acts, rng, monkeypatch):
    _check(CELLS[cell], {**acts, "return_sequences": True, "mask": True}, rng, monkeypatch,
           dtype="float64")


@pytest.mark.parametrize("acts", GATED_ACTIVATIONS, ids=lambda a: "-".join(a.values()))
@pytest.mark.parametrize("cell", ["lstm", "gru", "gru_before"])
def test_gate_activations(cell, acts, rng, monkeypatch):
    _check(CELLS[cell], {**acts, "return_sequences": True}, rng, monkeypatch, dtype="float64")


@pytest.mark.parametrize("cell", list(CELLS))
def test_generic_rnn_wrapper(cell, rng, monkeypatch):
    """RNN(cell) takes the kernel too (the layer classes are not special)."""
    cells = {"simple": layers.SimpleRNNCell, "lstm": layers.LSTMCell, "gru": layers.GRUCell,
             "gru_before": lambda u, **kw: layers.GRUCell(u, reset_after=False, **kw)}

    def make(**kw):
        dtype = kw.pop("dtype")
        return layers.RNN(cells[cell](U, dtype=dtype), dtype=dtype, **kw)

    _check(make, {"return_sequences": True, "mask": True, "return_state": True}, rng,
           monkeypatch)


@pytest.mark.parametrize("cell", list(CELLS))
def test_stateful_two_steps(cell, rng, monkeypatch):
    """A stateful layer carries the kernel's final states into the next call, as the reference."""
    layer = CELLS[cell](stateful=True, return_sequences=True, dtype="float64")
    xs = [rng.normal(size=(B, T, F)) for _ in range(2)]
    layer(xs[0])
    _randomize(layer, rng)
    runs = []
    for use_kernel in (True, False):
        layer.reset_state()
        runs.append([_one_step(layer, x, 7, use_kernel, monkeypatch, training=True) for x in xs])
        runs[-1].append([np.array(s) for s in layer.states])
    for k, r in zip(runs[0][:2], runs[1][:2]):
        _compare(k, r, 1e-12)
    for a, b in zip(runs[0][2], runs[1][2]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    assert np.abs(runs[0][0]["result"][0] - runs[0][1]["result"][0]).max() > 0


def test_dropout_inactive_outside_training_takes_kernel(rng, monkeypatch):
    layer = layers.LSTM(U, dropout=0.3, recurrent_dropout=0.2, return_sequences=True,
                        dtype="float64")
    x = rng.normal(size=(B, T, F))
    layer(x)
    kernel = _one_step(layer, x, 3, True, monkeypatch, training=False)
    reference = _one_step(layer, x, 3, False, monkeypatch, training=False)
    _compare(kernel, reference, 1e-12)


def test_gradients_report_through_kernel(rng, monkeypatch):
    """unrolled.gradients reads dL/dh_t from step_grads: the same with the kernel."""
    layer = layers.GRU(U, return_sequences=True, go_backwards=True, dtype="float64")
    x = rng.normal(size=(B, T, F))
    y = rng.normal(size=(B, T, U))
    mask = _mask(rng)
    reports = []
    for use_kernel in (True, False):
        monkeypatch.setattr(train, "ENABLED", use_kernel)
        reports.append(gradients(layer, x, y, "mse", mask=mask))
    k, r = reports
    np.testing.assert_allclose(k.hidden[layer.name], r.hidden[layer.name], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(k.inputs, r.inputs, rtol=1e-12, atol=1e-12)
    for name in r.weights:
        np.testing.assert_allclose(k.weights[name], r.weights[name], rtol=1e-12, atol=1e-12)


def test_steps_view_matches_reference_cell_values(rng, monkeypatch):
    """cache["steps"][k]["cell"] gives the reference's recorded values (unmasked run)."""
    layer = layers.LSTM(U, go_backwards=True, dtype="float64")
    x = rng.normal(size=(B, T, F))
    layer(x)
    monkeypatch.setattr(train, "ENABLED", True)
    _, fast = layer.forward_train(x)
    monkeypatch.setattr(train, "ENABLED", False)
    _, slow = layer.forward_train(x)
    assert len(fast["steps"]) == len(slow["steps"]) == T
    for a, b in zip(fast["steps"], slow["steps"]):
        assert a["t"] == b["t"]
        for key in ("x_t", "h_prev", "c_prev", "z", "i", "f", "g", "o", "c", "h"):
            np.testing.assert_allclose(a["cell"][key], b["cell"][key], rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------ what falls back

def _takes_kernel(layer, x, **call):
    _, cache = layer.forward_train(x, **call)
    return "train_tape" in cache


def test_fallbacks(rng, monkeypatch):
    monkeypatch.setattr(train, "ENABLED", True)
    x = rng.normal(size=(B, T, F)).astype("float32")
    assert _takes_kernel(layers.GRU(U), x)

    class MyCell(layers.SimpleRNNCell):  # a subclass may change `call`
        pass

    assert not _takes_kernel(layers.RNN(MyCell(U)), x)
    assert not _takes_kernel(layers.LSTM(U, dropout=0.2), x, training=True)
    assert not _takes_kernel(layers.GRU(U, recurrent_dropout=0.2), x, training=True)
    assert not _takes_kernel(layers.SimpleRNN(U, dropout=0.2), x, training=True)
    assert not _takes_kernel(layers.SimpleRNN(U, dtype="float16"), x.astype("float16"))
    stacked = layers.RNN([layers.SimpleRNNCell(U), layers.GRUCell(U)])
    assert not _takes_kernel(stacked, x)

    traced = layers.SimpleRNN(U)
    traced(x)
    traced.cell._recorder = object()
    try:
        assert not _takes_kernel(traced, x)
    finally:
        traced.cell._recorder = None
    assert _takes_kernel(traced, x)

    class MyRNN(layers.RNN):  # overrides the loop: only the reference is right
        def _masked_step(self, *args):
            return super()._masked_step(*args)

    assert not _takes_kernel(MyRNN(layers.SimpleRNNCell(U)), x)

    monkeypatch.setattr(train, "ENABLED", False)
    assert not _takes_kernel(layers.GRU(U), x)


def test_unknown_activation_falls_back_to_reference_error(rng, monkeypatch):
    """An activation without a derivative: the reference runs and says how to add one."""
    monkeypatch.setattr(train, "ENABLED", True)

    def cube(z):
        return z ** 3

    layer = layers.SimpleRNN(U, activation=cube)
    x = (0.1 * rng.normal(size=(B, T, F))).astype("float32")  # small: cubes stay finite
    y, cache = layer.forward_train(x)
    assert "train_tape" not in cache
    with pytest.raises(NotImplementedError, match="cube"):
        layer.backward(cache, np.ones_like(y), Grads())


@pytest.mark.parametrize("cell", list(CELLS))
def test_input_gradient_skipped_on_request(cell, rng, monkeypatch):
    """cache["input_grad"] = False (a training step's first layer): no dL/dx, the same weight
    gradients and states' gradients."""
    monkeypatch.setattr(train, "ENABLED", True)
    layer = CELLS[cell](return_sequences=True)
    x = rng.normal(size=(B, T, F)).astype("float32")
    layer(x)
    d = rng.normal(size=(B, T, U)).astype("float32")
    runs = []
    for need in (True, False):
        _, cache = layer.forward_train(x, training=True)
        if not need:
            cache["input_grad"] = False
        grads = Grads()
        d_x = layer.backward(cache, d, grads)
        assert (d_x is None) == (not need)
        runs.append((grads.for_weights(layer.trainable_weights), cache["d_initial_state"]))
    for a, b in zip(_flat(runs[0]), _flat(runs[1])):
        np.testing.assert_array_equal(a, b)


def test_training_step_skips_only_the_model_inputs_gradient(rng, monkeypatch):
    """Model.backward(input_grads=False) gives the same weight gradients, and no input's."""
    import unrolled

    monkeypatch.setattr(train, "ENABLED", True)
    model = unrolled.Sequential([unrolled.Input((T, F)), layers.GRU(U, return_sequences=True),
                                 layers.LSTM(U)])
    x = rng.normal(size=(B, T, F)).astype("float32")
    model(x)
    d = rng.normal(size=(B, U)).astype("float32")
    results = []
    for need in (True, False):
        _, cache = model.forward_train(x)
        grads = Grads()
        d_x = model.backward(cache, d, grads, input_grads=need)
        assert (d_x is None) == (not need)
        results.append(grads.for_weights(model.trainable_weights))
        (first, first_cache), (second, second_cache) = cache["layers"]
        assert first_cache.get("input_grad", True) == need      # the GRU reads the model input
        assert second_cache.get("input_grad", True)             # the LSTM reads the GRU's output
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_the_thread_choice_offers_row_blocks_and_the_loops_follow_it(monkeypatch):
    """Each phase of a compiled training call with rows enough is timed under one BLAS thread
    and blocks of rows (`_threads.ROWS`), never BLAS's own thread count (whose threads would
    spin on the CPUs the blocks need), and the loops run what the choice picked: under ROWS,
    the loop and the whole-sequence products in blocks of rows, every block and product on
    one BLAS thread. The results do not depend on the setting, and no limit outlasts a call.
    (The same on every path: it turns the compiled loops on itself.)"""
    pytest.importorskip("numba", reason="the compiled loops are an optional extra")
    pytest.importorskip("scipy", reason="the compiled loops call SciPy's BLAS")
    monkeypatch.setattr(_numba, "enabled", True)
    monkeypatch.setattr(_threads, "parts", _REAL_PARTS)
    monkeypatch.setattr(_threads, "ROW_BLOCK_MIN", 1)
    monkeypatch.setattr(train, "ROW_BLOCK_WORK_MIN", 0)
    monkeypatch.setattr(_threads, "cores", lambda: 3)
    monkeypatch.setattr(_threads, "MODE", "auto")
    monkeypatch.setattr(_threads, "STEP_WORK_MIN", 0)
    monkeypatch.setattr(_threads, "blas_controllers", lambda: ["stand-in"])  # so it chooses
    monkeypatch.setattr(_threads, "_one_thread", _Limit)
    monkeypatch.setattr(train, "ENABLED", True)
    picked = []
    real_pick = _threads.ThreadChoice.pick

    def pick(choice):
        picked.append(real_pick(choice))
        return picked[-1]

    monkeypatch.setattr(_threads.ThreadChoice, "pick", pick)
    calls = []          # (the phase's setting, blocks, limits held when the blocks started)
    real_by_rows = train._by_rows

    def by_rows(fn, args, rows, blocks):
        calls.append((picked[-1], fn.__name__, blocks, _Limit.depth))
        return real_by_rows(fn, args, rows, blocks)

    monkeypatch.setattr(train, "_by_rows", by_rows)         # the loops
    monkeypatch.setattr(_threads, "by_rows", by_rows)       # the whole-sequence products
    products = []       # limits held in each whole-sequence product
    for name in ("_matmul_rows", "_at_b_columns"):
        real = getattr(_threads, name)

        def counted(*args, _real=real):
            products.append(_Limit.depth)
            return _real(*args)

        counted.__name__ = name
        monkeypatch.setattr(_threads, name, counted)
    layer = layers.LSTM(U, return_sequences=True)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(B, T, F)).astype("float32")
    layer.build(x.shape)
    _randomize(layer, rng)
    outputs = []
    for _ in range(7):
        result, cache = layer.forward_train(x)
        assert cache["train_tape"].compiled is not None
        grads = Grads()
        d_x = layer.backward(cache, np.ones_like(result), grads)
        outputs.append([result, d_x, *grads.for_weights(layer.trainable_weights)])
        assert _Limit.depth == 0
    for phase in ("forward", "backward"):
        assert set(_threads._choices[(id(layer), B, phase, "kernel")].times) == {
            _threads.ONE, _threads.ROWS}
    assert set(picked) == {_threads.ONE, _threads.ROWS}
    # one BLAS thread around everything: blocks of 3 rows under ROWS, one block under ONE
    assert {(s, b, d) for s, _, b, d in calls} == {(_threads.ONE, 1, 1), (_threads.ROWS, 3, 1)}
    in_rows = {fn for s, fn, _, _ in calls if s == _threads.ROWS}
    assert {"lstm_forward", "lstm_backward", "_matmul_rows", "_at_b_all_columns"} <= in_rows
    assert products and min(products) >= 1
    for other in outputs[1:]:
        for a, b in zip(outputs[0], other):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


class _Limit:
    """A stand-in for the one-BLAS-thread limit that counts how deep it is held."""
    depth = 0

    def __enter__(self):
        type(self).depth += 1

    def __exit__(self, *exc):
        type(self).depth -= 1


@pytest.mark.parametrize("rows", [64 * 4 - 1, 64 * 4, 64 * 4 + 3])
def test_tall_weight_gradients_in_pieces_sum_every_row(rows, monkeypatch):
    """A weight gradient `a^T b` of 64 * CHUNK_ROWS rows or more is summed in pieces of
    CHUNK_ROWS rows (fewer run whole); either way every row counts once, a last short piece
    included, and only the block's columns are written."""
    monkeypatch.setattr(_threads, "CHUNK_ROWS", 4)
    rng = np.random.default_rng(rows)
    a = rng.normal(size=(rows, 5)).astype("float32")
    b = rng.normal(size=(rows, 7)).astype("float32")
    out = np.full((5, 7), np.nan, dtype="float32")
    _threads._at_b_columns(a, b, out, 2, 6)
    np.testing.assert_allclose(out[:, 2:6], a.T.astype("float64") @ b[:, 2:6], rtol=1e-5,
                               atol=1e-4)
    assert np.isnan(out[:, [0, 1, 6]]).all()


@pytest.mark.parametrize("parts", [1, 2, 3])
def test_weight_gradients_and_bias_sums_come_from_one_pass(parts, monkeypatch):
    """`_at_b_sums`: every `a^T b` and b's column sums from one pass over b's columns (one
    hand-off to the pool in row blocks, `parts` blocks of columns); the sums are
    `b.sum(axis=0)` to the bit, and the products the same in any number of blocks."""
    monkeypatch.setattr(_threads, "blocks", lambda n: min(parts, n))
    rng = np.random.default_rng(parts)
    rows = 3 * 97
    xs = rng.normal(size=(rows, 5)).astype("float32")
    hs = rng.normal(size=(rows, 11)).astype("float32")
    dz = rng.normal(size=(rows, 44)).astype("float32")
    (d_kernel, d_recurrent), sums = train._at_b_sums([xs, hs], dz, True)
    np.testing.assert_array_equal(sums, dz.sum(axis=0))
    for a, out in [(xs, d_kernel), (hs, d_recurrent)]:
        np.testing.assert_allclose(out, a.T.astype("float64") @ dz, rtol=1e-5, atol=1e-4)
        whole = np.empty_like(out)
        _threads._at_b_columns(a, dz, whole, 0, dz.shape[1])
        np.testing.assert_array_equal(out, whole)
    (alone,), none = train._at_b_sums([hs], dz, False)
    assert none is None
    np.testing.assert_array_equal(alone, d_recurrent)


def test_row_blocks_take_the_panel_product_whatever_the_weights_size(monkeypatch):
    """On one thread, weights over OWN_GEMM_BYTES go to BLAS (which then has every core) but for
    a batch of at most OWN_GEMM_ROWS rows, for which BLAS would pack them at every step, up to
    OWN_SMALL_BATCH_BYTES; in row blocks each block has one thread, and the panel product is
    faster there at every size."""
    monkeypatch.setattr(_numba, "OWN_GEMM_BYTES", 2 << 20)    # the defaults (the fixture moves)
    monkeypatch.setattr(_numba, "OWN_SMALL_BATCH_BYTES", 64 << 20)
    big = np.zeros(((2 << 20) // 4 + 1,), dtype="float32")
    rows = _numba.OWN_GEMM_ROWS
    assert not train._own_product(big, 1, rows + 1)
    assert train._own_product(big, 1, rows)
    assert train._own_product(big, 2, rows + 1)
    with monkeypatch.context() as m:
        m.setattr(_numba, "OWN_SMALL_BATCH_BYTES", big.nbytes - 4)
        assert not train._own_product(big, 1, 1)
    small = np.zeros((16, 16), dtype="float32")
    assert train._own_product(small, 1, rows) and train._own_product(small, 2, rows)


def test_kept_arrays_are_reused_only_when_nothing_holds_them(monkeypatch):
    """The training arrays (train._Buffers) are the previous call's when its cache is gone, new
    ones while a cache is kept: a kept cache's steps and gradients keep their numbers."""
    monkeypatch.setattr(train, "ENABLED", True)
    layer = layers.LSTM(U, return_sequences=True)
    rng = np.random.default_rng(3)
    x1 = rng.normal(size=(B, T, F)).astype("float32")
    x2 = rng.normal(size=(B, T, F)).astype("float32")
    layer.build(x1.shape)
    _randomize(layer, rng)

    def step(x):
        result, cache = layer.forward_train(x)
        layer.backward(cache, np.ones_like(result), Grads())
        return cache

    cache = step(x1)
    tape = cache["train_tape"]
    first = {name: id(a) for name, a in train.buffers(layer).arrays.items()}
    inputs_states = {"X", "H"} if tape.XH is None else {"XH"}      # compiled: [x_k | h_k] rows
    assert {"P", "A", "C", "TC", "d_out", "d_state0", "d_state1", "dZ"} | inputs_states <= set(
        first)
    kept_h = [s["cell"]["h"].copy() for s in cache["steps"]]
    kept_d = [g["states"][0].copy() for g in cache["step_grads"]]
    step(x2)                        # the cache still holds what it shows: new arrays for those
    second = {name: id(a) for name, a in train.buffers(layer).arrays.items()}
    shown = {"P", "A", "C", "TC", "d_out", "d_state0", "d_state1"} | inputs_states
    assert all(first[name] != second[name] for name in shown)
    assert all(first[name] == second[name] for name in set(first) - shown)  # the backward's own
    for k in range(T):
        np.testing.assert_array_equal(cache["steps"][k]["cell"]["h"], kept_h[k])
        np.testing.assert_array_equal(cache["step_grads"][k]["states"][0], kept_d[k])
    del cache, tape
    third = step(x1)                                    # nothing holds them: the same arrays
    assert {name: id(a) for name, a in train.buffers(layer).arrays.items()} == second
    if "XH" not in second:
        assert id(third["train_tape"].H) == second["H"]
        assert id(third["train_tape"].X) == second["X"]
    else:
        assert id(third["train_tape"].XH) == second["XH"]
    del third
    again = step(x2)                                    # and the numbers are a fresh call's
    fresh = layers.LSTM(U, return_sequences=True)
    fresh.build(x2.shape)
    fresh.set_weights(layer.get_weights())
    expected = fresh.forward_train(x2)[1]
    for k in range(T):
        np.testing.assert_array_equal(again["steps"][k]["cell"]["h"],
                                      expected["steps"][k]["cell"]["h"])
