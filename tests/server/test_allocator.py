"""glibc malloc set-up at process start (streamvqa/server/allocator.py): a large buffer freed and
allocated again is still its own mapping (returned to the system on free), not heap memory that
glibc keeps after raising its mmap threshold."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from streamvqa.server.allocator import ARENA_MAX, MMAP_THRESHOLD, configure

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")

# frees an 8 MiB buffer, allocates another, reports glibc's bytes in mmapped chunks
PROBE = r"""
import ctypes, json, sys
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
done = {}
if sys.argv[1] == "tune":
    from streamvqa.server.allocator import configure
    done = configure()
first = bytearray(8 << 20)
del first
second = bytearray(8 << 20)
print(json.dumps({"set": done, "mmapped": libc.mallinfo2().hblkhd}))
"""


def probe(mode: str, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "STREAMVQA_MALLOC_TUNE"}
    out = subprocess.run([sys.executable, "-c", PROBE, mode], env={**clean, **env}, capture_output=True, text=True,
                         timeout=60, check=True)
    return json.loads(out.stdout)


@pytest.mark.slow
def test_large_buffers_stay_mappings_after_configure() -> None:
    plain, tuned = probe("plain"), probe("tune")
    assert plain["mmapped"] < 8 << 20  # glibc's default: the second buffer came from the heap
    assert tuned["set"] == {"mmap_threshold": MMAP_THRESHOLD, "arena_max": ARENA_MAX}
    assert tuned["mmapped"] >= 8 << 20


@pytest.mark.slow
def test_glibc_environment_wins_and_tuning_can_be_turned_off() -> None:
    assert probe("tune", MALLOC_ARENA_MAX="2")["set"] == {"mmap_threshold": MMAP_THRESHOLD}
    off = probe("tune", STREAMVQA_MALLOC_TUNE="0")
    assert off["set"] == {} and off["mmapped"] < 8 << 20


def test_configure_reads_the_given_environment() -> None:
    assert configure({"STREAMVQA_MALLOC_TUNE": "off"}) == {}
    assert configure({"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_ARENA_MAX": "4"}) == {}
