"""How close a forward pass is to what this machine's cores can do, and what a target asks.

    python benchmarks/floor.py [--cells lstm,gru,simple_rnn] [--shapes 32x100x16x64]
                               [--reps 7] [--peer-ms 1.033,2.5,4.3] [--flop-per-cycle 32]

A forward pass of (batch, timesteps, features, units) is, at each step, one product
`[h | x_t] [W; U]` of the batch's rows (`forward_flops`) and the gate arithmetic on
batch x units numbers: the fused loops' step (`unrolled.kernels._numba_loops`), each core
running its block of rows. Both parts are measured here on one thread, each in a compiled loop
of many repeats on the same arrays (warm caches, no call, no thread hand-off), the fastest of
`--reps` samples (a floor: the host's quiet moments):

- the step product, the loops' own (`_numba_panels.panel_product`), at the rows a core takes a
  product at a time (the batch shared between the cores, at most `FUSED_ROWS` a product);
- the gate arithmetic, the cell's own block function (`_lstm_block`, `_gru_block`,
  `_tanh_rows`), per unit.

**Floor**: the call's product and arithmetic at those rates, shared evenly between the cores,
with nothing else. **Product at the cores' peak**: the call's multiply-adds alone at
`--flop-per-cycle` floating-point operations a cycle a core (32 by default: two 8-lane fused
multiply-add pipes, as on AMD Zen 2-4, whose AVX-512 runs on them, and Intel's client CPUs
since Haswell; 64 for Intel server CPUs with two 512-bit FMA units) at the clock measured from
a chain of dependent fused multiply-adds of 4 cycles each (their latency on AMD Zen 2-4 and
Intel since Skylake): no implementation that does the multiply-adds as such goes below it. The
product's rate is printed in operations a cycle too, against that figure.

unrolled's own time is the layer's call, back to back, the median of `--reps` samples, as
`bench.py` takes it; on a noisy host the two drift apart (RESULTS.md, round 34). With `--peer-ms`
(one time a point, in order, from `bench.py`'s run: the fastest peer's), it prints what "twice
as fast as the fastest peer" asks for, against the floor and the peak.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Callable

import numpy as np

# benchmarks/ is on the path: the script's directory
from bench import (
    CELLS,
    GATES,
    check_reps,
    forward_flops,
    parse_cells,
    parse_shapes,
    unrolled_weights,
)

FLOP_PER_CYCLE = 32     # a core: two 8-lane FMA pipes, 2 operations a lane (see above)
FMA_LATENCY = 4         # cycles, AMD Zen 2-4 and Intel since Skylake
SAMPLE_SECONDS = 0.02


def floor_seconds(flops: float, units: int, product_rate: float, unit_seconds: float,
                  cores: int) -> float:
    """The product's `flops` at `product_rate` (FLOP/s, one core) and the arithmetic on `units`
    numbers at `unit_seconds` each (one core), shared evenly between `cores`."""
    return (flops / product_rate + units * unit_seconds) / cores


def product_rows(batch: int, n_cores: int) -> int:
    """The rows of one step product in the fused loops: the batch shared between the cores, at
    most FUSED_ROWS a product."""
    from unrolled.kernels._numba_loops import FUSED_ROWS

    return min(-(-batch // n_cores), FUSED_ROWS)


def peak_seconds(flops: float, clock: float, cores: int,
                 per_cycle: float = FLOP_PER_CYCLE) -> float:
    """`flops` at `per_cycle` operations a cycle of `clock` Hz on each of `cores` cores."""
    return flops / (per_cycle * clock * cores)


def _best(fn: Callable[[int], object], repeats: int, reps: int) -> float:
    """Seconds per repeat: the fastest of `reps` samples of `fn(repeats)`."""
    fn(1)
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        fn(repeats)
        best = min(best, (time.perf_counter() - start) / repeats)
    return best


def _repeats(fn: Callable[[int], object]) -> int:
    fn(1)
    start = time.perf_counter()
    fn(10)
    once = (time.perf_counter() - start) / 10
    return max(1, int(SAMPLE_SECONDS / max(once, 1e-9)))


def _drivers() -> dict[str, Callable]:
    """The compiled loops that repeat one product or one block of gate arithmetic."""
    import numba

    from unrolled.kernels import _numba_loops, _numba_panels

    product = _numba_panels.panel_product
    lstm_block, gru_block = _numba_loops._lstm_block, _numba_loops._gru_block
    tanh_rows = _numba_loops._tanh_rows

    @numba.njit(nogil=True)
    def products(a, panels, out, n):
        for _ in range(n):
            product(a, panels, out)

    @numba.njit(nogil=True)
    def lstm(z, bias, c, hx, out, mask, n):
        for _ in range(n):
            lstm_block(z, bias, c, hx, out, 0, mask, False, 0, 0)

    @numba.njit(nogil=True)
    def gru(zr, hW, xU, b_zr, b_in, b_rec, hx, out, mask, n):
        for _ in range(n):
            gru_block(zr, hW, xU, b_zr, b_in, b_rec, hx, out, 0, mask, False, 0, 0)

    @numba.njit(nogil=True)
    def simple_rnn(out, bias, hx, mask, n):
        for _ in range(n):
            tanh_rows(out, bias, hx, mask, False, 0, 0)

    @numba.njit(fastmath={"contract"})
    def chain(x, a, b, n):
        for _ in range(n):
            x = x * a + b
        return x

    return {"product": products, "lstm": lstm, "gru": gru, "simple_rnn": simple_rnn,
            "chain": chain}


def clock_hz(drivers: dict, reps: int) -> float:
    """The core's clock, from a chain of dependent fused multiply-adds (FMA_LATENCY each)."""
    chain = drivers["chain"]
    n = 20_000_000
    seconds = _best(lambda m: chain(np.float64(1.0), np.float64(0.999), np.float64(1e-3), m * n),
                    1, reps)
    return FMA_LATENCY * n / seconds


def product_rate(drivers: dict, rows: int, K: int, N: int, reps: int) -> float:
    """FLOP/s of the loops' panel product `(rows, K) @ (K, N)` on one thread."""
    from unrolled.kernels import _numba_panels

    rng = np.random.default_rng(0)
    a = rng.standard_normal((rows, K), dtype=np.float32)
    panels = _numba_panels.packed(rng.standard_normal((K, N), dtype=np.float32))
    out = np.empty((rows, N), dtype=np.float32)
    run = drivers["product"]
    seconds = _best(lambda n: run(a, panels, out, n), _repeats(lambda n: run(a, panels, out, n)),
                    reps)
    return 2.0 * rows * K * N / seconds


def unit_seconds(drivers: dict, cell: str, rows: int, units: int, reps: int) -> float:
    """Seconds of one unit's gate arithmetic on one thread: the cell's block function on
    `rows` rows by a block of units (at most the loops' GATE_UNITS)."""
    from unrolled.kernels._numba_loops import GATE_UNITS

    n = min(units, GATE_UNITS)
    rng = np.random.default_rng(0)
    mask = np.ones((1, 1), dtype=np.bool_)

    def arr(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.5).astype(np.float32)

    hx, out = arr(rows, n), arr(rows, n)
    if cell == "lstm":
        z, bias, c = arr(rows, 4 * n), arr(4 * n), arr(rows, n)
        run = lambda m: drivers["lstm"](z, bias, c, hx, out, mask, m)  # noqa: E731
    elif cell == "gru":
        zr, hW, xU = arr(rows, 2 * n), arr(rows, n), arr(rows, n)
        b_zr, b_in, b_rec = arr(2 * n), arr(3 * n), arr(3 * n)
        run = lambda m: drivers["gru"](zr, hW, xU, b_zr, b_in, b_rec, hx, out, mask, m)  # noqa
    else:
        bias = arr(n)
        run = lambda m: drivers["simple_rnn"](out, bias, hx, mask, m)  # noqa: E731
    return _best(run, _repeats(run), reps) / (rows * n)


def layer_seconds(cell: str, shape: tuple, reps: int) -> float:
    """unrolled's layer call, back to back: the median of `reps` samples (after the calls that
    settle its thread choice)."""
    layer, _ = unrolled_weights(cell, shape)
    x = np.random.default_rng(1).standard_normal(shape[:3], dtype=np.float32)
    for _ in range(20):
        layer(x)
    calls = _repeats(lambda n: [layer(x) for _ in range(n)])
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        for _ in range(calls):
            layer(x)
        samples.append((time.perf_counter() - start) / calls)
    return statistics.median(samples)


def run(cells: list[str], shapes: list[tuple], reps: int, peer_ms: list[float] | None = None,
        out: Callable[[str], None] = print, per_cycle: float = FLOP_PER_CYCLE) -> list[dict]:
    """One row a point (cells x shapes, in that order), printed as a table; returned too."""
    points = [(cell, shape) for cell in cells for shape in shapes]
    if peer_ms is not None and len(peer_ms) != len(points):
        raise SystemExit(f"--peer-ms: expected {len(points)} times (one a point: cells x "
                         f"shapes), got {len(peer_ms)}")
    from unrolled.kernels._threads import cores

    n_cores = cores()
    drivers = _drivers()
    clock = clock_hz(drivers, reps)
    out(f"cores: {n_cores}; clock from a chain of FMAs ({FMA_LATENCY} cycles each): "
        f"{clock / 1e9:.2f} GHz; peak {per_cycle:g} FLOP a cycle a core: "
        f"{per_cycle * clock * n_cores / 1e9:.1f} GFLOP/s in all")
    rows_out = []
    for i, (cell, shape) in enumerate(points):
        batch, steps, features, units = shape
        rows = product_rows(batch, n_cores)
        flops = forward_flops(cell, shape)
        rate = product_rate(drivers, rows, units + features, GATES[cell] * units, reps)
        per_unit = unit_seconds(drivers, cell, rows, units, reps)
        floor = floor_seconds(flops, batch * steps * units, rate, per_unit, n_cores)
        peak = peak_seconds(flops, clock, n_cores, per_cycle)
        mine = layer_seconds(cell, shape, reps)
        row = {"cell": cell, "shape": shape, "rows": rows, "rate": rate,
               "per_cycle": rate / clock, "per_unit": per_unit, "floor": floor, "peak": peak,
               "unrolled": mine, "peer": None if peer_ms is None else peer_ms[i] / 1e3}
        rows_out.append(row)
    _table(rows_out, out)
    return rows_out


def _table(rows: list[dict], out: Callable[[str], None]) -> None:
    peer = rows and rows[0]["peer"] is not None
    head = ("| cell | shape | product (rows a product) GFLOP/s, 1 thread | FLOP a cycle "
            "| gate arithmetic ns a unit, 1 thread | floor ms | product at the peak ms "
            "| unrolled ms | unrolled / floor |")
    if peer:
        head += " fastest peer ms | 2x asks ms | 2x / floor | 2x / product at the peak |"
    out(head)
    out("|" + "---|" * (head.count("|") - 1))
    for r in rows:
        line = (f"| {r['cell']} | {r['shape']} | {r['rate'] / 1e9:.1f} ({r['rows']}) "
                f"| {r['per_cycle']:.1f} | {r['per_unit'] * 1e9:.2f} | {r['floor'] * 1e3:.3f} "
                f"| {r['peak'] * 1e3:.3f} | {r['unrolled'] * 1e3:.3f} "
                f"| {r['unrolled'] / r['floor']:.2f} |")
        if peer:
            asks = r["peer"] / 2
            line += (f" {r['peer'] * 1e3:.3f} | {asks * 1e3:.3f} | {asks / r['floor']:.2f} "
                     f"| {asks / r['peak']:.2f} |")
        out(line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="lstm,gru,simple_rnn", type=parse_cells,
                        help=f"comma-separated, from {', '.join(CELLS)}")
    parser.add_argument("--shapes", default="32x100x16x64", type=parse_shapes,
                        help="comma-separated batch x timesteps x features x units")
    parser.add_argument("--reps", type=int, default=7, help="samples of each measurement")
    parser.add_argument("--peer-ms", default=None,
                        help="the fastest peer's milliseconds at each point, comma-separated")
    parser.add_argument("--flop-per-cycle", type=float, default=FLOP_PER_CYCLE,
                        help="a core's floating-point operations a cycle at its peak")
    args = parser.parse_args(argv)
    check_reps(args.reps)
    if not args.flop_per_cycle > 0:
        raise SystemExit(f"--flop-per-cycle: expected a positive number, got "
                         f"{args.flop_per_cycle:g}")
    peer = None
    if args.peer_ms is not None:
        try:
            peer = [float(t) for t in args.peer_ms.split(",")]
        except ValueError:
            raise SystemExit(f"--peer-ms: expected milliseconds separated by commas, e.g. "
                             f"1.033,2.5, got {args.peer_ms!r}") from None
        if any(not t > 0 for t in peer):
            raise SystemExit(f"--peer-ms: expected positive milliseconds, got {args.peer_ms!r}")
    run(args.cells, args.shapes, args.reps, peer, per_cycle=args.flop_per_cycle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
