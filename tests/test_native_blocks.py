"""Blocks of batch rows on Numba's threads: the compiled loops' parallel forms, which
`unrolled.kernels._threads.by_rows` calls in place of a hand-off to its pool of Python threads,
the training loops' too, and the whole-sequence products of a training step after them.

The same numbers to the bit as the pool's blocks; the parallel form is what ran; the pool again
where Numba's threading layer cannot be entered from several threads, in a process forked from
one that used the GNU OpenMP library, or where the form does not compile; and Numba's threads
kept off the caller's CPU as the pool's are.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from unrolled import layers
from unrolled.kernels import _numba, _threads

KINDS = {"simple_rnn": layers.SimpleRNN, "lstm": layers.LSTM, "gru": layers.GRU}


@pytest.fixture
def two_blocks(monkeypatch):
    """The compiled loops on, every call in two blocks of rows."""
    monkeypatch.setattr(_numba, "enabled", True)
    monkeypatch.setattr(_threads, "parts", lambda: 2)
    monkeypatch.setattr(_threads, "NATIVE", True)


def layer_and_input(kind, units=24, batch=19, steps=6, features=5, seed=0, **kwargs):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, steps, features)).astype("float32")
    layer = KINDS[kind](units, return_sequences=True, return_state=True,
                        name=f"native_blocks_{kind}", **kwargs)
    layer(x)
    layer.set_weights([rng.normal(0, 0.4, w.shape).astype("float32")
                       for w in layer.get_weights()])
    return layer, x


def spy_parallel(monkeypatch):
    """Count the calls of every registered parallel form."""
    calls = []
    for loop, parallel in list(_threads._native.items()):
        def counted(args, bounds, _parallel=parallel, _name=loop.__name__):
            calls.append((_name, bounds.tolist()))
            return _parallel(args, bounds)

        monkeypatch.setitem(_threads._native, loop, counted)
    return calls


def spy_pool(monkeypatch):
    """Count the blocks handed to the pool's threads."""
    submitted = []
    pool = _threads._pool if _threads._pool is not None else _threads._start_pool()
    real = pool.submit

    def submit(fn, *args):
        submitted.append(getattr(fn, "__name__", fn))
        return real(fn, *args)

    monkeypatch.setattr(pool, "submit", submit)
    return submitted


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("loops", ["fused", "blas"])
@pytest.mark.parametrize("masked", [False, True])
def test_parallel_forms_give_the_pools_numbers(two_blocks, monkeypatch, kind, loops, masked):
    """Each loop's blocks on Numba's threads and on the pool: the same bits, and each way is
    the one that ran. "blas": the loops that call BLAS for the step products (the recurrent
    kernel over `OWN_GEMM_BYTES`); "fused": the loops with their own products."""
    if loops == "blas":
        monkeypatch.setattr(_numba, "OWN_GEMM_BYTES", -1)
        monkeypatch.setattr(_numba, "OWN_SMALL_BATCH_BYTES", -1)
    layer, x = layer_and_input(kind)
    mask = None
    if masked:
        mask = np.random.default_rng(1).random(x.shape[:2]) < 0.7
    parallel_calls = spy_parallel(monkeypatch)
    pooled = spy_pool(monkeypatch)

    native = layer(x, mask=mask)
    loop = f"{kind}_{'own' if loops == 'fused' else 'blas'}"
    assert [name for name, _ in parallel_calls] == [loop]
    assert parallel_calls[0][1] == [0, 9, 19]
    assert pooled == []

    monkeypatch.setattr(_threads, "NATIVE", False)
    on_pool = layer(x, mask=mask)
    assert len(parallel_calls) == 1 and len(pooled) == 1
    for a, b in zip(native, on_pool):
        np.testing.assert_array_equal(a, b)


def spy_products(monkeypatch):
    """Record the calls of the whole-sequence products' parallel forms."""
    calls = []
    for fn, parallel in list(_threads._native_products.items()):
        def counted(args, bounds, _parallel=parallel):
            calls.append(_parallel.__name__)
            return _parallel(args, bounds)

        monkeypatch.setitem(_threads._native_products, fn, counted)
    return calls


def training_step(layer, x, mask):
    """Every number a training step gives: outputs, input's and weights' gradients."""
    from unrolled.training import Grads

    result, cache = layer.forward_train(x, mask=mask)
    assert cache["train_tape"].compiled is not None and cache["train_tape"].parts == 2
    rng = np.random.default_rng(2)
    d = tuple(rng.standard_normal(r.shape).astype("float32") for r in result)
    grads = Grads()
    d_x = layer.backward(cache, d, grads)
    return [*(np.array(r) for r in result), d_x,
            *(np.array(g) for g in grads.for_weights(layer.trainable_weights)),
            *(np.array(s) for s in cache["d_initial_state"])]


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("loops", ["fused", "blas"])
@pytest.mark.parametrize("masked", [False, True])
def test_training_blocks_and_products_run_on_numbas_threads(two_blocks, monkeypatch, kind,
                                                            loops, masked):
    """A training step in two blocks of rows: both phases' loops and the whole-sequence
    products (weight gradients, bias sums, the input's gradient) on Numba's threads, nothing
    on the pool, where Numba's threads might still be spinning; the same bits as all of it on
    the pool."""
    from unrolled.kernels import _numba_train, train  # noqa: F401 (registers their forms)

    monkeypatch.setattr(train, "ENABLED", True)
    if loops == "blas":
        monkeypatch.setattr(_numba, "OWN_GEMM_BYTES", -1)
        monkeypatch.setattr(_numba, "OWN_SMALL_BATCH_BYTES", -1)
    layer, x = layer_and_input(kind)
    mask = None
    if masked:
        mask = np.random.default_rng(1).random(x.shape[:2]) < 0.7
    parallel_calls = spy_parallel(monkeypatch)
    products = spy_products(monkeypatch)
    pooled = spy_pool(monkeypatch)

    native = training_step(layer, x, mask)
    name = {"simple_rnn": "simple"}.get(kind, kind)
    assert parallel_calls == [(f"{name}_forward", [0, 9, 19]), (f"{name}_backward", [0, 9, 19])]
    assert {"at_b_blocks", "matmul_blocks"} <= set(products)
    assert ("column_sums_blocks" in products) == (kind == "gru")
    assert pooled == []

    monkeypatch.setattr(_threads, "NATIVE", False)
    on_pool = training_step(layer, x, mask)
    assert len(parallel_calls) == 2 and pooled
    for i, (a, b) in enumerate(zip(native, on_pool, strict=True)):
        np.testing.assert_array_equal(a, b, err_msg=f"item {i}")


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("loops", ["fused", "blas"])
@pytest.mark.parametrize("native", [True, False])
def test_only_loops_that_call_blas_set_its_threads(two_blocks, monkeypatch, kind, loops, native):
    """The blocks of a loop with its own products (`by_rows(..., blas=False)`) run without
    setting BLAS's thread count to one and back, on Numba's threads and on the pool; the BLAS
    loops' blocks each have one BLAS thread. BLAS's count is as it was after either."""
    if loops == "blas":
        monkeypatch.setattr(_numba, "OWN_GEMM_BYTES", -1)
        monkeypatch.setattr(_numba, "OWN_SMALL_BATCH_BYTES", -1)
    monkeypatch.setattr(_threads, "NATIVE", native)
    layer, x = layer_and_input(kind)
    before = _threads.current_threads()
    limits = []
    real = _threads._one_thread

    def counted():
        limits.append(1)
        return real()

    monkeypatch.setattr(_threads, "_one_thread", counted)
    layer(x)
    assert (len(limits) > 0) == (loops == "blas")
    assert _threads.current_threads() == before


def test_a_layer_that_cannot_take_turns_uses_the_pool(two_blocks, monkeypatch):
    """Numba's "workqueue" threading layer (its fallback where neither TBB nor an OpenMP
    library loads) ends the process when two threads enter it at once: where the first call
    finds that layer, the pool runs every call after it."""
    import numba

    layer, x = layer_and_input("lstm")
    expected = layer(x)
    monkeypatch.setattr(_threads, "_native_state", None)
    monkeypatch.setattr(numba, "threading_layer", lambda: "workqueue")
    parallel_calls = spy_parallel(monkeypatch)
    pooled = spy_pool(monkeypatch)
    first = layer(x)
    assert len(parallel_calls) == 1 and pooled == []
    assert _threads._native_state is False and not _threads.native_ready()
    second = layer(x)
    assert len(parallel_calls) == 1 and len(pooled) == 1
    for a, b, c in zip(expected, first, second):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


def test_a_parallel_form_that_does_not_compile_falls_back_to_the_pool(two_blocks, monkeypatch):
    """A Numba error from a parallel form (it cannot be compiled for these arguments, say) runs
    the call on the pool, and that loop's calls after it; the other loops keep theirs."""
    from numba.core.errors import TypingError

    from unrolled.kernels import _numba_loops

    layer, x = layer_and_input("gru")
    expected = layer(x)

    def broken(args, bounds):
        raise TypingError("no parallel form for these arguments")

    monkeypatch.setattr(_threads, "_native_state", True)
    monkeypatch.setattr(_threads, "_native", dict(_threads._native))
    _threads._native[_numba_loops.gru_own] = broken
    pooled = spy_pool(monkeypatch)
    got = layer(x)
    assert pooled == ["gru_own"]
    assert _numba_loops.gru_own not in _threads._native
    assert _numba_loops.lstm_own in _threads._native and _threads.native_ready()
    again = layer(x)
    assert pooled == ["gru_own", "gru_own"]
    for a, b, c in zip(expected, got, again):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


FORK = r"""
import multiprocessing, sys
import numpy as np
from unrolled import layers
from unrolled.kernels import _numba, _threads

_numba.enabled = True
_threads.parts = lambda: 2


def call():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((19, 6, 5)).astype("float32")
    layer = layers.LSTM(24, return_sequences=True, return_state=True)
    layer(x)
    layer.set_weights([rng.normal(0, 0.4, w.shape).astype("float32")
                       for w in layer.get_weights()])
    return [np.asarray(a) for a in layer(x)]


def child(queue):
    queue.put((_threads.native_ready(), call()))


if __name__ == "__main__":
    expected = call()
    assert _threads._native_state is not None, "the parent never launched Numba's threads"
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    process = context.Process(target=child, args=(queue,))
    process.start()
    ready, got = queue.get(timeout=120)
    process.join(timeout=60)
    assert process.exitcode == 0, process.exitcode
    assert ready is False, "the child would have entered GNU OpenMP"
    for a, b in zip(expected, got):
        np.testing.assert_array_equal(a, b)
    print("ok")
"""


@pytest.mark.skipif(not hasattr(os, "register_at_fork"), reason="fork is POSIX's")
def test_a_forked_child_runs_its_blocks_on_the_pool(tmp_path):
    """The GNU OpenMP library behind Numba's "omp" layer is not safe across a fork: a child
    that enters it after its parent did is ended by Numba. A child forked after parallel forms
    ran uses the pool, with the same numbers. (In a process of its own: this one has JAX's
    threads, which a fork does not go well with.)"""
    script = tmp_path / "fork_child.py"
    script.write_text(FORK)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "UNROLLED_NATIVE_BLOCKS": "1"})
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


_TWO_CPUS = pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="CPU affinity is Linux's, and needs two CPUs")


@_TWO_CPUS
def test_numbas_threads_run_off_the_callers_cpu(two_blocks, monkeypatch):
    """Numba's threads that run the parallel forms are found at the first one's launch and
    placed as the pool's are: on the process's CPUs other than the caller's."""
    layer, x = layer_and_input("simple_rnn")
    layer(x)
    layer(x)
    if _threads._native_state is not True:
        pytest.fail(f"Numba's threading layer here is not one that may be entered from several "
                    f"threads ({__import__('numba').threading_layer()}): the parallel forms "
                    f"never run")
    assert _threads._native_workers, "no thread of Numba's was found"
    cpus = frozenset(os.sched_getaffinity(0))
    caller = _threads._placed[0]
    for tid in _threads._native_workers:
        assert os.sched_getaffinity(tid) == cpus - {caller}
    moved = min(cpus - {caller})
    monkeypatch.setattr(_threads, "_current_cpu", lambda: moved)
    layer(x)
    for tid in _threads._native_workers:
        assert os.sched_getaffinity(tid) == cpus - {moved}


_STARTED_BEFORE = """
import os
import numba
import numpy as np

@numba.njit(parallel=True)
def touch(a):
    for i in numba.prange(a.shape[0]):
        a[i] += 1

touch(np.zeros(64))        # the threading layer's threads start here, before unrolled's
started = set(os.listdir("/proc/self/task"))
from unrolled import layers
from unrolled.kernels import _threads

rng = np.random.default_rng(0)
layer = layers.SimpleRNN(64, return_sequences=True)
x = rng.standard_normal((32, 40, 8)).astype("float32")
_threads.parts = lambda: 2          # every call in two blocks of rows
layer(x)
layer(x)
assert _threads._native_state is True, numba.threading_layer()
workers = _threads._native_workers
assert workers and {str(t) for t in workers} <= started, (workers, started)
cpus = frozenset(os.sched_getaffinity(0))
for tid in workers:
    assert os.sched_getaffinity(tid) == cpus - {_threads._placed[0]}, tid
print("ok")
"""


@_TWO_CPUS
def test_numbas_threads_are_found_when_another_library_started_them():
    """Where the threading layer's threads were started before unrolled's first parallel form
    (another library on the same GNU OpenMP, torch for one; here a parallel function of
    Numba's own), there are no new threads to find at the first launch: each thread says
    who it is (`_numba_loops.thread_ids`), and they are placed as before."""
    done = subprocess.run([sys.executable, "-c", _STARTED_BEFORE], capture_output=True,
                          text=True, timeout=600,
                          env={**os.environ, "UNROLLED_NATIVE_BLOCKS": "1",
                               "UNROLLED_NUMBA": "1"})
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


def test_gnu_openmp_starts_with_a_short_spin_unless_told_otherwise(monkeypatch):
    """Numba's threading layer starts with `GOMP_SPINCOUNT` at `SPIN_COUNT` (GNU OpenMP's
    threads spin that long for the next call, not its default of about 5 ms here), and the
    environment is as it was afterwards; an environment that sets OpenMP's waiting already
    is left alone."""
    for name in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY"):
        monkeypatch.delenv(name, raising=False)
    with _threads._short_spin():
        assert os.environ["GOMP_SPINCOUNT"] == _threads.SPIN_COUNT
    assert "GOMP_SPINCOUNT" not in os.environ
    monkeypatch.setenv("OMP_WAIT_POLICY", "passive")
    with _threads._short_spin():
        assert "GOMP_SPINCOUNT" not in os.environ
    monkeypatch.delenv("OMP_WAIT_POLICY")
    monkeypatch.setenv("GOMP_SPINCOUNT", "123")
    with _threads._short_spin():
        assert os.environ["GOMP_SPINCOUNT"] == "123"
    assert os.environ["GOMP_SPINCOUNT"] == "123"


def test_a_call_that_loads_a_parallel_form_is_not_timed(two_blocks, monkeypatch):
    """A parallel form is compiled, or loaded from Numba's cache, at its first call with new
    argument types: milliseconds that are no measure of the row blocks' setting. The thread
    choice leaves that call out, as it does a kind's first call."""
    from unrolled.kernels import _numba_loops

    real = _threads._native[_numba_loops.lstm_own]

    class Loading:
        """The real form, with one more compiled signature after its second call (the first
        is the kind's first, which is not timed anyway)."""
        overloads: dict = {}
        seen = 0

        def __call__(self, args, bounds):
            real(args, bounds)
            self.seen += 1
            if self.seen == 2:
                self.overloads = {"loaded": True}

    layer, x = layer_and_input("lstm", units=64, batch=32, steps=100, features=16)
    monkeypatch.setitem(_threads._native, _numba_loops.lstm_own, Loading())
    monkeypatch.setattr(_threads, "MODE", "auto")

    def pick(choice):
        choice.calls += 1
        return _threads.ROWS

    monkeypatch.setattr(_threads.ThreadChoice, "pick", pick)
    monkeypatch.setattr(_threads, "_choices", {})
    for _ in range(5):
        layer(x)
    [choice] = [c for key, c in _threads._choices.items() if key[0] == x.shape]
    # 5 calls: the kind's first, then the one that loaded the form, neither timed
    assert choice.calls == 5
    assert len(choice.times[_threads.ROWS]) == 3
