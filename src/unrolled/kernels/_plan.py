"""What every kernel shares: the mask in processing order and the chunking of projections."""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

__all__ = ["Steps", "projections", "CHUNK_BYTES", "CHUNK_STEPS", "NO_MASK"]

# A chunk of hoisted input projections holds CHUNK_STEPS steps, or as many as fit in CHUNK_BYTES
# when that is more. At large shapes one step's projection, its `h W` and the state buffers are
# the "one step's scratch" of the memory budget (benchmarks/RESULTS.md); small shapes still
# hoist the whole sequence in one matrix multiply.
CHUNK_BYTES = 1 << 16
CHUNK_STEPS = 1


class Steps:
    """The mask as the kernels read it, indexed by processing step k (not by time t).

    inv[k]     (batch, 1) True where step k is masked for that sample (None without a mask)
    masked[k]  whether any sample is masked at step k (None without a mask), so fully valid
               steps skip the masked copy
    valid      (timesteps, batch) the mask itself, processing order (None without a mask)
    """

    __slots__ = ("inv", "masked", "valid")

    def __init__(self, valid: np.ndarray | None):
        self.valid = valid
        if valid is None:
            self.inv = self.masked = None
        else:
            self.inv = ~valid[:, :, None]                           # (timesteps, batch, 1)
            self.masked = self.inv.any(axis=(1, 2)).tolist()


NO_MASK = Steps(None)


def projections(xt: np.ndarray, kernel: np.ndarray, bias: np.ndarray | None,
                into: np.ndarray | None = None) -> Iterator[tuple[int, int, np.ndarray]]:
    """The hoisted input projection `x_t kernel + bias`, as `(start, stop, P)` chunks.

    `P[j]` is step `start + j`'s projection, `(batch, width)`; `P` is `(stop - start, batch,
    width)`. With `into` (a `(timesteps, batch, width)` buffer) the whole projection is written
    there and yielded once. Otherwise one buffer of at most CHUNK_BYTES (at least one step) is
    reused: read each chunk before asking for the next. (The chunk size: CHUNK_STEPS.)

    Each chunk is one 2-D matrix multiply `(steps*batch, features) @ (features, width)`. A
    transposed input (the batch-major `x` seen time-major) is first copied chunk by chunk into a
    contiguous staging buffer: NumPy's matmul of the strided 3-D view was 2x slower.
    """
    T, B, F = xt.shape
    width = kernel.shape[1]
    n = max(1, min(T, max(CHUNK_STEPS,
                           CHUNK_BYTES // max(B * max(width, F) * xt.dtype.itemsize, 1))))
    staging = None if xt.flags.c_contiguous else np.empty((n, B, F), dtype=xt.dtype)
    buffer = None if into is not None else np.empty((n, B, width), dtype=xt.dtype)
    for start in range(0, T, n):
        stop = min(start + n, T)
        if staging is None:
            source = xt[start:stop]                                 # (steps, batch, features)
        else:
            source = staging[:stop - start]
            np.copyto(source, xt[start:stop])
        chunk = (into[start:stop] if into is not None
                 else buffer[:stop - start])                        # (steps, batch, width)
        np.matmul(source.reshape(-1, F), kernel, out=chunk.reshape(-1, width))
        if bias is not None:
            chunk += bias
        if into is None:
            yield start, stop, chunk
    if into is not None:
        yield 0, T, into
