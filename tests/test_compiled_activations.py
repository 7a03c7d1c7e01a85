"""The compiled loops' own float32 tanh, sigmoid and step product (unrolled.kernels._numba_loops,
_numba_panels) against NumPy, and what LLVM makes of their step arithmetic.

The BLAS loops and the training loops use their own vectorizable tanh and sigmoid and, for
weights that fit the caches, their own matrix product (`_numba_panels.panel_product`); the
kernel tests compare whole layers with the reference loop, and this file checks the functions
themselves: the activations over the whole float32 range, limits and NaN included, the product
at every remainder of its blocks, the step functions' compiled code (float32, vectorized), and
what a first call compiles.
"""

from __future__ import annotations

import numpy as np
import pytest


def _within_float32_sums(out, a, w):
    # float32 sums of K products: within K roundings of the sum of the products' sizes
    exact = a.astype("float64") @ w.astype("float64")
    bound = a.shape[1] * np.finfo("float32").eps * (np.abs(a).astype("float64") @ np.abs(w))
    excess = np.abs(out - exact) - bound
    assert np.all(excess <= 1e-30), np.max(excess)


_products: dict = {}


def _variant(wide: bool):
    """The products of one generated source: the 256-bit one (5 rows a block) or the 512-bit
    one (10 rows a block, for CPUs with AVX-512), whichever this CPU runs. On a CPU without
    AVX-512 the wide source compiles to 256-bit vectors and must still be right."""
    from types import SimpleNamespace

    from unrolled.kernels import _numba_panels

    if wide not in _products:
        _products[wide] = SimpleNamespace(
            width=_numba_panels.source_module(wide).WIDTH,
            **{name: _numba_panels.compiled(name, wide=wide)
               for name in _numba_panels._SIGNATURES})
    return _products[wide]


def _packed(w, width):
    """w in panels `width` columns wide, as the products of that source read them."""
    from unrolled.kernels import _numba_panels

    panels = np.empty((-(-w.shape[1] // width), w.shape[0], width), dtype="float32")
    _numba_panels.pack(panels, w, 0)
    return panels


@pytest.mark.parametrize("width", [16, 32])
@pytest.mark.parametrize("shape", [(2, 2), (5, 7), (64, 256), (100, 400), (150, 33),
                                   (130, 517)])
def test_a_transposed_w_packs_as_a_copy_of_it_would(shape, width):
    """`pack` of a transpose (the backward's W^T) reads along W's rows, a tile at a time: the
    same panels as a contiguous copy of the transpose gives, a last part-panel's zeros and
    rows after k0 included, and nothing else written."""
    from unrolled.kernels import _numba_panels

    w = np.random.default_rng(sum(shape)).standard_normal(shape, dtype=np.float32)
    wt = w.T                                        # (K, N): contiguous columns
    count, K = -(-wt.shape[1] // width), wt.shape[0]
    expected = np.full((count, K + 3, width), np.nan, dtype=np.float32)
    got = expected.copy()
    _numba_panels.pack(expected, np.ascontiguousarray(wt), 3)
    _numba_panels.pack(got, wt, 3)
    np.testing.assert_array_equal(got, expected)
    assert np.isnan(got[:, :3]).all()
    for p in range(count):
        cols = wt[:, width * p:width * (p + 1)]
        np.testing.assert_array_equal(got[p, 3:, :cols.shape[1]], cols)
        assert (got[p, 3:, cols.shape[1]:] == 0).all()


@pytest.mark.parametrize("wide", [False, True], ids=["256-bit", "512-bit"])
@pytest.mark.parametrize("M", [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 17, 33])
@pytest.mark.parametrize("N", [1, 7, 16, 17, 31, 32, 33, 100, 130])
@pytest.mark.parametrize("K", [1, 17, 64])
def test_panel_product_is_a_times_w(M, N, K, wide):
    """Every remainder of the row blocks (5 rows, or 8 in the 512-bit source), of the panels (16
    columns, or 32) and of the lone row's 3 (or 4) panels at once; nothing written past N. A
    row comes out the same bits in a block of any size (its sums run over k in order in each),
    so row blocks on threads do not change results; and the two sources give the same bits."""
    products = _variant(wide)
    width = products.width
    rng = np.random.default_rng(M * 10_000 + N * 100 + K)
    a = rng.standard_normal((M, K)).astype("float32")
    w = rng.standard_normal((K, N)).astype("float32")
    panels = _packed(w, width)
    assert panels.shape == (-(-N // width), K, width)
    # A write past column N lands in the next row (checked after it was written: the last
    # panel comes after the others) or, from the last row, in the guard after the array.
    buffer = np.full(M * N + 16, np.nan, dtype="float32")
    out = buffer[:M * N].reshape(M, N)
    products.panel_product(a, panels, out)
    _within_float32_sums(out, a, w)
    assert np.isnan(buffer[M * N:]).all()
    for i in range(M):
        row = np.empty((1, N), dtype="float32")
        products.panel_product(a[i:i + 1], panels, row)
        np.testing.assert_array_equal(row[0], out[i])
    # in two parts, the second summed onto the first (panel_product_acc): the bits of one
    for K1 in {0, 1, K // 2, K}:
        parts = buffer.copy()
        two = parts[:M * N].reshape(M, N)
        two[:] = 7.0                                    # overwritten by the first part
        products.panel_product(np.ascontiguousarray(a[:, :K1]), _packed(w[:K1], width), two)
        products.panel_product_acc(np.ascontiguousarray(a[:, K1:]), _packed(w[K1:], width),
                                   two)
        np.testing.assert_array_equal(two, out)
        assert np.isnan(parts[M * N:]).all()
    other, products = np.empty_like(out), _variant(not wide)
    products.panel_product(a, _packed(w, products.width), other)
    np.testing.assert_array_equal(other, out)


@pytest.mark.parametrize("wide", [False, True], ids=["256-bit", "512-bit"])
@pytest.mark.parametrize("M", [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 15, 17, 33])
@pytest.mark.parametrize("panels", [1, 2, 3, 4, 5, 7, 9])
def test_columns_product_reads_w_in_place_with_the_packed_products_bits(M, panels, wide):
    """`columns_product(a, W, starts, out)`: out's panel p is W's 16 (or 32) columns from
    starts[p], read where they are; every remainder of the row blocks and of the lone row's
    panels at once; the same bits as panel_product on those columns packed, in any order."""
    products = _variant(wide)
    width = products.width
    rng = np.random.default_rng(M * 100 + panels)
    K, N = 37, width * panels + 40
    W = rng.standard_normal((K, N)).astype("float32")
    a = rng.standard_normal((M, K)).astype("float32")
    starts = rng.choice(N - width + 1, size=panels, replace=False).astype(np.int64)  # any column
    chosen = np.hstack([W[:, s:s + width] for s in starts])
    out = np.full((M, width * panels), np.nan, dtype="float32")
    products.columns_product(a, W, starts, out)
    packed = np.empty_like(out)
    products.panel_product(a, _packed(chosen, width), packed)
    np.testing.assert_array_equal(out, packed)
    _within_float32_sums(out, a, chosen)


@pytest.mark.parametrize("wide", [False, True], ids=["256-bit", "512-bit"])
@pytest.mark.parametrize("M", [1, 2, 3, 4, 5, 6, 7, 9])
@pytest.mark.parametrize("K", [1, 3, 4, 37, 64])
def test_rows_product_reads_w_down_its_rows_with_the_packed_products_bits(M, K, wide):
    """`rows_product(a, W, out, c0, c1)`: `out[:, c0:c1] = a @ W[:, c0:c1]`, W read where it
    is; every remainder of its blocks of rows (4, 2, 1), of W's rows (4 at a time) and of the
    columns (whole chunks from c0, then the rest); the same bits as panel_product on those
    columns packed; nothing written outside c0..c1."""
    products = _variant(wide)
    width = products.width
    rng = np.random.default_rng(M * 100 + K)
    N = 3 * width + 11
    W = rng.standard_normal((K, N)).astype("float32")
    a = rng.standard_normal((M, K)).astype("float32")
    for c0, c1 in ((0, N), (0, 2 * width), (5, N - 3), (width, width + 7), (N - 2, N)):
        out = np.full((M, N), np.nan, dtype="float32")
        products.rows_product(a, W, out, c0, c1)
        packed = np.empty((M, c1 - c0), dtype="float32")
        products.panel_product(a, _packed(np.ascontiguousarray(W[:, c0:c1]), width), packed)
        np.testing.assert_array_equal(out[:, c0:c1], packed)
        assert np.isnan(out[:, :c0]).all() and np.isnan(out[:, c1:]).all()
        _within_float32_sums(out[:, c0:c1], a, W[:, c0:c1])


def test_avx512_is_read_from_the_features_numba_compiles_for(monkeypatch):
    """`_vector_width.available()` follows Numba's target features (NUMBA_CPU_FEATURES
    overrides the host's), and says no where the feature list lacks AVX-512F."""
    from numba.core import config

    from unrolled.kernels import _vector_width

    for features, expected in [("+avx2,+fma,-avx512f", False), ("+avx2,+avx512f,+avx512vl", True),
                               ("", False)]:
        monkeypatch.setattr(config, "CPU_FEATURES", features)
        monkeypatch.setattr(_vector_width, "_available", None)
        assert _vector_width.available() is expected, features


def test_the_cpus_products_come_from_its_source():
    """The loops call the products of the source for this CPU: the 512-bit one where Numba
    compiles for AVX-512, the 256-bit one elsewhere; ROWS says which."""
    from unrolled.kernels import _numba_panels, _panel_source, _panel_source_wide, _vector_width

    wide = _vector_width.available()
    assert _numba_panels.WIDE is wide
    assert _numba_panels.source_module() is (_panel_source_wide if wide else _panel_source)
    assert (_numba_panels.ROWS, _numba_panels.WIDTH) == ((8, 32) if wide else (5, 16))
    assert _numba_panels.panel_product.py_func is _numba_panels.source_module().panel_product


def test_stacked_panels_multiply_h_and_x_at_once():
    from unrolled.kernels import _numba_panels

    rng = np.random.default_rng(5)
    W, U = (rng.standard_normal(s).astype("float32") for s in [(24, 40), (3, 40)])
    h, x = (rng.standard_normal(s).astype("float32") for s in [(6, 24), (6, 3)])
    out = np.empty((6, 40), dtype="float32")
    _numba_panels.panel_product(np.hstack([h, x]), _numba_panels.packed_stack(W, U), out)
    _within_float32_sums(out, np.hstack([h, x]), np.vstack([W, U]))


def test_panel_source_is_what_the_generator_writes():
    """src/unrolled/kernels/_panel_source.py and _panel_source_wide.py are generated; edit
    tools/generate_panel_product.py."""
    import importlib.util
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location(
        "generate_panel_product", root / "tools" / "generate_panel_product.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    assert set(generator.VARIANTS) == {"_panel_source.py", "_panel_source_wide.py"}
    for name in generator.VARIANTS:
        assert (generator.KERNELS / name).read_text() == generator.source(name), (
            f"{name}: run `python tools/generate_panel_product.py` after changing the generator")


def _zmm_multiply_adds(asm):
    import re

    return re.findall(r"\bvfn?madd\w*ps\s[^\n]*\bzmm", asm)


def _llvm_prefers_512_bits():
    """Whether LLVM builds 512-bit vectors on this CPU unasked: a plain multiply-add loop,
    compiled without `prefer_512_bit_vectors`, has them."""
    import numba

    def axpy(a, x, y):
        for i in range(y.shape[0]):
            y[i] += a * x[i]

    plain = numba.njit(numba.void(numba.float32, numba.float32[::1], numba.float32[::1]),
                       cache=False, fastmath={"contract"})(axpy)
    return bool(_zmm_multiply_adds("\n".join(plain.inspect_asm().values())))


def test_panel_product_is_vectorized_and_numba_setting_restored():
    """The SLP vectorizer was on while panel_product and columns_product compiled: their machine
    code multiplies packed floats (`..ps` instructions; without SLP it is scalar `..ss`, 10x
    slower), from whole vectors of W (no `vinsertps`); the 512-bit source in 512-bit registers
    (zmm) where the CPU has AVX-512, and the 256-bit one never. Numba's own setting is back to
    what the environment says. (Numba cannot show the code of a function loaded from its
    cache, so this compiles a fresh one the same way.)"""
    import os
    import re

    from unrolled.kernels import _numba_panels, _vector_width

    for name in _numba_panels._SIGNATURES:
        for wide in (False, True):
            asm = "\n".join(_numba_panels.compiled(name, cache=False, wide=wide)
                            .inspect_asm().values())
            packed = re.findall(r"\b(?:v?fn?madd\d*ps|v?mulps)\b", asm)
            assert len(packed) >= 16, f"{name} is not vectorized ({len(packed)} packed products)"
            # Vectors built from single floats: the loads of W did not vectorize (columns_product
            # with signed, unmasked column offsets had 192 and ran at a third of the speed).
            built = re.findall(r"\bvinsertps\b", asm)
            assert not built, f"{name} builds {len(built)} vectors from single floats"
            # 512-bit multiply-adds from the wide source on a CPU with AVX-512; none from the
            # 256-bit one, unless LLVM builds them for any code on this CPU (AMD Zen 4: its
            # tuning does not prefer 256-bit vectors)
            zmm = _zmm_multiply_adds(asm)
            if wide and _vector_width.available():
                assert len(zmm) >= 10, f"{name}: {len(zmm)} 512-bit multiply-adds"
            elif not (_vector_width.available() and _llvm_prefers_512_bits()):
                assert not zmm, f"{name} ({'wide' if wide else '256-bit'}): {len(zmm)} in zmm"
    assert _numba_panels.config.SLP_VECTORIZE == int(os.environ.get("NUMBA_SLP_VECTORIZE", "0"))


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


def test_forward_step_arithmetic_stays_in_float32():
    """The forward loops' step functions compute in float32 throughout, in 512-bit vectors on a
    CPU with AVX-512 (they ask for them: 0.86-0.96 of a layer's time at (32, 100, 16, 64) and
    (128, 200, 64, 256), RESULTS.md round 19). An int literal beside
    a float32 (`1 - z`) is float64 in Numba, so the GRU's state update ran in double precision:
    half as many numbers a vector instruction, and conversions each way (the GRU unit took
    3.1 ns instead of 2.4). Checked in the LLVM code of a fresh compile (Numba cannot show the
    code of a function loaded from its cache) for float32 arrays: no conversion to double and
    no double arithmetic."""
    import numba

    from unrolled.kernels import _numba_loops

    m, v, i = numba.float32[:, ::1], numba.float32[::1], numba.int64
    mask, flag = numba.boolean[:, ::1], numba.boolean
    signatures = {
        "_tanh_rows": (m, v, m, mask, flag, i, i),
        "_tanh_units_rows": (m, i, v, m, m, mask, flag, i, i),
        "_tanh_units_in_place": (m, v, m),
        "_lstm_block": (m, v, m, m, m, i, mask, flag, i, i),
        "_lstm_units_rows": (m, i, v, m, m, m, mask, flag, i, i),
        "_gru_block": (m, m, m, v, v, v, m, m, i, mask, flag, i, i),
        "_gru_units_rows": (m, i, v, m, v, m, mask, flag, i, i),
        "_gru_gates_rows": (m, i, v, m, m, m),
        "_gru_candidate_rows": (m, i, v, m, m, m, mask, flag, i, i),
    }
    for name, types in signatures.items():
        _assert_float32_vectors(_numba_loops, name, types, wide=True)


def _assert_float32_vectors(module, name, types, wide=False):
    """`module.name`, compiled afresh for `types` as the loops compile it (fused multiply-adds),
    computes in float32, never float64, and in vectors of float32 (LLVM's vectorizer gave up
    on it otherwise). `wide`: the function asks for 512-bit vectors, so on a CPU with AVX-512
    its machine code uses 512-bit registers (zmm), and elsewhere none."""
    import re

    import numba

    fresh = numba.njit(numba.void(*types), error_model="numpy", fastmath={"contract"})(
        getattr(module, name).py_func)
    llvm = "\n".join(fresh.inspect_llvm().values())
    doubles = re.findall(r"\bfpext\b|\bf(?:add|sub|mul|div)\b[^=\n]*\bdouble\b", llvm)
    assert not doubles, f"{name} computes in float64: {sorted(set(doubles))}"
    assert re.search(r"\b(?:fadd|fmul|load|store)\b[^\n]*\bfloat\b", llvm), f"{name}: no float32"
    assert re.search(r"<\d+ x float>", llvm), f"{name}: not vectorized"
    if wide:
        from unrolled.kernels import _vector_width

        zmm = re.findall(r"\bzmm\d+", "\n".join(fresh.inspect_asm().values()))
        if _vector_width.available():
            assert zmm, f"{name}: no 512-bit vectors on a CPU with AVX-512"
        else:
            assert not zmm, f"{name}: 512-bit registers on a CPU without AVX-512"


def test_training_step_arithmetic_is_float32_vectors():
    """The training loops' step functions (unrolled.kernels._numba_train) stay in float32 and
    vectorize: a change LLVM cannot vectorize (a dependence from one number to the next, say)
    would make a loop run one number at a time without failing any other test."""
    import numba

    from unrolled.kernels import _numba_train

    m, v, i = numba.float32[:, ::1], numba.float32[::1], numba.int64
    real = numba.boolean[::1]
    signatures = {
        "_simple_units": (m, m, m, i, i, i),
        "_lstm_gates": (m, m, i, i),
        "_lstm_state": (m, m, m, m, m, i, i, i),
        "_gru_gates": (m, v, m, m, i),
        "_gru_reset_after": (m, v, m, v, m, m, i),
        "_gru_reset_before": (m, m, m, i, i),
        "_gru_candidate_input": (m, v, m, i),
        "_gru_update": (m, m, m, m, i, i),
        "_simple_grads": (m, m, m, m, real, i, i),
        "_lstm_grads": (m, m, m, m, m, m, m, m, real, i, i),
        "_gru_grads": (m, m, m, m, m, m, real, i, i),
        "_gru_grads_after": (m, m, m, m, i, i),
        "_gru_split_before": (m, m, m, i),
        "_gru_reset_grad_before": (m, m, m, m, m, i),
        "_gru_add_before": (m, m, m, i),
        "_add_rows": (m, m, i),
    }
    for name, types in signatures.items():
        _assert_float32_vectors(_numba_train, name, types)


def test_fast_sigmoid_of_the_forward_loops_is_within_2e_7_of_the_sigmoid():
    """sigmoid32_fast (the forward loops' gates): within 2e-7 of the exact sigmoid, absolute,
    over the float32 range; 0 and 1 at the ends, never outside them; NaN stays NaN. (Like
    tanh32_fast it is not monotone to the last ulp: steps of 2e-7 down occur.)"""
    from unrolled.kernels import _numba_loops

    rng = np.random.default_rng(2)
    x = np.concatenate([
        (rng.standard_normal(200_000) * 6).astype("float32"),
        np.linspace(-120, 120, 100_001, dtype="float32"),
        np.array([0.0, -0.0, 1e-45, 18.0, -18.0, 88.5, -88.5, 1e30, -1e30, np.inf, -np.inf],
                 dtype="float32"),
    ])
    out = np.empty_like(x)
    _numba_loops.sigmoid32_fast_array(x, out)
    with np.errstate(over="ignore"):
        exact = 1 / (1 + np.exp(-x.astype("float64")))
    error = np.abs(out - exact)
    assert error.max() <= 2e-7, f"worst {error.max():.2e} at x = {x[np.argmax(error)]}"
    assert np.all((out >= 0) & (out <= 1))
    assert out[x == np.inf][0] == 1 and out[x == -np.inf][0] == 0 and out[x == 0][0] == 0.5
    nan = np.array([np.nan], dtype="float32")
    _numba_loops.sigmoid32_fast_array(nan, out[:1])
    assert np.isnan(out[0])


def test_panel_product_compiles_none_of_the_adding_products_blocks(tmp_path):
    """`panel_product` and `panel_product_acc` share no block: on a new machine (an empty
    Numba cache) the first compiles its own blocks and none of the second's, so a loop that
    never adds a product (training's, SimpleRNN's, GRU's BLAS loop) pays for one product's
    compile, not for both (RESULTS.md, round 24)."""
    import ast
    import os
    import subprocess
    import sys

    code = (
        "from unrolled.kernels import _numba_panels\n"
        "_numba_panels.panel_product\n"
        "source = _numba_panels.source_module()\n"
        "blocks = sorted(n for n in vars(source) if n.startswith('_packed_'))\n"
        "print(blocks)\n"
        "print([n for n in blocks if getattr(source, n).signatures])\n")
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    blocks, compiled = (ast.literal_eval(line) for line in done.stdout.split("\n")[:2])
    adding = [n for n in blocks if n.endswith("_acc")]
    assert adding and len(adding) * 2 == len(blocks), blocks
    assert compiled == [n for n in blocks if n not in adding]


# The start of a child process's script that records what Numba compiles (`compiles`), each step
# product compiled in the middle of another function's compile (`nested`: a product compiled
# there took twice as long), and which step products were looked up (`looked_up()`).
_COMPILES = (
    "import numpy as np\n"
    "from numba.core import event\n"
    "compiles, open_, nested = [], [], []\n"
    "class Compiles(event.Listener):\n"
    "    def on_start(self, e):\n"
    "        name = e.data['dispatcher'].py_func.__qualname__\n"
    "        if name.startswith(('panel_product', 'columns_product', 'rows_product')) and open_:\n"
    "            nested.append((name, open_[-1]))\n"
    "        compiles.append(name)\n"
    "        open_.append(name)\n"
    "    def on_end(self, e):\n"
    "        open_.pop()\n"
    "event.register('numba:compile', Compiles())\n"
    "from unrolled import layers\n"
    "from unrolled.kernels import _numba, _numba_loops, _numba_panels\n"
    "def looked_up():\n"
    "    return sorted(n for n in _numba_panels._SIGNATURES if n in vars(_numba_panels))\n"
    "def numpy_close(layer, x):\n"
    "    got = layer(x)\n"
    "    _numba.enabled = False\n"
    "    expected = layer(x)\n"
    "    _numba.enabled = True\n"
    "    return float(np.abs(got - expected).max()) < 1e-5\n")


def _on_a_new_machine(tmp_path, code: str) -> list[str]:
    """The lines `_COMPILES + code` prints, run in a process of its own with an empty Numba
    cache (a new machine), the compiled loops on and one BLAS thread."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path), "UNROLLED_NUMBA": "1",
           "UNROLLED_STEP_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", _COMPILES + code], capture_output=True,
                          text=True, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout.split("\n")


def test_only_a_call_of_a_few_rows_compiles_rows_product(tmp_path):
    """With an empty Numba cache, the BLAS loops of a one-step call of one row and of 7 rows
    (too few steps to pack) compile no step product of their own; a call of 4 rows compiles
    the loop that calls `rows_product` and looks that up before the loop compiles (9 s on a
    new machine, which the others do not pay). All give NumPy's numbers."""
    pytest.importorskip("numba", reason="the compiled loops are an optional extra")
    out = _on_a_new_machine(tmp_path, (
        "rng = np.random.default_rng(0)\n"
        "for batch in (1, 7, 4):\n"
        "    layer = layers.LSTM(192, return_sequences=True)\n"
        "    x = rng.standard_normal((batch, 1, 16)).astype('float32')\n"
        "    layer.build(x.shape)\n"
        "    assert _numba.loop_for(layer.cell, batch, 1).blas\n"
        "    close = numpy_close(layer, x)\n"
        "    print(batch, looked_up(), close)\n"
        "print(nested)\n"))
    assert out[:4] == ["1 [] True", "7 [] True", "4 ['rows_product'] True", "[]"], out


def test_the_loops_that_add_a_product_look_it_up_before_they_compile():
    """Each fused loop's products, as its source calls them on packed weights, are the ones
    `_numba._products_called` looks up before the loop compiles (a product compiled in the
    middle of a loop's compile took twice as long). The LSTM and GRU loops add `x_t U` onto
    `h W` where they split the step, through `_add_product`, which calls `panel_product_acc`
    only for the split step's weights; the packers look that product up when they pack such
    weights (`test_only_a_step_that_splits_compiles_the_adding_product`)."""
    import inspect
    import re

    from unrolled.kernels import _numba, _numba_loops

    for kind in ("simple_rnn", "lstm", "gru"):
        source = inspect.getsource(getattr(_numba_loops, f"{kind}_fused").py_func)
        called = set(re.findall(r"products\.(\w+)\(", source)) - {"columns_product"}
        assert called == set(_numba._products_called(kind, True, None)), kind
        assert ("_add_product(" in source) is (kind != "simple_rnn"), kind
    for packer in (_numba_loops.lstm_panels, _numba_loops.gru_panels):
        assert '"panel_product_acc"' in inspect.getsource(packer)


def test_only_a_step_that_splits_compiles_the_adding_product(tmp_path):
    """With an empty Numba cache, an LSTM and a GRU whose packed weights do not split the step
    (a few rows, over enough steps to pack: `_numba.pack_pays`) compile `panel_product` and their
    loops only: not `panel_product_acc` (some 15
    s on a new machine). A call whose steps split (32 rows, weights over `SPLIT_BYTES`) looks
    it up before its loop compiles, not in the middle of that compile. Both give NumPy's
    numbers."""
    pytest.importorskip("numba", reason="the compiled loops are an optional extra")
    out = _on_a_new_machine(tmp_path, (
        "rng = np.random.default_rng(0)\n"
        "for batch in (4, 32):\n"
        "    for cls in (layers.LSTM, layers.GRU):\n"
        "        layer = cls(192, return_sequences=True)\n"
        "        x = rng.standard_normal((batch, 12, 16)).astype('float32')\n"
        "        close = numpy_close(layer, x)\n"
        "        print(cls.__name__, batch, looked_up(), close)\n"
        "print(nested)\n"))
    assert out[:5] == [
        "LSTM 4 ['panel_product'] True",
        "GRU 4 ['panel_product'] True",
        "LSTM 32 ['panel_product', 'panel_product_acc'] True",
        "GRU 32 ['panel_product', 'panel_product_acc'] True",
        "[]"], out


def test_a_first_call_compiles_only_what_its_shape_runs(tmp_path):
    """With an empty Numba cache (a new machine), a small-shape loop compiles no step product,
    and an LSTM whose fused loop reads `[W; U]` in place compiles that loop and
    `columns_product` only: not the packed weights' `panel_product`, nor the BLAS loop (all of
    them on import made an LSTM's first call 50 s). A GRU after it compiles no product more:
    its products are on C-contiguous operands too. The product is compiled before the loop, not
    in the middle of its compile, where it took twice as long. And no loop compiles Numba's
    message for a slice assigned from an array of another shape (3.4 s of string formatting
    code, for a copy of the initial state)."""
    pytest.importorskip("numba", reason="the compiled loops are an optional extra")
    out = _on_a_new_machine(tmp_path, (
        "layers.SimpleRNN(2)(np.ones((4, 5, 1), 'float32'))\n"
        "print(_numba_loops.simple_rnn.signatures != [], looked_up())\n"
        "lstm = layers.LSTM(64)\n"
        "lstm(np.ones((32, 20, 16), 'float32'))\n"
        "print(_numba.stacked_weights(lstm.cell) is not None, _numba_loops.lstm_own.signatures\n"
        "      != [], _numba_loops.lstm_blas.signatures, looked_up())\n"
        "layers.GRU(64)(np.ones((32, 20, 16), 'float32'))\n"
        "print(_numba_loops.gru_own.signatures != [], _numba_loops.gru_blas.signatures,\n"
        "      looked_up())\n"
        "print([n for n in compiles if 'shape_context' in n], nested)\n"))
    assert out[:4] == [
        "True []", "True True [] ['columns_product']", "True [] ['columns_product']", "[] []"
    ], out


def test_the_products_slp_setting_changes_under_numbas_compiler_lock():
    """The products compile with LLVM's SLP vectorizer on, a process-wide Numba setting; it is
    changed only while Numba's compiler lock is held, so that no other thread compiles with
    it (a product looked up from Python compiles outside any loop's compile)."""
    from numba.core.compiler_lock import global_compiler_lock

    from unrolled.kernels import _numba_panels

    before = _numba_panels.config.SLP_VECTORIZE
    with _numba_panels._slp_vectorizer():
        assert global_compiler_lock.is_locked()
        assert _numba_panels.config.SLP_VECTORIZE == 1
    assert _numba_panels.config.SLP_VECTORIZE == before


def test_a_loop_that_calls_no_blas_is_not_offered_one_blas_thread(monkeypatch):
    """A fused loop multiplies with its own products, so one BLAS thread (`ONE`) and BLAS's own
    count (`ALL`) are the same call: its thread choice offers `ALL` and blocks of rows only.
    A loop that calls BLAS (the GRU with reset_after=False, whose BLAS loop projects by
    `np.dot`) is offered all three."""
    pytest.importorskip("numba", reason="the compiled loops are an optional extra")
    from unrolled import layers
    from unrolled.kernels import _numba, _threads

    monkeypatch.setattr(_numba, "enabled", True)
    monkeypatch.setattr(_threads, "MODE", "auto")
    monkeypatch.setattr(_threads, "cores", lambda: 2)
    monkeypatch.setattr(_threads, "_choices", {})
    if not _threads.blas_controllers():
        pytest.skip("threadpoolctl finds no BLAS: no thread choice")
    x = np.ones((32, 20, 16), "float32")
    for layer, offered in [(layers.LSTM(64), {_threads.ALL, _threads.ROWS}),
                           (layers.GRU(64, reset_after=False),
                            {_threads.ONE, _threads.ALL, _threads.ROWS})]:
        layer(x)
        layer(x)
        [choice] = [c for key, c in _threads._choices.items()
                    if key[1] == (type(layer.cell),)]
        assert set(choice.times) == offered, (type(layer).__name__, choice.times)
