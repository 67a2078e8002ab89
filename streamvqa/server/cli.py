"""``streamvqa serve`` and ``streamvqa demo`` subcommands (the main CLI calls :func:`add_parsers`)."""

from __future__ import annotations

import argparse
import sys


def _settings(args: argparse.Namespace):
    from .settings import ServerSettings

    return ServerSettings.from_env(
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        model=args.model,
        device=args.device,
        dtype=args.dtype,
        topology=getattr(args, "topology", None),
    )


def run_serve(args: argparse.Namespace) -> int:
    """``streamvqa serve``: exit code."""
    from .main import serve

    try:
        settings = _settings(args)
        if settings.topology != "embedded":
            raise ValueError(f"topology {settings.topology!r} is not implemented yet; use embedded")
    except ValueError as e:
        print(f"streamvqa serve: {e}", file=sys.stderr)
        return 2
    return serve(settings)


def run_demo(args: argparse.Namespace) -> int:
    """``streamvqa demo``: exit code."""
    from .main import demo

    try:
        settings = _settings(args)
    except ValueError as e:
        print(f"streamvqa demo: {e}", file=sys.stderr)
        return 2
    return demo(settings, question=args.question)


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Add ``serve`` and ``demo``; each sets ``func(args) -> int`` (the exit code)."""
    p = subparsers.add_parser("serve", help="run the HTTP/WebSocket server")
    p.add_argument("--host", default=None, help="bind address (default 127.0.0.1, env STREAMVQA_HOST)")
    p.add_argument("--port", type=int, default=None, help="port (default 8000, env STREAMVQA_PORT)")
    p.add_argument("--model", default=None, help='"default", "tiny:<family>" or a local HF directory')
    p.add_argument("--device", default=None, help="cpu or cuda:N")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    p.add_argument("--topology", default=None, choices=["embedded", "multi"],
                   help="embedded (one process; default). multi is reserved")
    p.set_defaults(func=run_serve)

    d = subparsers.add_parser("demo", help="server + sample stream + a question over the WebSocket, then stop")
    d.add_argument("--model", default=None, help='model to load (default "default")')
    d.add_argument("--device", default=None, help="cpu or cuda:N")
    d.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    d.add_argument("--question", default=None, help="the question to ask (default: one about the sample)")
    d.set_defaults(func=run_demo)


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python -m streamvqa.server.cli serve ...``)."""
    parser = argparse.ArgumentParser(prog="streamvqa")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
