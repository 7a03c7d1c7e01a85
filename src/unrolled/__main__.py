"""Command line: `python -m unrolled tour [--out DIR]`."""

from __future__ import annotations

import argparse
import sys

from unrolled import __version__


def _bench(argv: list[str]) -> int:
    """`python -m unrolled bench ...`: run benchmarks/bench.py of the source checkout."""
    import runpy
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "bench.py"
    if not script.is_file():
        print(f"The benchmark ships with the source checkout ({script} not found).", file=sys.stderr)
        return 2
    return runpy.run_path(str(script), run_name="unrolled_bench")["main"](argv)


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
    commands.add_parser("bench", help="time unrolled against PyTorch, Keras and onnxruntime "
                        "(python -m unrolled bench --help)")
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "tour":
        from unrolled import tour as tour_module

        diffs = tour_module.run(args.out, seed=args.seed)
        return 0 if max(diffs.values()) < 1e-5 else 1
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
