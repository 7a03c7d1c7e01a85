"""Writes src/unrolled/kernels/_panel_source.py and _panel_source_wide.py, the bodies of the
compiled panel products: `panel_product` (W packed in panels) and `columns_product` (W's columns
read where they are). The first is for CPUs with 16 vector registers of 256 bits (AVX2); the
second, for CPUs with AVX-512 (32 registers of 512 bits), has panels twice as wide, keeps more
sums in registers and asks LLVM for 512-bit vectors (see unrolled.kernels._numba_panels).

Each product keeps a block of ROWS x WIDTH running sums in named local variables, so that LLVM
holds them in vector registers for the whole loop over k. Numba has no way to say "a fixed-size
block of registers" except by naming every one, hence a generator rather than 100 lines typed by
hand. Run it after changing VARIANTS or the template:

    python tools/generate_panel_product.py

It also deletes Numba's cached compiles of the kernels next to the source (their callers keep
the product they were compiled with). tests/test_compiled_activations.py checks that the file in
the tree is what this writes.
"""

from __future__ import annotations

import pathlib
import sys

KERNELS = pathlib.Path(__file__).resolve().parents[1] / "src/unrolled/kernels"
# file: (WIDTH, ROWS, REST, PANELS, wide). A panel is WIDTH columns; ROWS rows of a block are
# summed at once; the M % ROWS rows left go in REST's blocks (each size at most once, the
# largest first, where it fits), and a last row left over runs alone, against PANELS panels at
# once; `wide` files ask for 512-bit vectors. The wide file's panels are two 512-bit vectors
# wide, so each row's broadcast feeds two multiply-adds (8 rows: 16 sums in 16 of the 32
# registers). Its rows left over go in blocks of 4 and 2: with a block of every size up to 7
# each product took 13 s to compile (RESULTS.md, round 19).
VARIANTS = {"_panel_source.py": (16, 5, (4, 3, 2), 3, False),
            "_panel_source_wide.py": (32, 8, (4, 2), 4, True)}
# set by source() for the file it writes
WIDTH, ROWS, REST, PANELS = VARIANTS["_panel_source.py"][:4]

_WIDE_NOTE = """

For CPUs with AVX-512: each function first asks LLVM for 512-bit vectors
(unrolled.kernels._vector_width), and a panel is two of them wide, for the 32 vector
registers."""

_WIDE_IMPORT = "\nfrom unrolled.kernels._vector_width import prefer_512_bit_vectors\n"
_WIDE_CALL = "    prefer_512_bit_vectors()"


def _header(wide: bool) -> str:
    return f'''"""The bodies of the compiled products of `_numba_panels`: `panel_product`,
`panel_product_acc` and `columns_product`, and of their blocks, written by
tools/generate_panel_product.py.{_WIDE_NOTE if wide else ""}

Do not edit: change the generator and run it again. See unrolled.kernels._numba_panels.
"""

import numba
import numpy as np
{_WIDE_IMPORT if wide else ""}
ROWS, WIDTH = {ROWS}, {WIDTH}
_ZERO = np.float32(0)
# columns_product's column offsets, masked non-negative: an index that may be negative keeps
# NumPy's wraparound check on every access, and the loop from vectorizing
_MASK = (1 << 62) - 1
# panel_product's and panel_product_acc's blocks: each size a function of its own, compiled
# when the product that calls it is, with its settings (unrolled.kernels._numba_panels.compiled).
# Numba's SSA pass visits a function's every statement once for each name assigned more than
# once: with every block in one function that was a third of the product's compile. A block's
# row and column arrive as arguments, masked non-negative as columns_product's offsets are:
# unmasked, LLVM read and wrote the sums' rows by gathers and scatters (half the speed).
_block = numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={{"contract"}})
'''


_PACKED_DOC = {
    False: """`out = a @ W`, for `a (M, K)` and W (K, N) packed in
    `panels (ceil(N / {WIDTH}), K, {WIDTH})`.

    `out (M, N)`; see `_numba_panels.pack`. Each sum runs over k in order, from 0. The last
    panel, when N is not a multiple of {WIDTH}, is summed into `tail`, (M, {WIDTH}), by the same
    blocks, and copied: a store that depends on the column inside the block would keep LLVM
    from vectorizing the block (3x slower).""",
    True: """`out += a @ W`: panel_product with each sum starting from out's number, so that
    `panel_product(a1, W1, out)` then `panel_product_acc(a2, W2, out)` gives the bits of
    `[a1 | a2] @ [W1; W2]`. Its blocks are functions of their own: a loop that never adds
    (training's, SimpleRNN's) compiles none of them."""}


def _packed_source(acc: bool, wide: bool) -> list[str]:
    """panel_product, or with `acc` panel_product_acc: the blocks over the panels, then the
    lone row."""
    name, sfx = ("panel_product_acc", "_acc") if acc else ("panel_product", "")
    call = lambda size, at: [f"{at}_packed_rows{size}{sfx}(a, panels, dst, p, i, j)"]  # noqa: E731
    lines = ["", "", f"def {name}(a, panels, out):",
             '    """' + _PACKED_DOC[acc].format(WIDTH=WIDTH), '    """']
    lines += [_WIDE_CALL] if wide else []
    lines += ["    M = a.shape[0]",
              "    n = out.shape[1]",
              f"    M4 = M - M % {ROWS}",
              "    P = panels.shape[0]",
              f"    full = n // {WIDTH}",
              f"    tail = out if full == P else np.empty((M, {WIDTH}), dtype=np.float32)"]
    if acc:
        lines += ["    if full < P:",
                  "        for i in range(M):",
                  f"            for c in range({WIDTH}):",
                  f"                tail[i, c] = out[i, {WIDTH} * full + c] if {WIDTH} * full"
                  " + c < n else _ZERO"]
    lines += ["    # the full panels into out, then the last into tail; switching arrays a panel "
              "at a time",
              "    # cost a reference count each, and up to 10% at 2 to 4 rows",
              "    for part in range(2):",
              "        dst, p0, p1 = (out, 0, full) if part == 0 else (tail, full, P)",
              "        for p in range(p0, p1):",
              f"            j = {WIDTH} * (p - p0)",
              "            if M4 > 0:  # a call that does nothing is 30 arguments passed",
              f"                _packed_rows{ROWS}{sfx}(a, panels, dst, p, j, M4)"]
    lines += _rest(" " * 12, 2, call)
    lines += [f"    if {_lone_rows()}:",
              "        i = M - 1",
              f"        for p in range(0, full - full % {PANELS}, {PANELS}):",
              f"            _packed_panels{PANELS}{sfx}(a, panels, out, p, i, {WIDTH} * p)",
              "        for part in range(2):",
              f"            dst, p0, p1 = (out, full - full % {PANELS}, full) if part == 0 "
              "else (tail, full, P)",
              "            for p in range(p0, p1):",
              f"                _packed_rows1{sfx}(a, panels, dst, p, i, {WIDTH} * p if part == 0 "
              "else 0)",
              "    if full < P:",
              f"        j = {WIDTH} * full",
              "        for i in range(M):",
              "            for c in range(n - j):",
              "                out[i, j + c] = tail[i, c]"]
    return lines


def _packed(panel: str, c: int) -> str:
    """Column c of panel `panel` at row k, packed (panel_product)."""
    return f"panels[{panel}, k, {c}]"


def _in_place(panel: str, c: int) -> str:
    """Column c of panel `panel` at row k, read from W where it is (columns_product), from
    the panel's first column (set by _starts)."""
    return f"W[k, {_at(_start(panel), c)}]"


def _start(panel: str) -> str:
    """The name of a panel's first column of W: `c` for panel p, `c1` for p + 1, and so on."""
    return "c" if panel == "p" else "c" + panel.split(" + ")[-1]


def _starts(indent: str, panels: list[str], weight) -> list[str]:
    """In place: each panel's first column of W, masked non-negative (see the header)."""
    if weight is _packed:
        return []
    return [f"{indent}{_start(panel)} = bases[{panel}] & _MASK" for panel in panels]


def _block(rows: int, indent: str, weight, acc: bool = False, array: str = "dst") -> list[str]:
    """The sums of `rows` rows from row i against panel p, stored in `array` from column j."""
    names = [[f"s{r}_{c}" for c in range(WIDTH)] for r in range(rows)]
    lines = _starts(indent, ["p"], weight)
    lines += _first_sums(indent, names, [(array, _at("i", r), "j") for r in range(rows)], acc)
    lines.append(indent + "for k in range(K):")
    inner = indent + "    "
    lines += [f"{inner}w{c} = {weight('p', c)}" for c in range(WIDTH)]
    for r in range(rows):
        lines.append(f"{inner}v = a[{_at('i', r)}, k]")
        lines += [f"{inner}{names[r][c]} += v * w{c}" for c in range(WIDTH)]
    for r in range(rows):
        lines += [f"{indent}{array}[{_at('i', r)}, j + {c}] = {names[r][c]}"
                  for c in range(WIDTH)]
    return lines


def _first_sums(indent: str, names: list, rows: list, acc: bool) -> list[str]:
    """The sums' starting values: zeros, or with `acc` what `_row` reads at each of `rows`,
    (array, row, first column)."""
    if acc:
        return [f"{indent}{', '.join(sums)} = _row(" + ", ".join(at) + ")"
                for sums, at in zip(names, rows)]
    return [indent + " = ".join(row) + " = _ZERO" for row in names]


def _at(row: str, r: int) -> str:
    return f"{row} + {r}" if r else row


def _rest_taken(r: int) -> int:
    """The rows that REST's blocks take of a remainder of r rows: each size at most once, the
    largest first, where it fits; a last row left over goes with the lone row (_lone_rows)."""
    taken = 0
    for size in REST:
        if r - taken >= size:
            taken += size
    return taken


def _lone_rows() -> str:
    """The condition, on the rows past the last whole block, for a lone row at M - 1."""
    left = [r for r in range(1, ROWS) if r - _rest_taken(r) == 1]
    return " or ".join(f"M - M4 == {r}" for r in left)


def _rest(indent: str, smallest: int, body) -> list[str]:
    """The last M % ROWS rows, if at least `smallest`, in REST's blocks (see _rest_taken), each
    `body(size, indent)` (lines). A block of fewer rows has fewer independent sums to overlap the
    latency of a multiply-add: one row ran at 14 GFLOP/s where four run at 34, and two rows one
    at a time took as long as four."""
    lines = [f"{indent}i = M4"]
    for size in (size for size in REST if size >= smallest):
        lines.append(f"{indent}if M - i >= {size}:")
        lines += body(size, indent + "    ")
        lines.append(f"{indent}    i += {size}")
    return lines


def _one_row(indent: str, weight, acc: bool) -> list[str]:
    """One row against PANELS panels at once: as many independent sums as a block of rows."""
    names = [[f"s{q}_{c}" for c in range(WIDTH)] for q in range(PANELS)]
    lines = _starts(indent, [_at("p", q) for q in range(PANELS)], weight)
    lines += _first_sums(indent, names, [("out", "i", _at("j", WIDTH * q)) for q in range(PANELS)],
                         acc)
    lines.append(indent + "for k in range(K):")
    inner = indent + "    "
    lines.append(f"{inner}v = a[i, k]")
    for q in range(PANELS):
        lines += [f"{inner}{names[q][c]} += v * {weight(_at('p', q), c)}"
                  for c in range(WIDTH)]
    for q in range(PANELS):
        lines += [f"{indent}out[i, j + {WIDTH * q + c}] = {names[q][c]}" for c in range(WIDTH)]
    return lines


def _function(name: str, params: tuple, doc: str, body: list[str], wide: bool) -> list[str]:
    """A block's compiled function (`_block` in the header); its row i and column j masked."""
    lines = ["", "", "@_block", f"def {name}({', '.join(params)}):", f'    """{doc}"""']
    lines += [_WIDE_CALL] if wide else []
    masks = [f"    {v} &= _MASK" for v in ("i", "j") if v in params]
    return lines + ["    K = a.shape[1]"] + masks + body


def _block_functions(wide: bool, acc: bool) -> list[str]:
    """panel_product's blocks, or with `acc` panel_product_acc's: ROWS rows at a time over
    rows 0 to M4 - 1; each of REST's sizes and one row, from row i; and row i against PANELS
    panels."""
    sfx, what = ("_acc", ", added to dst's numbers") if acc else ("", "")
    lines = _function(f"_packed_rows{ROWS}{sfx}", ("a", "panels", "dst", "p", "j", "M4"),
                      f"Rows 0 to M4 - 1, {ROWS} at a time, against panel p{what}.",
                      [f"    for i in range(0, M4, {ROWS}):"]
                      + _block(ROWS, " " * 8, _packed, acc), wide)
    for size in (*REST, 1):
        rows = f"Rows i to i + {size - 1}" if size > 1 else "Row i"
        lines += _function(f"_packed_rows{size}{sfx}", ("a", "panels", "dst", "p", "i", "j"),
                           f"{rows} against panel p{what}.",
                           _block(size, " " * 4, _packed, acc), wide)
    lines += _function(f"_packed_panels{PANELS}{sfx}", ("a", "panels", "out", "p", "i", "j"),
                       f"Row i against panels p to p + {PANELS - 1}{what}.",
                       _one_row(" " * 4, _packed, acc), wide)
    return lines


def _row_function() -> list[str]:
    """`_row`: a row's WIDTH numbers from a column on, as a tuple: panel_product_acc's blocks
    start their sums from it, one statement a row where a statement for each number made the
    compile 1.4 times as long. LLVM inlines it; masked, its loads are whole vectors."""
    numbers = ", ".join(f"out[i, j + {c}]" if c else "out[i, j]" for c in range(WIDTH))
    return ["", "", "@_block", "def _row(out, i, j):",
            f'    """out[i, j:j + {WIDTH}] as a tuple."""',
            "    i &= _MASK",
            "    j &= _MASK",
            f"    return ({numbers})"]


def _columns_source(wide: bool) -> list[str]:
    """columns_product, its blocks written out in it: as functions of their own, its blocks of
    13 rows ran at 0.8 of the speed and a lone row at 0.6."""
    block = lambda size, at: _block(size, at, _in_place, array="out")  # noqa: E731
    lines = ["", "", "def columns_product(a, W, bases, out):",
             f'    """`out = a @ W[:, columns]`, W read where it is: out\'s columns {WIDTH} p .. '
             f"{WIDTH} p + {WIDTH - 1}",
             f"    are W's columns bases[p] .. bases[p] + {WIDTH - 1}.",
             "",
             f"    `a (M, K)`, `W (K, N)`, `out (M, {WIDTH} len(bases))`; see "
             "`_numba_panels.columns_product`.",
             "    The blocks and the order of every sum are panel_product's, so the two give "
             "the same bits.",
             '    """']
    lines += [_WIDE_CALL] if wide else []
    lines += ["    M, K = a.shape",
              f"    M4 = M - M % {ROWS}",
              "    P = bases.shape[0]",
              "    for p in range(P):",
              f"        j = {WIDTH} * p",
              f"        for i in range(0, M4, {ROWS}):"]
    lines += block(ROWS, " " * 12)
    lines += _rest(" " * 8, 2, block)
    lines += [f"    if {_lone_rows()}:",
              "        i = M - 1",
              f"        for p in range(0, P - P % {PANELS}, {PANELS}):",
              f"            j = {WIDTH} * p"]
    lines += _one_row(" " * 12, _in_place, False)
    lines += [f"        for p in range(P - P % {PANELS}, P):",
              f"            j = {WIDTH} * p"]
    lines += block(1, " " * 12)
    return lines


# rows_product: a sweep down W's rows, SWEEP_K of them at a time, for a few rows of `a`; its
# blocks of rows (the largest first, each size as often as it fits).
SWEEP_K = 4
SWEEP_ROWS = (4, 2, 1)


def _sweep(rows: int, indent: str) -> list[str]:
    """Rows i to i + rows - 1 against W's rows k0 to k0 + SWEEP_K - 1, for every whole chunk of
    WIDTH columns from c0: each chunk's sums come from out, take the SWEEP_K rows'
    multiply-adds in order, and go back to out."""
    inner = indent + "    "
    lines = [f"{indent}v{r}_{kk} = a[{_at('i', r)}, {_at('k0', kk)}]"
             for r in range(rows) for kk in range(SWEEP_K)]
    lines += [f"{indent}for j in range(c0, c0 + whole, {WIDTH}):",
              f"{inner}j &= _MASK"]
    lines += [f"{inner}{', '.join(f's{r}_{c}' for c in range(WIDTH))} = _row(out, {_at('i', r)}, j)"
              for r in range(rows)]
    for kk in range(SWEEP_K):
        lines += [f"{inner}w{c} = W[{_at('k0', kk)}, {_at('j', c)}]" for c in range(WIDTH)]
        for r in range(rows):
            lines += [f"{inner}s{r}_{c} += v{r}_{kk} * w{c}" for c in range(WIDTH)]
    for r in range(rows):
        lines += [f"{inner}out[{_at('i', r)}, {_at('j', c)}] = s{r}_{c}" for c in range(WIDTH)]
    return lines


def _rows_source(wide: bool) -> list[str]:
    """rows_product: `out[:, c0:c1] = a @ W[:, c0:c1]` for a few rows of `a`, W read where it
    is, row after row (see `_numba_panels.rows_product`)."""
    lines = ["", "", "def rows_product(a, W, out, c0, c1):",
             '    """`out[:, c0:c1] = a @ W[:, c0:c1]` for a few rows of `a` (M, K), W (K, N) read '
             "where it is,",
             f"    {SWEEP_K} of its rows at a time over all the columns, each chunk of {WIDTH} "
             "columns' sums",
             "    kept in `out` in between. Every sum runs over k in order from zero, as "
             "panel_product's do,",
             "    so the two give the same bits. See `_numba_panels.rows_product`.",
             '    """']
    lines += [_WIDE_CALL] if wide else []
    lines += ["    M, K = a.shape",
              f"    KF = K - K % {SWEEP_K}",
              "    c0 &= _MASK",
              f"    whole = (c1 - c0) // {WIDTH} * {WIDTH}",
              "    for r in range(M):",
              "        for j in range(c0, c1):",
              "            out[r, j] = _ZERO"]
    lines.append("    i = 0")
    for size in SWEEP_ROWS:
        lines.append(f"    while M - i >= {size}:" if size == SWEEP_ROWS[0]
                     else f"    if M - i >= {size}:")
        lines.append(f"        for k0 in range(0, KF, {SWEEP_K}):")
        lines += _sweep(size, " " * 12)
        lines.append(f"        i += {size}")
    lines += ["    # the columns past the last whole chunk, to k = KF, then every column's last "
              "rows of W",
              "    for r in range(M):",
              "        for j in range(c0 + whole, c1):",
              "            s = _ZERO",
              "            for k in range(KF):",
              "                s += a[r, k] * W[k, j]",
              "            out[r, j] = s",
              "    for k in range(KF, K):",
              "        for r in range(M):",
              "            v = a[r, k]",
              "            for j in range(c0, c1):",
              "                out[r, j] += v * W[k, j]"]
    return lines


def source(name: str = "_panel_source.py") -> str:
    """The text of `name`, a key of VARIANTS."""
    global WIDTH, ROWS, REST, PANELS
    WIDTH, ROWS, REST, PANELS, wide = VARIANTS[name]
    assert all(0 <= r - _rest_taken(r) <= 1 for r in range(1, ROWS)), "REST leaves 2 rows"
    lines = [_header(wide).rstrip("\n")]
    lines += _packed_source(False, wide) + _packed_source(True, wide) + _columns_source(wide)
    lines += _rows_source(wide)
    lines += _block_functions(wide, False) + _block_functions(wide, True) + _row_function()
    return "\n".join(lines) + "\n"


def main() -> int:
    for name in VARIANTS:
        (KERNELS / name).write_text(source(name))
        print(f"wrote {KERNELS / name}")
    # Numba's cache keys a compiled function on its own file only: the loops that call the
    # product would keep the old one. Drop the kernels' cached compiles next to the source.
    stale = list((KERNELS / "__pycache__").glob("*.nb[ic]"))
    for path in stale:
        path.unlink()
    print(f"removed {len(stale)} cached Numba files (another NUMBA_CACHE_DIR: clear it too)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
