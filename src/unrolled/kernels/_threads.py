"""How a kernel call uses the machine's cores: one BLAS thread, BLAS's own count, or blocks of
batch rows on threads of their own.

Each step of a kernel multiplies `h_{t-1} W`, `(batch, units) @ (units, gates*units)`: one small
matrix product per timestep. OpenBLAS splits any product above `m*n*k = 262144` over all its
threads and joins them again at the end of the call, so a 100-step loop pays 100 thread
hand-offs. Whether they pay depends on the shape and on what else the machine is doing, and
the measurements disagree from one hour to the next on a shared machine
(benchmarks/RESULTS.md): on a busy 2-vCPU machine one thread was faster for every per-step
product measured, 1.3x to 5x, whole calls up to 35x; with one other process running, two
threads made SimpleRNN (128, 200, 64, 256) 2.8x faster than one (161 vs 450 ms); with an
idle core, LSTM (32, 100, 16, 64) took 8.7 ms with two and 13.5 ms with one.

The compiled loops have a third way (`ROWS`): batch rows never meet in a recurrent layer, so
the batch can be cut into blocks that run the whole sequence at once on separate threads, each
with one BLAS thread (`by_rows`), with one hand-off per call instead of one per step. The
compiled loops hand their blocks to Numba's own threads, in one call of a parallel form of the
loop, where Numba's threading layer may be entered from several threads (OpenMP or TBB; see
`_run_native`); other blocks go to a pool of Python threads. Numba's GNU OpenMP threads wait
for the next call by spinning (about 0.2 ms, `SPIN_COUNT`; 5 ms, the library's default, where
torch started it first), on the CPU the pool's thread would use, so the training loops'
whole-sequence products run on Numba's threads too (`native_products`): with the loops there
and the products on the pool, an LSTM (32, 100, 16, 64) training step took 4.1-4.4 ms against
3.6 all on the pool (RESULTS.md, round 21); all on Numba's threads, 0.96 of the pool's time,
and 0.73 in a process that ran torch's training steps in between (round 29).

A batch of under `UNIT_ROWS_MAX` rows has a fourth (`UNITS`, `by_units`): the fused loops on
packed weights (and an LSTM's training loops) split each step's blocks of units between Numba's
threads, which stay in the loop for the whole call and meet at the end of every step through
counters (`_numba_loops.lstm_own_units`). A step of a small batch reads the whole `[W; U]` for a few
multiply-adds a number, so two cores read it twice as fast, less a meeting of some 0.1 us a
step; where blocks of rows are offered too (16 rows and more, weights over a core's L2), each
part reads its share of the weights where each block would read them all.

So the choice is measured, not guessed (`ThreadChoice`): for each kind of call (its shape and
kernels) each setting on offer is timed on real calls, two each (a kind's very first call is
not timed: it also loads compiled loops), and then the fastest by the best of its last `KEEP`
timings is used (other work on the machine only ever slows a call down, so the best timing is
the setting's own speed, while a median would need three undisturbed timings of a setting that
is tried once in a while); a setting r times slower than the best is tried again every
`explore_period(r)` calls, (r - 1) / 2% of them, so the choice follows the machine's load at a
cost of about 2% per other setting, and a near tie is retried within a few calls. A setting
that its tries keep finding more than 10% slower is tried half as often after each, down to an
eighth of that rate (0.25% per clear loser), until a try finds it near the best again or the
best itself slows down (`BACKOFF_MARGIN`). One or all
BLAS threads are on offer for steps of `STEP_WORK_MIN`
to `STEP_WORK_MAX` multiply-adds (above, a step takes milliseconds and keeps every thread;
below, OpenBLAS uses one thread by itself);
`ROWS` for compiled loops with at least `ROW_WORK_MIN` multiply-adds in the call and
`ROW_BLOCK_MIN` rows a block (`row_parts`); `UNITS` under `UNIT_ROWS_MAX` rows where a step
has at least two blocks of units to share (`unit_parts`).

`step_threads(work, key, parts)` is a context manager around a whole kernel call
(`_dispatch.execute`) and around the training loops: when it limits, it sets the BLAS
libraries NumPy and the compiled loops use (found by threadpoolctl) to one thread and restores
their own counts in `finally`, so the process's setting is the same after a call as before it,
error or not. Without threadpoolctl it does nothing. Thread counts do not change the results:
BLAS splits a product's output between threads, never a sum. Row blocks can move a row's
numbers by a float rounding: a product with fewer rows may sum in another order.

BLAS's own threads and blocks of rows do not mix. After a product on several threads,
OpenBLAS's threads wait for the next by spinning, about 0.1 s, and took the CPUs the row blocks
needed (a training step of LSTM (32, 100, 16, 64): 10.6-10.8 ms so, 6.1-7.0 without;
benchmarks/RESULTS.md, round 17). So training does its whole-sequence products in blocks too
(`matmul`, `at_b`) and is not offered `ALL` beside `ROWS`, and the other layers' products
(`product`: Dense) keep off BLAS's threads for `BLOCKS_RECENT` seconds after any row blocks.

`UNROLLED_STEP_THREADS` in the environment: `auto` (the default, as above), `1` (always one
thread in range, no row blocks), `0` (never limit, no row blocks; for measuring it).
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from typing import Any, Iterator

from unrolled import _env

__all__ = ["step_threads", "one_thread", "limited", "in_range", "chooses", "parts", "blocks",
           "cores", "by_rows", "row_parts", "ThreadChoice", "ONE", "ALL", "ROWS", "UNITS",
           "unit_parts", "units", "by_units",
           "matmul", "at_b", "product", "product_parts", "native_products",
           "STEP_WORK_MIN", "STEP_WORK_MAX", "blas_controllers"]

# OpenBLAS's own single-thread threshold (GEMM_MULTITHREAD_THRESHOLD 4 x 65536 multiply-adds):
# below it BLAS runs one thread anyway and switching would cost more than it saves.
STEP_WORK_MIN = 4 * 65536
# Above this many multiply-adds per step (e.g. (256, 1024) @ (1024, 512)) every thread is kept.
STEP_WORK_MAX = 1 << 27

# "auto", "1" or "0" (see above); tests set it directly.
MODE = _env.choice("UNROLLED_STEP_THREADS", ("auto", "1", "0"), "auto")
# In auto mode a slower setting is tried again now and then, so that a change of the machine
# (another process taking a core, or leaving it) is seen. A try of a setting r times slower
# than the best costs r - 1 calls' time; it comes every (r - 1) / EXPLORE_SHARE calls, so the
# tries cost about EXPLORE_SHARE of the time per other setting, and a near tie is retried
# within a few calls (on the shared benchmark machine row blocks took 2.8 ms or 6 ms a call at
# LSTM (32, 100, 16, 64) as another process came and went, against 5.3 ms on one thread; a
# fixed period of 50 calls kept the one-thread setting long after row blocks were fast again).
EXPLORE_SHARE = 0.02
EXPLORE_MIN, EXPLORE_MAX = 5, 2500   # calls between tries of one setting
KEEP = 5             # timings kept per setting
# A setting that its tries find slower than the best by more than BACKOFF_MARGIN, try after
# try, is tried half as often after each such try, down to 2**-BACKOFF_MAX of its period's
# rate: a clear loser then costs an eighth of EXPLORE_SHARE. Each setting at the benchmark's
# largest LSTM point, (256, 100, 256, 1024), took 0.25 s more than the best at every try, two
# settings every 9 calls: 4% of the time, where the host changed nothing. A try within the
# margin of the best (a near tie) puts the setting back to its full rate, and so does the
# best's own slowing down, the median of its kept timings more than BACKOFF_DRIFT over its
# fastest (another process taking a core): then every setting is tried at its full rate again.
# So a loser that becomes the best while the best stays as it was is seen within 8 of its
# periods, not one (7 calls' period at the 1.13 of row blocks against one thread above: 56).
BACKOFF_MARGIN = 0.1
BACKOFF_MAX = 3
BACKOFF_DRIFT = 0.25

_controllers: list | None = None
_choices: dict = {}  # kind of call -> ThreadChoice
_lock = threading.Lock()
_depth = 0          # nested or concurrent limited loops: only the outermost restores
_saved: list = []


def blas_controllers() -> list:
    """threadpoolctl's controllers of the loaded BLAS libraries ([] without threadpoolctl)."""
    global _controllers
    if _controllers is None:
        found: list = []
        if MODE != "0":
            try:
                import threadpoolctl
            except ImportError:
                pass
            else:
                found = [c for c in threadpoolctl.ThreadpoolController().lib_controllers
                         if c.user_api == "blas"]
        _controllers = found
    return _controllers


def forget_controllers() -> None:
    """Take stock of the BLAS libraries again at the next limit (one was loaded since)."""
    global _controllers
    with _lock:
        if _depth == 0:
            _controllers = None
        elif _controllers is not None:
            # Loaded inside a limit (a compiled loop's first call): limit it now as well, and
            # restore it with the others.
            known = {c.filepath for c in _controllers}
            _controllers = None
            for c in blas_controllers():
                if c.filepath not in known:
                    n = c.get_num_threads()
                    _saved.append((c, n))
                    if n != 1:
                        c.set_num_threads(1)


def in_range(work: int) -> bool:
    """Whether a step of `work` multiply-adds is one whose thread count is chosen (see above)."""
    return STEP_WORK_MIN < work <= STEP_WORK_MAX and MODE != "0"


ONE, ALL, ROWS, UNITS = "one", "all", "rows", "units"
"""The settings a call can run under: one BLAS thread; BLAS's own thread count; the batch
split into blocks of rows run at once on separate threads (compiled loops only), each with one
BLAS thread; or each step's units split between threads that meet at every step (the fused
loops on packed weights, for batches of under UNIT_ROWS_MAX rows)."""

# Blocks of rows (`ROWS`) are tried for calls with at least this many recurrent multiply-adds in
# all (a hand-off to the pool's thread costs about 0.1 ms) and at least this many rows a block.
ROW_WORK_MIN = 1 << 22
ROW_BLOCK_MIN = 8
# UNITS is offered below this many rows, beside ROWS from 2 * ROW_BLOCK_MIN (the choice times
# both): a part reads its share of the weights once a step for all the rows, where each block
# of rows reads all of them. The units forms run on packed weights, which batches of over 128
# rows leave to BLAS above 2 MiB (`_numba.OWN_GEMM_ROWS`), unless they pack them into the
# output's last steps (`_numba.TAIL_SHARE`: offered then at any batch); below 2 MiB the weights
# fit a core's L2, and at 128 rows the blocks of rows gained nothing from sharing them (LSTM
# (128, 200, 64, 256), units forced: the same time; SimpleRNN 1.12). With both on offer against
# blocks of rows alone (`benchmarks/ab.py`, 7 rounds; RESULTS.md, round 27): LSTM
# (16, 100, 64, 1024) 0.78 of the time, GRU 0.75; (16, 100, 32, 512) 0.77 and 0.78;
# (24, 100, 32, 512) 0.82, 0.86. Units forced against the choice of that time, alternated in
# one process: LSTM (64, 100, 64, 1024) 0.60, GRU 0.61; (96, 100, 64, 1024) 0.72 and 0.95;
# (48, 100, 32, 512) 0.67 and 0.69.
UNIT_ROWS_MAX = 128


def explore_period(ratio: float) -> int:
    """Calls between tries of a setting `ratio` times slower than the best (see EXPLORE_SHARE)."""
    return int(min(EXPLORE_MAX, max(EXPLORE_MIN, math.ceil((ratio - 1) / EXPLORE_SHARE))))


class ThreadChoice:
    """Which setting (`ONE`, `ALL`, `ROWS`) one kind of call runs under, learned from its own
    timings: each option is tried twice, then the fastest by its best recent timing is used,
    and each other option is tried again every `explore_period(how many times slower)` calls,
    so that trying costs about EXPLORE_SHARE of the time per other option; that period doubles
    after each try that finds the option a clear loser again, up to BACKOFF_MAX times (see
    BACKOFF_MARGIN)."""

    __slots__ = ("times", "calls", "backoff", "fastest")

    def __init__(self, options: tuple = (ONE, ALL)) -> None:
        self.times: dict[str, list[float]] = {o: [] for o in options}   # setting -> seconds
        self.calls = 0
        self.backoff = dict.fromkeys(options, 0)    # setting -> doublings of its period
        self.fastest: dict[str, float] = {}         # timed setting -> best of its kept timings

    def pick(self) -> str:
        """The setting of the next call."""
        self.calls += 1
        untried = min(self.times, key=lambda o: len(self.times[o]))
        if len(self.times[untried]) < 2:
            return untried                                          # each in turn, twice
        fastest = self.fastest
        best = min(fastest, key=fastest.__getitem__)
        for offset, o in enumerate(self.times):
            period = min(EXPLORE_MAX,
                         explore_period(fastest[o] / max(fastest[best], 1e-9)) << self.backoff[o])
            if o != best and (self.calls + offset) % period == 0:   # offset: never two at once
                return o
        return best

    def record(self, setting: str, seconds: float) -> None:
        kept, fastest = self.times[setting], self.fastest
        best = min(fastest, key=fastest.__getitem__) if fastest else setting
        before = fastest.get(setting, seconds)
        kept.append(seconds)
        del kept[:-KEEP]
        fastest[setting] = min(kept)
        if best == setting:             # the best slowing down: every setting at full rate
            if sorted(kept)[len(kept) // 2] > before * (1 + BACKOFF_DRIFT):
                self.backoff = dict.fromkeys(self.backoff, 0)
        elif len(kept) > 2:             # a try after the first two: a loser again, or not
            lost = seconds > fastest[best] * (1 + BACKOFF_MARGIN)
            self.backoff[setting] = min(self.backoff[setting] + 1, BACKOFF_MAX) if lost else 0


def _choice(key: Any, options: tuple) -> ThreadChoice:
    found = _choices.get(key)
    if found is None or tuple(found.times) != options:
        if len(_choices) > 512:
            _choices.clear()
        found = _choices[key] = ThreadChoice(options)
    return found


def cores() -> int:
    """How many CPUs this process may run on: its CPU affinity where the system has one (a
    container's CPU set or `taskset` may allow fewer CPUs than the machine has, and
    `os.cpu_count()` counts the machine's), else `os.cpu_count()`."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def row_parts(batch: int, call_work: int) -> int:
    """How many blocks of rows a call of `batch` rows and `call_work` recurrent multiply-adds
    may be split into (1: not at all): at most one a CPU the process may use (`cores`)."""
    n = cores()
    if n < 2 or MODE != "auto" or batch < 2 * ROW_BLOCK_MIN or call_work < ROW_WORK_MIN:
        return 1
    return min(n, batch // ROW_BLOCK_MIN)


def unit_parts(batch: int, blocks: int, any_batch: bool = False) -> int:
    """How many parts the units of each step of a call of `batch` rows, whose steps have
    `blocks` blocks of units, may be split into (1: not at all): under `UNIT_ROWS_MAX` rows
    (at any batch with `any_batch`: kernels that pack their weights into the output's last
    steps for a units form, `_numba.TAIL_SHARE`), at most one a CPU and one a block. The parts
    meet at every step through counters, for some 0.1 us (`_numba_loops.lstm_own_units`), so
    any step of two blocks or more may gain:
    LSTM (1, 100, 32, 128), two blocks of 64 units, took 0.71-0.76 of one thread's time in two
    parts, GRU 0.65-0.71, LSTM (4, 300, 32, 128) 0.76 (RESULTS.md, round 26); a call of a few
    steps can lose (LSTM (1, 20, 8, 128) 1.13), which the choice's timings find, as they
    choose between units and blocks of rows where both are offered."""
    n = cores()
    if (n < 2 or MODE != "auto" or (batch >= UNIT_ROWS_MAX and not any_batch)
            or not native_ready()):
        return 1
    return max(1, min(n, blocks))


def chooses(work: int, parts: int = 1, unit_split: int = 1) -> bool:
    """Whether a call whose steps do `work` multiply-adds, splittable into `parts` blocks of
    rows or its steps' units into `unit_split` parts, runs under a timed choice
    (`step_threads`)."""
    return in_range(work) or ((parts > 1 or unit_split > 1) and MODE == "auto")


_local = threading.local()


def parts() -> int:
    """How many blocks of rows the compiled loop called now on this thread should run at once
    (set by `step_threads` when it chose `ROWS`; 1 otherwise)."""
    return getattr(_local, "parts", 1)


def blocks(rows: int) -> int:
    """How many blocks of its `rows` rows the compiled loop called now should run at once:
    `parts()`, at most one per row."""
    return max(1, min(parts(), rows))


def units() -> int:
    """How many parts the compiled loop called now on this thread should split each step's
    units into (set by `step_threads` when it chose `UNITS`; 1 otherwise)."""
    return getattr(_local, "units", 1)


@contextlib.contextmanager
def step_threads(work: int, key: Any = None, parts: int = 1, blas: bool = True,
                 every_thread: bool = True, unit_split: int = 1) -> Iterator[None]:
    """Run the body under the setting chosen for calls of kind `key` (default: all calls of
    `work` multiply-adds a step) whose steps do `work` each; `parts` > 1 offers `ROWS` too (the
    body's compiled loops read `parts()`). Under `ONE`, `ROWS` and `UNITS` the body has one
    BLAS thread.
    `blas=False`: the body calls no BLAS (the fused loops), so `ONE` and `ALL` are the same
    call and only `ALL` is on offer (trying both cost twice the tries of a slower setting: in
    the benchmark's rotation, where the host slowed the row blocks, a try every few calls), and
    `ROWS` leaves BLAS's thread count as it is. `unit_split` > 1 offers `UNITS` (the body's
    compiled loops read `units()`).
    `every_thread=False`: `ALL` is not on offer beside `ROWS` or `UNITS` (the training kernels,
    which run their other products in blocks too, on one BLAS thread each: under `UNITS` too
    the body has one BLAS thread). After a product on several threads, OpenBLAS's threads
    wait for the next one by spinning, about 0.1 s, on the CPUs the next row blocks need: a
    training step of LSTM (32, 100, 16, 64) took 10.6-10.8 ms so, and 6.1-7.0 ms with the
    spinning cut short (RESULTS.md, round 17). Each try of `ALL` would start that again."""
    if not chooses(work, parts, unit_split) or not blas_controllers():
        yield
        return
    if MODE == "1":
        with _one_thread():
            yield
        return
    one_all = (ONE, ALL) if in_range(work) and blas else (ALL,)
    if (parts > 1 or unit_split > 1) and not every_thread:
        one_all = (ONE,) if blas else (ALL,)
    options = one_all + ((ROWS,) if parts > 1 else ()) + ((UNITS,) if unit_split > 1 else ())
    choice = _choice((work, parts) if key is None else key, options)
    first = choice.calls == 0
    setting = choice.pick()
    start = time.perf_counter()
    limit = setting in (ONE, ROWS, UNITS) and blas   # a body without BLAS has nothing to limit
    # a choice inside another's body keeps its blocks
    outer, outer_units = getattr(_local, "parts", 1), getattr(_local, "units", 1)
    _local.loaded = False
    with _one_thread() if limit else contextlib.nullcontext():
        _local.parts = parts if setting == ROWS else outer
        _local.units = unit_split if setting == UNITS else outer_units
        try:
            yield
        finally:
            _local.parts, _local.units = outer, outer_units
    # A kind's first call also loads compiled loops and touches new memory, and a call that
    # loaded a loop's parallel form (`_run_native`) is no measure of its setting either: in a
    # benchmark run, LSTM (32, 100, 16, 64)'s first two calls in row blocks took 10.4 and 4.3
    # ms, against 0.65 after, and kept the choice on one thread for the whole run.
    if not first and not _local.loaded:
        choice.record(setting, time.perf_counter() - start)


_pool: Any = None
_blocks_ran = -math.inf     # time.monotonic() of the last call in blocks (by_rows)
# The pool's threads (their kernel ids), and how they were last placed (see _place_workers).
_workers: list[int] = []
_placed: tuple | None = None
_cpus: frozenset = frozenset()
_current_cpu: Any = None    # glibc's sched_getcpu, where there is one


def _note_worker() -> None:
    # the pool's initializer, in each of its threads
    _workers.append(threading.get_native_id())


def _find_cpus() -> None:
    # glibc's sched_getcpu and the CPUs this process may use, for _place_workers (Linux)
    global _cpus, _current_cpu
    if hasattr(os, "sched_setaffinity"):
        try:
            import ctypes

            _current_cpu = ctypes.CDLL(None).sched_getcpu
            _current_cpu.restype = ctypes.c_int
            _current_cpu.argtypes = ()
            _cpus = frozenset(os.sched_getaffinity(0))
        except (OSError, AttributeError):
            _current_cpu = None


def _start_pool() -> Any:
    global _pool
    from concurrent.futures import ThreadPoolExecutor

    if _current_cpu is None:
        _find_cpus()
    _pool = ThreadPoolExecutor(max_workers=max(1, cores() - 1),
                               thread_name_prefix="unrolled-rows", initializer=_note_worker)
    return _pool


def _place_workers() -> None:
    """Keep the pool's threads off the CPU the calling thread is on (Linux): each may run on
    any of the process's other CPUs. Left to itself, the scheduler often woke the pool's thread
    on the caller's own CPU and kept both there for many calls, so that two blocks of rows ran
    one after the other: on the 2-vCPU benchmark machine, after a pause or another library's
    work, LSTM (32, 100, 16, 64) calls in two blocks took 2.2-3.0 ms for streaks of ten calls
    and more, as long as on one thread, against 1.2-1.4 ms with the threads on two CPUs. Placed
    this way, 1.2-1.9 ms after the first call (RESULTS.md, round 16). The affinity is set again
    only when the caller has moved to another CPU, or the pool has grown. Numba's threads, which
    run the compiled loops' parallel forms (`_run_native`), are placed the same way."""
    global _placed
    if _current_cpu is None:
        return
    cpu = _current_cpu()
    placed = (cpu, len(_workers), len(_native_workers))
    if placed == _placed:
        return
    others = _cpus - {cpu}
    if cpu < 0 or not others:
        return
    for worker in [*_workers, *_native_workers]:
        try:
            os.sched_setaffinity(worker, others)
        except OSError:         # a thread gone, or a CPU no longer ours: leave it to the kernel
            pass
    _placed = placed


def by_rows(fn: Any, args: tuple, rows: int, blocks: int, blas: bool = True) -> list:
    """`[fn(*args, b0, b1) for each block]` over `blocks` blocks of the `rows` rows at once,
    each with one BLAS thread, and each on another CPU than the caller's where the system lets
    it say so (`_place_workers`). `blas=False`: `fn` never calls BLAS (the fused loops), and
    BLAS's thread count is left as it is (setting it to one and back took 4 us a call;
    RESULTS.md, round 23).

    A compiled loop with a parallel form (`native_blocks`) runs its blocks in one call of that
    form, on Numba's threads, when Numba's threading layer is safe to call from several threads
    (`native_ready`); such loops return nothing, and so does each block here. Anything else
    runs its first block on the calling thread and the others on the pool's threads (the
    compiled loops release the GIL). A hand-off to the pool takes 60-90 us on the 2-vCPU
    benchmark machine (two thread wake-ups and the interpreter's lock), Numba's 2 us while its
    threads are awake (RESULTS.md, round 21)."""
    if blocks <= 1:
        return [fn(*args, 0, rows)]
    global _blocks_ran
    _blocks_ran = time.monotonic()
    bounds = [rows * i // blocks for i in range(blocks + 1)]
    if fn in _native and native_ready() and _run_native(fn, args, bounds, blas):
        return [None] * blocks
    pool = _pool if _pool is not None else _start_pool()
    _place_workers()
    with one_thread() if blas else contextlib.nullcontext():
        futures = [pool.submit(fn, *args, bounds[i], bounds[i + 1]) for i in range(1, blocks)]
        try:
            first = fn(*args, bounds[0], bounds[1])
        finally:
            rest = [future.result() for future in futures]
    return [first, *rest]


# ------------------------------------------------------------------ blocks on Numba's threads

# A compiled loop -> its parallel form `(args, bounds)`, which runs `loop(*args, bounds[i],
# bounds[i + 1])` for each i at once (a `prange` over the blocks); registered where both are
# defined (unrolled.kernels._numba_loops: the forward loops).
_native: dict = {}
# A compiled loop -> its form with each step's units split between threads (`by_units`).
_native_units: dict = {}
# UNROLLED_NATIVE_BLOCKS=0 keeps every block on the pool (for measuring it, or a threading
# layer that misbehaves); tests flip it.
NATIVE = _env.flag("UNROLLED_NATIVE_BLOCKS")
# Numba's threading layers that may be entered from several threads at once. The "workqueue"
# layer, Numba's fallback where neither TBB nor an OpenMP library loads, may not: two threads
# entering it at once end the process.
_SAFE_LAYERS = ("omp", "tbb")
_native_state: bool | None = None   # whether the layer is one of those (None: not launched yet)
_native_lock = threading.Lock()
_forked = False
# The kernel ids of Numba's threads, found at the first parallel call (see _run_native).
_native_workers: list[int] = []
# `_numba_loops.thread_ids`, once the loops are loaded (`native_ids`)
_native_ids: list = []


def native_blocks(loop: Any, parallel: Any) -> None:
    """Register `parallel(args, bounds)` as the way to run `loop`'s blocks of rows at once."""
    _native[loop] = parallel


def native_ids(parallel: Any) -> None:
    """Register `parallel(ids)`, which has each of Numba's threads write its kernel id into
    `ids` (one slot a thread), for finding them (`_run_native`)."""
    _native_ids[:] = [parallel]


def native_units(loop: Any, parallel: Any) -> None:
    """Register `parallel(args, bounds)` as the way to run `loop` over all rows with each
    step's units in `len(bounds) - 1` parts at once (see `by_units`)."""
    _native_units[loop] = parallel


def by_units(fn: Any, args: tuple, rows: int, parts: int) -> None:
    """`fn(*args, 0, rows)`, with each step's units in `parts` parts at once on Numba's threads
    where `fn` has such a form (`native_units`) and they may run it (`native_ready`); else
    on the calling thread. The loops write their results into their arguments."""
    if parts > 1 and fn in _native_units and native_ready():
        if _run_native(fn, args, list(range(parts + 1)), False, _native_units):
            return
    fn(*args, 0, rows)


def native_ready() -> bool:
    """Whether parallel forms may run: not turned off, not in a child forked after this
    process launched Numba's threading layer (the GNU OpenMP library is not safe across a
    fork), and that layer, once launched, one of `_SAFE_LAYERS`."""
    return NATIVE and not _forked and _native_state is not False


def _after_fork() -> None:
    # In a forked child only the forking thread goes on: the pool's threads, and Numba's, are
    # not there. A new pool is started at the child's first blocks (the parent's, whose threads
    # are gone, would take the blocks and never run them). Numba's threading layer, if the
    # parent launched it, is not entered again: Numba ends a child that enters GNU OpenMP
    # after its parent did.
    global _forked, _pool, _placed
    _forked = _native_state is not None
    _pool, _placed = None, None
    _workers.clear()
    _native_workers.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def _tasks() -> set[int]:
    # this process's threads' kernel ids (Linux), else none
    try:
        return {int(t) for t in os.listdir("/proc/self/task")}
    except (OSError, ValueError):
        return set()


def _run_native(loop: Any, args: tuple, bounds: list[int], blas: bool = True,
                forms: dict | None = None) -> bool:
    """`loop`'s blocks (rows `bounds[i]` to `bounds[i + 1]`) in one call of its parallel form,
    on as many of Numba's threads (set for this call and restored: Numba's thread count is the
    calling thread's own setting). False where Numba cannot compile or launch the form: then
    nothing ran, and the loop's blocks go to the pool from then on. The first call launches
    Numba's threading layer, under a lock so that no other thread enters it before it is known
    to be safe; the threads it starts are found then (the process's new threads that are not
    Python's), to be placed off the caller's CPU as the pool's are (`_place_workers` places
    them at the next call: their count is part of what it compares). `forms`: the table of
    parallel forms to take `loop`'s from (`_native` by default, or `_native_units`)."""
    global _native_state
    import numba
    import numpy as np
    from numba.core.errors import NumbaError

    if forms is None:
        forms = _native
    parallel = forms[loop]
    blocks, edges = len(bounds) - 1, np.array(bounds, dtype=np.int64)
    try:
        if _native_state is None:
            with _native_lock:
                if _native_state is None:
                    before = _tasks()
                    with _short_spin():
                        _call_native(numba, parallel, args, edges, blocks, blas)
                    _native_state = numba.threading_layer() in _SAFE_LAYERS
                    if _native_state:
                        python = {t.native_id for t in threading.enumerate()}
                        found = _thread_ids(numba) or _tasks() - before
                        _native_workers.extend(sorted(found - python))
                        if _current_cpu is None:
                            _find_cpus()
                    return True
        _place_workers()
        _call_native(numba, parallel, args, edges, blocks, blas)
    except (NumbaError, TypeError, ValueError):
        # not compiled for these arguments (Numba's parallel lowering raises TypeError for
        # some), or no threading layer to launch: a compiled form raises nothing else
        forms.pop(loop, None)
        return False
    return True


def _thread_ids(numba: Any) -> set[int]:
    """The kernel ids of Numba's threads, each written by the thread itself (`native_ids`);
    empty where that cannot say (no such function registered, or no `gettid`). The process's
    threads that are new after the first launch are not always Numba's: where another library
    started the same GNU OpenMP library first (torch does), its threads serve Numba's calls,
    and there were none new to find, so none were placed, and the scheduler ran the units'
    two parts, or two blocks of rows, on one CPU for streaks of calls (RESULTS.md, round 26)."""
    if not _native_ids:
        return set()
    import numpy as np
    from numba.core.errors import NumbaError

    count = numba.config.NUMBA_NUM_THREADS
    ids = np.full(count, -1, dtype=np.int64)
    threads = numba.get_num_threads()
    if threads != count:
        numba.set_num_threads(count)
    try:
        _native_ids[0](ids)
    except (NumbaError, TypeError, ValueError):
        return set()
    finally:
        if threads != count:
            numba.set_num_threads(threads)
    return {int(i) for i in ids if i > 0}


# How long GNU OpenMP's threads spin, waiting for the next parallel call, before they sleep:
# `GOMP_SPINCOUNT` for the library's start (it reads the variable once, when it is loaded),
# unless the environment says otherwise. Its own default, 300 000, kept Numba's thread spinning
# about 5 ms after each call here, on the CPU where the pool's thread then ran a `Dense`
# layer's block of rows: a model of an LSTM (32, 100, 32, 256) and a Dense layer took 1.07 of
# its time with the pool alone, and 0.99 with 10 000, about 0.2 ms (RESULTS.md, round 21).
SPIN_COUNT = "10000"


@contextlib.contextmanager
def _short_spin() -> Iterator[None]:
    """`GOMP_SPINCOUNT=SPIN_COUNT` in the environment while Numba's threading layer starts
    (and loads GNU OpenMP, unless something loaded it before), then as it was; nothing where
    the environment sets either of OpenMP's waiting policies already."""
    if "GOMP_SPINCOUNT" in os.environ or "OMP_WAIT_POLICY" in os.environ:
        yield
        return
    os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT
    try:
        yield
    finally:
        os.environ.pop("GOMP_SPINCOUNT", None)


def _call_native(numba: Any, parallel: Any, args: tuple, bounds: Any, blocks: int,
                 blas: bool = True) -> None:
    # Numba's thread count and BLAS's are set (and set back) only where they differ from what
    # the call needs: each setting costs 1-4 us, of a 130-600 us call at (32, 100, 16, 64).
    threads = numba.get_num_threads()
    wanted = min(blocks, numba.config.NUMBA_NUM_THREADS)
    if wanted != threads:
        numba.set_num_threads(wanted)
    compiled = len(getattr(parallel, "overloads", ()))
    try:
        with one_thread() if blas else contextlib.nullcontext():
            parallel(args, bounds)
    finally:
        if wanted != threads:
            numba.set_num_threads(threads)
        if len(getattr(parallel, "overloads", ())) != compiled:    # compiled, or loaded
            _local.loaded = True


# ------------------------------------------------------------------ whole products

# A product of at least this many multiply-adds goes to the pool's threads in blocks
# (`product_parts`), as do row blocks (`ROW_WORK_MIN`): a hand-off costs tens of microseconds.
PRODUCT_WORK_MIN = ROW_WORK_MIN
# How long after a call in blocks of rows the other layers' products stay off BLAS's threads
# (`product`): OpenBLAS's threads spin for about 0.1 s after a product.
BLOCKS_RECENT = 1.0


def product(a: Any, b: Any, out: Any, transpose_a: bool = False) -> None:
    """`out = a @ b` (or `a^T b` with `transpose_a`, by `at_b`) for the products of layers
    outside the recurrent kernels (Dense): as NumPy runs it, unless blocks of rows ran in the
    last `BLOCKS_RECENT` seconds (a recurrent layer of the same model, say). Then the product
    keeps off BLAS's own threads, whose spinning would take the blocks' CPUs: in blocks on the
    pool's threads when large (`product_parts`), else on one BLAS thread. A model of an
    embedding, an LSTM (32, 100, 16, 128) and a Dense layer took 23-32 ms a training step so,
    against 32-37 (RESULTS.md, round 17); a model without row blocks runs as before (on its
    own, a pool's hand-off made a small Dense layer's call twice as long)."""
    import numpy as np

    work = a.shape[0] * a.shape[1] * b.shape[1]
    recent = time.monotonic() - _blocks_ran < BLOCKS_RECENT
    if transpose_a:
        at_b(a, b, out, product_parts(work, b.shape[1]) if recent else 1, limit=recent)
    elif recent:
        matmul(a, b, out, product_parts(work, a.shape[0]), limit=True)
    else:
        np.matmul(a, b, out=out)


def product_parts(work: int, size: int) -> int:
    """How many blocks a product of `work` multiply-adds, splittable `size` ways, runs in on
    the pool (`matmul`, `at_b`): one a CPU the process may use for `PRODUCT_WORK_MIN` or
    more, in auto mode; else 1."""
    if MODE != "auto" or work < PRODUCT_WORK_MIN:
        return 1
    return max(1, min(cores(), size))


# The whole-sequence products' parallel forms (`native_products`): `_at_b_columns`,
# `_matmul_rows` and `_column_sums` -> their forms `(args, bounds)`; and the test of whether a
# block's product is one they take.
_native_products: dict = {}
_product_fits: list = []


def native_products(at_b: Any, matmul: Any, sums: Any, fits: Any) -> None:
    """Register `at_b((a, b, out), bounds)`, `matmul((a, b, out), bounds)` and
    `sums((b, sums), bounds)`, which run `_at_b_columns`', `_matmul_rows`' and
    `_column_sums`' blocks at once on Numba's threads, and `fits(a, b, out)`, whether one
    block's product is one they take (see `matmul`'s `native`)."""
    _native_products[_at_b_columns] = at_b
    _native_products[_matmul_rows] = matmul
    _native_products[_column_sums] = sums
    _product_fits[:] = [fits]


def _takes(fn: Any, args: tuple, bounds: list[int]) -> bool:
    """Whether `fn`'s registered form takes each of its blocks (`native_products`)."""
    if fn not in _native_products or not _product_fits:
        return False
    if fn is _column_sums:
        import numpy as np

        b, sums = args
        return b.dtype == sums.dtype == np.float32 and b.ndim == 2
    fits, (a, b, out) = _product_fits[0], args
    for lo, hi in zip(bounds, bounds[1:]):
        if fn is _at_b_columns:
            block = (a.T, b[:, lo:hi], out[:, lo:hi])
            if hi - lo <= 256 and b.shape[0] >= 64 * CHUNK_ROWS:     # `_at_b_columns`' pieces
                return False
        else:
            block = (a[lo:hi], b, out[lo:hi])
        if not fits(*block):
            return False
    return True


def _native_jobs(jobs: list, bounds: list[int]) -> bool:
    """Each `(fn, args)` of `jobs` in blocks `bounds` on Numba's threads, by `fn`'s registered
    form, where every one has a form that may run and takes its blocks; False where nothing
    ran (then the caller hands them all to the pool). A form that fails to run hands its own
    blocks to the pool."""
    if not native_ready() or not all(_takes(fn, args, bounds) for fn, args in jobs):
        return False
    global _blocks_ran
    _blocks_ran = time.monotonic()
    for fn, args in jobs:
        if not (fn in _native_products and _run_native(fn, args, bounds, True, _native_products)):
            by_rows(fn, args, bounds[-1], len(bounds) - 1)
    return True


def matmul(a: Any, b: Any, out: Any, parts: int, limit: bool = False,
           native: bool = False) -> None:
    """`out = a @ b` for a 2-D `a`, in `parts` blocks of `a`'s rows at once on the pool's
    threads (`by_rows`), each with one BLAS thread; with one part, on this thread, under the
    caller's BLAS setting, or with `limit` on one BLAS thread where BLAS would take more
    (`STEP_WORK_MIN`). `native`: the blocks on Numba's threads instead, where the product has
    a parallel form that takes them (`native_products`), with the pool's bits: for products
    right after a loop that ran on Numba's threads (an LSTM's training loops under `UNITS`).

    Blocks on the pool rather than BLAS's own threads: after a product on several threads,
    OpenBLAS's threads wait for the next one by spinning, about 0.1 s, on the CPUs that row
    blocks need next, while the pool's threads sleep when idle. An LSTM (32, 100, 16, 64)
    training step took 10.6-10.8 ms with BLAS's threads spinning, against 6.1-7.0 with the
    spinning cut short (RESULTS.md, round 17)."""
    import numpy as np

    if parts > 1:
        bounds = [a.shape[0] * i // parts for i in range(parts + 1)]
        if not (native and _native_jobs([(_matmul_rows, (a, b, out))], bounds)):
            by_rows(_matmul_rows, (a, b, out), a.shape[0], parts)
        return
    with _limit_if(limit and a.shape[0] * a.shape[1] * b.shape[1] > STEP_WORK_MIN):
        np.matmul(a, b, out=out)


def _limit_if(limit: bool) -> Any:
    return one_thread() if limit else contextlib.nullcontext()


def _matmul_rows(a: Any, b: Any, out: Any, r0: int, r1: int) -> None:
    import numpy as np

    np.matmul(a[r0:r1], b, out=out[r0:r1])


# Tall, narrow sums of 64 * CHUNK_ROWS rows or more go in pieces of this many rows (`at_b`).
CHUNK_ROWS = 1024


def at_b(a: Any, b: Any, out: Any, parts: int, limit: bool = False) -> None:
    """`out = a^T b` for `a` (rows, m) and `b` (rows, n), a sum over many rows (a weight
    gradient), in `parts` blocks of the result's columns at once on the pool's threads, each
    with one BLAS thread; with one part, as `matmul` does. Each block sums over all the rows,
    so no partial sums are held and added."""
    if parts > 1:
        at_b_all([(a, out)], b, None, parts)
        return
    with _limit_if(limit and a.shape[0] * a.shape[1] * b.shape[1] > STEP_WORK_MIN):
        _at_b_columns(a, b, out, 0, b.shape[1])


def at_b_all(pairs: list, b: Any, sums: Any, parts: int, native: bool = False) -> None:
    """`out = a^T b` for each `(a, out)` in `pairs` and, unless `sums` is None, `sums = b`'s
    column sums, in `parts` blocks of the columns at once (`at_b`): each block does all of them
    for its columns, so one hand-off to the pool serves every product. `native`: on Numba's
    threads where their forms take them, as `matmul`'s, one call of a form a product (a
    hand-off there costs a few microseconds)."""
    if parts > 1:
        if native:
            n = b.shape[1]
            jobs = [(_at_b_columns, (a, b, out)) for a, out in pairs]
            if sums is not None:
                jobs.append((_column_sums, (b, sums)))
            if _native_jobs(jobs, [n * i // parts for i in range(parts + 1)]):
                return
        by_rows(_at_b_all_columns, (pairs, b, sums), b.shape[1], parts)
    else:
        _at_b_all_columns(pairs, b, sums, 0, b.shape[1])


def _at_b_all_columns(pairs: list, b: Any, sums: Any, c0: int, c1: int) -> None:
    for a, out in pairs:
        _at_b_columns(a, b, out, c0, c1)
    if sums is not None:
        _column_sums(b, sums, c0, c1)


def _column_sums(b: Any, sums: Any, c0: int, c1: int) -> None:
    # row after row down each column, as b.sum(axis=0) adds
    import numpy as np

    np.sum(b[:, c0:c1], axis=0, out=sums[c0:c1])


def _at_b_columns(a: Any, b: Any, out: Any, c0: int, c1: int) -> None:
    """`out[:, c0:c1] = a^T b[:, c0:c1]`, on this thread's BLAS.

    With n <= 256 columns and tens of thousands of rows, an older OpenBLAS ran this product at
    a third of its usual rate on one thread (round 9's host: (256, 25600) @ (25600, 256) took
    336 ms whole, 101 ms as a sum of 128-row products). OpenBLAS 0.3.31 on round 18's host
    runs it whole at 68-89 GFLOP/s a thread, and 128-row pieces there were the slowest way
    (57-78): a training step of `benchmarks/models.py`'s `sentiment` model took 0.91-0.92 of
    its time with the weight gradients whole. So products of fewer than 64 * CHUNK_ROWS rows
    run whole, and taller ones still go in pieces of `CHUNK_ROWS` rows, which were as fast as
    whole at 51 200 rows here."""
    import numpy as np

    b, o = b[:, c0:c1], out[:, c0:c1]
    rows, n = b.shape
    if n > 256 or rows < 64 * CHUNK_ROWS:
        np.matmul(a.T, b, out=o)
        return
    np.matmul(a[:CHUNK_ROWS].T, b[:CHUNK_ROWS], out=o)            # (m, n)
    part = np.empty(o.shape, dtype=o.dtype)
    for start in range(CHUNK_ROWS, rows, CHUNK_ROWS):
        stop = min(start + CHUNK_ROWS, rows)
        np.matmul(a[start:stop].T, b[start:stop], out=part)
        o += part


def limited() -> bool:
    """Whether a one-thread limit is in force now (this or another thread's)."""
    return _depth > 0


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """One BLAS thread for the body, whatever was chosen: for loops running on several Python
    threads at once, each calling BLAS (unrolled.kernels.train's blocks of batch rows)."""
    if MODE == "0" or not blas_controllers():
        yield
        return
    with _one_thread():
        yield


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    global _depth, _saved
    with _lock:
        if _depth == 0:
            _saved = [(c, c.get_num_threads()) for c in _controllers]
            for c, n in _saved:
                if n != 1:
                    c.set_num_threads(1)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                for c, n in _saved:
                    if n != 1:
                        c.set_num_threads(n)
                _saved = []


def current_threads() -> list[Any]:
    """Each BLAS library's thread count now (for tests: unchanged after every call)."""
    return [c.get_num_threads() for c in blas_controllers()]
