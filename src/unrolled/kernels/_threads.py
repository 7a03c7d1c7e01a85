"""One BLAS thread for a kernel call whose per-step products are small, while the machine is busy.

Each step of a kernel multiplies `h_{t-1} W`, `(batch, units) @ (units, gates*units)`: one small
matrix product per timestep. OpenBLAS splits any product above `m*n*k = 262144` over all its
threads and joins them again at the end of the call, so a 100-step loop pays 100 thread
hand-offs. When every core has work, a hand-off waits for the other thread's timeslice: on a
busy 2-vCPU machine (load 2.5-5, benchmarks/RESULTS.md) one thread was faster for every
per-step product measured, from 1.3x to 5x, and whole calls up to 35x. When a core is idle the
second thread pays instead: LSTM (32, 100, 16, 64) took 8.7 ms with two threads and 13.5 ms with
one at load 0.8.

So the limit applies only while the machine is busy: when the other processes' CPU time since
the previous reading (`others_cores`, Linux) or else the 1-minute load average (which counts
this process's own running thread) leaves less than one core idle (`busy`, read at most twice a
second). Only a step product of more than `STEP_WORK_MAX` multiply-adds always keeps
every thread: there one step takes milliseconds, long enough for a second core to pay.

The hoisted input projection is chunked (one step, or 64 KiB, at a time: the memory budget), so
its products are small as well, and it runs under the same limit. Measured at SimpleRNN
(128, 200, 64, 256) on the busy machine: 0.41 s with one thread for the steps and two for 1 MiB
projection chunks, 3.6 s with 64 KiB chunks on two threads, 0.18-0.24 s with one thread for
everything. Toggling per chunk would also cost a switch per chunk.

`step_threads(work)` is a context manager around a whole kernel call (`_dispatch.execute`) and
around the training loops (`RNN.forward_train`/`backward`): it sets the BLAS libraries NumPy
and the compiled loops use (found by threadpoolctl) to one thread and restores their own counts
in `finally`, so the process's setting is the same after a call as before it, error or not.
Without threadpoolctl it does nothing.

`UNROLLED_STEP_THREADS` in the environment: `auto` (the default, as above), `1` (limit whatever
the load), `0` (never limit; for measuring it).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import Any, Iterator

__all__ = ["step_threads", "one_thread", "limits", "busy", "STEP_WORK_MIN", "STEP_WORK_MAX", "blas_controllers"]

# OpenBLAS's own single-thread threshold (GEMM_MULTITHREAD_THRESHOLD 4 x 65536 multiply-adds):
# below it BLAS runs one thread anyway and switching would cost more than it saves.
STEP_WORK_MIN = 4 * 65536
# Above this many multiply-adds per step (e.g. (256, 1024) @ (1024, 512)) every thread is kept.
STEP_WORK_MAX = 1 << 27

# "auto", "1" or "0" (see above); tests set it directly.
MODE = os.environ.get("UNROLLED_STEP_THREADS", "auto")
BUSY_CHECK_SECONDS = 0.5

_controllers: list | None = None
_busy = (0.0, False)  # (when it was read, whether the machine was busy)
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


def busy() -> bool:
    """Whether no core is idle besides this process's: other processes used more than
    `cores - 1.5` cores since the previous reading (Linux, `others_cores`), else the 1-minute
    load average (which counts this process) is within one of the core count."""
    global _busy
    now = time.monotonic()
    if now - _busy[0] > BUSY_CHECK_SECONDS:
        cores = os.cpu_count() or 1
        others = others_cores()
        if others is not None:
            _busy = (now, others > cores - 1.5)
        else:
            try:
                load = os.getloadavg()[0]
            except (AttributeError, OSError):  # no load average (Windows): assume busy
                load = float("inf")
            _busy = (now, load > cores - 1)
    return _busy[1]


_stat: tuple | None = None  # (when, CPU seconds busy on all cores, this process's CPU seconds)


def others_cores() -> float | None:
    """Cores' worth of CPU time other processes used since the previous reading: the busy time
    of all cores in /proc/stat (steal included) less this process's own. None without
    /proc/stat, on the first reading, or within 50 ms of the previous one.

    The 1-minute load average lags by about a minute: measured on the 2-core machine, a training
    step began under the one-thread limit at load 1.3 while the other core had been idle for
    seconds (torch on two threads: 1.0 s, unrolled 1.9 s), and a start of another process
    leaves two threads on for as long (one (128, 200, 64, 256) LSTM step: 3 s)."""
    global _stat
    try:
        with open("/proc/stat", "rb") as f:
            ticks = [int(v) for v in f.readline().split()[1:9]]
        hz = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, AttributeError):
        return None
    now, ours = time.monotonic(), time.process_time()
    used = (sum(ticks) - ticks[3] - ticks[4]) / hz              # all but idle and iowait
    previous = _stat
    if previous is not None and now - previous[0] < 0.05:
        return None
    _stat = (now, used, ours)
    if previous is None:
        return None
    return max(0.0, (used - previous[1]) - (ours - previous[2])) / (now - previous[0])


def limits(work: int) -> bool:
    """Whether a call whose steps do `work` multiply-adds each runs with one BLAS thread."""
    if not STEP_WORK_MIN < work <= STEP_WORK_MAX or MODE == "0":
        return False
    return MODE == "1" or busy()


@contextlib.contextmanager
def step_threads(work: int) -> Iterator[None]:
    """Run the body with one BLAS thread when `limits(work)`."""
    if not limits(work) or not blas_controllers():
        yield
        return
    with _one():
        yield


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run the body with one BLAS thread whatever the load: for loops that run on several
    Python threads at once, each calling BLAS (unrolled.kernels.train's batch blocks)."""
    if MODE == "0" or not blas_controllers():
        yield
        return
    with _one():
        yield


@contextlib.contextmanager
def _one() -> Iterator[None]:
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
