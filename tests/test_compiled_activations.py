"""The compiled loops' float32 tanh and sigmoid (unrolled.kernels._numba_loops) against NumPy.

The BLAS loops use their own vectorizable tanh and sigmoid; the kernel tests compare whole
layers with the reference loop, and this file checks the functions themselves over the whole
float32 range, limits and NaN included.
"""

from __future__ import annotations

import numpy as np

def test_compiled_tanh_and_sigmoid_are_within_two_ulp_of_numpy():
    from unrolled.kernels import _numba_loops

    rng = np.random.default_rng(0)
    x = np.concatenate([
        (rng.standard_normal(200_000) * 4).astype("float32"),
        np.linspace(-120, 120, 100_001, dtype="float32"),
        np.array([0.0, -0.0, 1e-30, -1e-30, 1e-45, 0.625, -0.625, 0.6249999, 9.0, -9.0,
                  88.5, -88.5, np.inf, -np.inf], dtype="float32"),
    ])
    out = np.empty_like(x)
    _numba_loops.tanh32_array(x, out)
    expected = np.tanh(x)
    ulp = np.spacing(np.abs(expected).astype("float32"))
    assert np.all(np.abs(out - expected) <= 2 * np.maximum(ulp, np.float32(1e-45))), (
        f"tanh: worst error {np.max(np.abs(out - expected) / ulp):.1f} ulp")
    _numba_loops.sigmoid32_array(x, out)
    with np.errstate(over="ignore"):
        expected = (1 / (1 + np.exp(-x.astype("float64")))).astype("float32")
    ulp = np.spacing(expected)
    tiny = expected < 1e-37                        # where float32 runs out of normal numbers
    assert np.all(np.abs(out - expected)[~tiny] <= 2 * ulp[~tiny]), (
        f"sigmoid: worst error {np.max((np.abs(out - expected) / ulp)[~tiny]):.1f} ulp")
    assert np.all(out[tiny] < 1e-37)
    nan = np.array([np.nan], dtype="float32")
    _numba_loops.tanh32_array(nan, out[:1])
    assert np.isnan(out[0])
    _numba_loops.sigmoid32_array(nan, out[:1])
    assert np.isnan(out[0])
