"""Two versions of unrolled side by side: each in a process of its own, sampled alternately.

    python benchmarks/ab.py BASE [NEW] [--cells lstm,gru] [--shapes 32x100x16x64] [--rounds 15]
                            [--mode train|steps]

BASE and NEW are git revisions of this repository (NEW defaults to the working tree). Each is
exported (`git archive`) into a temporary directory, and a worker process imports unrolled from
there, builds the same layers with the same weights and input, and warms them up; its compiled
loops are compiled into that copy's own Numba cache the first time. The driver then asks the
workers for samples in turn, swapping which goes first every round: one worker runs while the
other waits on its pipe, so they never share the cores. A sample is as many back-to-back calls
as fill about 20 ms (the same count for both), timed as one.

It reports each point's median seconds a call, NEW's median over BASE's, the range of the
per-round ratios, and the largest difference between the two outputs (0 when the numbers are
the same to the bit). `--mode train` times one training step instead, as `bench.py --mode
train` does (`Sequential([Input, layer])`, MSE, SGD(0.01), `train_on_batch`), and what is
compared is a fresh copy's weights after one step from the starting weights, not the outputs
after the hundreds of steps timed. Even one step is no measure where the starting weights (0.3
standard deviation) make the layer chaotic: at SimpleRNN (32, 100, 16, 64) one step's weights
from the training kernel and from the readable reference differ by up to 3.0, against 7e-9
with weights of 0.1 standard deviation, and at (256, 100, 256, 1024) the gradients explode (two
versions 1.7e7 apart for LSTM, where with weights of 0.02 they were 1.9e-9 apart). `--mode
steps` times a generator's loop instead, as `steps.py` does: the layer called one step at a
time, each call given the states the one before returned, all the steps timed as one call. Both
versions run with their own thread choice (unrolled.kernels._threads) unless `--threads one`,
`all`, `rows` or `units` forces it where the call offers it.

Two versions in one process, or one copied aside, share one thread pool, one BLAS and one set
of loaded loops, and a measured difference can come from that rather than from the code.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

# benchmarks/ is on the path: the script's directory
from bench import CELLS, SAMPLE_IDLE, parse_cells, parse_shapes

ROOT = pathlib.Path(__file__).resolve().parents[1]

WORKER = r'''
import json, sys, time
import numpy as np
import unrolled
from unrolled import layers, optimizers
from unrolled.kernels import _threads

spec = json.loads(sys.argv[1])
if spec["threads"] != "auto":
    _pick = _threads.ThreadChoice.pick

    def pick(self, _forced=spec["threads"]):
        chosen = _pick(self)
        return _forced if _forced in self.times else chosen   # where that setting is offered

    _threads.ThreadChoice.pick = pick
make = {"simple_rnn": layers.SimpleRNN, "lstm": layers.LSTM, "gru": layers.GRU}
points = []


def make_layer(cell, shape):
    batch, steps, features, units = shape
    layer = make[cell](units, return_sequences=True, return_state=spec["mode"] == "steps",
                       seed=0)
    layer.build((batch, steps, features))
    rng = np.random.default_rng(0)
    weights = [(rng.standard_normal(w.shape) * 0.3).astype("float32")
               for w in layer.get_weights()]
    layer.set_weights(weights)
    if spec["mode"] == "steps":
        def generate(x):
            states, outputs = None, []
            for t in range(x.shape[1]):
                out, *states = layer(x[:, t:t + 1], initial_state=states)
                outputs.append(out)
            return np.concatenate(outputs, axis=1)

        return layer, generate
    if spec["mode"] != "train":
        return layer, lambda x: layer(x)
    model = unrolled.Sequential([unrolled.Input((steps, features)), layer])
    model.compile(optimizers.SGD(0.01), "mse")
    y = np.random.default_rng(2).standard_normal((batch, steps, units)).astype("float32")
    return layer, lambda x: model.train_on_batch(x, y)


for cell, shape in spec["points"]:
    layer, step = make_layer(cell, shape)
    x = np.random.default_rng(1).standard_normal(tuple(shape[:3])).astype("float32")
    call = lambda step=step, x=x: step(x)
    for _ in range(20):
        call()
    points.append((cell, shape, layer, x, call))
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    order = json.loads(line)
    cell, shape, layer, x, call = points[order["point"]]
    if order["what"] == "output":
        if spec["mode"] == "train":                 # the weights after one step
            layer, step = make_layer(cell, shape)
            step(x)
            np.save(order["path"], np.concatenate([w.ravel() for w in layer.get_weights()]))
        else:
            np.save(order["path"], call())
        print(json.dumps({"saved": True}), flush=True)
        continue
    calls = order["calls"]
    start = time.perf_counter()
    for _ in range(calls):
        call()
    print(json.dumps({"seconds": (time.perf_counter() - start) / calls}), flush=True)
'''


class Worker:
    """One version's process: `sample(point, calls)` seconds a call, `output(point, path)`."""

    def __init__(self, source: pathlib.Path, points: list, threads: str, mode: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(source)}
        spec = json.dumps({"points": points, "threads": threads, "mode": mode})
        self.process = subprocess.Popen([sys.executable, "-c", WORKER, spec], env=env,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._read()

    def _read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"a worker ended (exit status {self.process.wait()})")
        return json.loads(line)

    def _ask(self, **order) -> dict:
        self.process.stdin.write(json.dumps(order) + "\n")
        self.process.stdin.flush()
        return self._read()

    def sample(self, point: int, calls: int) -> float:
        return self._ask(what="sample", point=point, calls=calls)["seconds"]

    def output(self, point: int, path: str) -> None:
        self._ask(what="output", point=point, path=path)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def export(revision: str | None, into: pathlib.Path) -> pathlib.Path:
    """The `src` directory of `revision` (None: the working tree's own)."""
    if revision is None:
        return ROOT / "src"
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision, "src"],
                             capture_output=True, check=False)
    if archive.returncode != 0:
        raise SystemExit(f"revision {revision!r}: git archive failed: "
                         f"{archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into / "src"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", help="git revision measured first (the denominator)")
    parser.add_argument("new", nargs="?", default=None,
                        help="git revision to compare (default: the working tree)")
    parser.add_argument("--cells", default=",".join(CELLS))
    parser.add_argument("--shapes", default="32x100x16x64")
    parser.add_argument("--rounds", type=int, default=15, help="samples of each version a point")
    parser.add_argument("--threads", choices=["auto", "one", "rows", "units", "all"],
                        default="auto")
    parser.add_argument("--mode", choices=["forward", "train", "steps"], default="forward",
                        help="forward (default), train (one SGD step) or steps (a generator's "
                             "loop, one step a call)")
    args = parser.parse_args(argv)
    cells = parse_cells(args.cells)
    if args.rounds < 1:
        raise SystemExit(f"--rounds: expected at least 1, got {args.rounds}")
    points = [(cell, list(shape)) for cell in cells for shape in parse_shapes(args.shapes)]
    with tempfile.TemporaryDirectory(prefix="unrolled-ab-") as tmp:
        base = Worker(export(args.base, pathlib.Path(tmp) / "base"), points, args.threads,
                      args.mode)
        new = Worker(export(args.new, pathlib.Path(tmp) / "new"), points, args.threads,
                     args.mode)
        print(f"| cell | shape | {args.base} ms | {args.new or 'working tree'} ms | new / base "
              f"| per-round range | max abs diff |")
        print("|---|---|---|---|---|---|---|")
        try:
            for i, (cell, shape) in enumerate(points):
                once = min(min(base.sample(i, 1), new.sample(i, 1)) for _ in range(3))
                calls = max(1, int(0.02 / max(once, 1e-7)))
                times: dict = {"base": [], "new": []}
                for r in range(args.rounds):
                    pair = [("base", base), ("new", new)]
                    for name, worker in (pair if r % 2 == 0 else pair[::-1]):
                        times[name].append(worker.sample(i, calls))
                        time.sleep(SAMPLE_IDLE)     # the worker's spinning threads stop
                ratios = [n / b for b, n in zip(times["base"], times["new"])]
                paths = [str(pathlib.Path(tmp) / f"{name}.npy") for name in ("base", "new")]
                base.output(i, paths[0])
                new.output(i, paths[1])
                diff = float(np.max(np.abs(np.load(paths[0]) - np.load(paths[1]))))
                b, n = statistics.median(times["base"]), statistics.median(times["new"])
                print(f"| {cell} | {tuple(shape)} | {b * 1e3:.4g} | {n * 1e3:.4g} | "
                      f"{n / b:.3f} | {min(ratios):.2f}-{max(ratios):.2f} | {diff:.1e} |",
                      flush=True)
        finally:
            base.close()
            new.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
