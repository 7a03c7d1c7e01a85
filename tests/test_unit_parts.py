"""Each step's units split between threads: the fused loops on packed weights, for batches of
under `_threads.UNIT_ROWS_MAX` rows (`_threads.UNITS`, `_numba_loops.lstm_own_units`,
`gru_own_units` and `simple_rnn_own_units`).

The same numbers to the bit as the loop on one thread, for any number of parts (more parts
than blocks of units too), masked or not, backwards, with or without the sequence; the form is
what ran; the thread choice offers it only where it may pay and may run; and the loop on one
thread again where Numba's threads may not be entered or the form does not compile.
"""

from __future__ import annotations

import numpy as np
import pytest

from unrolled import layers
from unrolled.kernels import _numba, _threads

pytest.importorskip("numba", reason="the compiled loops are an optional extra")


@pytest.fixture
def compiled(monkeypatch):
    monkeypatch.setattr(_numba, "enabled", True)
    monkeypatch.setattr(_threads, "NATIVE", True)
    # packed weights however few the steps (tests/test_pack_steps.py has the rule)
    for name in ("PACK_STEPS", "PACK_STEPS_ONE_ROW", "PACK_STEPS_ONE_ROW_LARGE",
                 "PACK_STEPS_FEW_ROWS"):
        monkeypatch.setattr(_numba, name, 1)


KINDS = {"lstm": layers.LSTM, "gru": layers.GRU, "simple_rnn": layers.SimpleRNN}
# 160 units, 12 features: `[W; U]` of 440 KB (LSTM) and 330 KB (GRU), above what the loops read
# in place, so they are packed; three blocks of units, 64, 64 and 32. SimpleRNN's would be
# read in place at 160 units; at 170 (not whole panels) they are packed: 64, 64 and 42.
UNITS = {"lstm": 160, "gru": 160, "simple_rnn": 170}


def layer_and_input(batch, kind="lstm", units=None, steps=7, features=12, seed=0, **kwargs):
    units = UNITS[kind] if units is None else units
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, steps, features)).astype("float32")
    layer = KINDS[kind](units, return_state=True, **kwargs)
    layer(x)
    # SimpleRNN's weights smaller: with 0.3 its 170 tanh units are chaotic over the steps, and
    # any two orders of a sum (the NumPy kernel's BLAS, the loops' product) drift 2e-5 apart
    spread = 0.1 if kind == "simple_rnn" else 0.3
    layer.set_weights([rng.normal(0, spread, w.shape).astype("float32")
                       for w in layer.get_weights()])
    # no kept plan: the tests change the loops' limits, and the next call plans with them
    layer.__dict__.update(_plan=None, _call_plan=None)
    return layer, x


def spy_units(monkeypatch):
    """Record the calls of every registered units form: (loop, parts)."""
    calls = []
    for loop, parallel in list(_threads._native_units.items()):
        def counted(args, bounds, _parallel=parallel, _name=loop.__name__):
            calls.append((_name, len(bounds) - 1))
            return _parallel(args, bounds)

        monkeypatch.setitem(_threads._native_units, loop, counted)
    return calls


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("batch", [1, 3, 13, 21, 70])
@pytest.mark.parametrize("parts", [2, 3, 4])
@pytest.mark.parametrize("how", ["plain", "masked", "backwards", "last"])
def test_units_in_parts_give_the_one_threads_numbers(compiled, monkeypatch, kind, batch, parts,
                                                     how):
    kwargs = {"go_backwards": how == "backwards", "return_sequences": how != "last"}
    layer, x = layer_and_input(batch, kind, **kwargs)
    mask = None
    if how == "masked":
        mask = np.random.default_rng(1).random(x.shape[:2]) < 0.7
    h0 = np.random.default_rng(2).standard_normal((batch, UNITS[kind])).astype("float32")
    states = [h0, -h0][:2 if kind == "lstm" else 1]
    calls = spy_units(monkeypatch)
    # from 16 rows the units are for weights over OWN_GEMM_BYTES (these are 330-440 KB)
    monkeypatch.setattr(_numba, "OWN_GEMM_BYTES", 64 << 10)
    monkeypatch.setattr(_threads, "parts", lambda: 1)    # no blocks of rows (21 rows may have)
    monkeypatch.setattr(_threads, "units", lambda: 1)
    alone = layer(x, mask=mask, initial_state=states)
    assert calls == []
    monkeypatch.setattr(_threads, "units", lambda: parts)
    split = layer(x, mask=mask, initial_state=states)
    assert calls == [(f"{kind}_own", parts)]
    for a, b in zip(alone, split):
        np.testing.assert_array_equal(a, b)
    reference = KINDS[kind](UNITS[kind], return_sequences=how != "last", return_state=True,
                            go_backwards=how == "backwards")
    reference(x)
    reference.set_weights(layer.get_weights())
    monkeypatch.setattr(_numba, "enabled", False)    # the NumPy kernel, for the numbers
    for a, b in zip(reference(x, mask=mask, initial_state=states), split):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("parts", [2, 3])
def test_the_parts_pack_the_weights_themselves(compiled, monkeypatch, kind, parts):
    """The units forms are given their weights unpacked (`UNPACKED`), and each block is packed
    by the part that runs its first job: the same bits as with the weights packed before the
    call, a last block short of a panel included (SimpleRNN's 170 units, the last 32 of 160)."""
    from unrolled.kernels import _numba_loops

    layer, x = layer_and_input(3, kind, return_sequences=True)
    monkeypatch.setattr(_threads, "units", lambda: parts)
    calls = spy_units(monkeypatch)
    left = []
    unpacked = _numba_loops.UNPACKED[kind]
    monkeypatch.setitem(_numba_loops.UNPACKED, kind, lambda *a: left.append(1) or unpacked(*a))
    by_parts = layer(x)
    assert left and calls == [(f"{kind}_own", parts)]
    monkeypatch.setitem(_numba_loops.UNPACKED, kind, _numba_loops.PANELS[kind])
    packed_first = layer(x)
    assert len(left) == 1 and len(calls) == 2
    for a, b in zip(by_parts, packed_first, strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_initial_state_is_read_not_written(compiled, monkeypatch):
    layer, x = layer_and_input(2)
    h0 = np.ones((2, 160), "float32")
    c0 = np.full((2, 160), 0.5, "float32")
    monkeypatch.setattr(_threads, "units", lambda: 2)
    layer(x, initial_state=[h0, c0])
    assert (h0 == 1).all() and (c0 == 0.5).all()


def test_weights_read_in_place_have_no_units_form(compiled, monkeypatch):
    """Small weights (read in place, `stacked`) run on one thread whatever the setting: a step
    there takes a few microseconds, about what the threads' meeting costs."""
    rng = np.random.default_rng(0)
    layer = layers.LSTM(32)
    x = rng.standard_normal((1, 5, 4)).astype("float32")
    calls = spy_units(monkeypatch)
    monkeypatch.setattr(_threads, "units", lambda: 2)
    layer(x)
    assert calls == []


def test_units_are_offered_to_batches_under_unit_rows_max(monkeypatch):
    monkeypatch.setattr(_threads, "cores", lambda: 2)
    monkeypatch.setattr(_threads, "native_ready", lambda: True)
    monkeypatch.setattr(_threads, "MODE", "auto")
    assert _threads.unit_parts(1, 4) == 2
    assert _threads.unit_parts(2 * _threads.ROW_BLOCK_MIN, 4) == 2    # beside blocks of rows
    assert _threads.unit_parts(_threads.UNIT_ROWS_MAX - 1, 4) == 2
    assert _threads.unit_parts(_threads.UNIT_ROWS_MAX, 4) == 1
    assert _threads.unit_parts(1, 1) == 1                            # one block: nothing to share
    assert _threads.unit_parts(1, 2) == 2
    monkeypatch.setattr(_threads, "cores", lambda: 8)
    assert _threads.unit_parts(1, 3) == 3                            # at most one part a block
    assert _threads.unit_parts(1, 16) == 8                           # and one a CPU
    for setting, value in (("MODE", "1"), ("MODE", "0"), ("cores", lambda: 1),
                           ("native_ready", lambda: False)):
        with monkeypatch.context() as m:
            m.setattr(_threads, setting, value)
            assert _threads.unit_parts(1, 4) == 1, setting


def test_from_16_rows_only_weights_over_own_gemm_bytes_have_a_units_form(compiled, monkeypatch):
    """Where blocks of rows are offered, the units are only for weights each block would read
    from memory: smaller ones stay in each core's L2."""
    rows = 2 * _threads.ROW_BLOCK_MIN
    for batch, limit, blocks in ((rows - 1, 2 << 20, 3), (rows, 2 << 20, 0), (rows, 64 << 10, 3),
                                 (_threads.UNIT_ROWS_MAX - 1, 64 << 10, 3)):
        monkeypatch.setattr(_numba, "OWN_GEMM_BYTES", limit)   # LSTM(160): 400 KiB of W
        layer, x = layer_and_input(batch, "lstm")
        assert _numba.loop_for(layer.cell, batch, x.shape[1]).units == blocks, (batch, limit)


@pytest.mark.parametrize("kind, units, blocks", [("lstm", 64, 0), ("lstm", 128, 2),
                                                  ("gru", 160, 3), ("lstm", 260, 5),
                                                  ("simple_rnn", 160, 0),
                                                  ("simple_rnn", 170, 3)])
def test_a_kernel_counts_its_blocks_of_units(compiled, kind, units, blocks):
    """The plan offers `UNITS` by the kernel's blocks of 64 units a step: 0 where the weights
    are read in place (no units form), as LSTM(64)'s and SimpleRNN(160)'s are."""
    layer, x = layer_and_input(1, kind, units=units)
    assert _numba.loop_for(layer.cell, 1, x.shape[1]).units == blocks


def test_the_choice_offers_units_and_the_loop_reads_them(monkeypatch):
    monkeypatch.setattr(_threads, "MODE", "auto")
    monkeypatch.setattr(_threads, "blas_controllers", lambda: [object()])
    monkeypatch.setattr(_threads, "_choices", {})
    seen = []
    for _ in range(6):
        with _threads.step_threads(1000, "units-test", blas=False, unit_split=3):
            seen.append((_threads.units(), _threads.parts()))
    choice = _threads._choices["units-test"]
    assert tuple(choice.times) == (_threads.ALL, _threads.UNITS)
    assert (3, 1) in seen and (1, 1) in seen
    assert _threads.units() == 1                   # restored after each call


def test_a_layer_call_offers_units_to_a_small_batch(compiled, monkeypatch):
    monkeypatch.setattr(_threads, "cores", lambda: 2)
    monkeypatch.setattr(_threads, "native_ready", lambda: True)
    monkeypatch.setattr(_threads, "MODE", "auto")
    monkeypatch.setattr(_threads, "_choices", {})
    rng = np.random.default_rng(0)
    layer = layers.LSTM(256, return_sequences=True)
    x = rng.standard_normal((1, 6, 64)).astype("float32")
    calls = spy_units(monkeypatch)
    outputs = [layer(x) for _ in range(8)]
    (choice,) = _threads._choices.values()
    assert tuple(choice.times) == (_threads.ALL, _threads.UNITS)
    assert len(choice.times[_threads.UNITS]) >= 2 and len(calls) >= 2
    for y in outputs[1:]:
        np.testing.assert_array_equal(outputs[0], y)
    small = layers.LSTM(64)              # weights read in place: no units form, not offered
    small(x)
    small(x)
    assert all(_threads.UNITS not in c.times for c in list(_threads._choices.values())[1:])


def test_a_batch_of_16_rows_or_more_is_offered_units_beside_blocks_of_rows(compiled,
                                                                           monkeypatch):
    """Both are timed on real calls, and either gives one thread's numbers. At 64 rows the
    blocks of rows (and one thread) split each step's product (`h W`, then `+ x_t U`), where
    the units' parts take the weights packed whole: the same sums in the same order."""
    from unrolled.kernels import _numba_loops

    assert _threads.UNIT_ROWS_MAX <= _numba.OWN_GEMM_ROWS   # the units forms' packed weights
    assert _numba_loops.splits(192, 12, 4, 32)               # blocks of 32 rows split, below
    monkeypatch.setattr(_numba, "OWN_GEMM_BYTES", 64 << 10)  # LSTM(192)'s W is over it
    monkeypatch.setattr(_threads, "MODE", "1")
    lone, x = layer_and_input(64, "lstm", units=192, steps=10, return_sequences=True)
    alone = lone(x)
    monkeypatch.setattr(_threads, "cores", lambda: 2)
    monkeypatch.setattr(_threads, "native_ready", lambda: True)
    monkeypatch.setattr(_threads, "MODE", "auto")
    monkeypatch.setattr(_threads, "_choices", {})
    layer, _ = layer_and_input(64, "lstm", units=192, steps=10, return_sequences=True)
    calls, depths = spy_units(monkeypatch), []
    units_form = _threads._native_units[_numba_loops.lstm_own]

    def packed_rows(args, bounds):
        depths.append(args[12][0].shape[1])   # the panels' rows: U + F whole, U split
        return units_form(args, bounds)

    monkeypatch.setitem(_threads._native_units, _numba_loops.lstm_own, packed_rows)
    outputs = [layer(x) for _ in range(8)]
    (choice,) = _threads._choices.values()
    assert _threads.ROWS in choice.times and _threads.UNITS in choice.times
    assert len(choice.times[_threads.UNITS]) >= 2 and len(choice.times[_threads.ROWS]) >= 2
    assert calls and all(call == ("lstm_own", 2) for call in calls)
    assert depths and set(depths) == {192 + 12}
    for y in outputs:
        for a, b in zip(alone, y):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", list(KINDS))
def test_without_numbas_threads_the_loop_runs_alone(compiled, monkeypatch, kind):
    """The one-thread loop, given the weights the units form was to pack (`UNPACKED`), packs
    them itself."""
    layer, x = layer_and_input(2, kind)
    expected = layer(x)
    calls = spy_units(monkeypatch)
    monkeypatch.setattr(_threads, "units", lambda: 2)
    monkeypatch.setattr(_threads, "NATIVE", False)
    got = layer(x)
    assert calls == []
    for a, b in zip(expected, got):
        np.testing.assert_array_equal(a, b)


def test_a_units_form_that_does_not_compile_falls_back_to_one_thread(compiled, monkeypatch):
    from numba.core.errors import TypingError

    from unrolled.kernels import _numba_loops

    layer, x = layer_and_input(2)
    expected = layer(x)

    def broken(args, bounds):
        raise TypingError("no units form for these arguments")

    monkeypatch.setattr(_threads, "_native_state", True)
    monkeypatch.setattr(_threads, "_native_units", {_numba_loops.lstm_own: broken})
    monkeypatch.setattr(_threads, "units", lambda: 2)
    got = layer(x)
    assert _numba_loops.lstm_own not in _threads._native_units
    for a, b in zip(expected, got):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_small_batch_keeps_the_loops_own_product_for_large_weights(compiled, monkeypatch,
                                                                     kind):
    """Above `OWN_GEMM_BYTES` of recurrent kernel a batch of at most `OWN_GEMM_ROWS` rows
    still runs the fused loop on weights packed once a call (BLAS would pack them all again at
    every step for a few rows), up to `OWN_SMALL_BATCH_BYTES`; a larger batch calls BLAS (and
    offers units only to pack the weights into the output's last steps: SimpleRNN's take 2 of
    these 7, LSTM's and GRU's 6, more than TAIL_SHARE allows; tests/test_tail_panels.py). The
    limit is lowered here so that a small layer is over it."""
    monkeypatch.setattr(_numba, "OWN_GEMM_BYTES", 64 << 10)   # LSTM(160): 400 KiB of W
    for batch, own in ((_numba.OWN_GEMM_ROWS, True), (_numba.OWN_GEMM_ROWS + 1, False)):
        layer, x = layer_and_input(batch, kind, return_sequences=True)
        kernel = _numba.loop_for(layer.cell, batch, x.shape[1])
        tail = not own and kind == "simple_rnn"
        assert (kernel.units == 3) is (own or tail) and kernel.blas is not own, batch
        assert kernel.units_any_batch is tail
        got = layer(x)
        monkeypatch.setattr(_numba, "enabled", False)
        expected = layer(x)
        monkeypatch.setattr(_numba, "enabled", True)
        for a, b in zip(expected, got):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    monkeypatch.setattr(_numba, "OWN_SMALL_BATCH_BYTES", 64 << 10)
    layer, x = layer_and_input(1, kind)
    assert _numba.loop_for(layer.cell, 1, x.shape[1]).blas is True


_ONE_THREAD = """
import numba
import numpy as np
from unrolled import layers
from unrolled.kernels import _threads

assert numba.config.NUMBA_NUM_THREADS == 1   # the parts run one after the other
calls = []
rng = np.random.default_rng(0)
for make, units in ((layers.LSTM, 160), (layers.GRU, 160), (layers.SimpleRNN, 170)):
    layer = make(units, return_sequences=True)
    x = rng.standard_normal((3, 16, 12)).astype("float32")   # enough steps to pack
    _threads.units = lambda: 1
    alone = layer(x)        # the loops' module registers the forms when it loads
    if not calls:
        parallel = _threads._native_units
        for loop, form in list(parallel.items()):
            parallel[loop] = lambda args, bounds, form=form: calls.append(
                len(bounds) - 1) or form(args, bounds)
    calls.clear()
    _threads.units = lambda: 2
    split = layer(x)
    assert calls == [2], calls
    np.testing.assert_array_equal(alone, split)
print("ok")
"""


def test_parts_that_run_one_after_the_other_do_not_wait_for_each_other(compiled):
    """With one thread for two parts (a threading layer may run them in turn), the first part
    takes every job of every step, for the second has not started, and the second finds
    nothing left: the same numbers, and no wait (a part waiting for one that is not running
    would never return; the subprocess's timeout turns that into a failure)."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, UNROLLED_NUMBA="1", UNROLLED_NATIVE_BLOCKS="1", NUMBA_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", _ONE_THREAD], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("ok")


def test_a_part_takes_a_started_parts_job_after_waiting():
    """Both parts started, and part 1 has not claimed its job of step 0: part 0, having run
    its own, waits `HELP_SPINS` spins for the step's count and then takes part 1's job; a
    part never takes a job of a later step, nor one already taken."""
    from unrolled.kernels import _atomics, _numba_loops

    line = _atomics.LINE
    flags = _numba_loops._job_counters(2)
    flags[3 * line] = 2                                  # both parts started
    job, tried = _numba_loops._next_job(flags, 2, 2, 0, 0, 0)
    assert (job, tried) == (0, 1) and flags[0] == 0      # its own job, claimed for step 0
    flags[2 * line] += 1                                 # ...and done
    job, tried = _numba_loops._next_job(flags, 2, 2, 0, tried, 0)
    assert (job, tried) == (1, 1) and flags[line] == 0   # part 1's job, after the spins
    flags[2 * line] += 1
    assert _numba_loops._next_job(flags, 2, 2, 0, 1, 0) == (-1, 1)   # step 0 is done
    # step 1: part 1 claims its own; part 0's is left to part 0
    job, tried = _numba_loops._next_job(flags, 2, 2, 1, 0, 1)
    assert (job, tried) == (1, 1) and flags[line] == 1 and flags[0] == 0


def test_a_part_runs_its_jobs_forwards_and_backwards_on_alternate_steps():
    """What a part read last in one step it reads first in the next, while it may still be
    in its core's cache: the same jobs, the same numbers, in either order."""
    from unrolled.kernels import _atomics, _numba_loops

    flags = _numba_loops._job_counters(8)
    flags[9 * _atomics.LINE] = 2
    order = {}
    for k in range(2):
        tried, order[k] = 0, []
        for _ in range(4):                               # part 1's own jobs: 4 to 7
            job, tried = _numba_loops._next_job(flags, 8, 2, 1, tried, k)
            order[k].append(job)
        for job in range(4):                             # part 0's, claimed by part 0
            flags[job * _atomics.LINE] = k
        flags[8 * _atomics.LINE] += 8
    assert order == {0: [4, 5, 6, 7], 1: [7, 6, 5, 4]}


def test_a_part_waits_for_a_job_another_part_holds():
    """A job claimed by another part is not taken over, however long the wait (past
    `HELP_SPINS`, and past `YIELD_SPINS`, where the waiting part gives up its CPU at each
    spin): the part waits for the step's count, and returns once it is complete."""
    import threading

    from unrolled.kernels import _atomics, _numba_loops

    line = _atomics.LINE
    flags = _numba_loops._job_counters(2)
    flags[3 * line] = 2                                  # both parts started
    flags[0] = flags[line] = 0                           # both jobs of step 0 claimed
    flags[2 * line] = 1                                  # one done; part 1 still has its own
    got = []
    waiter = threading.Thread(target=lambda: got.append(
        _numba_loops._next_job(flags, 2, 2, 0, 1, 0)))   # _next_job releases the GIL
    waiter.start()
    waiter.join(0.2)
    assert waiter.is_alive() and got == []               # still waiting, nothing taken
    flags[2 * line] = 2                                  # part 1's job done
    waiter.join(60)
    assert not waiter.is_alive() and got == [(-1, 1)]
