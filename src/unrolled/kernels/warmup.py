"""Compile the compiled loops before they are needed: `python -m unrolled warmup`.

With Numba installed, each compiled loop compiles the first time a call needs it, once per
machine (per CPU and dtype: Numba's cache keys on both), and is loaded from Numba's cache by
every later process in milliseconds. On a new machine those first calls take seconds to half a
minute each, at a shape's first call and again at the thread choice's first try of another form
(README, "Speed": 16-20 s at (32, 100, 16, 64) for the three cells, 29 s at the fifth call of a
batch of over 128 rows on large weights). `warm_up` pays that up front, for a service's start, a
notebook's first cell or a container image's build: it calls a layer of each cell at each shape
`calls` times (the first call, then each thread setting on offer twice, as
unrolled.kernels._threads tries them), and as often one with `go_backwards`, and with `train`
models of the two through `train_on_batch`, and reports what compiled and what Numba's cache
already held. `warm_up_model` does the same for a whole model, on a copy of it, at the batch
size it will get.

A shape is `(batch, timesteps, features, units)`. The loops a call compiles depend on these sizes,
the number of cores and the input's memory layout, not on the weights' values, on
`return_sequences`, `return_state` or a mask, so warming up the shapes a program will call is
enough for a C-ordered input (NumPy's default); the layers here return the whole sequence, which
also reaches the forms only such a call has (a large batch's units form).
"""

from __future__ import annotations

import numbers
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

CELLS = ("simple_rnn", "lstm", "gru")
# The benchmark grid's three smaller shapes: a call of a few multiply-adds, one whose weights fit
# a core's caches, and one whose steps split in two products.
DEFAULT_SHAPES = ((4, 5, 1, 2), (32, 100, 16, 64), (128, 200, 64, 256))
# The first call, then up to three thread settings twice each (_threads.ThreadChoice).
CALLS = 7
DTYPES = ("float32", "float64")


@dataclass
class Warmed:
    """One point of a warm-up: its calls' seconds and the loops they compiled or loaded."""

    cell: str
    shape: tuple[int, int, int, int]   # (batch, timesteps, features, units)
    mode: str                          # "forward" or "train"
    calls: int                         # calls each direction
    first_seconds: float               # the first call, which compiles or loads
    seconds: float                     # all calls, both directions
    compiled: list[str] = field(default_factory=list)   # loops Numba compiled (cache misses)
    loaded: list[str] = field(default_factory=list)     # loops loaded from Numba's cache


def parse_shapes(text: str) -> list[tuple[int, int, int, int]]:
    """Comma-separated `batch x timesteps x features x units`, e.g. `"4x5x1x2,32x100x16x64"`."""
    shapes = []
    for item in text.split(","):
        parts = item.lower().replace("(", "").replace(")", "").split("x")
        if len(parts) != 4 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
            raise ValueError(f"{item.strip()!r} is not batch x timesteps x features x units, "
                             f"four positive integers, e.g. 32x100x16x64")
        shapes.append(tuple(int(p) for p in parts))
    return shapes


def parse_cells(text: str) -> list[str]:
    """Comma-separated names from CELLS, e.g. `"lstm,gru"`."""
    cells = [c.strip() for c in text.split(",") if c.strip()]
    if not cells:
        raise ValueError(f"no cell named; choose from {', '.join(CELLS)}")
    for c in cells:
        if c not in CELLS:
            raise ValueError(f"unknown cell {c!r}; choose from {', '.join(CELLS)}")
    return cells


def unavailable() -> str | None:
    """Why nothing would compile here (a sentence), or None when the compiled loops can run."""
    from unrolled import _env

    if not _env.flag("UNROLLED_NUMBA"):
        return "UNROLLED_NUMBA=0 turns the compiled loops off: there is nothing to compile."
    from unrolled.kernels import _numba

    if _numba.enabled is False:
        return ("The compiled loops are turned off in this process "
                "(unrolled.kernels._numba.enabled is False): there is nothing to compile.")
    if not _numba.available():
        return ("Numba cannot be imported here (not installed?), so the NumPy kernels run, and "
                "they need no compiling. pip install 'unrolled[numba]' for the compiled loops, "
                "then warm them up.")
    return None


def _dispatchers() -> list:
    """unrolled's Numba functions loaded so far (module globals of unrolled.kernels.*)."""
    from numba.core.dispatcher import Dispatcher

    found = {}
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith("unrolled.kernels."):
            continue
        for value in list(vars(module).values()):
            if isinstance(value, Dispatcher):
                found[id(value)] = value
    return list(found.values())


def _counts() -> dict[str, tuple[int, int]]:
    """Numba's own counts for each of unrolled's functions: name -> (compiled, loaded)."""
    counts = {}
    for d in _dispatchers():
        stats = d.stats
        name = f"{d.py_func.__module__.rsplit('.', 1)[-1]}.{d.py_func.__qualname__}"
        counts[name] = (sum(stats.cache_misses.values()), sum(stats.cache_hits.values()))
    return counts


def _point(cell: str, shape: tuple, mode: str, calls: int, dtype: str) -> Warmed:
    import numpy as np

    from unrolled import layers

    batch, timesteps, features, units = shape
    make = {"simple_rnn": layers.SimpleRNN, "lstm": layers.LSTM, "gru": layers.GRU}[cell]
    x = np.linspace(-1, 1, batch * timesteps * features, dtype=dtype).reshape(
        batch, timesteps, features)                         # (batch, timesteps, features)
    # Each direction: a reversed view of the input can be typed with another layout than the
    # input (at (4, 5, 1, 2) the forward steps' view is Fortran-ordered, the reversed one not),
    # and Numba compiles a loop for each layout.
    if mode == "train":
        from unrolled import models

        def model(backwards: bool):
            made = models.Sequential([layers.Input((timesteps, features), dtype=dtype),
                                      make(units, go_backwards=backwards, dtype=dtype)])
            made.compile(optimizer="adam", loss="mse")  # Adam's update of large weights compiles
            return made

        y = np.zeros((batch, units), dtype=dtype)           # (batch, units)
        runs = [lambda m=model(b): m.train_on_batch(x, y) for b in (False, True)]
    else:
        runs = [lambda layer=make(units, return_sequences=True, go_backwards=b, dtype=dtype):
                layer(x) for b in (False, True)]

    return _measure(cell, tuple(shape), mode, calls, runs)


def _measure(what: str, shape: tuple, mode: str, calls: int, runs: list) -> Warmed:
    """Each of `runs` called `calls` times, timed, with the functions Numba compiled and loaded."""
    before = _counts()
    start = time.perf_counter()
    runs[0]()
    first = time.perf_counter() - start
    for run in runs:
        for _ in range(calls - (run is runs[0])):
            run()
    seconds = time.perf_counter() - start
    compiled, loaded = [], []
    for name, (misses, hits) in sorted(_counts().items()):
        was = before.get(name, (0, 0))
        if misses > was[0]:
            compiled.append(name)
        if hits > was[1]:
            loaded.append(name)
    return Warmed(what, shape, mode, calls, first, seconds, compiled, loaded)


def _count(n) -> bool:
    """Whether `n` is a positive integer (NumPy's included, a bool not)."""
    return isinstance(n, numbers.Integral) and not isinstance(n, bool) and n > 0


def _shape(given) -> tuple[int, int, int, int]:
    try:
        shape = tuple(given)
    except TypeError:
        shape = ()
    if len(shape) != 4 or not all(_count(n) for n in shape):
        raise ValueError(f"warm_up: each shape is (batch, timesteps, features, units), four "
                         f"positive integers; got {given!r}.")
    return tuple(int(n) for n in shape)


def warm_up(cells: Iterable[str] = CELLS, shapes: Iterable[tuple] = DEFAULT_SHAPES, *,
            train: bool = False, dtype: str = "float32", calls: int = CALLS,
            report: Callable[[Warmed], None] | None = None) -> list[Warmed]:
    """Compile (or load from Numba's cache) every loop the given cells and shapes call.

    Args:
        cells: names from CELLS ("simple_rnn", "lstm", "gru"), or one name.
        shapes: `(batch, timesteps, features, units)` tuples, or one such tuple.
        train: also run `train_on_batch` on a model of each layer (both directions, Adam),
            `calls` times each.
        dtype: "float32" (the default, the fast loops' dtype) or "float64".
        calls: calls a point and direction; the default tries every thread setting (see the
            module's text).
        report: called with each point's `Warmed` as it finishes (the command line prints it).

    Returns:
        A `Warmed` for each point, forward then (with `train`) training, in order. Empty when
        the compiled loops cannot run here (see `unavailable`).

    Example:
        >>> from unrolled.kernels import warm_up
        >>> rows = warm_up(["simple_rnn"], [(4, 5, 1, 2)], calls=1)  # compiles once a machine
        >>> [(row.cell, row.shape, row.mode, row.calls) for row in rows]
        [('simple_rnn', (4, 5, 1, 2), 'forward', 1)]
    """
    cells = [cells] if isinstance(cells, str) else list(cells)
    shapes = list(shapes)
    if len(shapes) == 4 and all(isinstance(n, numbers.Integral) for n in shapes):
        shapes = [shapes]                           # one shape, not a list of them
    for c in cells:
        if c not in CELLS:
            raise ValueError(f"warm_up: cells takes names from {', '.join(CELLS)}; got {c!r}.")
    shapes = [_shape(s) for s in shapes]
    if dtype not in DTYPES:
        raise ValueError(f"warm_up: dtype is one of {', '.join(DTYPES)}; got {dtype!r}.")
    if not _count(calls):
        raise ValueError(f"warm_up: calls is a positive integer (default {CALLS}); got {calls!r}.")
    if unavailable() is not None:
        return []
    from unrolled.kernels import release_outputs

    done = []
    for mode in ("forward", "train") if train else ("forward",):
        for cell in cells:
            for shape in shapes:
                point = _point(cell, shape, mode, calls, dtype)
                release_outputs()  # the warm-up's outputs are not kept for the program's calls
                done.append(point)
                if report is not None:
                    report(point)
    return done


def _model_inputs(model, batch_size: int, timesteps: int | None) -> list:
    """An array for each of the model's inputs: `batch_size` rows, None sizes `timesteps`."""
    import numpy as np

    if timesteps is not None and all(None not in t.shape[1:] for t in model.inputs):
        shapes = ", ".join(str(t.shape) for t in model.inputs)
        raise ValueError(f"warm_up_model: timesteps={timesteps} has nothing to set: the model's "
                         f"input shapes, {shapes}, fix every size but the batch. Leave "
                         f"timesteps out.")
    arrays = []
    for tensor in model.inputs:
        shape = []
        for axis, size in enumerate(tensor.shape):
            if axis == 0:
                if size is not None and size != batch_size:
                    raise ValueError(
                        f"warm_up_model: the model's input {tensor.name!r} takes batches of "
                        f"{size} (shape {tensor.shape}), not batch_size={batch_size}; pass "
                        f"batch_size={size}.")
                size = batch_size
            elif size is None:
                if timesteps is None:
                    raise ValueError(
                        f"warm_up_model: the model's input {tensor.name!r} has shape "
                        f"{tensor.shape}, with a size only known at call time; pass timesteps= "
                        f"(--timesteps), the length of the sequences it will get.")
                size = timesteps
            shape.append(size)
        if np.issubdtype(np.dtype(tensor.dtype), np.integer):
            arrays.append(np.ones(shape, dtype=tensor.dtype))     # token ids: 1, not padding
        else:
            arrays.append(np.linspace(-1, 1, int(np.prod(shape)), dtype=tensor.dtype)
                          .reshape(shape))
    return arrays


def warm_up_model(model, batch_size: int, *, timesteps: int | None = None,
                  train: bool = False, calls: int = CALLS,
                  report: Callable[[Warmed], None] | None = None) -> list[Warmed]:
    """Compile (or load from Numba's cache) every loop a model's calls at `batch_size` run.

    The calls run on a copy of the model (`copy.deepcopy`), so its weights, a stateful layer's
    states and its optimizer's state are as they were: `predict_on_batch` `calls` times on
    inputs of the model's input shapes, and with `train` as many `train_on_batch` steps, with
    the model's own optimizer (Adam if it is not compiled) and a mean-squared error against
    its own predictions (the loss does not change which loops run).

    Args:
        model: a `Sequential` or functional `Model` (built: its inputs' shapes known).
        batch_size: the rows of the batches it will get.
        timesteps: the sequence length, for inputs whose shape leaves it to call time.
        train: also run training steps.
        calls: calls each mode (default 7: every thread setting tried).
        report: called with each row as it finishes.

    Returns:
        A `Warmed` row for the forward calls and, with `train`, one for the training steps;
        `cell` is "model NAME" and `shape` the first input's shape. Empty when the compiled
        loops cannot run here (see `unavailable`).
    """
    import copy

    from unrolled.models.model import Model

    if not isinstance(model, Model):
        raise TypeError(f"warm_up_model: model is a Sequential or functional Model; got "
                        f"{type(model).__name__}. For a layer alone use warm_up(cells, shapes).")
    given = {"batch_size": batch_size, "calls": calls}
    if timesteps is not None:
        given["timesteps"] = timesteps
    for name, value in given.items():
        if not _count(value):
            raise ValueError(f"warm_up_model: {name} is a positive integer; got {value!r}.")
    try:
        model.inputs
    except ValueError as e:
        raise ValueError(f"warm_up_model: the model has no input shape yet. {e}") from None
    inputs = _model_inputs(model, int(batch_size), timesteps)
    if unavailable() is not None:
        return []
    from unrolled.kernels import release_outputs

    x = inputs if len(inputs) > 1 else inputs[0]
    label = f"model {getattr(model, 'name', type(model).__name__)}"
    shape = inputs[0].shape
    done = []

    def add(row: Warmed) -> None:
        release_outputs()
        done.append(row)
        if report is not None:
            report(row)

    forward = copy.deepcopy(model)
    add(_measure(label, shape, "forward", calls, [lambda: forward.predict_on_batch(x)]))
    if train:
        trained = copy.deepcopy(model)
        y = trained.predict_on_batch(x)
        optimizer = trained.optimizer if getattr(trained, "compiled", False) else "adam"
        trained.compile(optimizer=optimizer, loss="mse")
        add(_measure(label, shape, "train", calls, [lambda: trained.train_on_batch(x, y)]))
    return done


def main(args, model=None) -> int:
    """`python -m unrolled warmup`: the table of points as they finish, then a summary."""
    why = unavailable()
    if why is not None:
        print(why)
        return 0
    import numba

    settings = (f"{args.calls} calls a point" if model is not None
                else f"{args.dtype}, {args.calls} calls a point each direction")
    print(f"Compiling unrolled's loops for this machine (Numba {numba.__version__}, {settings}). "
          f"Each compiles once; later processes load it from Numba's cache.\n")
    print("| cell | shape | mode | first call s | all calls s | compiled | loaded from cache |")
    print("|---|---|---|---|---|---|---|")

    def report(p: Warmed) -> None:
        print(f"| {p.cell} | {p.shape} | {p.mode} | {p.first_seconds:.2f} | {p.seconds:.2f} | "
              f"{len(p.compiled)} | {len(p.loaded)} |", flush=True)

    start = time.perf_counter()
    if model is not None:
        try:
            points = warm_up_model(model, args.batch, timesteps=args.timesteps,
                                   train=args.train, calls=args.calls, report=report)
        except (TypeError, ValueError) as e:
            print(f"python -m unrolled warmup: {e}", file=sys.stderr)
            return 2
    else:
        points = warm_up(args.cells, args.shapes, train=args.train, dtype=args.dtype,
                         calls=args.calls, report=report)
    seconds = time.perf_counter() - start
    compiled = sorted({n for p in points for n in p.compiled})
    loaded = sorted({n for p in points for n in p.loaded} - set(compiled))
    paths = sorted({str(d.stats.cache_path) for d in _dispatchers()
                    if d.stats.cache_path is not None})
    print(f"\n{len(compiled)} functions compiled and {len(loaded)} loaded from the cache, "
          f"in {seconds:.1f} s.")
    if compiled:
        print("Compiled: " + ", ".join(compiled))
    print("Numba's cache: " + ", ".join(paths))
    return 0
