"""`streamvqa eval frames|needle|hard|sweep`: wired into the main CLI through `add_parser(subparsers)`."""

from __future__ import annotations

import argparse

from streamvqa.cliargs import Parser
from streamvqa.evals import frames, hard, needle, sweep


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `eval` with the `frames`, `needle`, `hard` and `sweep` subcommands; each sets `func(args) -> int`."""
    ev = subparsers.add_parser("eval", help="accuracy evaluations of the default model")
    sub = ev.add_subparsers(dest="eval_command", required=True)
    frames.build_parser(sub.add_parser("frames", help=frames.__doc__.splitlines()[0])).set_defaults(func=frames.run)
    needle.build_parser(sub.add_parser("needle", help=needle.__doc__.splitlines()[0])).set_defaults(func=needle.run)
    hard.build_parser(sub.add_parser("hard", help=hard.__doc__.splitlines()[0])).set_defaults(func=hard.run)
    sweep.build_parser(sub.add_parser("sweep", help=sweep.__doc__.splitlines()[0])).set_defaults(func=sweep.run)
    return ev


add_parsers = add_parser  # the name streamvqa/cli.py looks up


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="streamvqa")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)
