"""What a new machine pays on a layer's first call: the compiled loops compiling, from nothing.

    PYTHONPATH=src python benchmarks/first_call.py [--cells lstm,gru] [--shapes 32x100x16x64]
        [--mode forward|train] [--after CELL:SHAPE] [--warmup]

Each point runs in a fresh process with an empty Numba cache directory of its own
(`NUMBA_CACHE_DIR`), as a new install or CI's fresh checkout runs it: the seconds of the
layer's first call (Numba's import, the compiled loops' modules' import and every compile they
trigger), of its second call, and the step products it compiled
(`unrolled.kernels._numba_panels`, compiled at their first look-up). `--mode train` times a
model of that one layer instead, its first and second `train_on_batch` (SGD, MSE). With
`--after`, each point's process first calls a layer of that cell at the shape given, so the
figure is what the point adds to a process that has compiled that much already. With
`--warmup`, `python -m unrolled warmup` first runs for the point into that empty cache (its
seconds in a column of their own), so the figures are a warmed machine's.

The process also times calls 3 to 7 (the thread choice's first tries of the other forms, which
compile those forms' loops) and counts what Numba compiled in it: each function's signatures
compiled, not loaded from the cache (its cache misses, through `unrolled.kernels.warmup`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

# benchmarks/ is on the path: the script's directory
from bench import CELLS, parse_cells, parse_shapes

CODE = r'''
import json, sys, time
import numpy as np
from unrolled import layers

make = {"simple_rnn": layers.SimpleRNN, "lstm": layers.LSTM, "gru": layers.GRU}
spec = json.loads(sys.argv[1])
for cell, shape in spec["before"]:
    make[cell](shape[3])(np.ones(shape[:3], "float32"))
cell, shape = spec["point"]
x = np.ones(shape[:3], "float32")
if spec["mode"] == "train":
    from unrolled import models
    model = models.Sequential([layers.Input(shape[1:3]), make[cell](shape[3])])
    model.compile(optimizer="sgd", loss="mse")
    y = np.ones((shape[0], shape[3]), "float32")
    call = lambda: model.train_on_batch(x, y)
else:
    layer = make[cell](shape[3], return_sequences=True)
    call = lambda: layer(x)
start = time.perf_counter()
call()
first = time.perf_counter() - start
start = time.perf_counter()
call()
second = time.perf_counter() - start
start = time.perf_counter()
for _ in range(5):  # the thread choice's tries of the other forms (unrolled.kernels._threads)
    call()
rest = time.perf_counter() - start
from unrolled.kernels import _numba_panels, warmup  # after the calls: the first call imports it
products = sorted(n for n in _numba_panels._SIGNATURES if n in vars(_numba_panels))
compiled = sum(misses for misses, _ in warmup._counts().values())
print(json.dumps({"first": first, "second": second, "rest": rest, "products": products,
                  "compiled": compiled}))
'''


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default=",".join(CELLS))
    parser.add_argument("--shapes", default="4x5x1x2,32x100x16x64")
    parser.add_argument("--mode", choices=("forward", "train"), default="forward")
    parser.add_argument("--after", default=None, metavar="CELL:SHAPE",
                        help="call this layer first in each process, e.g. lstm:32x100x16x64")
    parser.add_argument("--warmup", action="store_true",
                        help="run `python -m unrolled warmup` for the point (with --train in "
                             "train mode) into the empty cache first")
    args = parser.parse_args(argv)
    before = []
    if args.after:
        cell, _, shape = args.after.partition(":")
        if cell not in CELLS or not shape:
            raise SystemExit(f"--after: expected CELL:SHAPE such as lstm:32x100x16x64, with CELL "
                             f"one of {', '.join(CELLS)}, got {args.after!r}")
        before = [(cell, list(parse_shapes(shape)[0]))]
    cells, shapes = parse_cells(args.cells), [list(s) for s in parse_shapes(args.shapes)]
    print("| cell | shape | warm-up s | first call s | second call s | calls 3-7 s | "
          "compiles in the process (signatures) | step products looked up |")
    print("|---|---|---|---|---|---|---|---|")
    for cell in cells:
        for shape in shapes:
            with tempfile.TemporaryDirectory(prefix="unrolled-numba-cache-") as cache:
                env = {**os.environ, "NUMBA_CACHE_DIR": cache}
                warmed = "-"
                if args.warmup:
                    command = [sys.executable, "-m", "unrolled", "warmup", "--cells", cell,
                               "--shapes", "x".join(map(str, shape))]
                    start = time.perf_counter()
                    done = subprocess.run(command + ["--train"] * (args.mode == "train"),
                                          env=env, capture_output=True, text=True)
                    warmed = f"{time.perf_counter() - start:.1f}"
                    if done.returncode != 0:
                        raise SystemExit(f"{cell} {tuple(shape)}: the warm-up failed:\n"
                                         f"{done.stderr}")
                spec = json.dumps({"point": (cell, shape), "before": before,
                                   "mode": args.mode})
                done = subprocess.run([sys.executable, "-c", CODE, spec], env=env,
                                      capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"{cell} {tuple(shape)}: the process failed:\n{done.stderr}")
            found = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"| {cell} | {tuple(shape)} | {warmed} | {found['first']:.2f} | "
                  f"{found['second']:.4f} | {found['rest']:.3f} | {found['compiled']} | "
                  f"{', '.join(found['products']) or 'none'} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
