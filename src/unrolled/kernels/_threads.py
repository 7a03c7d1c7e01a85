"""How many BLAS threads a kernel call's per-step products get: one, or BLAS's own count.

Each step of a kernel multiplies `h_{t-1} W`, `(batch, units) @ (units, gates*units)`: one small
matrix product per timestep. OpenBLAS splits any product above `m*n*k = 262144` over all its
threads and joins them again at the end of the call, so a 100-step loop pays 100 thread
hand-offs. Whether they pay depends on the shape and on what else the machine is doing, and
the measurements disagree from one hour to the next on a shared machine
(benchmarks/RESULTS.md): on a busy 2-vCPU machine one thread was faster for every per-step
product measured, 1.3x to 5x, whole calls up to 35x; with one other process running, two
threads made SimpleRNN (128, 200, 64, 256) 2.8x faster than one (161 vs 450 ms); with an
idle core, LSTM (32, 100, 16, 64) took 8.7 ms with two and 13.5 ms with one.

So the choice is measured, not guessed (`ThreadChoice`): for each kind of call (its shape and
kernels) both settings are timed on real calls, two each, and then the faster by its recent
median is used; every `EXPLORE_EVERY`-th call (times how many times slower it was) tries the
other one again, so the choice follows the machine's load at a cost of about 5%. Products of more than `STEP_WORK_MAX` multiply-adds a step always keep
every thread (a step takes milliseconds there), and below `STEP_WORK_MIN` OpenBLAS uses one
thread by itself.

`step_threads(work, key)` is a context manager around a whole kernel call
(`_dispatch.execute`) and around the training loops: when it limits, it sets the BLAS
libraries NumPy and the compiled loops use (found by threadpoolctl) to one thread and restores
their own counts in `finally`, so the process's setting is the same after a call as before it,
error or not. Without threadpoolctl it does nothing. Thread counts do not change the results:
BLAS splits a product's output between threads, never a sum.

`UNROLLED_STEP_THREADS` in the environment: `auto` (the default, as above), `1` (always one
thread in range), `0` (never limit; for measuring it).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import threading
import time
from typing import Any, Iterator

__all__ = ["step_threads", "one_thread", "limited", "in_range", "ThreadChoice", "STEP_WORK_MIN",
           "STEP_WORK_MAX", "blas_controllers"]

# OpenBLAS's own single-thread threshold (GEMM_MULTITHREAD_THRESHOLD 4 x 65536 multiply-adds):
# below it BLAS runs one thread anyway and switching would cost more than it saves.
STEP_WORK_MIN = 4 * 65536
# Above this many multiply-adds per step (e.g. (256, 1024) @ (1024, 512)) every thread is kept.
STEP_WORK_MAX = 1 << 27

# "auto", "1" or "0" (see above); tests set it directly.
MODE = os.environ.get("UNROLLED_STEP_THREADS", "auto")
EXPLORE_EVERY = 20   # in auto mode, every 20th call of a kind tries the slower setting again
KEEP = 5             # timings kept per setting

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


class ThreadChoice:
    """One BLAS thread or all of them, for one kind of call, learned from its own timings."""

    __slots__ = ("times", "calls")

    def __init__(self) -> None:
        self.times: dict[bool, list[float]] = {True: [], False: []}   # limited? -> seconds
        self.calls = 0

    def pick(self) -> bool:
        """Whether the next call runs with one thread."""
        self.calls += 1
        one, every = self.times[True], self.times[False]
        if len(one) < 2 or len(every) < 2:
            return len(one) <= len(every)                           # try both, alternately
        t_one, t_every = statistics.median(one), statistics.median(every)
        faster = t_one <= t_every
        # The slower setting is tried again every EXPLORE_EVERY calls, spaced out further in
        # proportion to how much slower it was: trying costs at most about 1/EXPLORE_EVERY of
        # the time, even when that setting is ten times slower.
        ratio = max(t_one, t_every) / max(min(t_one, t_every), 1e-9)
        period = EXPLORE_EVERY * max(1, min(int(ratio), 50))
        return (not faster) if self.calls % period == 0 else faster

    def record(self, limited: bool, seconds: float) -> None:
        kept = self.times[limited]
        kept.append(seconds)
        del kept[:-KEEP]


def _choice(key: Any) -> ThreadChoice:
    found = _choices.get(key)
    if found is None:
        if len(_choices) > 512:
            _choices.clear()
        found = _choices[key] = ThreadChoice()
    return found


@contextlib.contextmanager
def step_threads(work: int, key: Any = None) -> Iterator[None]:
    """Run the body with one BLAS thread or all of them, as chosen for calls of kind `key`
    (default: all calls of `work` multiply-adds a step) whose steps do `work` each."""
    if not in_range(work) or not blas_controllers():
        yield
        return
    if MODE == "1":
        with _one_thread():
            yield
        return
    choice = _choice((work,) if key is None else key)
    limited = choice.pick()
    start = time.perf_counter()
    if limited:
        with _one_thread():
            yield
    else:
        yield
    choice.record(limited, time.perf_counter() - start)


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
