"""The compiled BLAS loops' products by NumPy's own sgemm (unrolled.kernels._numpy_blas).

`dot` gives np.dot's numbers for every layout the loops pass (rows apart by more than their
length, one row, one column) and falls back to Numba's np.dot for the rest; it is what the
loops call; it is on wherever NumPy brings its own 64-bit OpenBLAS; and the loops' cached
machine code runs with it off as well (the address is looked up when the process starts, not
compiled in). `gemm`, for the whole-sequence products on Numba's threads, takes operands of
contiguous rows or columns as NumPy's matmul passes them, with matmul's numbers to the bit,
and refuses anything else.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest

from unrolled.kernels import _numba

pytestmark = pytest.mark.skipif(not _numba.available(), reason="needs Numba")

if _numba.available():
    import numba

    from unrolled.kernels import _numpy_blas

    @numba.njit(cache=True)
    def _call(a, b, out):
        _numpy_blas.dot(a, b, out)

    @numba.njit(cache=True)
    def _gemm(a, b, out):
        _numpy_blas.gemm(a, b, out)

    @numba.njit(cache=True)
    def _call_rows(a, b, out, step, k):
        # strided rows and a column range of `a`, as the loops' views of their buffers are
        _numpy_blas.dot(a[::step, :k], b, out)


ROOT = pathlib.Path(__file__).resolve().parents[1]


def _numpy_bundles_openblas64() -> bool:
    import ctypes

    path = _numpy_blas._numpy_openblas()
    return path is not None and any(hasattr(ctypes.CDLL(path), name)
                                    for name in _numpy_blas.NAMES)


def test_on_where_numpy_brings_its_openblas():
    # NumPy's wheels do: then the loops must be calling it, not silently np.dot
    assert _numpy_blas.ready() == _numpy_bundles_openblas64()
    if _numpy_blas.ready():
        assert _numpy_blas.library() is not None


@pytest.mark.parametrize("shape", [(37, 53, 29), (1, 64, 96), (64, 1, 8), (5, 7, 1),
                                   (300, 200, 100)])
def test_dot_is_numpys_product(shape):
    # to the bit where NumPy calls sgemm, and where it calls sgemv for one row (so does `dot`);
    # one column NumPy gives to sgemv, `dot` to sgemm
    M, K, N = shape
    rng = np.random.default_rng(M * 1000 + K)
    a = rng.standard_normal((M, K), dtype=np.float32)
    b = rng.standard_normal((K, N), dtype=np.float32)
    out = np.full((M, N), np.nan, dtype=np.float32)
    _call(a, b, out)
    if N > 1 and _numpy_blas.ready():
        np.testing.assert_array_equal(out, np.dot(a, b))
    else:
        np.testing.assert_allclose(out, np.dot(a, b), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not _numpy_blas.ready() if _numba.available() else True,
                    reason="NumPy brings no 64-bit OpenBLAS here")
def test_one_row_is_numpys_sgemv_where_the_weights_are():
    # `h W` of a one-sample batch: W's rows further apart than their length (a view of a
    # wider array), h a row of a larger buffer; matmul's numbers to the bit, nothing else written
    rng = np.random.default_rng(5)
    wide = rng.standard_normal((300, 1040), dtype=np.float32)
    b = wide[:, 8:1032]
    hx = rng.standard_normal((4, 330), dtype=np.float32)
    a = hx[2:3, :300]
    out_rows = np.full((3, 1030), np.nan, dtype=np.float32)
    out = out_rows[1:2, 3:1027]
    with warnings.catch_warnings():
        # Numba's note on compiling the np.dot branch for these layouts, which this call skips
        warnings.simplefilter("ignore", numba.NumbaPerformanceWarning)
        _call(a, b, out)
    np.testing.assert_array_equal(out, np.matmul(a, b))
    assert np.isnan(out_rows[0]).all() and np.isnan(out_rows[2]).all()
    assert np.isnan(out_rows[1, :3]).all() and np.isnan(out_rows[1, 1027:]).all()


def test_dot_reads_rows_where_they_are():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((40, 30), dtype=np.float32)
    b = rng.standard_normal((17, 11), dtype=np.float32)
    out = np.full((20, 11), np.nan, dtype=np.float32)
    with warnings.catch_warnings():
        # Numba's note on compiling the np.dot branch for strided rows, which this call skips
        warnings.simplefilter("ignore", numba.NumbaPerformanceWarning)
        _call_rows(a, b, out, 2, 17)
    np.testing.assert_array_equal(out, np.dot(a[::2, :17], b))


def test_dot_of_other_layouts_and_types_is_np_dot():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((9, 12), dtype=np.float32)[:, ::2]      # columns apart: np.dot
    b = rng.standard_normal((6, 5), dtype=np.float32)
    out = np.empty((9, 5), dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", numba.NumbaPerformanceWarning)   # at its compile
        _call(a, b, out)
    np.testing.assert_allclose(out, a @ b, rtol=1e-5, atol=1e-5)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    out64 = np.empty((9, 5))
    _call(np.ascontiguousarray(a64), b64, out64)
    np.testing.assert_allclose(out64, a64 @ b64, rtol=1e-12)


def test_empty_product_writes_nothing():
    out = np.full((0, 4), 1, dtype=np.float32)
    _call(np.empty((0, 3), np.float32), np.ones((3, 4), np.float32), out)
    assert out.shape == (0, 4)


def _operand(rng, rows, cols, transposed):
    # a (rows, cols) float32 matrix of contiguous rows, or the transpose of one
    if transposed:
        return rng.standard_normal((cols, rows), dtype=np.float32).T
    return rng.standard_normal((rows, cols), dtype=np.float32)


@pytest.mark.skipif(not _numpy_blas.ready() if _numba.available() else True,
                    reason="NumPy brings no 64-bit OpenBLAS here")
@pytest.mark.parametrize("shape", [(2, 2, 2), (5, 7, 3), (64, 33, 130), (545, 400, 256)])
@pytest.mark.parametrize("transposed", [(False, False), (True, False), (False, True),
                                        (True, True)])
def test_gemm_is_matmuls_product_to_the_bit(shape, transposed):
    M, K, N = shape
    rng = np.random.default_rng(M + K + N)
    a = _operand(rng, M, K, transposed[0])
    b = _operand(rng, K, N, transposed[1])
    wide = np.full((M, N + 5), np.nan, dtype=np.float32)
    out = wide[:, 2:N + 2]                       # rows further apart than their length
    assert _numpy_blas.gemm_fits(a, b, out)
    _gemm(a, b, out)
    np.testing.assert_array_equal(out, np.matmul(a, b))
    assert np.isnan(wide[:, :2]).all() and np.isnan(wide[:, N + 2:]).all()


def test_gemm_refuses_what_sgemm_does_not_take_as_it_is():
    rng = np.random.default_rng(4)
    a = rng.standard_normal((8, 6), dtype=np.float32)
    b = rng.standard_normal((6, 5), dtype=np.float32)
    out = np.empty((8, 5), dtype=np.float32)
    refused = [(a[::2, ::2], b[:3], out[:4]),                # neither rows nor columns
               (a[:1], b, out[:1]),                          # one row: matmul's gemv
               (a, b[:, :1], out[:, :1]),                    # one column
               (a.astype(np.float64), b, out),               # not float32
               (a, b, np.empty((5, 8), np.float32).T),       # out of contiguous columns
               (a, b[:5], out)]                              # the sides do not meet
    for operands in refused:
        assert not _numpy_blas.gemm_fits(*operands)
    with pytest.raises(ValueError, match="does not take"):
        _gemm(a[::2, ::2], b[:3], out[:4])
    with pytest.raises(ValueError, match="does not take"):
        _gemm(a, b[:5], out)
    with pytest.raises(numba.TypingError, match="2-D float32"):
        _gemm(a.astype(np.float64), b, out)


def test_the_blas_loops_call_dot_not_np_dot():
    source = (ROOT / "src/unrolled/kernels/_numba_loops.py").read_text()
    code = "\n".join(line.split("#")[0] for line in source.splitlines())
    assert not re.search(r"np\.dot\(", code)
    assert len(re.findall(r"\bdot\(", code)) >= 7
    assert len(re.findall(r"\bstep_product\(", code)) >= 4   # a step's h W
    assert len(re.findall(r"\bblas_product\(", code)) >= 3   # ... by `dot`


_OFF = """
import numpy as np
from unrolled import layers
from unrolled.kernels import _numba, _numpy_blas
assert not _numpy_blas.ready() and _numpy_blas.library() is None
_numba.OWN_GEMM_BYTES = -1              # the BLAS loops
_numba.OWN_SMALL_BATCH_BYTES = -1
rng = np.random.default_rng(3)
x = rng.standard_normal((6, 4, 3)).astype("float32")
for cls in (layers.SimpleRNN, layers.LSTM, layers.GRU):
    layer = cls(5, return_sequences=True)
    layer(x)
    layer.set_weights([rng.normal(0, 0.4, w.shape).astype("float32") for w in layer.get_weights()])
    np.save({path!r} + cls.__name__ + ".npy", layer(x))
"""


@pytest.mark.parametrize("switch", ["0", "1"])
def test_loops_run_with_numpys_sgemm_off_and_on(tmp_path, switch, monkeypatch):
    # The same cached loops in a process with the switch off (np.dot) and on: the same numbers
    # as the NumPy kernels either way.
    from unrolled import layers

    code = _OFF.format(path=str(tmp_path / "out_"))
    if switch == "1":
        code = code.replace("assert not _numpy_blas.ready() and _numpy_blas.library() is None",
                            "assert _numpy_blas.ready() == " + repr(_numpy_blas.ready()))
    env = dict(os.environ, UNROLLED_NUMPY_BLAS=switch,
               PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 4, 3)).astype("float32")
    for cls in (layers.SimpleRNN, layers.LSTM, layers.GRU):
        layer = cls(5, return_sequences=True)
        layer(x)
        layer.set_weights([rng.normal(0, 0.4, w.shape).astype("float32")
                           for w in layer.get_weights()])
        monkeypatch.setattr(_numba, "enabled", False)    # the NumPy kernels
        want = layer(x)
        monkeypatch.undo()
        got = np.load(tmp_path / f"out_{cls.__name__}.npy")
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
