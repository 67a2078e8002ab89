"""The stream directory's scripts on a real Redis: one adopter per orphan however many race,
no adoption while the owner's lease holds, a replica that lost its lease cannot overwrite a
record adopted meanwhile (fencing), quotas and question buckets shared by every replica."""

from __future__ import annotations

import asyncio

import pytest

from streamvqa.cluster.directory import Directory, ReplicaInfo, StreamRecord
from streamvqa.cluster.placement import rank
from tests.store.conftest import redis_server, redis_url  # noqa: F401 - fixtures


def rec(sid: str, replica: str, owner: str = "a", state: str = "running") -> StreamRecord:
    return StreamRecord(id=sid, replica=replica, owner=owner, url="clip.mp4", method="rekv", fps=1.0,
                        state=state, created_at=1.0, memory_bytes=100)


def test_one_adopter_and_fencing(redis_url: str) -> None:  # noqa: F811
    async def run() -> None:
        dead = Directory(redis_url, "dead", lease_ms=300)
        survivors = [Directory(redis_url, f"r{i}", lease_ms=5000) for i in range(5)]
        try:
            assert await dead.register("http://dead")
            assert dead.publish_sync(rec("s1", "dead"))
            # the lease holds: nobody may adopt
            assert [await d.claim("s1", "dead") for d in survivors] == [0] * 5
            await asyncio.sleep(0.5)  # the lease runs out
            wins = await asyncio.gather(*(d.claim("s1", "dead") for d in survivors))
            assert sorted(wins) == [0, 0, 0, 0, 1]
            winner = survivors[wins.index(1)]
            assert (await winner.get("s1")).replica == winner.me
            # the dead replica comes back: its lease is gone, its record adopted: it cannot take it back
            assert not await dead.renew()
            assert not dead.publish_sync(rec("s1", "dead"))
            assert not await dead.update("s1", state="running")
            assert not await dead.remove("s1", "a")
            assert (await winner.get("s1")).replica == winner.me
            # a second claim of the same orphan (already moved) is refused
            assert await survivors[0].claim("s1", "dead") == 0
        finally:
            for d in (dead, *survivors):
                await d.close()

    asyncio.run(run())


def test_lease_renewal_and_duplicate_names(redis_url: str) -> None:  # noqa: F811
    async def run() -> None:
        a = Directory(redis_url, "same", lease_ms=400)
        b = Directory(redis_url, "same", lease_ms=400)
        try:
            assert await a.register("http://a")
            assert not await b.register("http://b")  # a live replica of that name holds the lease
            for _ in range(4):
                await asyncio.sleep(0.2)
                assert a.renew_sync()
            assert await a.alive("same")
            await a.resign()
            assert not await a.alive("same")
            assert await b.register("http://b")
        finally:
            await a.close()
            await b.close()

    asyncio.run(run())


def test_quotas_and_buckets_span_replicas(redis_url: str) -> None:  # noqa: F811
    async def run() -> None:
        r1, r2 = Directory(redis_url, "r1", 5000), Directory(redis_url, "r2", 5000)
        try:
            r1.publish_sync(rec("s1", "r1"))
            r2.publish_sync(rec("s2", "r2"))
            r2.publish_sync(rec("s3", "r2", state="ended"))
            r2.publish_sync(rec("s4", "r2", owner="b"))
            assert r1.owner_usage("a") == (2, 300)  # ended streams hold memory, not a slot
            assert r2.owner_usage("b") == (1, 100)
            # 5 questions a minute for key a, drawn through either replica
            taken = [(r1 if i % 2 else r2).take_question("a", 5) for i in range(8)]
            assert taken == [True] * 5 + [False] * 3
            assert r1.take_question("b", 5)  # another key has its own bucket
            assert r1.remove_sync("s1", "a") and r1.owner_usage("a") == (1, 300 - 100)
        finally:
            await r1.close()
            await r2.close()

    asyncio.run(run())


def test_placement_prefers_room_then_lag_then_the_receiver() -> None:
    reps = [ReplicaInfo("r1", "http://1", True, streams=2), ReplicaInfo("r2", "http://2", True, streams=1, lag_s=3.0),
            ReplicaInfo("r3", "http://3", True, streams=1), ReplicaInfo("r4", "http://4", False, streams=0),
            ReplicaInfo("r5", "http://5", True, streams=8)]
    assert [r.id for r in rank(reps, "r1", max_streams=8)] == ["r3", "r2", "r1"]
    tie = [ReplicaInfo("r1", "http://1", True, streams=1), ReplicaInfo("r2", "http://2", True, streams=1)]
    assert rank(tie, "r2", 8)[0].id == "r2"  # no hop when the receiver is as good


@pytest.mark.parametrize("raw", [{b"id": b"s"}, {b"id": b"s", b"replica": b"r", b"url": b"u", b"method": b"m",
                                                 b"fps": b"x"}])
def test_half_written_records_are_ignored(raw: dict[bytes, bytes]) -> None:
    assert StreamRecord.parse(raw) is None
