"""A generator's loop: a recurrent layer called one step at a time, its state fed back, against
PyTorch and onnxruntime, interleaved.

    python benchmarks/steps.py [--cells lstm,gru,simple_rnn] [--shapes 1x100x32x1024,...]
                               [--peers unrolled,torch,onnxruntime] [--quick] [--reps N]

`bench.py` times a whole sequence in one call. A model that generates (samples a symbol, feeds
it back) or serves a stream calls its recurrent layer once a step instead, with the state of the
call before. Here a shape `(batch, steps, features, units)` is `steps` calls of one step each,
timed together as one loop:

- unrolled: `layer(x[:, t:t + 1], initial_state=states)` on a layer with `return_state=True`,
  the states it returns given to the next call.
- torch: `module(x[:, t:t + 1], hx)` under `inference_mode`, its returned state fed back.
  Default thread count and one thread, both sampled in the rotation, the faster one's median
  kept (as bench.py).
- onnxruntime: the ONNX RNN/LSTM/GRU node of one step, with `initial_h` (and `initial_c`) as
  inputs and `Y_h` (and `Y_c`) as outputs, one `run` a step; its threads told to stop spinning
  after each run (as bench.py).

Each loop keeps every step's output and returns them as one (batch, steps, units) array, checked
against unrolled's whole-sequence call (largest difference at most 1e-4) before timing. Timing
is bench.py's round-robin samples (a sample is one loop, or as many as last 20 ms), rotating the
order, with `bench.BLAS_IDLE` seconds of sleep before and after every sample: after a product
on two threads OpenBLAS's threads spin for about 0.1 s, and torch's and onnxruntime's for a
while too, on the CPU the next peer's sample needs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from typing import Any, Callable

import numpy as np

import bench  # benchmarks/bench.py: the weights, the peers' conversions, the timing loop

PEERS = ["unrolled", "torch", "onnxruntime"]
SHAPES = [(1, 100, 32, 1024), (4, 100, 32, 512), (1, 100, 64, 256)]


def make_unrolled(cell: str, shape: tuple, weights: list) -> Callable:
    from unrolled import layers

    batch, steps, features, units = shape
    make = {"simple_rnn": layers.SimpleRNN, "lstm": layers.LSTM, "gru": layers.GRU}[cell]
    layer = make(units, return_sequences=True, return_state=True)
    layer.build((batch, 1, features))
    layer.set_weights(weights)

    def run(x):
        states, outputs = None, []
        for t in range(x.shape[1]):
            out, *states = layer(x[:, t:t + 1], initial_state=states)
            outputs.append(out)
        return np.concatenate(outputs, axis=1)

    return run


def make_torch(cell: str, shape: tuple, weights: list) -> Callable:
    import torch

    module = bench.make_torch(cell, shape, weights, None, module_only=True)
    module.eval()

    def run(x):
        with torch.inference_mode():
            xs, state, outputs = torch.from_numpy(x), None, []
            for t in range(x.shape[1]):
                out, state = module(xs[:, t:t + 1], state)
                outputs.append(out)
            return torch.cat(outputs, dim=1).numpy()

    return run


def make_onnxruntime(cell: str, shape: tuple, weights: list) -> Callable:
    from onnx import TensorProto, helper, numpy_helper

    batch, steps, features, units = shape
    op, W, R, B, attrs = bench.onnx_recurrent(cell, *weights)
    inits = [numpy_helper.from_array(np.ascontiguousarray(a[None]).astype("float32"), name)
             for a, name in ((W, "W"), (R, "R"), (B, "B"))]
    carried = ["h", "c"] if cell == "lstm" else ["h"]
    node = helper.make_node(op, ["X", "W", "R", "B", "", *(f"initial_{s}" for s in carried)],
                            ["Y", *(f"Y_{s}" for s in carried)], **attrs)

    def tensor(name: str, dims: list) -> Any:
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)

    state_dims = [1, batch, units]
    graph = helper.make_graph(
        [node], "step",
        [tensor("X", [1, batch, features]), *(tensor(f"initial_{s}", state_dims) for s in carried)],
        [tensor("Y", [1, 1, batch, units]), *(tensor(f"Y_{s}", state_dims) for s in carried)],
        inits)
    session = bench.onnx_session(graph)

    def run(x):
        state = [np.zeros(state_dims, dtype=np.float32) for _ in carried]
        outputs = []
        for t in range(x.shape[1]):
            feeds = {"X": np.ascontiguousarray(x[:, t:t + 1].transpose(1, 0, 2))}
            feeds.update((f"initial_{s}", v) for s, v in zip(carried, state))
            y, *state = session.run(None, feeds)
            outputs.append(y[0, 0])
        return np.stack(outputs, axis=1)

    return run


MAKERS = {"unrolled": make_unrolled, "torch": make_torch, "onnxruntime": make_onnxruntime}


def run(cells: list[str], shapes: list[tuple], peers: list[str], quick: bool,
        reps: int | None, out: Callable[[str], None] = print) -> list[dict]:
    budget, least, most = (1.0, 2, 10) if quick else (4.0, 3, 200)
    if reps is not None:
        least, most = reps, max(most, reps)
    out("# unrolled benchmark: one step a call, the state fed back (a generator's loop)")
    for line in bench.machine() + bench.versions():
        out(f"- {line}")
    rows, skipped = [], {}
    for cell in cells:
        for shape in shapes:
            whole, weights = bench.unrolled_weights(cell, shape)
            x = np.random.default_rng(1).standard_normal(shape[:3]).astype("float32")
            reference = np.asarray(whole(x))                   # the whole sequence in one call
            fns, notes = {}, {}
            for peer in peers:
                try:
                    fn = MAKERS[peer](cell, shape, weights)
                    err = float(np.max(np.abs(fn(x) - reference)))
                    if err > 1e-4:
                        raise RuntimeError(f"outputs differ from unrolled's whole-sequence "
                                           f"call by {err:.2g}")
                    notes[f"{peer} max|diff|"] = f"{err:.1e}"
                    fns.update(bench.torch_settings(fn) if peer == "torch" else {peer: fn})
                    for _ in range(bench.SETTLE_CALLS):               # unrolled's thread choices
                        fn(x)
                except Exception as error:  # noqa: BLE001 - a missing peer is reported
                    skipped[peer] = f"{type(error).__name__}: {error}"
            if "unrolled" not in fns:
                raise SystemExit(f"unrolled failed at {cell} {shape}: {skipped['unrolled']}")
            times = bench.interleaved(fns, x, budget, least, most,
                                      pause_around={name: bench.BLAS_IDLE for name in fns})
            bench.keep_faster_torch(times, notes)
            medians = {p: statistics.median(t) for p, t in times.items()}
            fastest = min((t for p, t in medians.items() if p != "unrolled"), default=None)
            row = {"cell": cell, "shape": shape, "medians": medians, "fastest_peer": fastest,
                   "reps": len(times["unrolled"]), "notes": notes}
            rows.append(row)
            out(f"{cell} {shape}: " + ", ".join(f"{p} {t * 1e3:.3f} ms" for p, t in
                                               medians.items())
                + (f", unrolled / fastest peer = {medians['unrolled'] / fastest:.2f}"
                   if fastest else "") + f", {row['reps']} reps"
                + (f"; torch on {notes['torch']}" if "torch" in notes else ""))
    for peer, why in skipped.items():
        out(f"skipped {peer}: {why}")
    return rows


def report_table(rows: list[dict], out: Callable[[str], None] = print) -> None:
    peers = [p for p in PEERS if any(p in r["medians"] for r in rows)]
    out("\n| cell | shape (B,T,F,U) | " + " | ".join(f"{p} ms" for p in peers)
        + " | unrolled us a step | unrolled / fastest peer | unrolled / torch |")
    out("|---|---|" + "---|" * len(peers) + "---|---|---|")
    for r in rows:
        m = r["medians"]
        cells = [f"{m[p] * 1e3:.3f}" if p in m else "-" for p in peers]
        ratio = f"{m['unrolled'] / r['fastest_peer']:.2f}" if r["fastest_peer"] else "-"
        to_torch = f"{m['unrolled'] / m['torch']:.2f}" if "torch" in m else "-"
        out(f"| {r['cell']} | {r['shape']} | " + " | ".join(cells)
            + f" | {m['unrolled'] / r['shape'][1] * 1e6:.1f} | {ratio} | {to_torch} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/steps.py",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", default=",".join(bench.CELLS), help="simple_rnn,lstm,gru")
    parser.add_argument("--shapes", default=",".join("x".join(map(str, s)) for s in SHAPES),
                        help="batch x steps x features x units, comma-separated")
    parser.add_argument("--peers", default=",".join(PEERS), help=",".join(PEERS))
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--reps", type=int, default=None,
                        help="at least this many samples of each peer (default: 3, --quick 2)")
    args = parser.parse_args(argv)
    bench.check_reps(args.reps)
    report_table(run(bench.parse_cells(args.cells), bench.parse_shapes(args.shapes),
                     bench.parse_peers(args.peers, PEERS), args.quick, args.reps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
