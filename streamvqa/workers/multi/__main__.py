"""``python -m streamvqa.workers.multi kvstore|encoder|answer --config FILE`` (what the supervisor
runs; ``streamvqa worker ...`` is the same for containers)."""

from __future__ import annotations

import argparse
import logging
import sys

from streamvqa.workers.multi.config import ROLE_RE, MultiConfig


def run_worker(role: str, config_path: str, fingerprint: str | None = None, log_level: str = "info") -> int:
    logging.basicConfig(level=log_level.upper(), format=f"%(asctime)s {role} %(levelname)s %(name)s: %(message)s")
    try:
        config = MultiConfig.read(config_path)
    except (OSError, ValueError) as e:
        print(f"streamvqa worker {role}: bad config {config_path}: {e}".splitlines()[0], file=sys.stderr)
        return 2
    if role not in config.roles():
        print(f"streamvqa worker: no role {role!r} in this config ({', '.join(config.roles())})", file=sys.stderr)
        return 2
    if role == "kvstore":
        from streamvqa.workers.multi.kvstore import serve

        serve(config, fingerprint)
    elif role.startswith("encoder"):
        from streamvqa.workers.multi.encoder import serve

        serve(config, role)
    else:
        from streamvqa.workers.multi.answer import serve

        serve(config, role)
    return 0


def main(argv: list[str] | None = None) -> int:
    from streamvqa.server.allocator import configure

    configure()  # before the worker starts threads (docs/deploy.md, "Memory allocator")
    p = argparse.ArgumentParser(prog="python -m streamvqa.workers.multi")
    p.add_argument("role", help="kvstore, encoder[-N] or answer[-N]")
    p.add_argument("--config", required=True)
    p.add_argument("--fingerprint", default=None, help="kvstore: open the store at start (else on first client)")
    p.add_argument("--log-level", default="info")
    args = p.parse_args(argv)
    if not ROLE_RE.match(args.role):
        p.error(f"role must be kvstore, encoder[-N] or answer[-N], not {args.role!r}")
    return run_worker(args.role, args.config, args.fingerprint, args.log_level)


if __name__ == "__main__":
    sys.exit(main())
