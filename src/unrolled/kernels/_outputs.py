"""Large output buffers kept between calls, and used again once nothing else refers to them.

A kernel's output sequence `(timesteps, batch, units)` is new memory every call. glibc maps
every block above 32 MiB (the most its mmap threshold grows to on 64-bit) fresh from the kernel
and unmaps it when it is freed, so each page of a large output faults in on its first write:
the kernel finds a page, zeroes it, and maps it. In a virtual machine whose guest reports free
memory to the host (virtio-balloon free page reporting, as on the benchmark machine), memory
that stayed free for two seconds goes back to the host and faults in from there, slower still.
On the benchmark machine a SimpleRNN (256, 100, 256, 1024) call, whose output is 105 MB, took
550 ms with a fresh output and 465 ms with a kept one, in the benchmark's rotation with the
peers (benchmarks/RESULTS.md, Round 12).

So outputs of at least `KEEP_MIN_BYTES` come from a short list of kept buffers (`empty`). A
kept buffer is handed out again only when nothing outside this module refers to it: not the
array returned from the call that got it, not a view of that array, not its `.base`, not a
memoryview; CPython's reference count says so exactly, and every array a kernel returns refers
to its buffer. A caller who keeps an output keeps its memory to itself; a loop that drops each
output (or rebinds one name, `y = layer(x)`: the old `y` is alive during the call, so two
buffers take turns) writes into memory that is already mapped.

The cost is memory held after the outputs are dropped: at most `KEEP` buffers (the least
recently used is let go first), each the size of one large output. `UNROLLED_KEEP_OUTPUTS=0`
in the environment turns it off (another number sets `KEEP`); `release()` lets go of them all.
Interpreters without exact reference counts (not CPython, or CPython without its GIL) always
get fresh memory.
"""

from __future__ import annotations

import math
import sys
import threading

import numpy as np

from unrolled import _env

__all__ = ["empty", "release", "kept_bytes", "KEEP", "KEEP_MIN_BYTES"]

# glibc's largest dynamic mmap threshold on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX): blocks above
# it are always fresh memory; below it glibc may reuse its own freed memory.
KEEP_MIN_BYTES = 32 << 20


def _keep_from_env() -> int:
    return _env.count("UNROLLED_KEEP_OUTPUTS", 4, "output buffers to keep; 0 turns keeping off")


KEEP = _keep_from_env()

_kept: list[np.ndarray] = []   # flat buffers, the most recently handed out first
_lock = threading.Lock()


def _refs(buffers: list, i: int) -> int:
    return sys.getrefcount(buffers[i])


def _free_count() -> int | None:
    """What `_refs` reads for a buffer held only by the list (None: counts are not exact here)."""
    if sys.implementation.name != "cpython" or not getattr(sys, "_is_gil_enabled", lambda: True)():
        return None
    probe = [np.empty(1)]
    alone = _refs(probe, 0)
    view = probe[0][:]
    held = _refs(probe, 0)
    del view
    return alone if held == alone + 1 and _refs(probe, 0) == alone else None


_FREE = _free_count()


def empty(shape: tuple, dtype) -> np.ndarray:
    """An uninitialized C-contiguous array of `shape` and `dtype`, as `np.empty` makes, in a
    kept buffer that nothing else refers to when the array is large (see above)."""
    dtype = np.dtype(dtype)
    size = math.prod(shape)
    if KEEP <= 0 or _FREE is None or size * dtype.itemsize < KEEP_MIN_BYTES:
        return np.empty(shape, dtype=dtype)
    with _lock:
        for i in range(len(_kept)):
            buffer = _kept[i]
            if buffer.dtype == dtype and buffer.size == size:
                del buffer      # `_refs` counts the list's reference only
                if _refs(_kept, i) == _FREE:
                    found = _kept.pop(i)
                    _kept.insert(0, found)
                    return found.reshape(shape)
        fresh = np.empty(size, dtype=dtype)
        _kept.insert(0, fresh)
        del _kept[KEEP:]
        return fresh.reshape(shape)


def release() -> None:
    """Let go of every kept buffer (outputs still in use keep their memory)."""
    with _lock:
        _kept.clear()


def kept_bytes() -> int:
    """Bytes of the buffers kept now (in use or not)."""
    with _lock:
        return sum(b.nbytes for b in _kept)
