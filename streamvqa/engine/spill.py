"""The embedded server's default KV budget: host RAM up to a bound, then a disk spill.

Without a configured store the embedded server used to keep every block in process memory
(about 1.4 GB per stream-hour with the default model), so its memory was unbounded by
configuration. The default is now a host tier of `default_host_bytes()` that spills its least
recently used blocks to a per-process directory under the cache (docs/store.md, "Default
budget"). The spill is scratch space, not durability: nothing is recovered from it at start-up,
nothing is copied there at close, and directories of processes that are gone are removed.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from streamvqa.store.shm import pid_alive

HOST_CAP = 2 << 30  # at most 2 GiB of host RAM for blocks by default ...
RAM_SHARE = 4  # ... and at most a quarter of the machine's RAM ...
SHM_SHARE = 2  # ... and half of /dev/shm, where the host tier's segments live
MIN_HOST = 64 << 20


def default_host_bytes() -> int:
    """min(2 GiB, RAM/4, /dev/shm/2), at least 64 MiB."""
    out = HOST_CAP
    try:
        out = min(out, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // RAM_SHARE)
    except (ValueError, OSError):
        pass
    try:
        st = os.statvfs("/dev/shm")
        out = min(out, st.f_frsize * st.f_blocks // SHM_SHARE)
    except OSError:
        pass
    return max(MIN_HOST, out)


def spill_root() -> Path:
    """`$STREAMVQA_CACHE/kv-spill` (default `~/.cache/streamvqa/kv-spill`)."""
    return Path(os.environ.get("STREAMVQA_CACHE", Path.home() / ".cache" / "streamvqa")) / "kv-spill"


def spill_dir(root: Path | None = None) -> Path:
    """This process's spill directory: two servers never share one."""
    return (root or spill_root()) / str(os.getpid())


def is_spill(path: str | Path) -> bool:
    p = Path(path)
    return p.parent == spill_root() and p.name.isdigit()


def reap(root: Path | None = None) -> list[Path]:
    """Remove the spill directories of processes that no longer run; returns them."""
    root = root or spill_root()
    removed = []
    if not root.is_dir():
        return removed
    for d in root.iterdir():
        if d.is_dir() and d.name.isdigit() and int(d.name) != os.getpid() and not pid_alive(int(d.name)):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


def remove(path: str | Path) -> None:
    """Remove this process's spill directory (at engine close: its blocks are scratch)."""
    if is_spill(path):
        shutil.rmtree(path, ignore_errors=True)
