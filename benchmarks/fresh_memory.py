"""What a large forward call pays for its output's fresh memory, against its products.

    python benchmarks/fresh_memory.py [--cell simple_rnn] [--shape 256x100x256x1024] [--reps 7]

At the largest benchmark point the output `(batch, timesteps, units)` is 105 MB. A layer takes
it from the output buffers it keeps between calls once the caller has dropped the previous
one (unrolled.kernels._outputs); with keeping off, every call allocates it anew. Each sample
round runs, interleaved, with short pauses:

- `layer`: `layer(x)`, the output dropped after each call, as the benchmark runs it (a kept
  buffer each call);
- `layer, keeping off`: the same with `UNROLLED_KEEP_OUTPUTS=0`'s behaviour, a fresh output
  each call;
- `loop, kept output`: the same compiled loop writing into one output buffer kept from call to
  call, so that its memory is already the process's;
- `products`: the loop's matrix products alone (a step's input projection and `h W`, 100 times,
  `np.matmul` into kept buffers), what the loop cannot do without;
- `sgemm 2048^3`: the product that sets the benchmark's matrix-multiply limit;
- `fresh output, touched`: `np.empty` of the output's size and one write of every number, after
  0.05 s and after 3 s since a buffer of that size was freed.

The limit is the point's FLOPs over the sgemm's median throughput, as in bench.py. Needs Numba
and SciPy (the compiled loops) and float32 BLAS-loop shapes (recurrent kernel above 2 MiB).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

SRC = Path(__file__).resolve().parent.parent / "src"
if SRC.is_dir() and str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

from bench import GATES, GEMM_N, forward_flops, gemm_call  # noqa: E402  (benchmarks/bench.py)
from unrolled import layers  # noqa: E402
from unrolled.kernels import _numba, _numba_loops, _outputs  # noqa: E402

MAKE = {"simple_rnn": layers.SimpleRNN, "lstm": layers.LSTM, "gru": layers.GRU}


def kept_loop(cell, gates: int, x: np.ndarray, seq: np.ndarray):
    """The layer's compiled BLAS loop over `x`, writing every step's h into `seq`."""
    B, T, F = x.shape
    xt = x.transpose(1, 0, 2)
    h0 = np.zeros((B, cell.units), dtype=np.float32)
    h, c = np.empty_like(h0), np.empty_like(h0)  # the final states
    mask = np.ones((1, 1), dtype=np.bool_)
    chunk = _numba._chunk(cell, B, gates, F)
    own = cell.recurrent_kernel.nbytes <= _numba.OWN_GEMM_BYTES
    panels = _numba_loops.no_panels()  # own (packed weights) is for smaller shapes than these
    stacked = None  # nor is `[W; U]` read in place (that is the fused loops')
    if gates == 1:
        bias = _numba._zeros_if_none(cell.bias, cell.units, np.float32)
        return lambda: _numba_loops.simple_rnn_blas(xt, cell.kernel, cell.recurrent_kernel, bias,
                                                    h0, mask, False, seq, True, chunk, own, panels,
                                                    stacked, h, 0, B)
    if gates == 4:
        bias = _numba._zeros_if_none(cell.bias, 4 * cell.units, np.float32)
        return lambda: _numba_loops.lstm_blas(xt, cell.kernel, cell.recurrent_kernel, bias, h0,
                                              h0, mask, False, seq, True, chunk, own, panels,
                                              stacked, h, c, 0, B)
    weights = _numba._gru_weights(cell)
    return lambda: _numba_loops.gru_blas(xt, *weights, h0, mask, False, cell.reset_after, seq,
                                         True, chunk, own, panels, stacked, h, 0, B)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", default="simple_rnn", choices=sorted(GATES))
    parser.add_argument("--shape", default="256x100x256x1024",
                        help="batch x timesteps x features x units")
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    B, T, F, U = (int(v) for v in args.shape.split("x"))
    g = GATES[args.cell]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, T, F), dtype=np.float32)
    layer = MAKE[args.cell](U, return_sequences=True)
    layer(x[:1])
    cell = layer.cell
    if _numba.loop_for(cell, B, T) is None or cell.recurrent_kernel.nbytes <= _numba.OWN_GEMM_BYTES:
        sys.exit("this shape does not run the BLAS loop with BLAS's step products "
                 "(needs Numba, SciPy, and a recurrent kernel above 2 MiB)")
    seq = np.empty((T, B, U), dtype=np.float32)
    loop = kept_loop(cell, g, x, seq)
    x_t = np.ascontiguousarray(x[:, 0])
    h = rng.standard_normal((B, U), dtype=np.float32) * 0.1
    P = np.empty((B, g * U), dtype=np.float32)
    hW = np.empty((B, g * U), dtype=np.float32)

    def products():
        for _ in range(T):
            np.matmul(x_t, cell.kernel, out=P)
            np.matmul(h, cell.recurrent_kernel, out=hW)

    sgemm_call, sgemm_flops = gemm_call()

    def touched(pause: float):
        def run():
            buffer = np.empty((B, T, U), dtype=np.float32)
            buffer.fill(1)
            del buffer
        run.pause = pause  # freed this long before the timed run
        return run

    def fresh_layer():
        keep, _outputs.KEEP = _outputs.KEEP, 0
        try:
            layer(x)
        finally:
            _outputs.KEEP = keep

    runs = {"layer": lambda: layer(x), "layer, keeping off": fresh_layer,
            "loop, kept output": loop, "products": products,
            f"sgemm {GEMM_N}^3": lambda: sgemm_call(None),
            "fresh output, touched 0.05 s after a free": touched(0.05),
            "fresh output, touched 3 s after a free": touched(3.0)}
    for fn in runs.values():  # warm-up: compiles, plans, the thread choice's first tries
        fn()
    for _ in range(6):
        layer(x)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for rep in range(args.reps):
        names = list(runs)
        names = names[rep % len(names):] + names[:rep % len(names)]
        for name in names:
            fn = runs[name]
            pause = getattr(fn, "pause", None)
            if pause is not None:
                freed = np.empty((B, T, U), dtype=np.float32)
                freed.fill(0)
                del freed
                time.sleep(pause)
            else:
                time.sleep(0.05)
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    flops = forward_flops(args.cell, (B, T, F, U))
    sgemm = sgemm_flops / statistics.median(times[f"sgemm {GEMM_N}^3"])
    limit = flops / sgemm
    print(f"{args.cell} {(B, T, F, U)}: output {B * T * U * 4 / 1e6:.0f} MB, "
          f"{flops / 1e9:.1f} GFLOP, sgemm {sgemm / 1e9:.1f} GFLOP/s (median), "
          f"limit {limit * 1e3:.0f} ms")
    print("| run | median ms | samples ms | limit / median |")
    print("|---|---|---|---|")
    for name, ts in times.items():
        median = statistics.median(ts)
        share = (f"{limit / median:.0%}" if name in ("layer", "layer, keeping off",
                                                     "loop, kept output", "products") else "")
        samples = " ".join(f"{t * 1e3:.0f}" for t in ts)
        print(f"| {name} | {median * 1e3:.0f} | {samples} | {share} |")


if __name__ == "__main__":
    main()
