"""``streamvqa serve`` and ``streamvqa demo`` subcommands (the main CLI calls :func:`add_parsers`)."""

from __future__ import annotations

import argparse
import sys

from streamvqa.cliargs import Parser

LOOPBACK = "127.0.0.0/8,::1/128"


def _settings(args: argparse.Namespace):
    from .settings import ServerSettings

    return ServerSettings.from_env(
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        model=args.model,
        device=args.device,
        dtype=args.dtype,
        topology=getattr(args, "topology", None),
        answer_engine=getattr(args, "answer_engine", None),
        auth="off" if getattr(args, "insecure", False) else None,
        api_keys_file=getattr(args, "api_keys_file", None),
        media_root=getattr(args, "media_root", None),
        allow_private_networks=True if getattr(args, "allow_private_sources", False) else None,
        allowed_networks=_allowed_networks(args),
    )


def _allowed_networks(args: argparse.Namespace) -> str | None:
    """``--allow-loopback-sources`` adds the loopback networks to STREAMVQA_ALLOWED_NETWORKS."""
    if not getattr(args, "allow_loopback_sources", False):
        return None
    import os

    env = os.environ.get("STREAMVQA_ALLOWED_NETWORKS", "").strip()
    return f"{env},{LOOPBACK}" if env else LOOPBACK


def run_serve(args: argparse.Namespace) -> int:
    """``streamvqa serve``: exit code."""
    from .main import serve

    try:
        settings = _settings(args)
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


def run_worker(args: argparse.Namespace) -> int:
    """``streamvqa worker kvstore|encoder|answer``: one process of the multi topology (containers).
    Configured by ``--config FILE`` (what ``serve --topology=multi`` writes) or ``STREAMVQA_*``."""
    from streamvqa.workers.multi.__main__ import run_worker as run
    from streamvqa.workers.multi.config import ROLE_RE

    if not ROLE_RE.match(args.role):
        print(f"streamvqa worker: role must be kvstore, encoder[-N] or answer[-N], not {args.role!r}", file=sys.stderr)
        return 2
    path = args.config
    if path is None:
        from .app import multi_config

        try:
            settings = _worker_settings(args)
            if settings.run_dir is None and settings.worker_transport == "ipc":
                raise ValueError("set STREAMVQA_RUN_DIR (shared with the server) or STREAMVQA_WORKER_TRANSPORT=tcp")
            path = str(multi_config(settings).write())
        except ValueError as e:
            print(f"streamvqa worker: {e}", file=sys.stderr)
            return 2
    return run(args.role, path, args.fingerprint, args.log_level)


def _worker_settings(args: argparse.Namespace):
    from .settings import ServerSettings

    return ServerSettings.from_env(model=args.model, device=args.device, topology="multi")


def run_keys(args: argparse.Namespace) -> int:
    """``streamvqa keys new|hash``: exit code."""
    from .auth import keys_main

    return keys_main(args)


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Add ``serve``, ``demo`` and ``keys``; each sets ``func(args) -> int`` (the exit code)."""
    p = subparsers.add_parser(
        "serve", help="run the HTTP/WebSocket server",
        description="Run the HTTP/WebSocket server. Auth is on: give API key hashes (`streamvqa keys new`) "
                    "with --api-keys-file, or --insecure on a trusted network. Every setting also has a "
                    "STREAMVQA_<NAME> environment variable (streamvqa/server/settings.py, docs/security.md, "
                    "docs/store.md). Exit 2: a bad flag or setting, or no API keys.")
    p.add_argument("--host", default=None, help="bind address (default 127.0.0.1, env STREAMVQA_HOST)")
    p.add_argument("--port", type=int, default=None, help="port (default 8000, env STREAMVQA_PORT)")
    p.add_argument("--model", default=None, help='"default", "tiny:<family>" or a local HF directory')
    p.add_argument("--device", default=None, help="cpu or cuda:N")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    p.add_argument("--topology", default=None, choices=["embedded", "multi"],
                   help="embedded (one process; default) or multi (kvstore, encoder, answer worker processes)")
    p.add_argument("--answer-engine", default=None, choices=["transformers", "vllm"],
                   help="who decodes answers: this process's model (default) or a vLLM process "
                        "(`bash tools/setup.sh --vllm`; docs/vllm.md; env STREAMVQA_ANSWER_ENGINE)")
    p.add_argument("--api-keys-file", default=None,
                   help="API key hashes, name:hash per line or JSON (env STREAMVQA_API_KEYS_FILE)")
    p.add_argument("--media-root", default=None, metavar="DIR",
                   help="serve file sources (file:///... URLs or paths) from inside DIR only; without it "
                        "file sources are refused (env STREAMVQA_MEDIA_ROOT)")
    p.add_argument("--allow-loopback-sources", action="store_true",
                   help=f"let rtsp/http sources be on this host ({LOOPBACK}; added to env "
                        "STREAMVQA_ALLOWED_NETWORKS, a comma-separated CIDR list)")
    p.add_argument("--allow-private-sources", action="store_true",
                   help="let rtsp/http sources reach any private, loopback or link-local address "
                        "(env STREAMVQA_ALLOW_PRIVATE_NETWORKS=true); the default allows public addresses only")
    p.add_argument("--insecure", action="store_true",
                   help="run without API keys (same as STREAMVQA_AUTH=off); only on a trusted network")
    p.set_defaults(func=run_serve)

    w = subparsers.add_parser("worker", help="run one worker process of the multi topology (containers)")
    w.add_argument("role", help="kvstore, encoder[-N] or answer[-N] (one encoder/answer worker per device)")
    w.add_argument("--config", default=None, help="config file written by serve --topology=multi (else STREAMVQA_*)")
    w.add_argument("--model", default=None, help='model (without --config); "default", "tiny:<family>" or a dir')
    w.add_argument("--device", default=None, help="device (without --config)")
    w.add_argument("--fingerprint", default=None, help="kvstore: open the store at start (else on first client)")
    w.add_argument("--log-level", default="info")
    w.set_defaults(func=run_worker)

    k = subparsers.add_parser("keys", help="make API keys and their hashes (for STREAMVQA_API_KEYS_FILE)")
    ks = k.add_subparsers(dest="keys_command", required=True)
    kn = ks.add_parser("new", help="print a new random key and its hash")
    kn.add_argument("--name", default=None, help="key name for the printed name:hash line")
    kn.add_argument("--pbkdf2", action="store_true", help="salted PBKDF2 hash instead of sha256")
    kh = ks.add_parser("hash", help="print the hash of a key (argument, stdin or prompt)")
    kh.add_argument("key", nargs="?", default=None, help="the key; omit or '-' to read it from stdin")
    kh.add_argument("--pbkdf2", action="store_true", help="salted PBKDF2 hash (for keys people chose)")
    k.set_defaults(func=run_keys)

    d = subparsers.add_parser("demo", help="server + sample stream + a question over the WebSocket, then stop")
    d.add_argument("--model", default=None, help='model to load (default "default")')
    d.add_argument("--device", default=None, help="cpu or cuda:N")
    d.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    d.add_argument("--question", default=None, help="the question to ask (default: one about the sample)")
    d.set_defaults(func=run_demo)


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python -m streamvqa.server.cli serve ...``)."""
    from .allocator import configure

    configure()
    parser = Parser(prog="streamvqa")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
