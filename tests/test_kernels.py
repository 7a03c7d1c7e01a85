"""The whole-sequence kernels (unrolled.kernels) against the readable reference loop.

Every test runs the same layer both ways: `RNN._reference_loop` (one `cell.call` per timestep,
the definition) and the dispatched kernel, on random shapes, for every option, and requires the
same numbers (1e-5 float32, 1e-10 float64). The Keras parity tests then cover the kernels too,
since they call layers normally and the kernel is what runs.
"""

from __future__ import annotations

import contextlib
import itertools
import os

import numpy as np
import pytest

from conftest import assert_close
from unrolled import kernels, layers
from unrolled.kernels import _numba, _outputs, _plan, _runs, _threads
from unrolled.kernels import _dispatch
from unrolled.layers import base
from unrolled.layers.rnn import RNN


# Every test runs twice: on the NumPy kernels and on the compiled (Numba) loops, which serve
# small shapes whenever Numba is installed. `PATH["numba_runs"]` counts compiled calls.
PATH = {"name": None, "numba_runs": 0}
SHIPPED_WORK_MAX = dict(_numba.WORK_MAX)
SHIPPED_BLAS_MIN = dict(_numba.BLAS_MIN)
ROW_PARTS = _threads.parts


@pytest.fixture(autouse=True, params=["numpy", "numba", "numba_blas", "numba_blas_rows"])
def kernel_path(request, monkeypatch):
    # Layers made here leave the auto-naming counters as they were: name-parity tests elsewhere
    # compare them with Keras's per-session numbering.
    monkeypatch.setattr(base, "_name_counts", dict(base._name_counts))
    if request.param.startswith("numba"):
        pytest.importorskip("numba", reason="the compiled loops are an optional extra")
        monkeypatch.setattr(_numba, "enabled", True)
        # "numba": the small-shape loops at every size; "numba_blas": the BLAS loops at every
        # size (float32, default activations; the rest runs the NumPy kernels), step products
        # by their own gemm_nt; "numba_blas_rows": the same with BLAS's products, in two blocks
        # of rows at once.
        work_max = 1 << 40 if request.param == "numba" else -1
        blas_min = 1 << 60 if request.param == "numba" else -1
        monkeypatch.setattr(_numba, "WORK_MAX", {1: work_max, 3: work_max, 4: work_max})
        monkeypatch.setattr(_numba, "BLAS_MIN", {1: blas_min, 3: blas_min, 4: blas_min})
        # the own products however few the steps (tests/test_pack_steps.py has the rule)
        for name in ("PACK_STEPS", "PACK_STEPS_ONE_ROW", "PACK_STEPS_ONE_ROW_LARGE",
                     "PACK_STEPS_FEW_ROWS"):
            monkeypatch.setattr(_numba, name, 1)
        if request.param == "numba_blas_rows":
            monkeypatch.setattr(_numba, "OWN_GEMM_BYTES", -1)
            monkeypatch.setattr(_numba, "OWN_SMALL_BATCH_BYTES", -1)
            monkeypatch.setattr(_threads, "parts", lambda: 2)
        real = _numba.loop_for

        def counting(cell, batch, steps):
            found = real(cell, batch, steps)
            if found is not None:
                PATH["numba_runs"] += 1
            return found

        monkeypatch.setattr(_numba, "loop_for", counting)
    else:
        monkeypatch.setattr(_numba, "enabled", False)
    PATH["name"] = request.param
    yield request.param
    PATH["name"] = None


def compiled_applies(rnn):
    cells = rnn.cell.cells if isinstance(rnn.cell, layers.StackedRNNCells) else [rnn.cell]
    if PATH["name"].startswith("numba_blas"):
        return rnn.dtype == "float32" and all(
            c.activation is _numba.activations.tanh and
            getattr(c, "recurrent_activation", _numba.activations.sigmoid)
            is _numba.activations.sigmoid for c in cells)
    return all(c.activation in _numba._CODES and
               getattr(c, "recurrent_activation", _numba.activations.tanh) in _numba._CODES
               for c in cells)


def sizes(rng, max_batch=5, max_time=9, max_features=6, max_units=7):
    return (int(rng.integers(1, max_batch + 1)), int(rng.integers(1, max_time + 1)),
            int(rng.integers(1, max_features + 1)), int(rng.integers(1, max_units + 1)))


def make_mask(rng, kind, batch, timesteps):
    if kind is None:
        return None
    steps = np.arange(timesteps)[None, :]
    lengths = rng.integers(0, timesteps + 1, size=batch)
    if kind == "post":
        return steps < lengths[:, None]
    if kind == "pre":
        return steps >= (timesteps - lengths)[:, None]
    if kind == "empty_row":  # one sample fully masked, the rest random
        mask = rng.random((batch, timesteps)) < 0.5
        mask[0] = False
        return mask
    return rng.random((batch, timesteps)) < 0.6


def tol(dtype):
    return 1e-10 if np.dtype(dtype) == np.float64 else 1e-5


def compare_tree(fast, ref, what, dtype):
    if isinstance(ref, (list, tuple)):
        assert isinstance(fast, list) and len(fast) == len(ref), (
            f"{what}: nesting differs: kernel {type(fast).__name__} of "
            f"{len(fast) if isinstance(fast, list) else '-'}, reference {len(ref)}")
        for k, (a, b) in enumerate(zip(fast, ref)):
            compare_tree(a, b, f"{what}[{k}]", dtype)
        return
    if ref is None:
        assert fast is None, f"{what}: the reference gives None"
        return
    assert isinstance(fast, np.ndarray) and fast.dtype == ref.dtype, (
        f"{what}: kernel gives {type(fast).__name__} {getattr(fast, 'dtype', '')}, "
        f"reference {ref.dtype}")
    assert_close(fast, ref, atol=tol(dtype), rtol=tol(dtype), what=what)


def both_ways(rnn, x, states, mask=None, training=False):
    """Run the kernel and the reference loop on the same arguments; they must agree."""
    x_before = x.copy()
    states_before = [np.array(s, copy=True) for s in _leaves(states)]
    runs = PATH["numba_runs"]
    rnn.__dict__.update(_plan=None, _call_plan=None)   # planned anew, for the count below
    fast = rnn._run_kernel(x, states, mask, training)
    assert fast is not None, f"no kernel ran for {rnn!r}"
    if PATH["name"].startswith("numba") and compiled_applies(rnn):
        assert PATH["numba_runs"] > runs, "the compiled loop did not run"
    ref = rnn._reference_loop(x, states, mask, training)
    assert all(np.isfinite(leaf).all() for leaf in _leaves(list(ref)) if leaf is not None), (
        "the reference overflowed: this case checks nothing")
    for name, a, b in zip(("last", "outputs", "final"), fast, ref):
        compare_tree(a, b, name, x.dtype)
    np.testing.assert_array_equal(x, x_before, err_msg="the kernel wrote into its input")
    for s, before in zip(_leaves(states), states_before):
        np.testing.assert_array_equal(s, before, err_msg="the kernel wrote into a state it was given")
    return fast


def _leaves(tree):
    if isinstance(tree, (list, tuple)):
        return [leaf for item in tree for leaf in _leaves(item)]
    return [tree]


def built(rnn, x):
    rnn(x)  # builds; the weights are random (glorot/orthogonal), the bias is made non-zero
    for w in rnn.weights:
        if w.name == "bias":
            w.assign(np.linspace(-0.5, 0.5, w.value.size).reshape(w.shape))
    return rnn


MASKS = [None, "post", "pre", "random", "empty_row"]
CELLS = ["simple_rnn", "lstm", "gru", "gru_reset_before"]


def make_cell(kind, units, **kwargs):
    # Named, so these many cells leave the auto-naming counters (which other tests compare with
    # Keras's per-session numbering) untouched.
    kwargs.setdefault("name", f"kernel_test_{kind}")
    if kind == "simple_rnn":
        return layers.SimpleRNNCell(units, **kwargs)
    if kind == "lstm":
        return layers.LSTMCell(units, **kwargs)
    return layers.GRUCell(units, reset_after=kind == "gru", **kwargs)


def random_states(rng, rnn, batch):
    """Random initial states nested as the layer's own initial states."""
    def draw(tree):
        if isinstance(tree, list):
            return [draw(t) for t in tree]
        return rng.standard_normal(tree.shape).astype(tree.dtype)

    return draw(rnn.get_initial_state(batch))


@pytest.mark.parametrize("cell_kind", CELLS)
@pytest.mark.parametrize("mask_kind", MASKS)
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("mode", ["plain", "zero_output_for_mask", "unroll", "both"])
def test_every_option(rng, cell_kind, mask_kind, go_backwards, return_sequences, mode):
    for with_h0, return_state in itertools.product([False, True], [False, True]):
        b, t, f, u = sizes(rng)
        x = rng.standard_normal((b, t, f)).astype("float32")
        rnn = built(layers.RNN(make_cell(cell_kind, u), return_sequences=return_sequences,
                               return_state=return_state, go_backwards=go_backwards,
                               zero_output_for_mask=mode in ("zero_output_for_mask", "both"),
                               unroll=mode in ("unroll", "both")), x)
        states = random_states(rng, rnn, b) if with_h0 else rnn.get_initial_state(b)
        both_ways(rnn, x, states, make_mask(rng, mask_kind, b, t))


def take_every_span(monkeypatch):
    """Make `_runs.plan` take spans whenever they leave out any masked step; returns the list
    that `_by_spans` appends to on each run."""
    monkeypatch.setattr(_runs, "RATE", 1.0)
    monkeypatch.setattr(_runs, "SPAN_SECONDS", 0.0)
    monkeypatch.setattr(_runs, "MIN_GAIN", 0.0)
    runs, real = [], _dispatch._by_spans

    def counted(*args):
        runs.append(args[-1])
        return real(*args)

    monkeypatch.setattr(_dispatch, "_by_spans", counted)
    return runs


@pytest.mark.parametrize("cell_kind", CELLS)
@pytest.mark.parametrize("mask_kind", ["post", "pre"])
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("mode", ["plain", "zero_output_for_mask", "unroll"])
def test_padded_batches_run_in_spans_of_their_valid_rows(rng, monkeypatch, cell_kind, mask_kind,
                                                         go_backwards, return_sequences, mode):
    """Padding after the data or before it, processed either way: the valid steps of each row
    are one run, so the call runs in spans of steps over the rows valid in each
    (unrolled.kernels._runs), with rows that are all padding, and all data, among them."""
    runs = take_every_span(monkeypatch)
    for with_h0, return_state in itertools.product([False, True], [False, True]):
        b, t, f, u = int(rng.integers(4, 12)), int(rng.integers(4, 15)), 3, 5
        lengths = np.concatenate([[0, t], rng.integers(0, t + 1, size=b - 2)])
        rng.shuffle(lengths)
        steps = np.arange(t)[None, :]
        mask = (steps < lengths[:, None] if mask_kind == "post"
                else steps >= (t - lengths)[:, None])
        x = rng.standard_normal((b, t, f)).astype("float32")
        rnn = built(layers.RNN(make_cell(cell_kind, u), return_sequences=return_sequences,
                               return_state=return_state, go_backwards=go_backwards,
                               zero_output_for_mask=mode == "zero_output_for_mask",
                               unroll=mode == "unroll"), x)
        states = random_states(rng, rnn, b) if with_h0 else rnn.get_initial_state(b)
        before = len(runs)
        both_ways(rnn, x, states, mask)
        assert len(runs) == before + 1, "the call did not run in spans"
        assert sum(rows * (stop - start) for start, stop, rows in runs[-1].spans) < b * t


def test_masks_of_other_shapes_run_whole(rng, monkeypatch):
    """A row with a gap in its valid steps, or runs that neither all start at the first step
    nor all end at the last: no spans, the whole masked call."""
    runs = take_every_span(monkeypatch)
    gap = np.ones((4, 8), dtype=bool)
    gap[1, 3] = False                                   # row 1: valid, masked, valid
    mixed = np.zeros((4, 8), dtype=bool)
    mixed[:2, :5] = True                                # rows 0-1 from the start
    mixed[2:, 3:] = True                                # rows 2-3 to the end
    assert _runs.plan(gap.T, 100) is None and _runs.plan(mixed.T, 100) is None
    rnn = built(layers.RNN(make_cell("lstm", 5), return_sequences=True),
                np.zeros((4, 8, 3), "float32"))
    for mask in (gap, mixed):
        both_ways(rnn, rng.standard_normal((4, 8, 3)).astype("float32"),
                  rnn.get_initial_state(4), mask)
    assert runs == []


def test_spans_cover_every_valid_step_and_only_those_rows_leave(rng):
    """`_runs.plan`'s spans tile the steps, and no row left out of a span has a valid step in
    it: the spans' rows are those valid in some step of the span, first in `order`."""
    seen = 0
    for trial in range(200):
        b, t = int(rng.integers(2, 40)), int(rng.integers(2, 50))
        lengths = rng.integers(0, t + 1, size=b)
        steps = np.arange(t)[None, :]
        mask = steps < lengths[:, None] if trial % 2 else steps >= (t - lengths)[:, None]
        spans = _runs.plan(mask.T, 10 ** 9)
        if spans is None:
            continue
        seen += 1
        valid = mask.T[:, spans.order]
        assert spans.spans[0][0] == 0 and spans.spans[-1][1] == t
        assert len(spans.spans) <= _runs.MAX_SEGMENTS
        for (start, stop, rows), following in zip(spans.spans, spans.spans[1:] + [(t,)]):
            assert stop == following[0]
            assert not valid[start:stop, rows:].any()
            assert rows == 0 or valid[start:stop, rows - 1].any()
    assert seen > 100


@pytest.mark.parametrize("units", [16, 37, 80, 150])
@pytest.mark.parametrize("mask_kind", [None, "random", "empty_row"])
@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("cell_kind", ["lstm", "gru"])
def test_gated_cells_over_several_panels_of_units(rng, cell_kind, units, mask_kind,
                                                  return_sequences):
    """LSTM and GRU with more units than one panel of the compiled loops' own product holds (16
    columns a panel; 4 * 37 gate columns = 9 whole panels and one cut short), and more than one
    block of units of their fused loops (GATE_UNITS = 64: 80 = 64 + 16; 150 = 64 + 64 + 22,
    whose 88 LSTM gate columns end inside a panel), with masks."""
    b, t, f = 6, 7, 3
    x = rng.standard_normal((b, t, f)).astype("float32")
    rnn = built(layers.RNN(make_cell(cell_kind, units), return_sequences=return_sequences,
                           return_state=True), x)
    both_ways(rnn, x, random_states(rng, rnn, b), make_mask(rng, mask_kind, b, t))


@pytest.mark.parametrize("cell_kind", ["simple_rnn", "lstm", "gru"])
@pytest.mark.parametrize("mask_kind", [None, "random"])
@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("threads_of_rows", [1, 2])
def test_fused_loops_over_several_blocks_of_rows(rng, monkeypatch, cell_kind, mask_kind,
                                                 return_sequences, threads_of_rows):
    """A batch of 2 FUSED_ROWS + 7: the fused loops run a step by FUSED_ROWS rows at a time (20,
    or 16 with AVX-512), so two whole blocks and 7 rows, or on two threads of rows a block and
    a part each, with 80 units (two blocks of units for LSTM and GRU)."""
    from unrolled.kernels._numba_loops import FUSED_ROWS

    monkeypatch.setattr(_threads, "parts", lambda: threads_of_rows)
    b, t, f = 2 * FUSED_ROWS + 7, 5, 3
    x = rng.standard_normal((b, t, f)).astype("float32")
    rnn = built(layers.RNN(make_cell(cell_kind, 80), return_sequences=return_sequences,
                           return_state=True), x)
    both_ways(rnn, x, random_states(rng, rnn, b), make_mask(rng, mask_kind, b, t))


@pytest.mark.parametrize("cell_kind", ["lstm", "gru"])
@pytest.mark.parametrize("mask_kind", [None, "random"])
@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("threads_of_rows", [1, 2])
@pytest.mark.parametrize("layout", ["C", "strided_states"])
def test_fused_loops_split_the_step_products_where_the_weights_are_large(
        rng, monkeypatch, cell_kind, mask_kind, return_sequences, threads_of_rows, layout):
    """Weights over SPLIT_BYTES: `h W` with h_{t-1} read where it is (the output's previous
    step, the initial state; a copy without return_sequences), then `+ x_t U`, SPLIT_ROWS rows
    a step in blocks of SPLIT_UNITS units: two whole blocks of rows and 7, 220 units (blocks of
    32 and a last of 28), initial states given as strided views."""
    from unrolled.kernels import _numba_loops as loops

    monkeypatch.setattr(_threads, "parts", lambda: threads_of_rows)
    units, f = 220, 3
    assert loops.splits(units, f, 4 if cell_kind == "lstm" else 3, loops.SPLIT_ROWS)
    b, t = 2 * loops.SPLIT_ROWS + 7, 4
    x = rng.standard_normal((b, t, f)).astype("float32")
    rnn = built(layers.RNN(make_cell(cell_kind, units), return_sequences=return_sequences,
                           return_state=True), x)
    states = random_states(rng, rnn, b)
    if layout == "strided_states":
        states = [np.asfortranarray(s) for s in states]
    both_ways(rnn, x, states, make_mask(rng, mask_kind, b, t))


@pytest.mark.parametrize("cell_kind", ["lstm", "gru"])
@pytest.mark.parametrize("units, rows, split", [(220, 32, True), (220, 31, False),
                                                (220, 200, True), (100, 200, False)])
def test_weights_are_packed_apart_only_for_a_split_step(rng, cell_kind, units, rows, split):
    """W and U are packed apart (the loop's sign to split its step product) only where the
    weights are over SPLIT_BYTES and each block has at least SPLIT_MIN_ROWS rows; else
    `[W; U]` as one. Either holds every weight once."""
    from unrolled.kernels import _numba_loops as loops

    gates, f = (4, 3) if cell_kind == "lstm" else (3, 3)
    kernel = rng.standard_normal((f, gates * units)).astype("float32")
    recurrent = rng.standard_normal((units, gates * units)).astype("float32")
    zeros = np.zeros(gates * units, dtype="float32")
    if cell_kind == "lstm":
        panels = loops.lstm_panels(kernel, recurrent, zeros, rows)
    else:
        panels = loops.gru_panels(kernel, recurrent, zeros, zeros, True, rows)
    assert loops._split_panels(panels, units) is split
    assert (panels[0].shape[1] == units) is split
    real = [p for p in panels if p.shape[:2] != (1, 1)]
    assert sum(p.shape[0] * p.shape[1] * p.shape[2] for p in real) >= (units + f) * gates * units


@pytest.mark.parametrize("cell_kind", ["simple_rnn", "lstm", "gru"])
@pytest.mark.parametrize("units", [16, 32, 64, 128])
@pytest.mark.parametrize("mask_kind", [None, "random"])
@pytest.mark.parametrize("batch, threads_of_rows", [(47, 1), (47, 2), (1, 1), (6, 1), (15, 1)])
def test_fused_loops_read_the_stacked_weights_in_place(rng, monkeypatch, cell_kind, units,
                                                       mask_kind, batch, threads_of_rows):
    """The fused loops read `[W; U]` where the cell keeps it (the recurrent kernel and the
    kernel are views of one array) where that is as fast as a packed copy: the reference's
    numbers, and the packed copy's to the bit. LSTM and GRU at 128 units (rows of 2 and 1.5
    KB) keep the copy, and so do units that are not whole panels (16 units where a panel is 32
    columns, with AVX-512). Blocks of rows in every remainder of the product's row blocks (5,
    or 8 with AVX-512), a lone row included."""
    from unrolled.kernels._numba_panels import WIDTH

    monkeypatch.setattr(_threads, "parts", lambda: threads_of_rows)
    t, f = 5, 3
    x = rng.standard_normal((batch, t, f)).astype("float32")
    rnn = built(layers.RNN(make_cell(cell_kind, units), return_sequences=True,
                           return_state=True), x)
    cell = rnn.cell
    assert cell.kernel.base is cell.recurrent_kernel.base is not None
    expected = units % WIDTH == 0 and not (cell_kind != "simple_rnn" and units == 128)
    assert (_numba.stacked_weights(cell) is not None) == expected
    states, mask = random_states(rng, rnn, batch), make_mask(rng, mask_kind, batch, t)
    fast = both_ways(rnn, x, states, mask)
    if PATH["name"] == "numba_blas" and expected:
        monkeypatch.setattr(_numba, "IN_PLACE_BYTES", -1)           # the packed copy instead
        rnn.go_backwards = rnn.go_backwards                          # drops the kept plan
        packed = rnn._run_kernel(x, states, mask, False)
        np.testing.assert_array_equal(fast[1], packed[1])


@pytest.mark.parametrize("units", [5, 16, 37, 64, 80, 150])
@pytest.mark.parametrize("gates, first, total", [(4, 0, 4), (2, 0, 3), (1, 2, 3)])
@pytest.mark.parametrize("below", [0, 7])
@pytest.mark.parametrize("block", ["GATE_UNITS", "SPLIT_UNITS"])
def test_gate_panels_lay_out_each_block_of_units_gate_by_gate(rng, units, gates, first, total,
                                                               below, block):
    """`gate_panels`: block q of GATE_UNITS (or SPLIT_UNITS) units holds gates
    first..first+gates-1 of its units side by side, WIDTH columns a panel, the rows of `[top;
    bottom]` in each; zeros past the last column. Whole panels and a partial last block alike
    (a NumPy reference of the layout)."""
    from unrolled.kernels import _numba_loops as loops

    top = rng.standard_normal((units, total * units)).astype("float32")
    bottom = rng.standard_normal((below, total * units)).astype("float32")
    block = getattr(loops, block)
    panels = loops.gate_panels(top, bottom, first, gates, units, block)
    rows = np.concatenate([top, bottom])
    width = loops.WIDTH
    per = gates * block // width
    expected = np.zeros_like(panels)
    for q, u0 in enumerate(range(0, units, block)):
        n = min(block, units - u0)
        columns = np.concatenate([rows[:, (first + g) * units + u0:(first + g) * units + u0 + n]
                                  for g in range(gates)], axis=1)  # (K, gates * n)
        for pos in range(gates * n):
            expected[q * per + pos // width, :, pos % width] = columns[:, pos]
    np.testing.assert_array_equal(panels, expected)


def _one_array(cell):
    # `[W; U]` over the memory of the cell's recurrent kernel and kernel, which must be views of
    # one array, W's rows right before U's, starting on a cache line
    W, U = cell.recurrent_kernel, cell.kernel
    assert W.base is not None and U.base is W.base
    assert U.ctypes.data == W.ctypes.data + W.nbytes and W.ctypes.data % 64 == 0
    return np.ndarray((W.shape[0] + U.shape[0], W.shape[1]), dtype=W.dtype, buffer=W.base,
                      offset=W.ctypes.data - W.base.ctypes.data)


def _break_pair(cell):
    # the kernel replaced by a copy behind the cell's back: `[W; U]` is no longer one array
    cell.__dict__["kernel"] = cell.kernel.copy()
    next(w for w in cell.weights if w.name == "kernel").value = cell.kernel


def test_weights_stay_views_of_one_array_and_a_broken_pair_is_packed(rng, monkeypatch):
    """Assigning and set_weights write into the views; a copy (deepcopy, pickle) makes its
    pair views of one array again; a cell whose pair is no longer one array gets the packed
    copy, with the same numbers."""
    import copy
    import pickle

    x = rng.standard_normal((4, 6, 3)).astype("float32")
    rnn = built(layers.RNN(make_cell("gru", 32), return_sequences=True), x)
    cell = rnn.cell
    stacked = _one_array(cell)
    assert _numba.stacked_weights(cell) is not None
    np.testing.assert_array_equal(_numba.stacked_weights(cell), stacked)
    cell.kernel = np.ones_like(cell.kernel)
    rnn.set_weights([w * 0.5 for w in rnn.get_weights()])
    np.testing.assert_array_equal(_one_array(cell), stacked)
    np.testing.assert_array_equal(stacked[32:], np.full((3, 96), 0.5, dtype="float32"))
    np.testing.assert_array_equal(stacked[:32], cell.recurrent_kernel)
    for twin in (copy.deepcopy(rnn), pickle.loads(pickle.dumps(rnn))):
        pair = _one_array(twin.cell)
        assert not np.shares_memory(pair, stacked)
        assert {id(w.value) for w in twin.cell.weights} >= {id(twin.cell.kernel),
                                                            id(twin.cell.recurrent_kernel)}
        assert _numba.stacked_weights(twin.cell) is not None
        np.testing.assert_array_equal(twin(x), rnn(x))
    twin = copy.deepcopy(rnn)
    _break_pair(twin.cell)
    assert _numba.stacked_weights(twin.cell) is None
    np.testing.assert_array_equal(twin(x), rnn(x))


@pytest.mark.parametrize("mask_kind", [None, "random"])
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("batch", [1, 3, 7, 12])
@pytest.mark.parametrize("cell_kind", ["lstm", "simple_rnn"])
def test_blas_loop_takes_a_step_as_one_product_over_the_adjacent_weights(
        rng, monkeypatch, mask_kind, go_backwards, batch, cell_kind):
    """Over GEMV_ROWS rows, LSTM's and SimpleRNN's BLAS loops make each step one product
    `[h | x_t] [W; U]` over the array that `_numba.adjacent_weights` finds, the cell's two
    kernels where they lie: zeros in its place leave the numbers of a cell with zero kernels.
    Where the pair is not one array, and for 1 to GEMV_ROWS rows (sgemv a row, rows_product),
    they run the projection and `h W` apart. The reference's numbers every way."""
    import copy

    if PATH["name"].startswith("numba_blas"):
        monkeypatch.setattr(_numba, "OWN_GEMM_BYTES", -1)
        monkeypatch.setattr(_numba, "OWN_SMALL_BATCH_BYTES", -1)
        monkeypatch.setattr(_threads, "parts", lambda: 1)
        monkeypatch.setattr(_numba, "CHUNK_BYTES", 0)        # apart: a projection a step
    x = rng.standard_normal((batch, 6, 5)).astype("float32")
    rnn = built(layers.RNN(make_cell(cell_kind, 16), return_sequences=True, return_state=True,
                           go_backwards=go_backwards), x)
    cell = rnn.cell
    np.testing.assert_array_equal(_numba.adjacent_weights(cell), _one_array(cell))
    assert _numba.adjacent_weights(cell).base is cell.kernel.base
    states, mask = random_states(rng, rnn, batch), make_mask(rng, mask_kind, batch, 6)
    fast = both_ways(rnn, x, states, mask)

    broken = copy.deepcopy(rnn)
    _break_pair(broken.cell)
    assert _numba.adjacent_weights(broken.cell) is None
    apart = both_ways(broken, x, states, mask)
    for a, b in zip(_leaves(list(fast)), _leaves(list(apart))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

    if PATH["name"].startswith("numba_blas"):
        zero = copy.deepcopy(rnn)
        zero.set_weights([np.zeros_like(w) if w.ndim == 2 else w for w in rnn.get_weights()])
        expected = (zero if batch > _numba.GEMV_ROWS else rnn)._reference_loop(
            x, states, mask, False)
        monkeypatch.setattr(_numba, "adjacent_weights", lambda c: np.zeros(
            (c.units + c.kernel.shape[0], c.kernel.shape[1]), dtype=np.float32))
        rnn.go_backwards = rnn.go_backwards                          # drops the kept plan
        for a, b in zip(_leaves(list(rnn._run_kernel(x, states, mask, False))),
                        _leaves(list(expected))):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make", ["packed", "packed_stack", "gate_panels"])
@pytest.mark.parametrize("columns", [32, 96, 100, 256])
def test_panels_start_on_a_cache_line(rng, make, columns):
    """Every packed copy of the weights starts on a 64-byte boundary (so does each of its
    panels), whatever the allocator gave, and holds the same numbers as a plain one."""
    from unrolled.kernels import _numba_loops as loops
    from unrolled.kernels import _numba_panels as panels

    for rows in range(1, 40, 3):                    # sizes that land at every offset
        W = rng.standard_normal((rows, columns)).astype("float32")
        U = rng.standard_normal((3, columns)).astype("float32")
        if make == "packed":
            got, like = panels.packed(W), np.concatenate([W], axis=0)
        elif make == "packed_stack":
            got, like = panels.packed_stack(W, U), np.concatenate([W, U])
        else:
            units = columns // 4
            got = loops.gate_panels(W[:, :4 * units], U[:, :4 * units], 0, 4, units, 32)
            like = None
        assert got.ctypes.data % 64 == 0 and got.flags.c_contiguous
        assert got.shape[2] == panels.WIDTH and got.strides[0] % 64 == 0
        if like is not None:
            flat = np.concatenate(list(got), axis=1)[:, :columns]   # the panels side by side
            np.testing.assert_array_equal(flat, like)
            assert not got[-1][:, columns - panels.WIDTH * (got.shape[0] - 1):].any()


def test_aligned_empty_starts_on_a_cache_line():
    from unrolled._memory import aligned_empty

    for n in range(1, 200, 7):                      # (an empty array has no first byte)
        for dtype in ("float32", "float64", "int8"):
            a = aligned_empty((n, 3), dtype)
            assert a.shape == (n, 3) and a.dtype == np.dtype(dtype) and a.flags.c_contiguous
            assert a.ctypes.data % 64 == 0 and a.flags.writeable


@pytest.mark.parametrize("cell_kind", CELLS + ["stack"])
@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copy_of_a_called_layer_runs_on_its_own_weights(rng, cell_kind, how):
    """A layer keeps a kernel plan bound to its weight arrays; a copy of it (copy.deepcopy,
    pickle) has arrays of its own and must not run on the original's: once the copy's
    weights change, its output follows them and the original's does not move. (The copy
    once kept the plan, and with it the original's weights.)"""
    import copy
    import pickle

    b, t, f, u = sizes(rng)
    x = rng.standard_normal((b, t, f)).astype("float32")
    cell = ([make_cell("lstm", u), make_cell("gru", u + 1)] if cell_kind == "stack"
            else make_cell(cell_kind, u))
    rnn = built(layers.RNN(cell, return_sequences=True), x)
    before = rnn(x)
    assert rnn.__dict__.get("_plan") is not None                 # a plain call keeps a plan
    twin = copy.deepcopy(rnn) if how == "deepcopy" else pickle.loads(pickle.dumps(rnn))
    np.testing.assert_array_equal(twin(x), before)
    twin.set_weights([w * 0.5 for w in twin.get_weights()])
    _compare_result(twin(x), _reference_call(twin, x), "float32")  # the copy's own weights
    assert not np.allclose(twin(x), before)
    np.testing.assert_array_equal(rnn(x), before)


@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid", "linear", None, "softsign",
                                        "softmax", "hard_sigmoid"])
@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("cell_kind", CELLS)
def test_activations_and_bias(rng, activation, use_bias, cell_kind):
    b, t, f, u = sizes(rng)
    x = rng.standard_normal((b, t, f)).astype("float32")
    bounded = activation in ("tanh", "sigmoid", "softsign", "softmax", "hard_sigmoid")
    gates = {} if cell_kind == "simple_rnn" else {
        "recurrent_activation": activation if bounded else "hard_sigmoid"}
    rnn = built(layers.RNN(make_cell(cell_kind, u, activation=activation, use_bias=use_bias,
                                     **gates), return_sequences=True), x)
    both_ways(rnn, x, random_states(rng, rnn, b), make_mask(rng, "random", b, t))


@pytest.mark.parametrize("cell_kind", CELLS)
@pytest.mark.parametrize("mask_kind", [None, "random"])
@pytest.mark.parametrize("go_backwards", [False, True])
def test_float64(rng, cell_kind, mask_kind, go_backwards):
    b, t, f, u = sizes(rng)
    x = rng.standard_normal((b, t, f))
    rnn = built(layers.RNN(make_cell(cell_kind, u, dtype="float64"), return_sequences=True,
                           go_backwards=go_backwards), x)
    fast = both_ways(rnn, x, rnn.get_initial_state(b), make_mask(rng, mask_kind, b, t))
    assert fast[1].dtype == np.float64


@pytest.mark.parametrize("mask_kind", [None, "post", "random"])
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("state_form", ["nested", "bare"])
def test_stacks(rng, mask_kind, go_backwards, return_sequences, state_form):
    b, t, f, _ = sizes(rng)
    units = [int(u) for u in rng.integers(1, 8, size=int(rng.integers(1, 4)))]
    kinds = list(rng.permutation(CELLS))
    cells = [make_cell(kinds[k % 4], u) for k, u in enumerate(units)]
    x = rng.standard_normal((b, t, f)).astype("float32")
    rnn = built(layers.RNN(cells, return_sequences=return_sequences, return_state=True,
                           go_backwards=go_backwards, zero_output_for_mask=mask_kind == "post"),
                x)
    states = random_states(rng, rnn, b)
    if state_form == "bare":  # a single-state cell's entry may be a bare array
        states = [s[0] if len(s) == 1 else s for s in states]
    both_ways(rnn, x, states, make_mask(rng, mask_kind, b, t))


@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("mask_kind", [None, "random"])
def test_chunked_projection(rng, monkeypatch, return_sequences, mask_kind):
    """Long sequences project x U in chunks; force tiny chunks (1..3 steps) to test the seams."""
    for chunk_steps in (1, 2, 3):
        b, t, f, u = 3, 10, 4, 5
        monkeypatch.setattr(_plan, "CHUNK_BYTES", 0)
        monkeypatch.setattr(_plan, "CHUNK_STEPS", chunk_steps)
        x = rng.standard_normal((b, t, f)).astype("float32")
        rnn = built(layers.RNN([make_cell(kind, 6) for kind in CELLS] + [layers.SimpleRNNCell(u, name="kernel_test")],
                               return_sequences=return_sequences, go_backwards=True), x)
        states = random_states(rng, rnn, b)
        both_ways(rnn, x, states, make_mask(rng, mask_kind, b, t))


@pytest.mark.parametrize("mask_kind", [None, "random", "empty_row"])
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("layout", ["batch_major", "strided"])
def test_blas_loops_with_one_step_projections(rng, monkeypatch, mask_kind, go_backwards, layout):
    """The BLAS loops as they run at the largest shapes: BLAS's step products, the whole batch
    in one block, the input projection one step at a time (the seam between two chunks at
    every step; test_chunked_projection's setting reaches the NumPy kernels only). Stacked and
    alone, a batch-major or strided input, either direction."""
    if PATH["name"].startswith("numba_blas"):
        monkeypatch.setattr(_numba, "OWN_GEMM_BYTES", -1)
        monkeypatch.setattr(_numba, "OWN_SMALL_BATCH_BYTES", -1)
        monkeypatch.setattr(_threads, "parts", lambda: 1)
        monkeypatch.setattr(_numba, "CHUNK_BYTES", 0)
    for b, t, f, u in [(3, 12, 4, 6), (1, 7, 2, 5), (4, 9, 11, 3)]:
        source = rng.standard_normal((b, 2 * t, f)).astype("float32")
        x = source[:, ::2] if layout == "strided" else source[:, :t]
        if layout == "batch_major":
            x = np.ascontiguousarray(x)
        cells = [make_cell(kind, u) for kind in CELLS]
        rnn = built(layers.RNN(cells, return_sequences=True, return_state=True,
                               go_backwards=go_backwards), x)
        both_ways(rnn, x, random_states(rng, rnn, b), make_mask(rng, mask_kind, b, t))
        for kind in CELLS:
            one = built(layers.RNN(make_cell(kind, u), return_sequences=True,
                                   go_backwards=go_backwards), x)
            both_ways(one, x, random_states(rng, one, b), make_mask(rng, mask_kind, b, t))


def twins(make, x):
    """Two layers with the same weights: the first runs kernels, the second only the reference."""
    fast, slow = make(), make()
    fast(x)
    slow(x)
    slow.set_weights(fast.get_weights())
    slow._run_kernel = lambda *args: None
    return fast, slow


@pytest.mark.parametrize("stacked", [False, True])
def test_stateful_calls_carry_the_same_states(rng, stacked):
    b, t, f, u = sizes(rng, max_batch=4)
    x = [rng.standard_normal((b, t, f)).astype("float32") for _ in range(3)]

    def make():
        if stacked:
            return layers.RNN([layers.LSTMCell(u, name="kernel_test"), layers.GRUCell(3, name="kernel_test")], stateful=True,
                              return_sequences=True, return_state=True)
        return layers.SimpleRNN(u, stateful=True, return_state=True)

    fast, slow = twins(make, x[0])
    fast.reset_state()
    slow.reset_state()
    mask = make_mask(rng, "random", b, t)
    for step, xs in enumerate(x + x[:1]):
        if step == 3:
            fast.reset_state()
            slow.reset_state()
        compare_tree(list(fast(xs, mask=mask)), list(slow(xs, mask=mask)), f"call {step}",
                     "float32")
        compare_tree(fast.states, slow.states, f"carried states after call {step}", "float32")


def test_initial_state_through_call(rng):
    b, t, f, u = sizes(rng)
    x = rng.standard_normal((b, t, f)).astype("float32")
    h0 = rng.standard_normal((b, u))  # float64 in: converted to the layer's float32
    fast, slow = twins(lambda: layers.SimpleRNN(u, return_sequences=True, return_state=True), x)
    compare_tree(list(fast(x, initial_state=h0)), list(slow(x, initial_state=h0)), "output",
                 "float32")


def test_returned_state_does_not_alias_the_sequence(rng):
    x = rng.standard_normal((2, 4, 3)).astype("float32")
    rnn = layers.SimpleRNN(5, return_sequences=True, return_state=True)
    seq, h = rnn(x)
    kept = h.copy()
    seq[...] = 0
    np.testing.assert_array_equal(h, kept)


# ---------------------------------------------------------------- dispatch


def _forbid_reference(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the reference loop ran where a kernel should have")

    monkeypatch.setattr(RNN, "_reference_loop", refuse)


@pytest.mark.parametrize("make", [
    lambda: layers.SimpleRNN(4, return_sequences=True),
    lambda: layers.RNN(layers.SimpleRNNCell(4, name="kernel_test"), go_backwards=True),
    lambda: layers.RNN([layers.SimpleRNNCell(4, name="kernel_test"), layers.SimpleRNNCell(2, name="kernel_test")], return_state=True),
    lambda: layers.SimpleRNN(4, dropout=0.5, recurrent_dropout=0.5),  # inference: no dropout
    lambda: layers.LSTM(4, return_sequences=True, return_state=True),
    lambda: layers.GRU(4, dropout=1.0, recurrent_dropout=1.0),  # gated cells: rate 1 is no dropout
    lambda: layers.GRU(4, go_backwards=True),
    lambda: layers.GRU(4, reset_after=False),
    lambda: layers.RNN([layers.LSTMCell(3, name="kernel_test"), layers.GRUCell(2, name="kernel_test"), layers.SimpleRNNCell(2, name="kernel_test")]),
], ids=["simple_rnn", "rnn_backwards", "stack", "dropout_in_inference", "lstm", "gru_rate_1",
        "gru", "gru_reset_before", "mixed_stack"])
def test_kernel_dispatch_happens(rng, monkeypatch, make):
    x = rng.standard_normal((3, 5, 2)).astype("float32")
    layer = make()
    layer(x)
    _forbid_reference(monkeypatch)
    layer(x)
    layer(x, mask=make_mask(rng, "random", 3, 5))
    if not isinstance(layer.cell, layers.SimpleRNNCell) or not layer.cell.dropout:
        layer(x, training=True)  # no dropout to apply: training runs the kernel too


class _MySimpleCell(layers.SimpleRNNCell):
    """A subclass may change `call`: it must get the reference loop."""

    def call(self, inputs, states, training=False):
        h, new = super().call(inputs, states, training)
        return h * 0.5, [s * 0.5 for s in new]


@pytest.mark.parametrize("case", ["subclass", "float16", "training_dropout", "stack_with_user_cell"])
def test_reference_loop_where_no_kernel_applies(rng, monkeypatch, case):
    x = rng.standard_normal((3, 5, 2)).astype("float32")
    training = False
    if case == "subclass":
        layer = layers.RNN(_MySimpleCell(4, name="kernel_test"))
    elif case == "float16":
        layer = layers.SimpleRNN(4, dtype="float16")
    elif case == "training_dropout":
        layer = layers.LSTM(4, recurrent_dropout=0.3, seed=1)
        training = True
    else:
        layer = layers.RNN([layers.SimpleRNNCell(4, name="kernel_test"), _MySimpleCell(3, name="kernel_test")])
    layer(x)
    calls = []
    reference = RNN._reference_loop

    def spy(self, *args):
        calls.append(type(self).__name__)
        return reference(self, *args)

    monkeypatch.setattr(RNN, "_reference_loop", spy)
    assert layer._run_kernel(x.astype(layer.dtype), layer.get_initial_state(3), None,
                             training) is None
    layer(x, training=training)
    assert calls, "the reference loop did not run"


def test_kernels_registry_lists_exact_classes():
    assert set(kernels.KERNELS) == {layers.SimpleRNNCell, layers.LSTMCell, layers.GRUCell}
    assert _MySimpleCell not in kernels.KERNELS


# ------------------------------------------------------------------------ BLAS threads


def test_threadpoolctl_finds_numpys_blas():
    """The per-step thread limit needs threadpoolctl (a dependency) and a BLAS it controls."""
    assert _threads.blas_controllers(), (
        "threadpoolctl found no BLAS library: the per-step loop runs on BLAS's default threads")


@pytest.mark.parametrize("cell_kind", CELLS)
@pytest.mark.parametrize("mask_kind", [None, "random"])
def test_one_blas_thread_gives_the_same_numbers_and_restores_the_setting(
        rng, monkeypatch, cell_kind, mask_kind):
    """Forced on for small shapes: during the loop BLAS runs one thread; after it, as before."""
    monkeypatch.setattr(_numba, "enabled", False)  # the NumPy kernels' loop is the one limited
    PATH["name"] = "numpy"
    before = _threads.current_threads()
    for c in _threads.blas_controllers():  # two threads at least, so the limit changes something
        c.set_num_threads(max(2, c.get_num_threads()))
    try:
        start = _threads.current_threads()
        monkeypatch.setattr(_threads, "STEP_WORK_MIN", 0)
        monkeypatch.setattr(_threads, "MODE", "1")  # limit whatever the machine's load
        seen = []
        real = _threads.step_threads

        @contextlib.contextmanager
        def spy(work, key=None, parts=1, blas=True, **more):
            with real(work, key, parts, blas=blas, **more):
                seen.append(_threads.current_threads())
                yield

        monkeypatch.setattr(_dispatch, "step_threads", spy)
        b, t, f, u = sizes(rng)
        x = rng.standard_normal((b, t, f)).astype("float32")
        rnn = built(layers.RNN(make_cell(cell_kind, u), return_sequences=True), x)
        both_ways(rnn, x, random_states(rng, rnn, b), make_mask(rng, mask_kind, b, t))
        assert seen and all(n == [1] * len(start) for n in seen), seen
        assert _threads.current_threads() == start
    finally:
        for c, n in zip(_threads.blas_controllers(), before):
            c.set_num_threads(n)


def test_thread_setting_restored_when_the_loop_raises(rng, monkeypatch):
    monkeypatch.setattr(_numba, "enabled", False)
    monkeypatch.setattr(_threads, "STEP_WORK_MIN", 0)
    monkeypatch.setattr(_threads, "MODE", "1")
    before = _threads.current_threads()

    def broken(z):
        raise FloatingPointError("activation failed")

    x = rng.standard_normal((2, 3, 2)).astype("float32")
    rnn = layers.RNN(layers.SimpleRNNCell(3, name="kernel_test_raise"))
    rnn(x)
    rnn.cell.activation = broken
    with pytest.raises(FloatingPointError):
        rnn(x)
    assert _threads.current_threads() == before


# CPU affinity is Linux's; these tests need two CPUs to place threads on (CI has two)
_TWO_CPUS = pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="CPU affinity is Linux's, and needs two CPUs")


@_TWO_CPUS
def test_row_blocks_run_off_the_callers_cpu(monkeypatch):
    """`by_rows` keeps the pool's threads off the CPU of the thread that calls it (Linux, two
    CPUs or more, as CI and the benchmark machine): left to the scheduler, the two blocks of a
    call often ran on one CPU, one after the other, for streaks of many calls. When the caller
    is found on another CPU, the threads move."""
    import threading

    cpus = frozenset(os.sched_getaffinity(0))

    def where(b0, b1):
        return b0, threading.get_native_id(), frozenset(os.sched_getaffinity(0))

    def blocks():
        found = _threads.by_rows(where, (), 4, 2)
        return [mask for b0, tid, mask in found if tid != threading.get_native_id()]

    blocks()                            # the pool's thread exists from the first call on
    [mask] = blocks()
    caller = _threads._placed[0]
    assert mask == cpus - {caller}
    moved = min(cpus - {caller})
    monkeypatch.setattr(_threads, "_current_cpu", lambda: moved)
    [mask] = blocks()
    assert mask == cpus - {moved}


@_TWO_CPUS
def test_row_blocks_count_the_cpus_the_process_may_use(monkeypatch):
    """Blocks of rows: at most one a CPU the process may run on, not one a CPU of the machine
    (a container's CPU set or `taskset` may allow fewer): limited to one CPU, no blocks."""
    monkeypatch.setattr(_threads, "MODE", "auto")
    allowed = os.sched_getaffinity(0)
    big = 1 << 30
    assert _threads.row_parts(64, big) == min(len(allowed), 64 // _threads.ROW_BLOCK_MIN)
    os.sched_setaffinity(0, {min(allowed)})
    try:
        assert _threads.cores() == 1
        assert _threads.row_parts(64, big) == 1
    finally:
        os.sched_setaffinity(0, allowed)


def test_the_thread_setting_is_chosen_by_timing_each():
    ONE, ALL, ROWS = _threads.ONE, _threads.ALL, _threads.ROWS
    cost = {ONE: 1.0, ALL: 3.0, ROWS: 6.0}
    choice = _threads.ThreadChoice((ONE, ALL, ROWS))
    tried = []
    for _ in range(6):                  # each setting in turn, twice each
        setting = choice.pick()
        tried.append(setting)
        choice.record(setting, cost[setting])
    assert sorted(tried) == sorted([ONE, ALL, ROWS] * 2)
    n = 1000
    picks = [choice.pick() for _ in range(n)]
    # a setting r times slower is tried again every (r - 1) / EXPLORE_SHARE calls
    for setting in (ALL, ROWS):
        period = _threads.explore_period(cost[setting])
        assert period == int((cost[setting] - 1) / _threads.EXPLORE_SHARE)
        assert abs(picks.count(setting) - n / period) <= 1, (setting, picks.count(setting))
    for _ in range(_threads.KEEP):      # the machine changes: one thread becomes slow
        choice.record(ONE, 9.0)
    assert choice.pick() == ALL


def test_a_near_tie_is_tried_again_within_a_few_calls():
    ONE, ROWS = _threads.ONE, _threads.ROWS
    choice = _threads.ThreadChoice((ONE, ROWS))
    for _ in range(4):
        setting = choice.pick()
        choice.record(setting, {ONE: 5.3, ROWS: 6.0}[setting])   # another process on a core
    picks = [choice.pick() for _ in range(2 * _threads.EXPLORE_MIN)]
    assert ROWS in picks
    choice.record(ROWS, 2.8)                                    # ... and it has gone
    assert choice.pick() == ROWS
    assert _threads.explore_period(1.0) == _threads.EXPLORE_MIN
    assert _threads.explore_period(1e9) == _threads.EXPLORE_MAX


def _settled(costs: dict) -> "_threads.ThreadChoice":
    choice = _threads.ThreadChoice(tuple(costs))
    for _ in range(2 * len(costs)):     # each setting in turn, twice each
        setting = choice.pick()
        choice.record(setting, costs[setting])
    return choice


def _run(choice, costs: dict, n: int) -> list:
    picks = []
    for _ in range(n):
        setting = choice.pick()
        picks.append(setting)
        choice.record(setting, costs[setting])
    return picks


def test_a_clear_loser_is_tried_less_often_after_each_try_that_confirms_it():
    ONE, ROWS = _threads.ONE, _threads.ROWS
    costs = {ONE: 1.0, ROWS: 1.5}
    choice = _settled(costs)
    n = 20000
    picks = _run(choice, costs, n)
    base = _threads.explore_period(1.5)                         # 25 calls
    slowest = base << _threads.BACKOFF_MAX                      # 200 once backed off
    assert choice.backoff[ROWS] == _threads.BACKOFF_MAX
    # a try at each doubled period on the way, then one every `slowest` calls: an eighth of
    # the n / base tries without the backoff
    assert n / slowest - 1 <= picks.count(ROWS) <= n / slowest + _threads.BACKOFF_MAX + 1
    assert picks.count(ONE) == n - picks.count(ROWS)


def test_a_near_tie_keeps_its_full_rate_of_tries():
    ONE, ROWS = _threads.ONE, _threads.ROWS
    costs = {ONE: 1.0, ROWS: 1.0 + _threads.BACKOFF_MARGIN / 2}
    choice = _settled(costs)
    n = 1000
    picks = _run(choice, costs, n)
    assert choice.backoff[ROWS] == 0
    assert abs(picks.count(ROWS) - n / _threads.EXPLORE_MIN) <= 1


def test_a_loser_that_ties_again_or_a_slower_best_restore_the_full_rate():
    ONE, ALL, ROWS = _threads.ONE, _threads.ALL, _threads.ROWS
    costs = {ONE: 1.0, ALL: 3.0, ROWS: 1.5}
    choice = _settled(costs)
    _run(choice, costs, 5000)
    assert choice.backoff == {ONE: 0, ALL: _threads.BACKOFF_MAX, ROWS: _threads.BACKOFF_MAX}
    choice.record(ROWS, 1.05)           # a try that finds it within the margin of the best
    assert choice.backoff[ROWS] == 0 and choice.backoff[ALL] == _threads.BACKOFF_MAX
    _run(choice, costs, 5000)
    assert choice.backoff[ROWS] == _threads.BACKOFF_MAX
    # the best slows down (another process takes a core): two slow calls of five are noise...
    for _ in range(2):
        choice.record(ONE, 1.4)
    assert choice.backoff[ROWS] == _threads.BACKOFF_MAX
    choice.record(ONE, 1.4)             # ... three are a change: every setting at full rate
    assert choice.backoff == {ONE: 0, ALL: 0, ROWS: 0}
    # and row blocks, now within 1.1 of one thread's recent times, are tried within a few calls
    for _ in range(2):
        choice.record(ONE, 1.4)
    picks = [choice.pick() for _ in range(2 * _threads.EXPLORE_MIN)]
    assert ROWS in picks


def test_auto_mode_times_real_calls_and_restores_the_setting(monkeypatch):
    if not _threads.blas_controllers():
        pytest.fail("threadpoolctl found no BLAS library")
    monkeypatch.setattr(_threads, "MODE", "auto")
    monkeypatch.setattr(_threads, "_choices", {})
    monkeypatch.setattr(_threads, "parts", ROW_PARTS)
    before = _threads.current_threads()
    seen = []
    for _ in range(8):
        with _threads.step_threads(2 * _threads.STEP_WORK_MIN, key="test", parts=2):
            seen.append((_threads.current_threads(), _threads.parts()))
    assert _threads.current_threads() == before and _threads.parts() == 1
    choice = _threads._choices["test"]
    # the first call is not timed (it also loads compiled loops); then each setting twice
    assert all(len(choice.times[s]) >= 2 for s in (_threads.ONE, _threads.ALL, _threads.ROWS))
    one = [1] * len(before)
    assert (one, 1) in seen and (before, 1) in seen and (one, 2) in seen, seen


def test_large_steps_keep_every_thread(monkeypatch):
    calls = []
    for c in _threads.blas_controllers():
        monkeypatch.setattr(c, "set_num_threads", lambda n, c=c: calls.append(n))
    monkeypatch.setattr(_threads, "MODE", "1")
    with _threads.step_threads(_threads.STEP_WORK_MAX + 1):
        pass
    with _threads.step_threads(_threads.STEP_WORK_MIN):
        pass
    assert calls == []


# ------------------------------------------------------------------------ compiled loops


def test_compiled_loops_serve_small_shapes_only(monkeypatch):
    pytest.importorskip("numba", reason="the compiled loops are an optional extra")
    monkeypatch.setattr(_numba, "enabled", True)
    monkeypatch.setattr(_numba, "WORK_MAX", SHIPPED_WORK_MAX)
    monkeypatch.setattr(_numba, "BLAS_MIN", SHIPPED_BLAS_MIN)
    small, large = layers.LSTMCell(2, name="kernel_test"), layers.LSTMCell(256, name="kernel_test")
    small.build((4, 3))
    large.build((4, 3))
    assert _numba.loop_for(small, 4, 5).__qualname__ == "lstm"
    # 4 * 256 * 1024 multiply-adds a step: the loop that hands h W to BLAS
    assert _numba.loop_for(large, 4, 5).__qualname__ == "lstm_blas"
    odd = layers.LSTMCell(2, recurrent_activation="hard_sigmoid", name="kernel_test")
    odd.build((4, 3))
    assert _numba.loop_for(odd, 4, 5) is None
    odd_large = layers.LSTMCell(256, activation="relu", name="kernel_test")
    odd_large.build((4, 3))
    assert _numba.loop_for(odd_large, 4, 5) is None  # the BLAS loops: tanh and sigmoid only
    wide = layers.LSTMCell(256, dtype="float64", name="kernel_test")
    wide.build((4, 3))
    assert _numba.loop_for(wide, 4, 5) is None       # ... and float32 only
    monkeypatch.setattr(_numba, "enabled", False)
    assert _numba.loop_for(small, 4, 5) is None
    assert _numba.loop_for(large, 4, 5) is None


def test_blas_loops_take_small_steps_over_long_calls(monkeypatch):
    """Small steps stay on the small-shape loop for a short call and go to the BLAS loop above
    BLAS_MIN multiply-adds in the call, where one applies; where none does (relu, float64) and
    without SciPy, the small-shape loop keeps them."""
    pytest.importorskip("numba", reason="the compiled loops are an optional extra")
    monkeypatch.setattr(_numba, "enabled", True)
    monkeypatch.setattr(_numba, "WORK_MAX", SHIPPED_WORK_MAX)
    monkeypatch.setattr(_numba, "BLAS_MIN", {1: 1000, 3: 1000, 4: 1000})
    cell = layers.GRUCell(8, name="kernel_test")            # features 4: (4 + 8) * 3 * 8 = 288
    cell.build((4, 4))
    assert _numba.loop_for(cell, 1, 3).__qualname__ == "gru"           # 864 in the call
    assert _numba.loop_for(cell, 1, 4).__qualname__ == "gru_blas"      # 1 152
    assert _numba.loop_for(cell, 2, 2).__qualname__ == "gru_blas"      # 1 152
    relu = layers.SimpleRNNCell(8, activation="relu", name="kernel_test")
    wide = layers.GRUCell(8, dtype="float64", name="kernel_test")
    relu.build((4, 4))
    wide.build((4, 4))
    assert _numba.loop_for(relu, 4, 100).__qualname__ == "simple_rnn"
    assert _numba.loop_for(wide, 4, 100).__qualname__ == "gru"
    monkeypatch.setattr(_numba, "_blas", False)              # SciPy missing
    assert _numba.loop_for(cell, 2, 2).__qualname__ == "gru"
    big = layers.GRUCell(256, name="kernel_test")
    big.build((4, 4))
    assert _numba.loop_for(big, 4, 5) is None                # past WORK_MAX: the NumPy kernel


def test_import_unrolled_imports_no_numba_nor_threadpoolctl():
    import subprocess
    import sys

    code = ("import sys, numpy as np, unrolled\n"
            "unrolled.layers.SimpleRNN(2)(np.ones((1, 2, 1), 'float32'))\n"
            "print(sorted(m for m in ('numba', 'threadpoolctl') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**__import__("os").environ, "UNROLLED_NUMBA": "0"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout


# ------------------------------------------------------------------------ kept plans


def _reference_call(rnn, x):
    """What `rnn(x)` must return, from the reference loop (fresh zero states)."""
    last, outputs, final = rnn._reference_loop(x, rnn.get_initial_state(x.shape[0]), None, False)
    output = outputs if rnn.return_sequences else last
    return (output, *final) if rnn.return_state else output


def _compare_result(fast, ref, dtype):
    if isinstance(ref, tuple):
        assert isinstance(fast, tuple) and len(fast) == len(ref)
        for k, (a, b) in enumerate(zip(fast, ref)):
            compare_tree(a, b, f"result[{k}]", dtype)
    else:
        compare_tree(fast, ref, "result", dtype)


@pytest.mark.parametrize("cell_kind", CELLS + ["stack"])
@pytest.mark.parametrize("flags", list(itertools.product([False, True], repeat=3)))
def test_repeated_plain_calls_reuse_the_plan_and_give_the_reference_numbers(
        rng, monkeypatch, cell_kind, flags):
    """A plain call (array, no mask/initial state/training) keeps its plan; the next calls of
    the same shape run it, through its short route, with the reference loop's numbers."""
    return_sequences, return_state, go_backwards = flags
    b, t, f, u = sizes(rng)
    x = rng.standard_normal((b, t, f)).astype("float32")
    cell = ([make_cell("lstm", u), make_cell("gru", u + 1)] if cell_kind == "stack"
            else make_cell(cell_kind, u))
    rnn = built(layers.RNN(cell, return_sequences=return_sequences, return_state=return_state,
                           go_backwards=go_backwards), x)
    made = []
    real = _dispatch.plan_for
    monkeypatch.setattr(_dispatch, "plan_for", lambda *a: made.append(1) or real(*a))
    monkeypatch.setattr(kernels, "plan_for", _dispatch.plan_for)
    rnn.__dict__["_plan"] = None
    rnn(x)
    assert rnn._plan is not None and made
    # One cell on a small-shape loop: the plan hands the call straight to the loop's kernel.
    assert (rnn._plan.plain is not None) == (PATH["name"] == "numba" and cell_kind != "stack")
    planned = len(made)
    for _ in range(2):
        x2 = rng.standard_normal((b, t, f)).astype("float32")
        result = rnn(x2)
        _compare_result(result, _reference_call(rnn, x2), "float32")
        if return_state and return_sequences:   # a state is not a view into the sequence
            assert not any(np.shares_memory(result[0], s) for s in _leaves(list(result[1:])))
    assert len(made) == planned, "a repeated plain call planned again"
    # The kept zero states are still zeros: no kernel wrote into them.
    assert all(not leaf.any() for leaf in _leaves(rnn._plan.states))


def test_a_plan_follows_weights_and_drops_on_any_setting_change(rng):
    x = rng.standard_normal((3, 4, 2)).astype("float32")
    rnn = built(layers.RNN(make_cell("gru", 3), return_sequences=True), x)
    rnn(x)
    plan = rnn._plan
    assert plan is not None
    rnn.set_weights([w * 0.5 for w in rnn.get_weights()])  # in place: the plan stays, sees them
    assert rnn._plan is plan
    _compare_result(rnn(x), _reference_call(rnn, x), "float32")
    from unrolled import activations

    rnn.cell.activation = activations.relu      # a cell setting: the owner's plan goes
    assert rnn._plan is None
    _compare_result(rnn(x), _reference_call(rnn, x), "float32")
    rnn.go_backwards = True                     # a layer setting: the plan goes
    assert rnn._plan is None
    _compare_result(rnn(x), _reference_call(rnn, x), "float32")
    assert rnn._plan is not None
    other = rng.standard_normal((5, 4, 2)).astype("float32")  # another shape: planned anew
    _compare_result(rnn(other), _reference_call(rnn, other), "float32")
    assert rnn._plan.shape == other.shape


@pytest.mark.parametrize("cell_kind", CELLS + ["stack"])
def test_calls_with_states_or_a_mask_keep_a_plan_of_their_own(rng, monkeypatch, cell_kind):
    """A call with initial states or a mask (a generator's step, the state of the call before)
    keeps its plan too (`_call_plan`), and the next such calls of the same shape run it with the
    reference loop's numbers; a setting of the layer or a cell drops it, a training call keeps
    none, and a copy of the layer does not share it."""
    import copy

    from unrolled import activations

    b, t, f, u = sizes(rng)
    x = rng.standard_normal((b, t, f)).astype("float32")
    cell = ([make_cell("lstm", u), make_cell("gru", u + 1)] if cell_kind == "stack"
            else make_cell(cell_kind, u))
    rnn = built(layers.RNN(cell, return_sequences=True, return_state=True), x)
    made = []
    real = _dispatch.plan_for
    monkeypatch.setattr(_dispatch, "plan_for", lambda *a: made.append(1) or real(*a))

    def check(x, **kwargs):
        states = random_states(rng, rnn, x.shape[0])
        mask = kwargs.get("mask")
        result = rnn(x, initial_state=states, **kwargs)
        last, outputs, final = rnn._reference_loop(x, states, mask, False)
        _compare_result(result, (outputs, *final), "float32")

    rnn(x)                                  # a plain call keeps its plan
    assert rnn.__dict__.get("_plan") is not None
    planned = len(made)
    check(x)                                # which serves a call with states as well
    assert len(made) == planned and rnn.__dict__.get("_call_plan") is None
    rnn.__dict__["_plan"] = None
    check(x)                                # planned, and kept for such calls
    planned = len(made)
    assert rnn.__dict__.get("_call_plan") is not None
    check(x)
    check(x, mask=rng.random((b, t)) < 0.7)
    assert len(made) == planned, "a call with states planned again"
    inner = rnn.cell.cells[0] if cell_kind == "stack" else rnn.cell
    inner.activation = activations.relu     # a cell setting: the owner's plan goes
    assert rnn.__dict__.get("_call_plan") is None
    check(x)
    assert len(made) > planned
    other = rng.standard_normal((b + 1, t, f)).astype("float32")    # another shape: planned anew
    check(other)
    assert rnn._call_plan.shape == other.shape
    twin = copy.deepcopy(rnn)
    assert twin.__dict__.get("_call_plan") is None
    twin.set_weights([w * 0.5 for w in twin.get_weights()])
    states = random_states(rng, twin, b)
    last, outputs, final = twin._reference_loop(x, states, None, False)
    _compare_result(twin(x, initial_state=states), (outputs, *final), "float32")
    rnn.__dict__["_call_plan"] = None
    rnn(x, initial_state=random_states(rng, rnn, b), training=True)
    assert rnn.__dict__.get("_call_plan") is None       # training calls keep none


class _Subclass(np.ndarray):
    pass


@pytest.mark.parametrize("cell_kind", ["simple_rnn", "lstm", "gru"])
@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("go_backwards", [False, True])
def test_calls_with_states_that_fit_skip_the_checks(rng, monkeypatch, cell_kind,
                                                    return_sequences, go_backwards):
    """Once a layer keeps a plan for a shape, a call with initial states that the checks would
    pass as they are (arrays of the layer's dtype and the cell's state shapes) runs the plan
    without the checks (`RNN._call_planned`, `Plan.given_states`), with the reference loop's
    numbers, reading the states and never writing them; any other states (of another dtype, a
    wrong shape or nesting, an array subclass), a stack, a stateful layer, a mask or training
    take the full path, whose checks give their errors."""
    b, t, f, u = sizes(rng)
    b = max(b, 2)
    x = rng.standard_normal((b, t, f)).astype("float32")
    rnn = built(layers.RNN(make_cell(cell_kind, u), return_sequences=return_sequences,
                           return_state=True, go_backwards=go_backwards), x)
    prepared = []
    real = rnn._prepare
    monkeypatch.setattr(rnn, "_prepare", lambda *a: prepared.append(1) or real(*a))

    def check(states, full):
        given = list(states) if isinstance(states, (list, tuple)) else [states]
        before = [np.array(s) for s in given]
        seen = len(prepared)
        result = rnn(x, initial_state=states)
        assert (len(prepared) > seen) is full
        ref = rnn._reference_loop(x, [np.asarray(s, dtype="float32") for s in given], None,
                                  False)
        _compare_result(result, (ref[1] if return_sequences else ref[0], *ref[2]), "float32")
        for s, copy in zip(given, before):                      # read, never written
            np.testing.assert_array_equal(np.asarray(s), copy)
        return result

    states = random_states(rng, rnn, b)
    check(states, full=True)                # the first call plans (and checks)
    assert rnn.__dict__.get("_call_plan") is not None
    for _ in range(3):                      # a generator's loop: the states of the call before
        states = list(check(states, full=False)[1:])
    check(tuple(random_states(rng, rnn, b)), full=False)
    if cell_kind != "lstm":
        check(random_states(rng, rnn, b)[0], full=False)        # one state, bare
    check([s.astype("float64") for s in random_states(rng, rnn, b)], full=True)
    check([s.view(_Subclass) for s in random_states(rng, rnn, b)], full=True)
    wrong = random_states(rng, rnn, b)
    wrong[0] = wrong[0][:, :-1] if u > 1 else wrong[0][:1]
    with pytest.raises(ValueError, match="initial_state"):
        rnn(x, initial_state=wrong)
    if cell_kind == "lstm":
        with pytest.raises(ValueError, match="initial_state"):
            rnn(x, initial_state=random_states(rng, rnn, b)[0])  # one of two states
    with pytest.raises(ValueError, match="initial_state"):
        rnn(x, initial_state=random_states(rng, rnn, b) * 2)     # too many
    seen = len(prepared)
    rnn(x, initial_state=random_states(rng, rnn, b), mask=np.ones((b, t), bool))
    rnn(x, initial_state=random_states(rng, rnn, b), training=True)
    assert len(prepared) == seen + 2


def test_stacks_and_stateful_layers_check_every_call_with_states(rng, monkeypatch):
    x = rng.standard_normal((3, 4, 2)).astype("float32")
    for rnn in (layers.RNN([make_cell("lstm", 3), make_cell("gru", 4)], return_state=True),
                layers.RNN(make_cell("gru", 3), stateful=True)):
        built(rnn, x)
        prepared = []
        real = rnn._prepare
        monkeypatch.setattr(rnn, "_prepare", lambda *a, real=real: prepared.append(1) or real(*a))
        for _ in range(3):
            states = random_states(rng, rnn, 3)
            result = rnn(x, initial_state=states)
            last, outputs, final = rnn._reference_loop(x, states, None, False)
            compare_tree(result[0] if isinstance(result, tuple) else result, last, "out",
                         "float32")
        assert len(prepared) == 3


def test_no_plan_is_kept_for_calls_that_need_the_full_path(rng):
    x = rng.standard_normal((3, 4, 2)).astype("float32")
    for kwargs, rnn_kwargs in [({"mask": np.ones((3, 4), bool)}, {}),
                               ({"training": True}, {}),
                               ({}, {"stateful": True})]:
        rnn = built(layers.RNN(make_cell("lstm", 3), **rnn_kwargs), x)
        rnn.__dict__.pop("_plan", None)
        rnn(x, **kwargs)
        assert rnn.__dict__.get("_plan") is None, (kwargs, rnn_kwargs)
    rnn = built(layers.RNN(make_cell("lstm", 3)), x)
    rnn.__dict__.pop("_plan", None)
    rnn(x.astype("float64"))  # converted to the layer's dtype: not the array it was given
    assert rnn.__dict__.get("_plan") is None
    rnn(x.tolist())
    assert rnn.__dict__.get("_plan") is None


def test_an_overridden_run_kernel_is_asked_every_call(rng):
    x = rng.standard_normal((2, 3, 2)).astype("float32")
    rnn = built(layers.RNN(make_cell("simple_rnn", 3)), x)
    rnn._run_kernel = lambda *args: None        # e.g. a test forcing the reference loop
    rnn(x)
    rnn(x)
    assert rnn.__dict__.get("_plan") is None

    class Counting(layers.RNN):                 # an override that hands on to the kernels
        asked = 0

        def _run_kernel(self, *args):
            Counting.asked += 1
            return super()._run_kernel(*args)

    rnn = built(Counting(make_cell("simple_rnn", 3), return_state=True), x)
    states = [rng.standard_normal((2, 3)).astype("float32")]
    for _ in range(3):                          # with states too: no kept plan stands in
        rnn(x, initial_state=states)
    assert Counting.asked == 1 + 3


def test_row_blocks_are_offered_for_compiled_loops_with_enough_work(monkeypatch):
    pytest.importorskip("numba", reason="the compiled loops are an optional extra")
    monkeypatch.setattr(_numba, "enabled", True)
    monkeypatch.setattr(_numba, "WORK_MAX", SHIPPED_WORK_MAX)
    monkeypatch.setattr(_numba, "BLAS_MIN", SHIPPED_BLAS_MIN)
    monkeypatch.setattr(_threads, "MODE", "auto")
    monkeypatch.setattr(_threads, "cores", lambda: 2)
    x = np.zeros((32, 100, 16), dtype="float32")
    rnn = layers.LSTM(64, name="kernel_test_rows")
    rnn.build(x.shape)
    plan = _dispatch.plan_for(rnn, x, training=False)
    assert plan.kernels[0].__qualname__ == "lstm_blas" and plan.parts == 2
    assert _threads.chooses(plan.work, plan.parts)
    # too few rows for two blocks of ROW_BLOCK_MIN, or too little work: one block
    assert _dispatch.plan_for(rnn, x[:8], training=False).parts == 1
    assert _dispatch.plan_for(rnn, x[:, :1], training=False).parts == 1
    monkeypatch.setattr(_numba, "enabled", False)  # the NumPy kernels run on one thread
    assert _dispatch.plan_for(rnn, x, training=False).parts == 1


# ------------------------------------------------------------------------ kept output buffers


@pytest.fixture
def keep_every_output(monkeypatch):
    """Every kernel output comes from the kept buffers (the shipped minimum is 32 MiB)."""
    monkeypatch.setattr(_outputs, "KEEP_MIN_BYTES", 1)
    monkeypatch.setattr(_outputs, "KEEP", 4)
    monkeypatch.setattr(_outputs, "_kept", [])


def _start(a):
    return a.__array_interface__["data"][0]


def _kept_layer(rng, cell_kind, **kwargs):
    b, t, f, u = sizes(rng)
    cell = ([make_cell("lstm", u), make_cell("gru", u + 1)] if cell_kind == "stack"
            else make_cell(cell_kind, u))
    x = rng.standard_normal((b, t, f)).astype("float32")
    return built(layers.RNN(cell, return_sequences=True, **kwargs), x), x


@pytest.mark.parametrize("cell_kind", CELLS + ["stack"])
def test_a_dropped_output_is_written_again_and_a_held_one_never(rng, keep_every_output,
                                                                cell_kind):
    rnn, x = _kept_layer(rng, cell_kind)
    assert _outputs._FREE is not None, "CPython's reference counts should allow keeping"
    first = rnn(x)
    where, buffer = _start(first), id(first.base)
    assert buffer in map(id, _outputs._kept)
    del first                                      # dropped: its buffer is written again
    again = rnn(x)
    assert _start(again) == where and id(again.base) == buffer
    _compare_result(again, _reference_call(rnn, x), "float32")
    # Held in any form, an output keeps its numbers through later calls.
    held = {"the output": again, "a view": again[:, -1:], "its base": again.base,
            "a memoryview": memoryview(again)}
    saved = again.copy()
    del again
    for what, keep in held.items():
        x2 = rng.standard_normal(x.shape).astype("float32")
        out = rnn(x2)
        _compare_result(out, _reference_call(rnn, x2), "float32")
        assert not np.shares_memory(out, np.asarray(keep)), what
        del out
    np.testing.assert_array_equal(held["the output"], saved)
    assert len(_outputs._kept) <= _outputs.KEEP


def test_a_name_rebound_each_call_takes_turns_with_two_buffers(rng, keep_every_output):
    rnn, x = _kept_layer(rng, "gru")
    starts = []
    y = None
    for _ in range(6):
        y = rnn(x)                                  # the old y is alive during the call
        starts.append(_start(y))
    assert len(set(starts)) == 2 and starts[0::2] == [starts[0]] * 3, starts


def test_returned_states_are_not_in_a_kept_buffer(rng, keep_every_output):
    rnn, x = _kept_layer(rng, "lstm", return_state=True)
    out, h, c = rnn(x)
    h_saved, c_saved = h.copy(), c.copy()
    del out
    rnn(rng.standard_normal(x.shape).astype("float32"))
    np.testing.assert_array_equal(h, h_saved)
    np.testing.assert_array_equal(c, c_saved)


def test_keeping_is_bounded_released_and_can_be_turned_off(rng, monkeypatch,
                                                              keep_every_output):
    for t in range(2, 9):                                   # seven output sizes
        layers.SimpleRNN(3, return_sequences=True)(np.ones((2, t, 1), "float32"))
    assert len(_outputs._kept) == _outputs.KEEP
    assert _outputs.kept_bytes() == sum(b.nbytes for b in _outputs._kept) > 0
    kernels.release_outputs()
    assert _outputs.kept_bytes() == 0
    monkeypatch.setattr(_outputs, "KEEP", 0)
    layers.SimpleRNN(3, return_sequences=True)(np.ones((2, 4, 1), "float32"))
    assert _outputs._kept == []


def test_small_outputs_are_never_kept(rng, monkeypatch):
    monkeypatch.setattr(_outputs, "_kept", [])
    layers.LSTM(4, return_sequences=True)(np.ones((3, 5, 2), "float32"))
    assert _outputs._kept == []


@pytest.mark.parametrize("text, expected", [("0", 0), ("7", 7)])
def test_the_environment_sets_how_many_outputs_are_kept(monkeypatch, text, expected):
    monkeypatch.setenv("UNROLLED_KEEP_OUTPUTS", text)
    assert _outputs._keep_from_env() == expected


@pytest.mark.parametrize("text", ["many", "-1", "2.5"])
def test_a_bad_keep_setting_names_the_variable(monkeypatch, text):
    monkeypatch.setenv("UNROLLED_KEEP_OUTPUTS", text)
    with pytest.raises(ValueError, match=r"UNROLLED_KEEP_OUTPUTS .*got .*set it to"):
        _outputs._keep_from_env()
