"""The two compiled loops side by side at small shapes: where the BLAS loop takes over.

    python benchmarks/loops.py [--reps 15]

A layer's forward pass runs the small-shape loop (plain loops, libm's activations one number at
a time) or the BLAS loop (vectorized activations, the panel product, a few microseconds more per
call). For each cell and shape both run alternately on the same layer and input; each sample is
as many calls as fill about 20 ms, and the median sample is reported, in microseconds a call.
`call madds` is `batch * timesteps * (features + units) * gates * units`, what
`unrolled.kernels._numba.BLAS_MIN` is compared with; `picks` is what the shipped rule runs.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from unrolled import layers
from unrolled.kernels import _numba

SHAPES = [  # (batch, timesteps, features, units)
    (1, 5, 1, 2), (4, 5, 1, 2), (4, 5, 1, 4), (2, 100, 1, 2), (4, 20, 2, 4), (4, 5, 2, 8),
    (8, 10, 2, 4), (1, 100, 1, 8), (4, 10, 4, 16), (32, 5, 4, 8), (8, 100, 8, 32),
]
CELLS = {"simple_rnn": (layers.SimpleRNN, 1), "lstm": (layers.LSTM, 4), "gru": (layers.GRU, 3)}
FORCE = {"small": ({1: 1 << 60, 3: 1 << 60, 4: 1 << 60}, {1: 1 << 60, 3: 1 << 60, 4: 1 << 60}),
         "blas": ({1: -1, 3: -1, 4: -1}, {1: -1, 3: -1, 4: -1})}  # (WORK_MAX, BLAS_MIN)


def _sample(layer, x, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        layer(x)
    return (time.perf_counter() - start) / calls


def _forced(name: str) -> None:
    _numba.WORK_MAX, _numba.BLAS_MIN = (dict(d) for d in FORCE[name])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=15)
    args = parser.parse_args()
    shipped = dict(_numba.WORK_MAX), dict(_numba.BLAS_MIN)
    _numba.enabled = True
    rng = np.random.default_rng(0)
    print("| cell | shape (B,T,F,U) | call madds | small loop us | BLAS loop us | BLAS / small "
          "| picks |")
    print("|---|---|---|---|---|---|---|")
    for cell, (cls, gates) in CELLS.items():
        for B, T, F, U in SHAPES:
            x = rng.standard_normal((B, T, F)).astype(np.float32)
            runs, calls = {}, {}
            for name in FORCE:           # one layer a loop, the same weights: each keeps its plan
                _forced(name)
                runs[name] = cls(U, return_sequences=True)
                runs[name].build(x.shape)
                if name != "small":
                    runs[name].set_weights(runs["small"].get_weights())
                runs[name](x)                                   # compiles, makes the plan
                loop = runs[name]._plan.kernels[0].__qualname__
                assert loop.endswith("_blas") == (name == "blas"), (name, loop)
                calls[name] = max(1, int(0.02 / max(_sample(runs[name], x, 3), 1e-7)))
            times: dict[str, list[float]] = {name: [] for name in FORCE}
            for _ in range(args.reps):
                for name in FORCE:
                    _forced(name)
                    times[name].append(_sample(runs[name], x, calls[name]))
            small, blas = (float(np.median(times[name])) * 1e6 for name in FORCE)
            _numba.WORK_MAX, _numba.BLAS_MIN = shipped
            picks = _numba.loop_for(runs["small"].cell, B, T).__qualname__
            madds = B * T * (F + U) * gates * U
            print(f"| {cell} | ({B}, {T}, {F}, {U}) | {madds:,} | {small:.1f} | {blas:.1f} "
                  f"| {blas / small:.2f} | {'BLAS' if picks.endswith('_blas') else 'small'} |",
                  flush=True)
    _numba.WORK_MAX, _numba.BLAS_MIN = shipped


if __name__ == "__main__":
    main()
