"""A call of few steps leaves its products to BLAS rather than pack the weights
(`_numba.pack_pays`): packing is a pass over the weights and a copy as large, which a call of
one step (a stateful layer fed step by step, a generator sampling one symbol at a time) pays
for a single product. A one-sample batch's `h W` is then NumPy's sgemv (`_numpy_blas.dot`).

The rule (steps against batch and weight size), which loop it picks, and that both picks give
what the NumPy kernels give, step by step as over the whole sequence.
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
    for batch, size, least in ((1, small, _numba.PACK_STEPS_ONE_ROW),
                               (1, large, _numba.PACK_STEPS_ONE_ROW_LARGE),
                               (2, large, _numba.PACK_STEPS), (64, small, _numba.PACK_STEPS)):
        assert not _numba.pack_pays(batch, least - 1, size)
        assert _numba.pack_pays(batch, least, size)
    assert 1 < _numba.PACK_STEPS <= _numba.PACK_STEPS_ONE_ROW < _numba.PACK_STEPS_ONE_ROW_LARGE


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("large", [False, True])
def test_few_steps_go_to_blas(compiled, monkeypatch, kind, large):
    if large:
        monkeypatch.setattr(_numba, "OWN_GEMM_BYTES", LARGE)
    one_row = _numba.PACK_STEPS_ONE_ROW_LARGE if large else _numba.PACK_STEPS_ONE_ROW
    for batch, least in ((1, one_row), (3, _numba.PACK_STEPS)):
        layer, _ = _layer(kind, batch, 2)
        for steps, packs in ((1, False), (least - 1, False), (least, True)):
            kernel = _numba.loop_for(layer.cell, batch, steps)
            # a BLAS loop calls BLAS for its products; the fused loops on packed weights never
            assert kernel.blas is not packs, (batch, steps)
            # the units forms run on packed weights only (from 16 rows, only above
            # OWN_GEMM_BYTES)
            assert (kernel.units > 0) is packs, (batch, steps)


@pytest.mark.parametrize("kind", list(KINDS))
def test_few_steps_give_the_numpy_kernels_numbers(compiled, monkeypatch, kind):
    monkeypatch.setattr(_numba, "OWN_GEMM_BYTES", LARGE)
    for batch, steps in ((1, 1), (1, 5), (2, 1), (3, 3)):
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
@pytest.mark.parametrize("batch", [1, 2])
def test_step_by_step_is_the_whole_sequence(compiled, monkeypatch, kind, batch):
    # A layer fed one step at a time, its state carried: each call of one step leaves the
    # products to BLAS, the whole sequence packs its weights; the same outputs. Small weights:
    # over 128 steps a GRU(160) of spread 0.3 is chaotic, and two orders of a sum drift 1e-2
    # apart.
    monkeypatch.setattr(_numba, "OWN_GEMM_BYTES", LARGE)
    steps = _numba.PACK_STEPS_ONE_ROW_LARGE if batch == 1 else _numba.PACK_STEPS
    layer, x = _layer(kind, batch, steps, seed=7, spread=0.1, return_sequences=True,
                      return_state=True)
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
    steps = _numba.PACK_STEPS_ONE_ROW_LARGE
    layer, x = _layer("lstm", 1, steps)
    weights = layer.cell.recurrent_kernel.nbytes + layer.cell.kernel.nbytes   # 440 KB
    assert _peak(layer, x) > weights          # the whole sequence packs a copy of `[W; U]`
    assert _peak(layer, x[:, :1]) < weights / 4
