import os

import pytest
import redis

from streamvqa.store import format as fmt
from streamvqa.store import shm
from streamvqa.store.config import DiskTierConfig, HostTierConfig, RedisTierConfig
from streamvqa.store.keys import BlockKey
from streamvqa.store.tiers import DiskTier, HostTier, RedisTier
from tests.store.conftest import SHM_PREFIX
from tests.store.helpers import assert_same_block, make_block


def real_bytes(kind: str, tier, redis_url: str | None) -> int:
    """What the backend really holds, measured outside the tier's own accounting."""
    if kind == "host":
        return sum(os.stat(f"/dev/shm/{tier.segment(k).name}").st_size for k in tier.keys())
    if kind == "disk":
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(tier.root) for f in fs)
    client = redis.Redis.from_url(redis_url)
    total = sum(client.strlen(k) for k in client.scan_iter("streamvqa:*"))
    client.close()
    return total


@pytest.fixture(params=["host", "disk", "redis"])
def tier(request, tmp_path, shm_guard):
    kind = request.param
    url = None
    if kind == "host":
        t = HostTier(HostTierConfig(budget_bytes=1 << 20, shm_prefix=SHM_PREFIX))
    elif kind == "disk":
        t = DiskTier(DiskTierConfig(path=tmp_path / "kv", budget_bytes=1 << 20))
    else:
        url = request.getfixturevalue("redis_url")
        t = RedisTier(RedisTierConfig(url=url, budget_bytes=1 << 20))
    yield kind, t, url
    t.close()


def test_put_get_delete_and_accounting(tier):
    kind, t, url = tier
    blocks = {i: make_block(i) for i in range(5)}
    keys = {i: BlockKey("fp", "cam-1", i) for i in blocks}
    sizes = {}
    for i, b in blocks.items():
        data = (fmt.encode(b, "fp"), fmt.plan(b, "fp"), b)[i % 3]  # bytes, planned, Block
        sizes[i] = t.put(keys[i], data)
    assert t.nbytes() == sum(sizes.values()) == real_bytes(kind, t, url)
    assert sorted(t.keys()) == sorted(keys.values())
    for i, b in blocks.items():
        assert t.contains(keys[i]) and t.size_of(keys[i]) == sizes[i]
        assert_same_block(b, fmt.decode(t.get(keys[i]), expect_fingerprint="fp"))
    got = t.get_many([keys[3], BlockKey("fp", "cam-1", 99), keys[0]])
    assert got[1] is None and fmt.decode(got[0]).index == 3 and fmt.decode(got[2]).index == 0
    head = t.read(keys[2], 0, 64)
    assert head == bytes(t.get(keys[2])[:64])

    assert t.delete(keys[1]) and not t.delete(keys[1])
    assert t.get(keys[1]) is None and not t.contains(keys[1])
    assert t.nbytes() == sum(s for i, s in sizes.items() if i != 1) == real_bytes(kind, t, url)

    bigger = make_block(0, tokens=32)  # replacing a block replaces its bytes
    new_size = t.put(keys[0], fmt.encode(bigger, "fp"))
    assert new_size > sizes[0]
    assert_same_block(bigger, fmt.decode(t.get(keys[0])))
    assert t.nbytes() == real_bytes(kind, t, url)


def test_host_tier_segments_are_private_and_unlinked_on_close(shm_guard):
    t = HostTier(HostTierConfig(budget_bytes=1 << 20, shm_prefix=SHM_PREFIX))
    key = BlockKey("fp", "s", 0)
    t.put(key, fmt.encode(make_block(0)))
    ref = t.segment(key)
    assert ref.name.startswith(f"{SHM_PREFIX}-{os.getpid()}-")
    assert os.stat(f"/dev/shm/{ref.name}").st_mode & 0o777 == 0o600
    t.delete(key)
    assert not os.path.exists(f"/dev/shm/{ref.name}")
    t.put(key, fmt.encode(make_block(0)))
    name = t.segment(key).name
    t.close()
    assert not os.path.exists(f"/dev/shm/{name}") and t.nbytes() == 0


def test_janitor_removes_segments_of_dead_processes_only(shm_guard):
    dead_pid = 2**22 + 12345  # above pid_max: never alive
    stale = shm.create_segment(f"{SHM_PREFIX}-{dead_pid}-abcdef-0", 4096)
    mine = shm.create_segment(shm.new_segment_name(SHM_PREFIX), 4096)
    try:
        removed = shm.janitor(SHM_PREFIX)
        assert removed == [stale.name]
        assert not os.path.exists(f"/dev/shm/{stale.name}") and os.path.exists(f"/dev/shm/{mine.name}")
    finally:
        shm.release_segment(stale, unlink=True)
        shm.release_segment(mine, unlink=True)


def test_disk_tier_cleans_temp_files_and_reindexes(tmp_path):
    cfg = DiskTierConfig(path=tmp_path / "kv", budget_bytes=1 << 20)
    t = DiskTier(cfg)
    keys = [BlockKey("fp", "a/b:c", i) for i in range(3)]  # stream id needing quoting
    for k in keys:
        t.put(k, fmt.encode(make_block(k.index, "a/b:c"), "fp"))
    leftover = t.path_of(keys[0]).with_name("0000000009.blk.tmp-1-0")
    leftover.write_bytes(b"half a block")
    t2 = DiskTier(cfg)
    assert t2.removed_temp_files == 1 and not leftover.exists()
    assert sorted(t2.keys()) == keys and t2.nbytes() == t.nbytes()
    assert [k for k, _ in t2.scan("fp")] == keys and list(t2.scan("other")) == []
    assert fmt.decode(t2.get(keys[2])).stream_id == "a/b:c"


def test_redis_tier_ttl_and_scan(redis_url):
    t = RedisTier(RedisTierConfig(url=redis_url, budget_bytes=1 << 20, ttl_s=100, key_prefix="pfx"))
    key = BlockKey("fp", "cam:1", 4)
    t.put(key, fmt.encode(make_block(4), "fp"))
    client = redis.Redis.from_url(redis_url)
    assert client.exists("pfx:fp:cam%3A1:4")
    assert 0 < client.ttl("pfx:fp:cam%3A1:4") <= 100
    client.delete("pfx:fp:cam%3A1:4")  # as if Redis evicted it
    assert t.get(key) is None and t.nbytes() == 0 and not t.contains(key)
    t.put(key, fmt.encode(make_block(4), "fp"))
    fresh = RedisTier(RedisTierConfig(url=redis_url, budget_bytes=1 << 20, key_prefix="pfx"))
    assert list(fresh.scan("fp")) == [(key, t.size_of(key))] and fresh.nbytes() == t.nbytes()
    assert list(fresh.scan("other")) == []
    client.close()
    t.close()
    fresh.close()


def test_host_segments_are_unlinked_when_the_tier_is_garbage_collected(shm_guard):
    import gc

    t = HostTier(HostTierConfig(budget_bytes=1 << 20, shm_prefix=SHM_PREFIX))
    t.put(BlockKey("fp", "s", 0), fmt.encode(make_block(0)))
    name = t.segment(BlockKey("fp", "s", 0)).name
    del t
    gc.collect()
    assert not os.path.exists(f"/dev/shm/{name}")
