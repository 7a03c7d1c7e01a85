"""A batch of over `_numba.OWN_GEMM_ROWS` rows on large weights, returning the whole sequence:
the weights packed into the output's last steps (`_numba._tail_panels`), a units form up to
there, the BLAS loop for the steps they took (`_numba.TAIL_SHARE`).

The packed arrays are the units forms' own, in steps the loop has not written; the call gives
the NumPy kernel's numbers (masked, backwards, with initial states, any number of parts); the
units form and the BLAS loop each ran on their share of the steps; no packed copy is
allocated; and the kernel keeps the BLAS loop alone where the weights would take more than
their share of the steps, where the sequence is not returned, and for GRU's reset_before.
"""

from __future__ import annotations

import numpy as np
import pytest

from unrolled import layers
from unrolled._memory import ALIGN
from unrolled.kernels import _numba, _threads

pytest.importorskip("numba", reason="the compiled loops are an optional extra")

KINDS = {"lstm": layers.LSTM, "gru": layers.GRU, "simple_rnn": layers.SimpleRNN}
# `[W; U]` of 440 KB (LSTM, 160 units, 12 features), 330 KB (GRU) and 125 KB (SimpleRNN, 170
# units: its last block of units, 42, is short of a whole panel, so the array is zeroed first)
UNITS = {"lstm": 160, "gru": 160, "simple_rnn": 170}
BATCH, STEPS, FEATURES = 21, 80, 12


@pytest.fixture
def large_batch(monkeypatch):
    """The limits scaled down: 21 rows are "over OWN_GEMM_ROWS", and these weights over
    OWN_GEMM_BYTES, so the kernel is the BLAS loop's, with its tail."""
    monkeypatch.setattr(_numba, "enabled", True)
    monkeypatch.setattr(_threads, "NATIVE", True)
    monkeypatch.setattr(_numba, "OWN_GEMM_ROWS", 8)
    monkeypatch.setattr(_numba, "OWN_GEMM_BYTES", 64 << 10)
    monkeypatch.setattr(_threads, "parts", lambda: 1)   # the settings are set by each test


def layer_and_input(kind, steps=STEPS, seed=0, **kwargs):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((BATCH, steps, FEATURES)).astype("float32")
    layer = KINDS[kind](UNITS[kind], return_state=True, **kwargs)
    layer(x[:, :1])
    # small weights keep the units out of chaos over 80 steps, where any two orders of a sum
    # (the NumPy kernel's BLAS, the loops' product) drift apart: with 0.3, GRU's did by 3e-3
    layer.set_weights([rng.normal(0, 0.1, w.shape).astype("float32")
                       for w in layer.get_weights()])
    layer.__dict__.update(_plan=None, _call_plan=None)
    return layer, x


def spy(monkeypatch):
    """Record which loops ran on how many steps: ("units", loop, steps) for `by_units`,
    ("rows", loop, steps) for `by_rows`."""
    calls = []
    by_units, by_rows = _threads.by_units, _threads.by_rows

    def units(fn, args, rows, parts):
        calls.append(("units", fn.__name__, args[0].shape[0]))
        return by_units(fn, args, rows, parts)

    def rows(fn, args, rows, blocks, blas=True):
        calls.append(("rows", fn.__name__, args[0].shape[0]))
        return by_rows(fn, args, rows, blocks, blas)

    monkeypatch.setattr(_threads, "by_units", units)
    monkeypatch.setattr(_threads, "by_rows", rows)
    return calls


def numpy_result(layer, x, **kwargs):
    """The same layer's result on the NumPy kernel."""
    enabled = _numba.enabled
    _numba.enabled = False
    try:
        return layer(x, **kwargs)
    finally:
        _numba.enabled = enabled


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_weights_are_the_units_forms_arrays_in_the_steps_not_yet_written(large_batch, kind):
    from unrolled.kernels import _numba_loops

    layer, _x = layer_and_input(kind)
    cell, U = layer.cell, UNITS[kind]
    tail = _numba.tail_steps(kind, U, FEATURES, BATCH)
    first = STEPS - tail
    seq = np.full((STEPS, BATCH, U), 7.0, dtype=np.float32)
    panels = _numba._tail_panels(kind, seq, first, cell.kernel, cell.recurrent_kernel)
    args = ((cell.kernel, cell.recurrent_kernel, *cell.bias, cell.reset_after) if kind == "gru"
            else (cell.kernel, cell.recurrent_kernel, cell.bias))
    # what the units forms' parts pack for themselves (`UNPACKED`), the same layout whole
    expected = {"lstm": lambda: _numba_loops._lstm_whole(cell.kernel, cell.recurrent_kernel),
                "gru": lambda: _numba_loops._gru_whole(cell.kernel, cell.recurrent_kernel),
                "simple_rnn": lambda: _numba_loops.stacked_panels(*args, BATCH)}[kind]()
    used = [0, 2, 3] if kind == "gru" else [0]
    for i in used:
        np.testing.assert_array_equal(panels[i], expected[i])
        assert panels[i].ctypes.data % ALIGN == 0
        assert np.shares_memory(panels[i], seq[first:])
    for i in set(range(4)) - set(used):     # the placeholders' types, as UNPACKED's
        assert panels[i].ndim == expected[i].ndim and not np.shares_memory(panels[i], seq)
    np.testing.assert_array_equal(seq[:first], 7.0)         # the steps before: untouched
    # and the weights need every one of those steps: one fewer would not hold them
    size = sum(panels[i].nbytes for i in used)
    assert size <= tail * BATCH * U * 4 < size + len(used) * ALIGN + BATCH * U * 4


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("how", ["plain", "masked", "backwards", "states"])
@pytest.mark.parametrize("parts", [2, 3])
def test_a_large_batch_runs_a_units_form_then_the_blas_loop(large_batch, monkeypatch, kind, how,
                                                             parts):
    layer, x = layer_and_input(kind, return_sequences=True, go_backwards=how == "backwards")
    kwargs = {}
    if how == "masked":
        kwargs["mask"] = np.random.default_rng(1).random(x.shape[:2]) < 0.7
    if how == "states":
        h0 = np.random.default_rng(2).standard_normal((BATCH, UNITS[kind])).astype("float32")
        kwargs["initial_state"] = [h0, -h0][:2 if kind == "lstm" else 1]
    tail = _numba.tail_steps(kind, UNITS[kind], FEATURES, BATCH)
    assert 0 < tail <= STEPS * (1 - _numba.TAIL_SHARE)
    monkeypatch.setattr(_threads, "units", lambda: parts)
    calls = spy(monkeypatch)
    allocated = []
    tail_panels = _numba._tail_panels
    monkeypatch.setattr(_numba, "_tail_panels",
                        lambda *a: allocated.append(tail_panels(*a)) or allocated[-1])
    got = layer(x, **kwargs)
    blas = f"{kind}_blas"
    assert calls == [("units", f"{kind}_own", STEPS - tail), ("rows", blas, tail)]
    # the packed weights were in the output's last steps (since written over by the loop)
    assert np.shares_memory(allocated[0][0], got[0])
    for a, b in zip(numpy_result(layer, x, **kwargs), got, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-5)
    np.testing.assert_array_equal(got[1], got[0][:, -1])    # the final h is the last output

    # under the choice's other settings: the BLAS loop alone, the same numbers but for the
    # order of the sums
    monkeypatch.setattr(_threads, "units", lambda: 1)
    calls.clear()
    alone = layer(x, **kwargs)
    assert calls == [("rows", blas, STEPS)]
    for a, b in zip(alone, got, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("kind", list(KINDS))
def test_no_packed_copy_is_allocated(large_batch, monkeypatch, kind):
    import tracemalloc

    layer, x = layer_and_input(kind, return_sequences=True)
    monkeypatch.setattr(_threads, "units", lambda: 2)
    calls = spy(monkeypatch)
    layer(x)
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        layer(x)
        peak = tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()
    assert calls[-2][0] == "units"
    weights = layer.cell.kernel.nbytes + layer.cell.recurrent_kernel.nbytes
    output = BATCH * STEPS * UNITS[kind] * 4
    # the output, the loops' buffers (the parts' `[h | x_t]` and pre-activations, the BLAS
    # loop's step, the final states: 60-180 KB here), but no second copy of the weights, which
    # alone would take the peak past this
    assert peak < output + weights


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("case", ["last", "few_steps", "own_rows"])
def test_the_blas_loop_alone_where_the_tail_does_not_apply(large_batch, monkeypatch, kind,
                                                            case):
    steps = STEPS
    if case == "few_steps":     # the weights would take more than their share of the steps
        steps = int(_numba.tail_steps(kind, UNITS[kind], FEATURES, BATCH)
                    / (1 - _numba.TAIL_SHARE)) - 1
    if case == "own_rows":      # a batch of OWN_GEMM_ROWS rows keeps the loops' own product
        monkeypatch.setattr(_numba, "OWN_GEMM_ROWS", BATCH)
    layer, x = layer_and_input(kind, steps=steps, return_sequences=case != "last")
    monkeypatch.setattr(_threads, "units", lambda: 2)
    calls = spy(monkeypatch)
    got = layer(x)
    if case == "own_rows":      # the units form on weights packed apart, every step
        assert calls == [("units", f"{kind}_own", steps)]
    else:                       # the BLAS loop, in blocks of rows, one per part
        assert calls == [("rows", f"{kind}_blas", steps)]
    for a, b in zip(numpy_result(layer, x), got, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-5)


def test_gru_reset_before_keeps_the_blas_loop(large_batch, monkeypatch):
    layer, x = layer_and_input("gru", return_sequences=True, reset_after=False)
    monkeypatch.setattr(_threads, "units", lambda: 2)
    calls = spy(monkeypatch)
    got = layer(x)
    assert calls == [("rows", "gru_blas", STEPS)]
    for a, b in zip(numpy_result(layer, x), got, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-5)


def test_units_are_offered_past_unit_rows_max_only_to_such_kernels(monkeypatch):
    monkeypatch.setattr(_threads, "cores", lambda: 2)
    monkeypatch.setattr(_threads, "MODE", "auto")
    monkeypatch.setattr(_threads, "native_ready", lambda: True)
    big = _threads.UNIT_ROWS_MAX + 128
    assert _threads.unit_parts(big, 16) == 1
    assert _threads.unit_parts(big, 16, any_batch=True) == 2
    assert _threads.unit_parts(_threads.UNIT_ROWS_MAX - 1, 16) == 2


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_plan_offers_units_to_a_tail_kernel(large_batch, monkeypatch, kind):
    from unrolled.kernels import _dispatch

    monkeypatch.setattr(_threads, "cores", lambda: 2)
    monkeypatch.setattr(_threads, "native_ready", lambda: True)
    monkeypatch.setattr(_threads, "UNIT_ROWS_MAX", BATCH)   # as 128 is to the real 256 rows
    offered = []
    step_threads = _dispatch.step_threads

    def recorded(work, key=None, parts=1, blas=True, every_thread=True, unit_split=1):
        offered.append(unit_split)
        return step_threads(work, key, parts, blas, every_thread, unit_split)

    layer, x = layer_and_input(kind, return_sequences=True)
    monkeypatch.setattr(_dispatch, "step_threads", recorded)
    layer(x)
    assert offered == [2]
    monkeypatch.setattr(_numba, "TAIL_SHARE", 1.0)          # no tail: no units at 21 rows
    layer.__dict__.update(_plan=None, _call_plan=None)
    offered.clear()
    layer(x)
    assert offered in ([], [1])


@pytest.mark.parametrize("return_sequences", [True, False])
def test_cells_of_a_stack_each_take_the_tail_where_their_sequence_is_kept(
        large_batch, monkeypatch, return_sequences):
    """In `RNN(StackedRNNCells([...]))` every cell but the last keeps its whole sequence (the
    next cell's input): those pack their weights into it; the last does only with
    `return_sequences`, else it runs the BLAS loop in blocks of rows."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((BATCH, STEPS, FEATURES)).astype("float32")
    cells = [layers.LSTMCell(160), layers.SimpleRNNCell(160)]   # (its W: 100 KB)
    layer = layers.RNN(layers.StackedRNNCells(cells), return_sequences=return_sequences)
    layer(x[:, :1])
    # (0.1 took the SimpleRNN, on the LSTM's 160 outputs, to 2.2e-5 of the NumPy kernel)
    layer.set_weights([rng.normal(0, 0.05, w.shape).astype("float32")
                       for w in layer.get_weights()])
    layer.__dict__.update(_plan=None, _call_plan=None)
    monkeypatch.setattr(_threads, "units", lambda: 2)
    calls = spy(monkeypatch)
    got = layer(x)
    lstm_tail = _numba.tail_steps("lstm", 160, FEATURES, BATCH)
    rnn_tail = _numba.tail_steps("simple_rnn", 160, 160, BATCH)
    last = ([("units", "simple_rnn_own", STEPS - rnn_tail), ("rows", "simple_rnn_blas", rnn_tail)]
            if return_sequences else [("rows", "simple_rnn_blas", STEPS)])
    assert calls == [("units", "lstm_own", STEPS - lstm_tail), ("rows", "lstm_blas", lstm_tail),
                     *last]
    np.testing.assert_allclose(numpy_result(layer, x), got, rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_padded_batchs_spans_each_check_the_room_they_have(large_batch, monkeypatch, kind):
    """A padded batch (one run of valid steps a row, all from the first) runs the kernel span
    by span, each on fewer steps and rows than the plan's (`_dispatch._by_spans`): each span
    packs its weights into its own output's last steps only where they leave it enough steps,
    else runs the BLAS loop; the numbers are the NumPy kernel's either way."""
    from unrolled.kernels import _runs

    monkeypatch.setattr(_runs, "MIN_GAIN", 0.0)         # spans at this small shape too
    monkeypatch.setattr(_runs, "SPAN_SECONDS", 0.0)
    layer, x = layer_and_input(kind, return_sequences=True)
    lengths = np.random.default_rng(4).integers(1, STEPS + 1, size=BATCH)
    lengths[0] = STEPS
    mask = np.arange(STEPS)[None, :] < lengths[:, None]
    row_work = (FEATURES + UNITS[kind]) * layer.cell.recurrent_kernel.shape[1]
    assert _runs.plan(np.ascontiguousarray(mask.T), row_work) is not None
    monkeypatch.setattr(_threads, "units", lambda: 2)
    calls = spy(monkeypatch)
    got = layer(x, mask=mask)
    assert len(calls) > 2       # several spans
    for how, name, n in calls:  # each span's units form ran only where the weights fit after it
        assert name.endswith("_own" if how == "units" else "_blas") and n > 0
    for a, b in zip(numpy_result(layer, x, mask=mask), got, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-5)
