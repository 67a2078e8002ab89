"""Descriptors + leases: another process maps host-tier blocks without copies through sockets."""

import multiprocessing as mp
import os
import time

import pytest

from streamvqa.store.config import DiskTierConfig, HostTierConfig, TieredStoreConfig
from streamvqa.store.errors import BlockNotFoundError
from streamvqa.store.format import encoded_size
from streamvqa.store.leases import BlockDescriptor, LeaseExpiredError, map_block
from streamvqa.store.tiered import TieredStore
from tests.store.conftest import SHM_PREFIX
from tests.store.helpers import assert_same_block, make_block
from tests.store.procs import map_and_check

BLOCK = encoded_size(make_block(0), "fp")


@pytest.fixture
def store(tmp_path, shm_guard):
    cfg = TieredStoreConfig(
        fingerprint="fp",
        tiers=[
            HostTierConfig(budget_bytes=int(BLOCK * 3.5), shm_prefix=SHM_PREFIX),
            DiskTierConfig(path=tmp_path / "kv", budget_bytes=BLOCK * 100),
        ],
    )
    with TieredStore(cfg) as s:
        yield s


@pytest.mark.slow
def test_second_process_maps_leased_blocks(store):
    for i in range(6):
        store.put(make_block(i))
    store.flush()
    assert store.tier_of("cam-1", 0) == "disk"
    descs = store.lease("cam-1", [0, 5], ttl_s=120)  # 0 is cold: promoted into shared memory now
    assert store.tier_of("cam-1", 0) == "host"
    assert {d.lease_id for d in descs} == {descs[0].lease_id}

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=map_and_check, args=([d.to_dict() for d in descs], child))
    proc.start()
    assert parent.poll(60)
    report = parent.recv()
    proc.join(30)
    assert report == [(0, "ok"), (5, "ok")]
    # the reader's exit (and its resource tracker) did not unlink the owner's segments
    for d in descs:
        assert os.path.exists(f"/dev/shm/{d.segment}")
    assert_same_block(make_block(0), store.get_many("cam-1", [0])[0])


def test_leased_blocks_are_not_evicted_until_released_or_expired(store):
    for i in range(3):
        store.put(make_block(i))
    (desc,) = store.lease("cam-1", [0], ttl_s=60)
    for i in range(3, 9):
        store.put(make_block(i))
        assert store.tiers[0].nbytes() <= store.tiers[0].budget_bytes
    store.flush()
    assert store.tier_of("cam-1", 0) == "host"  # oldest, yet pinned
    with map_block(desc) as mapped:
        assert_same_block(make_block(0), mapped.block)
    assert store.release(desc.lease_id)
    for i in range(9, 13):
        store.put(make_block(i))
    store.flush()
    assert store.tier_of("cam-1", 0) == "disk"
    with pytest.raises(BlockNotFoundError):  # its segment was unlinked when it was demoted
        map_block(desc)

    clock = [1000.0]
    store.leases.clock = lambda: clock[0]
    store.lease("cam-1", [9], ttl_s=5)
    store.put(make_block(13))
    store.flush()
    assert store.tier_of("cam-1", 9) == "host"
    clock[0] += 6  # the lease expired: no longer pinned
    for i in range(14, 17):
        store.put(make_block(i))
    store.flush()
    assert store.tier_of("cam-1", 9) == "disk"


def test_full_host_of_leased_blocks_puts_go_one_tier_down(store):
    for i in range(3):
        store.put(make_block(i))
    store.lease("cam-1", [0, 1, 2], ttl_s=60)
    store.put(make_block(3))  # no evictable block left in host RAM
    assert store.tier_of("cam-1", 3) == "disk"
    assert [store.tier_of("cam-1", i) for i in range(3)] == ["host"] * 3
    assert_same_block(make_block(3), store.get_many("cam-1", [3])[0])


def test_expired_or_unknown_descriptors_are_refused(store):
    store.put(make_block(0))
    (desc,) = store.lease("cam-1", [0], ttl_s=60)
    old = BlockDescriptor.from_dict({**desc.to_dict(), "expires_at": time.time() - 1})
    with pytest.raises(LeaseExpiredError):
        map_block(old)
    with pytest.raises(BlockNotFoundError):
        store.lease("cam-1", [7])
    with pytest.raises(BlockNotFoundError):
        map_block({**desc.to_dict(), "segment": f"{SHM_PREFIX}-1-000000-999999"})


READER = """
import json, sys
from streamvqa.store.leases import map_block
for d in json.loads(sys.argv[1]):
    with map_block(d) as m:
        print(d["index"], repr(float(m.block.keys.float().sum())))
"""


@pytest.mark.slow
def test_independent_reader_exit_does_not_unlink_segments(store):
    """gh-82300: a plain SharedMemory attach in a standalone process gets the segment unlinked by
    that process's resource tracker at exit. map_block must not register it."""
    import json
    import subprocess
    import sys

    for i in range(3):
        store.put(make_block(i))
    descs = store.lease("cam-1", [0, 1, 2], ttl_s=120)
    out = subprocess.run(
        [sys.executable, "-c", READER, json.dumps([d.to_dict() for d in descs])],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=os.getcwd(),
    )
    assert out.returncode == 0, out.stderr
    assert "leaked" not in out.stderr
    sums = {int(a): float(b) for a, b in (line.split() for line in out.stdout.splitlines())}
    assert sums == {i: float(make_block(i).keys.float().sum()) for i in range(3)}
    for d in descs:
        assert os.path.exists(f"/dev/shm/{d.segment}")
    for got in store.get_many("cam-1", [0, 1, 2]):
        assert_same_block(make_block(got.index), got)
