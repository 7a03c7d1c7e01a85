"""Command line: `python -m unrolled tour [--out DIR]`, `python -m unrolled explain MODEL`,
`python -m unrolled warmup` and `python -m unrolled bench`."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

from unrolled import __version__
from unrolled.kernels import warmup as _warmup


def _bench(argv: list[str]) -> int:
    """`python -m unrolled bench ...`: run benchmarks/bench.py of the source checkout."""
    import runpy
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "bench.py"
    if not script.is_file():
        print(f"The benchmark ships with the source checkout ({script} not found).",
              file=sys.stderr)
        return 2
    return runpy.run_path(str(script), run_name="unrolled_bench")["main"](argv)


def _arg(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse `type` from a parser that raises ValueError: argparse then names the flag."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = parse.__name__
    return convert


def _positive(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise ValueError(f"{text!r} is not a positive integer")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:  # the benchmark parses its own options
        return _bench(argv[1:])
    parser = argparse.ArgumentParser(
        prog="python -m unrolled",
        description="Keras's recurrent layers in NumPy, with every number in view.",
    )
    parser.add_argument("--version", action="version", version=f"unrolled {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    tour = commands.add_parser(
        "tour", help="walk through SimpleRNNCell, SimpleRNN, StackedRNNCells and RNN",
        description="The notebook's walkthrough as a program, on a built-in sample input.")
    tour.add_argument("--out", default="unrolled-tour", metavar="DIR",
                      help="where to write the tour's files (default: ./unrolled-tour)")
    tour.add_argument("--seed", type=int, default=0, help="seed for the weights (default 0)")
    tour.add_argument("--no-figures", action="store_true",
                      help="write only the text and arrays, not the diagrams/animations/page")
    commands.add_parser("bench", help="time unrolled against PyTorch, Keras and onnxruntime "
                        "(python -m unrolled bench --help)")
    explain = commands.add_parser(
        "explain", help="explain a model file's recurrent layers: text, diagrams, GIFs, a page",
        description="Load MODEL (a .keras or .h5 file, or module:NAME / file.py:NAME naming a "
                    "layer or model built in Python, or a function returning one), run it on "
                    "the input, and write for each recurrent layer: explain.txt, rolled, "
                    "unrolled and cell_inside (.svg, .png), cell.gif, sequence.gif and the "
                    "interactive index.html.")
    explain.add_argument("model", metavar="MODEL")
    explain.add_argument("--input", metavar="X.npy", help="input array (batch, timesteps, "
                         "features); default a small random one of the model's input size")
    explain.add_argument("--out", default="unrolled-explain", metavar="DIR",
                         help="where to write the files (default: ./unrolled-explain)")
    warmup = commands.add_parser(
        "warmup", help="compile the compiled loops for this machine before they are needed",
        description="With Numba installed, each compiled loop compiles at the first call that "
                    "needs it (seconds to half a minute on a new machine) and is loaded from "
                    "Numba's cache afterwards. This calls a layer of each cell at each shape as "
                    "often as the kernels' choices take to try every form, so that a later "
                    "process (a service, a notebook, a container built with this step) only "
                    "loads them. Shapes are batch x timesteps x features x units; --model "
                    "warms a whole model instead.")
    warmup.add_argument("--cells", type=_arg(_warmup.parse_cells),
                        help="comma-separated cells (default: all three)")
    warmup.add_argument("--shapes", type=_arg(_warmup.parse_shapes), metavar="BxTxFxU,...",
                        help="the shapes your program calls (default: "
                             + ",".join("x".join(map(str, s)) for s in _warmup.DEFAULT_SHAPES)
                             + ")")
    warmup.add_argument("--model", metavar="MODEL",
                        help="instead of cells and shapes, a model: a .keras or .h5 file, or "
                             "module:NAME / file.py:NAME (as explain takes), called on batches "
                             "of --batch rows")
    warmup.add_argument("--batch", type=_arg(_positive), metavar="N",
                        help="with --model: the rows of the batches it will get")
    warmup.add_argument("--timesteps", type=_arg(_positive), metavar="T",
                        help="with --model: the sequence length, where its input shape leaves "
                             "it open")
    warmup.add_argument("--train", action="store_true",
                        help="also compile the training loops (train_on_batch)")
    warmup.add_argument("--dtype", choices=_warmup.DTYPES,
                        help="the layers' dtype (default float32; a model has its own)")
    warmup.add_argument("--calls", type=_arg(_positive), default=_warmup.CALLS,
                        help=f"calls a point, each direction (default {_warmup.CALLS}: every "
                             "thread setting tried)")
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "tour":
        from unrolled import tour as tour_module

        diffs = tour_module.run(args.out, seed=args.seed, figures=not args.no_figures)
        return 0 if max(diffs.values()) < 1e-5 else 1
    if args.command == "explain":
        return _explain(args.model, args.input, args.out)
    if args.command == "warmup":
        if args.model is not None:
            if args.cells is not None or args.shapes is not None or args.dtype is not None:
                warmup.error("--model takes the place of --cells, --shapes and --dtype; give "
                             "one or the other")
            if args.batch is None:
                warmup.error("--model needs --batch N, the rows of the batches the model "
                             "will get")
            return _warmup.main(args, load_object(args.model, "warmup"))
        if args.batch is not None or args.timesteps is not None:
            warmup.error("--batch and --timesteps go with --model")
        args.cells = args.cells or list(_warmup.CELLS)
        args.shapes = args.shapes or list(_warmup.DEFAULT_SHAPES)
        args.dtype = args.dtype or "float32"
        return _warmup.main(args)
    return 2  # pragma: no cover - argparse rejects unknown commands


def load_object(spec: str, command: str = "explain") -> object:
    """A model file through `unrolled.load_model`, or `module:NAME` / `file.py:NAME` in Python.

    NAME may be a layer or model, or a function returning one.
    """
    import os

    if ":" in spec and not os.path.exists(spec):
        import importlib
        import importlib.util

        source, name = spec.rsplit(":", 1)
        if source.endswith(".py"):
            module_spec = importlib.util.spec_from_file_location("unrolled_user_model", source)
            if module_spec is None or not os.path.exists(source):
                raise SystemExit(f"{command}: no such file {source!r}.")
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(source)
        if not hasattr(module, name):
            raise SystemExit(f"{command}: {source} defines no {name!r}.")
        obj = getattr(module, name)
        return obj() if callable(obj) and not hasattr(obj, "cell") and not hasattr(obj, "layers") \
            else obj
    if not os.path.exists(spec):
        raise SystemExit(f"{command}: no such model file {spec!r}.")
    try:
        from unrolled import load_model
    except ImportError:
        try:
            from unrolled.saving import load_model
        except ImportError:
            raise SystemExit(f"{command}: this unrolled has no load_model (the saving package) "
                             "yet; pass module:NAME or file.py:NAME naming a layer built in "
                             "Python.")
    return load_model(spec)


def _explain(model: str, input_path: str | None, out: str) -> int:
    import numpy as np

    from unrolled.explain.files import explain_to_dir

    obj = load_object(model)
    x = np.load(input_path) if input_path else None
    written = explain_to_dir(obj, x, out)
    print(f"\nWrote {len(written)} files to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
