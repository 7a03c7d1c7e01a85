"""What every kernel shares: the mask in processing order and the chunking of projections."""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

__all__ = ["Steps", "chunk_steps", "CHUNK_BYTES"]

# Largest scratch buffer for a chunk of hoisted input projections (per layer). Small enough to
# stay in cache and to keep a forward pass within input + output + weights + a step's scratch at
# large shapes; large enough that small shapes hoist the whole sequence in one matrix multiply.
CHUNK_BYTES = 1 << 20


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


def chunk_steps(timesteps: int, step_bytes: int, alloc: Callable[[int], np.ndarray]
                ) -> Iterator[tuple[int, int, np.ndarray]]:
    """`(start, stop, buffer)` over the steps, each chunk at most CHUNK_BYTES (at least 1 step).

    The buffer is allocated once, for the largest chunk, and reused by every chunk.
    """
    n = max(1, min(timesteps, CHUNK_BYTES // max(step_bytes, 1)))
    buffer = alloc(n)
    for start in range(0, timesteps, n):
        yield start, min(start + n, timesteps), buffer
