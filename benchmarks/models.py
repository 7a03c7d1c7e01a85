"""Whole models, not single layers: unrolled against PyTorch and Keras on JAX, interleaved.

    python benchmarks/models.py [--models sentiment,char_lm,stacked_gru] [--quick] [--reps N]

`bench.py` times one recurrent layer. A user runs a model: an embedding before the recurrent
layer, a mask from padding, a bidirectional wrapper, a second recurrent layer, a dense head, a
loss and Adam. This script times three such models, each built once per peer with the same
weights, forward (`predict_on_batch` on one batch) and one training step (forward, loss,
backward, one Adam update):

- `sentiment`: ids (64, 200), right-padded to lengths 20-200 with id 0 ->
  `Embedding(20000, 64, mask_zero=True)` -> `Bidirectional(LSTM(64))` -> `Dense(1, sigmoid)`;
  binary cross-entropy. torch runs the padded batch as a packed sequence
  (`pack_padded_sequence`), which gives what Keras's mask gives.
- `char_lm`: ids (32, 100) of 64 symbols -> `Embedding(64, 32)` ->
  `LSTM(256, return_sequences=True)` -> `Dense(64)` (logits at every step); sparse categorical
  cross-entropy from logits.
- `stacked_gru`: float32 (64, 50, 8) -> `GRU(64, return_sequences=True)` -> `GRU(64)` ->
  `Dense(1)`; mean squared error.

Peers:

- unrolled: `model.predict_on_batch(x)`; `model.train_on_batch(x, y)` after
  `compile(Adam(1e-3), loss)`.
- torch: the same model as `torch.nn` modules (weights copied, gates reordered where torch's
  order differs), forward under `inference_mode`; a step is `zero_grad`, the loss, `backward`,
  `Adam(lr=1e-3, eps=1e-7).step()`. Default thread count and one thread, both sampled in the
  rotation, the faster one's median kept.
- keras-jax: the same Keras model; forward by `predict_on_batch` or a `jax.jit` of
  `stateless_call`, whichever was faster during warm-up; a step by `train_on_batch` (Keras
  compiles it with XLA).
- onnxruntime (forward only; it does not train): the model as an ONNX graph built with
  `onnx.helper` (Gather, the ONNX LSTM/GRU nodes, MatMul or Gemm), the padded batch's lengths
  given as the LSTM's `sequence_lens`, which skips the padding as torch's packed sequence does.
  Its threads are told to stop spinning after each run, as in bench.py.

Every peer's forward output is checked against unrolled's (largest difference at most 1e-4) and
its first step's loss against unrolled's first (relative difference at most 1e-4) before timing.
Timing is bench.py's: round-robin samples of about 20 ms each, 0.1 s for training steps
(rotating the order), medians, and ratios to the fastest peer and to torch.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from typing import Any, Callable

import numpy as np

import bench  # benchmarks/bench.py: the environment, the timing loop, the machine's description

PEERS = ["unrolled", "torch", "keras-jax", "onnxruntime"]
LEARNING_RATE = 1e-3
EPSILON = 1e-7  # Keras's Adam default; torch's is 1e-8


def _sentiment_data(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    batch, timesteps, vocabulary = 64, 200, 20000
    lengths = rng.integers(20, timesteps + 1, size=batch)
    ids = np.zeros((batch, timesteps), dtype="int32")
    for row, n in enumerate(lengths):
        ids[row, :n] = rng.integers(1, vocabulary, size=n)
    y = rng.integers(0, 2, size=(batch, 1)).astype("float32")
    return ids, y, lengths


MODELS: dict[str, dict[str, Any]] = {
    "sentiment": {
        "layers": lambda L: [L.Input(shape=(200,), dtype="int32"),
                             L.Embedding(20000, 64, mask_zero=True),
                             L.Bidirectional(L.LSTM(64)), L.Dense(1, activation="sigmoid")],
        "loss": "binary_crossentropy",
        "data": _sentiment_data,
        "summary": "ids (64, 200), lengths 20-200 -> Embedding(20000, 64, mask_zero) -> "
                   "Bidirectional(LSTM(64)) -> Dense(1, sigmoid)",
    },
    "char_lm": {
        "layers": lambda L: [L.Input(shape=(100,), dtype="int32"), L.Embedding(64, 32),
                             L.LSTM(256, return_sequences=True), L.Dense(64)],
        "loss": "sparse_categorical_crossentropy_logits",
        "data": lambda rng: (rng.integers(0, 64, size=(32, 100)).astype("int32"),
                             rng.integers(0, 64, size=(32, 100)).astype("int32"), None),
        "summary": "ids (32, 100) -> Embedding(64, 32) -> LSTM(256, return_sequences) -> "
                   "Dense(64) logits",
    },
    "stacked_gru": {
        "layers": lambda L: [L.Input(shape=(50, 8)), L.GRU(64, return_sequences=True),
                             L.GRU(64), L.Dense(1)],
        "loss": "mse",
        "data": lambda rng: (rng.standard_normal((64, 50, 8)).astype("float32"),
                             rng.standard_normal((64, 1)).astype("float32"), None),
        "summary": "x (64, 50, 8) -> GRU(64, return_sequences) -> GRU(64) -> Dense(1)",
    },
}


# ------------------------------------------------------------------------ the peers


def _loss(namespace: Any, name: str) -> Any:
    if name == "sparse_categorical_crossentropy_logits":
        return namespace.losses.SparseCategoricalCrossentropy(from_logits=True)
    return name


def make_unrolled(name: str) -> tuple[Any, Callable, Callable]:
    import unrolled
    from unrolled import layers, optimizers

    spec = MODELS[name]
    unrolled.utils.set_random_seed(0)
    model = unrolled.Sequential(spec["layers"](_Namespace(layers, unrolled.Input)))
    model.compile(optimizers.Adam(LEARNING_RATE, epsilon=EPSILON), _loss(unrolled, spec["loss"]))
    return (model, lambda x: model.predict_on_batch(x),
            lambda xy: float(model.train_on_batch(*xy)))


class _Namespace:
    """`layers` with `Input` beside them, so one description builds both libraries' models."""

    def __init__(self, layers: Any, make_input: Callable):
        self._layers, self.Input = layers, make_input

    def __getattr__(self, name: str) -> Any:
        return getattr(self._layers, name)


def make_keras(name: str, weights: list, note: dict) -> tuple[Callable, Callable]:
    import jax
    import keras

    if keras.backend.backend() != "jax":
        raise RuntimeError(f"Keras runs on {keras.backend.backend()}, not jax")
    spec = MODELS[name]
    model = keras.Sequential(spec["layers"](_Namespace(keras.layers, keras.Input)))
    model.set_weights(weights)
    model.compile(keras.optimizers.Adam(LEARNING_RATE, epsilon=EPSILON),
                  _loss(keras, spec["loss"]))
    jitted = jax.jit(lambda tv, ntv, x: model.stateless_call(tv, ntv, x)[0])

    def run_jit(x):
        return np.asarray(jitted([v.value for v in model.trainable_variables],
                                 [v.value for v in model.non_trainable_variables], x))

    def run_predict(x):
        return np.asarray(model.predict_on_batch(x))

    def forward(x):  # the faster route, picked at the first call
        if "keras-jax" not in note:
            best = float("inf")
            for route, fn in (("jax.jit(stateless_call)", run_jit),
                              ("predict_on_batch", run_predict)):
                fn(x)
                t = bench._median_time(fn, x, budget=0.3, most=10)
                if t < best:
                    best, note["keras-jax"], note["keras-jax fn"] = t, route, fn
        return note["keras-jax fn"](x)

    return forward, lambda xy: float(model.train_on_batch(*xy))


def _gru_blocks(a: np.ndarray, axis: int = 0) -> np.ndarray:
    """Keras's GRU gate blocks [z | r | h] in torch's order [r | z | n]."""
    z, r, h = np.split(a, 3, axis=axis)
    return np.concatenate([r, z, h], axis=axis)


def _torch_recurrent(module: Any, suffix: str, cell: str, kernel, recurrent, bias) -> None:
    import torch

    if cell == "gru":  # Keras's two bias rows (input, recurrent) are torch's b_ih, b_hh
        values = (_gru_blocks(kernel.T), _gru_blocks(recurrent.T), _gru_blocks(bias[0]),
                  _gru_blocks(bias[1]))
    else:  # LSTM: Keras's i, f, c, o are torch's i, f, g, o; one bias
        values = (kernel.T, recurrent.T, bias, np.zeros_like(bias))
    with torch.no_grad():
        for prefix, value in zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"), values):
            getattr(module, prefix + suffix).copy_(torch.from_numpy(np.ascontiguousarray(value)))


def make_torch(name: str, weights: list, lengths: Any) -> tuple[Callable, Callable]:
    import torch
    from torch import nn
    from torch.nn.utils.rnn import pack_padded_sequence

    def dense(w, b):
        layer = nn.Linear(*w.shape)
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(w.T)))
            layer.bias.copy_(torch.from_numpy(b))
        return layer

    def embedding(table):
        layer = nn.Embedding(*table.shape)
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(table))
        return layer

    if name == "sentiment":
        table, *lstm, w, b = weights
        rnn = nn.LSTM(table.shape[1], lstm[1].shape[0], batch_first=True, bidirectional=True)
        _torch_recurrent(rnn, "_l0", "lstm", *lstm[:3])
        _torch_recurrent(rnn, "_l0_reverse", "lstm", *lstm[3:])
        emb, head = embedding(table), dense(w, b)
        lengths_t = torch.from_numpy(np.asarray(lengths, dtype="int64"))

        def model(x):
            packed = pack_padded_sequence(emb(x), lengths_t, batch_first=True,
                                          enforce_sorted=False)
            _, (h, _) = rnn(packed)                               # h: (2, batch, units)
            return torch.sigmoid(head(torch.cat([h[0], h[1]], dim=1)))

        loss_fn = nn.functional.binary_cross_entropy
        modules = [emb, rnn, head]
    elif name == "char_lm":
        table, kernel, recurrent, bias, w, b = weights
        rnn = nn.LSTM(table.shape[1], recurrent.shape[0], batch_first=True)
        _torch_recurrent(rnn, "_l0", "lstm", kernel, recurrent, bias)
        emb, head = embedding(table), dense(w, b)

        def model(x):
            return head(rnn(emb(x))[0])

        def loss_fn(logits, y):
            return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))

        modules = [emb, rnn, head]
    else:  # stacked_gru
        *grus, w, b = weights
        rnn = nn.GRU(grus[0].shape[0], grus[1].shape[0], num_layers=2, batch_first=True)
        _torch_recurrent(rnn, "_l0", "gru", *grus[:3])
        _torch_recurrent(rnn, "_l1", "gru", *grus[3:])
        head = dense(w, b)

        def model(x):
            return head(rnn(x)[0][:, -1])

        loss_fn = nn.functional.mse_loss
        modules = [rnn, head]

    params = [p for m in modules for p in m.parameters()]
    opt = torch.optim.Adam(params, lr=LEARNING_RATE, eps=EPSILON)

    def as_input(x):
        return torch.from_numpy(x.astype("int64") if x.dtype.kind in "iu" else x)

    def forward(x):
        with torch.inference_mode():
            return model(as_input(x)).numpy()

    def step(xy):
        x, y = xy
        opt.zero_grad()
        loss = loss_fn(model(as_input(x)), as_input(y))
        loss.backward()
        opt.step()
        return loss.item()

    return forward, step


def make_onnxruntime(name: str, weights: list, lengths: Any) -> tuple[Callable, None]:
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []

    def const(array: np.ndarray, label: str) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array), label))
        return label

    def node(op: str, inputs: list, outputs: list, **attrs: Any) -> None:
        nodes.append(helper.make_node(op, inputs, outputs, **attrs))

    def recurrent(cell: str, directions: list, x: str, label: str, extra: list) -> None:
        """An ONNX LSTM/GRU node from Keras's weights, one (kernel, recurrent, bias) a
        direction: `label`_Y (T, dirs, B, U) and `label`_Yh (dirs, B, U)."""
        converted = [bench.onnx_recurrent(cell, *weights) for weights in directions]
        op, attrs = converted[0][0], converted[0][4]
        if len(directions) == 2:
            attrs["direction"] = "bidirectional"
        stacked = [np.stack([c[i] for c in converted]) for i in (1, 2, 3)]   # W, R, B
        node(op, [x, *(const(a, f"{label}_{n}") for a, n in zip(stacked, "WRB")), *extra],
             [label + "_Y", label + "_Yh"], **attrs)

    axes0, axes1 = const(np.array([0], "int64"), "axes0"), const(np.array([1], "int64"), "axes1")
    feeds: dict[str, Any] = {}
    if name in ("sentiment", "char_lm"):
        table = weights[0]
        inputs = [helper.make_tensor_value_info("ids", TensorProto.INT64, None)]
        node("Gather", [const(table, "table"), "ids"], ["emb"])                 # (B, T, E)
        node("Transpose", ["emb"], ["emb_t"], perm=[1, 0, 2])                  # (T, B, E)
    else:
        inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)]
        node("Transpose", ["x"], ["emb_t"], perm=[1, 0, 2])
    if name == "sentiment":
        _, *lstm, w, b = weights
        inputs.append(helper.make_tensor_value_info("lens", TensorProto.INT32, None))
        feeds["lens"] = np.asarray(lengths, dtype="int32")
        recurrent("lstm", [lstm[:3], lstm[3:]], "emb_t", "lstm", ["lens"])
        node("Transpose", ["lstm_Yh"], ["h_b"], perm=[1, 0, 2])               # (B, 2, U)
        node("Reshape", ["h_b", const(np.array([0, -1], "int64"), "flat")], ["h"])
        node("Gemm", ["h", const(w, "w"), const(b, "b")], ["z"])
        node("Sigmoid", ["z"], ["out"])
    elif name == "char_lm":
        _, kernel, rec, bias, w, b = weights
        recurrent("lstm", [(kernel, rec, bias)], "emb_t", "lstm", [])
        node("Squeeze", ["lstm_Y", axes1], ["seq_t"])                          # (T, B, U)
        node("Transpose", ["seq_t"], ["seq"], perm=[1, 0, 2])
        node("MatMul", ["seq", const(w, "w")], ["zw"])
        node("Add", ["zw", const(b, "b")], ["out"])                            # (B, T, V)
    else:  # stacked_gru
        *grus, w, b = weights
        recurrent("gru", [grus[:3]], "emb_t", "gru1", [])
        node("Squeeze", ["gru1_Y", axes1], ["seq1"])                           # (T, B, U)
        recurrent("gru", [grus[3:]], "seq1", "gru2", [])
        node("Squeeze", ["gru2_Yh", axes0], ["h"])                             # (B, U)
        node("Gemm", ["h", const(w, "w"), const(b, "b")], ["out"])
    graph = helper.make_graph(nodes, name, inputs,
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
                              inits)
    session = bench.onnx_session(graph)
    key = inputs[0].name

    def forward(x):
        return session.run(None, {key: x.astype("int64") if x.dtype.kind in "iu" else x,
                                  **feeds})[0]

    return forward, None


# ------------------------------------------------------------------------ the run


def run(names: list[str], peers: list[str], quick: bool, reps: int | None,
        out: Callable[[str], None] = print) -> list[dict]:
    budget, least, most = (0.5, 2, 10) if quick else (3.0, 3, 200)
    if reps is not None:
        least, most = reps, max(most, reps)
    out("# unrolled benchmark: whole models, forward (predict_on_batch) and one Adam step")
    for line in bench.machine() + bench.versions():
        out(f"- {line}")
    rows, skipped = [], {}
    for name in names:
        x, y, lengths = MODELS[name]["data"](np.random.default_rng(1))
        model, forward, step = make_unrolled(name)
        weights = model.get_weights()
        reference, first_loss = forward(x), None
        makers = {"unrolled": lambda: (forward, step),
                  "torch": lambda: make_torch(name, weights, lengths),
                  "keras-jax": lambda: make_keras(name, weights, notes),
                  "onnxruntime": lambda: make_onnxruntime(name, weights, lengths)}
        forwards, steps, notes = {}, {}, {}
        for peer in peers:
            try:
                f, s = makers[peer]()
                err = float(np.max(np.abs(np.asarray(f(x)) - reference)))
                if err > 1e-4:
                    raise RuntimeError(f"forward output differs from unrolled's by {err:.2g}")
                if s is not None:                                 # a peer that trains
                    loss = s((x, y))                              # the first step, untimed
                    first_loss = loss if first_loss is None else first_loss
                    rel = abs(loss - first_loss) / max(abs(first_loss), 1e-12)
                    if rel > 1e-4:
                        raise RuntimeError(f"first step's loss {loss:.6g} differs from "
                                           f"unrolled's {first_loss:.6g}")
                notes[f"{peer} max|diff|"] = f"{err:.1e}"
                if peer == "torch":  # two thread settings each, the faster kept after
                    forwards.update(bench.torch_settings(f))
                    steps.update(bench.torch_settings(s))
                else:
                    forwards[peer] = f
                    if s is not None:
                        steps[peer] = s
                for _ in range(bench.SETTLE_CALLS):               # unrolled's thread choices
                    f(x)
                    if s is not None:
                        s((x, y))
            except Exception as error:  # noqa: BLE001 - a missing peer is reported
                skipped[peer] = f"{type(error).__name__}: {error}"
        for mode, fns in (("forward", forwards), ("train", steps)):
            times = bench.interleaved(fns, x if mode == "forward" else (x, y), budget,
                                      least, most, sample_seconds=bench.TRAIN_SAMPLE_SECONDS
                                      if mode == "train" else bench.SAMPLE_SECONDS)
            threads: dict = {}
            bench.keep_faster_torch(times, threads)
            if threads:
                notes["torch"] = threads["torch"] if mode == "forward" else (
                    f"{notes['torch']} forward, {threads['torch']} training")
            medians = {p: statistics.median(t) for p, t in times.items()}
            fastest = min((t for p, t in medians.items() if p != "unrolled"), default=None)
            row = {"model": name, "mode": mode, "medians": medians, "fastest_peer": fastest,
                   "reps": len(times["unrolled"]), "notes": dict(notes)}
            rows.append(row)
            out(f"{name} {mode}: " + ", ".join(f"{p} {t * 1e3:.3f} ms" for p, t in medians.items())
                + (f", unrolled / fastest peer = {medians['unrolled'] / fastest:.2f}"
                   if fastest else "") + f", {row['reps']} reps"
                + (f"; keras-jax forward via {notes['keras-jax']}" if "keras-jax" in notes
                   else "") + (f"; torch on {notes['torch']}" if "torch" in notes else ""))
    for peer, why in skipped.items():
        out(f"skipped {peer}: {why}")
    return rows


def report_table(rows: list[dict], out: Callable[[str], None] = print) -> None:
    peers = [p for p in PEERS if any(p in r["medians"] for r in rows)]
    out("\n| model | mode | " + " | ".join(f"{p} ms" for p in peers)
        + " | unrolled / fastest peer | unrolled / torch |")
    out("|---|---|" + "---|" * len(peers) + "---|---|")
    for r in rows:
        m = r["medians"]
        cells = [f"{m[p] * 1e3:.3f}" if p in m else "-" for p in peers]
        ratio = f"{m['unrolled'] / r['fastest_peer']:.2f}" if r["fastest_peer"] else "-"
        to_torch = f"{m['unrolled'] / m['torch']:.2f}" if "torch" in m else "-"
        out(f"| {r['model']} | {r['mode']} | " + " | ".join(cells) + f" | {ratio} | {to_torch} |")
    out("")
    for name in dict.fromkeys(r["model"] for r in rows):
        out(f"- `{name}`: {MODELS[name]['summary']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/models.py",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help=",".join(MODELS))
    parser.add_argument("--peers", default=",".join(PEERS), help=",".join(PEERS))
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--reps", type=int, default=None,
                        help="at least this many samples of each peer (default: 3, --quick 2)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    for n in names:
        if n not in MODELS:
            raise SystemExit(f"--models: unknown model {n!r}; choose from {', '.join(MODELS)}")
    peers = bench.parse_peers(args.peers, PEERS)
    bench.check_reps(args.reps)
    report_table(run(names, peers, args.quick, args.reps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
