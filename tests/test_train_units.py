"""A training step of an LSTM with each step's units split between threads
(`_threads.UNITS`; `_numba_train.lstm_forward_units` and `lstm_backward_units`).

The tape, the output, the input's, the weights' and the initial states' gradients are the one
thread loops' to the bit, for any number of parts (more parts than blocks of units too), masked
or not (each of the mask's rules), from an initial state or not; the forms are what ran; the
thread choice offers them where they may pay, and not `ALL` beside them; under them the
whole-sequence products run in blocks on one BLAS thread each, on Numba's threads where their
forms take the blocks (with the pool's numbers) and on the pool's where not; and without
Numba's threads the loops run on one thread, with the same numbers.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_train_kernels import _Limit  # the one-BLAS-thread limit's stand-in

from unrolled import layers
from unrolled.kernels import _numba, _threads, train
from unrolled.training import Grads

pytest.importorskip("numba", reason="the compiled loops are an optional extra")
pytest.importorskip("scipy", reason="the compiled loops call SciPy's BLAS")

# 160 units: three blocks of units a step, 64, 64 and 32 (a last block of whole panels but
# less than a block); 150: the last block's 22 units do not fill a panel
UNITS = 160


@pytest.fixture
def compiled(monkeypatch):
    monkeypatch.setattr(_numba, "enabled", True)
    monkeypatch.setattr(_threads, "NATIVE", True)
    monkeypatch.setattr(train, "ENABLED", True)


def spy_units(monkeypatch):
    """Record the calls of the training loops' units forms and of the whole-sequence products'
    forms on Numba's threads: (form, parts)."""
    from unrolled.kernels import _numba_train as nb

    calls = []
    forms = [(_threads._native_units, loop) for loop in (nb.lstm_forward, nb.lstm_backward)]
    forms += [(_threads._native_products, fn) for fn in list(_threads._native_products)]
    for table, key in forms:
        parallel = table[key]

        def counted(args, bounds, _parallel=parallel, _name=parallel.__name__):
            calls.append((_name, len(bounds) - 1))
            return _parallel(args, bounds)

        monkeypatch.setitem(table, key, counted)
    return calls


def ran(parts, d_x=True):
    """The forms a training step under units in `parts` parts runs, in order; `d_x`: the
    input's gradient's too."""
    return ([("lstm_forward_units", parts), ("lstm_backward_units", parts),
             ("at_b_blocks", parts)] + ([("matmul_blocks", parts)] if d_x else []))


def make(batch, units=UNITS, steps=9, features=7, seed=0, **kwargs):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, steps, features)).astype("float32")
    layer = layers.LSTM(units, return_sequences=True, return_state=True, **kwargs)
    layer.build(x.shape)
    layer.set_weights([rng.normal(0, 0.2, w.shape).astype("float32")
                       for w in layer.get_weights()])
    return layer, x


def step(layer, x, seed=1, **call):
    """A forward and backward through the training kernel: every number it gives."""
    result, cache = layer.forward_train(x, **call)
    tape = cache["train_tape"]
    assert tape.compiled is not None
    kept = [np.array(a) for a in (tape.P, tape.A, tape.C, tape.TC, tape.XH[:, :, x.shape[2]:])]
    rng = np.random.default_rng(seed)
    d = tuple(rng.standard_normal(r.shape).astype("float32") for r in result)
    grads = Grads()
    d_x = layer.backward(cache, d, grads)
    return [*(np.array(r) for r in result), *kept, d_x,
            *(np.array(g) for g in grads.for_weights(layer.trainable_weights)),
            *(np.array(s) for s in cache["d_initial_state"])]


D_X = 8     # where step() puts the input's gradient


def same(expected, got):
    """Every number the same to the bit, but the input's gradient: under units its product,
    `dZ [U]^T` over all the steps' rows, runs in blocks of rows (`train._product_blocks`),
    where BLAS may sum a row in another order (as under blocks of rows, `_threads.ROWS`)."""
    assert len(expected) == len(got)
    for i, (a, b) in enumerate(zip(expected, got)):
        if i == D_X:
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
        else:
            np.testing.assert_array_equal(a, b, err_msg=f"item {i}")


def run_with(monkeypatch, parts, layer, x, **call):
    with monkeypatch.context() as m:
        m.setattr(_threads, "units", lambda: parts)
        return step(layer, x, **call)


@pytest.mark.parametrize("batch", [1, 5, 20])
@pytest.mark.parametrize("parts", [2, 3, 5])
def test_units_in_parts_give_the_one_threads_numbers(compiled, monkeypatch, batch, parts):
    layer, x = make(batch)
    expected = run_with(monkeypatch, 1, layer, x)
    calls = spy_units(monkeypatch)
    got = run_with(monkeypatch, parts, layer, x)
    # the input's gradient in blocks of rows: on the pool where a block would have one row
    # (NumPy's matmul gives a row to gemv, not to sgemm)
    assert calls == ran(parts, d_x=x.shape[1] * batch >= 2 * parts)
    same(expected, got)


@pytest.mark.parametrize("rule", ["pass_total", "zero_output_for_mask", "unroll"])
def test_masked_steps_give_the_one_threads_numbers(compiled, monkeypatch, rule):
    """Each of the masked-step rules (train._Rule) the loops follow, columns by block here;
    150 units: the last block does not fill a panel."""
    options = {} if rule == "pass_total" else {rule: True}
    layer, x = make(6, units=150, **options)
    rng = np.random.default_rng(3)
    mask = rng.random((6, x.shape[1])) > 0.3
    mask[0] = False                               # a sample with no real step
    mask[1, :3] = False                           # and one that starts late
    h0 = [rng.standard_normal((6, 150)).astype("float32") for _ in range(2)]
    expected = run_with(monkeypatch, 1, layer, x, mask=mask, initial_state=h0)
    calls = spy_units(monkeypatch)
    got = run_with(monkeypatch, 2, layer, x, mask=mask, initial_state=h0)
    assert calls == ran(2)
    same(expected, got)


def test_the_units_forms_agree_with_the_numpy_kernel(compiled, monkeypatch):
    """Against the readable kernel (no compiled loops), within the loops' activations' error."""
    layer, x = make(3, steps=12)
    got = run_with(monkeypatch, 2, layer, x)
    monkeypatch.setattr(_numba, "enabled", False)
    result, cache = layer.forward_train(x)
    assert cache["train_tape"].compiled is None
    rng = np.random.default_rng(1)
    d = tuple(rng.standard_normal(r.shape).astype("float32") for r in result)
    grads = Grads()
    d_x = layer.backward(cache, d, grads)
    reference = [*result, d_x, *grads.for_weights(layer.trainable_weights)]
    mine = got[:3] + got[8:8 + 1 + 3]
    for a, b in zip(mine, reference, strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)


def test_without_numbas_threads_the_loops_run_alone(compiled, monkeypatch):
    layer, x = make(2)
    expected = run_with(monkeypatch, 1, layer, x)
    calls = spy_units(monkeypatch)
    monkeypatch.setattr(_threads, "NATIVE", False)
    got = run_with(monkeypatch, 2, layer, x)
    assert calls == []
    same(expected, got)


def test_units_are_offered_where_they_may_pay(compiled, monkeypatch):
    """LSTM only (GRU and SimpleRNN have no such form); under 2 * ROW_BLOCK_MIN rows for any
    weights of two blocks of units or more; from there up to UNIT_ROWS_MAX rows only for
    weights over OWN_GEMM_BYTES, which the loops then still multiply by their own product."""
    monkeypatch.setattr(_threads, "cores", lambda: 2)
    monkeypatch.setattr(_threads, "native_ready", lambda: True)
    monkeypatch.setattr(_threads, "MODE", "auto")
    monkeypatch.setattr(_numba, "OWN_GEMM_BYTES", 2 << 20)
    monkeypatch.setattr(_numba, "OWN_SMALL_BATCH_BYTES", 64 << 20)
    lstm = layers.LSTM(160)
    lstm.build((1, 3, 4))
    assert train._unit_split(lstm.cell, 1) == 2
    assert train._unit_split(lstm.cell, 2 * _threads.ROW_BLOCK_MIN - 1) == 2
    assert train._unit_split(lstm.cell, 2 * _threads.ROW_BLOCK_MIN) == 1     # in the L2
    one_block = layers.LSTM(64)
    one_block.build((1, 3, 4))
    assert train._unit_split(one_block.cell, 1) == 1
    for kind in (layers.GRU, layers.SimpleRNN):
        other = kind(160)
        other.build((1, 3, 4))
        assert train._unit_split(other.cell, 1) == 1
    large = layers.LSTM(768)                      # W: 9 MiB
    large.build((1, 3, 4))
    assert train._unit_split(large.cell, 64) == 2
    assert train._unit_split(large.cell, _threads.UNIT_ROWS_MAX) == 1
    monkeypatch.setattr(_numba, "OWN_SMALL_BATCH_BYTES", 1 << 20)   # BLAS takes W
    assert train._unit_split(large.cell, 1) == 1
    monkeypatch.setattr(_threads, "native_ready", lambda: False)
    assert train._unit_split(lstm.cell, 1) == 1


def test_the_choice_offers_units_not_all_and_the_loops_follow_it(compiled, monkeypatch):
    """Each phase is timed under one BLAS thread and units; never BLAS's own thread count,
    whose threads would spin on the CPUs the parts need. Under units the loops run their units
    forms and the whole-sequence products go in blocks, each on one BLAS thread; the numbers
    do not depend on the setting."""
    monkeypatch.setattr(_threads, "cores", lambda: 2)
    monkeypatch.setattr(_threads, "native_ready", lambda: True)
    monkeypatch.setattr(_threads, "MODE", "auto")
    monkeypatch.setattr(_threads, "STEP_WORK_MIN", 0)
    monkeypatch.setattr(_threads, "blas_controllers", lambda: ["stand-in"])  # so it chooses
    monkeypatch.setattr(_threads, "_one_thread", _Limit)
    monkeypatch.setattr(_threads, "_choices", {})
    layer, x = make(3)
    calls = spy_units(monkeypatch)
    products = []       # (blocks, limits held) of each whole-sequence product
    for name in ("matmul", "at_b_all"):
        real = getattr(_threads, name)

        def counted(*args, _real=real, **options):
            products.append((args[-1], _Limit.depth))
            return _real(*args, **options)

        monkeypatch.setattr(_threads, name, counted)
    outputs = [step(layer, x) for _ in range(8)]
    for phase in ("forward", "backward"):
        choice = _threads._choices[(id(layer), 3, phase, "kernel")]
        assert set(choice.times) == {_threads.ONE, _threads.UNITS}
        assert len(choice.times[_threads.UNITS]) >= 2
    assert set(ran(2)) <= set(calls)
    assert products and all(depth >= 1 for _, depth in products)
    assert {blocks for blocks, _ in products} == {1, 2}
    assert _Limit.depth == 0
    for other in outputs[1:]:
        same(outputs[0], other)


# ------------------------------------------------------------------ the products on Numba's threads


def spy_products(monkeypatch):
    """Record which way each whole-sequence product's blocks went: ("numba", form name) for
    a parallel form, ("pool", block function name) for the pool's threads."""
    went = []
    for fn, parallel in list(_threads._native_products.items()):
        def counted(args, bounds, _parallel=parallel):
            went.append(("numba", _parallel.__name__))
            return _parallel(args, bounds)

        monkeypatch.setitem(_threads._native_products, fn, counted)
    real = _threads.by_rows

    def pool(fn, *args, **options):
        went.append(("pool", fn.__name__))
        return real(fn, *args, **options)

    monkeypatch.setattr(_threads, "by_rows", pool)
    return went


def operands(rows=300, m=70, n=96, features=9, seed=5):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((rows, m), dtype=np.float32)            # XH
    b = rng.standard_normal((rows, n), dtype=np.float32)            # dZ
    kernel = rng.standard_normal((features, n), dtype=np.float32)   # dX = dZ kernel^T
    return a, b, kernel


def at_b_all(pairs, b, sums, parts, native):
    """`_threads.at_b_all` into fresh arrays: the products and the column sums (or None)."""
    outs = [np.full((a.shape[1], b.shape[1]), np.nan, np.float32) for a in pairs]
    total = np.full(b.shape[1], np.nan, np.float32) if sums else None
    _threads.at_b_all(list(zip(pairs, outs)), b, total, parts, native=native)
    return outs, total


@pytest.mark.parametrize("parts", [2, 3])
def test_products_on_numbas_threads_give_the_pools_numbers(compiled, monkeypatch, parts):
    """A weight gradient alone, two with the bias's column sums (GRU's and the NumPy
    kernel's), and the input's gradient: to the bit as the pool's blocks give them."""
    a, b, kernel = operands()
    b[:, 7] = -0.0                                  # a column of -0.0 sums to -0.0
    went = spy_products(monkeypatch)
    outs = {}
    for native in (True, False):
        one, _ = at_b_all([a], b, False, parts, native)
        two, total = at_b_all([a, a[:, 3:40]], b, True, parts, native)
        d = np.full((b.shape[0], kernel.shape[0]), np.nan, dtype=np.float32)
        _threads.matmul(b, kernel.T, d, parts, native=native)
        outs[native] = [*one, *two, total, d]
    assert went == [("numba", "at_b_blocks")] * 3 + [("numba", "column_sums_blocks"),
                                                      ("numba", "matmul_blocks")] + [
        ("pool", "_at_b_all_columns")] * 2 + [("pool", "_matmul_rows")]
    for got, expected in zip(outs[True], outs[False], strict=True):
        np.testing.assert_array_equal(got, expected)
    assert np.signbit(outs[True][3][7])
    w, w2, w3, total, d = outs[True]
    np.testing.assert_allclose(w, a.T @ b, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(w3, a[:, 3:40].T @ b, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(total, b.sum(axis=0, dtype=np.float64), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(d, b @ kernel.T, rtol=1e-4, atol=1e-4)


def test_products_the_forms_do_not_take_go_to_the_pool(compiled, monkeypatch):
    """A block of one row or one column (NumPy's matmul gives those to gemv), one such product
    among others (then all of them), the tall sums `_at_b_columns` takes in pieces, no NumPy
    sgemm, no Numba threads: the pool's blocks, with their numbers."""
    from unrolled.kernels import _numpy_blas

    a, b, kernel = operands()
    went = spy_products(monkeypatch)

    def at_b(pairs, b=b, parts=2):
        outs, total = at_b_all(pairs, b, True, parts, True)
        for x, out in zip(pairs, outs):
            np.testing.assert_allclose(out, x.T @ b, rtol=1e-4, atol=1e-4)
        # (the pool's sum of a one-column block is NumPy's pairwise sum, not row after row)
        np.testing.assert_allclose(total, b.sum(axis=0), rtol=1e-5, atol=1e-5)

    at_b([a], b=b[:, :3], parts=3)                  # a column a block
    at_b([a, a[:, :1]])                             # a product of one row among others
    d = np.empty((5, kernel.shape[0]), np.float32)
    _threads.matmul(b[:5], kernel.T, d, 3, native=True)             # a row a block
    np.testing.assert_allclose(d, b[:5] @ kernel.T, rtol=1e-4, atol=1e-4)
    assert went == [("pool", "_at_b_all_columns")] * 2 + [("pool", "_matmul_rows")]
    went.clear()
    with monkeypatch.context() as m:
        m.setattr(_threads, "CHUNK_ROWS", 4)        # 300 rows: pieces of 4
        at_b([a])
        m.setattr(_numpy_blas, "ready", lambda: False)
        at_b([a])
        m.setattr(_numpy_blas, "ready", lambda: True)
        m.setattr(_threads, "CHUNK_ROWS", 1024)
        m.setattr(_threads, "NATIVE", False)
        at_b([a])
    assert went == [("pool", "_at_b_all_columns")] * 3
    went.clear()
    at_b([a])
    assert went == [("numba", "at_b_blocks"), ("numba", "column_sums_blocks")]
