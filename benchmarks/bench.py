"""Forward-pass speed of unrolled against its peers, measured interleaved in one run.

Run from a source checkout:

    python -m unrolled bench [--quick] [--cells simple_rnn,lstm,gru] [--shapes 4x5x1x2,...]
    python benchmarks/bench.py ...            (the same)

Peers, all given the same weights and the same float32 input `(batch, timesteps, features)`, all
returning the whole output sequence `(batch, timesteps, units)` as a NumPy array:

- unrolled: `layers.SimpleRNN/LSTM/GRU(units, return_sequences=True)(x)`.
- torch: `nn.RNN/LSTM/GRU(batch_first=True)` under `torch.inference_mode()`, with its default
  thread count and on one thread, both sampled in the rotation, the faster one's median kept
  (printed).
- keras-jax: Keras 3 on JAX. Both honest compiled routes are timed during warm-up and the faster
  is kept: a `jax.jit` of `model.stateless_call` (output copied to NumPy) or
  `model.predict_on_batch`. The choice is printed.
- keras-tf: Keras 3 on TensorFlow, `model.predict_on_batch`, only when `tensorflow` imports in
  this interpreter and Keras runs on it (Keras picks its backend once per process, so this peer
  needs its own run, without keras-jax:
  `KERAS_BACKEND=tensorflow python benchmarks/bench.py --peers unrolled,torch,keras-tf,onnxruntime`);
  otherwise reported as skipped.
- onnxruntime: an ONNX RNN/LSTM/GRU node built with `onnx.helper` (time-major X, as ORT's CPU
  kernels require layout=0; the transpose of the input is inside the timed call).

Method: after warm-up calls (for unrolled, enough for its timed thread choice to try each
setting twice), the peers run round-robin (one sample each per repetition, in a rotating order)
until a time budget per grid point is spent. A sample is as many back-to-back calls as fill
about 20 ms (one at large shapes; 0.1 s for training steps, `--sample-seconds`), timed together
and divided: the time per call of a loop over batches; after each sample an untimed sleep of
`SAMPLE_IDLE` seconds lets the threads a peer leaves spinning (OpenMP's spin a few
milliseconds) stop before the next peer's sample. Medians are reported with the ratio to
the fastest peer, and each forward's FLOPs over the sgemm throughput give the fraction of the
matrix-multiply limit reached. At points of at least `ALONGSIDE_FLOPS` a call, the sgemm is
measured at the point itself: a `np.matmul` of two 2048 x 2048 float32 matrices takes its turn
in the rotation like a peer, and the limit is the point's FLOPs over its median throughput, a
ratio of medians measured side by side like the others (on a shared machine the speed of a core
moves by a third within minutes, and the limit with it). Its samples have an untimed pause of
`BLAS_IDLE` seconds before and after them: threads of BLAS and of the peers keep spinning for a
while after a call (a call of unrolled's row blocks right after a 1024^3 `np.matmul` took 1.5x
as long), and the sgemm is to measure the machine, not the peer before it. (A 1024^3 product
measured 118-130 GFLOP/s there while unrolled's LSTM steps ran faster than that: too small to
be the limit.) Elsewhere the limit comes from the same 2048^3 `np.matmul` at the start of the
run (best of 5).

`--mode train` times one training step instead: forward, mean-squared-error loss against a
fixed target `(batch, timesteps, units)`, backward through time, and one plain SGD update
(learning rate 0.01), from the same initial weights for every peer:

- unrolled: `Sequential([Input, layer]).compile(SGD(0.01), "mse")`, then `train_on_batch(x, y)`.
- torch: `opt.zero_grad(); loss = mse(module(x)[0], y); loss.backward(); opt.step()`.
- keras-jax: a `jax.jit` of `jax.value_and_grad` over `model.stateless_call` plus the SGD update
  (the weights stay on the device between steps), the loss copied to the host.
onnxruntime does not train and is skipped in this mode. The first step's losses are checked
against unrolled's.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
if SRC.is_dir() and str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

SHAPES = [(4, 5, 1, 2), (32, 100, 16, 64), (128, 200, 64, 256), (256, 100, 256, 1024)]
CELLS = ["simple_rnn", "lstm", "gru"]
GATES = {"simple_rnn": 1, "lstm": 4, "gru": 3}
PEERS = ["unrolled", "torch", "keras-jax", "keras-tf", "onnxruntime"]


# ------------------------------------------------------------------------ the peers


def unrolled_weights(cell: str, shape: tuple, seed: int = 0) -> tuple[Any, list[np.ndarray]]:
    """An unrolled layer with random (Keras-initialized) weights and a non-zero bias."""
    from unrolled import layers

    batch, timesteps, features, units = shape
    make = {"simple_rnn": layers.SimpleRNN, "lstm": layers.LSTM, "gru": layers.GRU}[cell]
    layer = make(units, return_sequences=True, seed=seed)
    layer.build((batch, timesteps, features))
    rng = np.random.default_rng(seed)
    weights = layer.get_weights()
    weights[-1] = (rng.standard_normal(weights[-1].shape) * 0.1).astype("float32")
    layer.set_weights(weights)
    return layer, weights


def make_unrolled(cell, shape, weights, layer):
    return lambda x: layer(x)


def _blocks(a: np.ndarray, order: list[int], n: int, axis: int = 0) -> np.ndarray:
    parts = np.split(a, n, axis=axis)
    return np.concatenate([parts[i] for i in order], axis=axis)


def make_torch(cell, shape, weights, layer, module_only: bool = False):
    import torch

    batch, timesteps, features, units = shape
    kernel, recurrent, bias = weights
    module = {"simple_rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](
        features, units, batch_first=True)
    if cell == "gru":  # Keras z, r, h -> torch r, z, n; Keras's two bias rows are b_ih, b_hh
        w_ih, w_hh = _blocks(kernel.T, [1, 0, 2], 3), _blocks(recurrent.T, [1, 0, 2], 3)
        b_ih, b_hh = _blocks(bias[0], [1, 0, 2], 3), _blocks(bias[1], [1, 0, 2], 3)
    else:  # SimpleRNN and LSTM (i, f, c, o = torch's i, f, g, o): transpose, bias in b_ih
        w_ih, w_hh, b_ih, b_hh = kernel.T, recurrent.T, bias, np.zeros_like(bias)
    with torch.no_grad():
        for name, value in (("weight_ih_l0", w_ih), ("weight_hh_l0", w_hh), ("bias_ih_l0", b_ih),
                            ("bias_hh_l0", b_hh)):
            getattr(module, name).copy_(torch.from_numpy(np.ascontiguousarray(value)))
    if module_only:
        return module
    module.eval()

    def run(x):
        with torch.inference_mode():
            return module(torch.from_numpy(x))[0].numpy()

    return run


TORCH_ONE = "torch@1"  # torch on one thread, in the rotation beside its default setting
_torch_default_threads: int | None = None


def torch_settings(fn: Callable) -> dict[str, Callable]:
    """torch's call at its default thread count ("torch") and, where that is more than one, on
    one thread (TORCH_ONE): both go into the rotation, and `keep_faster_torch` keeps the faster.

    On a shared 2-vCPU machine torch's OpenMP threads can wait on each other for a timeslice,
    and one thread is then much faster; on an idle machine the default can win. The setting
    was chosen once before the rotation until round 20, from a few calls right after the other
    peers' first calls, while their threads still spun: it took one thread at every point of a
    grid run, where two threads ran LSTM (128, 200, 64, 256) in 63-70 ms against 123.
    """
    import torch

    global _torch_default_threads
    if _torch_default_threads is None:      # torch's own count, before any setting here
        _torch_default_threads = torch.get_num_threads()
    default = _torch_default_threads

    def at(n: int) -> Callable:
        def run(x):
            if torch.get_num_threads() != n:
                torch.set_num_threads(n)
            return fn(x)

        return run

    return {"torch": at(default), **({TORCH_ONE: at(1)} if default != 1 else {})}


def keep_faster_torch(times: dict[str, list[float]], note: dict) -> None:
    """Keep the faster of torch's two settings (by median) as "torch" in `times`, say which in
    `note`, and give torch back its default thread count. Nothing to do without torch."""
    one = times.pop(TORCH_ONE, None)
    if "torch" not in times:
        return
    import torch

    threads = _torch_default_threads
    if one is not None and statistics.median(one) < statistics.median(times["torch"]):
        times["torch"], threads = one, 1
    torch.set_num_threads(_torch_default_threads)
    note["torch"] = f"{threads} thread{'s' if threads > 1 else ''}"


def _keras_model(cell: str, shape: tuple, weights: list) -> Any:
    """The Keras peer: `Sequential([Input, SimpleRNN/LSTM/GRU(units, return_sequences=True)])`
    with the given weights, on whichever backend Keras runs."""
    import keras

    batch, timesteps, features, units = shape
    make = {"simple_rnn": keras.layers.SimpleRNN, "lstm": keras.layers.LSTM,
            "gru": keras.layers.GRU}[cell]
    model = keras.Sequential([keras.Input((timesteps, features), batch_size=batch),
                              make(units, return_sequences=True)])
    model.set_weights(weights)
    return model


def make_keras_jax(cell, shape, weights, layer, note: dict):
    import jax
    import keras

    if keras.backend.backend() != "jax":
        raise RuntimeError(f"Keras runs on {keras.backend.backend()}, not jax")
    model = _keras_model(cell, shape, weights)
    x = np.zeros(shape[:3], dtype="float32")                # (batch, timesteps, features)

    def run_predict(x):
        return np.asarray(model.predict_on_batch(x))

    routes = {}
    if shape[3] < 1024:  # the largest shape's calls take seconds: time the jitted call only
        routes["predict_on_batch"] = run_predict
    for fn in routes.values():  # first: predict may donate the variables' buffers
        fn(x)
    jitted = jax.jit(lambda tv, ntv, x: model.stateless_call(tv, ntv, x)[0])

    def run_jit(x):
        # The variables' current buffers, read per call: predict_on_batch donates old ones.
        return np.asarray(jitted([v.value for v in model.trainable_variables],
                                 [v.value for v in model.non_trainable_variables], x))

    routes = {"jax.jit(stateless_call)": run_jit, **routes}
    best, best_time = None, float("inf")
    for name, fn in routes.items():
        fn(x)
        t = _median_time(fn, x, budget=0.3, most=10) if len(routes) > 1 else 0.0
        if t < best_time:
            best, best_time, note["keras-jax"] = fn, t, name
    return best


def make_keras_tf(cell, shape, weights, layer):
    import keras

    if keras.backend.backend() != "tensorflow":
        raise RuntimeError("needs its own run: KERAS_BACKEND=tensorflow (Keras picks one backend "
                           "per process)")
    import tensorflow  # noqa: F401

    model = _keras_model(cell, shape, weights)
    return lambda x: np.asarray(model.predict_on_batch(x))


def onnx_recurrent(cell: str, kernel: np.ndarray, recurrent: np.ndarray, bias: np.ndarray
                   ) -> tuple[str, np.ndarray, np.ndarray, np.ndarray, dict]:
    """Keras's weights of one direction as an ONNX RNN/LSTM/GRU node's: `(op, W, R, B, attrs)`
    with W (gates*units, features), R (gates*units, units), B (2*gates*units,)."""
    attrs = {"hidden_size": recurrent.shape[0]}
    if cell == "simple_rnn":
        return "RNN", kernel.T, recurrent.T, np.concatenate([bias, np.zeros_like(bias)]), attrs
    if cell == "lstm":  # Keras i, f, c, o -> ONNX i, o, f, c
        order = [0, 3, 1, 2]
        return ("LSTM", _blocks(kernel.T, order, 4), _blocks(recurrent.T, order, 4),
                np.concatenate([_blocks(bias, order, 4), np.zeros_like(bias)]), attrs)
    # GRU: Keras and ONNX both z, r, h; reset_after=True is linear_before_reset=1
    attrs["linear_before_reset"] = 1
    return "GRU", kernel.T, recurrent.T, np.concatenate([bias[0], bias[1]]), attrs


def onnx_session(graph: Any) -> Any:
    """An onnxruntime CPU session of `graph` (opset 14), its threads told to stop spinning."""
    import onnxruntime
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = min(model.ir_version, 10)
    options = onnxruntime.SessionOptions()
    # ORT's intra-op threads otherwise keep spinning after `run` returns, and in an
    # interleaved run they hold a core through the next peer's sample (unrolled's blocks of
    # rows measured 8.5 ms instead of 4.4 after an ORT sample). They still spin during a run.
    options.add_session_config_entry("session.force_spinning_stop", "1")
    return onnxruntime.InferenceSession(model.SerializeToString(), options,
                                        providers=["CPUExecutionProvider"])


def make_onnxruntime(cell, shape, weights, layer):
    from onnx import TensorProto, helper, numpy_helper

    batch, timesteps, features, units = shape
    op, W, R, B, attrs = onnx_recurrent(cell, *weights)
    inits = [numpy_helper.from_array(np.ascontiguousarray(a[None]).astype("float32"), name)
             for a, name in ((W, "W"), (R, "R"), (B, "B"))]
    node = helper.make_node(op, ["X", "W", "R", "B"], ["Y"], **attrs)
    graph = helper.make_graph(
        [node], "rnn", [helper.make_tensor_value_info("X", TensorProto.FLOAT,
                                                      [timesteps, batch, features])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [timesteps, 1, batch, units])],
        inits)
    session = onnx_session(graph)

    def run(x):
        y = session.run(None, {"X": np.ascontiguousarray(x.transpose(1, 0, 2))})[0]
        return y[:, 0].transpose(1, 0, 2)                   # (batch, timesteps, units), a view

    return run


LR = 0.01


def make_unrolled_train(cell, shape, weights, layer):
    import unrolled
    from unrolled import layers, optimizers

    batch, timesteps, features, units = shape
    make = {"simple_rnn": layers.SimpleRNN, "lstm": layers.LSTM, "gru": layers.GRU}[cell]
    model = unrolled.Sequential([unrolled.Input((timesteps, features), batch_size=batch),
                                 make(units, return_sequences=True)])
    model.set_weights(weights)
    model.compile(optimizers.SGD(LR), "mse")
    y = _target(shape)
    return lambda x: float(model.train_on_batch(x, y))


def make_torch_train(cell, shape, weights, layer):
    import torch

    module = make_torch(cell, shape, weights, layer, module_only=True)
    module.train()
    opt = torch.optim.SGD(module.parameters(), lr=LR)
    y = torch.from_numpy(_target(shape))

    def run(x):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(module(torch.from_numpy(x))[0], y)
        loss.backward()
        opt.step()
        return loss.item()

    return run


def make_keras_jax_train(cell, shape, weights, layer, note: dict):
    import jax
    import jax.numpy as jnp
    import keras

    if keras.backend.backend() != "jax":
        raise RuntimeError(f"Keras runs on {keras.backend.backend()}, not jax")
    model = _keras_model(cell, shape, weights)
    y = jnp.asarray(_target(shape))

    def loss_fn(tv, ntv, x):
        out, _ = model.stateless_call(tv, ntv, x, training=True)
        return jnp.mean((out - y) ** 2)

    @jax.jit
    def step(tv, ntv, x):
        loss, grads = jax.value_and_grad(loss_fn)(tv, ntv, x)
        return loss, [w - LR * g for w, g in zip(tv, grads)]

    state = {"tv": [v.value for v in model.trainable_variables],
             "ntv": [v.value for v in model.non_trainable_variables]}

    def run(x):
        loss, state["tv"] = step(state["tv"], state["ntv"], x)
        return float(loss)

    note["keras-jax"] = "jax.jit(value_and_grad(stateless_call) + SGD)"
    return run


def _target(shape: tuple) -> np.ndarray:
    batch, timesteps, features, units = shape
    return (np.random.default_rng(2).standard_normal((batch, timesteps, units)) * 0.5
            ).astype("float32")


TRAIN_MAKERS = {"unrolled": make_unrolled_train, "torch": make_torch_train,
                "keras-jax": make_keras_jax_train}

MAKERS = {"unrolled": make_unrolled, "torch": make_torch, "keras-jax": make_keras_jax,
          "keras-tf": make_keras_tf, "onnxruntime": make_onnxruntime}


# ------------------------------------------------------------------------ timing


def _median_time(fn: Callable, x: np.ndarray, budget: float, most: int) -> float:
    times = []
    end = time.perf_counter() + budget
    while len(times) < most and (len(times) < 3 or time.perf_counter() < end):
        t = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


SAMPLE_SECONDS = 0.02  # one timed sample of a peer: enough back-to-back calls to last this long
# A training step's sample: a loop of training steps is many steps back to back, and a step is
# slower after another library's calls (LSTM (32, 100, 16, 64): unrolled's first step after
# four of torch's took 7.4 ms, the next ones 3.7-4.0; after 0.1 s of sleep alone, 6.0). In
# samples of 20 ms, four steps, that first step was a quarter of each sample (round 20).
TRAIN_SAMPLE_SECONDS = 0.1


def calls_per_sample(fn: Callable, x: np.ndarray, seconds: float = SAMPLE_SECONDS) -> int:
    """How many back-to-back calls of `fn` make one sample of about `seconds`."""
    once = min(_timed(lambda: fn(x)) for _ in range(3))
    return max(1, int(seconds / max(once, 1e-7)))


def interleaved(fns: dict[str, Callable], x: np.ndarray, budget: float, least: int,
                most: int, pause_around: dict[str, float] | None = None,
                sample_seconds: float = SAMPLE_SECONDS) -> dict[str, list[float]]:
    """Seconds per call, one entry per sample: round-robin samples (rotating the order) until
    `budget` seconds and `least` samples. A sample times `calls_per_sample` back-to-back calls
    (one call at large shapes, hundreds at tiny ones) and divides: the repeated, warm calls of
    a loop over batches, timed without the clock's and the collector's overhead per call.
    `pause_around[name]`: seconds of sleep before and after each of that entry's samples,
    untimed; after every sample at least `SAMPLE_IDLE`."""
    counts = {name: calls_per_sample(fn, x, sample_seconds) for name, fn in fns.items()}
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    end = time.perf_counter() + budget
    rep = 0
    while rep < most and (rep < least or time.perf_counter() < end):
        order = names[rep % len(names):] + names[:rep % len(names)]
        for name in order:
            fn, n = fns[name], counts[name]
            pause = (pause_around or {}).get(name, 0.0)
            time.sleep(pause)
            gc.collect()
            t = time.perf_counter()
            for _ in range(n):
                fn(x)
            times[name].append((time.perf_counter() - t) / n)
            time.sleep(max(pause, SAMPLE_IDLE))
        rep += 1
    return times


def sgemm_throughput(reps: int = 5) -> float:
    """FLOP/s of the (GEMM_N, GEMM_N) float32 product of `gemm_call` (the best of `reps`): the
    matrix-multiply limit of the run, the same product the large points measure in rotation."""
    call, flops = gemm_call()
    call(None)
    return flops / min(_timed(lambda: call(None)) for _ in range(reps))


def _timed(fn: Callable) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def forward_flops(cell: str, shape: tuple) -> float:
    """Multiply-adds x 2 of the input projection and the recurrent products (pointwise ignored)."""
    batch, timesteps, features, units = shape
    g = GATES[cell]
    return 2.0 * batch * timesteps * g * units * (features + units)


# ------------------------------------------------------------------------ import time and memory


# `import unrolled` loads its modules on first use of a name, so the second line is what a
# user pays before building a layer (numpy included).
IMPORTS = {"unrolled": "import unrolled",
           "unrolled, then unrolled.layers.LSTM": "import unrolled; unrolled.layers.LSTM",
           "numpy": "import numpy", "torch": "import torch",
           f"keras ({os.environ['KERAS_BACKEND']})": "import keras",
           "tensorflow": "import tensorflow",
           "onnxruntime": "import onnxruntime"}


def import_time(statement: str, reps: int = 3) -> float | None:
    """Median seconds of `statement` in a fresh interpreter (None when it fails), after one
    untimed run that writes the bytecode caches, as an installed package has them."""
    code = ("import time; t = time.perf_counter(); " + statement +
            "; print(time.perf_counter() - t)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    times = []
    for _ in range(reps + 1):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env=env)
        if done.returncode != 0:
            return None
        times.append(float(done.stdout.strip().splitlines()[-1]))
    return statistics.median(times[1:])


def memory_budget(cell: str, shape: tuple, layer: Any) -> int:
    """Input + output + weights + one step's scratch, where one step's scratch is what the
    readable cell holds for a step: x_t U, h W and their sum, each `(batch, gates*units)`."""
    batch, timesteps, features, units = shape
    g = GATES[cell]
    item = 4
    weights = sum(w.value.nbytes for w in layer.weights)
    return (batch * timesteps * features * item + batch * timesteps * units * item + weights
            + 3 * batch * g * units * item)


_PEAK = """
import os
import sys
import numpy as np
sys.path.insert(0, {bench!r})
import bench

# /proc/self/status is read into buffers made beforehand and /proc/self/clear_refs written
# through a descriptor opened beforehand: between the two readings nothing but the call
# allocates, so the growth is the call's (a Python `open` there faulted in up to 86 KB).
STATUS = os.open("/proc/self/status", os.O_RDONLY)
CLEAR = os.open("/proc/self/clear_refs", os.O_WRONLY)
before_text, peak_text = bytearray(1 << 16), bytearray(1 << 16)


def field(text, n, name):
    line = next(l for l in bytes(text[:n]).decode().splitlines() if l.startswith(name + ":"))
    return int(line.split()[1]) * 1024


layer, _ = bench.unrolled_weights({cell!r}, {shape!r})
batch, timesteps, features, units = {shape!r}
rng = np.random.default_rng(1)
x = rng.standard_normal((batch, timesteps, features), dtype=np.float32)
from unrolled import kernels
from unrolled.kernels import _outputs

for _ in range({settle}):  # warm-up: compiles, plans, tries each thread setting
    layer(x)               # (the outputs are freed at once)
grown = []
for _ in range(3):
    kernels.release_outputs()  # a kept output buffer would hide the output's memory
    n_before = os.preadv(STATUS, [before_text], 0)
    os.write(CLEAR, b"5")      # the peak (VmHWM) restarts from the resident memory now
    out = layer(x)
    n_peak = os.preadv(STATUS, [peak_text], 0)
    grown.append(field(peak_text, n_peak, "VmHWM") - field(before_text, n_before, "VmRSS"))
    kept = _outputs.kept_bytes()
    del out

# The same calls counted in bytes allocated: tracemalloc sees NumPy's arrays, Python's objects
# and the compiled loops' arrays (Numba's runtime allocates through CPython's raw allocator),
# each to the byte. Checked first on a compiled array, so that a runtime that allocates
# elsewhere gives no figure rather than a low one.
import tracemalloc
tracemalloc.start()
counted = -1
try:
    import numba
except ImportError:
    numba = None
if numba is not None:
    made = numba.njit(lambda n: np.empty(n, dtype=np.float32))
    made(1)
    start = tracemalloc.get_traced_memory()[0]
    probe = made(1 << 18)
    if tracemalloc.get_traced_memory()[0] - start < probe.nbytes:
        counted = None                # the compiled loops' arrays would go uncounted
    del probe
if counted is not None:
    for _ in range(3):
        kernels.release_outputs()
        start = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        out = layer(x)
        counted = max(counted, tracemalloc.get_traced_memory()[1] - start)
        del out
tracemalloc.stop()
print(sorted(grown)[1], kept, counted)
"""


def peak_memory(cell: str, shape: tuple, layer: Any,
                x: np.ndarray) -> tuple[int, int | None, int, int]:
    """(peak bytes one unrolled forward holds by resident memory, the same by bytes allocated
    (None where that count would miss the compiled loops' arrays), the budget, bytes of output
    buffers unrolled keeps after the call for the next: see unrolled.kernels._outputs).

    Measured in a fresh interpreter, after SETTLE_CALLS warm-up calls (compiling the loops,
    planning, trying each thread setting: what a process does once) whose outputs are freed,
    with the input and weights already in memory. Before each measured call the kept output
    buffers are let go, so that its output is new memory, counted. Two ways, each a growth
    from just before a call to its peak during the call, plus input and weights:

    - resident memory (Linux: the peak is reset through /proc/self/clear_refs, then read as
      VmHWM), the median of three calls, with glibc mapping every block of 4 KiB or more
      afresh (below). It counts everything the process touches, in pages: also BLAS's
      buffers, thread stacks and allocator slack, and it moved by up to 0.4 MB from run to run
      at (128, 200, 64, 256);
    - bytes allocated (tracemalloc), the most of three more calls: the arrays and objects a
      call holds at once, to the byte, the compiled loops' included (Numba's runtime allocates
      through CPython's raw allocator, which tracemalloc traces; checked in the run).
    """
    weights = sum(w.value.nbytes for w in layer.weights)
    code = _PEAK.format(bench=str(HERE), cell=cell, shape=tuple(shape), settle=SETTLE_CALLS)
    # A fixed mmap threshold: every block of 4 KiB or more is mapped when allocated and unmapped
    # when freed, so the call's buffers are new memory, counted, whatever glibc's heap held
    # after the warm-up (with its default, moving threshold the warm-up's freed output could be
    # reused from the heap and not counted at all).
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
               MALLOC_MMAP_THRESHOLD_="4096")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"peak memory run failed: {done.stderr.strip()[-300:]}")
    grown, kept, counted = done.stdout.strip().splitlines()[-1].split()
    held = x.nbytes + weights
    return (int(grown) + held, None if counted == "None" else int(counted) + held,
            memory_budget(cell, shape, layer), int(kept))


# ------------------------------------------------------------------------ the run


def machine() -> list[str]:
    lines = []
    try:
        info = Path("/proc/cpuinfo").read_text()
        model = next((l.split(":", 1)[1].strip() for l in info.splitlines()
                      if l.startswith("model name")), "?")
        lines.append(f"CPU: {model}, {os.cpu_count()} logical cores")
    except OSError:
        lines.append(f"CPU: {platform.processor()}, {os.cpu_count()} logical cores")
    try:
        lines.append(f"load average: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    except OSError:
        pass
    lines.append(f"Python {platform.python_version()}, NumPy {np.__version__}")
    for env in ("UNROLLED_NUMBA", "UNROLLED_STEP_THREADS"):
        if env in os.environ:
            lines.append(f"{env}={os.environ[env]}")
    try:
        config = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        lines.append(f"BLAS: {config.get('name')} {config.get('version')}")
    except Exception:  # noqa: BLE001 - description only
        pass
    for env in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        if env in os.environ:
            lines.append(f"{env}={os.environ[env]}")
    return lines


def versions() -> list[str]:
    found = []
    for name in ("torch", "keras", "jax", "tensorflow", "onnxruntime", "onnx", "numba",
                 "threadpoolctl"):
        try:
            module = __import__(name)
            found.append(f"{name} {module.__version__}")
        except Exception:  # noqa: BLE001 - absent peers are reported, not fatal
            found.append(f"{name}: not importable")
    return found


def parse_peers(text: str, known: list[str]) -> list[str]:
    """`--peers`: names from `known`, comma-separated; unrolled is always timed, first."""
    peers = [p.strip() for p in text.split(",") if p.strip()]
    for p in peers:
        if p not in known:
            raise SystemExit(f"--peers: unknown peer {p!r}; choose from {', '.join(known)}")
    return peers if "unrolled" in peers else ["unrolled", *peers]


def check_reps(reps: int | None) -> None:
    if reps is not None and reps < 1:
        raise SystemExit(f"--reps: expected a count of at least 1, got {reps}")


def parse_cells(text: str) -> list[str]:
    """`--cells`: comma-separated names from CELLS (unrolled.kernels.warmup.parse_cells)."""
    from unrolled.kernels import warmup

    try:
        return warmup.parse_cells(text)
    except ValueError as e:
        raise SystemExit(f"--cells: {e}") from None


def parse_shapes(text: str) -> list[tuple]:
    """`--shapes`: comma-separated `batch x timesteps x features x units`, positive integers
    (unrolled.kernels.warmup.parse_shapes)."""
    from unrolled.kernels import warmup

    try:
        return warmup.parse_shapes(text)
    except ValueError as e:
        raise SystemExit(f"--shapes: {e}") from None


MODES = {
    # mode -> what one timed call does
    "forward": "one forward pass, whole output sequence",
    "train": "one training step: forward, MSE, backward through time, SGD update",
}


SETTLE_CALLS = 7  # one untimed first call, then up to three settings twice each
ALONGSIDE_FLOPS = 1e9  # from here on (per timed call) the sgemm limit is measured at the point
GEMM_N = 2048          # the sgemm measured there: (n, n) @ (n, n), float32
BLAS_IDLE = 0.3        # seconds for OpenBLAS's threads to stop spinning after a product
# Seconds of untimed sleep after every sample: the OpenMP threads of torch and of unrolled's
# forward row blocks (Numba's) spin for a few milliseconds after a call, on a CPU the next
# peer's sample needs (round 21).
SAMPLE_IDLE = 0.02


def gemm_call() -> tuple[Callable, float]:
    """A call multiplying two (GEMM_N, GEMM_N) float32 matrices (it ignores its argument, so
    that it runs in the rotation like a peer), and its FLOPs."""
    rng = np.random.default_rng(2)
    a, b = (rng.standard_normal((GEMM_N, GEMM_N), dtype=np.float32) for _ in range(2))
    out = np.empty_like(a)
    return (lambda x: np.matmul(a, b, out=out)), 2.0 * GEMM_N ** 3


def run(cells: list[str], shapes: list[tuple], peers: list[str], quick: bool,
        out: Callable[[str], None] = print, mode: str = "forward",
        reps: int | None = None, sample_seconds: float | None = None) -> dict:
    budget, least, most = (0.5, 2, 10) if quick else (3.0, 3, 200)
    if reps is not None:
        least, most = reps, max(most, reps)
    train = mode == "train"
    if sample_seconds is None:
        sample_seconds = TRAIN_SAMPLE_SECONDS if train else SAMPLE_SECONDS
    out(f"# unrolled benchmark: {MODES[mode]}")
    for line in machine() + versions():
        out(f"- {line}")
    gemm = sgemm_throughput()
    out(f"- sgemm throughput (2048^3 np.matmul, best of 5): {gemm / 1e9:.1f} GFLOP/s")
    results = {"gemm": gemm, "rows": [], "skipped": {}, "notes": {}}
    for cell in cells:
        for shape in shapes:
            layer, weights = unrolled_weights(cell, shape)
            rng = np.random.default_rng(1)
            x = rng.standard_normal(shape[:3]).astype("float32")
            fns, notes = {}, {}
            reference = None if train else layer(x)
            for peer in peers:
                try:
                    maker = (TRAIN_MAKERS if train else MAKERS).get(peer)
                    if maker is None:
                        raise RuntimeError(f"no {mode} mode for this peer")
                    fn = (maker(cell, shape, weights, layer, notes) if peer == "keras-jax"
                          else maker(cell, shape, weights, layer))
                    y = fn(x)
                    if reference is None:  # train: the first step's loss, unrolled's first
                        reference = y
                    err = float(np.max(np.abs(np.asarray(y) - reference)))
                    if train:
                        err /= max(abs(reference), 1e-12)
                    if err > 1e-3:
                        raise RuntimeError(f"output differs from unrolled's by {err:.2g}")
                    notes.setdefault(peer + " max|diff|", f"{err:.1e}")
                    if peer == "torch":  # after the check: in train mode each call is a step
                        fns.update(torch_settings(fn))
                        continue
                    if peer == "unrolled":
                        # its timed thread choice (unrolled/kernels/_threads.py) tries each
                        # setting twice before it settles, as torch's and keras-jax's best
                        # settings are chosen during their warm-up
                        for _ in range(SETTLE_CALLS):
                            fn(x)
                    fns[peer] = fn
                except Exception as error:  # noqa: BLE001 - a missing peer is reported
                    results["skipped"][peer] = f"{type(error).__name__}: {error}"
            flops = forward_flops(cell, shape) * (3 if train else 1)
            alongside = flops >= ALONGSIDE_FLOPS
            if alongside:
                fns["sgemm"], gemm_flops = gemm_call()
            times = interleaved(fns, x, budget, least, most, pause_around={"sgemm": BLAS_IDLE},
                                sample_seconds=sample_seconds)
            keep_faster_torch(times, notes)
            gemm_times = times.pop("sgemm", None)
            gemm_point = gemm_flops / statistics.median(gemm_times) if alongside else gemm
            medians = {p: statistics.median(t) for p, t in times.items()}
            fastest_peer = min((t for p, t in medians.items() if p != "unrolled"), default=None)
            limit = flops / gemm_point
            row = {"cell": cell, "shape": shape, "medians": medians, "reps": len(times["unrolled"]),
                   "fastest_peer": fastest_peer, "limit": limit, "gemm": gemm_point,
                   "alongside": alongside, "notes": notes}
            results["rows"].append(row)
            parts = [f"{p} {medians[p] * 1e3:.3f} ms" for p in medians]
            ratio = (f", unrolled / fastest peer = {medians['unrolled'] / fastest_peer:.2f}"
                     if fastest_peer else "")
            if "torch" in medians:
                ratio += f", unrolled / torch = {medians['unrolled'] / medians['torch']:.2f}"
            out(f"{cell} {shape}: " + ", ".join(parts) + ratio +
                f", matmul limit {limit * 1e3:.3f} ms ({limit / medians['unrolled']:.0%} reached"
                f"; sgemm {gemm_point / 1e9:.1f} GFLOP/s" + (
                    f" here, median of {len(gemm_times)}, best "
                    f"{gemm_flops / min(gemm_times) / 1e9:.1f}" if alongside
                    else "") + ")"
                f", {row['reps']} reps" + (f"; keras-jax via {notes['keras-jax']}"
                                           if "keras-jax" in notes else "")
                + (f"; torch on {notes['torch']}" if "torch" in notes else ""))
    for peer, why in results["skipped"].items():
        out(f"skipped {peer}: {why}")
    return results


def report_tables(results: dict, out: Callable[[str], None] = print) -> None:
    peers = [p for p in PEERS if any(p in r["medians"] for r in results["rows"])]
    out("\n| cell | shape (B,T,F,U) | " + " | ".join(f"{p} ms" for p in peers) +
        " | unrolled / fastest peer | unrolled / torch | matmul limit ms | % of limit "
        "| sgemm GFLOP/s |")
    out("|---|---|" + "---|" * len(peers) + "---|---|---|---|---|")
    for r in results["rows"]:
        cells = [f"{r['medians'][p] * 1e3:.3f}" if p in r["medians"] else "-" for p in peers]
        ratio = (f"{r['medians']['unrolled'] / r['fastest_peer']:.2f}"
                 if r["fastest_peer"] else "-")
        to_torch = (f"{r['medians']['unrolled'] / r['medians']['torch']:.2f}"
                    if "torch" in r["medians"] else "-")
        out(f"| {r['cell']} | {r['shape']} | " + " | ".join(cells) +
            f" | {ratio} | {to_torch} | {r['limit'] * 1e3:.3f}"
            f" | {r['limit'] / r['medians']['unrolled']:.0%}"
            f" | {r['gemm'] / 1e9:.1f}{' here' if r['alongside'] else ''} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m unrolled bench", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer repetitions, and the largest shape only when asked for")
    parser.add_argument("--cells", default=",".join(CELLS), help="simple_rnn,lstm,gru")
    parser.add_argument("--shapes", default=None,
                        help="batch x timesteps x features x units, comma-separated "
                             "(default: 4x5x1x2,32x100x16x64,128x200x64x256,256x100x256x1024)")
    parser.add_argument("--peers", default=",".join(PEERS), help=",".join(PEERS))
    parser.add_argument("--mode", default="forward", choices=sorted(MODES),
                        help="forward (default) or train (one SGD step)")
    parser.add_argument("--reps", type=int, default=None,
                        help="at least this many samples of each peer a point (default: 3, "
                             "--quick 2)")
    parser.add_argument("--sample-seconds", type=float, default=None,
                        help=f"seconds of back-to-back calls a sample (default: "
                             f"{SAMPLE_SECONDS}, --mode train {TRAIN_SAMPLE_SECONDS})")
    parser.add_argument("--no-import", action="store_true", help="skip the import-time table")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory table")
    args = parser.parse_args(argv)
    if args.sample_seconds is not None and not args.sample_seconds > 0:
        raise SystemExit(f"--sample-seconds: expected a positive number of seconds, got "
                         f"{args.sample_seconds}")
    cells = parse_cells(args.cells)
    peers = parse_peers(args.peers, PEERS)
    shapes = parse_shapes(args.shapes) if args.shapes else (SHAPES[:3] if args.quick else SHAPES)
    check_reps(args.reps)
    results = run(cells, shapes, peers, args.quick, mode=args.mode, reps=args.reps,
                  sample_seconds=args.sample_seconds)
    report_tables(results)

    if not args.no_import:
        print("\n| import | seconds (fresh interpreter, bytecode cached, median of 3) |\n|---|---|")
        for name, statement in IMPORTS.items():
            t = import_time(statement)
            print(f"| {name} | {'not importable' if t is None else f'{t:.3f}'} |")

    if not args.no_memory:
        print("\n| cell | shape | peak bytes by resident memory (input + weights + peak RSS "
              "growth during the call) | peak / budget | peak bytes allocated (input + weights + "
              "the most a call allocated at once, tracemalloc) | allocated / budget | budget "
              "(input + output + weights + one step's scratch) | budget - allocated | output "
              "buffers kept after the call |")
        print("|---|---|---|---|---|---|---|---|---|")
        for cell in cells:
            for shape in shapes:
                layer, _ = unrolled_weights(cell, shape)
                x = np.random.default_rng(1).standard_normal(shape[:3]).astype("float32")
                peak, counted, budget, kept = peak_memory(cell, shape, layer, x)
                by_count = ("not counted", "-", "-") if counted is None else (
                    f"{counted:,}", f"{counted / budget:.4f}", f"{budget - counted:,}")
                print(f"| {cell} | {shape} | {peak:,} | {peak / budget:.2f} | {by_count[0]} | "
                      f"{by_count[1]} | {budget:,} | {by_count[2]} | {kept:,} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
