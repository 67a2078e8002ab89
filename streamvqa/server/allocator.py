"""glibc malloc settings for a long-running process, applied at start (before threads).

With glibc's defaults the embedded server's RSS grew about 15 GiB an hour more than its KV bytes
(docs/benchmarks.md, "Soak"): tensors of a few MiB (a frame, a layer of a stream's window or an
answer cache) are allocated and freed per frame and per question; after the first such free
glibc raises its mmap threshold (up to 32 MiB), so later ones come from the heap and from
per-thread arenas (up to 8 per core, 64 MiB each), which keep freed memory instead of returning
it. Two settings stop that:

- ``M_MMAP_THRESHOLD`` 128 KiB, fixed (setting it turns the dynamic raise off): every large
  buffer is its own mapping, returned to the system when freed;
- ``M_ARENA_MAX`` 4: ingest, answer and torch threads share a few arenas for small objects.

A value already given in glibc's own environment variables (``MALLOC_MMAP_THRESHOLD_``,
``MALLOC_ARENA_MAX``; the Docker image sets both) is left alone; ``STREAMVQA_MALLOC_TUNE=0``
skips this module (e.g. under jemalloc/tcmalloc via ``LD_PRELOAD``). Not glibc: nothing to do.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys
from collections.abc import Mapping

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc malloc.h
M_ARENA_MAX = -8
MMAP_THRESHOLD = 128 << 10
ARENA_MAX = 4
# setting -> (mallopt parameter, glibc's env variable for it, our default)
SETTINGS = {
    "mmap_threshold": (M_MMAP_THRESHOLD, "MALLOC_MMAP_THRESHOLD_", MMAP_THRESHOLD),
    "arena_max": (M_ARENA_MAX, "MALLOC_ARENA_MAX", ARENA_MAX),
}


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it (musl's mallopt is a no-op)
    except (OSError, AttributeError):
        return None
    return libc


def configure(env: Mapping[str, str] | None = None) -> dict[str, int]:
    """Apply the settings glibc's environment does not already fix; returns what was set."""
    env = os.environ if env is None else env
    if env.get("STREAMVQA_MALLOC_TUNE", "1") in ("0", "false", "off", "no"):
        return {}
    libc = _glibc()
    if libc is None:
        return {}
    done = {}
    for name, (param, env_name, value) in SETTINGS.items():
        if env.get(env_name):  # glibc read it at start-up already
            continue
        if libc.mallopt(ctypes.c_int(param), ctypes.c_int(value)) == 1:
            done[name] = value
        else:
            log.warning("mallopt(%s, %d) refused", name, value)
    return done
