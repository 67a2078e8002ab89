"""POSIX shared-memory segments owned by the store: naming, creation without the resource
tracker, and the janitor that reclaims segments of dead processes.

Python 3.11's `multiprocessing.resource_tracker` registers every `SharedMemory` it sees,
created or attached, and unlinks them when *that* process exits (CPython gh-82300). The store
must decide segment lifetimes itself, so every segment is unregistered right after creation or
attach (3.13+: ``track=False``) and unlinked explicitly by its owner. A crashed owner leaves its
segments behind; names carry the owner's PID, and `janitor` unlinks those whose owner is gone.

Segment names: ``{prefix}-{pid}-{token}-{n}`` (token: random per process, n: counter).
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
import sys
from multiprocessing import resource_tracker, shared_memory

try:
    import _posixshmem  # CPython's shm_open/shm_unlink wrapper (POSIX only)
except ImportError:  # pragma: no cover - non-POSIX
    _posixshmem = None

SHM_DIR = "/dev/shm"
_TRACK_KW = sys.version_info >= (3, 13)
_token = secrets.token_hex(3)
_counter = itertools.count()


def new_segment_name(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{_token}-{next(_counter)}"


# SharedMemory hides its descriptor, mapping and tracked name; the workarounds below need them
# (hence the SLF001 exemptions: stdlib internals, not another module of ours).
def _untrack(seg: shared_memory.SharedMemory) -> None:
    if not _TRACK_KW:
        resource_tracker.unregister(seg._name, "shared_memory")  # type: ignore[attr-defined]  # noqa: SLF001
    # The mapping stays valid without the descriptor; one fd per segment would exhaust ulimit -n.
    fd = getattr(seg, "_fd", -1)
    if fd >= 0:
        os.close(fd)
        seg._fd = -1  # type: ignore[attr-defined]  # noqa: SLF001


def create_segment(name: str, size: int) -> shared_memory.SharedMemory:
    """Create an owner-only (0o600) segment that no resource tracker will unlink."""
    kw = {"track": False} if _TRACK_KW else {}
    seg = shared_memory.SharedMemory(name=name, create=True, size=size, **kw)
    try:
        # Reserve the pages now: a full /dev/shm then fails here with ENOSPC instead of killing
        # the process with SIGBUS when the mapping is first written.
        if getattr(seg, "_fd", -1) >= 0 and hasattr(os, "posix_fallocate"):
            os.posix_fallocate(seg._fd, 0, size)  # type: ignore[attr-defined]  # noqa: SLF001
    except OSError:
        _untrack(seg)
        release_segment(seg, unlink=True)
        raise
    _untrack(seg)
    return seg


def attach_segment(name: str) -> shared_memory.SharedMemory:
    """Map an existing segment (reader side) without letting this process's tracker unlink it."""
    kw = {"track": False} if _TRACK_KW else {}
    seg = shared_memory.SharedMemory(name=name, create=False, **kw)
    _untrack(seg)
    return seg


def unlink_segment(name: str) -> bool:
    """Remove a segment name (mappings stay valid until closed). False if it did not exist."""
    name = name.lstrip("/")
    try:
        if _posixshmem is not None:
            _posixshmem.shm_unlink("/" + name)
        else:  # pragma: no cover
            os.unlink(os.path.join(SHM_DIR, name))
        return True
    except FileNotFoundError:
        return False


def release_segment(seg: shared_memory.SharedMemory, *, unlink: bool) -> None:
    """Close our mapping, and unlink the name if we own it."""
    name = seg.name
    try:
        seg.close()
    except BufferError:  # a zero-copy view still exists; the mapping dies with its last view
        # drop our handle on it, or SharedMemory.__del__ tries to close it again later and
        # reports "BufferError: cannot close exported pointers exist" (the views keep it alive)
        seg._mmap = None  # type: ignore[attr-defined]  # noqa: SLF001
        seg.close()  # the rest (file descriptor) closes normally
    if unlink:
        unlink_segment(name)


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def list_segments(prefix: str) -> list[tuple[str, int]]:
    """(name, owner pid) of every segment in /dev/shm that follows our naming."""
    pattern = re.compile(rf"^{re.escape(prefix)}-(\d+)-([0-9a-f]+)-(\d+)$")
    try:
        names = os.listdir(SHM_DIR)
    except FileNotFoundError:  # pragma: no cover - no /dev/shm
        return []
    out = []
    for n in names:
        m = pattern.match(n)
        if m:
            out.append((n, int(m.group(1))))
    return out


def janitor(prefix: str = "streamvqa") -> list[str]:
    """Unlink leftover segments whose owning process is dead; returns the names removed.

    Run at start-up by the process that owns the host tier. A recycled PID keeps a dead
    owner's segments alive until the next run after that PID exits (never frees live data).
    """
    removed = []
    for name, pid in list_segments(prefix):
        if pid != os.getpid() and not pid_alive(pid) and unlink_segment(name):
            removed.append(name)
    return removed
