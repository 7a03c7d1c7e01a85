"""The compiled loops' own float32 tanh, sigmoid and step product (unrolled.kernels._numba_loops)
against NumPy.

The BLAS loops use their own vectorizable tanh and sigmoid and, for weights that fit the caches,
their own matrix product `gemm_nt`; the kernel tests compare whole layers with the reference
loop, and this file checks the functions themselves: the activations over the whole float32
range, limits and NaN included, the product at every remainder of its blocks.
"""

from __future__ import annotations

import numpy as np
import pytest

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


@pytest.mark.parametrize("M", [1, 3, 4, 5, 8, 33])
@pytest.mark.parametrize("N", [1, 2, 3, 7, 64])
@pytest.mark.parametrize("K", [1, 5, 8, 17, 64])
def test_gemm_nt_is_a_times_b_transposed(M, N, K):
    from unrolled.kernels import _numba_loops

    rng = np.random.default_rng(M * 10_000 + N * 100 + K)
    a = rng.standard_normal((M, K)).astype("float32")
    bt = rng.standard_normal((N, K)).astype("float32")
    out = np.full((M, N), np.nan, dtype="float32")
    _numba_loops.gemm_nt(a, bt, out)
    exact = a.astype("float64") @ bt.astype("float64").T
    # float32 sums of K products in some order: within K roundings of the largest partial sum
    bound = K * np.finfo("float32").eps * (np.abs(a).astype("float64") @ np.abs(bt).T)
    assert np.all(np.abs(out - exact) <= bound + 1e-30), np.max(np.abs(out - exact) - bound)


def test_fast_tanh_of_the_forward_loops_is_within_five_ulp_of_numpy():
    """tanh32_fast: within 5 ulp (3e-7 absolute) of NumPy's tanh over the float32 range, limits
    and NaN included, never past +-1, with the sign of x."""
    from unrolled.kernels import _numba_loops

    rng = np.random.default_rng(1)
    x = np.concatenate([
        (rng.standard_normal(200_000) * 4).astype("float32"),
        np.linspace(-120, 120, 100_001, dtype="float32"),
        np.logspace(-30, 1.3, 50_000).astype("float32"),
        -np.logspace(-30, 1.3, 50_000).astype("float32"),
        np.array([0.0, -0.0, 1e-45, 9.0, -9.0, 8.999, 88.5, -88.5, np.inf, -np.inf],
                 dtype="float32"),
    ])
    out = np.empty_like(x)
    _numba_loops.tanh32_fast_array(x, out)
    expected = np.tanh(x.astype("float64"))
    ulp = np.spacing(np.abs(expected).astype("float32")).astype("float64")
    error = np.abs(out - expected)
    assert np.all(error <= 5 * np.maximum(ulp, 1e-45)), f"worst {np.max(error / ulp):.1f} ulp"
    assert error.max() <= 3e-7
    assert np.all(np.abs(out) <= 1) and np.all(np.sign(out) == np.sign(x))
    nan = np.array([np.nan], dtype="float32")
    _numba_loops.tanh32_fast_array(nan, out[:1])
    assert np.isnan(out[0])
