import os
import threading

import pytest
import redis
import torch

from streamvqa.store import format as fmt
from streamvqa.store.base import BlockStore
from streamvqa.store.config import (
    DiskTierConfig,
    HostTierConfig,
    RedisTierConfig,
    TieredStoreConfig,
    WriteBehindConfig,
)
from streamvqa.store.errors import BlockNotFoundError, CorruptBlockError
from streamvqa.store.tiered import TieredStore
from streamvqa.store.tiers import DiskTier
from tests.helpers import wait_until
from tests.store.conftest import SHM_PREFIX
from tests.store.helpers import assert_same_block, make_block

BLOCK = fmt.encoded_size(make_block(0), "fp")  # every test block has this encoded size


def host(n_blocks: float) -> HostTierConfig:
    return HostTierConfig(budget_bytes=int(BLOCK * n_blocks), shm_prefix=SHM_PREFIX)


def disk(path, n_blocks: float, **kw) -> DiskTierConfig:
    return DiskTierConfig(path=path, budget_bytes=int(BLOCK * n_blocks), **kw)


def rds(url, n_blocks: float, **kw) -> RedisTierConfig:
    return RedisTierConfig(url=url, budget_bytes=int(BLOCK * n_blocks), **kw)


def store(*tiers, **kw) -> TieredStore:
    return TieredStore(TieredStoreConfig(fingerprint=kw.pop("fingerprint", "fp"), tiers=list(tiers), **kw))


def assert_within_budgets(s: TieredStore) -> None:
    held = s.bytes_by_tier()
    for t in s.tiers:
        assert t.nbytes() <= t.budget_bytes, (t.name, t.nbytes(), t.budget_bytes)
        assert held[t.name] <= t.budget_bytes


def test_implements_protocol_and_round_trip(tmp_path, shm_guard):
    with store(host(4), disk(tmp_path, 100)) as s:
        proto: BlockStore = s  # static check; the protocol is not runtime_checkable
        for name in ("put", "get_many", "index", "drop_stream", "bytes_by_tier", "blocks_by_tier"):
            assert callable(getattr(proto, name))
        blocks = [make_block(i, dtype=torch.bfloat16, rope_rows=3) for i in range(3)]
        for b in blocks:
            s.put(b)
        for b, got in zip(blocks, s.get_many("cam-1", [0, 1, 2]), strict=True):
            assert_same_block(b, got)
        idx = s.index("cam-1")
        assert idx.indices == [0, 1, 2]
        assert torch.equal(idx.rep_keys, torch.stack([b.rep_keys for b in blocks]))
        assert idx.times == [(b.t_start, b.t_end) for b in blocks]
        assert s.blocks_by_tier() == {"host": 3, "disk": 0, "pending": 0}
        assert (
            s.bytes_by_tier("cam-1")["host"] == sum(fmt.encoded_size(b, "fp") for b in blocks)
            and s.bytes_by_tier("other")["host"] == 0
        )
        with pytest.raises(BlockNotFoundError):
            s.get_many("cam-1", [7])


@pytest.mark.parametrize("layout", ["host+disk+redis", "host+redis", "host", "disk+redis"])
def test_invariant4_budgets_never_exceeded_and_every_block_retrievable(layout, tmp_path, request, shm_guard):
    tiers = []
    if "host" in layout:
        tiers.append(host(6.5))
    if "disk" in layout:
        tiers.append(disk(tmp_path / "kv", 30.5))
    if "redis" in layout:
        tiers.append(rds(request.getfixturevalue("redis_url"), 400))
    wb = WriteBehindConfig(max_items=4, max_bytes=BLOCK * 4)
    s = store(*tiers, write_behind=wb)
    blocks = {}
    for i in range(200):
        b = make_block(i, "s1" if i % 2 else "s2", tokens=8 + (i % 3))  # sizes vary a little
        blocks[(b.stream_id, b.index)] = b
        s.put(b)
        assert_within_budgets(s)
        assert s.stats()["pending_items"] <= wb.max_items + 2  # staging stays bounded
        if i % 50 == 0:
            s.get_many(b.stream_id, [b.index])  # reads interleaved with writes
    s.flush()
    assert_within_budgets(s)
    capacity = sum(t.budget_bytes for t in s.tiers) // BLOCK
    for stream in ("s1", "s2"):
        idx = s.index(stream)
        if layout == "host":  # only the most recent fit; the rest were evicted and counted
            assert (
                0 < len(idx.indices) <= capacity
                and s.stats()["evictions"] == 200 - s.blocks_by_tier()["host"]
            )
        else:
            assert len(idx.indices) == 100
        for got in s.get_many(stream, idx.indices):
            assert_same_block(blocks[(stream, got.index)], got)
            assert_within_budgets(s)
    st = s.stats()
    assert sum(st["hits"].values()) >= 1 and (layout == "host" or sum(st["demotions"].values()) > 0)
    # accounting equals the tiers' real contents
    for t in s.tiers:
        assert s.bytes_by_tier()[t.name] == t.nbytes()
        if isinstance(t, DiskTier):
            assert t.nbytes() == sum(
                os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(t.root) for f in fs
            )
    s.close()


def test_lru_order_of_demotion_and_promotion_on_get(tmp_path, shm_guard):
    with store(host(3.5), disk(tmp_path, 100)) as s:
        for i in range(3):
            s.put(make_block(i))
        s.get_many("cam-1", [0])  # 0 becomes most recently used; 1 is now the LRU
        s.put(make_block(3))
        s.flush()
        assert [s.tier_of("cam-1", i) for i in range(4)] == ["host", "disk", "host", "host"]
        s.put(make_block(4))  # next LRU is 2
        s.flush()
        assert s.tier_of("cam-1", 2) == "disk" and s.tier_of("cam-1", 0) == "host"
        before = s.stats()["promotions"]
        assert_same_block(make_block(1), s.get_many("cam-1", [1])[0])  # read from disk …
        assert s.tier_of("cam-1", 1) == "host"  # … and promoted
        assert s.stats()["promotions"] == before + 1 and s.stats()["hits"]["disk"] == 1
        assert_within_budgets(s)


def test_prefetch_moves_cold_blocks_up(tmp_path, shm_guard):
    with store(host(3.5), disk(tmp_path, 100), promote_on_get=False) as s:
        for i in range(6):
            s.put(make_block(i))
        s.flush()
        assert [s.tier_of("cam-1", i) for i in range(6)] == ["disk"] * 3 + ["host"] * 3
        s.get_many("cam-1", [0])
        assert s.tier_of("cam-1", 0) == "disk"  # promote_on_get off
        assert s.prefetch("cam-1", [0, 1, 5, 42]) == 2  # 5 is warm, 42 unknown
        s.flush()
        assert s.tier_of("cam-1", 0) == "host" and s.tier_of("cam-1", 1) == "host"
        assert s.stats()["prefetched"] == 2
        assert_within_budgets(s)
        assert_same_block(make_block(0), s.get_many("cam-1", [0])[0])


def test_write_behind_is_bounded_and_put_waits_for_it(tmp_path, shm_guard):
    gate = threading.Event()

    class SlowDisk(DiskTier):
        def put(self, key, data):
            gate.wait()
            return super().put(key, data)

    cfg = TieredStoreConfig(
        fingerprint="fp",
        tiers=[host(2.5), disk(tmp_path, 100)],
        write_behind=WriteBehindConfig(max_items=3, max_bytes=1 << 30),
    )
    from streamvqa.store.tiers import HostTier

    s = TieredStore(cfg, tiers=[HostTier(cfg.tiers[0]), SlowDisk(cfg.tiers[1])])
    done = threading.Event()

    def writer():
        for i in range(10):
            s.put(make_block(i))
        done.set()

    t = threading.Thread(target=writer)
    t.start()
    # the disk never finishes a write while the gate is closed: the writer must end up waiting
    assert wait_until(lambda: s.stats()["pending_items"] >= 3 or done.is_set(), 60, 0.01)
    assert not done.is_set()
    assert not done.wait(0.2) and t.is_alive()
    assert s.stats()["pending_items"] <= 4  # bound + victims of one put
    for i in range(2, 5):  # staged blocks are readable meanwhile
        if s.tier_of("cam-1", i) == "pending":
            assert_same_block(make_block(i), s.get_many("cam-1", [i])[0])
    gate.set()
    t.join()
    s.flush()
    assert s.stats()["put_waits"] >= 1
    for got in s.get_many("cam-1", list(range(10))):
        assert_same_block(make_block(got.index), got)
    s.close()


def test_model_fingerprint_isolation(tmp_path, redis_url, shm_guard):
    with store(disk(tmp_path / "kv", 100), rds(redis_url, 100), fingerprint="model-a") as a:
        for i in range(3):
            a.put(make_block(i))
    with store(host(4), disk(tmp_path / "kv", 100), rds(redis_url, 100), fingerprint="model-b") as b:
        assert b.index("cam-1").indices == []
        with pytest.raises(BlockNotFoundError):
            b.get_many("cam-1", [0])
        b.put(make_block(0, seed=99))
        assert_same_block(make_block(0, seed=99), b.get_many("cam-1", [0])[0])
    with store(disk(tmp_path / "kv", 100), rds(redis_url, 100), fingerprint="model-a") as a2:
        assert a2.index("cam-1").indices == [0, 1, 2]
        assert_same_block(make_block(0), a2.get_many("cam-1", [0])[0])  # not model-b's block 0


def test_corrupt_file_on_disk_is_reported_and_others_are_fine(tmp_path, shm_guard):
    with store(disk(tmp_path / "kv", 100)) as s:
        for i in range(4):
            s.put(make_block(i))
        path = s.tiers[0].path_of(s.key("cam-1", 2))
    raw = bytearray(path.read_bytes())
    raw[-10] ^= 0xFF
    path.write_bytes(raw)
    with store(host(2.5), disk(tmp_path / "kv", 100)) as s:
        assert s.index("cam-1").indices == [0, 1, 2, 3]  # header intact: indexed, checked on read
        with pytest.raises(CorruptBlockError, match=r"#2 in disk: checksum mismatch"):
            s.get_many("cam-1", [0, 2])
        found, failed = s.get_available("cam-1", [0, 1, 2, 3])
        assert sorted(found) == [0, 1, 3] and isinstance(failed[2], BlockNotFoundError)
        for i in (0, 1, 3):
            assert_same_block(make_block(i), found[i])
        assert s.index("cam-1").indices == [0, 1, 3]  # the corrupt block left the index
        assert s.stats()["corrupt"] == 1


def test_overwrite_and_drop_stream(tmp_path, redis_url, shm_guard):
    with store(host(2.5), disk(tmp_path / "kv", 3.5), rds(redis_url, 100)) as s:
        for i in range(8):
            s.put(make_block(i))
            s.put(make_block(i, "other"))
        s.put(make_block(0, seed=5))  # re-put replaces every copy
        s.flush()
        assert_same_block(make_block(0, seed=5), s.get_many("cam-1", [0])[0])
        s.drop_stream("cam-1")
        assert s.index("cam-1").indices == [] and s.blocks_by_tier("cam-1") == {
            "host": 0,
            "disk": 0,
            "redis": 0,
            "pending": 0,
        }
        with pytest.raises(BlockNotFoundError):
            s.get_many("cam-1", [3])
        client = redis.Redis.from_url(redis_url)
        assert not [k for k in client.scan_iter("streamvqa:fp:cam-1:*")]
        assert not list((tmp_path / "kv" / "fp").glob("cam-1/*.blk"))
        assert len(s.get_many("other", list(range(8)))) == 8
        client.close()


def test_config_validation(tmp_path):
    with pytest.raises(ValueError, match="fingerprint"):
        TieredStoreConfig(fingerprint="a b", tiers=[host(1)])
    with pytest.raises(ValueError, match="durable"):
        TieredStoreConfig(fingerprint="fp", tiers=[host(1)], durable=True)
    with pytest.raises(ValueError, match="first"):
        TieredStoreConfig(fingerprint="fp", tiers=[disk(tmp_path, 1), host(1)])
    with pytest.raises(ValueError):
        TieredStoreConfig(fingerprint="fp", tiers=[])
    cfg = TieredStoreConfig.model_validate(
        {
            "fingerprint": "fp",
            "tiers": [
                {"kind": "host", "budget_bytes": 10},
                {"kind": "disk", "path": str(tmp_path), "budget_bytes": 5},
            ],
        }
    )
    assert [t.kind for t in cfg.tiers] == ["host", "disk"]


@pytest.mark.slow
def test_redis_down_degrades_and_catches_up(tmp_path, shm_guard):
    """Redis stopped mid-stream: warm blocks keep being served, writes stage and are retried,
    the cold tier catches up when Redis comes back (same port, persistence on)."""
    from tests.store.conftest import start_redis

    persist = ("--appendonly", "yes", "--appendfsync", "always", "--save", "")
    proc, url = start_redis(tmp_path, *persist)
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    cfg = TieredStoreConfig(
        fingerprint="fp",
        tiers=[host(3.5), RedisTierConfig(url=url, budget_bytes=BLOCK * 100, socket_timeout_s=2)],
        write_behind=WriteBehindConfig(max_items=8, max_bytes=1 << 30, retry_backoff_s=0.05),
    )
    s = TieredStore(cfg)
    try:
        for i in range(6):
            s.put(make_block(i))
        s.flush()
        assert s.blocks_by_tier()["redis"] == 3
        proc.kill()
        proc.wait()
        for i in range(6, 10):  # host victims cannot land: they stay staged, readable
            s.put(make_block(i))
        found, failed = s.get_available("cam-1", list(range(10)))
        assert set(found) >= set(range(3, 10)) and set(failed) <= {0, 1, 2}
        assert failed and all("redis" in str(e) for e in failed.values())
        assert s.stats()["errors"].get("redis", 0) >= 1
        for i in range(3, 10):
            assert_same_block(make_block(i), found[i])
        health = s.health()
        assert health["ok"] and health["degraded"] == ["redis"] and not health["tiers"]["redis"]["ok"]
        proc, _ = start_redis(tmp_path, *persist, port=port)
        assert s.flush(timeout=60)
        assert s.blocks_by_tier()["pending"] == 0
        for got in s.get_many("cam-1", list(range(10))):
            assert_same_block(make_block(got.index), got)
        assert s.health()["degraded"] == []
    finally:
        s.close()
        proc.kill()
        proc.wait()


def test_concurrent_writer_reader_and_prefetch(tmp_path, redis_url, shm_guard):
    """The encoder thread writes while the answer thread reads and prefetches."""
    import random

    s = store(
        host(5.5),
        disk(tmp_path / "kv", 12.5),
        rds(redis_url, 500),
        write_behind=WriteBehindConfig(max_items=3, max_bytes=BLOCK * 3),
    )
    n = 120
    acked: list[int] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer():
        try:
            for i in range(n):
                s.put(make_block(i))
                acked.append(i)
                assert_within_budgets(s)
        except BaseException as e:
            errors.append(e)
        finally:
            stop.set()

    def reader():
        rng = random.Random(0)
        try:
            while not stop.is_set() or rng.random() < 0.5:
                if not acked:
                    continue
                idx = sorted({rng.choice(acked) for _ in range(4)})
                if rng.random() < 0.3:
                    s.prefetch("cam-1", idx)
                for got in s.get_many("cam-1", idx):
                    assert_same_block(make_block(got.index), got)
                assert s.index("cam-1").indices[: len(idx)] == sorted(s.index("cam-1").indices)[: len(idx)]
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    s.flush()
    assert_within_budgets(s)
    assert s.index("cam-1").indices == list(range(n))
    for got in s.get_many("cam-1", list(range(n))):
        assert_same_block(make_block(got.index), got)
    for t in s.tiers:
        assert s.bytes_by_tier()[t.name] == t.nbytes()
    s.close()


def test_memory_store_still_implements_the_protocol():
    from streamvqa.store.base import MemoryStore

    m: BlockStore = MemoryStore()
    m.put(make_block(0))
    assert m.prefetch("cam-1", [0]) == 0
    assert_same_block(make_block(0), m.get_many("cam-1", [0])[0])
    m.close()


def test_durable_put_falls_back_to_the_next_durable_tier(tmp_path, redis_url, shm_guard):
    from streamvqa.store.errors import StoreError
    from streamvqa.store.tiers import HostTier, RedisTier

    class BrokenDisk(DiskTier):
        def put(self, key, data):
            raise OSError(28, "No space left on device")

    cfg = TieredStoreConfig(
        fingerprint="fp", tiers=[host(4), disk(tmp_path, 100), rds(redis_url, 100)], durable=True
    )
    s = TieredStore(cfg, tiers=[HostTier(cfg.tiers[0]), BrokenDisk(cfg.tiers[1]), RedisTier(cfg.tiers[2])])
    s.put(make_block(0))
    assert s.blocks_by_tier() == {"host": 1, "disk": 0, "redis": 1, "pending": 0}
    assert s.stats()["errors"]["disk"] == 1
    s.close()
    cfg2 = TieredStoreConfig(fingerprint="fp", tiers=[host(4), disk(tmp_path, 100)], durable=True)
    s2 = TieredStore(cfg2, tiers=[HostTier(cfg2.tiers[0]), BrokenDisk(cfg2.tiers[1])])
    with pytest.raises(StoreError, match="no durable tier"):
        s2.put(make_block(1))
    assert s2.index("cam-1").indices == [] and s2.blocks_by_tier()["host"] == 0  # not acknowledged
    s2.close()


def test_put_timeout_when_the_cold_tier_never_drains(tmp_path, shm_guard):
    from streamvqa.store.errors import StoreFullError
    from streamvqa.store.tiers import HostTier

    gate = threading.Event()

    class StuckDisk(DiskTier):
        def put(self, key, data):
            gate.wait()
            return super().put(key, data)

    cfg = TieredStoreConfig(
        fingerprint="fp",
        tiers=[host(1.5), disk(tmp_path, 100)],
        write_behind=WriteBehindConfig(max_items=2, put_timeout_s=0.2),
    )
    s = TieredStore(cfg, tiers=[HostTier(cfg.tiers[0]), StuckDisk(cfg.tiers[1])])
    with pytest.raises(StoreFullError, match="write-behind area full"):
        for i in range(10):
            s.put(make_block(i))
    gate.set()
    s.flush()
    assert s.index("cam-1").indices == list(range(len(s.index("cam-1").indices)))
    for got in s.get_many("cam-1", s.index("cam-1").indices):
        assert_same_block(make_block(got.index), got)
    s.close()


def test_quantized_cold_tier_holds_compressed_blocks(tmp_path, shm_guard):
    cfg = dict(fingerprint="fp")
    cold = DiskTierConfig(path=tmp_path / "kv", budget_bytes=BLOCK * 100, quantize="int8-g16")
    with TieredStore(TieredStoreConfig(tiers=[host(2.5), cold], **cfg)) as s:
        for i in range(6):
            s.put(make_block(i))
        s.flush()
        assert s.blocks_by_tier()["disk"] == 4
        assert s.bytes_by_tier()["disk"] == s.tiers[1].nbytes()
        assert s.tiers[1].nbytes() < 4 * BLOCK * 0.85  # small test blocks: header overhead dominates
        header = fmt.read_header(s.tiers[1].get(s.key("cam-1", 0)))
        assert header.quantization == "int8-g16"
        got = s.get_many("cam-1", [0, 5])
        assert torch.allclose(got[0].keys.float(), make_block(0).keys.float(), atol=0.05)
        assert_same_block(make_block(5), got[1])  # still warm: exact
    with TieredStore(TieredStoreConfig(tiers=[host(2.5), cold], **cfg)) as s:  # recovered
        assert s.index("cam-1").indices == list(range(6))
        assert torch.equal(s.index("cam-1").rep_keys[0], make_block(0).rep_keys)  # exact index
    with pytest.raises(ValueError, match="quantization scheme"):
        DiskTierConfig(path=tmp_path, budget_bytes=1, quantize="int3")


def test_victims_skip_colder_tiers_too_small_for_them(tmp_path, redis_url, shm_guard):
    with store(host(2.5), disk(tmp_path / "a", 0.5), rds(redis_url, 100)) as s:
        for i in range(5):
            s.put(make_block(i))
        s.flush()
        assert s.blocks_by_tier() == {"host": 2, "disk": 0, "redis": 3, "pending": 0}
        assert len(s.get_many("cam-1", list(range(5)))) == 5
    with store(host(2.5), disk(tmp_path / "b", 0.5)) as s:  # nowhere to go: dropped and counted
        for i in range(5):
            s.put(make_block(i))
        s.flush()
        assert s.index("cam-1").indices == [3, 4] and s.stats()["evictions"] == 3
