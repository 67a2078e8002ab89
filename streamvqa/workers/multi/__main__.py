"""``python -m streamvqa.workers.multi kvstore|encoder|answer --config FILE`` (what the supervisor
runs; ``streamvqa worker ...`` is the same for containers)."""

from __future__ import annotations

import argparse
import logging
import sys

from streamvqa.workers.multi.config import ROLES, MultiConfig


def run_worker(role: str, config_path: str, fingerprint: str | None = None, log_level: str = "info") -> int:
    logging.basicConfig(level=log_level.upper(), format=f"%(asctime)s {role} %(levelname)s %(name)s: %(message)s")
    try:
        config = MultiConfig.read(config_path)
    except (OSError, ValueError) as e:
        print(f"streamvqa worker {role}: bad config {config_path}: {e}".splitlines()[0], file=sys.stderr)
        return 2
    if role == "kvstore":
        from streamvqa.workers.multi.kvstore import serve

        serve(config, fingerprint)
    elif role == "encoder":
        from streamvqa.workers.multi.encoder import serve

        serve(config)
    else:
        from streamvqa.workers.multi.answer import serve

        serve(config)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m streamvqa.workers.multi")
    p.add_argument("role", choices=ROLES)
    p.add_argument("--config", required=True)
    p.add_argument("--fingerprint", default=None, help="kvstore: open the store at start (else on first client)")
    p.add_argument("--log-level", default="info")
    args = p.parse_args(argv)
    return run_worker(args.role, args.config, args.fingerprint, args.log_level)


if __name__ == "__main__":
    sys.exit(main())
