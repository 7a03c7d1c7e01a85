"""Arrays that start on a cache line."""

from __future__ import annotations

import numpy as np

# 64 bytes: a cache line, and one AVX-512 vector. NumPy's own arrays start 16 bytes into a line
# as often as not, and a compiled product's 64-byte load from such an array straddles two lines
# (unrolled.kernels._numba_panels.empty_panels, the compiled loops' own such arrays, says what
# that cost).
ALIGN = 64


def aligned_empty(shape: tuple, dtype) -> np.ndarray:
    """An uninitialized C-contiguous array of `shape` and `dtype` whose first byte is on an
    ALIGN-byte boundary: a view into a byte array ALIGN - 1 bytes larger."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + ALIGN - 1, dtype=np.uint8)
    skip = -raw.ctypes.data % ALIGN
    return raw[skip:skip + nbytes].view(dtype).reshape(shape)
