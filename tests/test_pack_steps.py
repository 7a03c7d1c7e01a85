"""A call of few steps leaves its products to BLAS rather than pack the weights
(`_numba.pack_pays`): packing is a pass over the weights and a copy as large, which a call of
one step (a stateful layer fed step by step, a generator sampling one symbol at a time) pays
for a single product. A step's `h W` of one row is then NumPy's sgemv (`_numpy_blas.dot`), of
2 to GEMV_ROWS rows `_numba_panels.rows_product`, which reads W where it is, once for all the
rows (`_numba_loops.step_product`; a row at a time by sgemv on weights over
ROWS_PRODUCT_BYTES).

The rule (steps against rows and weight size), which loop it picks, that both picks give what
the NumPy kernels give, step by step as over the whole sequence, and the step product's rows.
"""

from __future__ import annotations

import numpy as np
import pytest

from unrolled import layers
from unrolled.kernels import _numba, _threads

pytestmark = pytest.mark.skipif(not _numba.available(), reason="needs Numba")

KINDS = {"lstm": layers.LSTM, "gru": layers.GRU, "simple_rnn": layers.SimpleRNN}
# 160 units (170 for SimpleRNN, whose 160 would be read in place), 12 features: `[W; U]` of
# 330-440 KB, packed when packing pays; over OWN_GEMM_BYTES once that is lowered to 64 KiB
UNITS = {"lstm": 160, "gru": 160, "simple_rnn": 170}
LARGE = 64 << 10


@pytest.fixture
def compiled(monkeypatch):
    monkeypatch.setattr(_numba, "enabled", True)


def _layer(kind, batch, steps, seed=0, spread=None, **kwargs):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, steps, 12)).astype("float32")
    layer = KINDS[kind](UNITS[kind], **kwargs)
    layer(x)
    if spread is None:
        spread = 0.1 if kind == "simple_rnn" else 0.3
    layer.set_weights([rng.normal(0, spread, w.shape).astype("float32")
                       for w in layer.get_weights()])
    return layer, x


def test_the_rule():
    small, large = _numba.OWN_GEMM_BYTES, _numba.OWN_GEMM_BYTES + 1
    rows_product, larger = _numba.ROWS_PRODUCT_BYTES, _numba.ROWS_PRODUCT_BYTES + 1
    # (rows, kernel bytes, the fewest steps that pack): one row 16, or 32 over OWN_GEMM_BYTES;
    # fewer as more rows read each pass: `steps * rows ** 1.5` at least 64 where rows_product
    # takes 2 to GEMV_ROWS rows (weights up to ROWS_PRODUCT_BYTES), 32 above, where each row is
    # an sgemv; then PACK_STEPS, where sgemm packs W at every step
    for batch, size, least in ((1, small, 16), (1, large, 32), (1, larger, 32), (2, small, 23),
                               (2, rows_product, 23), (4, large, 8), (6, rows_product, 5),
                               (2, larger, 12), (3, larger, 7), (4, larger, 4), (6, larger, 3),
                               (7, large, 4), (7, small, 4), (64, small, 4), (128, larger, 4)):
        assert not _numba.pack_pays(batch, least - 1, size), (batch, size)
        assert _numba.pack_pays(batch, least, size), (batch, size)
    assert (_numba.GEMV_ROWS, _numba.PACK_STEPS, _numba.PACK_STEPS_FEW_ROWS) == (6, 4, 64)
    assert (_numba.PACK_STEPS_ONE_ROW, _numba.PACK_STEPS_ONE_ROW_LARGE) == (16, 32)


def _least(batch, size):
    return next(t for t in range(1, 1000) if _numba.pack_pays(batch, t, size))


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("large", [False, True])
def test_few_steps_go_to_blas(compiled, monkeypatch, kind, large):
    if large:
        monkeypatch.setattr(_numba, "OWN_GEMM_BYTES", LARGE)
    for batch in (1, 3, 8):
        layer, _ = _layer(kind, batch, 2)
        least = _least(batch, layer.cell.recurrent_kernel.nbytes)
        for steps, packs in ((1, False), (least - 1, False), (least, True)):
            kernel = _numba.loop_for(layer.cell, batch, steps)
            # a BLAS loop calls BLAS for its products; the fused loops on packed weights never
            assert kernel.blas is not packs, (batch, steps)
            # the units forms run on packed weights only (from 16 rows, only above
            # OWN_GEMM_BYTES)
            assert (kernel.units > 0) is packs, (batch, steps)


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_few_rows_on_rows_product_leave_blas_threads_unchosen(compiled, monkeypatch, kind):
    # 2 to GEMV_ROWS rows: the step products are rows_product's, on the calling thread, so the
    # plan has no BLAS work a step to choose threads for (`Plan.work`); one row (sgemv), more
    # rows (sgemm) and GRU's reset_before products (sgemv a row) have
    from unrolled.kernels import _dispatch

    monkeypatch.setattr(_numba, "OWN_GEMM_BYTES", LARGE)
    cases = [(kind, {}, 1, False), (kind, {}, 2, True), (kind, {}, _numba.GEMV_ROWS, True),
             (kind, {}, _numba.GEMV_ROWS + 1, False)]
    if kind == "gru":
        cases.append((kind, {"reset_after": False}, 3, False))
    for kind, kwargs, batch, free in cases:
        layer, x = _layer(kind, batch, 1, **kwargs)
        plan = _dispatch.plan_for(layer, x, False)
        assert plan.kernels[0].blas, (batch, kwargs)
        assert (plan.work == 0) is free, (batch, kwargs)
        assert not _threads.chooses(plan.work, plan.parts, plan.units) or not free


@pytest.mark.parametrize("kind", list(KINDS))
def test_few_steps_give_the_numpy_kernels_numbers(compiled, monkeypatch, kind):
    monkeypatch.setattr(_numba, "OWN_GEMM_BYTES", LARGE)
    for batch, steps in ((1, 1), (1, 5), (2, 1), (3, 3), (5, 2), (8, 3)):
        layer, x = _layer(kind, batch, steps, seed=batch + steps, return_sequences=True,
                          return_state=True)
        assert _numba.loop_for(layer.cell, batch, steps).blas
        got = layer(x)
        monkeypatch.setattr(_numba, "enabled", False)
        expected = layer(x)
        monkeypatch.setattr(_numba, "enabled", True)
        for a, b in zip(expected, got):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("batch", [1, 2, 7])
def test_step_by_step_is_the_whole_sequence(compiled, monkeypatch, kind, batch):
    # A layer fed one step at a time, its state carried: each call of one step leaves the
    # products to BLAS, the whole sequence packs its weights; the same outputs. Small weights:
    # over 128 steps a GRU(160) of spread 0.3 is chaotic, and two orders of a sum drift 1e-2
    # apart.
    monkeypatch.setattr(_numba, "OWN_GEMM_BYTES", LARGE)
    layer, x = _layer(kind, batch, 2, seed=7, spread=0.1, return_sequences=True,
                      return_state=True)
    steps = _least(batch, layer.cell.recurrent_kernel.nbytes)
    x = np.random.default_rng(8).standard_normal((batch, steps, 12)).astype("float32")
    assert not _numba.loop_for(layer.cell, batch, steps).blas
    whole, *final = layer(x)
    states = None
    outputs = []
    for t in range(steps):
        out, *states = layer(x[:, t:t + 1], initial_state=states)
        outputs.append(out)
    np.testing.assert_allclose(np.concatenate(outputs, axis=1), whole, rtol=1e-4, atol=1e-5)
    for a, b in zip(states, final):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def _peak(layer, x):
    # the bytes a call allocated at its peak: tracemalloc counts the compiled loops' arrays too
    # (Numba's runtime allocates through CPython's raw allocator)
    import tracemalloc

    layer(x)
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        layer(x)
        return tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()


def test_one_step_on_large_weights_allocates_no_packed_copy(compiled, monkeypatch):
    monkeypatch.setattr(_numba, "OWN_GEMM_BYTES", LARGE)
    monkeypatch.setattr(_threads, "MODE", "1")      # no thread choice: one loop, one thread
    layer, x = _layer("lstm", 1, _numba.PACK_STEPS_ONE_ROW_LARGE)
    weights = layer.cell.recurrent_kernel.nbytes + layer.cell.kernel.nbytes   # 440 KB
    assert _peak(layer, x) > weights          # the whole sequence packs a copy of `[W; U]`
    assert _peak(layer, x[:, :1]) < weights / 4


def test_a_few_rows_go_to_rows_product_or_sgemv_a_row_at_a_time():
    # `step_product` (the forward loops'): one row NumPy's matmul of it (sgemv, where NumPy
    # brings its OpenBLAS); 2 to GEMV_ROWS rows `rows_product`, with the packed product's bits,
    # on weights of at most ROWS_PRODUCT_BYTES, in the loops compiled for it (`few` FEW_ROWS;
    # with None, as `blas_product`); more rows one product. `blas_product` (the training
    # loops'): a row at a time up to GEMV_ROWS rows, whatever the weights.
    import numba

    from unrolled.kernels import _numba_loops, _numba_panels, _numpy_blas

    @numba.njit
    def step_product(h, W, out, few):
        _numba_loops.step_product(h, W, out, few)

    rng = np.random.default_rng(9)
    W = rng.standard_normal((70, 130), dtype=np.float32)
    panels = _numba_panels.packed(W)
    assert W.nbytes <= _numba.ROWS_PRODUCT_BYTES
    for rows in (1, 2, 3, _numba.GEMV_ROWS, _numba.GEMV_ROWS + 1, 20):
        h = rng.standard_normal((rows, 70), dtype=np.float32)
        out = np.full((rows, 130), np.nan, dtype=np.float32)
        step_product(h, W, out, _numba_loops.FEW_ROWS)
        blas = np.full((rows, 130), np.nan, dtype=np.float32)
        _numba_loops.blas_product(h, W, blas)
        other = np.full((rows, 130), np.nan, dtype=np.float32)
        step_product(h, W, other, None)
        np.testing.assert_array_equal(other, blas)
        if 1 < rows <= _numba.GEMV_ROWS:
            expected = np.empty_like(out)
            _numba_panels.panel_product(h, panels, expected)
            np.testing.assert_array_equal(out, expected)
        if rows <= _numba.GEMV_ROWS:
            expected = np.concatenate([h[i:i + 1] @ W for i in range(rows)])
        else:
            expected = h @ W
        results = (out, blas) if rows == 1 or rows > _numba.GEMV_ROWS else (blas,)
        for result in results:
            if _numpy_blas.ready():
                np.testing.assert_array_equal(result, expected)
            else:
                np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-5)
