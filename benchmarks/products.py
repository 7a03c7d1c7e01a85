"""The step product alone: unrolled's panel product against OpenBLAS, one thread each.

    python benchmarks/products.py [--reps 7]

A recurrent step multiplies `(rows, K) @ (K, N)`; these are the shapes of the benchmark grid's
steps (rows: a batch or half of one, as the row blocks run it). Each sample is 0.2 GFLOP of
back-to-back calls; the two run alternately and the best sample of each is reported, in
GFLOP/s. The panel product's packing (once per call in the compiled loops) is not timed.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

from unrolled.kernels import _numba_panels

SHAPES = [  # (M, K, N): what the step is
    (16, 80, 256, "LSTM (32, 100, 16, 64), half batch, h and x_t in one product"),
    (16, 80, 128, "GRU (32, 100, 16, 64), half batch, gates z and r from h and x_t"),
    (16, 80, 64, "SimpleRNN (32, 100, 16, 64), half batch, h and x_t in one product"),
    (64, 320, 1024, "LSTM (128, 200, 64, 256), half batch"),
    (64, 320, 512, "GRU (128, 200, 64, 256), half batch, gates z and r from h and x_t"),
    (64, 256, 256, "GRU (128, 200, 64, 256), half batch, the candidate's h W_h"),
    (128, 1024, 4096, "LSTM (256, 100, 256, 1024), half batch"),
]


def _sample(fn, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print("| step product (M, K) @ (K, N) | what | OpenBLAS 1 thread GFLOP/s "
          "| panel product GFLOP/s | ratio |")
    print("|---|---|---|---|---|")
    with threadpool_limits(1):
        for M, K, N, what in SHAPES:
            a = rng.standard_normal((M, K), dtype=np.float32)
            w = rng.standard_normal((K, N), dtype=np.float32)
            out = np.empty((M, N), dtype=np.float32)
            panels = _numba_panels.packed(w)
            flop = 2 * M * K * N
            calls = max(1, int(2e8 // flop))
            runs = {"blas": lambda: np.dot(a, w, out),
                    "panels": lambda: _numba_panels.panel_product(a, panels, out)}
            best = {name: float("inf") for name in runs}
            for fn in runs.values():
                fn()
            for _ in range(args.reps):
                for name, fn in runs.items():
                    best[name] = min(best[name], _sample(fn, calls))
            gf = {name: flop / t / 1e9 for name, t in best.items()}
            print(f"| ({M}, {K}) @ ({K}, {N}) | {what} | {gf['blas']:.1f} | {gf['panels']:.1f} "
                  f"| {gf['panels'] / gf['blas']:.2f} |")


if __name__ == "__main__":
    main()
