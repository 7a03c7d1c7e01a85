"""NumPy's own sgemm for the compiled BLAS loops (`dot`), in place of the one Numba calls.

Numba's `np.dot` calls SciPy's BLAS (`scipy.linalg.cython_blas`). NumPy's wheels bring an
OpenBLAS of their own, a release newer than SciPy's at times, and on the Intel Xeon of rounds
19-23 NumPy's ran the largest point's step products 15-20% faster: (256, 1024) @ (1024, 3072)
on two threads at 288-295 GFLOP/s against 229-257 through Numba, each library in a process of
its own, and a GRU (256, 100, 256, 1024) step loop took 824-846 ms against 923-1008 with
nothing else changed (RESULTS.md, round 23).

Where NumPy's BLAS is an OpenBLAS with 64-bit integers that exports `cblas_sgemm` under one of
`NAMES` (NumPy's wheels: `scipy_cblas_sgemm64_`), its address is given to LLVM under a name of
ours (`SYMBOL`, by `llvmlite.binding.add_symbol`), and a flag (`READY`) says so. The loops'
machine code names the symbol and reads the flag when it runs, so Numba's cache stays valid
from one process to the next (an address compiled in would not), and where there is no such
library (NumPy on MKL or Accelerate, or a system OpenBLAS with 32-bit integers) the flag is 0
and `dot` is `np.dot`, as before; so too with `UNROLLED_NUMPY_BLAS=0` in the environment (for
measuring one against the other). Importing this module registers these names; it must be
imported before any loop that calls `dot` is compiled or loaded from the cache.

A product of one row (`h W` of a one-sample batch) goes to NumPy's `cblas_sgemv` instead, as
NumPy's matmul sends it: OpenBLAS's sgemm of one row packs all of W again, and took 1.1 ms for
(1, 1056) @ (1056, 4096) on the 2-vCPU AMD EPYC of round 30, where its sgemv took 0.30.

`gemm` is the same sgemm for products that must give `np.matmul`'s bits (the training
kernels' whole-sequence products on Numba's threads): it passes a transposed operand as
NumPy's matmul does, and takes only what matmul gives to sgemm (`gemm_fits`).
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numba
import numpy as np
from llvmlite import binding as ll
from llvmlite import ir
from numba.core import cgutils, types
from numba.core.errors import TypingError
from numba.extending import intrinsic, overload

from unrolled import _env

__all__ = ["dot", "gemm", "ready", "library"]

SYMBOL = "unrolled_numpy_cblas_sgemm"
SYMBOL_GEMV = "unrolled_numpy_cblas_sgemv"
READY = "unrolled_numpy_cblas_ready"
# cblas_sgemm and cblas_sgemv of OpenBLAS built with 64-bit integers: the names its builds give
# them (both must be there for either to be used)
NAMES = ("scipy_cblas_sgemm64_", "cblas_sgemm64_")
NAMES_GEMV = ("scipy_cblas_sgemv64_", "cblas_sgemv64_")
_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112

# The flag's memory, for the life of the process: 1 once NumPy's sgemm is registered and
# checked, else 0.
_flag = ctypes.c_int64(0)
_library: str | None = None


def _numpy_openblas() -> str | None:
    """The file of the OpenBLAS that NumPy itself loaded (one in NumPy's own folders), if any."""
    from threadpoolctl import threadpool_info

    for info in threadpool_info():
        path = info.get("filepath") or ""
        parts = {p.lower() for p in Path(path).parts}
        if info.get("internal_api") == "openblas" and parts & {"numpy", "numpy.libs", ".dylibs"}:
            return path
    return None


def _address(lib: ctypes.CDLL | None, names: tuple[str, ...]) -> int:
    # the address of the first of `names` that `lib` exports, else 0
    for name in names if lib is not None else ():
        fn = getattr(lib, name, None)
        if fn is not None:
            return ctypes.cast(fn, ctypes.c_void_p).value or 0
    return 0


def _register() -> None:
    global _library
    wanted = _env.flag("UNROLLED_NUMPY_BLAS")
    path = _numpy_openblas() if wanted else None
    lib = None
    if path is not None:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            lib = None
    gemm, gemv = _address(lib, NAMES), _address(lib, NAMES_GEMV)
    if not (gemm and gemv):
        gemm = gemv = 0
    # Never called while the flag is 0, but every name the loops use must resolve.
    ll.add_symbol(SYMBOL, gemm or ctypes.addressof(_flag))
    ll.add_symbol(SYMBOL_GEMV, gemv or ctypes.addressof(_flag))
    ll.add_symbol(READY, ctypes.addressof(_flag))
    if gemm:
        _flag.value = 1
        if _check():
            _library = path
        else:
            _flag.value = 0


@intrinsic
def _ready(typingctx):
    # the flag's value, read where the loop runs
    def codegen(context, builder, signature, args):
        module = builder.module
        flag = module.globals.get(READY)
        if flag is None:
            flag = ir.GlobalVariable(module, ir.IntType(64), READY)     # a declaration
        return builder.load(flag)

    return types.int64(), codegen


def _call_sgemm(context, builder, trans, values):
    # the call `cblas_sgemm(RowMajor, trans_a, trans_b, m, n, k, 1, a, lda, b, ldb, 0, c, ldc)`
    # of NumPy's sgemm (SYMBOL); `trans`: the two layouts as i32 values, `values`: m .. ldc as
    # i64 (a, b and c addresses)
    i32, i64, f32 = ir.IntType(32), ir.IntType(64), ir.FloatType()
    f32p = f32.as_pointer()
    fnty = ir.FunctionType(ir.VoidType(), [i32, i32, i32, i64, i64, i64, f32, f32p, i64,
                                           f32p, i64, f32, f32p, i64])
    fn = cgutils.get_or_insert_function(builder.module, fnty, SYMBOL)
    m_, n_, k_, a_, lda_, b_, ldb_, c_, ldc_ = values
    builder.call(fn, [ir.Constant(i32, _ROW_MAJOR), *trans, m_, n_, k_, ir.Constant(f32, 1.0),
                      builder.inttoptr(a_, f32p), lda_, builder.inttoptr(b_, f32p), ldb_,
                      ir.Constant(f32, 0.0), builder.inttoptr(c_, f32p), ldc_])
    return context.get_dummy_value()


def _as_i64(context, builder, signature, args):
    return [context.cast(builder, v, t, types.int64) for v, t in zip(args, signature.args)]


@intrinsic
def _sgemm(typingctx, m, n, k, a, lda, b, ldb, c, ldc):
    # C (m, n) = A (m, k) @ B (k, n), row-major, each row `ld*` numbers after the last; a, b
    # and c are addresses
    def codegen(context, builder, signature, args):
        no_trans = ir.Constant(ir.IntType(32), _NO_TRANS)
        return _call_sgemm(context, builder, (no_trans, no_trans),
                           _as_i64(context, builder, signature, args))

    return types.void(m, n, k, a, lda, b, ldb, c, ldc), codegen


@intrinsic
def _sgemm_layout(typingctx, trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc):
    # as _sgemm, with each operand's layout given: `_NO_TRANS` (rows contiguous, `ld*` numbers
    # apart) or `_TRANS` (the operand is the transpose of a row-major matrix of `ld*` columns)
    def codegen(context, builder, signature, args):
        ta, tb, *values = _as_i64(context, builder, signature, args)
        i32 = ir.IntType(32)
        return _call_sgemm(context, builder, (builder.trunc(ta, i32), builder.trunc(tb, i32)),
                           values)

    return types.void(trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc), codegen


@intrinsic
def _sgemv(typingctx, k, n, b, ldb, a, c):
    # c (1, n) = a (1, k) @ B (k, n), B row-major with rows `ldb` numbers apart, a and c
    # contiguous: `cblas_sgemv(RowMajor, Trans, k, n, 1, b, ldb, a, 1, 0, c, 1)` of NumPy's
    # sgemv (SYMBOL_GEMV); b, a and c are addresses
    def codegen(context, builder, signature, args):
        i32, i64, f32 = ir.IntType(32), ir.IntType(64), ir.FloatType()
        f32p = f32.as_pointer()
        fnty = ir.FunctionType(ir.VoidType(), [i32, i32, i64, i64, f32, f32p, i64, f32p, i64,
                                               f32, f32p, i64])
        fn = cgutils.get_or_insert_function(builder.module, fnty, SYMBOL_GEMV)
        k_, n_, b_, ldb_, a_, c_ = _as_i64(context, builder, signature, args)
        one = ir.Constant(i64, 1)
        builder.call(fn, [ir.Constant(i32, _ROW_MAJOR), ir.Constant(i32, _TRANS), k_, n_,
                          ir.Constant(f32, 1.0), builder.inttoptr(b_, f32p), ldb_,
                          builder.inttoptr(a_, f32p), one, ir.Constant(f32, 0.0),
                          builder.inttoptr(c_, f32p), one])
        return context.get_dummy_value()

    return types.void(k, n, b, ldb, a, c), codegen


def dot(a, b, out):
    """`np.dot(a, b, out)` for 2-D arrays, by NumPy's sgemm where `ready()` and the three are
    float32 with contiguous rows (by its sgemv where `a` has one row, as NumPy's matmul does);
    else by `np.dot` (Numba's, SciPy's BLAS)."""
    np.dot(a, b, out)


@numba.njit(cache=True, nogil=True, inline="always")
def _rows(x, cols):
    # the distance between x's rows in numbers, or -1 where its rows are not contiguous
    # float32 rows at a whole number of floats apart
    if x.strides[1] != 4 and x.shape[1] > 1:
        return -1
    if x.shape[0] <= 1:
        return max(cols, 1)
    if x.strides[0] % 4 != 0 or x.strides[0] // 4 < cols:
        return -1
    return x.strides[0] // 4


@overload(dot, jit_options={"cache": True, "nogil": True})
def _dot(a, b, out):
    f32 = numba.float32
    if not (isinstance(a, types.Array) and a.dtype == f32 and a.ndim == 2
            and isinstance(b, types.Array) and b.dtype == f32 and b.ndim == 2
            and isinstance(out, types.Array) and out.dtype == f32 and out.ndim == 2):
        return lambda a, b, out: np.dot(a, b, out)

    def impl(a, b, out):
        M, K = a.shape
        N = b.shape[1]
        if _ready() != 0 and M > 0 and N > 0 and K > 0 and b.shape[0] == K \
                and out.shape[0] == M and out.shape[1] == N:
            lda, ldb, ldc = _rows(a, K), _rows(b, N), _rows(out, N)
            if lda > 0 and ldb > 0 and ldc > 0:
                if M == 1 and N > 1 and a.strides[1] == 4 and out.strides[1] == 4:
                    _sgemv(K, N, b.ctypes.data, ldb, a.ctypes.data, out.ctypes.data)
                else:
                    _sgemm(M, N, K, a.ctypes.data, lda, b.ctypes.data, ldb, out.ctypes.data,
                           ldc)
                return
        np.dot(a, b, out)

    return impl


@numba.njit(cache=True, nogil=True, inline="always")
def _layout(x):
    # (_NO_TRANS, numbers between rows) for a float32 matrix of contiguous rows, (_TRANS,
    # numbers between columns) for one of contiguous columns (a row-major matrix's transpose),
    # as NumPy's matmul tells them apart; (0, 0) for anything else, or a side under 2
    rows, cols = x.shape
    if rows < 2 or cols < 2:
        return 0, 0
    if x.strides[1] == 4 and x.strides[0] % 4 == 0 and x.strides[0] // 4 >= cols:
        return _NO_TRANS, x.strides[0] // 4
    if x.strides[0] == 4 and x.strides[1] % 4 == 0 and x.strides[1] // 4 >= rows:
        return _TRANS, x.strides[1] // 4
    return 0, 0


def gemm(a, b, out):
    """`out = a @ b` for 2-D float32 arrays, each of contiguous rows or contiguous columns,
    every side at least 2, by NumPy's sgemm called as NumPy's matmul calls it (a transposed
    operand passed as such, not copied), so with matmul's numbers: for a compiled product that
    must give the bits `np.matmul` gives. Compiled, only where `gemm_fits(a, b, out)`: for
    anything else it raises ValueError. Called from Python, it is `np.matmul`."""
    np.matmul(a, b, out=out)


@overload(gemm, jit_options={"cache": True, "nogil": True})
def _gemm(a, b, out):
    if not all(isinstance(x, types.Array) and x.dtype == numba.float32 and x.ndim == 2
               for x in (a, b, out)):
        raise TypingError(f"gemm takes three 2-D float32 arrays; got {a}, {b}, {out}")

    def impl(a, b, out):
        M, K = a.shape
        N = b.shape[1]
        ta, lda = _layout(a)
        tb, ldb = _layout(b)
        tc, ldc = _layout(out)
        if (_ready() == 0 or ta == 0 or tb == 0 or tc != _NO_TRANS or b.shape[0] != K
                or out.shape[0] != M or out.shape[1] != N):
            raise ValueError("gemm: operands NumPy's sgemm does not take as they are")
        _sgemm_layout(ta, tb, M, N, K, a.ctypes.data, lda, b.ctypes.data, ldb,
                      out.ctypes.data, ldc)

    return impl


def gemm_fits(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> bool:
    """Whether `gemm(a, b, out)` takes these arrays: float32, `ready()`, every side at least 2,
    `a` and `b` of contiguous rows or columns, `out` of contiguous rows."""
    def layout(x: np.ndarray) -> int:
        if x.ndim != 2 or x.dtype != np.float32 or min(x.shape) < 2:
            return 0
        rows, cols = x.shape
        s0, s1 = x.strides
        if s1 == 4 and s0 % 4 == 0 and s0 // 4 >= cols:
            return _NO_TRANS
        if s0 == 4 and s1 % 4 == 0 and s1 // 4 >= rows:
            return _TRANS
        return 0

    return (ready() and layout(a) != 0 and layout(b) != 0 and layout(out) == _NO_TRANS
            and a.shape[1] == b.shape[0] and out.shape == (a.shape[0], b.shape[1]))


@numba.njit(cache=True, nogil=True)
def _product(a, b, out):
    dot(a, b, out)


def _check() -> bool:
    """Whether NumPy's sgemm and sgemv, called as `dot` calls them, give np.dot's products."""
    rng = np.random.default_rng(0)
    b = rng.standard_normal((7, 6), dtype=np.float32)
    for rows in (5, 1):
        a = rng.standard_normal((rows, 7), dtype=np.float32)
        out = np.zeros((rows, 6), dtype=np.float32)
        _product(a, b, out)
        if not np.allclose(out, a @ b, rtol=1e-5, atol=1e-5):
            return False
    return True


def ready() -> bool:
    """Whether `dot` calls NumPy's sgemm (else np.dot, SciPy's)."""
    return bool(_flag.value)


def library() -> str | None:
    """The file of the OpenBLAS whose sgemm `dot` calls, or None."""
    return _library


_register()
