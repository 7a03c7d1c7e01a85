"""Command line: `python -m unrolled tour [--out DIR]`."""

from __future__ import annotations

import argparse
import sys

from unrolled import __version__


def main(argv: list[str] | None = None) -> int:
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
