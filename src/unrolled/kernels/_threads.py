"""One BLAS thread for a kernel call whose per-step products are small.

Each step of a kernel multiplies `h_{t-1} W`, `(batch, units) @ (units, gates*units)`: one small
matrix product per timestep. OpenBLAS splits any product above `m*n*k = 262144` over all its
threads and joins them again at the end of the call, so a 100-step loop pays 100 thread
hand-offs. On a 2-vCPU machine (benchmarks/RESULTS.md) one thread was faster for every per-step
product measured, from 1.3x to 5x, because a hand-off waits for the other thread's timeslice
whenever the machine has other work. Only a step product of more than `STEP_WORK_MAX`
multiply-adds keeps every thread: there one step takes milliseconds, long enough for a second
core to pay on an idle machine.

The hoisted input projection is chunked (one step, or 64 KiB, at a time: the memory budget), so
its products are small as well, and it runs under the same limit. Measured at SimpleRNN
(128, 200, 64, 256): 0.41 s with one thread for the steps and two for 1 MiB projection chunks,
3.6 s with 64 KiB chunks on two threads, 0.18-0.24 s with one thread for everything (another
process busy on the second vCPU). Toggling per chunk would also cost a switch per chunk.

`step_threads(work)` is a context manager around a whole kernel call (`_dispatch.run`) and
around the training loops (`RNN.forward_train`/`backward`): it sets the BLAS libraries NumPy
uses (found by threadpoolctl) to one thread and restores their own counts in `finally`, so the
process's setting is the same after a call as before it, error or not. Without threadpoolctl
it does nothing.
`UNROLLED_STEP_THREADS=0` in the environment turns the limiting off (for measuring it).
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any, Iterator

__all__ = ["step_threads", "STEP_WORK_MIN", "STEP_WORK_MAX", "blas_controllers"]

# OpenBLAS's own single-thread threshold (GEMM_MULTITHREAD_THRESHOLD 4 x 65536 multiply-adds):
# below it BLAS runs one thread anyway and switching would cost more than it saves.
STEP_WORK_MIN = 4 * 65536
# Above this many multiply-adds per step (e.g. (256, 1024) @ (1024, 512)) every thread is kept.
STEP_WORK_MAX = 1 << 27

_controllers: list | None = None
_lock = threading.Lock()
_depth = 0          # nested or concurrent limited loops: only the outermost restores
_saved: list = []


def blas_controllers() -> list:
    """threadpoolctl's controllers of the loaded BLAS libraries ([] without threadpoolctl)."""
    global _controllers
    if _controllers is None:
        found: list = []
        if os.environ.get("UNROLLED_STEP_THREADS", "1") != "0":
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


@contextlib.contextmanager
def step_threads(work: int) -> Iterator[None]:
    """Run the body with one BLAS thread when `work` (multiply-adds per step) is in range."""
    if not STEP_WORK_MIN < work <= STEP_WORK_MAX or not blas_controllers():
        yield
        return
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
